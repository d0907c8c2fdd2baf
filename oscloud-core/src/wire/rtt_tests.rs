//! The adaptive retransmission timeout on lossy links (RFC 6298,
//! `docs/PROTOCOL.md` §6.1), in simulated time over links with a one-way
//! delay and a line rate (harness): the RTO follows the measured
//! round-trip time, retransmitted packets give no sample (Karn), expiries
//! double it until a fresh sample. Counts and simulated durations only: no
//! wall-clock.

use std::time::Duration;

use bytes::Bytes;

use super::harness::{Damage, Pair};
use super::*;

const MS: Duration = Duration::from_millis(1);

/// A connected pair on a lossy stream with `config`, `delay` each way and
/// `bytes_per_sec` of line rate (0: unlimited), events drained.
fn pair_with(config: Config, delay: Duration, bytes_per_sec: u64) -> Pair {
    let mut p = Pair::with_configs(config.clone(), config, Damage::none(), 3);
    p.delay = delay;
    p.bytes_per_sec = bytes_per_sec;
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    p.a_events.clear();
    p.b_events.clear();
    p
}

fn config() -> Config {
    let mut c = Config::new(FramingKind::LossyStream);
    c.keepalive = Duration::from_secs(5);
    c.idle_timeout = Duration::from_secs(120);
    c.send_window = 8;
    c
}

/// Cast `n` messages of `size` bytes from `a` and run until `b` has them
/// all, exactly once and in order.
fn casts(p: &mut Pair, n: usize, size: usize) {
    let sent: Vec<Bytes> = (0..n)
        .map(|i| {
            let mut v = format!("cast {i} ").into_bytes();
            v.resize(size.max(v.len()), b'.');
            Bytes::from(v)
        })
        .collect();
    for c in &sent {
        p.a.cast("sink", c.clone()).expect("cast");
    }
    let mut got = Vec::new();
    let done = p.run(100_000, |p| {
        for ev in p.b_events.drain(..) {
            if let Event::Cast { payload, .. } = ev {
                got.push(payload);
            }
        }
        got.len() >= n && p.a.unacked() == 0
    });
    assert!(
        done,
        "{} of {n} casts arrived: {:?}",
        got.len(),
        p.a.stats()
    );
    assert_eq!(got, sent, "exactly once, in order");
}

#[test]
fn a_steady_delay_brings_the_rto_near_the_round_trip_time() {
    // 40 ms each way: a round trip of 80 ms, plus the receiver's 10 ms
    // ack delay (nothing flows back to carry the ack sooner).
    let mut p = pair_with(config(), 40 * MS, 0);
    assert_eq!(p.a.rto(), 250 * MS, "the first RTO before any sample");
    casts(&mut p, 200, 100);
    let st = p.a.stats();
    assert!(st.rtt_samples >= 20, "{st:?}");
    let srtt = p.a.srtt().expect("sampled");
    assert!(srtt >= 80 * MS && srtt <= 91 * MS, "{srtt:?}");
    let rto = p.a.rto();
    // Above the round trip, far below the fixed 250 ms it replaces.
    assert!(rto > srtt && rto > 90 * MS, "{rto:?}");
    assert!(rto < 130 * MS, "{rto:?}");
    assert_eq!((st.retransmissions, st.timeouts), (0, 0), "{st:?}");
    assert_eq!(st.srtt_us, srtt.as_micros() as u64);
    assert_eq!(st.rto_us, rto.as_micros() as u64);
}

#[test]
fn a_lost_packet_on_a_fast_link_is_repaired_within_the_adapted_rto() {
    // The last packet of a burst has nothing behind it for fast
    // retransmit: the timeout repairs it, and after some samples that
    // takes about a round trip, not the first RTO of 250 ms.
    let mut p = pair_with(config(), 5 * MS, 0);
    casts(&mut p, 50, 100);
    let rto = p.a.rto();
    assert!(rto < 50 * MS, "{rto:?}");
    p.lose_from_a = vec![p.sent_from_a];
    let before = p.a.stats();
    let start = p.now;
    casts(&mut p, 1, 100);
    let took = p.now - start;
    let st = p.a.stats();
    assert_eq!(st.timeouts - before.timeouts, 1, "{st:?}");
    assert!(took < 100 * MS, "repaired after {took:?} of simulated time");
}

