//! The rare things a link's driver waits for, rung on one doorbell.
//!
//! A driver waits on its link, its commands and its servers' replies, which
//! come with every packet, and on five things that almost never happen: the
//! access policy, the node's routes or the allow-list changing, the node
//! shutting down, the link being closed from this node. Those five are
//! `watch` channels, and polling a pending `watch` takes the channel's lock
//! (to register the waker) every time the driver wakes: measured at 12 % of
//! a driver's user time per call between two nodes. A small task per link
//! waits on them instead and rings the driver's [`Doorbell`]: one atomic
//! swap when the driver polls it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The access policy changed.
pub(crate) const POLICY: u8 = 1;
/// The node's best routes changed.
pub(crate) const ROUTES: u8 = 1 << 1;
/// The allow-list changed.
pub(crate) const ALLOW: u8 = 1 << 2;
/// The node is shutting down.
pub(crate) const SHUTDOWN: u8 = 1 << 3;
/// This node closed the link.
pub(crate) const CLOSED: u8 = 1 << 4;

/// What the watcher task watches.
pub(crate) struct Sources {
    pub(crate) policy: watch::Receiver<u64>,
    pub(crate) routes: watch::Receiver<u64>,
    /// A secure node's allow-list.
    pub(crate) allow: Option<watch::Receiver<u64>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) closed: watch::Receiver<bool>,
}

/// The signals rung since the driver last looked, and the driver's waker.
#[derive(Default)]
struct Bell {
    rung: AtomicU8,
    driver: AtomicWaker,
}

/// A driver's end: polled in its select; the watcher task ends with it.
pub(crate) struct Doorbell {
    bell: Arc<Bell>,
    watcher: JoinHandle<()>,
}

impl Doorbell {
    /// Start watching `sources` (a task on the current runtime).
    pub(crate) fn watch(sources: Sources) -> Self {
        let bell = Arc::new(Bell::default());
        let watcher = tokio::spawn(watcher(sources, bell.clone()));
        Self { bell, watcher }
    }

    /// The signals rung since the last call (a set of the bits above);
    /// pending while there are none. Cancel-safe.
    #[cfg(test)]
    pub(crate) async fn rung(&self) -> u8 {
        std::future::poll_fn(|cx| self.poll_rung(cx)).await
    }

    /// The signals rung since the last poll (a set of the bits above);
    /// pending while there are none, and `cx` is woken when one rings.
    pub(crate) fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<u8> {
        // Registered before looking, so a ring in between wakes us.
        self.bell.driver.register(cx.waker());
        match self.bell.rung.swap(0, Ordering::AcqRel) {
            0 => Poll::Pending,
            rung => Poll::Ready(rung),
        }
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Ring `bell` for every change of `sources`, until the node shuts down or
/// closes the link (or every source is gone).
async fn watcher(mut s: Sources, bell: Arc<Bell>) {
    let ring = |signal: u8| {
        bell.rung.fetch_or(signal, Ordering::AcqRel);
        bell.driver.wake();
    };
    loop {
        let signal = tokio::select! {
            Ok(()) = s.policy.changed() => POLICY,
            Ok(()) = s.routes.changed() => ROUTES,
            Some(()) = allow_changed(&mut s.allow) => ALLOW,
            Ok(_) = s.shutdown.wait_for(|down| *down) => SHUTDOWN,
            Ok(_) = s.closed.wait_for(|closed| *closed) => CLOSED,
            else => return,
        };
        ring(signal);
        if signal & (SHUTDOWN | CLOSED) != 0 {
            return;
        }
    }
}

/// Resolves when the allow-list (if any) changed; `None` if it is gone.
async fn allow_changed(allow: &mut Option<watch::Receiver<u64>>) -> Option<()> {
    match allow {
        Some(rx) => rx.changed().await.ok(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Senders {
        policy: watch::Sender<u64>,
        routes: watch::Sender<u64>,
        allow: watch::Sender<u64>,
        shutdown: watch::Sender<bool>,
        closed: watch::Sender<bool>,
    }

    fn doorbell() -> (Doorbell, Senders) {
        let (policy, p) = watch::channel(0);
        let (routes, r) = watch::channel(0);
        let (allow, a) = watch::channel(0);
        let (shutdown, s) = watch::channel(false);
        let (closed, c) = watch::channel(false);
        let bell = Doorbell::watch(Sources {
            policy: p,
            routes: r,
            allow: Some(a),
            shutdown: s,
            closed: c,
        });
        let senders = Senders {
            policy,
            routes,
            allow,
            shutdown,
            closed,
        };
        (bell, senders)
    }

    #[tokio::test]
    async fn each_change_rings_its_signal() {
        let (bell, tx) = doorbell();
        tx.policy.send_replace(1);
        assert_eq!(bell.rung().await, POLICY);
        tx.routes.send_replace(1);
        assert_eq!(bell.rung().await, ROUTES);
        tx.allow.send_replace(1);
        assert_eq!(bell.rung().await, ALLOW);
        tx.closed.send_replace(true);
        assert_eq!(bell.rung().await, CLOSED);
        // The watcher is done once the link is closed.
        let _ = tx.shutdown.send(true);
        tokio::task::yield_now().await;
        assert!(futures::poll!(std::pin::pin!(bell.rung())).is_pending());
    }

    #[tokio::test]
    async fn a_shutdown_rings_even_when_it_came_first() {
        let (bell, tx) = doorbell();
        tx.shutdown.send_replace(true);
        assert_eq!(bell.rung().await & SHUTDOWN, SHUTDOWN);
    }

    #[tokio::test]
    async fn nothing_rings_without_a_change() {
        let (bell, _tx) = doorbell();
        tokio::task::yield_now().await;
        assert!(futures::poll!(std::pin::pin!(bell.rung())).is_pending());
    }

    #[tokio::test]
    async fn dropping_the_doorbell_ends_the_watcher() {
        let (bell, tx) = doorbell();
        drop(bell);
        // The watcher's receivers go with it.
        tokio::time::timeout(std::time::Duration::from_secs(5), tx.policy.closed())
            .await
            .expect("the watcher task ended");
    }
}
