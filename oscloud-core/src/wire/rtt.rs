//! Round-trip time estimation and the retransmission timeout (RTO) of
//! lossy links, after RFC 6298: a smoothed RTT (SRTT) and its variation
//! (RTTVAR) from one timed packet at a time, RTO = SRTT + max(G,
//! 4·RTTVAR) clamped to `[min_rto, max_rto]`, doubled on expiries and kept
//! doubled until the path proves itself again. What is sampled and when
//! the backoff ends (Karn's rule: no sample from a packet that was, or may
//! have been, sent again) is the session's part. `docs/PROTOCOL.md` §6.1.

use std::time::Duration;

use super::Config;
use crate::endpoint::LATENCY_BUCKETS_NS;

/// The clock granularity term G of RFC 6298: the RTO stays at least this
/// far above the smoothed RTT, however steady the samples. Drivers wake on
/// a millisecond timer, but a loaded host adds scheduling delay on both
/// ends, and the peer may hold an acknowledgement for its `ack_delay`
/// (10 ms by default): 10 ms covers both.
pub const RTO_GRANULARITY: Duration = Duration::from_millis(10);

/// The smallest RTO a session uses by default ([`Config::min_rto`]).
pub const DEFAULT_MIN_RTO: Duration = Duration::from_millis(20);

/// Most doublings of the RTO counted (the cap is `max_rto` anyway).
const MAX_BACKOFF: u32 = 32;

/// SRTT, RTTVAR and the backed-off RTO of one session on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RttEstimator {
    min: Duration,
    max: Duration,
    /// `None` until the first sample.
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The RTO before backoff: `initial` until the first sample, then
    /// SRTT + max(G, 4·RTTVAR), clamped.
    base: Duration,
    /// Expiries since the last sample (or the last [`clear_backoff`]).
    ///
    /// [`clear_backoff`]: Self::clear_backoff
    backoff: u32,
    samples: u64,
    /// Every sample, bucketed.
    histogram: RttHistogram,
}

/// Round-trip times counted per bucket: the bounds of
/// [`LATENCY_BUCKETS_NS`] (25 µs to 5 s), then `+Inf`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RttHistogram {
    /// Samples per bucket ([`LATENCY_BUCKETS_NS`], then `+Inf`), not
    /// cumulative.
    pub buckets: [u64; LATENCY_BUCKETS_NS.len() + 1],
    /// The samples' sum, in microseconds.
    pub sum_us: u64,
}

impl RttHistogram {
    /// The bucket a round trip of `rtt` falls in.
    pub fn bucket(rtt: Duration) -> usize {
        let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        LATENCY_BUCKETS_NS.partition_point(|&b| b < ns)
    }

