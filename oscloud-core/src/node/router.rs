//! Multi-hop routing: the node's route table joined to its registry.
//!
//! Every link's driver feeds the [`Router`] what its neighbour announces
//! and withdraws. For each server of another node with at least one route,
//! the registry holds one entry (tagged with the node the server lives on)
//! whose endpoint is a [`RoutedEndpoint`]: each cast, call or pipe takes
//! the best route at that moment, so a route that changes (a link lost, a
//! shorter one found) changes nothing for lookups that already hold the
//! entry. When the last route goes, the entry leaves the registry with the
//! reason of the last withdrawal.
//!
//! Drivers re-announce the best routes to their own neighbours (path
//! with this node appended); they watch [`Router::subscribe`] and resync
//! what they announced whenever a best route changes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::routes::{Hop, LinkId, Refused, RouteKey, RouteTable};
use crate::wire::{EntryInfo, RouteInfo};
use crate::{Endpoint, EntrySpec, Error, ExitReason, NodeId, PipeEnd, Registration, Registry};

/// The node's routes and the registry entries they give.
pub(crate) struct Router {
    me: NodeId,
    registry: Registry,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    this: Weak<Router>,
}

struct State {
    table: RouteTable<Arc<dyn Endpoint>>,
    /// The registry entry of each reachable server.
    installed: HashMap<RouteKey, Registration>,
    /// The route key of each of those entries, by registry entry id.
    by_entry: HashMap<u64, RouteKey>,
    /// Servers whose best route is at the hop limit, already logged.
    at_limit_logged: HashSet<RouteKey>,
    /// Servers whose routes were refused as too far (each logged once),
    /// while the neighbour that announced them keeps them (at most
    /// [`FAR_LOGGED`]: the keys come from peers).
    too_far: HashMap<RouteKey, TooFarRoute>,
    /// Directory links (dialled on demand, `docs/PROTOCOL.md` §13.1): what
    /// is learned over them is announced to no one.
    directory_links: HashSet<LinkId>,
}

/// How many servers refused as too far are remembered (each logged once,
/// and listed by [`Node::too_far_routes`](crate::Node::too_far_routes)).
const FAR_LOGGED: usize = 1024;

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("me", &self.me).finish()
    }
}

/// A route from this node to a server of another node, as
/// [`Node::routes`](crate::Node::routes) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The server's name.
    pub name: String,
    /// The node it lives on.
    pub node: NodeId,
    /// The nodes between here and there: the server's node first, the
    /// neighbour the route goes through last.
    pub path: Vec<NodeId>,
    /// The total cost (sum of the link costs along the path).
    pub cost: u64,
    /// The id of the link (see [`Node::links`](crate::Node::links)) it
    /// goes through.
    pub link: u64,
    /// Whether it is the route in use (the best one).
    pub best: bool,
    /// Whether the route is as long as [`NodeConfig::max_hops`] lets a
    /// route go: this node reaches the server but announces it to no
    /// neighbour, so nodes one hop further away cannot reach it (logged
    /// once per server as a warning).
    ///
    /// [`NodeConfig::max_hops`]: crate::NodeConfig::max_hops
    pub at_hop_limit: bool,
}

/// A route to a server of another node that this node refused because it
/// is longer than [`NodeConfig::max_hops`] (a neighbour whose limit is
/// higher announced it), as [`Node::too_far_routes`](crate::Node::too_far_routes)
/// lists it: the server is out of this node's reach.
///
/// [`NodeConfig::max_hops`]: crate::NodeConfig::max_hops
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooFarRoute {
    /// The server's name.
    pub name: String,
    /// The node it lives on.
    pub node: NodeId,
    /// How many nodes the refused route passes, the server's included.
    pub hops: usize,
    /// This node's hop limit.
    pub limit: usize,
    /// The id of the link it was announced on.
    pub link: u64,
    /// The entry's id on the neighbour (what it withdraws).
    peer_id: u64,
}

/// A route announced to one neighbour.
#[derive(Debug)]
pub(crate) struct Export {
    /// The registry entry id (what the neighbour knows it by).
    pub(crate) id: u64,
    pub(crate) entry: EntryInfo,
    pub(crate) route: RouteInfo,
    /// The number of the route (see [`RouteTable::version`]): what the
    /// link remembers of what it announced.
    pub(crate) version: u64,
}

