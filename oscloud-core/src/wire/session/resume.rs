//! Resuming a session on a new link (`docs/PROTOCOL.md` §12): detaching,
//! the resume Hello and the retransmission of what the peer lacks.

use std::time::Instant;

use bytes::Bytes;

use super::{CloseReason, Config, Event, Session, State};
use crate::Error;
use crate::wire::framing::Framer;
use crate::wire::packet::{CloseCode, Hello, Resume};
use crate::wire::secure::Secure;

impl Session {
    /// Whether this session resumes after a lost link (both sides can, and
    /// it is connected, detached or resuming).
    pub fn is_resumable(&self) -> bool {
        self.resumable && matches!(self.state, State::Open | State::Detached | State::Resuming)
    }

    /// Whether the session has no link now (detached, not yet resuming).
    pub fn awaiting_link(&self) -> bool {
        self.state == State::Detached
    }

    /// Whether the session waits for a new link (detached, or resuming on
    /// one).
    pub fn is_detached(&self) -> bool {
        matches!(self.state, State::Detached | State::Resuming)
    }

    /// The link is gone. A resumable session is kept ([`Event::Detached`]
    /// follows; true is returned) until [`resume`](Self::resume) or the end
    /// of its grace; any other session closes ([`Event::Closed`]; false).
    pub fn link_lost(&mut self, now: Instant, reason: &str) -> bool {
        self.advance(now);
        if self.is_resumable() {
            self.detach(reason.to_owned());
            return true;
        }
        if self.state != State::Closed {
            self.finish(CloseReason {
                code: CloseCode::Normal,
                message: reason.to_owned(),
                remote: false,
            });
        }
        false
    }

    pub(super) fn detach(&mut self, reason: String) {
        if self.state == State::Detached {
            return;
        }
        tracing::debug!(%reason, "wire session detached from its link");
        self.state = State::Detached;
        self.stats.detaches += 1;
        if self.grace_until.is_none() {
            self.grace_until = Some(self.now + self.config.resume_grace.unwrap_or_default());
        }
        self.out.clear();
        self.hs_out.clear();
        self.reorder.clear();
        self.retransmit_next = None;
        self.fast_resend = None;
        self.fast_recovery = false;
        self.dup_acks = 0;
        self.gap_acks = 0;
        self.resume_ack = None;
        self.rto_at = None;
        self.ack_at = None;
        self.ping_due = false;
        self.send_hello = false;
        self.send_hello_ack = false;
        if let Ok(framer) = Framer::new(
            self.config.framing,
            self.config.max_frame,
            self.config.reassembly_timeout,
        ) {
            self.framer = framer;
        }
        self.events.push_back(Event::Detached { reason });
    }

    /// Move a session that waits for a new link (or is about to be given
    /// one with [`resume`](Self::resume)) to a link of another kind: its
    /// framing, retransmission, send window and timers become those of
    /// `link` (a [`Config`] for the new kind); the limits agreed at the
    /// handshake (`max_frame`, `recv_window`, `pipe_window`) stay, as the
    /// resumption requires (`docs/PROTOCOL.md` §12.1). Call it before
    /// `resume`. Fails, changing nothing, if the session is not resumable
    /// or the new framing cannot carry the session's packets.
    pub fn set_link_kind(&mut self, now: Instant, link: &Config) -> Result<(), Error> {
        self.advance(now);
        if !self.is_resumable() {
            return Err(Error::WireClosed {
                reason: "the session cannot resume".into(),
            });
        }
        if link.framing == self.config.framing {
            return Ok(());
        }
        let framer = Framer::new(link.framing, self.max_frame, link.reassembly_timeout)?;
        if framer.max_frame() < self.max_frame {
            return Err(Error::WireConfig(format!(
                "a {:?} link carries packets of at most {} bytes; this session uses {}",
                link.framing,
                framer.max_frame(),
                self.max_frame
            )));
        }
        if self.state != State::Detached {
            self.detach("moved to a link of another kind".into());
        }
        tracing::debug!(from = ?self.config.framing, to = ?link.framing, "wire session changes link kind");
        self.framer = framer;
        self.config.framing = link.framing;
        self.config.send_window = link.send_window;
        self.config.initial_rto = link.initial_rto;
        self.config.min_rto = link.min_rto;
        self.config.max_rto = link.max_rto;
        self.config.ack_delay = link.ack_delay;
        self.config.reassembly_timeout = link.reassembly_timeout;
        // Another kind of link: what was measured on the old one is void.
        self.restart_rtt();
        Ok(())
    }