    /// Count one round trip of `rtt`.
    pub fn record(&mut self, rtt: Duration) {
        if let Some(slot) = self.buckets.get_mut(Self::bucket(rtt)) {
            *slot += 1;
        }
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Samples counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Both histograms' samples.
    pub fn merged(mut self, other: &Self) -> Self {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self
    }
}

impl RttEstimator {
    /// A fresh estimate for a link with `config`'s timers: RTO =
    /// `initial_rto`, no samples.
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            min: config.min_rto,
            max: config.max_rto,
            srtt: None,
            rttvar: Duration::ZERO,
            base: config.initial_rto.clamp(config.min_rto, config.max_rto),
            backoff: 0,
            samples: 0,
            histogram: RttHistogram::default(),
        }
    }

    /// The retransmission timeout now (backoff included).
    pub(crate) fn rto(&self) -> Duration {
        let mut rto = self.base;
        for _ in 0..self.backoff {
            if rto >= self.max {
                break;
            }
            rto = rto.saturating_mul(2);
        }
        rto.min(self.max)
    }

    /// The timer expired: double the RTO (RFC 6298 5.5), up to `max_rto`.
    pub(crate) fn on_timeout(&mut self) {
        if self.rto() < self.max {
            self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
        }
    }

    /// Whether expiries doubled the RTO since the last sample.
    pub(crate) fn is_backed_off(&self) -> bool {
        self.backoff > 0
    }

    /// Forget the backoff without a sample (the handshake ended: Hellos
    /// that went unanswered say more about the peer's start than about
    /// the path).
    pub(crate) fn clear_backoff(&mut self) {
        self.backoff = 0;
    }

    /// A round-trip time measured on a packet sent once (RFC 6298 2.2,
    /// 2.3); ends any backoff.
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.base = (srtt + RTO_GRANULARITY.max(self.rttvar * 4)).clamp(self.min, self.max);
        self.backoff = 0;
        self.samples += 1;
        self.histogram.record(rtt);
    }

    /// Every sample taken, bucketed.
    pub(crate) fn histogram(&self) -> &RttHistogram {
        &self.histogram
    }

    /// The smoothed round-trip time, once sampled.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Samples taken.
    pub(crate) fn samples(&self) -> u64 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FramingKind;

    fn est(initial: u64, min: u64, max: u64) -> RttEstimator {
        let mut c = Config::new(FramingKind::LossyStream);
        c.initial_rto = Duration::from_millis(initial);
        c.min_rto = Duration::from_millis(min);
        c.max_rto = Duration::from_millis(max);
        RttEstimator::new(&c)
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn samples_land_in_their_bucket_and_sum() {
        let mut e = est(100, 20, 60_000);
        let ms = Duration::from_millis;
        for rtt in [
            Duration::from_micros(20),
            ms(3),
            ms(3),
            Duration::from_secs(9),
        ] {
            e.sample(rtt);
        }
        let h = *e.histogram();
        assert_eq!(h.count(), 4);
        assert_eq!(h.buckets[0], 1, "20 µs: the first bucket (≤ 25 µs)");
        assert_eq!(h.buckets[RttHistogram::bucket(ms(3))], 2);
        assert_eq!(RttHistogram::bucket(ms(3)), 7, "≤ 5 ms");
        assert_eq!(h.buckets[LATENCY_BUCKETS_NS.len()], 1, "+Inf");
        assert_eq!(h.sum_us, 20 + 6_000 + 9_000_000);
        assert_eq!(h.merged(&h).count(), 8);
    }

    #[test]
    fn the_first_sample_gives_three_times_the_rtt() {
        let mut e = est(250, 20, 4000);
        assert_eq!(e.rto(), 250 * MS);
        e.sample(100 * MS);
        // SRTT 100, RTTVAR 50: 100 + 4·50.
        assert_eq!(e.srtt(), Some(100 * MS));
        assert_eq!(e.rto(), 300 * MS);
        assert_eq!(e.samples(), 1);
    }

    #[test]
    fn steady_samples_converge_to_srtt_plus_the_granularity() {
        let mut e = est(250, 20, 4000);
        for _ in 0..100 {
            e.sample(80 * MS);
        }
        assert_eq!(e.srtt(), Some(80 * MS));
        let rto = e.rto();
        assert!(rto >= 80 * MS + RTO_GRANULARITY, "{rto:?}");
        assert!(rto <= 82 * MS + RTO_GRANULARITY, "{rto:?}");
    }

    #[test]
    fn variation_widens_the_margin() {
        let mut e = est(250, 20, 4000);
        for i in 0..100 {
            e.sample(if i % 2 == 0 { 60 * MS } else { 100 * MS });
        }
        let srtt = e.srtt().unwrap();
        assert!(srtt > 70 * MS && srtt < 90 * MS, "{srtt:?}");
        // RTTVAR settles near the 20 ms deviation: RTO near SRTT + 80 ms.
        assert!(e.rto() > srtt + 60 * MS, "{:?}", e.rto());
    }

    #[test]
    fn the_rto_is_clamped_both_ways() {
        let mut e = est(250, 20, 4000);
        for _ in 0..50 {
            e.sample(MS);
        }
        assert_eq!(e.rto(), 20 * MS);
        let mut e = est(250, 20, 4000);
        e.sample(3000 * MS);
        assert_eq!(e.rto(), 4000 * MS);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_a_sample_ends_it() {
        let mut e = est(250, 20, 4000);
        e.sample(100 * MS);
        assert_eq!(e.rto(), 300 * MS);
        e.on_timeout();
        assert_eq!(e.rto(), 600 * MS);
        e.on_timeout();
        assert_eq!(e.rto(), 1200 * MS);
        for _ in 0..100 {
            e.on_timeout();
        }
        assert_eq!(e.rto(), 4000 * MS);
        // Kept until a fresh sample (Karn): then recomputed from the
        // estimate, which the sample moved.
        e.sample(100 * MS);
        assert_eq!(e.srtt(), Some(100 * MS));
        assert!(e.rto() < 300 * MS, "{:?}", e.rto());
        e.on_timeout();
        e.clear_backoff();
        assert!(e.rto() < 300 * MS);
    }
}
