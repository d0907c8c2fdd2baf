//! What a server endpoint counts: calls, casts, errors, call latency,
//! mailbox depth and restarts, for metrics exporters and `oscloud top`.
//!
//! A server framework keeps one [`ServerCounters`] per server (across its
//! restarts) and hands snapshots out through [`Endpoint::stats`]; readers
//! walk the registry and ask each local entry. Counting costs a few
//! relaxed atomic increments per message and two clock reads per call.
//!
//! [`Endpoint::stats`]: super::Endpoint::stats

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (inclusive, in nanoseconds: 25 µs to 5 s) of the call
/// latency histogram's buckets; a last bucket (`+Inf`) takes the rest.
pub const LATENCY_BUCKETS_NS: [u64; 16] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// The live counters of one server (written by its endpoint and its
/// mailbox loop, read by whoever asks for [`stats`](Self::stats)).
#[derive(Debug, Default)]
pub struct ServerCounters {
    calls: AtomicU64,
    casts: AtomicU64,
    errors: AtomicU64,
    starts: AtomicU64,
    latency_sum_ns: AtomicU64,
    /// Per bucket of [`LATENCY_BUCKETS_NS`] plus `+Inf` (not cumulative).
    latency: [AtomicU64; 17],
}

impl ServerCounters {
    /// One cast taken by the endpoint.
    pub fn cast(&self) {
        self.casts.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` casts taken by the endpoint at once.
    pub fn casts(&self, n: u64) {
        self.casts.fetch_add(n, Ordering::Relaxed);
    }

    /// One call answered after `elapsed` (from the endpoint taking it to
    /// the reply), successfully or not.
    pub fn call(&self, elapsed: Duration, ok: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.error();
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_ns.fetch_add(ns, Ordering::Relaxed);
        let i = LATENCY_BUCKETS_NS.partition_point(|&b| b < ns);
        if let Some(slot) = self.latency.get(i) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One cast that failed: not taken (the server stopped), undecodable,
    /// or its handler failed. (A call that failed is counted by
    /// [`call`](Self::call).)
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The server (re)started; every start after the first counts as a
    /// restart.
    pub fn started(&self) {
        self.starts.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, with `mailbox` messages waiting (the endpoint
    /// knows its mailbox: see [`Mailbox`]).
    pub fn stats(&self, mailbox: u64) -> ServerStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            calls: load(&self.calls),
            casts: load(&self.casts),
            errors: load(&self.errors),
            mailbox,
            restarts: load(&self.starts).saturating_sub(1),
            latency_sum: Duration::from_nanos(load(&self.latency_sum_ns)),
            latency_buckets: std::array::from_fn(|i| load(&self.latency[i])),
        }
    }
}

/// The depth of one mailbox (one per run of a server: what a stopped run
/// left in its mailbox is gone with it).
///
/// Senders raise one counter and the server the other, each on a cache
/// line of its own, so that counting does not move one line back and
/// forth between their threads.
#[derive(Debug, Default)]
pub struct Mailbox {
    put: Line,
    taken: Line,
}

/// A counter alone on its cache line (two lines: adjacent-line
/// prefetchers fetch pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicU64);

impl std::ops::Deref for Line {
    type Target = AtomicU64;

    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

impl Mailbox {
    /// One message put in.
    pub fn put(&self) {
        self.put.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` messages put in at once.
    pub fn put_many(&self, n: u64) {
        self.put.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` messages not put in after all.
    pub fn taken_many(&self, n: u64) {
        self.taken.fetch_add(n, Ordering::Relaxed);
    }

    /// One message taken out (or not put in after all).
    pub fn taken(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages waiting now.
    pub fn depth(&self) -> u64 {
        // Taken read first: one taken after this read was put before the
        // next, so the depth never goes below zero.
        let taken = self.taken.load(Ordering::Relaxed);
        self.put.load(Ordering::Relaxed).saturating_sub(taken)
    }
}

/// A snapshot of one server's [`ServerCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// Calls answered (replies and errors).
    pub calls: u64,
    /// Casts taken.
    pub casts: u64,
    /// Calls answered with an error (undecodable, server stopped or
    /// failed, not found) and casts that failed (see
    /// [`ServerCounters::error`]).
    pub errors: u64,
    /// Messages waiting in the mailbox (or, for a server without one,
    /// calls in progress).
    pub mailbox: u64,
    /// Times the server was restarted by its supervisor.
    pub restarts: u64,
    /// Total latency of the answered calls.
    pub latency_sum: Duration,
    /// Calls per latency bucket ([`LATENCY_BUCKETS_NS`], then `+Inf`), not
    /// cumulative.
    pub latency_buckets: [u64; 17],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_their_latency_bucket() {
        let c = ServerCounters::default();
        c.started();
        c.call(Duration::from_micros(20), true);
        c.call(Duration::from_micros(25), true);
        c.call(Duration::from_millis(3), false);
        c.call(Duration::from_secs(60), true);
        c.cast();
        let m = Mailbox::default();
        m.put();
        m.put();
        m.taken();
        c.started();
        let s = c.stats(m.depth());
        assert_eq!((s.calls, s.casts, s.errors), (4, 1, 1));
        assert_eq!((s.mailbox, s.restarts), (1, 1));
        assert_eq!(s.latency_buckets[0], 2);
        assert_eq!(s.latency_buckets[7], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(s.latency_buckets[16], 1);
        assert_eq!(s.latency_buckets.iter().sum::<u64>(), 4);
        assert!(s.latency_sum >= Duration::from_secs(60));
    }
}
