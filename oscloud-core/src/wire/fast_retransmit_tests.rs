//! Fast retransmit on lossy links (`docs/PROTOCOL.md` §7): a receiver
//! acknowledges every packet past a gap at once, the sender re-sends the
//! missing one after [`DUP_ACK_THRESHOLD`] duplicate acknowledgements, well
//! before its retransmission timeout. Time is simulated: recovery is
//! measured in simulated time and in timer expiries, not wall-clock.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::harness::{Damage, Pair};
use super::*;

/// A connected pair on `kind` with the node's lossy defaults (1 s first
/// and smallest RTO) and the given send window.
fn pair(kind: FramingKind, window: u32) -> Pair {
    let mut c = Config::new(kind);
    c.initial_rto = Duration::from_secs(1);
    c.min_rto = c.initial_rto;
    c.max_rto = Duration::from_secs(4);
    c.send_window = window;
    c.keepalive = Duration::from_secs(5);
    c.idle_timeout = Duration::from_secs(60);
    let mut p = Pair::with_configs(c.clone(), c, Damage::none(), 7);
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    p.a_events.clear();
    p.b_events.clear();
    p
}

/// Send `n` casts from `a` with chunk `lost` (0-based, counted from the
/// first cast) lost on the way; run until `b` has them all. Returns the
/// simulated time it took and `a`'s counters.
fn send_with_loss(kind: FramingKind, n: usize, lost: &[u64], window: u32) -> (Duration, Stats) {
    let mut p = pair(kind, window);
    p.lose_from_a = lost.iter().map(|l| p.sent_from_a + l).collect();
    let start = p.now;
    let casts: Vec<Bytes> = (0..n)
        .map(|i| Bytes::from(format!("cast {i}").into_bytes()))
        .collect();
    for c in &casts {
        p.a.cast("sink", c.clone()).expect("cast");
    }
    let mut got = Vec::new();
    let done = p.run(10_000, |p| {
        for ev in p.b_events.drain(..) {
            match ev {
                Event::Cast { payload, .. } => got.push(payload),
                other => panic!("unexpected event {other:?}"),
            }
        }
        got.len() == n
    });
    assert!(
        done,
        "only {} of {n} casts arrived: {:?}",
        got.len(),
        p.a.stats()
    );
    // Exactly once, in order: nothing lost, doubled or reordered.
    assert_eq!(got, casts);
    (p.now - start, p.a.stats())
}

#[test]
fn a_single_loss_is_repaired_well_before_the_timeout() {
    for kind in [FramingKind::LossyStream, FramingKind::Datagram { mtu: 64 }] {
        // The third cast's frame is lost; five more follow it in the window.
        let (took, st) = send_with_loss(kind, 8, &[2], 8);
        assert_eq!(
            st.timeouts, 0,
            "{kind:?}: recovered without a timeout: {st:?}"
        );
        assert_eq!(st.fast_retransmits, 1, "{kind:?}: {st:?}");
        assert_eq!(
            st.retransmissions, 1,
            "{kind:?}: only the lost packet: {st:?}"
        );
        // The first RTO is 1 s; recovery costs a couple of ack delays.
        assert!(
            took < Duration::from_millis(100),
            "{kind:?}: recovery took {took:?} of simulated time"
        );
    }
}

#[test]
fn a_lost_tail_still_needs_the_timeout() {
    // The last packet has nothing behind it to cause duplicate acks: the
    // timeout repairs it. The contrast shows what fast retransmit saves.
    let (took, st) = send_with_loss(FramingKind::LossyStream, 8, &[7], 8);
    assert_eq!(st.fast_retransmits, 0, "{st:?}");
    assert_eq!(st.timeouts, 1, "{st:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[test]
fn two_losses_in_one_window_are_both_repaired_without_a_timeout() {
    // The second one is found by a partial acknowledgement (NewReno).
    let (took, st) = send_with_loss(FramingKind::LossyStream, 16, &[1, 4], 8);
    assert_eq!(st.timeouts, 0, "{st:?}");
    assert_eq!(st.fast_retransmits, 2, "{st:?}");
    assert_eq!(st.retransmissions, 2, "{st:?}");
    assert!(took < Duration::from_millis(100), "{took:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any single loss followed by at least [`DUP_ACK_THRESHOLD`] + 1
    /// packets, with a window that holds them all, is repaired by one fast
    /// retransmit, no timeout, in a small fraction of the RTO; everything
    /// arrives once, in order. (The first Ack past the gap may still
    /// acknowledge packets before it, so it is not always a duplicate.)
    #[test]
    fn any_single_loss_with_enough_behind_it(
        n in 6usize..40,
        at in 0usize..40,
        window in (DUP_ACK_THRESHOLD + 2)..16,
    ) {
        let at = at % (n - DUP_ACK_THRESHOLD as usize - 1);
        let (took, st) = send_with_loss(FramingKind::LossyStream, n, &[at as u64], window);
        prop_assert_eq!(st.timeouts, 0, "{:?}", st);
        prop_assert_eq!(st.fast_retransmits, 1, "{:?}", st);
        prop_assert!(took < Duration::from_millis(250), "{:?}", took);
    }

    /// Under random damage (loss, duplication, reordering, corruption,
    /// truncation) fast retransmit never breaks exactly-once in-order
    /// delivery, whatever the losses.
    #[test]
    fn random_losses_deliver_exactly_once_in_order(
        n in 1usize..60,
        lost in proptest::collection::vec(0u64..80, 0..12),
        window in 1u32..16,
    ) {
        send_with_loss(FramingKind::LossyStream, n, &lost, window);
    }
}
