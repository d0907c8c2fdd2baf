//! The peripheral's side of one link: datagrams out as notifications until
//! the notification session or the link ends, then the BLE connection to
//! the central ends too.
//!
//! ## A notification reported failed is not always lost
//!
//! bluer sends a notification as a D-Bus signal through dbus-tokio, whose
//! `send` queues the message and then, when it could not be written at
//! once, wakes the connection's I/O task; if that task was already woken
//! and has not run yet, `send` returns an error although the message is
//! queued and goes out with the next flush. bluer reports that error as
//! "the receiving Bluetooth device has stopped the notification session".
//! Under load (the lab's emulated machine, a burst of notifications) this
//! ended the peripheral's link in the middle of a 1 MiB transfer while the
//! session was up and BlueZ had not stopped anything (its debug log shows
//! no `StopNotify` and no CCC write). A failed notification therefore
//! ends the link only when the session has really stopped, or when
//! notifications keep failing for [`FAILING_FOR`].
//!
//! ## Ending the connection with the link
//!
//! When the link ends on the peripheral (the session stopped, or the node
//! dropped the link: its idle timeout, a protocol error) while the central
//! stays connected, the central cannot tell: it still holds its
//! subscription, its writes still arrive, and only its idle timeout would
//! end its link (18 s of stall in the measured run). The peripheral
//! therefore disconnects the central, which sees its link go down at once
//! and dials again, and the session resumes; the central does the same
//! for the peripheral when its link ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluer::Address;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::chan::Incoming;

/// The notification session BlueZ gave the link (a trait, so that the
/// link's task is tested without a radio).
pub(crate) trait Notifier: Send {
    /// Send one datagram as a notification.
    fn notify(&mut self, datagram: Vec<u8>) -> BoxFuture<'_, Result<(), String>>;
    /// Resolves once the session has stopped (the central unsubscribed or
    /// disconnected, or BlueZ stopped it).
    fn stopped(&self) -> BoxFuture<'static, ()>;
    /// Whether the session has stopped.
    fn is_stopped(&self) -> bool;
}

/// How long notifications may keep failing, with the session up, before
/// the link ends.
pub(crate) const FAILING_FOR: Duration = Duration::from_secs(5);

/// Ends the BLE connection to a central.
pub(crate) trait Disconnect: Send + Sync {
    /// Disconnect `central`; an error if it is not connected or BlueZ
    /// refuses.
    fn disconnect(&self, central: Address) -> BoxFuture<'static, Result<(), String>>;
}

/// The central of one link: the address its writes come from, learnt from
/// the first one (a notification session does not name its device).
#[derive(Debug, Clone, Default)]
pub(crate) struct Central(Arc<Mutex<Option<Address>>>);

impl Central {
    /// Record the writer of a datagram (the first one is kept).
    pub(crate) fn wrote(&self, from: Address) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some(from);
        }
    }

    /// The central's address, once it has written.
    pub(crate) fn address(&self) -> Option<Address> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Run one link: notify each datagram from `out` until the session stops,
