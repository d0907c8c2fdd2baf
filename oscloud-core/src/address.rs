//! Addresses: `scheme://authority/path?key=value` URIs naming where a node
//! listens or connects.
//!
//! ```
//! use oscloud_core::address::Address;
//!
//! let a: Address = "serial:///dev/ttyUSB0?parity=none&baud=115200".parse()?;
//! assert_eq!(a.scheme(), "serial");
//! assert_eq!(a.path(), "/dev/ttyUSB0");
//! assert_eq!(a.param_parse::<u32>("baud")?, Some(115200));
//! // The canonical form sorts the parameters.
//! assert_eq!(a.to_string(), "serial:///dev/ttyUSB0?baud=115200&parity=none");
//!
//! let t: Address = "tcp://[::1]:7000".parse()?;
//! assert_eq!((t.host(), t.port()), ("::1", Some(7000)));
//! # Ok::<(), oscloud_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A parsed address. Compared and displayed in canonical form (parameters
/// sorted by key, percent-escapes only where needed).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    scheme: String,
    host: String,
    port: Option<u16>,
    /// The text after the host's `:` when it is hex digits but not a
    /// decimal port number (`a4a1` in `usb://0525:a4a1`).
    port_text: Option<String>,
    path: String,
    params: BTreeMap<String, String>,
}

fn invalid(input: &str, reason: impl Into<String>) -> Error {
    Error::InvalidAddress {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

/// Decode `%XX` escapes.
fn percent_decode(input: &str, s: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| invalid(input, "a percent escape needs two hex digits"))?;
            let v = u8::from_str_radix(hex, 16)
                .map_err(|_| invalid(input, format!("bad percent escape %{hex}")))?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(input, "percent escapes do not form UTF-8"))
}

