//! The peer's casts that local servers have not handled yet, counted, so
//! that a link's driver stops reading while they are too many
//! ([`NodeConfig::link_budget`](super::NodeConfig::link_budget)).
//!
//! A cast goes into a server's mailbox and the driver never hears of it
//! again, so its payload carries a guard: the payload's bytes (and a
//! little for the message around them) count until the last copy of the
//! payload is dropped, which is when the server has decoded it. The
//! guard that brings the count back under the limit wakes the driver if
//! it waits for that.
//!
//! The small casts of one batch for one server ([`HeldCasts::hold_batch`])
//! share one guard: their payloads are copied side by side into one block,
//! each cast's payload is a slice of it, and the whole batch counts until
//! the last copy of any of its payloads is dropped (when the server has
//! decoded them all). Two allocations per batch (the block and its
//! guard) instead of one per cast; the copy is what lets the receive
//! buffer they came in be reused while the server still holds them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Waker;

use bytes::Bytes;
use futures::task::AtomicWaker;

/// Bytes counted for each cast on top of its payload: the mailbox
/// message, the caller, the server's name.
const CAST_OVERHEAD: usize = 128;

/// Payloads up to this long share their batch's guard (copied into its
/// block); a longer one keeps a guard of its own, which costs less than
/// copying it.
const SHARED_MAX: usize = 512;

/// One link's count of casts held by local servers.
#[derive(Debug, Clone)]
pub(crate) struct HeldCasts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bytes: AtomicUsize,
    limit: usize,
    /// The driver waits for the count to drop to the limit.
    waiting: AtomicBool,
    waker: AtomicWaker,
}

/// A payload's share of the count, given back when it is dropped.
struct Guard {
    payload: Bytes,
    counted: usize,
    inner: Arc<Inner>,
}

impl AsRef<[u8]> for Guard {
    fn as_ref(&self) -> &[u8] {
        &self.payload
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let before = self.inner.bytes.fetch_sub(self.counted, Ordering::AcqRel);
        if before.saturating_sub(self.counted) <= self.inner.limit
            && self.inner.waiting.swap(false, Ordering::AcqRel)
        {
            self.inner.waker.wake();
        }
    }
}

