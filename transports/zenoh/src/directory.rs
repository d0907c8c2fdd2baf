//! The directory of a cloud in zenoh: each server a node publishes is a
//! liveliness token `oscloud/<cloud>/srv/<name>/<node>`, a lookup a
//! liveliness query on `oscloud/<cloud>/srv/<name>/*` (layout in the crate
//! root).

use std::time::Duration;

use async_trait::async_trait;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::directory::{Directory, DirectoryEvent, DirectoryWatch, LINK_IDLE, Publication};
use oscloud_core::node::parse_duration;
use tokio::sync::mpsc;
use tracing::debug;
use zenoh::Session;
use zenoh::sample::SampleKind;

use crate::link::failed;
use crate::{HANDSHAKE_TIMEOUT, PARAM_CONFIG, SCHEME, Target, invalid};

/// Address parameter: `directory=1` on a listen address publishes the
/// node's servers and finds others through zenoh.
pub const PARAM_DIRECTORY: &str = "directory";

/// Address parameter: `directory_idle=DURATION` (`30s`, `500ms`, `2m`)
/// on a listen address with the directory: how long a link dialled on
/// demand may go unused before the node closes it (`0`: never; 60 s by
/// default).
pub const PARAM_DIRECTORY_IDLE: &str = "directory_idle";

/// The idle time `addr` asks for its directory links (see
/// [`PARAM_DIRECTORY_IDLE`]): `None` for never.
pub(crate) fn idle(addr: &Address) -> Result<Option<Duration>, Error> {
    match addr.param(PARAM_DIRECTORY_IDLE) {
        None => Ok(Some(LINK_IDLE)),
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => Ok(None),
            Ok(d) => Ok(Some(d)),
            Err(why) => Err(invalid(addr, format!("{PARAM_DIRECTORY_IDLE}: {why}"))),
        },
    }
}

/// Whether `addr` asks for the directory (`directory=1` or `true`; `0`,
/// `false` or absent: no).
pub(crate) fn wanted(addr: &Address) -> Result<bool, Error> {
    match addr.param(PARAM_DIRECTORY) {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(invalid(
            addr,
            format!("{PARAM_DIRECTORY}={other:?}: 1 (or true) or 0 (or false)"),
        )),
    }
}

/// A server name as one chunk of a key expression: ASCII letters, digits,
/// `-`, `_` and `.` as they are, every other byte (`/` and `%` included)
/// as `%XX` (upper-case hex).
pub(crate) fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The server name a key chunk spells ([`encode_name`] undone); `None`
/// if it is not one.
fn decode_name(chunk: &str) -> Option<String> {
    let mut out = Vec::with_capacity(chunk.len());
    let mut bytes = chunk.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// The server and node of a server token's key in `cloud`.
fn server_of(key: &str, cloud: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(&format!("oscloud/{cloud}/srv/"))?;
    let (chunk, node) = rest.split_once('/')?;
    if !crate::keys::valid_name(node) {
        return None;
    }
    Some((decode_name(chunk)?, node.to_owned()))
}

/// The token of server `name` published by `node` in `cloud`.
pub(crate) fn server_key(cloud: &str, name: &str, node: &str) -> String {
    format!("oscloud/{cloud}/srv/{}/{node}", encode_name(name))
}

/// The nodes publishing `name` in `cloud`, as a node's key would be
/// matched, and the node of such a key.
fn node_of<'k>(key: &'k str, cloud: &str, name: &str) -> Option<&'k str> {
    let prefix = format!("oscloud/{cloud}/srv/{}/", encode_name(name));
    key.strip_prefix(&prefix)
        .filter(|node| crate::keys::valid_name(node))
}

/// A node's view of its cloud's directory in zenoh: it publishes as the
/// node it listens as, and finds the others through the same zenoh
/// session (so through the same routers).
#[derive(Debug)]
pub(crate) struct ZenohDirectory {
    session: Session,
    target: Target,
}

impl ZenohDirectory {
    pub(crate) fn new(session: Session, target: Target) -> Self {
        Self { session, target }
    }

    /// The address of `node` in this cloud, through the same router (and
    /// configuration file).
    fn address(&self, node: &str) -> Result<Address, Error> {
        let t = &self.target;
        let mut text = format!("{SCHEME}://{}/{}/{node}", t.addr.authority(), t.cloud);
        if let Some(config) = &t.config {
            text.push_str(&format!("?{PARAM_CONFIG}={config}"));
        }
        text.parse()
    }
}

