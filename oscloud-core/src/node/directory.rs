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
use crate::address::Address;
use crate::directory::{Directory, Publication, Resolver};
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
    ///   it), under its name, for as long as it is in the registry.
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

    /// Keep in `directory` one publication per name this node publishes,
    /// until the node shuts down.
    async fn publish(self, directory: Arc<dyn Directory>) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let registry = self.inner.kernel.registry().clone();
        let me = registry.node();
        let mut watch = registry.watch();
        // The entries published, by id, and each name's count of them.
        let mut entries: HashMap<u64, String> = HashMap::new();
        let mut names: HashMap<String, (usize, Option<Publication>)> = HashMap::new();
        loop {
            let event = tokio::select! {
                event = watch.next() => match event {
                    Some(event) => event,
                    None => return,
                },
                () = stopped(&mut shutdown) => return,
            };
            match event {
                RegistryEvent::Added(e) => {
                    if e.node() != me && !self.inner.router.via_mesh(e.id().0) {
                        continue;
                    }
                    entries.insert(e.id().0, e.name().to_owned());
                    let slot = names.entry(e.name().to_owned()).or_insert((0, None));
                    slot.0 += 1;
                    if slot.1.is_none() {
                        match directory.publish(e.name()).await {
                            Ok(p) => slot.1 = Some(p),
                            Err(err) => {
                                warn!(server = %e.name(), "not published in the directory: {err}")
                            }
                        }
                    }
                }
                RegistryEvent::Removed { entry, .. } => {
                    let Some(name) = entries.remove(&entry.id().0) else {
                        continue;
                    };
                    if let Some(slot) = names.get_mut(&name) {
                        slot.0 -= 1;
                        if slot.0 == 0 {
                            names.remove(&name);
                        }
                    }
                }
            }
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
