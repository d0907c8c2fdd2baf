//! The registry channel: entries announced, routed and withdrawn
//! (`docs/PROTOCOL.md` §4.1).

use super::Session;
use crate::wire::packet::{EntryInfo, Msg, RouteInfo};
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
}
