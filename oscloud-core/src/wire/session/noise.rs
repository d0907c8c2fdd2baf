//! The Noise handshake and the encrypted frames of a secure session
//! (`docs/PROTOCOL.md` §11).

use bytes::{Bytes, BytesMut};

use super::{Event, Session, State};
use crate::wire::packet::{CloseCode, Hello, Packet};
use crate::wire::secure::{
    FEATURE_AEGIS, FEATURE_AESGCM, FEATURE_NOISE, FEATURE_PSK, HsOutcome, OpenError, Secure, Suite,
};

/// Why a side without a node key refuses a peer that encrypts.
const NO_KEY: &str = "the peer requires encrypted links and this node has no key";

impl Session {
    /// A frame starting with the secure mark, owned: decrypted in place.
    pub(super) fn handle_sealed(&mut self, frame: BytesMut) {
        let Some(sec) = self.secure.as_mut() else {
            return self.handle_frame(&frame.freeze());
        };
        match sec.open_owned(frame) {
            Ok(packet) => self.handle_packet(&packet, true),
            Err(e) => self.open_failed(e),
        }
    }

    /// Whether a handshake message of ours may need sending again (lossy
    /// links only).
    pub(super) fn secure_awaiting(&self) -> bool {
        self.config.framing.is_lossy() && self.secure.as_ref().is_some_and(Secure::awaiting)
    }

    /// An encrypted frame did not open: dropped on lossy links (the
    /// session retransmits what mattered), fatal on reliable streams.
    fn open_failed(&mut self, e: OpenError) {
        match e {
            OpenError::Replay => self.stats.replays += 1,
            OpenError::Auth | OpenError::Malformed => self.stats.auth_failures += 1,
            OpenError::NoKeys => self.stats.dropped += 1,
        }
        if self.config.framing.is_lossy() {
            tracing::debug!("dropped a frame: {e}");
        } else {
            tracing::warn!("{e}: closing the link");
            self.close_with(CloseCode::Crypto, e.to_string());
        }
    }

    /// On a secure session, whether a decoded packet may be acted on:
    /// only the handshake travels in clear (and a Close before the peer
    /// proved it has the keys); everything else must be sealed.
    pub(super) fn secure_accepts(&mut self, packet: &Packet, sealed: bool) -> bool {
        let handshake = matches!(
            packet,
            Packet::Hello(_)
                | Packet::ForeignHello { .. }
                | Packet::HelloAck { .. }
                | Packet::Handshake { .. }
        );
        if sealed && handshake {
            self.protocol_error(
                CloseCode::Protocol,
                "handshake packet inside an encrypted frame".into(),
            );
            return false;
        }
        if sealed || handshake {
            return true;
        }
        let confirmed = self.secure.as_ref().is_some_and(Secure::confirmed);
        if matches!(packet, Packet::Close { .. }) && !confirmed {
            return true;
        }
        // A packet in clear where only sealed ones are allowed: injected,
        // or a peer that does not encrypt.
        self.stats.dropped += 1;
        if self.config.framing.is_lossy() {
            tracing::debug!("dropped a packet sent in clear on an encrypted session");
        } else {
            self.protocol_error(
                CloseCode::Crypto,
                "packet in clear on an encrypted session".into(),
            );
        }
        false
    }

