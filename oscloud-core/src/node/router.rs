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
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Bumped (under the state's lock) by every change of the route
    /// table: a [`RoutedEndpoint`] keeps the best route it looked up
    /// while this has not moved.
    generation: Arc<AtomicU64>,
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
            generation: Arc::new(AtomicU64::new(0)),
            this: this.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, locked to change its route table: the generation moves
    /// on before the change, under the same lock, so a route looked up
    /// (under the lock) at the old generation is not taken for current.
    fn lock_to_change(&self) -> MutexGuard<'_, State> {
        let state = self.lock();
        self.generation.fetch_add(1, Ordering::Release);
        state
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
        let mut state = self.lock_to_change();
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
        let mut state = self.lock_to_change();
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
        let mut state = self.lock_to_change();
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
                        generation: self.generation.clone(),
                        key: *k,
                        name: best.name.clone(),
                        last: Mutex::new(None),
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

    /// The best route to `key` now, with the generation of the table it
    /// was found in.
    fn best(&self, key: &RouteKey) -> Option<BestRoute> {
        let state = self.lock();
        let generation = self.generation.load(Ordering::Relaxed);
        state.table.best(key).map(|b| BestRoute {
            generation,
            endpoint: Arc::downgrade(&b.endpoint),
            pipe_frame: b.pipe_frame,
        })
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
///
/// It keeps the best route it looked up last, for as long as the route
/// table has not changed since (one atomic load), so a stream of casts
/// neither locks the router nor looks the route up each time. It keeps
/// the route's endpoint weakly: a link that went does not stay in memory
/// for an entry nobody sends to.
#[derive(Debug)]
struct RoutedEndpoint {
    router: Weak<Router>,
    /// The router's [`Router::generation`].
    generation: Arc<AtomicU64>,
    key: RouteKey,
    name: Arc<str>,
    /// The best route looked up last.
    last: Mutex<Option<BestRoute>>,
}

/// The best route to a server, as the route table had it at `generation`.
#[derive(Debug, Clone)]
struct BestRoute {
    generation: u64,
    endpoint: Weak<dyn Endpoint>,
    /// The longest pipe frame the route carries.
    pipe_frame: u32,
}

impl RoutedEndpoint {
    /// The endpoint of the best route now, and the longest pipe frame
    /// that route carries.
    fn route(&self) -> Result<(Arc<dyn Endpoint>, u32), Error> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(best) = last.as_ref()
            && best.generation == generation
            && let Some(endpoint) = best.endpoint.upgrade()
        {
            return Ok((endpoint, best.pipe_frame));
        }
        let best = self.router.upgrade().and_then(|r| r.best(&self.key));
        let found = best
            .as_ref()
            .and_then(|b| Some((b.endpoint.upgrade()?, b.pipe_frame)));
        *last = best;
        // As for a stale entry of a neighbour: no such server (now).
        found.ok_or_else(|| Error::NotFound(self.name.to_string()))
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::registry::Capabilities;

    /// An endpoint that counts the casts it takes.
    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl Endpoint for Counting {
        fn try_cast(&self, _msg: Bytes) -> Result<(), Error> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }

        async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
            Ok(msg)
        }

        async fn open_pipe(&self, _port: &str, _end: PipeEnd) -> Result<(), Error> {
            Ok(())
        }
    }

    fn n(i: u8) -> NodeId {
        NodeId::from_bytes([i + 1; 16])
    }

    /// `origin`'s server `far` (entry 7), announced by `peer` on `link`
    /// at `cost`.
    fn learn(router: &Router, link: LinkId, peer: u8, cost: u32, endpoint: &Arc<Counting>) {
        let hop = Hop {
            link,
            peer: n(peer),
            cost: 1,
            pipe_window: 64 * 1024,
        };
        let entry = EntryInfo {
            id: 7,
            name: "far".into(),
            capabilities: Capabilities::new().into(),
            group: false,
        };
        let path: Vec<NodeId> = if peer == 9 {
            vec![n(9)]
        } else {
            vec![n(9), n(peer)]
        };
        let route = RouteInfo {
            origin_id: 7,
            path: path.into(),
            cost,
            pipe_frame: None,
        };
        router.learn(hop, entry, route, endpoint.clone());
    }

    fn count(e: &Counting) -> usize {
        e.0.load(Ordering::Relaxed)
    }

    /// The routed endpoint keeps the route it looked up, but a cast after
    /// the table changed takes the best route of the new table, and fails
    /// once there is none: what looking the route up on every cast gives.
    #[tokio::test]
    async fn a_kept_route_gives_way_to_every_change_of_the_table() {
        let registry = Registry::new(n(0));
        let router = Router::new(registry.clone(), 8);
        let (slow, fast) = (Arc::new(Counting::default()), Arc::new(Counting::default()));
        learn(&router, 1, 1, 10, &slow);
        let far = registry.lookup("far").unwrap();
        let cast = || far.endpoint().cast(Bytes::from_static(b"c"));
        for _ in 0..3 {
            cast().await.unwrap();
        }
        assert_eq!((count(&slow), count(&fast)), (3, 0));
        // A cheaper route: the next cast takes it.
        learn(&router, 2, 9, 0, &fast);
        cast().await.unwrap();
        far.endpoint().try_cast(Bytes::from_static(b"t")).unwrap();
        assert_eq!((count(&slow), count(&fast)), (3, 2));
        // It goes: back to the other.
        router.forget_link(2, ExitReason::Normal);
        cast().await.unwrap();
        assert_eq!((count(&slow), count(&fast)), (4, 2));
        // The last route goes: the held entry finds no server.
        router.forget(1, 7, ExitReason::Normal);
        assert!(registry.lookup("far").is_err());
        assert!(matches!(cast().await, Err(Error::NotFound(_))));
        assert!(matches!(
            far.endpoint().try_cast(Bytes::new()),
            Err(Error::NotFound(_))
        ));
        assert_eq!((count(&slow), count(&fast)), (4, 2));
    }

    /// The kept route holds its link's endpoint weakly: a route whose
    /// endpoint is gone is looked up again, not kept alive by the entry.
    #[tokio::test]
    async fn a_kept_route_does_not_keep_its_link() {
        let registry = Registry::new(n(0));
        let router = Router::new(registry.clone(), 8);
        let first = Arc::new(Counting::default());
        learn(&router, 1, 1, 0, &first);
        let far = registry.lookup("far").unwrap();
        far.endpoint().cast(Bytes::new()).await.unwrap();
        let weak = Arc::downgrade(&first);
        drop(first);
        router.forget_link(1, ExitReason::Normal);
        assert!(
            weak.upgrade().is_none(),
            "the entry kept the link's endpoint"
        );
        assert!(matches!(
            far.endpoint().cast(Bytes::new()).await,
            Err(Error::NotFound(_))
        ));
    }
}
