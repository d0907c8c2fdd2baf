//! The route table: every way this node knows to reach the servers of
//! other nodes, and the best one for each (sans-IO: fed announcements and
//! withdrawals, it answers which routes changed; `router` applies that to
//! the registry).
//!
//! Routing is path-vector (`docs/PROTOCOL.md` §13). Each announcement of
//! a server carries the path it travelled (the node it lives on first, the
//! announcing neighbour last) and its cost. A route is refused when this
//! node is on its path (that makes routes loop-free), when the path is
//! longer than the hop limit, or when it is malformed. Of the routes to
//! one server (one entry of its origin node), the best is the one of
//! lowest total cost (the announced cost plus the cost of the link it came
//! over), then fewest hops, then lowest link id (so the choice is
//! deterministic). When the best route is withdrawn the next best takes
//! over; when the last goes, the server is unreachable.
//!
//! A route also carries the longest pipe frame it can take: the smallest
//! pipe window of the nodes on its way, the one of the link it came over
//! included, so a pipe along it refuses at once a frame that a later hop
//! could not pass on.
//!
//! A route holds nothing of its own but its numbers: the server's name
//! and capabilities are shared with the other routes to the server (and
//! with its registry entry and what each link announces of it), and its
//! path is stored once, with this node appended, as the path every
//! neighbour is told. What this node announces of a server is numbered
//! ([`RouteTable::version`]): a link remembers the number of what it
//! announced, not a copy of the route.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::NodeId;
use crate::registry::Capabilities;
use crate::wire::{EntryInfo, RouteInfo};

/// A link of this node, as numbered by the node.
pub(crate) type LinkId = u64;

/// One server of one origin node: what routes lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RouteKey {
    /// The node the server lives on.
    pub(crate) origin: NodeId,
    /// The entry's id on that node.
    pub(crate) origin_id: u64,
}

/// One way to reach a server: through one link, as the neighbour on it
/// announced it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate<E> {
    pub(crate) link: LinkId,
    /// The entry's id on the neighbour (what it withdraws).
    pub(crate) peer_id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) capabilities: Arc<Capabilities>,
    pub(crate) group: bool,
    /// From the origin to this node, both included: the path as the
    /// neighbour announced it with this node appended (what this node
    /// announces onwards, one path for all its neighbours).
    onward: Arc<[NodeId]>,
    /// Total cost from this node: the neighbour's cost plus the link's.
    pub(crate) cost: u64,
    /// The longest pipe frame the route carries from this node: the
    /// smallest of the neighbour's pipe window and what the neighbour
    /// announced (its window alone when it did not say).
    pub(crate) pipe_frame: u32,
    /// How to reach the server through this link.
    pub(crate) endpoint: E,
}

impl<E> Candidate<E> {
    fn rank(&self) -> (u64, usize, LinkId, u64) {
        (self.cost, self.path().len(), self.link, self.peer_id)
    }

    /// From the origin to the neighbour, both included.
    pub(crate) fn path(&self) -> &[NodeId] {
        self.onward.split_last().map_or(&[], |(_me, path)| path)
    }

    /// The route to the server `origin_id` of its node that this node
    /// announces for it to a neighbour: the path with this node appended.
    fn onward(&self, origin_id: u64) -> RouteInfo {
        RouteInfo {
            origin_id,
            path: self.onward.clone(),
            cost: u32::try_from(self.cost).unwrap_or(u32::MAX),
            pipe_frame: Some(self.pipe_frame),
        }
    }
}

/// Why an announced route was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This node is on the path: taking it would make a loop.
    Loop,
    /// The path is longer than the hop limit.
    TooFar { hops: usize, limit: usize },
    /// The path does not end at the neighbour that sent it, or names a
    /// node twice.
    Malformed(&'static str),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Loop => f.write_str("this node is on the route's path (a loop)"),
            Refused::TooFar { hops, limit } => {
                write!(
                    f,
                    "the route is {hops} hops long, over the limit of {limit}"
                )
            }
            Refused::Malformed(why) => write!(f, "malformed route: {why}"),
        }
    }
}

/// The link a route was announced over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    /// The link, as numbered by this node.
    pub(crate) link: LinkId,
    /// The neighbour on it.
    pub(crate) peer: NodeId,
    /// What crossing it costs (see [`super::link_cost`]).
    pub(crate) cost: u32,
    /// The neighbour's pipe window: the longest pipe frame the link takes.
    pub(crate) pipe_window: u32,
}

