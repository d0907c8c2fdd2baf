//! Access control for servers reached over links, and the identity of the
//! node a message came from.
//!
//! A [`Node`](crate::Node) checks every message a peer sends against its
//! [`AccessPolicy`] before it reaches a local server:
//!
//! - **lookup**: a server the peer may not look up is not announced to it
//!   (hidden from its registry);
//! - **call**: calls and casts; a denied call is answered with
//!   [`Error::PermissionDenied`] on the caller's side, a denied cast is
//!   dropped (and logged);
//! - **pipe**: opening a pipe to one of the server's ports; a denied open
//!   closes the pipe with the reason.
//!
//! A peer can also be **read-only** (a role, whatever the rules say): it
//! may look up and watch the servers the rules let it see, and open pipes
//! to read from them (taps, output ports), but every call and cast it
//! sends is refused, and a frame it writes on a pipe it opened closes that
//! pipe with [`Error::PermissionDenied`]. Pipes this node opens to the
//! peer's own servers are this node's doing and are not limited. A web
//! console that should only watch is given such an identity.
//!
//! Local callers (same kernel) are never checked. The identity of the
//! calling node reaches the server as a [`Caller`], available through
//! [`current_caller`] while the endpoint's `cast`/`call`/`open_pipe` runs
//! (a server framework passes it on to the handler; `oscloud-actors` does
//! with `Context::caller`).
//!
//! # Rules
//!
//! A policy is a list of rules, checked in order, plus a default. The first
//! rule whose name pattern matches the server's name (or group name) and
//! whose actions include the action decides: the action is allowed if the
//! caller is among its peers. No rule: the default decides (allow, unless
//! `default deny`).
//!
//! Text format (a file for [`AccessPolicy::load`], reloadable):
//!
//! ```text
//! # pattern   actions            peers
//! calc        lookup,call        8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a
//! admin.*     all                none
//! metrics     lookup,call,pipe   *
//! default deny
//! readonly    5f2a0c3e9d8b7a6f5e4d3c2b1a098765
//! ```
//!
//! - `readonly PEERS`: these peers are read-only (see above); a line may
//!   come anywhere, and several add up.
//!
//! - pattern: an exact name, or a prefix ending in `*` (`*` alone: every
//!   name);
//! - actions: comma-separated `lookup`, `call` (also casts), `pipe`, or
//!   `all`;
//! - peers: comma-separated public keys (64 hex digits; verified by the
//!   Noise handshake), node ids (32 hex digits; only as trustworthy as the
//!   link: verified on secure links, claimed on plaintext ones), `*`
//!   (everyone) or `none`.
//!
//! ```
//! use oscloud_core::access::{AccessPolicy, Action, Caller};
//! use oscloud_core::identity::NodeKey;
//!
//! let friend = NodeKey::generate().public();
//! let policy = AccessPolicy::parse(&format!("calc lookup,call {friend}\ndefault deny\n"))?;
//! let caller = Caller { node: friend.node_id(), key: Some(friend) };
//! assert!(policy.allows("calc", Action::Call, &caller));
//! assert!(!policy.allows("calc", Action::Pipe, &caller));
//! assert!(!policy.allows("other", Action::Lookup, &caller));
//! # Ok::<(), oscloud_core::Error>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::identity::PublicKey;
use crate::{Error, NodeId};

/// Who sent a message that came over a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The peer node (verified on secure links).
    pub node: NodeId,
    /// The peer's public key, verified by the Noise handshake (`None` on
    /// plaintext links).
    pub key: Option<PublicKey>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "node {} (key {})", self.node.short(), k.short()),
            None => write!(f, "node {} (unauthenticated)", self.node.short()),
        }
    }
}

tokio::task_local! {
    static CALLER: Caller;
}

/// The node that sent the message being delivered, while a
/// [`Endpoint`](crate::Endpoint)'s `cast`, `call` or `open_pipe` runs for
/// a message that came over a link; `None` for local callers.
pub fn current_caller() -> Option<Caller> {
    CALLER.try_with(|c| *c).ok()
}

/// Run `f` with `caller` as the [`current_caller`] (what the node does
/// around every delivery from a peer).
pub async fn with_caller<F: Future>(caller: Caller, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// Synchronous form of [`with_caller`].
pub fn with_caller_sync<R>(caller: Caller, f: impl FnOnce() -> R) -> R {
    CALLER.sync_scope(caller, f)
}

/// What a peer wants to do with a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// See it in the registry (it is announced to the peer).
    Lookup,
    /// Call it or cast to it.
    Call,
    /// Open a pipe to one of its ports.
    Pipe,
}

