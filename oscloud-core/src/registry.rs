//! The registry: servers advertise a name and capabilities; others find them.
//!
//! A registration returns a [`Registration`] guard: dropping it removes the
//! entry (and tells every watcher why). A name belongs to one server unless
//! the servers holding it explicitly form a *group*, in which case
//! [`Registry::lookup`] hands out the members round-robin: a pool of
//! identical workers under one name.
//!
//! Every [`Entry`] carries the [`NodeId`] of the node the server lives on and
//! the [`Endpoint`] that delivers messages to it, wherever that is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::directory::Resolver;
use crate::{Endpoint, Error, NodeId};

/// The longest server name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Which way data flows through a server's pipe port (a pipe is two-way;
/// this says which directions the server uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PortDirection {
    /// The server reads what the opener writes (a sink's `in`).
    In,
    /// The server writes, the opener reads (a source's `out`).
    Out,
    /// Both ways (a process's `stdio`).
    Both,
}

impl PortDirection {
    /// Its code on the wire (`docs/PROTOCOL.md` §5.1): bit 0 set when the
    /// server reads, bit 1 when it writes.
    pub const fn code(self) -> u8 {
        match self {
            Self::In => 1,
            Self::Out => 2,
            Self::Both => 3,
        }
    }

    /// The direction of a wire code, `None` for a code not in §5.1.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::In),
            2 => Some(Self::Out),
            3 => Some(Self::Both),
            _ => None,
        }
    }

    /// The direction written `in`, `out` or `both` (as [`as_str`](Self::as_str)
    /// writes it), `None` for other text.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::In, Self::Out, Self::Both]
            .into_iter()
            .find(|d| d.as_str() == text)
    }

    /// `in`, `out` or `both`, as tools show it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
            Self::Both => "both",
        }
    }
}

impl fmt::Display for PortDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a server says about itself: which message kinds it accepts and
/// produces, which features it has, free-form metadata, and the pipe ports
/// it takes.
///
/// The kernel never interprets these; they exist so that servers and tools
/// can [query](Registry::query) for a server that fits, and so that a peer
/// knows which ports it may open a pipe to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Kinds of message (or pipe content) the server accepts, e.g. `"reading"`.
    pub accepts: Vec<String>,
    /// Kinds of message (or pipe content) the server produces, e.g. `"alert"`.
    pub produces: Vec<String>,
    /// Named features, e.g. `"gpu"`.
    pub features: BTreeSet<String>,
    /// Free key/value metadata, e.g. `version = "1.2"`.
    pub metadata: BTreeMap<String, String>,
    /// The pipe ports the server takes, by name (e.g. `"in"` →
    /// [`PortDirection::In`]). Servers of `oscloud-actors` fill it from
    /// their `Server::ports`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, PortDirection>,
}

impl Capabilities {
    /// No capabilities at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an accepted kind.
    pub fn accepts(mut self, kind: impl Into<String>) -> Self {
        self.accepts.push(kind.into());
        self
    }

    /// Add a produced kind.
    pub fn produces(mut self, kind: impl Into<String>) -> Self {
        self.produces.push(kind.into());
        self
    }

    /// Add a feature.
    pub fn feature(mut self, feature: impl Into<String>) -> Self {
        self.features.insert(feature.into());
        self
    }

    /// Set a metadata key.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Declare a pipe port (a second declaration of a name replaces the
    /// first).
    pub fn port(mut self, name: impl Into<String>, direction: PortDirection) -> Self {
        self.ports.insert(name.into(), direction);
        self
    }
}

/// A capability filter for [`Registry::query`]. Every condition that is set
/// must hold; an empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The name starts with this.
    pub name_prefix: Option<String>,
    /// The server accepts every one of these kinds.
    pub accepts: Vec<String>,
    /// The server produces every one of these kinds.
    pub produces: Vec<String>,
    /// The server has every one of these features.
    pub features: BTreeSet<String>,
    /// The server's metadata has each of these keys with this value.
    pub metadata: BTreeMap<String, String>,
    /// The server lives on this node.
    pub node: Option<NodeId>,
}

impl Filter {
    /// A filter that matches every entry.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only names starting with `prefix`.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    /// Only servers that accept `kind`.
    pub fn accepts(mut self, kind: impl Into<String>) -> Self {
        self.accepts.push(kind.into());
        self
    }