impl Router {
    pub(crate) fn new(registry: Registry, max_hops: usize) -> Arc<Self> {
        let me = registry.node();
        Arc::new_cyclic(|this| Self {
            me,
            registry,
            state: Mutex::new(State {
                table: RouteTable::new(me, max_hops),
                installed: HashMap::new(),
                by_entry: HashMap::new(),
                at_limit_logged: HashSet::new(),
                too_far: HashMap::new(),
                directory_links: HashSet::new(),
            }),
            changed: watch::Sender::new(0),
            this: this.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes of the best routes: drivers resync their exports on each.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The neighbour on `hop` announced `entry` by `route`.
    pub(crate) fn learn(
        &self,
        hop: Hop,
        entry: EntryInfo,
        route: RouteInfo,
        endpoint: Arc<dyn Endpoint>,
    ) {
        let name = entry.name.clone();
        let key = route.path.first().map(|&origin| RouteKey {
            origin,
            origin_id: route.origin_id,
        });
        let mut state = self.lock();
        let peer_id = entry.id;
        match state.table.learn(hop, entry, route, endpoint) {
            Ok(keys) => {
                if let Some(k) = key {
                    state.too_far.remove(&k);
                }
                self.apply(&mut state, keys, ExitReason::Normal)
            }
            Err(why @ Refused::TooFar { hops, limit }) => {
                let Some(k) = key else { return };
                let known = state.too_far.contains_key(&k);
                if !known && state.too_far.len() >= FAR_LOGGED {
                    debug!(link = hop.link, server = %name, "route not taken: {why}");
                    return;
                }
                state.too_far.insert(
                    k,
                    TooFarRoute {
                        name: name.to_string(),
                        node: k.origin,
                        hops,
                        limit,
                        link: hop.link,
                        peer_id,
                    },
                );
                if !known {
                    warn!(
                        link = hop.link,
                        server = %name,
                        node = %k.origin.short(),
                        via = %hop.peer.short(),
                        "a server of another node is not reachable from here: {why} \
                         (NodeConfig::max_hops; the neighbour's limit is higher than this node's)"
                    )
                }
            }
            Err(why) => debug!(link = hop.link, server = %name, "route not taken: {why}"),
        }
    }

    /// The neighbour on `link` withdrew its entry `peer_id`.
    pub(crate) fn forget(&self, link: LinkId, peer_id: u64, reason: ExitReason) {
        let mut state = self.lock();
        state
            .too_far
            .retain(|_, r| (r.link, r.peer_id) != (link, peer_id));
        let keys = state.table.forget(link, peer_id);
        self.apply(&mut state, keys, reason);
    }

    /// `link` is a directory link: routes learned over it are not
    /// forwarded (until [`forget_link`](Self::forget_link)).
    pub(crate) fn mark_directory_link(&self, link: LinkId) {
        self.lock().directory_links.insert(link);
    }

    /// Whether the registry entry `entry_id` is a server of another node
    /// reached over a link that is not a directory link (what a node
    /// publishes in a directory besides its own servers: a bridge's boards).
    pub(crate) fn via_mesh(&self, entry_id: u64) -> bool {
        let state = self.lock();
        state
            .by_entry
            .get(&entry_id)
            .and_then(|k| state.table.best(k))
            .is_some_and(|best| !state.directory_links.contains(&best.link))
    }

    /// `link` is down: every route through it goes.
    pub(crate) fn forget_link(&self, link: LinkId, reason: ExitReason) {
        let mut state = self.lock();
        state.directory_links.remove(&link);
        state.too_far.retain(|_, r| r.link != link);
        let keys = state.table.forget_link(link);
        self.apply(&mut state, keys, reason);
    }

    /// Bring the registry in line with the best routes of `keys` (and
    /// retry servers whose name was taken earlier), then tell the drivers.
    fn apply(&self, state: &mut State, keys: Vec<RouteKey>, reason: ExitReason) {
        if keys.is_empty() {
            return;
        }
        for key in &keys {
            if state.table.best(key).is_none()
                && let Some(mut reg) = state.installed.remove(key)
            {
                state.by_entry.remove(&reg.entry().id().0);
                reg.set_exit_reason(reason.clone());
                drop(reg);
            }
        }
        let missing: Vec<(RouteKey, EntrySpec)> = state
            .table
            .bests()
            .filter(|(k, _)| !state.installed.contains_key(k))
            .map(|(k, best)| {
                let spec = EntrySpec {
                    name: best.name.clone(),
                    node: k.origin,
                    capabilities: best.capabilities.clone(),
                    group: best.group,
                    endpoint: Arc::new(RoutedEndpoint {
                        router: self.this.clone(),
                        key: *k,
                        name: best.name.clone(),
                    }),
                };
                (*k, spec)
            })
            .collect();
        for (key, spec) in missing {
            let name = spec.name.clone();
            match self.registry.insert(spec) {
                Ok(reg) => {
                    state.by_entry.insert(reg.entry().id().0, key);
                    state.installed.insert(key, reg);
                }
                // Tried again on the next change.
                Err(err) if keys.contains(&key) => {
                    warn!(server = %name, node = %key.origin.short(), "a server of another node is not visible here: {err}")
                }
                Err(_) => {}
            }
        }
        for key in &keys {
            match state.table.best(key) {
                Some(best) if state.table.at_hop_limit(best) => {
                    if state.at_limit_logged.insert(*key) {
                        warn!(
                            server = %best.name,
                            node = %key.origin.short(),
                            hops = best.path().len(),
                            "the server is as far as the hop limit lets a route go \
                             (NodeConfig::max_hops): this node reaches it but does not \
                             announce it, so nodes further away cannot reach it"
                        );
                    }
                }
                _ => {
                    state.at_limit_logged.remove(key);
                }
            }
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// What this node announces to `peer` on `link`: the best route to
    /// every reachable server, unless it leads back through `peer`, would
    /// pass the hop limit, or was learned over a directory link.
    pub(crate) fn exports(&self, link: LinkId, peer: NodeId) -> Vec<Export> {
        let state = self.lock();
        state
            .installed
            .iter()
            .filter_map(|(key, reg)| {
                if state
                    .table
                    .best(key)
                    .is_some_and(|b| state.directory_links.contains(&b.link))
                {
                    return None;
                }
                let route = state.table.export(key, link, peer)?;
                let e = reg.entry();
                let info = EntryInfo {
                    id: e.id().0,
                    name: e.shared_name().clone(),
                    capabilities: e.shared_capabilities().clone(),
                    group: e.is_group_member(),
                };
                Some(Export {
                    id: e.id().0,
                    entry: info,
                    route,
                    version: state.table.version(key),
                })
            })
            .collect()
    }

    /// Whether the registry entry `entry_id` is a routed server that a
    /// message from `peer` on `link` may be forwarded to.
    pub(crate) fn forwards(&self, entry_id: u64, link: LinkId, peer: NodeId) -> bool {
        let state = self.lock();
        state
            .by_entry
            .get(&entry_id)
            .is_some_and(|k| state.table.forwards(k, link, peer))
    }

    /// The endpoint of the best route to `key`, and the longest pipe
    /// frame that route carries.
    fn best(&self, key: &RouteKey) -> Option<(Arc<dyn Endpoint>, u32)> {
        self.lock()
            .table
            .best(key)
            .map(|b| (b.endpoint.clone(), b.pipe_frame))
    }

    /// Every route, best first for each server, sorted by name.
    pub(crate) fn routes(&self) -> Vec<Route> {
        let state = self.lock();
        let mut out = Vec::new();
        for (key, best) in state.table.bests() {
            for c in state.table.candidates(key) {
                out.push(Route {
                    name: c.name.to_string(),
                    node: key.origin,
                    path: c.path().to_vec(),
                    cost: c.cost,
                    link: c.link,
                    best: c.link == best.link && c.peer_id == best.peer_id,
                    at_hop_limit: state.table.at_hop_limit(c),
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.name, a.node, !a.best, a.cost, a.link)
                .cmp(&(&b.name, b.node, !b.best, b.cost, b.link))
        });
        out
    }

    /// The servers of other nodes whose routes this node refused as too
    /// far, by name.
    pub(crate) fn too_far_routes(&self) -> Vec<TooFarRoute> {
        let mut out: Vec<TooFarRoute> = self.lock().too_far.values().cloned().collect();
        out.sort_by(|a, b| (&a.name, a.node).cmp(&(&b.name, b.node)));
        out
    }
}

/// The endpoint of a server reached through other nodes: every operation
/// takes the best route at that moment. A pipe refuses frames longer than
/// its route carries, so they fail at the writer rather than close the
/// pipe at a later hop.
#[derive(Debug)]
struct RoutedEndpoint {
    router: Weak<Router>,
    key: RouteKey,
    name: Arc<str>,
}

impl RoutedEndpoint {
    fn route(&self) -> Result<(Arc<dyn Endpoint>, u32), Error> {
        self.router
            .upgrade()
            .and_then(|r| r.best(&self.key))
            // As for a stale entry of a neighbour: no such server (now).
            .ok_or_else(|| Error::NotFound(self.name.to_string()))
    }
}

#[async_trait]
impl Endpoint for RoutedEndpoint {
    fn try_cast(&self, msg: Bytes) -> Result<(), Error> {
        self.route()?.0.try_cast(msg)
    }

    fn cast(&self, msg: Bytes) -> crate::Cast {
        match self.route() {
            Ok((endpoint, _)) => endpoint.cast(msg),
            Err(err) => crate::Cast::done(Err(err)),
        }
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        self.route()?.0.call(msg).await
    }

    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), Error> {
        let (endpoint, pipe_frame) = self.route()?;
        end.reader.limit_frames(pipe_frame as usize);
        endpoint.open_pipe(port, end).await
    }
}
