//! What a link's senders share with its driver: the session, the link's
//! writer and our calls waiting for their replies, under one short lock.
//!
//! A cast or call to the peer is encoded into the session by the caller
//! itself, and the caller writes the link if it has room: whoever finds
//! output waiting writes all of it (what other callers and the driver
//! queued too) in one vectored write. No task stands between a caller and
//! the link. The driver still reads the link, runs the session's timers and
//! writes when the link had no room for a caller: a caller that leaves
//! output waiting registers the driver's write waker, and wakes the driver
//! ("kicks" it) when its turn has work a caller does not do (output the
//! write could not take, a timer to arm earlier).
//!
//! Casts and calls go through the driver instead (as [`Command`]s) while
//! the link is not a connected stream link, while output waits for the
//! link to take it, while the session's send queue is full, and while
//! earlier ones still wait in the driver: `backlog` counts those, so that
//! a message sent directly never overtakes one queued before it. What
//! waits in front of a busy link is then bounded by the link's
//! `SendQueue`, as before.
//!
//! The lock is never held across an `.await`, nor while calling out of the
//! link (endpoints, the router, the registry): only the session, the
//! writer's non-blocking write and the call map run under it.
//!
//! [`Command`]: super::remote::Command

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::link_io::Outgoing;
use super::stats::{LinkShared, Publisher};
use crate::Error;
use crate::id_hash::IdMap;
use crate::wire::{CallId, Session};

/// Where the reply to one of our calls goes.
pub(crate) type ReplyTo = oneshot::Sender<Result<Bytes, Error>>;

/// Our calls waiting for the peer's reply: the server called, and where
/// the reply goes.
pub(crate) type Calls = IdMap<CallId, (Arc<str>, ReplyTo)>;

/// One link's state shared by its driver and its senders.
pub(crate) struct LinkWire {
    state: Mutex<Wire>,
    /// A sender left the driver work to do (see [`LinkWire::kick`]).
    kicked: AtomicBool,
    /// What `Node::links` shows of the link.
    shared: Arc<LinkShared>,
}

/// What [`LinkWire`]'s lock guards.
pub(crate) struct Wire {
    pub(crate) session: Session,
    /// The link's writer, while the driver has a link.
    pub(crate) out: Option<Outgoing>,
    pub(crate) calls: Calls,
    /// Casts and calls handed to the driver and not yet taken into the
    /// session (in its command channel, or refused by a full session and
    /// kept): while any, senders queue behind them.
    pub(crate) backlog: usize,
    /// The counters last published to the link's `LinkShared`.
    pub(crate) published: Publisher,
    /// When the driver's timer fires next.
    pub(crate) armed: Option<Instant>,
    /// The driver's write waker and kick waker, once it runs.
    pub(crate) wakers: Option<(Waker, Waker)>,
}

/// What a sender's direct attempt came to.
pub(crate) enum Direct<T> {
    /// The session took the message (the value is what it answered).
    Sent(T),
    /// The session refused it for good.
    Failed(Error),
    /// Not sent: it goes through the driver.
    Queue,
}

impl LinkWire {
    pub(crate) fn new(session: Session, shared: Arc<LinkShared>) -> Self {
        Self {
            state: Mutex::new(Wire {
                session,
                out: None,
                calls: IdMap::default(),
                backlog: 0,
                published: Publisher::default(),
                armed: None,
                wakers: None,
            }),
            kicked: AtomicBool::new(false),
            shared,
        }
    }

    /// Take the lock (a sender that panicked under it left the session
    /// consistent: every step under the lock is a whole session call).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Wire> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ask the driver for a turn: its kick source becomes ready.
    fn kick(&self, w: &Wire) {
        self.kicked.store(true, Ordering::Release);
        if let Some((_, kick)) = &w.wakers {
            kick.wake_by_ref();
        }
    }

    /// The driver's kick source: whether a sender asked for a turn since
    /// it last looked.
    pub(crate) fn take_kick(&self) -> bool {
        self.kicked.swap(false, Ordering::AcqRel)
    }

    /// Publish the session's counters, if bytes moved.
    pub(crate) fn publish(&self, w: &mut Wire) {
        let Wire {
            session, published, ..
        } = w;
        published.publish(&self.shared, session.bytes_moved(), || session.stats());
    }

    /// Send a cast directly, if nothing stands in the way.
    pub(crate) fn cast(&self, w: &mut Wire, to: &str, msg: &Bytes) -> Direct<()> {
        if !w.direct() {
            return Direct::Queue;
        }
        match w.session.cast(to, msg.clone()) {
            Ok(()) => {}
            Err(Error::WireWouldBlock { .. }) => return Direct::Queue,
            Err(err) => return Direct::Failed(err),
        }
        self.flush(w);
        Direct::Sent(())
    }

    /// Send a call directly, if nothing stands in the way; its reply goes
    /// to `reply`, which is given back if the call goes through the driver.
    pub(crate) fn call(
        &self,
        w: &mut Wire,
        to: &Arc<str>,
        msg: &Bytes,
        reply: ReplyTo,
    ) -> Result<Direct<()>, ReplyTo> {
        if !w.direct() {
            return Err(reply);
        }
        w.sweep_abandoned_calls();
        match w.session.call(to, msg.clone()) {
            Ok(id) => {
                w.calls.insert(id, (to.clone(), reply));
            }
            Err(Error::WireWouldBlock { .. }) => return Err(reply),
            Err(err) => return Ok(Direct::Failed(err)),
        }
        self.flush(w);
        Ok(Direct::Sent(()))
    }

    /// Take the session's output and write what the link takes now; kick
    /// the driver for what is left to it.
    fn flush(&self, w: &mut Wire) {
        let drained = match w.out.as_mut() {
            Some(out) => out.fill(&mut w.session),
            None => return,
        };
        // Counted before it is written (as the driver does).
        self.publish(w);
        let mut kick = !drained;
        if let (Some(out), Some((write, _))) = (w.out.as_mut(), w.wakers.as_ref()) {
            let mut cx = Context::from_waker(write);
            while out.has_pending() {
                match out.poll_write(&mut cx) {
                    Poll::Ready(Ok(())) => {}
                    // The driver finds the failure when it writes.
                    Poll::Ready(Err(_)) => {
                        write.wake_by_ref();
                        break;
                    }
                    // The driver is woken when the link takes more; its
                    // turn notes that output waits.
                    Poll::Pending => {
                        kick = true;
                        break;
                    }
                }
            }
        }
        if w.session
            .poll_timeout()
            .is_some_and(|t| w.armed.is_none_or(|at| t < at))
        {
            kick = true;
        }
        if kick {
            self.kick(w);
        }
    }
}

impl Wire {
    /// Whether a sender may send directly: the session is connected on a
    /// stream link the driver runs, the link took everything written to it
    /// so far, and no cast or call waits in the driver. A link that has no
    /// room makes senders queue in front of it (bounded by the link's
    /// `SendQueue`), as they did before the link was idle.
    fn direct(&self) -> bool {
        self.backlog == 0
            && self.wakers.is_some()
            && matches!(&self.out, Some(out @ Outgoing::Stream { .. }) if !out.has_pending())
            && self.session.is_connected()
    }

    /// Forget calls whose caller gave up (timed out or was cancelled), so
    /// they do not hold the session's pending-call slots.
    pub(crate) fn sweep_abandoned_calls(&mut self) {
        if self.calls.len() < 64 {
            return;
        }
        let abandoned: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, (_, reply))| reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            self.calls.remove(&id);
            self.session.cancel_call(id);
        }
    }
}
