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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Waker;

use bytes::Bytes;
use futures::task::AtomicWaker;

/// Bytes counted for each cast on top of its payload: the mailbox
/// message, the caller, the server's name.
const CAST_OVERHEAD: usize = 128;

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
        self.inner.bytes.fetch_add(counted, Ordering::AcqRel);
        Bytes::from_owner(Guard {
            payload,
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
    use super::*;
    use crate::node::counting_waker::CountingWaker;

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
}
