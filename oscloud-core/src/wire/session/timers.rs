//! The session's timers: retransmission, delayed ack, keepalive, idle
//! timeout, reassembly and resume grace (`docs/PROTOCOL.md` §6).

#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use super::{Session, State};
use crate::wire::packet::CloseCode;
use crate::wire::rtt::RttEstimator;
use crate::wire::secure::Secure;

impl Session {
    /// When [`handle_timeout`](Self::handle_timeout) must be called next;
    /// `None` once closed, or while input is paused and no other timer
    /// runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        if self.state == State::Detached {
            return self.grace_until;
        }
        // While input is paused the peer's packets wait unread: the idle
        // timeout does not run (the driver bounds the pause itself).
        let mut t: Option<Instant> =
            (!self.input_paused).then(|| self.last_recv + self.config.idle_timeout);
        let mut take = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        take(self.grace_until);
        take(self.ack_at);
        take(self.rto_at);
        take(self.framer.timeout());
        if self.state == State::Open && !self.ping_due {
            take(Some(self.last_sent + self.config.keepalive));
        }
        t
    }

    /// The driver stops (`true`) or starts again (`false`) reading the
    /// link, because what the peer holds of this node is over its budget.
    /// While paused the idle timeout does not run: the peer's packets wait
    /// unread, so silence proves nothing. Reading again restarts the idle
    /// timeout from `now`. The driver bounds a pause itself
    /// ([`close_over_budget`](Self::close_over_budget)).
    pub fn set_input_paused(&mut self, now: Instant, paused: bool) {
        if self.input_paused && !paused {
            self.last_recv = self.last_recv.max(now);
        }
        self.input_paused = paused;
    }

    /// Run the timers due at `now` (retransmission, delayed ack, keepalive,
    /// idle timeout, reassembly). Then drain `poll_transmit` and
    /// `poll_event`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.state == State::Closed {
            return;
        }
        let now = self.now;
        if self.grace_until.is_some_and(|g| now >= g) {
            let grace = self.config.resume_grace.unwrap_or_default();
            self.close_with(
                CloseCode::IdleTimeout,
                format!(
                    "the link was lost and the session not resumed within its grace of {grace:?}"
                ),
            );
            return;
        }
        if self.state == State::Detached {
            return;
        }
        if !self.input_paused && now >= self.last_recv + self.config.idle_timeout {
            if self.resumable && matches!(self.state, State::Open | State::Resuming) {
                let idle = self.config.idle_timeout;
                self.detach(format!("nothing heard from the peer for {idle:?}"));
                return;
            }
            let what = if self.state == State::Handshake {
                "handshake"
            } else {
                "idle"
            };
            self.close_with(
                CloseCode::IdleTimeout,
                format!(
                    "{what} timeout: nothing heard from the peer for {:?}",
                    self.config.idle_timeout
                ),
            );
            return;
        }
        self.framer.handle_timeout(now);
        self.sync_framing_stats();
        if self.rto_at.is_some_and(|t| t <= now) {
            if !self.hello_confirmed {
                self.send_hello = true;
            }
            let awaiting = self.secure_awaiting();
            if awaiting
                && self.hs_out.is_empty()
                && let Some(m) = self.secure.as_ref().and_then(Secure::last_sent)
            {
                self.hs_out.push_back(m);
            }
            if let Some(&(seq, _)) = self.in_flight.front() {
                self.retransmit_next = Some(seq);
                self.stats.timeouts += 1;
                // Everything unacknowledged goes again: the duplicates it
                // makes the peer acknowledge must not count as losses.
                self.recover = self.next_seq - 1;
                self.fast_recovery = false;
                self.fast_resend = None;
                self.dup_acks = 0;
                // Karn: whatever acknowledges the timed packet now may
                // acknowledge its copy.
                self.rtt_probe = None;
                // Data timed out: this backoff is the path's, kept until
                // a packet sent after this expiry is acknowledged (or a
                // fresh sample), even if the handshake ends meanwhile.
                self.hs_backoff = false;
                self.backoff_until = Some(self.next_seq);
                // Backed off already and the last expiry's retransmission
                // made progress: the path delivers, this is another loss,
                // not a longer round trip; the RTO keeps its level instead
                // of doubling again.
                let progress = std::mem::take(&mut self.acked_since_timeout);
                if !(progress && self.rtt.is_backed_off()) {
                    self.rtt.on_timeout();
                }
            } else {
                self.hs_backoff = true;
                self.rtt.on_timeout();
            }
            self.rto_at = (!self.hello_confirmed || !self.in_flight.is_empty() || awaiting)
                .then_some(now + self.rtt.rto());
        }
        if self.state == State::Open && now >= self.last_sent + self.config.keepalive {
            self.ping_due = true;
        }
    }

    /// The smoothed round-trip time measured on this link, to the
    /// nanosecond (test only: [`Stats::srtt_us`] is what the session
    /// shows).
    #[cfg(test)]
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// The retransmission timeout now, backoff included, to the
    /// nanosecond (test only: [`Stats::rto_us`] is what the session shows).
    #[cfg(test)]
    pub(crate) fn rto(&self) -> Duration {
        self.rtt.rto()
    }

    /// Forget the round-trip time measured so far (a new link): the
    /// estimate starts again from `initial_rto`.
    pub(super) fn restart_rtt(&mut self) {
        self.rtt = RttEstimator::new(&self.config);
        self.rtt_probe = None;
        self.backoff_until = None;
        self.last_progress = None;
    }
}
