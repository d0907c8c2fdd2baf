//! The peer's calls to local servers while they run: futures polled by
//! the link's driver, each woken on its own.
//!
//! This is `futures::stream::FuturesUnordered` without its yield. Once
//! FuturesUnordered has polled every future it holds, it wakes its own task
//! and returns `Pending`, to be fair to other tasks. On a multi-threaded
//! tokio runtime a task that wakes itself goes to the back of the run queue
//! and a sibling worker is woken to take it: a futex wake-up of another
//! thread for every call the link served (`sched_waking` traced at one per
//! call, two processes, 2 workers each). The driver already shares its
//! turns between its sources in one `select!`, so it only yields here when
//! futures are still ready after each has been polled once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures::future::BoxFuture;
use futures::task::AtomicWaker;

use crate::id_hash::IdMap;

/// A set of futures run to completion, yielding their outputs as they
/// finish.
pub(crate) struct Serving<T> {
    /// The futures not finished yet, with the waker each is polled with.
    futures: IdMap<u64, (BoxFuture<'static, T>, Waker)>,
    next_id: u64,
    /// The ids woken since the last poll, and the task polling this set.
    woken: Arc<Woken>,
    /// Woken ids taken from `woken` and not polled yet.
    due: VecDeque<u64>,
}

#[derive(Default)]
struct Woken {
    ids: Mutex<Vec<u64>>,
    task: AtomicWaker,
}

impl Woken {
    fn take(&self, into: &mut VecDeque<u64>) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        into.extend(ids.drain(..));
    }
}

/// The waker of one future in the set: marks it due, wakes the task.
struct FutureWaker {
    id: u64,
    woken: Arc<Woken>,
}

impl Wake for FutureWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.id);
        self.woken.task.wake();
    }
}

impl<T> Serving<T> {
    pub(crate) fn new() -> Self {
        Self {
            futures: IdMap::default(),
            next_id: 0,
            woken: Arc::default(),
            due: VecDeque::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }

    /// How many futures are not finished yet.
    pub(crate) fn len(&self) -> usize {
        self.futures.len()
    }

    /// Add a future; it is polled on the next [`Self::next`].
    pub(crate) fn push(&mut self, future: BoxFuture<'static, T>) {
        let id = self.next_id;
        self.next_id += 1;
        let waker = Waker::from(Arc::new(FutureWaker {
            id,
            woken: self.woken.clone(),
        }));
        self.futures.insert(id, (future, waker));
        self.due.push_back(id);
    }

    /// Whether futures wait for a poll: added, or woken before the
    /// last poll got to them.
    pub(crate) fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    /// The output of the next future to finish; pending while none has
    /// (forever while the set is empty), and `cx` is woken when one may
    /// have.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        self.woken.task.register(cx.waker());
        // Each future is polled at most once per call, so that one that
        // keeps waking itself cannot hold the driver here.
        let mut budget = self.futures.len();
        loop {
            if self.due.is_empty() {
                self.woken.take(&mut self.due);
            }
            let Some(id) = self.due.pop_front() else {
                return Poll::Pending;
            };
            // A wake-up that came after its future finished finds nothing.
            let Some((future, waker)) = self.futures.get_mut(&id) else {
                continue;
            };
            if budget == 0 {
                self.due.push_front(id);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            if let Poll::Ready(out) = future.as_mut().poll(&mut Context::from_waker(waker)) {
                self.futures.remove(&id);
                return Poll::Ready(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use tokio::sync::oneshot;

    use super::*;
    use crate::node::counting_waker::CountingWaker;

    fn poll(set: &mut Serving<u32>, count: &Arc<CountingWaker>) -> Poll<u32> {
        set.poll_next(&mut Context::from_waker(&count.waker()))
    }

    #[test]
    fn a_pending_future_does_not_wake_the_task_that_polls_the_set() {
        let count = CountingWaker::new();
        let mut set = Serving::new();
        let (tx, rx) = oneshot::channel::<u32>();
        set.push(rx.map(|r| r.unwrap_or(0)).boxed());
        assert!(poll(&mut set, &count).is_pending());
        // FuturesUnordered would have woken the task here.
        assert_eq!(count.count(), 0);
        tx.send(7).unwrap();
        assert_eq!(count.count(), 1);
        assert_eq!(poll(&mut set, &count), Poll::Ready(7));
        assert!(set.is_empty());
        assert!(poll(&mut set, &count).is_pending());
    }

    #[test]
    fn outputs_come_in_the_order_their_futures_finish() {
        let count = CountingWaker::new();
        let mut set = Serving::new();
        let mut senders = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = oneshot::channel::<u32>();
            set.push(rx.map(|r| r.unwrap_or(0)).boxed());
            senders.push(tx);
        }
        set.push(async { 9 }.boxed());
        assert_eq!(poll(&mut set, &count), Poll::Ready(9));
        assert!(poll(&mut set, &count).is_pending());
        let mut senders = senders.into_iter();
        let (a, b, c) = (senders.next(), senders.next(), senders.next());
        c.unwrap().send(3).unwrap();
        a.unwrap().send(1).unwrap();
        assert_eq!(poll(&mut set, &count), Poll::Ready(3));
        assert_eq!(poll(&mut set, &count), Poll::Ready(1));
        assert!(poll(&mut set, &count).is_pending());
        drop(b);
        assert_eq!(poll(&mut set, &count), Poll::Ready(0));
        assert!(set.is_empty());
    }

    #[test]
    fn a_future_that_keeps_waking_itself_lets_the_others_through() {
        let count = CountingWaker::new();
        let mut set = Serving::new();
        // Wakes itself on every poll and never finishes.
        set.push(
            std::future::poll_fn(|cx: &mut Context<'_>| {
                cx.waker().wake_by_ref();
                Poll::<u32>::Pending
            })
            .boxed(),
        );
        let (tx, rx) = oneshot::channel::<u32>();
        set.push(rx.map(|r| r.unwrap_or(0)).boxed());
        // One poll each, then the set yields (its task is woken to come
        // back) rather than spinning on the first.
        assert!(poll(&mut set, &count).is_pending());
        assert!(count.count() > 0);
        tx.send(5).unwrap();
        let mut got = None;
        for _ in 0..3 {
            if let Poll::Ready(v) = poll(&mut set, &count) {
                got = Some(v);
                break;
            }
        }
        assert_eq!(got, Some(5));
    }
}