impl Action {
    fn bit(self) -> u8 {
        match self {
            Action::Lookup => 1,
            Action::Call => 2,
            Action::Pipe => 4,
        }
    }

    /// The action in words, for errors.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Lookup => "look up",
            Action::Call => "call",
            Action::Pipe => "open a pipe to",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    Any,
    Key(PublicKey),
    Node(NodeId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// Exact name, or a prefix when `prefix`.
    pattern: String,
    prefix: bool,
    actions: u8,
    peers: Vec<Peer>,
}

impl Rule {
    fn matches(&self, name: &str) -> bool {
        if self.prefix {
            name.starts_with(&self.pattern)
        } else {
            name == self.pattern
        }
    }

    fn admits(&self, caller: &Caller) -> bool {
        admits(&self.peers, caller)
    }
}

/// Whether `caller` is among `peers`.
fn admits(peers: &[Peer], caller: &Caller) -> bool {
    peers.iter().any(|p| match p {
        Peer::Any => true,
        Peer::Key(k) => caller.key.as_ref() == Some(k),
        Peer::Node(n) => caller.node == *n,
    })
}

#[derive(Debug)]
struct PolicyInner {
    rules: Vec<Rule>,
    default_allow: bool,
    /// Read-only peers (`readonly` lines).
    read_only: Vec<Peer>,
    path: Option<PathBuf>,
}

/// What a policy's text says.
struct Parsed {
    rules: Vec<Rule>,
    default_allow: bool,
    read_only: Vec<Peer>,
}

impl Parsed {
    fn everything(default_allow: bool) -> Self {
        Self {
            rules: Vec::new(),
            default_allow,
            read_only: Vec::new(),
        }
    }
}

/// Which peers may look up, call and open pipes to which local servers.
/// Cheap to clone: clones share one policy, so it can be changed or
/// [reloaded](Self::reload) while the node runs; links re-announce what
/// each peer may see at once.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    inner: Arc<RwLock<PolicyInner>>,
    changed: Arc<watch::Sender<u64>>,
    /// Raised with every change of the rules, under their lock (see
    /// [`generation`](Self::generation)).
    generation: Arc<AtomicU64>,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self::allow_all()
    }
}

impl AccessPolicy {
    /// Everything allowed to every peer (the default of a node).
    pub fn allow_all() -> Self {
        Self::from_parts(Parsed::everything(true), None)
    }

    /// Nothing allowed until rules say otherwise.
    pub fn deny_all() -> Self {
        Self::from_parts(Parsed::everything(false), None)
    }

    fn from_parts(parsed: Parsed, path: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(PolicyInner {
                rules: parsed.rules,
                default_allow: parsed.default_allow,
                read_only: parsed.read_only,
                path,
            })),
            changed: Arc::new(watch::Sender::new(0)),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A policy from its text (see the [module docs](self)).
    pub fn parse(text: &str) -> Result<Self, Error> {
        Ok(Self::from_parts(parse(text, "<text>")?, None))
    }

