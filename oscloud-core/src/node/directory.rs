//! A node that uses a [`Directory`]: it publishes what it serves, and a
//! name its registry does not hold is looked up in the directory and the
//! node that serves it dialled on demand (a *directory link*,
//! `docs/PROTOCOL.md` §13.1).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex as AsyncMutex;
use tracing::{Instrument, debug, info_span, warn};

use super::{Inner, Node, stopped};
use crate::access::AccessPolicy;
use crate::address::Address;
use crate::directory::{Directory, DirectoryWatch, Publication, Resolver};
use crate::{Error, RegistryEvent};

impl Node {
    /// Publish this node's servers in `directory`, and find there the
    /// servers its registry does not hold ([`Node::listen`] calls this
    /// for a listener that comes with a directory, such as a zenoh
    /// address with `?directory=1`).
    ///
    /// - **Published**: every server of this node, and every server of
    ///   another node it reaches over a link that is not a directory link
    ///   (a bridge node thus publishes the servers of the boards behind
    ///   it), under its name, for as long as it is in the registry and
    ///   the node's [access policy](crate::access) lets some peer look it
    ///   up ([`AccessPolicy::visible_to_some`]: a server no peer may see
    ///   is not published, and is withdrawn when the policy changes so).
    ///   A server only some peers may see is published: the directory
    ///   tells anyone that the node has it, and the link then announces
    ///   it only to the peers the policy lets see it (a lookup by another
    ///   peer links, finds nothing and fails as for a name no one has).
    /// - **Found**: [`Registry::find`](crate::Registry::find) (which
    ///   calls, casts and pipes by name go through) asks the directory
    ///   for a name not in the registry, dials the nodes that publish it
    ///   in turn until one answers, and waits for the name to arrive over
    ///   that link. A link so made is reused by later lookups; it is not
    ///   dialled again when it ends (the next lookup asks the directory
    ///   again, so a node that died is not dialled forever).
    /// - **Idle links close**: a link dialled on demand that carried no
    ///   cast, call, reply or pipe packet either way for
    ///   [`Directory::link_idle`] (the zenoh transport's
    ///   `directory_idle`, 60 s by default), with no call waiting for a
    ///   reply and no pipe open, is closed by this node with a Normal
    ///   Close; the peer's servers leave the registry with it, and the
    ///   next lookup dials again. A node that talked once to every other
    ///   thus holds links only to those it talks to now.
    /// - **Directory links** carry less than mesh links: each side
    ///   announces what it publishes (its servers and what it routes for
    ///   over mesh links), and a node announces what it learned over a
    ///   directory link to no one. So a node's registry holds its own
    ///   servers, its mesh neighbours', and those of the nodes it looked
    ///   up: not the whole cloud.
    ///
    /// Explicit links ([`Node::connect`], and the links they accept) and
    /// the routes over them are unchanged. Using a second directory
    /// replaces the first for lookups; both publish.
    pub fn use_directory(&self, directory: Arc<dyn Directory>) {
        *self
            .inner
            .directory
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(directory.clone());
        let resolver = OnDemand {
            node: Arc::downgrade(&self.inner),
            link: OnDemandLink {
                idle: directory.link_idle(),
            },
            directory: directory.clone(),
            dials: AsyncMutex::default(),
        };
        self.inner
            .kernel
            .registry()
            .set_resolver(Arc::new(resolver));
        let span = info_span!("directory", node = %self.inner.kernel.node().short());
        tokio::spawn(self.clone().publish(directory).instrument(span));
    }

    /// Follow, in this node's directory, the nodes that publish server
    /// `name` (`*`: every server), this node left out: servers of nodes
    /// this node is not linked to (so not in its registry, whose
    /// [`watch`](crate::Registry::watch) reports what it holds) included.
    /// The watch first reports every publication as it stands, then each
    /// that comes or goes, for as long as it is kept. It costs nothing
    /// until asked (for zenoh: one liveliness subscription on
    /// `oscloud/<cloud>/srv/<name>/*`). Fails with
    /// [`Error::BadSetting`] when the node uses no directory.
    pub async fn watch_directory(&self, name: &str) -> Result<DirectoryWatch, Error> {
        let directory = self
            .inner
            .directory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match directory {
            Some(directory) => directory.watch(name).await,
            None => Err(Error::BadSetting {
                key: "directory".into(),
                reason: "this node uses no directory (listen with one, such as \
                         zenoh's ?directory=1, or call Node::use_directory)"
                    .into(),
            }),
        }
    }