    /// Continue this session on a new link (whose bytes now go through
    /// this session): our resume Hello goes out first. `peer_hello` is the
    /// peer's resume Hello when the peer asked first (from
    /// [`Event::ResumeRequested`] of the session that received it).
    /// [`Event::Resumed`] follows once both sides agree (and, on secure
    /// sessions, a new Noise handshake proved the same peer key).
    pub fn resume(&mut self, now: Instant, peer_hello: Option<Bytes>) -> Result<(), Error> {
        self.advance(now);
        if !self.is_resumable() {
            return Err(Error::WireClosed {
                reason: self
                    .closed
                    .as_ref()
                    .map_or_else(|| "the session cannot resume".into(), ToString::to_string),
            });
        }
        if self.state != State::Detached {
            self.detach("resumed on another link".into());
        }
        self.state = State::Resuming;
        self.hello_resume = self.peer.as_ref().map(|peer| Resume {
            session: peer.session_id,
            ack: self.recv_next - 1,
        });
        self.send_hello = true;
        self.hello_confirmed = !self.config.framing.is_lossy();
        self.restart_rtt();
        self.hs_backoff = self.config.framing.is_lossy();
        self.rto_at = self
            .config
            .framing
            .is_lossy()
            .then_some(self.now + self.rtt.rto());
        self.last_recv = self.now;
        self.last_sent = self.now;
        if let Some(cfg) = &self.secure_cfg {
            self.secure = Some(Secure::new(cfg.clone(), !self.config.framing.is_lossy()));
        }
        if let Some(hello) = peer_hello {
            self.handle_packet(&hello, false);
        }
        Ok(())
    }

    /// Answer an [`Event::ResumeRequested`] with "no such session": the
    /// peer gets Close code 12 and starts a new session.
    pub fn refuse_resume(&mut self, why: &str) {
        self.close_with(CloseCode::NoSession, why.to_owned());
    }

    /// The resumption handshake is done: apply the peer's acknowledgement,
    /// send again what it lacks, and run.
    pub(super) fn finish_resume(&mut self) {
        let Some(ack) = self.resume_ack.take() else {
            return;
        };
        let lowest = self.in_flight.front().map_or(self.next_seq, |(s, _)| *s);
        if ack >= self.next_seq || ack + 1 < lowest {
            self.close_with(
                CloseCode::Protocol,
                format!(
                    "cannot resume: the peer acknowledges packet {ack}, but packets {lowest} to {} are what it may lack",
                    self.next_seq - 1
                ),
            );
            return;
        }
        while self.in_flight.front().is_some_and(|(s, _)| *s <= ack) {
            self.in_flight.pop_front();
        }
        self.retransmit_next = self.in_flight.front().map(|(s, _)| *s);
        // All of it goes again: no fast retransmit for what it duplicates.
        self.recover = self.next_seq - 1;
        self.rtt.clear_backoff();
        self.hs_backoff = false;
        self.rtt_probe = None;
        self.rto_at = (self.config.framing.is_lossy() && !self.in_flight.is_empty())
            .then_some(self.now + self.rtt.rto());
        self.state = State::Open;
        self.grace_until = None;
        self.ack_at = Some(self.now);
        self.stats.resumes += 1;
        tracing::debug!(resent = self.in_flight.len(), "wire session resumed");
        self.events.push_back(Event::Resumed);
    }

    /// A Hello on the new link of a resuming session.
    pub(super) fn handle_resume_hello(&mut self, h: Hello, raw: &[u8]) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let ours = h.resume.is_some_and(|r| r.session == self.local.session_id);
        if h.node != peer.node || h.session_id != peer.session_id || !ours {
            // The Hello of the session the peer's node started on this
            // link before it handed the link to the session we resume.
            self.stats.dropped += 1;
            return;
        }
        self.send_hello_ack = true;
        let started = self.secure.as_ref().is_some_and(Secure::started);
        if self.resume_ack.is_some() || started {
            return; // a repeated resume Hello
        }
        if h.max_frame != peer.max_frame
            || h.recv_window != peer.recv_window
            || h.pipe_window != peer.pipe_window
            || h.features != peer.features
        {
            self.close_with(
                CloseCode::Protocol,
                "cannot resume: the peer's limits or features changed".into(),
            );
            return;
        }
        self.resume_ack = h.resume.map(|r| r.ack);
        if self.secure.is_some() {
            // A new Noise handshake must prove the same peer key.
            self.secure_start(&h, raw);
            return;
        }
        self.finish_resume();
    }
}