/// The routes to one server.
#[derive(Debug)]
struct Routes<E> {
    candidates: Vec<Candidate<E>>,
    /// What this node announces of the server: its best route's path
    /// onwards, cost and pipe frame, numbered.
    shown: Shown,
}

/// What this node announces of a server, and its number: the number
/// changes when what is announced does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    path: Arc<[NodeId]>,
    cost: u64,
    pipe_frame: u32,
    version: u64,
}

impl Shown {
    fn of<E>(best: &Candidate<E>, version: u64) -> Self {
        Self {
            path: best.onward.clone(),
            cost: best.cost,
            pipe_frame: best.pipe_frame,
            version,
        }
    }

    fn same_as<E>(&self, best: &Candidate<E>) -> bool {
        self.path == best.onward && self.cost == best.cost && self.pipe_frame == best.pipe_frame
    }
}

/// Every route this node knows.
#[derive(Debug)]
pub(crate) struct RouteTable<E> {
    me: NodeId,
    max_hops: usize,
    routes: BTreeMap<RouteKey, Routes<E>>,
    /// Which key each (link, neighbour's entry id) announced.
    by_peer: HashMap<(LinkId, u64), RouteKey>,
    /// The number of the next change of what is announced of a server.
    next_version: u64,
}

impl<E: Clone> RouteTable<E> {
    /// An empty table for node `me`, refusing paths over `max_hops`.
    pub(crate) fn new(me: NodeId, max_hops: usize) -> Self {
        Self {
            me,
            max_hops,
            routes: BTreeMap::new(),
            by_peer: HashMap::new(),
            next_version: 1,
        }
    }

    /// The neighbour on `hop` announced `entry` with `route` (for a plain
    /// announcement of the neighbour's own server: origin id = entry id,
    /// path = [peer], cost 0, no pipe frame limit). Returns the key whose
    /// routes changed; an id announced again on the same link replaces its
    /// earlier route.
    pub(crate) fn learn(
        &mut self,
        hop: Hop,
        entry: EntryInfo,
        route: RouteInfo,
        endpoint: E,
    ) -> Result<Vec<RouteKey>, Refused> {
        let Hop {
            link,
            peer,
            cost: link_cost,
            pipe_window,
        } = hop;
        let path = route.path;
        if path.last() != Some(&peer) {
            return Err(Refused::Malformed(
                "the path does not end at the announcing node",
            ));
        }
        if path.contains(&self.me) {
            return Err(Refused::Loop);
        }
        let distinct: HashSet<&NodeId> = path.iter().collect();
        if distinct.len() != path.len() {
            return Err(Refused::Malformed("a node appears twice on the path"));
        }
        if path.len() > self.max_hops {
            return Err(Refused::TooFar {
                hops: path.len(),
                limit: self.max_hops,
            });
        }
        let key = RouteKey {
            origin: path[0],
            origin_id: route.origin_id,
        };
        let mut changed: Vec<RouteKey> = self.remove(link, entry.id).into_iter().collect();
        // One name and one set of capabilities per server, whichever
        // links announce it.
        let (mut name, mut capabilities) = (entry.name, entry.capabilities);
        for other in self.candidates(&key) {
            if other.name == name {
                name = other.name.clone();
            }
            if other.capabilities == capabilities {
                capabilities = other.capabilities.clone();
            }
        }
        let cand = Candidate {
            link,
            peer_id: entry.id,
            name,
            capabilities,
            group: entry.group,
            onward: path.iter().copied().chain([self.me]).collect(),
            cost: u64::from(route.cost) + u64::from(link_cost),
            pipe_frame: route.pipe_frame.map_or(pipe_window, |m| m.min(pipe_window)),
            endpoint,
        };
        match self.routes.entry(key) {
            Entry::Vacant(v) => {
                let version = self.next_version;
                self.next_version += 1;
                v.insert(Routes {
                    shown: Shown::of(&cand, version),
                    // Most servers have one route: room for that one only.
                    candidates: vec![cand],
                });
            }
            Entry::Occupied(mut o) => o.get_mut().candidates.push(cand),
        }
        self.by_peer.insert((link, entry.id), key);
        if !changed.contains(&key) {
            changed.push(key);
        }
        for key in &changed {
            self.settle(key);
        }
        Ok(changed)
    }

