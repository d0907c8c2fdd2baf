//! A call's deadline, on a tokio timer kept from one call to the next.
//!
//! Arming a fresh tokio timer for every call and clearing it when the
//! reply comes costs two trips through the timer driver's lock. Each
//! thread instead keeps the timer its last call finished with and the
//! next call on that thread moves it to its own deadline: a deadline
//! later than the timer's last one (the usual case: calls with the same
//! timeout, one after another) only moves the timer's expiry forward, one
//! atomic store; an earlier one registers it again, as a fresh timer
//! would. The deadline is the same either way: the call fails at the
//! tick it would fail at on a fresh timer.
//!
//! A timer belongs to the runtime it was made in, so a kept one is only
//! reused by calls in that runtime. While kept, it still counts down to
//! its last deadline; if no call moves it first, it fires once then and
//! wakes the task that used it last, which finds nothing to do.

use std::cell::Cell;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::Poll;

use tokio::runtime::{Handle, Id};
use tokio::time::{Instant, Sleep};

thread_local! {
    /// The timer the last call on this thread finished with.
    static KEPT: Cell<Option<Kept>> = const { Cell::new(None) };
}

/// A timer and the runtime it belongs to.
struct Kept {
    runtime: Id,
    sleep: Pin<Box<Sleep>>,
}

/// Run `fut` until it completes or `deadline` passes, whichever is first
/// (`None`: the deadline passed). Like [`tokio::time::timeout_at`], a
/// future ready at its last poll wins over a deadline passed meanwhile.
///
/// # Panics
///
/// Outside a tokio runtime with timers enabled, as `timeout_at` does.
pub(crate) async fn within<F: Future>(deadline: Instant, fut: F) -> Option<F::Output> {
    let runtime = Handle::current().id();
    let mut sleep = match KEPT.try_with(Cell::take).ok().flatten() {
        Some(mut kept) if kept.runtime == runtime => {
            kept.sleep.as_mut().reset(deadline);
            kept.sleep
        }
        // Another runtime's timer (dropped here) or none.
        _ => Box::pin(tokio::time::sleep_until(deadline)),
    };
    let mut fut = pin!(fut);
    let out = poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await;
    // Keep the timer for the next call on this thread (the one a
    // concurrent call left there, if any, is dropped).
    let kept = Kept { runtime, sleep };
    let _ = KEPT.try_with(|slot| slot.set(Some(kept)));
    out
}
