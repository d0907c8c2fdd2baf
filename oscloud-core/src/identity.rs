//! Node identity: static X25519 key pairs, the node id derived from the
//! public key, and the allow-list of peers admitted to link.
//!
//! A node that has a [`NodeKey`] authenticates every link with a Noise
//! handshake (see [`wire::SecureConfig`](crate::wire::SecureConfig)) and
//! its [`NodeId`] is [`PublicKey::node_id`]: the first 16 bytes of
//! BLAKE2s-256 of the public key, so a peer cannot claim another node's id.
//!
//! # Key file format
//!
//! [`NodeKey::save`] writes a small text file, created with mode `0600`
//! (owner read/write only); [`NodeKey::load`] refuses a file that the group
//! or others may read (on Unix), like `ssh` does:
//!
//! ```text
//! # oscloud node key (X25519). Keep this file secret.
//! public 8f0c…(64 hex digits)
//! secret 3a91…(64 hex digits)
//! ```
//!
//! Lines starting with `#` and blank lines are ignored. `secret` is
//! required; `public`, if present, must match the secret.
//!
//! # Allow-list file format
//!
//! One public key (64 hex digits) per line, optionally followed by
//! whitespace and a free-form label; `#` starts a comment. A line that is
//! exactly `open` (or `*`) admits every peer (development only).
//!
//! ```
//! use oscloud_core::identity::{AllowList, NodeKey};
//!
//! let key = NodeKey::generate();
//! assert_eq!(key.node_id(), key.public().node_id());
//! let allow = AllowList::from_keys([key.public()]);
//! assert!(allow.allows(&key.public()));
//! assert!(!allow.allows(&NodeKey::generate().public()));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use blake2::{Blake2s256, Digest};
use curve25519_dalek::MontgomeryPoint;
use tokio::sync::watch;

use crate::{Error, NodeId};

/// The public half of a node's static X25519 key: what peers allow-list.
///
/// Displayed (and parsed) as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key made of these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The node id of the node owning this key: the first 16 bytes of
    /// BLAKE2s-256(key).
    pub fn node_id(&self) -> NodeId {
        let digest = Blake2s256::digest(self.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        NodeId::from_bytes(id)
    }

    /// The first eight hex digits, for logs.
    pub fn short(&self) -> String {
        hex(&self.0[..4])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        parse_hex32(s).map(Self).ok_or_else(|| Error::BadKeyFile {
            what: "public key",
            path: "<text>".into(),
            reason: format!("{s:?} is not 64 hex digits"),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A node's static X25519 key pair.
///
/// The secret never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct NodeKey {
    secret: [u8; 32],
    public: PublicKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl NodeKey {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
        Self::from_secret(secret)
    }

    /// The key pair with this secret (X25519 clamping is applied when the
    /// key is used, as usual).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let public = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        Self {
            secret,
            public: PublicKey(public),
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The node id derived from the public key.
    pub fn node_id(&self) -> NodeId {
        self.public.node_id()
    }

    /// The secret bytes (handle with care).
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The key file's text (see the [module docs](self)).
    pub fn to_file_text(&self) -> String {
        format!(
            "# oscloud node key (X25519). Keep this file secret.\n# node id {}\npublic {}\nsecret {}\n",
            self.node_id(),
            self.public,
            hex(&self.secret)
        )
    }

    /// Parse a key file's text; `path` names it in errors.
    pub fn from_file_text(text: &str, path: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadKeyFile {
            what: "node key",
            path: path.to_owned(),
            reason,
        };
        let mut secret = None;
        let mut public = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (field, value) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad(format!("line {}: expected `public|secret <hex>`", n + 1)))?;
            let bytes = parse_hex32(value)
                .ok_or_else(|| bad(format!("line {}: not 64 hex digits", n + 1)))?;
            match field {
                "secret" => secret = Some(bytes),
                "public" => public = Some(PublicKey(bytes)),
                other => return Err(bad(format!("line {}: unknown field {other:?}", n + 1))),
            }
        }
        let key = Self::from_secret(secret.ok_or_else(|| bad("no `secret` line".into()))?);
        if public.is_some_and(|p| p != key.public) {
            return Err(bad("the public key does not match the secret".into()));
        }
        Ok(key)
    }

    /// Write the key to `path` (replacing it), readable by the owner only
    /// (mode 0600 on Unix).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::BadKeyFile {
            what: "node key",
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        #[cfg(unix)]
        {
            // An existing file keeps its mode on open: tighten it.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        std::io::Write::write_all(&mut file, self.to_file_text().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Read a key written by [`save`](Self::save). On Unix, a file that the
    /// group or others may read is refused.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io = |e: std::io::Error| Error::BadKeyFile {
            what: "node key",
            path: name.clone(),
            reason: e.to_string(),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(Error::BadKeyFile {
                    what: "node key",
                    path: name,
                    reason: format!(
                        "mode {:o} lets others read it; run `chmod 600` on it",
                        mode & 0o777
                    ),
                });
            }
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_file_text(&text, &name)
    }

    /// Load the key at `path`, or generate one and save it there if the
    /// file does not exist.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        if path.exists() {
            Self::load(path)
        } else {
            let key = Self::generate();
            key.save(path)?;
            Ok(key)
        }
    }
}

#[derive(Debug, Default)]
struct AllowInner {
    open: bool,
    keys: HashSet<PublicKey>,
    path: Option<PathBuf>,
}

