//! What a running link shows in [`Node::links`](super::Node::links): its
//! state (the link under the session, the peer, up or down) and its wire
//! counters.
//!
//! The link's driver writes both itself, in the same step as the event
//! they describe, so a reader never sees the node act on something its
//! link record does not show yet:
//!
//! - the peer and the connected flag are set when the driver handles the
//!   handshake, before it learns the peer's servers or serves the peer;
//! - the counters are published before the session's events are handled
//!   (so a reply reaches its caller after the bytes that carried it are
//!   counted) and after output is taken from the session (so the bytes
//!   are counted before they are written);
//! - the link's names follow the session when it resumes on a new link.
//!
//! The counters are a sequence lock over atomics: publishing costs the
//! driver a few plain stores on a turn of its loop that moved bytes (and
//! two comparisons on one that did not), never a lock; readers retry in
//! the rare case they overlap a write.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};

use super::link_closes::CloseCounts;
use super::remote::SendQueue;
use super::rtt_probe::ProbeAnswer;
use crate::NodeId;
use crate::wire::{CloseReason, RttHistogram, Session, Stats};

/// The state of a link as [`Node::links`](super::Node::links) shows it.
#[derive(Debug, Clone)]
pub(crate) struct LinkState {
    /// The local side of the link the session runs on now.
    pub(crate) local: String,
    /// The remote side of the link the session runs on now.
    pub(crate) remote: String,
    /// The peer, once the handshake is done.
    pub(crate) peer: Option<NodeId>,
    /// Whether the session is up now.
    pub(crate) connected: bool,
    /// Times the link came back (dialled again, or resumed).
    pub(crate) reconnects: u64,
    /// How the session closed, once it did.
    pub(crate) closed: Option<CloseReason>,
    /// Every round trip the probe measured.
    pub(crate) probe_rtt: RttHistogram,
    /// The round trips the session measured (lossy links), as last
    /// published.
    pub(crate) session_rtt: RttHistogram,
}

/// One link's state and counters, shared by its driver (the only writer)
/// and the node's link record.
#[derive(Debug)]
pub(crate) struct LinkShared {
    state: Mutex<LinkState>,
    /// Even when the counters are stable, odd while they are written.
    seq: AtomicU64,
    /// [`Stats::counters`], in its order.
    counters: [AtomicU64; Stats::COUNTERS],
    /// What the node layer measures itself (not a session counter).
    node: NodeMeasures,
    /// The casts and calls waiting for the driver (set by the driver).
    send_queue: OnceLock<Arc<SendQueue>>,
    /// The node's close counters, where this link's close is counted.
    closes: Arc<CloseCounts>,
}

/// A link's figures that the node layer measures, beside the session's
/// counters: each a single value, written by the link's driver alone.
#[derive(Debug, Default)]
struct NodeMeasures {
    /// The smoothed round trip of the driver's probe, in microseconds
    /// (`rtt_probe`); 0 before the first answer.
    rtt_us: AtomicU64,
    /// Times a local pipe writer had a frame ready and the peer's credit
    /// was short, so the frame waited for more credit.
    credit_stalls: AtomicU64,
    /// Bytes queued in the session ([`Session::queued_bytes`]), as last
    /// published.
    session_queued: AtomicU64,
}

impl LinkShared {
    /// A link between `local` and `remote`, not connected yet, that came
    /// back `reconnects` times before; its close is counted in `closes`.
    pub(crate) fn new(
        local: String,
        remote: String,
        reconnects: u64,
        closes: Arc<CloseCounts>,
    ) -> Self {
        Self {
            state: Mutex::new(LinkState {
                local,
                remote,
                peer: None,
                connected: false,
                reconnects,
                closed: None,
                probe_rtt: RttHistogram::default(),
                session_rtt: RttHistogram::default(),
            }),
            seq: AtomicU64::new(0),
            counters: Default::default(),
            node: NodeMeasures::default(),
            send_queue: OnceLock::new(),
            closes,
        }
    }

    /// The probe was answered: `rtt` has its sample and the smoothed
    /// round trip.
    pub(crate) fn set_rtt(&self, rtt: ProbeAnswer) {
        let us = u64::try_from(rtt.srtt.as_micros()).unwrap_or(u64::MAX);
        // At least 1 µs: 0 means "not measured yet".
        self.node.rtt_us.store(us.max(1), Ordering::Relaxed);
        // Once a second at most: a lock is cheap enough.
        self.lock().probe_rtt.record(rtt.sample);
    }

    /// The queue of casts and calls that wait for the link's driver.
    pub(crate) fn watch_send_queue(&self, queue: Arc<SendQueue>) {
        let _ = self.send_queue.set(queue);
    }

    /// Bytes waiting to be sent on the link: casts and calls waiting for
    /// the driver, and the replies and pipe data queued in the session.
    pub(crate) fn send_queue_bytes(&self) -> u64 {
        let waiting = self.send_queue.get().map_or(0, |q| q.queued() as u64);
        waiting + self.node.session_queued.load(Ordering::Relaxed)
    }

    /// The session closed for `reason` (counted for the node too).
    pub(crate) fn closed(&self, reason: &CloseReason) {
        let mut s = self.lock();
        self.closes.count(s.peer, reason);
        s.closed = Some(reason.clone());
    }