    /// Only servers that produce `kind`.
    pub fn produces(mut self, kind: impl Into<String>) -> Self {
        self.produces.push(kind.into());
        self
    }

    /// Only servers with `feature`.
    pub fn feature(mut self, feature: impl Into<String>) -> Self {
        self.features.insert(feature.into());
        self
    }

    /// Only servers whose metadata has `key = value`.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Only servers on `node`.
    pub fn on_node(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// Whether `entry` passes the filter.
    pub fn matches(&self, entry: &Entry) -> bool {
        let caps = entry.capabilities();
        self.name_prefix
            .as_deref()
            .is_none_or(|p| entry.name().starts_with(p))
            && self.accepts.iter().all(|k| caps.accepts.contains(k))
            && self.produces.iter().all(|k| caps.produces.contains(k))
            && self.features.is_subset(&caps.features)
            && self
                .metadata
                .iter()
                .all(|(k, v)| caps.metadata.get(k) == Some(v))
            && self.node.is_none_or(|n| n == entry.node())
    }
}

/// A registry entry's unique id (unique within one registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryId(pub u64);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One registered server: its name, capabilities, where it lives and how to
/// reach it. Cheap to clone.
#[derive(Clone)]
pub struct Entry(Arc<EntryInner>);

struct EntryInner {
    id: EntryId,
    name: Arc<str>,
    node: NodeId,
    capabilities: Arc<Capabilities>,
    group: bool,
    endpoint: Arc<dyn Endpoint>,
}

impl Entry {
    /// The entry's id.
    pub fn id(&self) -> EntryId {
        self.0.id
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The node the server lives on.
    pub fn node(&self) -> NodeId {
        self.0.node
    }

    /// What the server advertised.
    pub fn capabilities(&self) -> &Capabilities {
        &self.0.capabilities
    }

    /// The server's name, shared (what announcements of it carry).
    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.0.name
    }

    /// What the server advertised, shared (what announcements of it
    /// carry).
    pub(crate) fn shared_capabilities(&self) -> &Arc<Capabilities> {
        &self.0.capabilities
    }

    /// Whether the entry is one member of a group.
    pub fn is_group_member(&self) -> bool {
        self.0.group
    }

    /// How to deliver messages to the server.
    pub fn endpoint(&self) -> &Arc<dyn Endpoint> {
        &self.0.endpoint
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Entry {}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.0.id)
            .field("name", &self.0.name)
            .field("node", &self.0.node)
            .field("group", &self.0.group)
            .field("capabilities", &self.0.capabilities)
            .finish()
    }
}

/// Why an entry left the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// The server unregistered or stopped normally.
    Normal,
    /// The server failed; the text says how.
    Failed(String),
    /// The link to the server's node went down; the text says why.
    LinkDown(String),
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal exit"),
            ExitReason::Failed(why) => write!(f, "failed: {why}"),
            ExitReason::LinkDown(why) => write!(f, "link down: {why}"),
        }
    }
}

/// A change in the registry, as seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A server was registered.
    Added(Entry),
    /// A server left the registry.
    Removed {
        /// The entry that left.
        entry: Entry,
        /// Why it left.
        reason: ExitReason,
    },
}

impl RegistryEvent {
    /// The entry the event is about.
    pub fn entry(&self) -> &Entry {
        match self {
            RegistryEvent::Added(e) => e,
            RegistryEvent::Removed { entry, .. } => entry,
        }
    }
}

/// Everything needed to register an entry, for callers that need more
/// control than [`Registry::register`] gives (such as the node layer, which
/// registers servers living on other nodes). The name and capabilities are
/// shared: the entry holds them without a copy.
#[derive(Debug, Clone)]
pub struct EntrySpec {
    /// The server's name.
    pub name: Arc<str>,
    /// The node it lives on.
    pub node: NodeId,
    /// What it advertises.
    pub capabilities: Arc<Capabilities>,
    /// Join (or found) a group of that name instead of taking it alone.
    pub group: bool,
    /// How to reach it.
    pub endpoint: Arc<dyn Endpoint>,
}

/// The kernel's registry of servers. Cheap to clone: clones share one
/// registry.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeId,
    next_id: AtomicU64,
    /// Raised (under the state's lock) with every change: see
    /// [`Registry::generation`].
    generation: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Keyed by the name its entries hold (shared, not a copy).
    names: HashMap<Arc<str>, Slot>,
    watchers: Vec<mpsc::UnboundedSender<RegistryEvent>>,
    /// Asked by [`Registry::find`] for a name not here.
    resolver: Option<Arc<dyn Resolver>>,
}