    /// The neighbour on `link` withdrew its entry `peer_id`: the key whose
    /// routes changed, if any.
    pub(crate) fn forget(&mut self, link: LinkId, peer_id: u64) -> Vec<RouteKey> {
        let Some(key) = self.remove(link, peer_id) else {
            return Vec::new();
        };
        self.settle(&key);
        vec![key]
    }

    /// Take out the route of `link`'s entry `peer_id`: its key, if there
    /// was one (to be [`settle`](Self::settle)d; until then the key stays
    /// even with no route left, so that a route replaced by the same one
    /// keeps its number).
    fn remove(&mut self, link: LinkId, peer_id: u64) -> Option<RouteKey> {
        let key = self.by_peer.remove(&(link, peer_id))?;
        if let Some(routes) = self.routes.get_mut(&key) {
            routes
                .candidates
                .retain(|c| !(c.link == link && c.peer_id == peer_id));
        }
        Some(key)
    }

    /// The routes to `key` changed: drop it if it has none left, else
    /// number what is announced of it anew if that changed.
    fn settle(&mut self, key: &RouteKey) {
        let Some(routes) = self.routes.get_mut(key) else {
            return;
        };
        let Some(best) = routes.candidates.iter().min_by_key(|c| c.rank()) else {
            self.routes.remove(key);
            return;
        };
        if !routes.shown.same_as(best) {
            routes.shown = Shown::of(best, self.next_version);
            self.next_version += 1;
        }
    }

    /// The number of what this node announces of `key` (see
    /// [`export`](Self::export)): it changes when that does, so a link
    /// that announced a route remembers its number to tell whether to
    /// announce it again. 0 for a server with no route.
    pub(crate) fn version(&self, key: &RouteKey) -> u64 {
        self.routes.get(key).map_or(0, |r| r.shown.version)
    }

    /// `link` went down: every route through it goes. Returns the keys
    /// whose routes changed.
    pub(crate) fn forget_link(&mut self, link: LinkId) -> Vec<RouteKey> {
        let ids: Vec<u64> = self
            .by_peer
            .keys()
            .filter(|(l, _)| *l == link)
            .map(|(_, id)| *id)
            .collect();
        let mut changed: Vec<RouteKey> = ids
            .into_iter()
            .flat_map(|id| self.forget(link, id))
            .collect();
        changed.sort();
        changed.dedup();
        changed
    }

    /// The best route to `key`, if there is one.
    pub(crate) fn best(&self, key: &RouteKey) -> Option<&Candidate<E>> {
        self.routes
            .get(key)?
            .candidates
            .iter()
            .min_by_key(|c| c.rank())
    }

    /// Whether `route` is as long as the hop limit lets a route go: this
    /// node takes it but announces it to no neighbour.
    pub(crate) fn at_hop_limit(&self, route: &Candidate<E>) -> bool {
        route.path().len() >= self.max_hops
    }

    /// Every route to `key`.
    pub(crate) fn candidates(&self, key: &RouteKey) -> &[Candidate<E>] {
        self.routes.get(key).map_or(&[], |r| &r.candidates[..])
    }

    /// Every key with at least one route, with its best route.
    pub(crate) fn bests(&self) -> impl Iterator<Item = (&RouteKey, &Candidate<E>)> {
        self.routes
            .iter()
            .filter_map(|(k, r)| Some((k, r.candidates.iter().min_by_key(|c| c.rank())?)))
    }

    /// The route to `key` this node announces to `peer`, reached over
    /// `link`: none when the best route goes through that neighbour (it is
    /// on the path), or when one more hop would pass the hop limit.
    pub(crate) fn export(&self, key: &RouteKey, link: LinkId, peer: NodeId) -> Option<RouteInfo> {
        let best = self.best(key)?;
        if best.link == link || best.path().contains(&peer) || self.at_hop_limit(best) {
            return None;
        }
        Some(best.onward(key.origin_id))
    }

    /// Whether a message for `key` that arrived from `peer` over `link`
    /// may be forwarded along the best route (which must not lead back).
    pub(crate) fn forwards(&self, key: &RouteKey, link: LinkId, peer: NodeId) -> bool {
        self.best(key)
            .is_some_and(|b| b.link != link && !b.path().contains(&peer))
    }

