//! Session resumption at the node level: the table of resumable sessions
//! and the hand-over of a new link to the driver of a kept session.
//!
//! A link the node accepted starts with a fresh session. When the peer's
//! Hello asks to resume one of our sessions instead, the fresh driver looks
//! the session up here (by our session id, checked against the peer's node
//! and session ids) and hands its link over to that session's driver,
//! which resumes on it. A link the node dialled is dialled again by its
//! dial loop when the driver reports the link lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::link_io::LinkPorts;
use crate::NodeId;
use crate::wire;

/// A new link for a kept session.
pub(crate) struct Handover {
    pub(crate) io: LinkPorts,
    /// The peer's resume Hello, when the peer asked first (accepted links).
    pub(crate) hello: Option<Bytes>,
    /// The new link's local side, as the transport describes it.
    pub(crate) local: String,
    /// The new link's remote side, as the transport describes it.
    pub(crate) remote: String,
    /// The session settings for the new link's kind: a session may move to
    /// a link of another kind (a serial line to TCP, say).
    pub(crate) config: wire::Config,
}

impl Handover {
    /// The new link's name, for logs.
    pub(crate) fn name(&self) -> String {
        link_name(&self.local, &self.remote)
    }
}

/// A link's name in logs: its two sides as the transport describes them.
pub(crate) fn link_name(local: &str, remote: &str) -> String {
    format!("{local} ↔ {remote}")
}

/// A resumable session of this node.
pub(crate) struct Slot {
    peer: NodeId,
    peer_session: u64,
    tx: mpsc::UnboundedSender<Handover>,
}

/// The node's resumable sessions, by our session id.
pub(crate) type Table = Arc<Mutex<HashMap<u64, Slot>>>;

fn lock(t: &Table) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Called with `true` when a link is up again (resumed), `false` when it is
/// lost (the link's record is updated by its driver; this is for others).
pub(crate) type OnState = Arc<dyn Fn(bool) + Send + Sync>;

/// A driver's part in resumption.
pub(crate) struct Resumption {
    pub(crate) table: Table,
    pub(crate) tx: mpsc::UnboundedSender<Handover>,
    pub(crate) rx: mpsc::UnboundedReceiver<Handover>,
    /// Ask the dial loop for a new link (dialled links only).
    pub(crate) redial: Option<mpsc::UnboundedSender<()>>,
    pub(crate) grace: Duration,
    /// Our session id, once registered in the table.
    registered: Option<u64>,
    /// The link is lost and not yet resumed.
    pub(crate) detached: bool,
    pub(crate) on_state: Option<OnState>,
}

impl Resumption {
    /// The part of a driver of a link, with its hand-over channel.
    pub(crate) fn new(
        table: Table,
        grace: Duration,
        handover: Option<(
            mpsc::UnboundedSender<Handover>,
            mpsc::UnboundedReceiver<Handover>,
        )>,
        redial: Option<mpsc::UnboundedSender<()>>,
        on_state: Option<OnState>,
    ) -> Self {
        let (tx, rx) = handover.unwrap_or_else(mpsc::unbounded_channel);
        Self {
            table,
            tx,
            rx,
            redial,
            grace,
            registered: None,
            detached: false,
            on_state,
        }
    }

    /// The session `session` (ours) with this peer may be resumed.
    pub(crate) fn register(&mut self, session: u64, peer: NodeId, peer_session: u64) {
        lock(&self.table).insert(
            session,
            Slot {
                peer,
                peer_session,
                tx: self.tx.clone(),
            },
        );
        self.registered = Some(session);
    }

    /// The session is over: it can no longer be resumed.
    pub(crate) fn unregister(&mut self) {
        if let Some(id) = self.registered.take() {
            lock(&self.table).remove(&id);
        }
    }

    /// Where to hand a link whose peer (`peer`, its session
    /// `peer_session`) asks to resume our session `session`.
    pub(crate) fn find(
        &self,
        session: u64,
        peer: NodeId,
        peer_session: u64,
    ) -> Option<mpsc::UnboundedSender<Handover>> {
        lock(&self.table)
            .get(&session)
            .filter(|s| s.peer == peer && s.peer_session == peer_session)
            .map(|s| s.tx.clone())
    }

    pub(crate) fn state(&self, up: bool) {
        if let Some(f) = &self.on_state {
            f(up);
        }
    }
}
