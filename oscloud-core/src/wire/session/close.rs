//! Ending a session: local closes, Close packets and [`CloseReason`].

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use super::{Event, Session, State};
use crate::wire::packet::{CloseCode, Packet};

/// Longest close message sent, in bytes, so a Close fits any frame.
const MAX_CLOSE_TEXT: usize = 96;

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The close code.
    pub code: CloseCode,
    /// What happened, in words.
    pub message: String,
    /// True when the peer closed (its Close packet arrived).
    pub remote: bool,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (code {}{})",
            self.message,
            self.code.code(),
            if self.remote { ", closed by peer" } else { "" }
        )
    }
}

impl Session {
    /// Close the session: a Close packet is queued for the peer and
    /// [`Event::Closed`] follows. Idempotent.
    pub fn close(&mut self, message: &str) {
        self.close_with(CloseCode::Normal, message.to_owned());
    }

    /// Close the session because the peer took none of this side's bytes
    /// for `waited` while some were waiting to be written (the driver
    /// sees the link's writes; the session does not): like
    /// [`close`](Self::close), with [`CloseCode::IdleTimeout`].
    pub fn close_unread(&mut self, waited: Duration) {
        self.close_with(
            CloseCode::IdleTimeout,
            format!("the peer read nothing for {waited:?} while bytes waited for it"),
        );
    }

    /// Close the session because this side stopped reading the link for
    /// `waited` (input paused: what the peer holds of this node, replies
    /// it has not read or casts local servers have not handled yet, was
    /// over `budget` bytes the whole time), with [`CloseCode::Limit`].
    /// Unlike an idle timeout, nothing says the peer is gone.
    pub fn close_over_budget(&mut self, waited: Duration, budget: usize) {
        self.close_with(
            CloseCode::Limit,
            // Short: the Close packet carries at most `MAX_CLOSE_TEXT` bytes.
            format!("stopped reading the link for {waited:?}: over its budget of {budget} bytes"),
        );
    }

    /// Close the session because the peer is no longer admitted (its key
    /// left the allow-list): like [`close`](Self::close), with
    /// [`CloseCode::Unauthorized`] so both sides report a refused link.
    pub fn revoke(&mut self, message: &str) {
        self.close_with(CloseCode::Unauthorized, message.to_owned());
    }

    pub(super) fn close_with(&mut self, code: CloseCode, message: String) {
        if self.state == State::Closed {
            return;
        }
        tracing::debug!(code = code.code(), %message, "wire session closing");
        let packet = Packet::Close {
            code,
            message: truncate(&message, MAX_CLOSE_TEXT).to_owned(),
        };
        if let Ok(bytes) = packet.encode() {
            // Sealed once keys are in place (the peer then only takes
            // sealed packets); in clear during the handshake.
            let bytes = match self.secure.as_mut() {
                Some(sec) if sec.has_keys() => sec.seal(self.now, &bytes, &[]),
                _ => Some(Bytes::from(bytes)),
            };
            // A Close packet that does not fit is not sent; the peer times out.
            if let Some(bytes) = bytes
                && self.framer.encode(&bytes, &mut self.out).is_ok()
            {
                self.stats.frames_sent += 1;
            }
        }
        self.finish(CloseReason {
            code,
            message,
            remote: false,
        });
    }

    pub(super) fn finish(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.resumable = false;
        self.grace_until = None;
        self.resume_ack = None;
        self.queue.clear();
        self.in_flight.clear();
        self.reorder.clear();
        self.pipes.clear();
        self.peer_entries.clear();
        self.pending_calls.clear();
        self.incoming_calls.clear();
        self.rto_at = None;
        self.ack_at = None;
        self.closed = Some(reason.clone());
        self.events.push_back(Event::Closed { reason });
    }

    pub(super) fn protocol_error(&mut self, code: CloseCode, message: String) {
        self.close_with(code, message);
    }
}
