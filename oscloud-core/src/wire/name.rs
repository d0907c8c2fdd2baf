//! [`Name`]: the name of the server a cast or call is for, as it came in
//! the frame.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::{Serialize, Serializer};

use super::packet::Src;

/// A server name carried by a cast or a call ([`Event::Cast`],
/// [`Event::Call`]): UTF-8 text that reads as a `&str`.
///
/// A received name is a slice of the frame it came in (its bytes are not
/// copied and nothing is allocated for it), so holding one keeps that
/// frame's receive buffer; it is meant to be looked up and dropped.
///
/// [`Event::Cast`]: super::Event::Cast
/// [`Event::Call`]: super::Event::Call
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Name(
    /// Always valid UTF-8.
    Bytes,
);

impl Name {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from text, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// `bytes` as a name, if they are UTF-8.
    pub(crate) fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        // Names are mostly ASCII, which is UTF-8: a short loop instead of
        // the full check.
        if !bytes.is_ascii() {
            std::str::from_utf8(&bytes)?;
        }
        Ok(Self(bytes))
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A name (msgpack str), sliced from the frame when possible.
pub(super) struct NameSeed<'a>(pub(super) Src<'a>);

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = Name;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Name, D::Error> {
        struct V<'a>(Src<'a>);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name, E> {
                // The same bytes, so still UTF-8.
                Ok(Name(self.0.bytes(v.as_bytes())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(Name::from(v))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Name, E> {
                Ok(Name::from(v))
            }
            // As a `String` takes them: bytes that are UTF-8.
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Name, E> {
                Name::from_utf8(self.0.bytes(v)).map_err(E::custom)
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Name, E> {
                Name::from_utf8(Bytes::copy_from_slice(v)).map_err(E::custom)
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Name, E> {
                Name::from_utf8(Bytes::from(v)).map_err(E::custom)
            }
        }
        d.deserialize_str(V(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_reads_as_its_text() {
        let n = Name::from("echo");
        assert_eq!(n, "echo");
        assert_eq!(&*n, "echo");
        assert_eq!(n.to_string(), "echo");
        assert_eq!(format!("{n:?}"), "\"echo\"");
        assert_eq!(Name::from(String::from("echo")), n);
        assert!(Name::from_utf8(Bytes::from_static(b"\xff")).is_err());
        assert!(Name::from_utf8(Bytes::from_static(b"echo\xc3")).is_err());
        assert_eq!(
            Name::from_utf8(Bytes::from_static("écho".as_bytes())).unwrap(),
            "écho"
        );
    }
}