struct Slot {
    group: bool,
    members: Vec<Entry>,
    cursor: usize,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("Registry")
            .field("node", &self.inner.node)
            .field("names", &state.names.len())
            .field("watchers", &state.watchers.len())
            .finish()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, but stay usable even if
        // a user's Endpoint impl did so in a Debug impl.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Tell every watcher about a change, and raise the generation. Every
    /// change of the names goes through here, under the state's lock.
    fn publish(&self, state: &mut State, event: RegistryEvent) {
        self.generation.fetch_add(1, Ordering::Release);
        state.watchers.retain(|w| w.send(event.clone()).is_ok());
    }
}

fn validate_name(name: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("a name cannot be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("a name is at most 255 bytes");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("a name cannot contain white space or control characters");
    }
    Ok(())
}

impl Registry {
    /// An empty registry for the node `node`.
    pub fn new(node: NodeId) -> Self {
        Self {
            inner: Arc::new(Inner {
                node,
                next_id: AtomicU64::new(1),
                generation: AtomicU64::new(0),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The local node: servers registered with [`register`](Self::register)
    /// live here.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// Register a local server under `name`, which must be free.
    pub fn register(
        &self,
        name: impl Into<String>,
        capabilities: Capabilities,
        endpoint: Arc<dyn Endpoint>,
    ) -> Result<Registration, Error> {
        self.insert(EntrySpec {
            name: Arc::from(Into::<String>::into(name)),
            node: self.inner.node,
            capabilities: Arc::new(capabilities),
            group: false,
            endpoint,
        })
    }

    /// Register a local server as one member of the group `name` (founding
    /// the group if the name is free).
    pub fn join_group(
        &self,
        name: impl Into<String>,
        capabilities: Capabilities,
        endpoint: Arc<dyn Endpoint>,
    ) -> Result<Registration, Error> {
        self.insert(EntrySpec {
            name: Arc::from(Into::<String>::into(name)),
            node: self.inner.node,
            capabilities: Arc::new(capabilities),
            group: true,
            endpoint,
        })
    }

    /// Register an entry described in full.
    pub fn insert(&self, spec: EntrySpec) -> Result<Registration, Error> {
        validate_name(&spec.name)?;
        let mut state = self.inner.lock();
        if let Some(slot) = state.names.get(&spec.name)
            && !(slot.group && spec.group)
        {
            return Err(Error::NameTaken {
                name: spec.name.to_string(),
                group: slot.group,
            });
        }
        let entry = Entry(Arc::new(EntryInner {
            id: EntryId(self.inner.next_id.fetch_add(1, Ordering::Relaxed)),
            name: spec.name.clone(),
            node: spec.node,
            capabilities: spec.capabilities,
            group: spec.group,
            endpoint: spec.endpoint,
        }));
        state
            .names
            .entry(spec.name)
            .or_insert_with(|| Slot {
                group: spec.group,
                members: Vec::new(),
                cursor: 0,
            })
            .members
            .push(entry.clone());
        self.inner
            .publish(&mut state, RegistryEvent::Added(entry.clone()));
        tracing::debug!(name = entry.name(), id = %entry.id(), node = %entry.node().short(), "registered");
        Ok(Registration {
            registry: Arc::downgrade(&self.inner),
            entry,
            reason: ExitReason::Normal,
            removed: false,
        })
    }

    fn remove(inner: &Inner, entry: &Entry, reason: ExitReason) -> bool {
        let mut state = inner.lock();
        let Some(slot) = state.names.get_mut(entry.name()) else {
            return false;
        };
        let before = slot.members.len();
        slot.members.retain(|e| e != entry);
        if slot.members.len() == before {
            return false;
        }
        if slot.members.is_empty() {
            state.names.remove(entry.name());
        }
        tracing::debug!(name = entry.name(), id = %entry.id(), %reason, "unregistered");
        inner.publish(
            &mut state,
            RegistryEvent::Removed {
                entry: entry.clone(),
                reason,
            },
        );
        true
    }

    /// A number that changes with every entry added or removed (every
    /// event a [`Watch`] reports), and with nothing else. While it stays
    /// the same, [`lookup`](Self::lookup) of a name held by a single server
    /// (not a group) gives the same entry: a caller that read the
    /// generation before a lookup may keep using that entry for as long as
    /// the generation is unchanged, with one atomic load instead of a
    /// lookup.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The server registered as `name`; for a group, the next member in
    /// round-robin order.
    pub fn lookup(&self, name: &str) -> Result<Entry, Error> {
        let mut state = self.inner.lock();
        let slot = state
            .names
            .get_mut(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        let i = slot.cursor % slot.members.len();
        slot.cursor = slot.cursor.wrapping_add(1);
        Ok(slot.members[i].clone())
    }

    /// Like [`lookup`](Self::lookup), but a name not here is asked of the
    /// [`Resolver`] (see [`set_resolver`](Self::set_resolver)), and the
    /// entry awaited, for at most `timeout` in all: with a node that uses
    /// a [`Directory`](crate::directory::Directory), this finds servers of
    /// nodes it is not linked to yet. Without a resolver, it is
    /// [`lookup`](Self::lookup). Fails with [`Error::NotFound`] when the
    /// name did not come within `timeout`, or with the resolver's error.
    pub async fn find(&self, name: &str, timeout: std::time::Duration) -> Result<Entry, Error> {
        let resolver = match self.lookup(name) {
            Ok(entry) => return Ok(entry),
            Err(missing) => match self.inner.lock().resolver.clone() {
                Some(r) => r,
                None => return Err(missing),
            },
        };
        // Watching from before the resolver runs: an entry that comes while
        // it runs is not missed.
        let mut watch = self.watch();
        let found = async {
            resolver.resolve(name).await?;
            loop {
                if let Ok(entry) = self.lookup(name) {
                    return Ok(entry);
                }
                match watch.next().await {
                    Some(RegistryEvent::Added(e)) if e.name() == name => {}
                    Some(_) => continue,
                    None => return Err(Error::NotFound(name.to_owned())),
                }
            }
        };
        tokio::time::timeout(timeout, found)
            .await
            .unwrap_or_else(|_| Err(Error::NotFound(name.to_owned())))
    }

    /// Ask `resolver` for the names [`find`](Self::find) does not find
    /// here (replacing any resolver set before).
    pub fn set_resolver(&self, resolver: Arc<dyn Resolver>) {
        self.inner.lock().resolver = Some(resolver);
    }

    /// `f` of the entries under `name` (all members of a group, oldest
    /// first; empty if none), under the registry's lock: a look at them
    /// without a list of their own.
    pub(crate) fn with_members<R>(&self, name: &str, f: impl FnOnce(&[Entry]) -> R) -> R {
        let state = self.inner.lock();
        f(state.names.get(name).map_or(&[], |s| &s.members[..]))
    }

    /// Every entry under `name` (all members of a group), oldest first.
    pub fn lookup_all(&self, name: &str) -> Vec<Entry> {
        self.inner
            .lock()
            .names
            .get(name)
            .map(|s| s.members.clone())
            .unwrap_or_default()
    }

    /// Every entry that passes `filter`, sorted by name then id.
    pub fn query(&self, filter: &Filter) -> Vec<Entry> {
        let state = self.inner.lock();
        let mut out: Vec<Entry> = state
            .names
            .values()
            .flat_map(|s| s.members.iter())
            .filter(|e| filter.matches(e))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name().cmp(b.name()).then(a.id().cmp(&b.id())));
        out
    }

    /// Every entry, sorted by name then id.
    pub fn entries(&self) -> Vec<Entry> {
        self.query(&Filter::any())
    }

    /// A stream of registry changes.
    ///
    /// It starts with one [`RegistryEvent::Added`] for every entry present
    /// now, so a watcher never misses a server, then reports each change in
    /// the order it happened. Events are never dropped: a watcher that does
    /// not read buffers them.
    pub fn watch(&self) -> Watch {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.inner.lock();
        let mut current: Vec<&Entry> = state.names.values().flat_map(|s| &s.members).collect();
        current.sort_by_key(|e| e.id());
        for e in current {
            // The receiver is alive: it is in this function.
            let _ = tx.send(RegistryEvent::Added(e.clone()));
        }
        state.watchers.push(tx);
        Watch { rx }
    }
}

/// Keeps an entry registered; dropping it unregisters the entry with the
/// reason set by [`set_exit_reason`](Self::set_exit_reason) (normal exit by
/// default).
pub struct Registration {
    registry: Weak<Inner>,
    entry: Entry,
    reason: ExitReason,
    removed: bool,
}

impl Registration {
    /// The registered entry.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The reason watchers will be told when this registration is dropped.
    pub fn set_exit_reason(&mut self, reason: ExitReason) {
        self.reason = reason;
    }

    /// Unregister now, telling watchers `reason`.
    pub fn unregister(mut self, reason: ExitReason) {
        self.reason = reason;
        // Drop does the work.
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        if let Some(inner) = self.registry.upgrade() {
            let reason = std::mem::replace(&mut self.reason, ExitReason::Normal);
            Registry::remove(&inner, &self.entry, reason);
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("entry", &self.entry)
            .field("reason", &self.reason)
            .finish()
    }
}

/// A stream of [`RegistryEvent`]s from [`Registry::watch`].
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::UnboundedReceiver<RegistryEvent>,
}

impl Watch {
    /// The next event. Never ends while the registry exists.
    pub async fn next(&mut self) -> Option<RegistryEvent> {
        self.rx.recv().await
    }

    /// The next event if one is buffered now.
    pub fn try_next(&mut self) -> Option<RegistryEvent> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Watch {
    type Item = RegistryEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RegistryEvent>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PipeEnd;
    use async_trait::async_trait;
    use bytes::Bytes;

    #[derive(Debug)]
    struct Null;

    #[async_trait]
    impl Endpoint for Null {
        fn try_cast(&self, _: Bytes) -> Result<(), Error> {
            Ok(())
        }
        async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
            Ok(msg)
        }
        async fn open_pipe(&self, port: &str, _: PipeEnd) -> Result<(), Error> {
            Err(Error::NoSuchPort {
                name: "null".into(),
                port: port.into(),
            })
        }
    }

    fn ep() -> Arc<dyn Endpoint> {
        Arc::new(Null)
    }

    fn reg() -> Registry {
        Registry::new(NodeId::random())
    }

    /// Registers the name it is asked for, and keeps the registration.
    #[derive(Debug)]
    struct Registers(Registry, Mutex<Vec<Registration>>);

    #[async_trait]
    impl Resolver for Registers {
        async fn resolve(&self, name: &str) -> Result<(), Error> {
            if name == "nowhere" {
                return Err(Error::NotFound(name.into()));
            }
            let reg = self.0.register(name, Capabilities::new(), ep())?;
            self.1.lock().unwrap().push(reg);
            Ok(())
        }
    }

    #[tokio::test]
    async fn find_asks_the_resolver_for_a_missing_name() {
        let r = reg();
        let t = std::time::Duration::from_secs(5);
        assert!(matches!(r.find("far", t).await, Err(Error::NotFound(_))));
        r.set_resolver(Arc::new(Registers(r.clone(), Mutex::new(Vec::new()))));
        assert_eq!(r.find("far", t).await.unwrap().name(), "far");
        assert!(matches!(
            r.find("nowhere", t).await,
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn register_lookup_unregister() {
        let r = reg();
        let g = r.register("parser", Capabilities::new(), ep()).unwrap();
        let e = r.lookup("parser").unwrap();
        assert_eq!(e.name(), "parser");
        assert_eq!(e.node(), r.node());
        assert_eq!(&e, g.entry());
        drop(g);
        assert_eq!(r.lookup("parser"), Err(Error::NotFound("parser".into())));
    }

    #[test]
    fn generation_changes_with_every_entry_added_or_removed() {
        let r = reg();
        let g0 = r.generation();
        let a = r.register("a", Capabilities::new(), ep()).unwrap();
        let g1 = r.generation();
        assert_ne!(g0, g1);
        r.lookup("a").unwrap();
        assert!(r.lookup("b").is_err());
        assert!(r.register("a", Capabilities::new(), ep()).is_err());
        assert_eq!(r.generation(), g1, "lookups and refusals change nothing");
        drop(a);
        let g2 = r.generation();
        assert!(g2 != g1 && g2 != g0);
        let _b = r.join_group("b", Capabilities::new(), ep()).unwrap();
        assert_ne!(r.generation(), g2);
    }

    #[test]
    fn taken_name_is_an_error() {
        let r = reg();
        let _g = r.register("a", Capabilities::new(), ep()).unwrap();
        let err = r.register("a", Capabilities::new(), ep()).unwrap_err();
        assert_eq!(
            err,
            Error::NameTaken {
                name: "a".into(),
                group: false
            }
        );
        // Joining a group does not take over a single server's name either.
        assert!(r.join_group("a", Capabilities::new(), ep()).is_err());
        let _p = r.join_group("pool", Capabilities::new(), ep()).unwrap();
        let err = r.register("pool", Capabilities::new(), ep()).unwrap_err();
        assert!(err.to_string().contains("join the group"), "{err}");
    }

    #[test]
    fn bad_names() {
        let r = reg();
        for name in ["", "a b", "tab\t", &"x".repeat(256)] {
            assert!(matches!(
                r.register(name, Capabilities::new(), ep()),
                Err(Error::InvalidName { .. })
            ));
        }
    }

    #[test]
    fn group_round_robin() {
        let r = reg();
        let members: Vec<_> = (0..3)
            .map(|_| r.join_group("cpu", Capabilities::new(), ep()).unwrap())
            .collect();
        let ids: Vec<_> = (0..6).map(|_| r.lookup("cpu").unwrap().id()).collect();
        let expect: Vec<_> = members.iter().map(|m| m.entry().id()).collect();
        assert_eq!(&ids[..3], &expect[..]);
        assert_eq!(&ids[3..], &expect[..]);
        assert_eq!(r.lookup_all("cpu").len(), 3);
        drop(members);
        assert!(r.lookup("cpu").is_err());
    }

    #[test]
    fn query_by_capabilities() {
        let r = reg();
        let _a = r
            .register(
                "logger",
                Capabilities::new().accepts("reading").feature("disk"),
                ep(),
            )
            .unwrap();
        let _b = r
            .register(
                "rules",
                Capabilities::new()
                    .accepts("reading")
                    .produces("alert")
                    .meta("version", "2"),
                ep(),
            )
            .unwrap();
        let names = |f: Filter| -> Vec<String> {
            r.query(&f).iter().map(|e| e.name().to_owned()).collect()
        };
        assert_eq!(names(Filter::any().accepts("reading")), ["logger", "rules"]);
        assert_eq!(names(Filter::any().produces("alert")), ["rules"]);
        assert_eq!(names(Filter::any().feature("disk")), ["logger"]);
        assert_eq!(names(Filter::any().meta("version", "2")), ["rules"]);
        assert_eq!(
            names(Filter::any().meta("version", "3")),
            Vec::<String>::new()
        );
        assert_eq!(names(Filter::any().name_prefix("lo")), ["logger"]);
        assert_eq!(
            names(Filter::any().on_node(NodeId::random())),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn watch_sees_snapshot_then_changes() {
        let r = reg();
        let a = r.register("a", Capabilities::new(), ep()).unwrap();
        let mut w = r.watch();
        let b = r.register("b", Capabilities::new(), ep()).unwrap();
        let mut b = b;
        b.set_exit_reason(ExitReason::Failed("boom".into()));
        drop(b);
        a.unregister(ExitReason::Normal);

        let ev = w.next().await.unwrap();
        assert!(matches!(&ev, RegistryEvent::Added(e) if e.name() == "a"));
        let ev = w.next().await.unwrap();
        assert!(matches!(&ev, RegistryEvent::Added(e) if e.name() == "b"));
        let ev = w.next().await.unwrap();
        assert!(
            matches!(&ev, RegistryEvent::Removed { entry, reason: ExitReason::Failed(m) } if entry.name() == "b" && m == "boom")
        );
        let ev = w.next().await.unwrap();
        assert!(
            matches!(&ev, RegistryEvent::Removed { entry, reason: ExitReason::Normal } if entry.name() == "a")
        );
        assert!(w.try_next().is_none());
    }

    #[test]
    fn dropped_watchers_are_pruned() {
        let r = reg();
        let w = r.watch();
        drop(w);
        let _a = r.register("a", Capabilities::new(), ep()).unwrap();
        assert_eq!(r.inner.lock().watchers.len(), 0);
    }

    #[test]
    fn registration_outliving_registry_is_harmless() {
        let r = reg();
        let g = r.register("a", Capabilities::new(), ep()).unwrap();
        drop(r);
        drop(g);
    }
}