/// `n` bulk casts from `a` over a 115 200-baud line (11 520 bytes/s each
/// way); `b` answers every tenth with a small cast (as a pipe reader gives
/// credit back), whose acknowledgement then rides behind `a`'s queued bulk
/// on the line. Returns `b`'s counters after the first `warm` casts arrived
/// and at the end.
fn bulk_with_answers(config: Config, n: usize, warm: usize) -> (Stats, Stats) {
    let mut p = pair_with(config, MS, 11_520);
    for i in 0..n {
        let mut v = format!("bulk {i} ").into_bytes();
        v.resize(1800, b'.');
        p.a.cast("sink", Bytes::from(v)).expect("cast");
    }
    let (mut got, mut answers, mut warm_stats) = (0, 0, None);
    let done = p.run(200_000, |p| {
        for ev in p.b_events.drain(..) {
            if let Event::Cast { payload, .. } = ev {
                assert!(payload.starts_with(format!("bulk {got} ").as_bytes()));
                got += 1;
                if got % 10 == 0 {
                    p.b.cast("credit", Bytes::from_static(b"credit"))
                        .expect("answer");
                }
            }
        }
        for ev in p.a_events.drain(..) {
            if matches!(ev, Event::Cast { .. }) {
                answers += 1;
            }
        }
        if got >= warm && warm_stats.is_none() {
            warm_stats = Some(p.b.stats());
        }
        got >= n && answers >= n / 10
    });
    assert!(done, "{got} of {n} arrived, {answers} answers");
    (warm_stats.expect("warmed up"), p.b.stats())
}

fn serial_config() -> Config {
    // The node's lossy settings: 2 KiB packets, 8 in flight, first RTO 1 s.
    let mut c = config();
    c.max_frame = 2048;
    c.send_window = 8;
    c.initial_rto = Duration::from_secs(1);
    c
}

#[test]
fn acks_queued_behind_a_slow_line_cause_no_spurious_retransmission_once_measured() {
    // 115 200 baud: one 2 KiB packet takes about 0.17 s of line time, a
    // window of them 1.4 s. B's answers are acknowledged by A's packets,
    // which wait behind up to a window of bulk: B's round trip is about
    // 1.26 s, longer than a fixed 1 s RTO (B has one answer in flight at a
    // time, so no other acknowledgement restarts its timer).
    let (warm, end) = bulk_with_answers(serial_config(), 160, 40);
    let resent = end.retransmissions - warm.retransmissions;
    assert_eq!(resent, 0, "after warm-up: {warm:?} → {end:?}");
    assert!(end.srtt_us > 500_000, "{end:?}");
    assert!(end.rto_us > end.srtt_us, "{end:?}");

    // The same with the RTO fixed at 1 s (the behaviour before): B keeps
    // sending packets again that were merely waiting for their ack.
    let mut fixed = serial_config();
    fixed.min_rto = fixed.initial_rto;
    fixed.max_rto = fixed.initial_rto;
    let (warm, end) = bulk_with_answers(fixed, 160, 40);
    assert!(
        end.retransmissions > warm.retransmissions,
        "a fixed 1 s RTO: {warm:?} → {end:?}"
    );
}

#[test]
fn a_slow_link_stops_spurious_retransmissions_after_the_first_samples() {
    // 600 ms each way: every packet outlives the first RTO of 250 ms.
    let mut p = pair_with(config(), 600 * MS, 0);
    casts(&mut p, 40, 100);
    let first = p.a.stats();
    assert!(first.timeouts > 0, "the first packets: {first:?}");
    assert!(first.rtt_samples >= 2, "{first:?}");
    let rto = p.a.rto();
    assert!(rto > 1200 * MS, "{rto:?}");
    casts(&mut p, 100, 100);
    let st = p.a.stats();
    assert_eq!(
        (st.timeouts, st.retransmissions),
        (first.timeouts, first.retransmissions),
        "none after the first samples: {st:?}"
    );
    let srtt = p.a.srtt().expect("sampled");
    assert!(srtt >= 1200 * MS && srtt <= 1211 * MS, "{srtt:?}");
}

