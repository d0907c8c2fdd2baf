//! Reliable ordered delivery (`docs/PROTOCOL.md` §7): sequence numbers,
//! acknowledgements, the receive window and retransmission.

use super::{Event, Session, State};
use crate::wire::packet::{CloseCode, Msg, Packet};

/// Most packets kept for resumption on a reliable stream while their
/// acknowledgement is outstanding (the peer acknowledges within its
/// `ack_delay`, so this is reached only if it stops acknowledging).
const RETAIN_MAX: usize = 1 << 16;

/// Duplicate acknowledgements (standalone Acks that acknowledge nothing
/// new while Data is outstanding) that make a lossy-link sender re-send
/// its oldest unacknowledged packet at once, before the retransmission
/// timeout (`docs/PROTOCOL.md` §7).
pub const DUP_ACK_THRESHOLD: u32 = 3;

impl Session {
    /// Data packets sent and not yet acknowledged (test only).
    #[cfg(test)]
    pub(crate) fn unacked(&self) -> usize {
        self.in_flight.len()
    }

    pub(super) fn next_data(&mut self) -> Option<Packet> {
        if self.state != State::Open {
            return None;
        }
        let ack = self.recv_next - 1;
        if let Some(seq) = self.fast_resend.take() {
            let front = self.in_flight.front().map_or(u64::MAX, |(s, _)| *s);
            let idx = seq.checked_sub(front).map(|i| i as usize);
            if let Some((_, msg)) = idx.and_then(|i| self.in_flight.get(i)) {
                let msg = msg.clone();
                self.stats.retransmissions += 1;
                self.ack_at = None;
                return Some(Packet::Data { seq, ack, msg });
            }
        }
        if let Some(seq) = self.retransmit_next {
            let front = self.in_flight.front().map_or(u64::MAX, |(s, _)| *s);
            let idx = seq.checked_sub(front).map(|i| i as usize);
            if let Some((_, msg)) = idx.and_then(|i| self.in_flight.get(i)) {
                let msg = msg.clone();
                self.retransmit_next = (seq + 1 < self.next_seq).then_some(seq + 1);
                self.stats.retransmissions += 1;
                self.ack_at = None;
                return Some(Packet::Data { seq, ack, msg });
            }
            self.retransmit_next = None;
        }
        let lossy = self.config.framing.is_lossy();
        let window = if lossy {
            self.config
                .send_window
                .min(self.peer.as_ref().map_or(1, |p| p.recv_window)) as usize
        } else {
            RETAIN_MAX
        };
        if (lossy || self.resumable) && self.in_flight.len() >= window {
            return None;
        }
        let (msg, counted) = self.queue.pop()?;
        if counted {
            self.queued_app -= 1;
            if self.queue_blocked && self.queued_app < self.config.max_send_queue {
                self.queue_blocked = false;
                self.events.push_back(Event::Writable);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if lossy {
            self.in_flight.push_back((seq, msg.clone()));
            if self.rtt_probe.is_none() {
                self.rtt_probe = Some((seq, self.now));
            }
            if self.rto_at.is_none() {
                self.rto_at = Some(self.now + self.rtt.rto());
            }
        } else if self.resumable {
            // Kept (payloads shared, not copied) until acknowledged, to be
            // sent again on a new link.
            self.in_flight.push_back((seq, msg.clone()));
        }
        self.ack_at = None;
        Some(Packet::Data { seq, ack, msg })
    }

    /// An acknowledgement from the peer; `standalone` when it came in an
    /// Ack packet (only those count as duplicates: every Data packet
    /// repeats the ack, new or not).
    pub(super) fn handle_ack(&mut self, ack: u64, standalone: bool) {
        if ack >= self.next_seq {
            self.protocol_error(
                CloseCode::Protocol,
                format!("acknowledgement of packet {ack}, which was never sent"),
            );
            return;
        }
        let mut progress = false;
        while self.in_flight.front().is_some_and(|(s, _)| *s <= ack) {
            self.in_flight.pop_front();
            progress = true;
        }
        if progress {
            self.acked_since_timeout = true;
            if let Some((seq, sent)) = self.rtt_probe
                && seq <= ack
            {
                // Timed from when the timer began to wait for it: its
                // send, or the last ack that made progress if that came
                // later (the timer restarts then, RFC 6298 5.3).
                let from = self.last_progress.map_or(sent, |t| t.max(sent));
                self.rtt_probe = None;
                self.rtt.sample(self.now.saturating_duration_since(from));
            }
            self.last_progress = Some(self.now);
            if self.backoff_until.is_some_and(|s| s <= ack) {
                // A packet first sent after the last expiry arrived: the
                // path delivers again (Karn and Partridge). Waiting for a
                // timed packet instead keeps a noisy link, where
                // retransmissions void most of them, backed off for long.
                self.backoff_until = None;
                self.rtt.clear_backoff();
            }
            // The timer restarts for the oldest packet left (RFC 6298
            // 5.3), with the backoff kept until then.
            self.rto_at = (self.config.framing.is_lossy() && !self.in_flight.is_empty())
                .then_some(self.now + self.rtt.rto());
            if self.retransmit_next.is_some_and(|s| s <= ack) {
                self.retransmit_next = self.in_flight.front().map(|(s, _)| *s);
            }
            self.dup_acks = 0;
            if self.fast_resend.is_some_and(|s| s <= ack) {
                self.fast_resend = None;
            }
            if self.fast_recovery {
                if ack < self.recover {
                    // A partial acknowledgement: the next packet is lost
                    // too (NewReno).
                    self.fast_retransmit();
                } else {
                    self.fast_recovery = false;
                }
            }
        } else if standalone && self.config.framing.is_lossy() {
            self.on_duplicate_ack();
        }
    }

    /// A standalone Ack that acknowledged nothing new.
    fn on_duplicate_ack(&mut self) {
        let Some(&(front, _)) = self.in_flight.front() else {
            return;
        };
        self.dup_acks += 1;
        if self.dup_acks == DUP_ACK_THRESHOLD && front > self.recover {
            self.recover = self.next_seq - 1;
            self.fast_recovery = true;
            self.fast_retransmit();
        }
    }

    /// Send the oldest unacknowledged packet again at once, and give it a
    /// whole retransmission timeout.
    fn fast_retransmit(&mut self) {
        let Some(&(front, _)) = self.in_flight.front() else {
            return;
        };
        if self.retransmit_next.is_some_and(|s| s <= front) {
            return; // a timeout's go-back-N sends it anyway
        }
        self.fast_resend = Some(front);
        self.stats.fast_retransmits += 1;
        // Karn: a later ack may be for the copy, or held up by the gap.
        self.rtt_probe = None;
        self.rto_at = Some(self.now + self.rtt.rto());
    }

    pub(super) fn handle_data(&mut self, seq: u64, msg: Msg) {
        if seq < self.recv_next || self.reorder.contains_key(&seq) {
            self.stats.duplicates += 1;
            self.ack_at = Some(self.now);
            return;
        }
        if seq > self.recv_next {
            if seq - self.recv_next >= u64::from(self.config.recv_window) {
                self.stats.dropped += 1;
            } else {
                self.stats.out_of_order += 1;
                self.reorder.insert(seq, msg);
                // One Ack per packet past the gap, each on its own: the
                // sender counts them to re-send the missing one at once.
                self.gap_acks = (self.gap_acks + 1).min(self.config.recv_window);
            }
            self.ack_at = Some(self.now);
            return;
        }
        self.deliver(msg);
        self.recv_next += 1;
        while self.state == State::Open {
            let Some(msg) = self.reorder.remove(&self.recv_next) else {
                break;
            };
            self.deliver(msg);
            self.recv_next += 1;
        }
        let due = self.now + self.config.ack_delay;
        self.ack_at = Some(self.ack_at.map_or(due, |t| t.min(due)));
    }
}
