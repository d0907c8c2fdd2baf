//! The Hello exchange that opens every session (`docs/PROTOCOL.md` §3.1,
//! §6): what each side says about itself and how the peer's Hello is taken.

use bytes::Bytes;

use super::{CloseReason, Event, FEATURE_RESUME, MIN_FRAME, Session, State};
use crate::NodeId;
use crate::identity::PublicKey;
use crate::wire::packet::{CloseCode, Hello, Packet};

/// Who this side is, sent in the Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalInfo {
    /// This node's id.
    pub node: NodeId,
    /// Feature bits (none are defined in version 1; send 0).
    pub features: u64,
    /// A random id for this session (for resumption in later versions).
    pub session_id: u64,
    /// Opaque authentication payload (reserved for a Noise handshake).
    pub auth: Option<Bytes>,
}

impl LocalInfo {
    /// Info for `node` with a fresh random session id and no auth.
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            features: 0,
            session_id: rand::random(),
            auth: None,
        }
    }
}

/// What the peer said about itself in its Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id.
    pub node: NodeId,
    /// The peer's feature bits.
    pub features: u64,
    /// The peer's session id.
    pub session_id: u64,
    /// The peer's authentication payload.
    pub auth: Option<Bytes>,
    /// The peer's static public key, verified by the Noise handshake
    /// (secure sessions only; `None` on plaintext sessions).
    pub key: Option<PublicKey>,
    /// Largest packet the peer accepts.
    pub max_frame: u32,
    /// Packets the peer buffers ahead of a gap.
    pub recv_window: u32,
    /// Initial credit of every pipe towards the peer, in bytes.
    pub pipe_window: u32,
}

impl Session {
    pub(super) fn hello(&self) -> Packet {
        Packet::Hello(Box::new(Hello {
            node: self.local.node,
            features: self.local.features,
            session_id: self.local.session_id,
            auth: self.local.auth.clone(),
            max_frame: self.max_frame as u32,
            recv_window: self.config.recv_window,
            pipe_window: self.config.pipe_window,
            resume: self.hello_resume,
        }))
    }

    pub(super) fn handle_hello(&mut self, h: Hello, raw: &[u8]) {
        if self.state == State::Resuming {
            return self.handle_resume_hello(h, raw);
        }
        if self.peer.is_none()
            && let Some(r) = h.resume
        {
            if self.config.resume_grace.is_none() {
                self.close_with(
                    CloseCode::NoSession,
                    "this node does not resume sessions".into(),
                );
            } else if !std::mem::replace(&mut self.resume_requested, true) {
                self.events.push_back(Event::ResumeRequested {
                    node: h.node,
                    peer_session: h.session_id,
                    session: r.session,
                    hello: Bytes::copy_from_slice(raw),
                });
            }
            return;
        }
        if let Some(peer) = &self.peer {
            if peer.session_id == h.session_id && peer.node == h.node {
                // A retransmitted Hello: our HelloAck was lost.
                self.send_hello_ack = true;
            } else if self.config.framing.is_lossy() {
                // On a line without connections (serial, CAN, BLE) this
                // means the peer restarted its side. A Close would reach
                // its new session and end that one too, so this session
                // ends quietly; the link starts a new one, which answers
                // the peer's next Hello (PROTOCOL.md §6).
                tracing::debug!("the peer started a new session over this one; ending it");
                self.finish(CloseReason {
                    code: CloseCode::Normal,
                    message: "the peer started a new session over this one".into(),
                    remote: true,
                });
            } else {
                self.protocol_error(
                    CloseCode::Protocol,
                    "the peer started a new session over this one".into(),
                );
            }
            return;
        }
        if (h.max_frame as usize) < MIN_FRAME || h.recv_window == 0 || h.pipe_window == 0 {
            self.protocol_error(
                CloseCode::Protocol,
                format!(
                    "peer limits too small: max_frame {} (at least {MIN_FRAME}), recv_window {}, pipe_window {}",
                    h.max_frame, h.recv_window, h.pipe_window
                ),
            );
            return;
        }
        if !self.secure_start(&h, raw) {
            return;
        }
        self.resumable = self.config.resume_grace.is_some() && h.features & FEATURE_RESUME != 0;
        let peer = PeerInfo {
            node: h.node,
            features: h.features,
            session_id: h.session_id,
            auth: h.auth,
            key: None,
            max_frame: h.max_frame,
            recv_window: h.recv_window,
            pipe_window: h.pipe_window,
        };
        if self.secure.is_some() {
            // Connected comes after the Noise handshake.
            self.peer = Some(peer);
            self.send_hello_ack = true;
            return;
        }
        tracing::debug!(peer = %peer.node.short(), "wire session connected");
        self.peer = Some(peer.clone());
        self.state = State::Open;
        self.send_hello_ack = true;
        self.events.push_back(Event::Connected(Box::new(peer)));
    }

    /// A HelloAck: it confirms our Hello if it names this session. One that
    /// names another session (a stale one from an earlier session on a
    /// line without connections, or a confused peer) is ignored and
    /// counted in [`Stats::dropped`](super::Stats::dropped).
    pub(super) fn handle_hello_ack(&mut self, session_id: u64) {
        if session_id == self.local.session_id {
            self.hello_confirmed = true;
        } else {
            tracing::debug!(session_id, "dropped a HelloAck for another session");
            self.stats.dropped += 1;
        }
    }
}
