//! How the node's link sessions closed, per peer and close code, for as
//! long as the node runs: [`Node::link_closes`](super::Node::link_closes).
//!
//! A link's own record ([`LinkStatus`](super::LinkStatus)) goes when the
//! link ends for good, so its counters cannot tell how links end; these
//! totals outlive the links. Each session closes once: the link's driver
//! counts its [`CloseReason`] when the session reports it closed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::NodeId;
use crate::wire::{CloseCode, CloseReason};

/// How many counters a [`LinkCloses`] has per direction: one per close
/// code of `docs/PROTOCOL.md` §5.4, and one for every other code (see
/// [`CloseCode::index`]).
pub const CLOSE_CODES: usize = CloseCode::KNOWN as usize + 1;

/// Most peers counted apart; the closes of links to further peers are
/// counted under `peer: None`.
pub const MAX_CLOSE_PEERS: usize = 1024;

/// The sessions with one peer that closed since the node started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCloses {
    /// The peer. `None` for sessions that closed before their handshake
    /// told who the peer is (refused versions, keys or resumptions), and
    /// for peers beyond the first [`MAX_CLOSE_PEERS`].
    pub peer: Option<NodeId>,
    /// Sessions this node closed, per [`CloseCode::index`]: it queued a
    /// Close packet with that code for the peer (sent unless the link was
    /// already gone).
    pub sent: [u64; CLOSE_CODES],
    /// Sessions the peer closed: its Close packet arrived, with that code.
    pub received: [u64; CLOSE_CODES],
}

/// The closes counted so far, shared by the node and its links' drivers.
#[derive(Debug, Default)]
pub(crate) struct CloseCounts {
    by_peer: Mutex<BTreeMap<Option<NodeId>, LinkCloses>>,
}

impl CloseCounts {
    /// A session with `peer` closed for `reason`.
    pub(crate) fn count(&self, peer: Option<NodeId>, reason: &CloseReason) {
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        let peer = match peer {
            Some(p) if !by_peer.contains_key(&Some(p)) && by_peer.len() >= MAX_CLOSE_PEERS => None,
            p => p,
        };
        let c = by_peer.entry(peer).or_insert(LinkCloses {
            peer,
            sent: [0; CLOSE_CODES],
            received: [0; CLOSE_CODES],
        });
        let counts = if reason.remote {
            &mut c.received
        } else {
            &mut c.sent
        };
        counts[reason.code.index()] += 1;
    }

    /// Every peer's closes, `None` first, then in node id order.
    pub(crate) fn snapshot(&self) -> Vec<LinkCloses> {
        let by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        by_peer.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(code: CloseCode, remote: bool) -> CloseReason {
        CloseReason {
            code,
            message: String::new(),
            remote,
        }
    }

    #[test]
    fn closes_are_counted_per_peer_code_and_direction() {
        let c = CloseCounts::default();
        let a = NodeId::from_bytes([1; 16]);
        c.count(Some(a), &reason(CloseCode::Normal, false));
        c.count(Some(a), &reason(CloseCode::IdleTimeout, true));
        c.count(Some(a), &reason(CloseCode::Other(200), true));
        c.count(None, &reason(CloseCode::Unauthorized, false));
        let s = c.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].peer, None);
        assert_eq!(s[0].sent[10], 1);
        assert_eq!(s[1].peer, Some(a));
        assert_eq!(s[1].sent[0], 1);
        assert_eq!(s[1].received[9], 1);
        assert_eq!(s[1].received[CLOSE_CODES - 1], 1, "unknown codes together");
        assert_eq!(s[1].sent.iter().sum::<u64>(), 1);
    }

    #[test]
    fn peers_beyond_the_cap_are_counted_without_their_id() {
        let c = CloseCounts::default();
        for i in 0..=MAX_CLOSE_PEERS {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            c.count(
                Some(NodeId::from_bytes(id)),
                &reason(CloseCode::Normal, true),
            );
        }
        let s = c.snapshot();
        assert_eq!(s.len(), MAX_CLOSE_PEERS + 1);
        assert_eq!(s[0].peer, None);
        assert_eq!(s[0].received[0], 1);
    }
}