/// notifications fail for [`FAILING_FOR`] or the node drops the link
/// (`out` closes); then
/// hand the reason (if not the node's own doing) to the link's receiver
/// `inbound` and end the connection to `central`.
///
/// Returns the reason the link ended (`None`: the node dropped it).
pub(crate) async fn run(
    mut notifier: impl Notifier,
    mut out: mpsc::Receiver<Bytes>,
    inbound: &mpsc::Sender<Incoming>,
    central: &Central,
    connection: &dyn Disconnect,
) -> Option<String> {
    let mut failing_since: Option<Instant> = None;
    let why = loop {
        tokio::select! {
            d = out.recv() => match d {
                Some(d) => match notifier.notify(d.to_vec()).await {
                    Ok(()) => failing_since = None,
                    Err(e) if notifier.is_stopped() => {
                        break Some(format!("notifying the central failed: {e}"));
                    }
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= FAILING_FOR {
                            break Some(format!(
                                "notifying the central failed for {FAILING_FOR:?}: {e}"
                            ));
                        }
                        // Queued all the same (see the module's docs): let
                        // the D-Bus connection's task run and flush it.
                        debug!("a BLE notification reported failed with the session up ({e}): going on");
                        tokio::task::yield_now().await;
                    }
                },
                None => break None,
            },
            () = notifier.stopped() => {
                break Some("the BLE central unsubscribed or disconnected".to_owned());
            }
        }
    };
    drop(notifier);
    if let Some(why) = &why {
        info!("BLE link down: {why}");
        let _ = inbound.send(Err(why.clone())).await;
    }
    match central.address() {
        Some(addr) => match connection.disconnect(addr).await {
            Ok(()) => {
                info!(central = %addr, "BLE link over: disconnected the central, which dials again")
            }
            Err(e) => debug!(central = %addr, "BLE link over: the central is not connected ({e})"),
        },
        None => debug!("BLE link over before the central wrote: no connection to end"),
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use tokio::sync::watch;

    const BLUER_ERROR: &str = "the receiving Bluetooth device has stopped the notification session";

    /// How a fake session answers a notification.
    #[derive(Clone, Copy, PartialEq)]
    enum Fail {
        /// Sends it.
        Never,
        /// Sends it but reports an error every other time, with the
        /// session up (dbus-tokio's `send` when its I/O task was woken and
        /// has not run).
        Spuriously,
        /// Reports an error and sends nothing.
        Always,
    }

    /// A notification session in memory: records what it sends; stops
    /// when told, or fails notifications as told.
    struct FakeNotifier {
        sent: mpsc::UnboundedSender<Vec<u8>>,
        stop: watch::Receiver<bool>,
        fail: Fail,
        calls: usize,
    }

    impl Notifier for FakeNotifier {
        fn notify(&mut self, datagram: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
            self.calls += 1;
            let r = if self.fail == Fail::Always || self.is_stopped() {
                Err(BLUER_ERROR.into())
            } else {
                let _ = self.sent.send(datagram);
                if self.fail == Fail::Spuriously && self.calls.is_multiple_of(2) {
                    Err(BLUER_ERROR.into())
                } else {
                    Ok(())
                }
            };
            async move { r }.boxed()
        }

        fn is_stopped(&self) -> bool {
            *self.stop.borrow()
        }

        fn stopped(&self) -> BoxFuture<'static, ()> {
            let mut stop = self.stop.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
            .boxed()
        }
    }

    /// Records the centrals it is asked to disconnect; `connected` says
    /// whether the disconnect succeeds.
    #[derive(Default)]
    struct Connections {
        asked: Mutex<Vec<Address>>,
        gone: bool,
    }

    impl Disconnect for Connections {
        fn disconnect(&self, central: Address) -> BoxFuture<'static, Result<(), String>> {
            self.asked.lock().unwrap().push(central);
            let r = if self.gone {
                Err("Not Connected".into())
            } else {
                Ok(())
            };
            async move { r }.boxed()
        }
    }

    const CENTRAL: Address = Address([0, 0xaa, 1, 1, 0, 1]);

    struct Setup {
        out: mpsc::Sender<Bytes>,
        inbound_rx: mpsc::Receiver<Incoming>,
        sent: mpsc::UnboundedReceiver<Vec<u8>>,
        stop: watch::Sender<bool>,
        link: tokio::task::JoinHandle<(Option<String>, Vec<Address>)>,
    }

    fn start(fail: Fail, gone: bool, wrote: bool) -> Setup {
        let (sent_tx, sent) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let notifier = FakeNotifier {
            sent: sent_tx,
            stop: stop_rx,
            fail,
            calls: 0,
        };
        let (out, out_rx) = mpsc::channel(4);
        let (inbound, inbound_rx) = mpsc::channel(4);
        let central = Central::default();
        if wrote {
            central.wrote(CENTRAL);
            central.wrote(Address([9; 6]));
        }
        let link = tokio::spawn(async move {
            let connections = Connections {
                gone,
                ..Default::default()
            };
            let why = run(notifier, out_rx, &inbound, &central, &connections).await;
            (why, connections.asked.into_inner().unwrap())
        });
        Setup {
            out,
            inbound_rx,
            sent,
            stop,
            link,
        }
    }

    /// The session stops while the central stays connected (BlueZ's
    /// StopNotify): the link ends with the reason, and the central, which
    /// cannot see the stop, is disconnected so that it dials again.
    #[tokio::test]
    async fn a_stopped_session_ends_the_link_and_the_connection() {
        let mut s = start(Fail::Never, false, true);
        s.out.send(Bytes::from_static(b"one")).await.unwrap();
        assert_eq!(s.sent.recv().await.unwrap(), b"one");
        s.stop.send(true).unwrap();
        let why = s.inbound_rx.recv().await.unwrap().unwrap_err();
        assert!(why.contains("unsubscribed or disconnected"), "{why}");
        let (end, asked) = s.link.await.unwrap();
        assert_eq!(end.as_deref(), Some(why.as_str()));
        assert_eq!(asked, vec![CENTRAL], "the first writer is disconnected");
    }

    /// Notifications reported failed while the session is up (queued all
    /// the same) do not end the link: every datagram goes out, in order,
    /// and the link ends only when the node drops it.
    #[tokio::test]
    async fn notifications_reported_failed_with_the_session_up_go_on() {
        let mut s = start(Fail::Spuriously, false, true);
        for i in 0..100u8 {
            s.out.send(Bytes::from(vec![i])).await.unwrap();
            assert_eq!(s.sent.recv().await.unwrap(), vec![i]);
        }
        drop(s.out);
        let (end, _) = s.link.await.unwrap();
        assert_eq!(end, None, "the link ended only when the node dropped it");
        assert!(s.inbound_rx.recv().await.is_none(), "no reason sent back");
    }

    /// Notifications that keep failing with the session up end the link
    /// after `FAILING_FOR`, and the connection too.
    #[tokio::test(start_paused = true)]
    async fn notifications_failing_for_long_end_the_link_and_the_connection() {
        let mut s = start(Fail::Always, false, true);
        let t = Instant::now();
        let feed = tokio::spawn(async move {
            while s.out.send(Bytes::from_static(b"d")).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let why = s.inbound_rx.recv().await.unwrap().unwrap_err();
        assert!(
            why.contains("failed for") && why.contains("stopped the notification session"),
            "{why}"
        );
        assert!(t.elapsed() >= FAILING_FOR, "{:?}", t.elapsed());
        let (_, asked) = s.link.await.unwrap();
        assert_eq!(asked, vec![CENTRAL]);
        feed.await.unwrap();
    }

    /// A notification that fails because the session stopped ends the
    /// link at once.
    #[tokio::test]
    async fn a_notification_failed_by_a_stop_ends_the_link() {
        let s = start(Fail::Never, false, true);
        s.stop.send(true).unwrap();
        let _ = s.out.send(Bytes::from_static(b"one")).await;
        let mut inbound_rx = s.inbound_rx;
        let why = inbound_rx.recv().await.unwrap().unwrap_err();
        assert!(
            why.contains("stopped the notification session") || why.contains("unsubscribed"),
            "{why}"
        );
        let (_, asked) = s.link.await.unwrap();
        assert_eq!(asked, vec![CENTRAL]);
    }

    /// The node drops the link (its idle timeout, a protocol error): no
    /// reason goes back to it, and the central is disconnected, so it does
    /// not wait for its own idle timeout.
    #[tokio::test]
    async fn a_link_the_node_drops_ends_the_connection() {
        let s = start(Fail::Never, false, true);
        drop(s.out);
        let (end, asked) = s.link.await.unwrap();
        assert_eq!(end, None);
        assert_eq!(asked, vec![CENTRAL]);
        let mut inbound_rx = s.inbound_rx;
        assert!(inbound_rx.recv().now_or_never().flatten().is_none());
    }

    /// A central that has already gone: the failed disconnect changes
    /// nothing; a central that never wrote is not known, and nothing is
    /// disconnected.
    #[tokio::test]
    async fn a_central_gone_or_unknown() {
        let s = start(Fail::Never, true, true);
        s.stop.send(true).unwrap();
        let (end, asked) = s.link.await.unwrap();
        assert!(end.is_some());
        assert_eq!(asked, vec![CENTRAL]);

        let s = start(Fail::Never, false, false);
        s.stop.send(true).unwrap();
        let (end, asked) = s.link.await.unwrap();
        assert!(end.is_some());
        assert!(asked.is_empty());
    }
}
