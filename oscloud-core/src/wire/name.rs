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
/// A received name of up to 30 bytes is held in the `Name` itself (its
/// bytes copied out of the frame: nothing allocated, and no count of the
/// receive buffer's references taken and given back); a longer one is a
/// slice of the frame it came in, which keeps that frame's receive buffer
/// while it is held. Either way it is meant to be looked up and dropped.
///
/// [`Event::Cast`]: super::Event::Cast
/// [`Event::Call`]: super::Event::Call
#[derive(Clone)]
pub struct Name(
    /// Always valid UTF-8.
    Repr,
);

/// Names up to this long are held in place.
const INLINE: usize = 30;

#[derive(Clone)]
enum Repr {
    /// A short name: the first `len` of `bytes`.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// A longer one.
    Shared(Bytes),
}

/// Whether `v` is UTF-8 (names are mostly ASCII, which is: a short loop
/// instead of the full check).
fn check(v: &[u8]) -> Result<(), std::str::Utf8Error> {
    if !v.is_ascii() {
        std::str::from_utf8(v)?;
    }
    Ok(())
}

impl Name {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from text, so this never falls back.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(b) => b,
        }
    }

    /// `v`, UTF-8 already, held in place if it is short enough.
    fn inline(v: &[u8]) -> Option<Self> {
        let len = u8::try_from(v.len()).ok().filter(|_| v.len() <= INLINE)?;
        let mut bytes = [0; INLINE];
        bytes[..v.len()].copy_from_slice(v);
        Some(Self(Repr::Inline { len, bytes }))
    }

    /// `v`, UTF-8 already: in place if short, else `shared()`.
    fn text(v: &[u8], shared: impl FnOnce() -> Bytes) -> Self {
        Self::inline(v).unwrap_or_else(|| Self(Repr::Shared(shared())))
    }

    /// `bytes` as a name, if they are UTF-8.
    pub(crate) fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        check(&bytes)?;
        Ok(Self::inline(&bytes).unwrap_or(Self(Repr::Shared(bytes))))
    }

    /// `v`, bytes of the frame `src` (or copied), as a name if they are
    /// UTF-8.
    pub(super) fn from_frame(src: Src<'_>, v: &[u8]) -> Result<Self, std::str::Utf8Error> {
        check(v)?;
        Ok(Self::text(v, || src.bytes(v)))
    }
}

impl Default for Name {
    fn default() -> Self {
        Self(Repr::Inline {
            len: 0,
            bytes: [0; INLINE],
        })
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
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
        Self::text(s.as_bytes(), || Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Self::inline(s.as_bytes()).unwrap_or_else(|| Self(Repr::Shared(Bytes::from(s))))
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
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
                Ok(Name::text(v.as_bytes(), || self.0.bytes(v.as_bytes())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(Name::from(v))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Name, E> {
                Ok(Name::from(v))
            }
            // As a `String` takes them: bytes that are UTF-8.
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Name, E> {
                Name::from_frame(self.0, v).map_err(E::custom)
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
    use std::hash::BuildHasher;

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
        assert_eq!(Name::default(), "");
    }

    #[test]
    fn a_short_name_is_held_in_place_a_long_one_as_a_slice_of_its_frame() {
        let long = "n".repeat(INLINE + 1);
        let frame = Bytes::from(format!("..echo..{long}").into_bytes());
        let short = Name::from_frame(Src::frame(&frame), &frame[2..6]).unwrap();
        assert_eq!(short, "echo");
        assert!(
            frame.is_unique(),
            "the short name holds no part of the frame"
        );
        let sliced = Name::from_frame(Src::frame(&frame), &frame[8..]).unwrap();
        assert_eq!(sliced, long.as_str());
        assert!(!frame.is_unique(), "the long one is a slice of it");
        assert!(Name::from_frame(Src::frame(&frame), b"\xff").is_err());
        // Equal names are equal, and hash alike, however they were made.
        let state = std::hash::RandomState::new();
        for (a, b) in [
            (short.clone(), Name::from(String::from("echo"))),
            (sliced.clone(), Name::from(long.as_str())),
            (
                sliced.clone(),
                Name::from_utf8(Bytes::from(long.clone())).unwrap(),
            ),
        ] {
            assert_eq!(a, b);
            assert_eq!(state.hash_one(&a), state.hash_one(&b));
        }
        assert_ne!(short, sliced);
    }
}