/// Which peers may link to this node, by public key. Cheap to clone: clones
/// share one list, so a node's list can be changed or
/// [reloaded](Self::reload) while it runs. New handshakes see the change,
/// and a [`Node`](crate::Node) drops its live links to every peer whose key
/// the change removed (logged on both sides as a refused link).
///
/// [`AllowList::open`] admits every peer that completes the handshake: for
/// development only (it still encrypts and authenticates the link).
#[derive(Debug, Clone)]
pub struct AllowList {
    inner: Arc<RwLock<AllowInner>>,
    /// Bumped on every change, so links can check their peer again.
    changed: Arc<watch::Sender<u64>>,
}

impl Default for AllowList {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changed: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl AllowList {
    /// An empty list: nobody is admitted until keys are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admit every peer (development mode).
    pub fn open() -> Self {
        let list = Self::new();
        list.write().open = true;
        list
    }

    /// Admit exactly these keys.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let list = Self::new();
        list.write().keys = keys.into_iter().collect();
        list
    }

    /// Read the list from a file (see the [module docs](self)); it can be
    /// re-read later with [`reload`](Self::reload).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let list = Self::new();
        list.write().path = Some(path.as_ref().to_owned());
        list.reload()?;
        Ok(list)
    }

    /// Re-read the file the list was loaded from; on error the list is
    /// unchanged. A list not loaded from a file is left as is.
    pub fn reload(&self) -> Result<(), Error> {
        let Some(path) = self.read().path.clone() else {
            return Ok(());
        };
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::BadKeyFile {
            what: "allow-list",
            path: name.clone(),
            reason: e.to_string(),
        })?;
        let (open, keys) = Self::parse(&text, &name)?;
        {
            let mut inner = self.write();
            inner.open = open;
            inner.keys = keys;
            tracing::info!(path = %name, keys = inner.keys.len(), open, "allow-list loaded");
        }
        self.bump();
        Ok(())
    }

    /// Parse allow-list text: `(open, keys)`.
    fn parse(text: &str, name: &str) -> Result<(bool, HashSet<PublicKey>), Error> {
        let mut open = false;
        let mut keys = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line == "open" || line == "*" {
                open = true;
                continue;
            }
            let word = line.split_whitespace().next().unwrap_or("");
            let key = parse_hex32(word).ok_or_else(|| Error::BadKeyFile {
                what: "allow-list",
                path: name.to_owned(),
                reason: format!("line {}: {word:?} is not a 64-hex-digit public key", n + 1),
            })?;
            keys.insert(PublicKey(key));
        }
        Ok((open, keys))
    }

    /// Admit `key` from now on.
    pub fn insert(&self, key: PublicKey) {
        self.write().keys.insert(key);
        self.bump();
    }

    /// Stop admitting `key`: new handshakes are refused, and nodes using
    /// this list drop their live links to that peer.
    pub fn remove(&self, key: &PublicKey) {
        self.write().keys.remove(key);
        self.bump();
    }

    /// Admit exactly these keys from now on (peers no longer admitted lose
    /// their live links, as with [`remove`](Self::remove)).
    pub fn set_keys(&self, keys: impl IntoIterator<Item = PublicKey>) {
        self.write().keys = keys.into_iter().collect();
        self.bump();
    }

    /// Switch the development "open" mode on or off.
    pub fn set_open(&self, open: bool) {
        self.write().open = open;
        self.bump();
    }

    /// The admitted keys now (without the "open" mode), sorted.
    pub fn keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self.read().keys.iter().copied().collect();
        keys.sort();
        keys
    }

    /// Changes to the list: the value is bumped on every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether every peer is admitted.
    pub fn is_open(&self) -> bool {
        self.read().open
    }

    /// Whether a peer with this key may link.
    pub fn allows(&self, key: &PublicKey) -> bool {
        let inner = self.read();
        inner.open || inner.keys.contains(key)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AllowInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AllowInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_roundtrip_through_a_file_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = NodeKey::generate();
        key.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = NodeKey::load(&path).unwrap();
        assert_eq!(back.public(), key.public());
        assert_eq!(back.secret_bytes(), key.secret_bytes());
        assert!(!format!("{key:?}").contains(&hex(key.secret_bytes())));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeKey::generate().save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeKey::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn bad_key_text_is_refused() {
        assert!(NodeKey::from_file_text("", "x").is_err());
        assert!(NodeKey::from_file_text("secret 12", "x").is_err());
        let a = NodeKey::generate();
        let b = NodeKey::generate();
        let text = format!("public {}\nsecret {}\n", b.public(), hex(a.secret_bytes()));
        assert!(NodeKey::from_file_text(&text, "x").is_err());
    }

    #[test]
    fn public_key_matches_x25519_and_node_id_is_derived() {
        // RFC 7748 §6.1 test vector (Alice).
        let secret =
            parse_hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        let key = NodeKey::from_secret(secret);
        assert_eq!(
            key.public().to_string(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert_eq!(key.node_id(), key.public().node_id());
        let parsed: PublicKey = key.public().to_string().parse().unwrap();
        assert_eq!(parsed, key.public());
    }

    #[test]
    fn allow_list_file_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow");
        let a = NodeKey::generate().public();
        let b = NodeKey::generate().public();
        std::fs::write(&path, format!("# peers\n{a} laptop\n")).unwrap();
        let list = AllowList::load(&path).unwrap();
        assert!(list.allows(&a) && !list.allows(&b));
        std::fs::write(&path, format!("{b}\n")).unwrap();
        list.reload().unwrap();
        assert!(!list.allows(&a) && list.allows(&b));
        std::fs::write(&path, "open\n").unwrap();
        list.reload().unwrap();
        assert!(list.allows(&a) && list.is_open());
        std::fs::write(&path, "nonsense\n").unwrap();
        assert!(list.reload().is_err());
        assert!(list.is_open(), "a bad file leaves the list unchanged");
    }
}
