//! Which of a link driver's sources woke it, so that it polls those only.
//!
//! A driver waits on ten sources at once (its link's input and output,
//! its commands, its servers' replies, pipes, the registry, resumptions,
//! its doorbell, its timer and its senders' kicks). `tokio::select!` polls every one of them
//! each time the driver wakes, and each poll registers a waker again: in a
//! call between two nodes that was over a third of a driver's own CPU
//! time. Here each source is polled with a waker of its own, which marks
//! the source ready and wakes the driver; the driver then polls the
//! sources marked, and those it knows may have changed by its own doing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Wake, Waker};

use futures::task::AtomicWaker;

/// One bit per source.
pub(crate) type Sources = u16;

/// Input on the link.
pub(crate) const INPUT: Sources = 1;
/// Room to write on the link.
pub(crate) const WRITE: Sources = 1 << 1;
/// A new link for a resumed session.
pub(crate) const RESUME: Sources = 1 << 2;
/// Commands from this node (casts, calls, pipe opens, replies).
pub(crate) const COMMANDS: Sources = 1 << 3;
/// Replies of local servers to the peer's calls.
pub(crate) const SERVING: Sources = 1 << 4;
/// Frames from local pipe writers to the peer.
pub(crate) const OUTBOUND: Sources = 1 << 5;
/// Changes in the local registry.
pub(crate) const WATCH: Sources = 1 << 6;
/// The doorbell (policy, routes, allow-list, shutdown, close).
pub(crate) const SIGNALS: Sources = 1 << 7;
/// The session's timer.
pub(crate) const TIMER: Sources = 1 << 8;
/// A sender that wrote the link itself left the driver work (see
/// `link_wire`).
pub(crate) const KICK: Sources = 1 << 9;
/// How many sources there are.
pub(crate) const COUNT: usize = 10;
/// Every source.
pub(crate) const ALL: Sources = (1 << COUNT) - 1;

/// The sources woken since the driver last looked, and the driver's task.
#[derive(Default)]
struct Shared {
    woken: AtomicU16,
    task: AtomicWaker,
}

/// The waker a source is polled with.
struct SourceWaker {
    source: Sources,
    shared: Arc<Shared>,
}

impl Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken.fetch_or(self.source, Ordering::AcqRel);
        self.shared.task.wake();
    }
}

/// A driver's view: which sources are due a poll, and their wakers.
pub(crate) struct Wakeups {
    shared: Arc<Shared>,
    wakers: [Waker; COUNT],
    /// Sources to poll: woken, ready when last polled, or changed by the
    /// driver itself. A source stays due until it is polled.
    due: Sources,
}

impl Wakeups {
    /// Every source due, for a first poll.
    pub(crate) fn new() -> Self {
        let shared = Arc::new(Shared::default());
        let wakers = std::array::from_fn(|i| {
            Waker::from(Arc::new(SourceWaker {
                source: 1 << i,
                shared: shared.clone(),
            }))
        });
        Self {
            shared,
            wakers,
            due: ALL,
        }
    }

    /// Mark `sources` due: the driver changed something they depend on.
    pub(crate) fn mark(&mut self, sources: Sources) {
        self.due |= sources;
    }

    /// Start a poll of the driver's task: take the sources woken since the
    /// last one. The task's waker is registered first, so that a source
    /// woken from here on wakes the task again.
    pub(crate) fn begin(&mut self, cx: &Context<'_>) {
        self.shared.task.register(cx.waker());
        self.due |= self.shared.woken.swap(0, Ordering::AcqRel);
    }

    /// The waker of `source`, for something that is to wake the driver on
    /// that source's behalf.
    pub(crate) fn waker(&self, source: Sources) -> &Waker {
        let i = (source.trailing_zeros() as usize).min(COUNT - 1);
        &self.wakers[i]
    }

    /// If `source` is due, take it (it is no longer due) and return the
    /// context to poll it with. A source returning ready must be marked
    /// due again (it may have more).
    pub(crate) fn take(&mut self, source: Sources) -> Option<Context<'_>> {
        if self.due & source == 0 {
            return None;
        }
        self.due &= !source;
        let i = source.trailing_zeros() as usize;
        self.wakers.get(i).map(Context::from_waker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::counting_waker::CountingWaker;

    #[test]
    fn every_source_is_due_once_then_only_when_woken_or_marked() {
        let task = CountingWaker::new();
        let task_waker = task.waker();
        let cx = Context::from_waker(&task_waker);
        let mut w = Wakeups::new();
        w.begin(&cx);
        for i in 0..COUNT {
            assert!(w.take(1 << i).is_some());
        }
        w.begin(&cx);
        assert!(w.take(INPUT).is_none());
        // A source's waker marks it and wakes the task.
        let input = w.wakers[0].clone();
        input.wake_by_ref();
        assert_eq!(task.count(), 1);
        w.begin(&cx);
        assert!(w.take(COMMANDS).is_none());
        assert!(w.take(INPUT).is_some());
        assert!(w.take(INPUT).is_none());
        // The driver marks what its own work changed.
        w.mark(TIMER | WRITE);
        assert!(w.take(TIMER).is_some());
        assert!(w.take(WRITE).is_some());
        assert!(w.take(TIMER).is_none());
    }

    #[test]
    fn a_source_not_taken_stays_due() {
        let task = CountingWaker::new().waker();
        let cx = Context::from_waker(&task);
        let mut w = Wakeups::new();
        w.begin(&cx);
        assert!(w.take(INPUT).is_some());
        w.begin(&cx);
        // COMMANDS was never taken: still due on the next poll.
        assert!(w.take(COMMANDS).is_some());
    }
}
