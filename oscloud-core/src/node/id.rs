//! Node identity: which kernel a server lives on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The identity of one kernel (a *node*) in the cloud.
///
/// Every registry entry carries the node it lives on, so a reference to a
/// server always knows *where* the server is. In one process there is one
/// local node; linked nodes learn each other's ids during the handshake.
///
/// Displayed (and parsed) as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId([u8; 16]);

impl NodeId {
    /// A fresh random id, different from every other with overwhelming odds.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The id made of these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id's bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The first eight hex digits: enough to tell nodes apart in logs.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_owned()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidAddress {
            input: s.to_owned(),
            reason: format!("not a node id: {reason}"),
        };
        if s.len() != 32 {
            return Err(bad("expected 32 hex digits"));
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or_else(|| bad("not ASCII"))?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad("not hex"))?;
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_roundtrip() {
        let id = NodeId::random();
        let back: NodeId = id.to_string().parse().unwrap();
        assert_eq!(id, back);
        assert_eq!(id.short().len(), 8);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!("xyz".parse::<NodeId>().is_err());
        assert!("zz".repeat(16).parse::<NodeId>().is_err());
        assert!("é".repeat(16).parse::<NodeId>().is_err());
    }
}