    /// Start the Noise handshake once the peer's Hello is in; false if the
    /// session closed instead.
    pub(super) fn secure_start(&mut self, h: &Hello, raw: &[u8]) -> bool {
        let Some(sec) = self.secure.as_mut() else {
            if h.features & FEATURE_NOISE != 0 {
                self.protocol_error(CloseCode::Unauthorized, NO_KEY.into());
                return false;
            }
            return true;
        };
        let want = sec.features() & (FEATURE_NOISE | FEATURE_PSK);
        let have = h.features & (FEATURE_NOISE | FEATURE_PSK);
        if have != want {
            let why = if have & FEATURE_NOISE == 0 {
                "the peer does not encrypt (it has no node key); this node requires it"
            } else {
                "a pre-shared key is configured on one side only"
            };
            self.protocol_error(CloseCode::Unauthorized, why.into());
            return false;
        }
        if h.session_id == self.local.session_id {
            self.protocol_error(
                CloseCode::Protocol,
                "both sides picked the same session id".into(),
            );
            return false;
        }
        let ours = match self.hello().encode() {
            Ok(b) => b,
            Err(e) => {
                self.protocol_error(CloseCode::Protocol, e.to_string());
                return false;
            }
        };
        let initiator = self.local.session_id < h.session_id;
        let both = self.local.features & h.features;
        let suite = if both & FEATURE_AEGIS != 0 {
            Suite::Aegis256
        } else if both & FEATURE_AESGCM != 0 {
            Suite::AesGcm
        } else {
            Suite::ChaChaPoly
        };
        let hellos = if initiator {
            [&ours[..], raw]
        } else {
            [raw, &ours[..]]
        };
        let Some(sec) = self.secure.as_mut() else {
            return false;
        };
        match sec.start(initiator, suite, hellos) {
            Ok(first) => {
                self.hs_out.extend(first);
                true
            }
            Err(e) => {
                self.protocol_error(CloseCode::Protocol, e);
                false
            }
        }
    }

    pub(super) fn handle_handshake(&mut self, msg: Bytes) {
        let now = self.now;
        let Some(sec) = self.secure.as_mut() else {
            // The peer encrypts, this side cannot: refused as the peer's
            // Hello with the Noise bit is.
            self.protocol_error(CloseCode::Unauthorized, NO_KEY.into());
            return;
        };
        let Some(claimed) = self.peer.as_ref().map(|p| p.node).filter(|_| sec.started()) else {
            // Before the peer's Hello (reordered on a lossy link): it is
            // sent again.
            self.stats.dropped += 1;
            return;
        };
        match sec.on_handshake(&msg, now, claimed) {
            HsOutcome::Nothing => {}
            HsOutcome::Send(m) => self.hs_out.push_back(m),
            HsOutcome::Duplicate => {
                if let Some(m) = sec.last_sent() {
                    self.hs_out.push_back(m);
                } else if sec.has_keys() && !sec.is_initiator() {
                    // Our confirmation was lost: send another.
                    self.ping_due = true;
                }
            }
            HsOutcome::Established { peer, send } => {
                let initiator = sec.is_initiator();
                if self.state == State::Resuming
                    && self.peer.as_ref().and_then(|p| p.key) != Some(peer)
                {
                    self.protocol_error(
                        CloseCode::Unauthorized,
                        format!(
                            "resumption refused: the peer proved key {}, not the key of the session",
                            peer.short()
                        ),
                    );
                    return;
                }
                self.hs_out.extend(send);
                if let Some(p) = self.peer.as_mut() {
                    p.key = Some(peer);
                }
                tracing::debug!(peer = %peer.short(), initiator, "noise handshake done");
                if !initiator {
                    // The responder confirms with its first sealed packet.
                    self.ping_due = true;
                }
                self.secure_connected();
            }
            HsOutcome::Refused(reason) => {
                tracing::warn!("link refused: {reason}");
                self.protocol_error(CloseCode::Unauthorized, reason);
            }
        }
    }

    /// Open the session once the secure handshake is done (and, for the
    /// initiator, confirmed by the peer).
    pub(super) fn secure_connected(&mut self) {
        if !matches!(self.state, State::Handshake | State::Resuming) {
            return;
        }
        let ready = self
            .secure
            .as_ref()
            .is_some_and(|s| s.has_keys() && s.confirmed());
        let Some(peer) = self.peer.clone().filter(|_| ready) else {
            return;
        };
        if self.state == State::Resuming {
            self.finish_resume();
            return;
        }
        tracing::debug!(peer = %peer.node.short(), "wire session connected (encrypted)");
        self.state = State::Open;
        self.events.push_back(Event::Connected(Box::new(peer)));
    }
}