/// Escape what would change the meaning of an address part.
fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Address {
    /// The scheme, lower case: `tcp`, `unix`, `serial`, `mem`, ...
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host (without brackets for IPv6), or the name after `//` for
    /// schemes such as `mem://name` and `can://vcan0`; empty if none.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, if one was given as a decimal number (0 to 65535).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// What follows the host's `:` when it is not a decimal port number
    /// but 1 to 4 hex digits, as written: `Some("a4a1")` for
    /// `usb://0525:a4a1`, whose authority is `VID:PID` rather than
    /// `host:port`. [`port`](Self::port) is then `None`; a transport that
    /// needs a port number reports such an address as invalid (see
    /// [`port_or_text`](Self::port_or_text) for the text of either).
    pub fn port_text(&self) -> Option<&str> {
        self.port_text.as_deref()
    }

    /// What follows the host's `:`, whichever form it has: the decimal
    /// port (canonical, without leading zeros) or the
    /// [`port_text`](Self::port_text).
    pub fn port_or_text(&self) -> Option<String> {
        match (&self.port, &self.port_text) {
            (Some(p), _) => Some(p.to_string()),
            (None, Some(t)) => Some(t.clone()),
            (None, None) => None,
        }
    }

    /// `host:port` (with brackets for IPv6), or the host alone.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port_or_text() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// The path, decoded (`/dev/ttyUSB0`, `/tmp/node.sock`); empty if none.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A parameter's value, decoded.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// Every parameter, sorted by key.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    /// A parameter parsed as `T`; an error names the key and the bad value.
    pub fn param_parse<T>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.params.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|e| {
                invalid(
                    &self.to_string(),
                    format!("parameter {key}={v:?} is not valid: {e}"),
                )
            }),
        }
    }

    /// Fail with a clear error if a parameter not in `known` is present
    /// (so that a typo is not silently ignored).
    pub fn check_params(&self, known: &[&str]) -> Result<(), Error> {
        match self.params.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(invalid(
                &self.to_string(),
                format!(
                    "unknown parameter {k:?} for scheme {} (known: {})",
                    self.scheme,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )),
        }
    }

    /// The same address without the parameter `key` (unchanged if it has
    /// none).
    pub fn without_param(&self, key: &str) -> Self {
        let mut a = self.clone();
        a.params.remove(key);
        a
    }

    /// The same address with `port` instead (for example the port a
    /// listener bound for `:0`).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self.port_text = None;
        self
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| invalid(input, "expected scheme://..., e.g. tcp://127.0.0.1:7000"))?;
        if scheme.is_empty()
            || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(invalid(
                input,
                format!("bad scheme {scheme:?}: letters, digits, '+', '-', '.' only"),
            ));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let (h, after) = stripped
                .split_once(']')
                .ok_or_else(|| invalid(input, "missing ']' after an IPv6 host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid(input, "expected ':port' after ']'"))?,
                ),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (percent_decode(input, h)?, Some(p)),
                None => (percent_decode(input, authority)?, None),
            }
        };
        // A decimal port; or, for authorities that are not host:port
        // (`usb://VID:PID`), 1 to 4 hex digits kept as text.
        let (port, port_text) = match port {
            None => (None, None),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => (Some(n), None),
                _ if (1..=4).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    (None, Some(p.to_owned()))
                }
                _ => {
                    // The one scheme whose authority is not host:port gets
                    // a hint in its own terms.
                    let hint = if scheme.eq_ignore_ascii_case("usb") {
                        " (or, for a USB product id, 1 to 4 hex digits, e.g. usb://0525:a4a1)"
                    } else {
                        ""
                    };
                    return Err(invalid(
                        input,
                        format!("bad port {p:?}: expected 0 to 65535{hint}"),
                    ));
                }
            },
        };
        let mut params = BTreeMap::new();
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = percent_decode(input, k)?;
                if k.is_empty() {
                    return Err(invalid(input, "a parameter has an empty key"));
                }
                let v = percent_decode(input, v)?;
                if params.insert(k.clone(), v).is_some() {
                    return Err(invalid(input, format!("parameter {k:?} is given twice")));
                }
            }
        }
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            host,
            port,
            port_text,
            path: percent_decode(input, path)?,
            params,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            percent_encode(&self.host, b"")
        };
        write!(f, "{}://{}", self.scheme, host)?;
        if let Some(p) = self.port_or_text() {
            write!(f, ":{p}")?;
        }
        f.write_str(&percent_encode(&self.path, b"/:@"))?;
        for (i, (k, v)) in self.params.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(
                f,
                "{sep}{}={}",
                percent_encode(k, b""),
                percent_encode(v, b":/,")
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn examples_parse() {
        let t = a("tcp://127.0.0.1:7000");
        assert_eq!(
            (t.scheme(), t.host(), t.port()),
            ("tcp", "127.0.0.1", Some(7000))
        );
        assert_eq!(t.authority(), "127.0.0.1:7000");
        let t6 = a("tcp://[::1]:7000");
        assert_eq!((t6.host(), t6.port()), ("::1", Some(7000)));
        assert_eq!(t6.to_string(), "tcp://[::1]:7000");
        assert_eq!(a("tcp://localhost:7000").host(), "localhost");
        let u = a("unix:///tmp/x.sock");
        assert_eq!((u.host(), u.path()), ("", "/tmp/x.sock"));
        assert_eq!(u.to_string(), "unix:///tmp/x.sock");
        assert_eq!(a("mem://node-a").host(), "node-a");
        let c = a("can://vcan0?tx=0x123&rx=0x321");
        assert_eq!(c.host(), "vcan0");
        assert_eq!(c.param("tx"), Some("0x123"));
        assert_eq!(c.to_string(), "can://vcan0?rx=0x321&tx=0x123");
    }

    #[test]
    fn percent_escapes() {
        let u = a("unix:///tmp/my%20dir/x.sock?label=a%26b");
        assert_eq!(u.path(), "/tmp/my dir/x.sock");
        assert_eq!(u.param("label"), Some("a&b"));
        assert_eq!(a(&u.to_string()), u);
    }

    #[test]
    fn typed_params_name_the_bad_key() {
        let s = a("serial:///dev/ttyS0?baud=fast");
        let err = s.param_parse::<u32>("baud").unwrap_err().to_string();
        assert!(err.contains("baud") && err.contains("fast"), "{err}");
        assert_eq!(s.param_parse::<u32>("missing").unwrap(), None);
        let err = s.check_params(&["parity"]).unwrap_err().to_string();
        assert!(err.contains("\"baud\""), "{err}");
    }

    #[test]
    fn clear_errors() {
        for (bad, says) in [
            ("127.0.0.1:7000", "scheme://"),
            ("://x", "bad scheme"),
            ("1tcp://x", "bad scheme"),
            ("tcp://host:99999", "bad port"),
            ("tcp://host:port", "bad port"),
            ("tcp://host:+80", "bad port"),
            (
                "tcp://host:a4a1f",
                "bad port \"a4a1f\": expected 0 to 65535",
            ),
            ("usb://0525:a4a1f", "bad port"),
            ("usb://0525:g4a1", "product id, 1 to 4 hex digits"),
            ("tcp://[::1:7000", "']'"),
            ("unix:///a%zz", "percent"),
            ("unix:///a%4", "percent"),
            ("x://h?a=1&a=2", "twice"),
            ("x://h?=1", "empty key"),
        ] {
            let err = bad.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// `usb://VID:PID` with hex letters in the product id: kept as text,
    /// not a port.
    #[test]
    fn hex_after_the_colon_is_kept_as_text() {
        let u = a("usb://0525:a4a1?interface=0");
        assert_eq!(
            (u.host(), u.port(), u.port_text()),
            ("0525", None, Some("a4a1"))
        );
        assert_eq!(u.port_or_text().as_deref(), Some("a4a1"));
        assert_eq!(u.authority(), "0525:a4a1");
        assert_eq!(u.to_string(), "usb://0525:a4a1?interface=0");
        assert_eq!(a(&u.to_string()), u);
        // Decimal digits stay a port number, as before.
        let d = a("usb://1d6b:0104");
        assert_eq!((d.port(), d.port_text()), (Some(104), None));
        assert_eq!(d.port_or_text().as_deref(), Some("104"));
        // A bound port replaces the text.
        assert_eq!(u.with_port(7).port_or_text().as_deref(), Some("7"));
    }

    #[test]
    fn serde_as_string() {
        let t = a("tcp://127.0.0.1:1");
        let json = rmp_serde::to_vec(&t).unwrap();
        let back: Address = rmp_serde::from_slice(&json).unwrap();
        assert_eq!(back, t);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = s.parse::<Address>();
        }

        #[test]
        fn display_parse_roundtrip(
            scheme in "[a-z][a-z0-9+.-]{0,6}",
            host in "[a-zA-Z0-9 ._~-]{0,12}",
            port in prop::option::of(any::<u16>()),
            // Hex text (never all decimal digits) when there is no port.
            text in prop::option::of("[a-fA-F][0-9a-fA-F]{0,3}"),
            path in "(/[a-zA-Z0-9 %._-]{0,8}){0,3}",
            params in prop::collection::btree_map("[a-z%&=]{1,5}", "[a-zA-Z0-9 &=:/,]{0,6}", 0..4),
        ) {
            let port_text = if port.is_some() { None } else { text };
            let addr = Address { scheme, host, port, port_text, path, params };
            let shown = addr.to_string();
            let back: Address = shown.parse().unwrap();
            prop_assert_eq!(back, addr);
        }
    }
}