#[test]
fn an_ack_after_a_retransmission_gives_no_sample() {
    // 200 ms each way: the first RTO (250 ms) expires before the ack of
    // the original (410 ms) arrives. That ack is taken for either copy, so
    // it is no sample (Karn): timing it from the copy would give 160 ms.
    let mut p = pair_with(config(), 200 * MS, 0);
    casts(&mut p, 1, 10);
    let st = p.a.stats();
    assert_eq!(st.timeouts, 1, "{st:?}");
    assert_eq!(st.rtt_samples, 0, "{st:?}");
    assert_eq!(p.a.srtt(), None);
    // The backed-off RTO stays until a fresh sample...
    assert_eq!(p.a.rto(), 500 * MS);
    // ...which the next packet, sent once, gives: 410 ms, RTO 3 times it
    // (the first sample's variation is half the sample).
    casts(&mut p, 1, 10);
    let st = p.a.stats();
    assert_eq!((st.timeouts, st.rtt_samples), (1, 1), "{st:?}");
    assert_eq!(p.a.srtt(), Some(410 * MS));
    assert_eq!(p.a.rto(), 1230 * MS);
}

#[test]
fn a_fast_retransmit_voids_the_timed_packet() {
    // The timed packet (the first of the burst) is the lost one: repaired
    // by a fast retransmit, it gives no sample; the next packet sent once
    // does.
    let mut p = pair_with(config(), 10 * MS, 0);
    p.lose_from_a = vec![p.sent_from_a];
    casts(&mut p, 8, 10);
    let st = p.a.stats();
    assert_eq!((st.fast_retransmits, st.timeouts), (1, 0), "{st:?}");
    assert_eq!(st.rtt_samples, 0, "{st:?}");
    casts(&mut p, 1, 10);
    assert_eq!(p.a.stats().rtt_samples, 1);
}

#[test]
fn expiries_double_the_rto_and_the_next_sample_resets_it() {
    let mut p = pair_with(config(), 20 * MS, 0);
    casts(&mut p, 30, 10);
    let measured = p.a.rto();
    assert!(measured < 100 * MS, "{measured:?}");
    // Cut a → b: every expiry doubles the RTO, up to max_rto.
    p.a_to_b = false;
    p.a.cast("sink", Bytes::from_static(b"lost for a while"))
        .expect("cast");
    p.drive();
    let mut seen = vec![p.a.rto()];
    while seen.len() < 12 {
        assert!(p.step_time());
        p.drive();
        if p.a.rto() != *seen.last().unwrap_or(&Duration::ZERO) {
            seen.push(p.a.rto());
        }
        if p.a.rto() == p.a.config().max_rto {
            break;
        }
    }
    for w in seen.windows(2) {
        assert!(w[1] == w[0] * 2 || w[1] == p.a.config().max_rto, "{seen:?}");
    }
    assert_eq!(p.a.rto(), Duration::from_secs(4));
    // Back: the retransmission's ack is no sample, the backoff stays...
    p.a_to_b = true;
    assert!(p.run(1000, |p| !p.b_events.is_empty() && p.a.unacked() == 0));
    p.b_events.clear();
    assert_eq!(p.a.rto(), Duration::from_secs(4));
    // ...until a packet sent once is acknowledged.
    casts(&mut p, 1, 10);
    assert!(p.a.rto() < 200 * MS, "{:?}", p.a.rto());
}

#[test]
fn reliable_streams_measure_nothing_and_time_nothing() {
    let mut p = Pair::connected(FramingKind::ReliableStream);
    p.delay = 30 * MS;
    casts(&mut p, 20, 100);
    let st = p.a.stats();
    assert_eq!((st.rtt_samples, st.srtt_us, st.rto_us), (0, 0, 0), "{st:?}");
    assert_eq!((st.retransmissions, st.timeouts), (0, 0), "{st:?}");
}

#[test]
fn min_rto_is_checked() {
    let mut c = config();
    c.min_rto = Duration::ZERO;
    let node = crate::NodeId::from_bytes([1; 16]);
    let now = std::time::Instant::now();
    assert!(Session::new(c.clone(), LocalInfo::new(node), now).is_err());
    c.min_rto = c.initial_rto + MS;
    assert!(Session::new(c, LocalInfo::new(node), now).is_err());
}