    /// The link's round trip as the probe measures it, in microseconds (0
    /// before the first answer).
    pub(crate) fn rtt_us(&self) -> u64 {
        self.node.rtt_us.load(Ordering::Relaxed)
    }

    /// A pipe frame waited for the peer's credit.
    pub(crate) fn credit_stalled(&self) {
        self.node.credit_stalls.fetch_add(1, Ordering::Relaxed);
    }

    /// Times a pipe frame waited for the peer's credit.
    pub(crate) fn credit_stalls(&self) -> u64 {
        self.node.credit_stalls.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now.
    pub(crate) fn state(&self) -> LinkState {
        self.lock().clone()
    }

    /// The handshake is done with `peer`.
    pub(crate) fn connected(&self, peer: NodeId) {
        let mut s = self.lock();
        s.peer = Some(peer);
        s.connected = true;
    }

    /// The session resumed on a new link: up again, and one more
    /// reconnect.
    pub(crate) fn resumed(&self) {
        let mut s = self.lock();
        s.connected = true;
        s.reconnects += 1;
    }

    /// The link is lost (its session may resume on another).
    pub(crate) fn lost(&self) {
        self.lock().connected = false;
    }

    /// The session moved to the link between `local` and `remote`.
    pub(crate) fn moved(&self, local: String, remote: String) {
        let mut s = self.lock();
        s.local = local;
        s.remote = remote;
    }

    /// Publish `stats` (single writer: the link's driver).
    pub(crate) fn update(&self, stats: &Stats) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (slot, (_, v)) in self.counters.iter().zip(stats.counters()) {
            slot.store(v, Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// The counters last published.
    pub(crate) fn stats(&self) -> Stats {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            let mut values = [0u64; Stats::COUNTERS];
            for (v, slot) in values.iter_mut().zip(&self.counters) {
                *v = slot.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if before.is_multiple_of(2) && self.seq.load(Ordering::Relaxed) == before {
                return Stats::from_counters(values);
            }
            std::hint::spin_loop();
        }
    }
}

/// Publishes a link's counters when bytes moved on the link.
///
/// Comparing two counters is cheaper than comparing them all, and the
/// others change with them: frames, payload, retransmissions, drops and
/// failures all come with bytes sent or received (payload queued is
/// counted once its packet is taken). A change that comes alone (a
/// detach, the end of the session) is published with [`force`].
///
/// [`force`]: Publisher::force
///
/// The bytes queued in the session are published on every turn (when
/// they changed): they grow without bytes moving while the link is
/// stalled.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    /// `bytes_sent` and `bytes_received` as last published.
    last: (u64, u64),
    /// [`Stats::rtt_samples`] as last published.
    rtt_samples: u64,
    /// [`Session::queued_bytes`] as last published.
    queued: u64,
}

impl Publisher {
    /// Publish `session`'s counters to `shared` if bytes moved (sent or
    /// received) since the last time, and its queued bytes if they
    /// changed.
    pub(crate) fn publish(&mut self, shared: &LinkShared, session: &Session) {
        let queued = session.queued_bytes() as u64;
        if queued != self.queued {
            shared.node.session_queued.store(queued, Ordering::Relaxed);
            self.queued = queued;
        }
        if session.bytes_moved() != self.last {
            self.force(shared, session);
        }
    }

    /// Publish `session`'s counters to `shared`.
    pub(crate) fn force(&mut self, shared: &LinkShared, session: &Session) {
        let stats = session.stats();
        shared.update(&stats);
        self.last = (stats.bytes_sent, stats.bytes_received);
        // One sample per round trip at most: the lock is taken that often.
        if stats.rtt_samples != self.rtt_samples {
            self.rtt_samples = stats.rtt_samples;
            shared.lock().session_rtt = session.rtt_histogram();
        }
        let queued = session.queued_bytes() as u64;
        shared.node.session_queued.store(queued, Ordering::Relaxed);
        self.queued = queued;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of [`Stats::counters`].
    fn values(s: &Stats) -> [u64; Stats::COUNTERS] {
        s.counters().map(|(_, v)| v)
    }

    #[test]
    fn counters_round_trip_field_by_field() {
        let a: [u64; Stats::COUNTERS] = std::array::from_fn(|i| i as u64 + 1);
        let s = Stats::from_counters(a);
        assert_eq!(values(&s), a);
        let shared = LinkShared::new("l".into(), "r".into(), 0, Default::default());
        shared.update(&s);
        assert_eq!(shared.stats(), s);
        assert_eq!(s.frames_sent, 1);
        assert_eq!(s.resumes, 19);
    }

    #[test]
    fn a_reader_never_sees_a_half_written_snapshot() {
        let shared = Arc::new(LinkShared::new(
            String::new(),
            String::new(),
            0,
            Default::default(),
        ));
        let writer = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for n in 1..=20_000u64 {
                    shared.update(&Stats::from_counters([n; Stats::COUNTERS]));
                }
            })
        };
        let mut last = 0;
        while !writer.is_finished() {
            let a = values(&shared.stats());
            assert!(a.iter().all(|&v| v == a[0]), "{a:?}");
            assert!(a[0] >= last, "went back from {last} to {}", a[0]);
            last = a[0];
        }
        writer.join().unwrap();
        assert_eq!(shared.stats().frames_sent, 20_000);
    }
}