    /// How many routes (all candidates) the table holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.routes.values().map(|r| r.candidates.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    fn n(i: u8) -> NodeId {
        NodeId::from_bytes([i + 1; 16])
    }

    fn entry(id: u64) -> EntryInfo {
        EntryInfo {
            id,
            name: format!("s{id}").into(),
            capabilities: Capabilities::new().into(),
            group: false,
        }
    }

    fn route(origin_id: u64, path: &[u8], cost: u32) -> RouteInfo {
        RouteInfo {
            origin_id,
            path: path.iter().map(|i| n(*i)).collect(),
            cost,
            pipe_frame: None,
        }
    }

    /// Link `link` to `peer`, costing `cost`, taking 64 KiB pipe frames.
    fn hop(link: LinkId, peer: NodeId, cost: u32) -> Hop {
        Hop {
            link,
            peer,
            cost,
            pipe_window: 64 * 1024,
        }
    }

    fn key(origin: u8, origin_id: u64) -> RouteKey {
        RouteKey {
            origin: n(origin),
            origin_id,
        }
    }

    #[test]
    fn refuses_loops_bad_paths_and_far_routes() {
        let mut t = RouteTable::<()>::new(n(0), 3);
        // This node on the path.
        let r = t.learn(hop(1, n(1), 1), entry(1), route(1, &[0, 1], 0), ());
        assert_eq!(r, Err(Refused::Loop));
        // The path must end at the neighbour that sent it.
        let r = t.learn(hop(1, n(1), 1), entry(1), route(1, &[2], 0), ());
        assert!(matches!(r, Err(Refused::Malformed(_))));
        let r = t.learn(hop(1, n(1), 1), entry(1), route(1, &[2, 1, 2, 1], 0), ());
        assert!(matches!(r, Err(Refused::Malformed(_))));
        // Over the hop limit.
        let r = t.learn(hop(1, n(1), 1), entry(1), route(1, &[4, 3, 2, 1], 0), ());
        assert_eq!(r, Err(Refused::TooFar { hops: 4, limit: 3 }));
        assert_eq!(t.len(), 0);
        // At the limit: taken, but not announced further.
        t.learn(hop(1, n(1), 1), entry(1), route(7, &[3, 2, 1], 0), ())
            .unwrap();
        assert_eq!(t.export(&key(3, 7), 2, n(5)), None);
    }

    #[test]
    fn best_route_and_failover() {
        // Ring 0-1-2-3-0: node 2's server reached via 1 (2 hops) and via 3.
        let mut t = RouteTable::new(n(0), 8);
        t.learn(hop(10, n(1), 1), entry(5), route(9, &[2, 1], 1), "via1")
            .unwrap();
        t.learn(hop(30, n(3), 1), entry(6), route(9, &[2, 3], 1), "via3")
            .unwrap();
        let k = key(2, 9);
        // Equal cost and hops: the lower link id.
        assert_eq!(t.best(&k).unwrap().endpoint, "via1");
        // A cheaper route (a faster link) wins over fewer hops.
        t.learn(hop(40, n(4), 1), entry(1), route(9, &[2, 5, 4], 0), "via4")
            .unwrap();
        assert_eq!(t.best(&k).unwrap().endpoint, "via4");
        assert_eq!(t.forget(40, 1), vec![k]);
        // Announced to 3 with this node appended; never back to 1.
        let out = t.export(&k, 30, n(3)).unwrap();
        assert_eq!(*out.path, [n(2), n(1), n(0)]);
        assert_eq!(out.cost, 2);
        assert_eq!(out.origin_id, 9);
        assert_eq!(t.export(&k, 10, n(1)), None);
        // Forwarding: not back over the link the best route uses.
        assert!(t.forwards(&k, 30, n(3)));
        assert!(!t.forwards(&k, 10, n(1)));
        // The link to 1 goes: the route via 3 takes over.
        assert_eq!(t.forget_link(10), vec![k]);
        assert_eq!(t.best(&k).unwrap().endpoint, "via3");
        assert_eq!(t.export(&k, 30, n(3)), None);
        assert_eq!(t.forget(30, 6), vec![k]);
        assert!(t.best(&k).is_none());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_pipe_frame_is_the_smallest_window_on_the_way() {
        let mut t = RouteTable::new(n(0), 8);
        let far = Hop {
            pipe_window: 256 * 1024,
            ..hop(1, n(1), 1)
        };
        // Announced without a limit (a neighbour's own server, or an
        // older neighbour): the link's window.
        t.learn(far, entry(5), route(9, &[2, 1], 1), ()).unwrap();
        assert_eq!(t.best(&key(2, 9)).unwrap().pipe_frame, 256 * 1024);
        // A smaller window further on limits the route, and is announced
        // onwards.
        let r = RouteInfo {
            pipe_frame: Some(4096),
            ..route(9, &[2, 1], 1)
        };
        t.learn(far, entry(5), r, ()).unwrap();
        assert_eq!(t.best(&key(2, 9)).unwrap().pipe_frame, 4096);
        assert_eq!(
            t.export(&key(2, 9), 2, n(3)).unwrap().pipe_frame,
            Some(4096)
        );
        // A smaller window of the link itself limits it too.
        let r = RouteInfo {
            pipe_frame: Some(1 << 20),
            ..route(9, &[2, 1], 1)
        };
        t.learn(hop(1, n(1), 1), entry(5), r, ()).unwrap();
        assert_eq!(
            t.export(&key(2, 9), 2, n(3)).unwrap().pipe_frame,
            Some(64 * 1024)
        );
    }

    #[test]
    fn what_is_announced_is_numbered() {
        let mut t = RouteTable::new(n(0), 8);
        let k = key(2, 9);
        assert_eq!(t.version(&k), 0);
        t.learn(hop(1, n(1), 1), entry(5), route(9, &[2, 1], 1), ())
            .unwrap();
        let v = t.version(&k);
        assert_ne!(v, 0);
        // Announced again as it was, or a second link to the same
        // neighbour with the same route: the same number.
        t.learn(hop(1, n(1), 1), entry(5), route(9, &[2, 1], 1), ())
            .unwrap();
        t.learn(hop(3, n(1), 1), entry(5), route(9, &[2, 1], 1), ())
            .unwrap();
        assert_eq!(t.version(&k), v);
        // Failing over to it changes nothing that is announced.
        t.forget_link(1);
        assert_eq!(t.version(&k), v);
        // A worse route besides: the best is the same, so is the number.
        t.learn(hop(2, n(4), 1), entry(6), route(9, &[2, 4], 4), ())
            .unwrap();
        assert_eq!(t.version(&k), v);
        // The best route costs more: a new number.
        t.learn(hop(3, n(1), 1), entry(5), route(9, &[2, 1], 2), ())
            .unwrap();
        let v2 = t.version(&k);
        assert_ne!(v2, v);
        // Every neighbour is told the one path.
        let (a, b) = (
            t.export(&k, 5, n(5)).unwrap(),
            t.export(&k, 6, n(6)).unwrap(),
        );
        assert!(Arc::ptr_eq(&a.path, &b.path));
        // The best route goes, the other takes over: a new number.
        t.forget(3, 5);
        assert_ne!(t.version(&k), v2);
        assert_eq!(*t.export(&k, 5, n(5)).unwrap().path, [n(2), n(4), n(0)]);
        t.forget(2, 6);
        assert_eq!(t.version(&k), 0);
    }

    #[test]
    fn announcing_again_replaces() {
        let mut t = RouteTable::new(n(0), 8);
        t.learn(hop(1, n(1), 1), entry(5), route(9, &[2, 1], 4), ())
            .unwrap();
        t.learn(hop(1, n(1), 1), entry(5), route(9, &[3, 2, 1], 1), ())
            .unwrap();
        assert_eq!(t.len(), 1);
        assert!(t.best(&key(2, 9)).is_none());
        assert_eq!(t.best(&key(3, 9)).unwrap().cost, 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Whatever is announced and withdrawn: no accepted route holds
        /// this node or goes over the hop limit, exports never go back
        /// to a node on the path, and the best route is the cheapest.
        #[test]
        fn table_invariants(ops in proptest::collection::vec(
            (0u8..4, 0u64..6, proptest::collection::vec(1u8..7, 1..7), 0u32..5, any::<bool>()),
            0..60,
        )) {
            let limit = 4;
            let mut t = RouteTable::new(n(0), limit);
            // What was announced of each server, and its number.
            let mut shown: HashMap<RouteKey, (RouteInfo, u64)> = HashMap::new();
            for (link, id, mut path, cost, withdraw) in ops {
                let link = u64::from(link);
                // The neighbour on link L is node L+1 (so also a path node).
                let peer = n(link as u8 + 1);
                if withdraw {
                    t.forget(link, id);
                } else {
                    path.push(link as u8 + 1);
                    let r = route(id % 2, &path, cost);
                    let res = t.learn(hop(link, peer, 1), entry(id), r.clone(), link);
                    let dup = {
                        let s: HashSet<_> = r.path.iter().collect();
                        s.len() != r.path.len()
                    };
                    prop_assert_eq!(res.is_ok(), !dup && r.path.len() <= limit);
                }
                // The number of what is announced of a server changes
                // when (and only when) that changes.
                let now: HashMap<RouteKey, (RouteInfo, u64)> = t
                    .bests()
                    .map(|(k, best)| (*k, (best.onward(k.origin_id), t.version(k))))
                    .collect();
                for (k, (route, version)) in &now {
                    if let Some((was, was_version)) = shown.get(k) {
                        prop_assert_eq!(was == route, was_version == version);
                    }
                }
                shown = now;
            }
            let keys: Vec<RouteKey> = t.bests().map(|(k, _)| *k).collect();
            for k in keys {
                let cands = t.candidates(&k);
                let best = t.best(&k).unwrap();
                for c in cands {
                    prop_assert!(!c.path().contains(&n(0)));
                    prop_assert!(c.path().len() <= limit);
                    prop_assert!(best.cost <= c.cost);
                }
                for link in 0..4u64 {
                    let peer = n(link as u8 + 1);
                    if let Some(out) = t.export(&k, link, peer) {
                        prop_assert!(!out.path[..out.path.len() - 1].contains(&peer));
                        prop_assert!(out.path.len() <= limit);
                        prop_assert_eq!(out.path.last(), Some(&n(0)));
                    }
                }
            }
            for link in 0..4u64 {
                t.forget_link(link);
            }
            prop_assert_eq!(t.len(), 0);
            prop_assert!(t.by_peer.is_empty());
        }
    }

    /// A network of route tables exchanging exports until nothing
    /// changes: each node `i` has one server (origin id 1), every link
    /// costs 1, link ids are `from * 100 + to`, node `i` takes pipe frames
    /// of up to [`Net::window`] bytes.
    struct Net {
        tables: Vec<RouteTable<()>>,
        edges: HashSet<(usize, usize)>,
        /// What each node announced on each directed edge, by key.
        sent: HashMap<(usize, usize), HashMap<RouteKey, RouteInfo>>,
    }

    impl Net {
        fn new(count: usize, edges: &[(usize, usize)], limit: usize) -> Self {
            let mut set = HashSet::new();
            for &(a, b) in edges {
                if a != b {
                    set.insert((a, b));
                    set.insert((b, a));
                }
            }
            Self {
                tables: (0..count)
                    .map(|i| RouteTable::new(n(i as u8), limit))
                    .collect(),
                edges: set,
                sent: HashMap::new(),
            }
        }

        /// Node `i`'s pipe window: different for most nodes.
        fn window(i: usize) -> u32 {
            1000 + (i as u32 * 7 % 5) * 100
        }

        fn id(key: &RouteKey) -> u64 {
            u64::from(key.origin.as_bytes()[0]) * 1000 + key.origin_id
        }

        /// One round on every edge; true if anything was announced or
        /// withdrawn.
        fn round(&mut self) -> bool {
            let mut busy = false;
            let mut edges: Vec<_> = self.edges.iter().copied().collect();
            edges.sort();
            for (i, j) in edges {
                let me = n(i as u8);
                let mut out: HashMap<RouteKey, RouteInfo> = HashMap::new();
                out.insert(
                    RouteKey {
                        origin: me,
                        origin_id: 1,
                    },
                    RouteInfo {
                        origin_id: 1,
                        path: Arc::new([me]),
                        cost: 0,
                        pipe_frame: None,
                    },
                );
                let keys: Vec<RouteKey> = self.tables[i].bests().map(|(k, _)| *k).collect();
                for k in keys {
                    if let Some(r) = self.tables[i].export(&k, (i * 100 + j) as u64, n(j as u8)) {
                        out.insert(k, r);
                    }
                }
                let before = self.sent.remove(&(i, j)).unwrap_or_default();
                let link = (j * 100 + i) as u64;
                for (k, r) in &out {
                    if before.get(k) != Some(r) {
                        busy = true;
                        let e = EntryInfo {
                            id: Self::id(k),
                            name: "s".into(),
                            capabilities: Capabilities::new().into(),
                            group: false,
                        };
                        let h = Hop {
                            pipe_window: Self::window(i),
                            ..hop(link, me, 1)
                        };
                        let _ = self.tables[j].learn(h, e, r.clone(), ());
                    }
                }
                for k in before.keys() {
                    if !out.contains_key(k) {
                        busy = true;
                        self.tables[j].forget(link, Self::id(k));
                    }
                }
                self.sent.insert((i, j), out);
            }
            busy
        }

        fn settle(&mut self) {
            for _ in 0..200 {
                if !self.round() {
                    return;
                }
            }
            panic!("routes did not settle in 200 rounds");
        }

        fn cut(&mut self, a: usize, b: usize) {
            self.edges.remove(&(a, b));
            self.edges.remove(&(b, a));
            self.sent.remove(&(a, b));
            self.sent.remove(&(b, a));
            self.tables[a].forget_link((a * 100 + b) as u64);
            self.tables[b].forget_link((b * 100 + a) as u64);
        }

        /// Hops from `from` to every node (BFS).
        fn dist(&self, from: usize) -> Vec<Option<usize>> {
            let mut d = vec![None; self.tables.len()];
            d[from] = Some(0);
            let mut q = std::collections::VecDeque::from([from]);
            while let Some(x) = q.pop_front() {
                for &(a, b) in &self.edges {
                    if a == x && d[b].is_none() {
                        d[b] = Some(d[x].unwrap() + 1);
                        q.push_back(b);
                    }
                }
            }
            d
        }

        /// Every node's best route to every other is a shortest path
        /// (when within the hop limit) whose pipe frame is the smallest
        /// window on it, and following the links of the best routes gets
        /// there without a loop.
        fn check(&self, limit: usize) -> Result<(), TestCaseError> {
            let count = self.tables.len();
            for o in 0..count {
                let key = RouteKey {
                    origin: n(o as u8),
                    origin_id: 1,
                };
                let d = self.dist(o);
                for (j, dj) in d.iter().enumerate() {
                    if j == o {
                        continue;
                    }
                    let best = self.tables[j].best(&key);
                    match *dj {
                        Some(h) if h <= limit => {
                            let b = best.ok_or_else(|| {
                                TestCaseError::fail(format!("{j} has no route to {o}"))
                            })?;
                            prop_assert_eq!(b.path().len(), h);
                            prop_assert_eq!(b.cost, h as u64);
                            let smallest = b
                                .path()
                                .iter()
                                .map(|p| Self::window(usize::from(p.as_bytes()[0] - 1)))
                                .min();
                            prop_assert_eq!(Some(b.pipe_frame), smallest);
                            // Follow the best links.
                            let (mut at, mut steps) = (j, 0);
                            while at != o {
                                let b = self.tables[at].best(&key).unwrap();
                                at = (b.link % 100) as usize;
                                steps += 1;
                                prop_assert!(steps <= h, "a forwarding loop towards {}", o);
                            }
                        }
                        _ => prop_assert!(best.is_none(), "{} routes to {} out of reach", j, o),
                    }
                }
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

        /// Random graphs of up to 7 nodes: routes settle on shortest
        /// paths, loop-free, within the hop limit; after cutting links
        /// they settle again (withdrawals propagate, no count to infinity).
        #[test]
        fn networks_settle_on_shortest_loop_free_paths(
            count in 2usize..8,
            edges in proptest::collection::vec((0usize..8, 0usize..8), 1..14),
            cuts in proptest::collection::vec(0usize..14, 0..4),
            limit in 2usize..6,
        ) {
            let edges: Vec<_> = edges.into_iter().map(|(a, b)| (a % count, b % count)).collect();
            let mut net = Net::new(count, &edges, limit);
            net.settle();
            net.check(limit)?;
            for c in cuts {
                let (a, b) = edges[c % edges.len()];
                net.cut(a, b);
                net.settle();
                net.check(limit)?;
            }
        }
    }
}