impl HeldCasts {
    /// A count that is over once above `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                bytes: AtomicUsize::new(0),
                limit,
                waiting: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            }),
        }
    }

    /// `payload`, counted until its last copy is dropped (the same bytes,
    /// not copied).
    pub(crate) fn hold(&self, payload: Bytes) -> Bytes {
        let counted = payload.len() + CAST_OVERHEAD;
        self.hold_counted(payload, counted)
    }

    /// `payloads`, the casts of one batch for one server, counted until
    /// the server is done with them: those of at most [`SHARED_MAX`]
    /// bytes (not empty) copied into one block counted as a whole until
    /// the last copy of any of them is dropped, the others each held as
    /// [`hold`](Self::hold) holds it. In place, in the same order.
    pub(crate) fn hold_batch(&self, payloads: &mut [Bytes]) {
        let shared = |p: &Bytes| (1..=SHARED_MAX).contains(&p.len());
        let (n, len) = payloads
            .iter()
            .filter(|p| shared(p))
            .fold((0, 0), |(n, len), p| (n + 1, len + p.len()));
        if n < 2 {
            // Nothing to share.
            for p in payloads.iter_mut() {
                *p = self.hold(std::mem::take(p));
            }
            return;
        }
        let mut block = Vec::with_capacity(len);
        for p in payloads.iter().filter(|p| shared(p)) {
            block.extend_from_slice(p);
        }
        let block = self.hold_counted(Bytes::from(block), len + n * CAST_OVERHEAD);
        let mut at = 0;
        for p in payloads.iter_mut() {
            *p = if shared(p) {
                let end = at + p.len();
                let copy = block.slice(at..end);
                at = end;
                copy
            } else {
                self.hold(std::mem::take(p))
            };
        }
    }

    /// `bytes`, counted as `counted` until its last copy is dropped.
    fn hold_counted(&self, bytes: Bytes, counted: usize) -> Bytes {
        self.inner.bytes.fetch_add(counted, Ordering::AcqRel);
        Bytes::from_owner(Guard {
            payload: bytes,
            counted,
            inner: self.inner.clone(),
        })
    }

    /// Bytes counted now.
    pub(crate) fn bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::Acquire)
    }

    /// Whether the count is above the limit; if it is, `waker` is woken
    /// once it is no longer.
    pub(crate) fn over(&self, waker: &Waker) -> bool {
        if self.bytes() <= self.inner.limit {
            return false;
        }
        self.inner.waker.register(waker);
        self.inner.waiting.store(true, Ordering::Release);
        // A guard dropped between the first look and `waiting` being set
        // did not wake anyone: look again.
        if self.bytes() <= self.inner.limit {
            self.inner.waiting.store(false, Ordering::Release);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::node::counting_waker::CountingWaker;

    proptest! {
        /// Whatever the payloads' lengths, and whichever of them a server
        /// keeps: the batch is the same casts in order, nothing a server
        /// still holds goes uncounted, and once nothing is held nothing
        /// is counted.
        #[test]
        fn a_held_batch_never_counts_less_than_what_is_kept(
            lens in prop::collection::vec(0..2 * SHARED_MAX, 1..40),
            kept in prop::collection::vec(any::<bool>(), 40),
        ) {
            let held = HeldCasts::new(usize::MAX);
            let total = lens.iter().sum::<usize>();
            let buffer = Bytes::from((0..=255u8).cycle().take(total).collect::<Vec<_>>());
            let mut at = 0;
            let sent: Vec<Bytes> = lens
                .iter()
                .map(|&len| {
                    at += len;
                    buffer.slice(at - len..at)
                })
                .collect();
            let mut batch = sent.clone();
            held.hold_batch(&mut batch);
            prop_assert_eq!(&batch, &sent);
            let all: usize = lens.iter().map(|len| len + CAST_OVERHEAD).sum();
            prop_assert_eq!(held.bytes(), all);
            let kept: Vec<Bytes> = batch
                .into_iter()
                .zip(&kept)
                .filter(|(_, keep)| **keep)
                .map(|(p, _)| p)
                .collect();
            let least: usize = kept.iter().map(|p| p.len() + CAST_OVERHEAD).sum();
            prop_assert!(held.bytes() >= least);
            drop(kept);
            prop_assert_eq!(held.bytes(), 0);
        }
    }

    #[test]
    fn held_payloads_count_until_dropped_and_the_last_one_over_wakes() {
        let count = CountingWaker::new();
        let waker = count.waker();
        let held = HeldCasts::new(1000);
        let a = held.hold(Bytes::from(vec![1u8; 600]));
        assert_eq!(&a[..], &[1u8; 600][..]);
        assert!(!held.over(&waker));
        let b = held.hold(Bytes::from(vec![2u8; 600]));
        // A copy of a payload keeps it counted.
        let b2 = b.slice(10..20);
        assert!(held.over(&waker));
        drop(b);
        assert_eq!(count.count(), 0);
        assert!(held.over(&waker));
        drop(b2);
        assert_eq!(
            count.count(),
            1,
            "back under the limit: the driver is woken"
        );
        assert!(!held.over(&waker));
        drop(a);
        assert_eq!(held.bytes(), 0);
        assert_eq!(count.count(), 1, "nobody waited: no wake-up");
    }

    #[test]
    fn a_batch_counts_until_the_last_copy_of_any_of_its_casts_is_dropped() {
        let count = CountingWaker::new();
        let waker = count.waker();
        let held = HeldCasts::new(700);
        // What the casts came in: a receive buffer.
        let buffer = Bytes::from((0..=255u8).cycle().take(4096).collect::<Vec<_>>());
        let big = SHARED_MAX + 1;
        let mut batch = vec![
            buffer.slice(0..100),
            buffer.slice(100..100),
            buffer.slice(200..200 + big),
            buffer.slice(1000..1300),
            buffer.slice(2000..2001),
        ];
        let sent = batch.clone();
        held.hold_batch(&mut batch);
        assert_eq!(batch, sent, "the same casts, in order");
        assert_eq!(
            held.bytes(),
            100 + big + 300 + 1 + 5 * CAST_OVERHEAD,
            "every cast counted"
        );
        drop(sent);
        assert!(held.over(&waker));
        // The large payload has a guard of its own.
        let big_one = batch.remove(2);
        drop(big_one);
        assert_eq!(held.bytes(), 100 + 300 + 1 + 4 * CAST_OVERHEAD);
        // A copy of one small cast keeps the whole batch counted.
        let kept = batch[2].slice(5..6);
        batch.clear();
        assert_eq!(held.bytes(), 100 + 300 + 1 + 3 * CAST_OVERHEAD);
        assert_eq!(count.count(), 0);
        assert!(held.over(&waker));
        drop(kept);
        assert_eq!(held.bytes(), 0);
        assert_eq!(
            count.count(),
            1,
            "back under the limit: the driver is woken"
        );
        assert!(buffer.is_unique(), "nothing held keeps the receive buffer");
    }

    #[test]
    fn the_small_casts_of_a_batch_share_one_block() {
        let held = HeldCasts::new(1 << 20);
        let buffer = Bytes::from(vec![7u8; 1024]);
        let mut batch: Vec<Bytes> = (0..4)
            .map(|i| buffer.slice(i * 200..i * 200 + 64))
            .collect();
        held.hold_batch(&mut batch);
        // Side by side in one block, apart from the buffer they came in.
        for pair in batch.windows(2) {
            assert_eq!(pair[0].as_ptr().wrapping_add(64), pair[1].as_ptr());
        }
        assert!(buffer.is_unique());
        drop(batch);
        assert_eq!(held.bytes(), 0);
    }
}