    /// A policy read from a file, reloadable with [`reload`](Self::reload).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let policy = Self::from_parts(Parsed::everything(false), Some(path.as_ref().to_owned()));
        policy.reload()?;
        Ok(policy)
    }

    /// Re-read the file the policy was loaded from (on error, nothing
    /// changes); a policy not loaded from a file is left as is.
    pub fn reload(&self) -> Result<(), Error> {
        let Some(path) = self.read().path.clone() else {
            return Ok(());
        };
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::BadKeyFile {
            what: "access policy",
            path: name.clone(),
            reason: e.to_string(),
        })?;
        self.replace(parse(&text, &name)?);
        tracing::info!(path = %name, "access policy loaded");
        Ok(())
    }

    /// Replace the rules with those of `text`.
    pub fn set_text(&self, text: &str) -> Result<(), Error> {
        self.replace(parse(text, "<text>")?);
        Ok(())
    }

    /// Take over the rules (and the file, for [`reload`](Self::reload))
    /// of `other`; every holder of this policy sees the change.
    pub fn set_from(&self, other: &AccessPolicy) {
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return;
        }
        let (parsed, path) = {
            let o = other.read();
            let parsed = Parsed {
                rules: o.rules.clone(),
                default_allow: o.default_allow,
                read_only: o.read_only.clone(),
            };
            (parsed, o.path.clone())
        };
        self.inner.write().unwrap_or_else(|e| e.into_inner()).path = path;
        self.replace(parsed);
    }

    fn replace(&self, parsed: Parsed) {
        {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            inner.rules = parsed.rules;
            inner.default_allow = parsed.default_allow;
            inner.read_only = parsed.read_only;
            // Before the lock is released: whoever sees the new rules
            // sees the new generation.
            self.generation.fetch_add(1, Ordering::Release);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// A number that changes with every change of the rules. While it
    /// stays the same, [`allows`](Self::allows) gives the same answer for
    /// the same question: a caller that read the generation before asking
    /// may keep the answer for as long as the generation is unchanged,
    /// with one atomic load instead of asking again.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether `caller` may do `action` with the server (or group) `name`.
    /// A [read-only](Self::is_read_only) caller may never call.
    pub fn allows(&self, name: &str, action: Action, caller: &Caller) -> bool {
        let inner = self.read();
        if action == Action::Call && admits(&inner.read_only, caller) {
            return false;
        }
        inner
            .rules
            .iter()
            .find(|r| r.actions & action.bit() != 0 && r.matches(name))
            .map_or(inner.default_allow, |r| r.admits(caller))
    }

    /// Whether some peer may look up the server `name`: the rule that
    /// decides its lookups names a peer (or `*`), or no rule does and the
    /// default allows. A node publishes in a directory only the servers
    /// some peer may see ([`Node::use_directory`](crate::Node::use_directory)).
    pub fn visible_to_some(&self, name: &str) -> bool {
        let inner = self.read();
        inner
            .rules
            .iter()
            .find(|r| r.actions & Action::Lookup.bit() != 0 && r.matches(name))
            .map_or(inner.default_allow, |r| !r.peers.is_empty())
    }

    /// Whether `caller` is read-only here (a `readonly` line names it): it
    /// may look up, watch and read pipes, never call, cast or write on a
    /// pipe it opened (see the [module docs](self)).
    pub fn is_read_only(&self, caller: &Caller) -> bool {
        admits(&self.read().read_only, caller)
    }

    /// A receiver that sees every change of the policy.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, PolicyInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn parse(text: &str, name: &str) -> Result<Parsed, Error> {
    let bad = |n: usize, reason: String| Error::BadKeyFile {
        what: "access policy",
        path: name.to_owned(),
        reason: format!("line {}: {reason}", n + 1),
    };
    let mut rules = Vec::new();
    let mut default_allow = true;
    let mut read_only = Vec::new();
    let peer_list = |n: usize, peers: &str| -> Result<Vec<Peer>, Error> {
        let mut list = Vec::new();
        for p in peers.split(',') {
            match p {
                "*" => list.push(Peer::Any),
                "none" => {}
                p if p.len() == 64 => list.push(Peer::Key(
                    p.parse().map_err(|_| bad(n, format!("bad key {p:?}")))?,
                )),
                p if p.len() == 32 => list.push(Peer::Node(
                    p.parse()
                        .map_err(|_| bad(n, format!("bad node id {p:?}")))?,
                )),
                other => return Err(bad(n, format!("unknown peer {other:?}"))),
            }
        }
        Ok(list)
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0] == "default" {
            default_allow = match words.get(1) {
                Some(&"allow") => true,
                Some(&"deny") => false,
                _ => return Err(bad(n, "expected `default allow` or `default deny`".into())),
            };
            continue;
        }
        if words[0] == "readonly" {
            let [_, peers] = words[..] else {
                return Err(bad(n, "expected `readonly PEERS`".into()));
            };
            read_only.extend(peer_list(n, peers)?);
            continue;
        }
        let [pattern, actions, peers] = words[..] else {
            return Err(bad(n, "expected `pattern actions peers`".into()));
        };
        let mut bits = 0u8;
        for a in actions.split(',') {
            bits |= match a {
                "lookup" => Action::Lookup.bit(),
                "call" => Action::Call.bit(),
                "pipe" => Action::Pipe.bit(),
                "all" => 7,
                other => return Err(bad(n, format!("unknown action {other:?}"))),
            };
        }
        let list = peer_list(n, peers)?;
        let (pattern, prefix) = match pattern.strip_suffix('*') {
            Some(p) => (p.to_owned(), true),
            None => (pattern.to_owned(), false),
        };
        rules.push(Rule {
            pattern,
            prefix,
            actions: bits,
            peers: list,
        });
    }
    Ok(Parsed {
        rules,
        default_allow,
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    fn caller() -> Caller {
        let k = NodeKey::generate().public();
        Caller {
            node: k.node_id(),
            key: Some(k),
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let a = caller();
        let b = caller();
        let text = format!(
            "calc lookup,call {}\nadmin* all none\npub* lookup,call *\nnode-only call {}\ndefault deny\n",
            a.key.unwrap(),
            b.node
        );
        let p = AccessPolicy::parse(&text).unwrap();
        assert!(p.allows("calc", Action::Lookup, &a));
        assert!(p.allows("calc", Action::Call, &a));
        assert!(!p.allows("calc", Action::Pipe, &a), "no rule: default deny");
        assert!(!p.allows("calc", Action::Call, &b));
        assert!(!p.allows("admin.users", Action::Lookup, &a));
        assert!(p.allows("public", Action::Call, &b));
        assert!(p.allows("node-only", Action::Call, &b));
        assert!(!p.allows("node-only", Action::Call, &a));
        assert!(AccessPolicy::allow_all().allows("x", Action::Pipe, &a));
        assert!(!AccessPolicy::deny_all().allows("x", Action::Lookup, &a));
        // Visible to some peer: published in a directory.
        assert!(p.visible_to_some("calc"), "one key may look it up");
        assert!(!p.visible_to_some("admin.users"), "no peer may");
        assert!(p.visible_to_some("pub.x"));
        assert!(
            !p.visible_to_some("node-only"),
            "no lookup rule: default deny"
        );
        assert!(AccessPolicy::allow_all().visible_to_some("x"));
        assert!(!AccessPolicy::deny_all().visible_to_some("x"));
    }

    #[test]
    fn bad_text_is_refused_and_reload_notifies() {
        assert!(AccessPolicy::parse("calc fly *").is_err());
        assert!(AccessPolicy::parse("calc call somebody").is_err());
        assert!(AccessPolicy::parse("default maybe").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acl");
        std::fs::write(&path, "x all *\ndefault deny\n").unwrap();
        let p = AccessPolicy::load(&path).unwrap();
        let rx = p.subscribe();
        let c = caller();
        let generation = p.generation();
        assert!(p.allows("x", Action::Call, &c));
        assert_eq!(p.generation(), generation, "asking changes nothing");
        std::fs::write(&path, "x all none\n").unwrap();
        p.reload().unwrap();
        assert!(rx.has_changed().unwrap());
        assert_ne!(p.generation(), generation, "new rules, a new generation");
        assert!(!p.allows("x", Action::Call, &c));
        assert!(p.allows("y", Action::Call, &c));
        // A refused text leaves the rules, and the generation, as they were.
        let generation = p.generation();
        std::fs::write(&path, "x fly *\n").unwrap();
        assert!(p.reload().is_err());
        assert!(p.set_text("default maybe").is_err());
        assert_eq!(p.generation(), generation);
        // Every other way of changing the rules raises it too.
        p.set_text("default allow").unwrap();
        assert_ne!(p.generation(), generation);
        let generation = p.generation();
        p.set_from(&AccessPolicy::deny_all());
        assert_ne!(p.generation(), generation);
        // Clones share one policy, and so one generation.
        assert_eq!(p.clone().generation(), p.generation());
    }

    #[test]
    fn a_read_only_peer_may_look_up_and_read_never_call() {
        let (viewer, other) = (caller(), caller());
        let text = format!("calc all *\nreadonly {}\nsecret all none\n", viewer.node);
        let p = AccessPolicy::parse(&text).unwrap();
        assert!(p.is_read_only(&viewer));
        assert!(!p.is_read_only(&other));
        assert!(p.allows("calc", Action::Lookup, &viewer));
        assert!(p.allows("calc", Action::Pipe, &viewer), "opens to read");
        assert!(
            !p.allows("calc", Action::Call, &viewer),
            "even if a rule says all"
        );
        assert!(
            !p.allows("anything", Action::Call, &viewer),
            "even by default"
        );
        assert!(
            !p.allows("secret", Action::Lookup, &viewer),
            "rules still apply"
        );
        assert!(p.allows("calc", Action::Call, &other));
        let everyone = AccessPolicy::parse("readonly *").unwrap();
        assert!(everyone.is_read_only(&other));
        assert!(AccessPolicy::parse("readonly").is_err());
        assert!(AccessPolicy::parse("readonly somebody").is_err());
        // Reloading or replacing the text replaces the role too.
        p.set_text("default allow").unwrap();
        assert!(!p.is_read_only(&viewer));
        assert!(p.allows("calc", Action::Call, &viewer));
    }

    #[tokio::test]
    async fn caller_is_visible_inside_the_scope_only() {
        let c = caller();
        assert_eq!(current_caller(), None);
        let seen = with_caller(c, async { current_caller() }).await;
        assert_eq!(seen, Some(c));
        assert_eq!(with_caller_sync(c, current_caller), Some(c));
        assert_eq!(current_caller(), None);
    }
}