    /// Keep in `directory` one publication per name this node publishes
    /// and some peer may see, until the node shuts down.
    async fn publish(self, directory: Arc<dyn Directory>) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let registry = self.inner.kernel.registry().clone();
        let policy = self.inner.policy.clone();
        let mut policy_changed = policy.subscribe();
        policy_changed.mark_unchanged();
        let me = registry.node();
        let mut watch = registry.watch();
        let mut published = Published::default();
        loop {
            let event = tokio::select! {
                event = watch.next() => match event {
                    Some(event) => event,
                    None => return,
                },
                changed = policy_changed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let names: Vec<String> = published.counts.keys().cloned().collect();
                    for name in names {
                        published.sync(&name, &policy, directory.as_ref()).await;
                    }
                    continue;
                }
                () = stopped(&mut shutdown) => return,
            };
            match event {
                RegistryEvent::Added(e) => {
                    if e.node() != me && !self.inner.router.via_mesh(e.id().0) {
                        continue;
                    }
                    published.entries.insert(e.id().0, e.name().to_owned());
                    *published.counts.entry(e.name().to_owned()).or_default() += 1;
                    published.sync(e.name(), &policy, directory.as_ref()).await;
                }
                RegistryEvent::Removed { entry, .. } => {
                    let Some(name) = published.entries.remove(&entry.id().0) else {
                        continue;
                    };
                    if let Some(count) = published.counts.get_mut(&name) {
                        *count -= 1;
                        if *count == 0 {
                            published.counts.remove(&name);
                        }
                    }
                    published.sync(&name, &policy, directory.as_ref()).await;
                }
            }
        }
    }
}

/// What a node publishes in its directory.
#[derive(Default)]
struct Published {
    /// The entries it would publish, by id, with their names.
    entries: HashMap<u64, String>,
    /// Each name's count of them.
    counts: HashMap<String, usize>,
    /// The names published, while they are.
    publications: HashMap<String, Publication>,
}

impl Published {
    /// Publish `name` if an entry has it and some peer may see it (the
    /// access policy), withdraw it otherwise.
    async fn sync(&mut self, name: &str, policy: &AccessPolicy, directory: &dyn Directory) {
        let wanted = self.counts.contains_key(name) && policy.visible_to_some(name);
        match (wanted, self.publications.contains_key(name)) {
            (true, false) => match directory.publish(name).await {
                Ok(p) => {
                    self.publications.insert(name.to_owned(), p);
                }
                Err(err) => warn!(server = %name, "not published in the directory: {err}"),
            },
            (false, true) => {
                self.publications.remove(name);
            }
            _ => {}
        }
    }
}

/// What makes a dialled link a directory link.
#[derive(Debug, Clone, Copy)]
pub(super) struct OnDemandLink {
    /// How long it may go unused before this node closes it (None: never).
    pub(super) idle: Option<Duration>,
}

/// The registry's resolver for a node that uses a directory: find the
/// name, dial a node that publishes it.
struct OnDemand {
    node: Weak<Inner>,
    /// The kind of link it dials.
    link: OnDemandLink,
    directory: Arc<dyn Directory>,
    /// One lock per address dialled, so that concurrent lookups make one
    /// link.
    dials: AsyncMutex<HashMap<Address, Arc<AsyncMutex<()>>>>,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand")
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl OnDemand {
    /// A link to `addr`: the one this node dialled already, or a new
    /// directory link.
    async fn link(&self, node: &Node, addr: &Address) -> Result<(), Error> {
        let lock = self
            .dials
            .lock()
            .await
            .entry(addr.clone())
            .or_default()
            .clone();
        let _dialling = lock.lock().await;
        // A link closing (idle, say) is dialled again: what it brought
        // leaves the registry.
        if node
            .lock_links()
            .values()
            .any(|r| r.dialed.as_ref() == Some(addr) && r.shared.state().closed.is_none())
        {
            return Ok(());
        }
        node.dial(std::slice::from_ref(addr), Some(self.link))
            .await?;
        debug!(%addr, "linked on demand");
        Ok(())
    }
}

#[async_trait]
impl Resolver for OnDemand {
    async fn resolve(&self, name: &str) -> Result<(), Error> {
        let addrs = self.directory.find(name).await?;
        let Some(inner) = self.node.upgrade() else {
            return Err(Error::NotFound(name.to_owned()));
        };
        let node = Node { inner };
        let mut last = Error::NotFound(name.to_owned());
        for addr in addrs {
            match self.link(&node, &addr).await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    debug!(%addr, server = %name, "dial on demand failed: {err}");
                    last = err;
                }
            }
        }
        Err(last)
    }
}
