//! The registry channel: entries announced, routed and withdrawn
//! (`docs/PROTOCOL.md` §4.1).

use super::{Event, Session};
use crate::wire::packet::{CloseCode, EntryInfo, Msg, RouteInfo};
use crate::{Error, ExitReason};

impl Session {
    /// Tell the peer about a registry entry of this node.
    pub fn announce(&mut self, entry: EntryInfo) -> Result<(), Error> {
        self.enqueue(Msg::Announce(Box::new(entry)))
    }

    /// Tell the peer about a registry entry of another node that this node
    /// forwards to (send only if the peer set
    /// [`FEATURE_ROUTING`](super::FEATURE_ROUTING)). An id announced again
    /// replaces the earlier announcement.
    pub fn announce_route(&mut self, entry: EntryInfo, route: RouteInfo) -> Result<(), Error> {
        self.enqueue(Msg::Route(Box::new(entry), route))
    }

    /// Tell the peer a previously announced entry is gone.
    pub fn withdraw(&mut self, id: u64, reason: ExitReason) -> Result<(), Error> {
        self.enqueue(Msg::Withdraw { id, reason })
    }

    /// The peer announced one of its entries. An id it announced before
    /// and has not withdrawn closes the session: the two sides would no
    /// longer agree on what the id names.
    pub(super) fn handle_announce(&mut self, entry: Box<EntryInfo>) {
        if !self.peer_entries.insert(entry.id) {
            self.protocol_error(
                CloseCode::Protocol,
                format!("entry {} announced twice (not withdrawn)", entry.id),
            );
            return;
        }
        self.events.push_back(Event::PeerAnnounced(entry));
    }

    /// The peer forwarded an entry of another node; one with an id already
    /// announced replaces it.
    pub(super) fn handle_route(&mut self, entry: Box<EntryInfo>, route: RouteInfo) {
        self.peer_entries.insert(entry.id);
        self.events.push_back(Event::PeerRouted(entry, route));
    }

    /// The peer withdrew an entry. One it never announced, or withdrew
    /// already, is ignored and counted in
    /// [`Stats::dropped`](super::Stats::dropped).
    pub(super) fn handle_withdraw(&mut self, id: u64, reason: ExitReason) {
        if !self.peer_entries.remove(&id) {
            tracing::debug!(
                id,
                "dropped a Withdraw of an entry the peer did not announce"
            );
            self.stats.dropped += 1;
            return;
        }
        self.events.push_back(Event::PeerWithdrew { id, reason });
    }
}