#[async_trait]
impl Directory for ZenohDirectory {
    async fn find(&self, name: &str) -> Result<Vec<Address>, Error> {
        let t = &self.target;
        let query = format!("oscloud/{}/srv/{}/*", t.cloud, encode_name(name));
        let replies = self
            .session
            .liveliness()
            .get(query)
            .timeout(HANDSHAKE_TIMEOUT)
            .await
            .map_err(|e| failed(t, "zenoh liveliness query", e))?;
        let mut found = Vec::new();
        while let Ok(reply) = replies.recv_async().await {
            let Ok(sample) = reply.result() else { continue };
            match node_of(sample.key_expr().as_str(), &t.cloud, name) {
                Some(node) if node != t.node => found.push(self.address(node)?),
                _ => {}
            }
        }
        debug!(server = %name, nodes = found.len(), "looked up in the zenoh directory");
        Ok(found)
    }

    async fn publish(&self, name: &str) -> Result<Publication, Error> {
        let t = &self.target;
        let token = self
            .session
            .liveliness()
            .declare_token(server_key(&t.cloud, name, &t.node))
            .await
            .map_err(|e| failed(t, "zenoh liveliness token", e))?;
        Ok(Publication::new(token))
    }

    async fn watch(&self, name: &str) -> Result<DirectoryWatch, Error> {
        let t = &self.target;
        let chunk = match name {
            "*" => "*".to_owned(),
            name => encode_name(name),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (cloud, me) = (t.cloud.clone(), t.node.clone());
        let subscriber = self
            .session
            .liveliness()
            .declare_subscriber(format!("oscloud/{}/srv/{chunk}/*", t.cloud))
            .history(true)
            .callback(move |sample| {
                let Some((name, node)) = server_of(sample.key_expr().as_str(), &cloud) else {
                    return;
                };
                if node == me {
                    return;
                }
                let _ = tx.send(match sample.kind() {
                    SampleKind::Put => DirectoryEvent::Published { name, node },
                    SampleKind::Delete => DirectoryEvent::Withdrawn { name, node },
                });
            })
            .await
            .map_err(|e| failed(t, "zenoh liveliness subscriber", e))?;
        Ok(DirectoryWatch::new(rx, subscriber))
    }

    fn link_idle(&self) -> Option<Duration> {
        self.target.directory_idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_chunk() {
        assert_eq!(encode_name("upper-f1"), "upper-f1");
        assert_eq!(encode_name("pool/w1"), "pool%2Fw1");
        assert_eq!(encode_name("a*b$c%"), "a%2Ab%24c%25");
        assert_eq!(encode_name("é"), "%C3%A9");
        assert_eq!(
            server_key("lab", "pool/w1", "n1"),
            "oscloud/lab/srv/pool%2Fw1/n1"
        );
        let key = server_key("lab", "x y", "n1");
        assert_eq!(node_of(&key, "lab", "x y"), Some("n1"));
        assert_eq!(node_of(&key, "lab", "x"), None);
        assert_eq!(node_of("oscloud/lab/srv/x/a/b", "lab", "x"), None);
        for name in ["upper-f1", "pool/w1", "a*b$c%", "é", "x y"] {
            assert_eq!(decode_name(&encode_name(name)).as_deref(), Some(name));
            assert_eq!(
                server_of(&server_key("lab", name, "n1"), "lab"),
                Some((name.to_owned(), "n1".to_owned()))
            );
        }
        assert_eq!(decode_name("%4"), None);
        assert_eq!(decode_name("%ZZ"), None);
        assert_eq!(decode_name("%FF"), None, "not UTF-8");
        assert_eq!(server_of("oscloud/lab/srv/x/a/b", "lab"), None);
        assert_eq!(server_of("oscloud/other/srv/x/n1", "lab"), None);
    }

    #[test]
    fn the_parameter_is_a_flag() {
        let a = |s: &str| -> Address { s.parse().unwrap() };
        assert!(wanted(&a("zenoh://r/lab/a?directory=1")).unwrap());
        assert!(wanted(&a("zenoh://r/lab/a?directory=true")).unwrap());
        assert!(!wanted(&a("zenoh://r/lab/a?directory=0")).unwrap());
        assert!(!wanted(&a("zenoh://r/lab/a")).unwrap());
        assert!(wanted(&a("zenoh://r/lab/a?directory=yes")).is_err());
        assert_eq!(idle(&a("zenoh://r/lab/a")).unwrap(), Some(LINK_IDLE));
        assert_eq!(
            idle(&a("zenoh://r/lab/a?directory_idle=250ms")).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(idle(&a("zenoh://r/lab/a?directory_idle=0")).unwrap(), None);
        assert!(idle(&a("zenoh://r/lab/a?directory_idle=soon")).is_err());
    }
}
