//! What a link's senders share with its driver: the session, the link's
//! writer and our calls waiting for their replies, under one short lock.
//!
//! A cast or call to the peer is encoded into the session by the caller
//! itself, under the lock, with no channel or command in between. A call
//! is written at once by its caller, if the link has room: the write takes
//! everything waiting (what other senders and the driver queued too) in
//! one vectored write, and no task stands between the caller and the
//! link. A cast wakes the driver ("kicks" it) once for a burst: its turn
//! writes every cast put in meanwhile in one write, where a write per cast
//! would cost a system call each. The driver also reads the link, runs the
//! session's timers and writes when the link had no room for a caller: a
//! caller that leaves output waiting registers the driver's write waker,
//! and kicks the driver when its turn has work a caller does not do
//! (output the write could not take, a timer to arm earlier).
//!
//! A cast that finds the session's send queue full (casts put in faster
//! than the driver's turns write them) writes everything waiting itself,
//! as a call does, in one vectored write, and goes into the room that
//! made: a fast caster writes its own casts in large batches, where
//! queueing them to the driver would cost a command each.
//!
//! Casts and calls go through the driver instead (as [`Command`]s) while
//! the link is not a connected stream link, while output waits for the
//! link to take it, while the session's send queue is full (for a cast:
//! and writing what waits made no room), and while
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

use super::link_io::{Outgoing, WriteFailed};
use super::stats::{LinkShared, Publisher};
use crate::id_hash::IdMap;
use crate::wire::{CallId, Name, Session};
use crate::{Error, TraceContext};

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
    /// The link's writer, while the driver has a link and no one is
    /// writing it (see `writing`).
    pub(crate) out: Option<Outgoing>,
    /// Someone (a sender or the driver) took `out` to write it with the
    /// lock released; they put it back after the write.
    writing: bool,
    /// The link is a stream link the driver has (whether or not `out` is
    /// out being written).
    stream: bool,
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
    /// Casts and calls senders put in directly (the driver counts the
    /// rest), for the idle time of a directory link.
    pub(crate) used: u64,
}

/// What a sender's direct attempt came to.
pub(crate) enum Direct<T> {
    /// The session took the message (the value is what it answered).
    Sent(T),
    /// The session refused it for good.
    Failed(Error),
    /// Not sent: it goes through the driver.
    Queue,
    /// Not sent: the session's send queue is full (writing what waits
    /// makes room: [`LinkWire::flush`]).
    Full,
}

/// What became of a call the driver took out of the backlog
/// ([`Wire::take_call`]).
pub(crate) enum Taken {
    /// In the session (or dropped: its caller gave up).
    Done,
    /// The session refused it for good: the error goes to its caller
    /// (outside the lock).
    Failed(ReplyTo, Error),
    /// The session's send queue is full: the call stays in the backlog.
    Blocked(ReplyTo),
}

impl LinkWire {
    pub(crate) fn new(session: Session, shared: Arc<LinkShared>) -> Self {
        Self {
            state: Mutex::new(Wire {
                session,
                out: None,
                writing: false,
                stream: false,
                calls: IdMap::default(),
                backlog: 0,
                published: Publisher::default(),
                armed: None,
                wakers: None,
                used: 0,
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

    /// Ask the driver for a turn: its kick source becomes ready. Once per
    /// turn: senders that kick before the driver looked wake nothing more.
    fn kick(&self, w: &Wire) {
        // Read first: a burst of casts finds the flag set, and does not
        // write the line the driver reads.
        if !self.kicked.load(Ordering::Acquire)
            && !self.kicked.swap(true, Ordering::AcqRel)
            && let Some((_, kick)) = &w.wakers
        {
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
        published.publish(&self.shared, session);
    }

    /// Put a cast into the session directly, if nothing stands in the
    /// way. The driver writes it, with every cast put in before its turn
    /// (one wake-up and one write for a burst of casts): a cast has no
    /// caller waiting for it, a call does (see [`LinkWire::call`]). When
    /// the session's send queue is full ([`Direct::Full`]), its caller
    /// writes what waits itself and tries once more before it queues.
    pub(crate) fn cast(
        &self,
        w: &mut Wire,
        to: &Name,
        msg: &Bytes,
        trace: Option<TraceContext>,
    ) -> Direct<()> {
        if !w.direct() {
            return Direct::Queue;
        }
        match w.session.cast_to(to.clone(), msg.clone(), trace) {
            Ok(()) => {}
            Err(Error::WireWouldBlock { .. }) => return Direct::Full,
            Err(err) => return Direct::Failed(err),
        }
        w.used += 1;
        self.kick(w);
        Direct::Sent(())
    }

    /// Put a call into the session directly, if nothing stands in the way
    /// (the caller then writes it: [`LinkWire::flush`]); its reply goes to
    /// `reply`, which is given back if the call goes through the driver.
    /// `to` is the server's name as the session sends it, `name` as its
    /// reply is reported under.
    pub(crate) fn call(
        &self,
        w: &mut Wire,
        (to, name): (&Name, &Arc<str>),
        msg: &Bytes,
        trace: Option<TraceContext>,
        reply: ReplyTo,
    ) -> Result<Direct<()>, ReplyTo> {
        if !w.direct() {
            return Err(reply);
        }
        w.sweep_abandoned_calls();
        match w.session.call_to(to.clone(), msg.clone(), trace) {
            Ok(id) => {
                w.used += 1;
                w.calls.insert(id, (name.clone(), reply));
            }
            Err(Error::WireWouldBlock { .. }) => return Err(reply),
            Err(err) => return Ok(Direct::Failed(err)),
        }
        Ok(Direct::Sent(()))
    }

    /// Give the driver's link writer to senders.
    pub(crate) fn put_out(&self, out: Outgoing) {
        let mut w = self.lock();
        w.stream = matches!(out, Outgoing::Stream { .. });
        w.out = Some(out);
    }

    /// Take the link's writer back (the link is lost, handed over or
    /// closing), once no one is writing it: a write takes one system call,
    /// without waiting.
    pub(crate) fn take_out(&self) -> Option<Outgoing> {
        loop {
            let mut w = self.lock();
            if !w.writing {
                w.stream = false;
                return w.out.take();
            }
            drop(w);
            std::thread::yield_now();
        }
    }

    /// One write of what waits for the link, with the lock released
    /// meanwhile (senders go on putting messages in). `None` if someone
    /// else is writing (they take what waits after their write) or there
    /// is no link.
    pub(crate) fn write_once<'a>(
        &'a self,
        mut w: MutexGuard<'a, Wire>,
        cx: &mut Context<'_>,
    ) -> (MutexGuard<'a, Wire>, Option<Poll<Result<(), WriteFailed>>>) {
        if w.writing {
            return (w, None);
        }
        let Some(mut out) = w.out.take() else {
            return (w, None);
        };
        w.writing = true;
        drop(w);
        let written = out.poll_write(cx);
        let mut w = self.lock();
        w.out = Some(out);
        w.writing = false;
        (w, Some(written))
    }

    /// Take the session's output and write it while the link takes it,
    /// the lock released during each write: what other senders put in
    /// meanwhile goes in the next write. Kick the driver for what is left
    /// to it. Nothing is written if someone else is writing: they take
    /// this output after their write.
    pub(crate) fn flush<'a>(&'a self, mut w: MutexGuard<'a, Wire>) {
        let mut kick = false;
        let Some(write) = w.wakers.as_ref().map(|(write, _)| write.clone()) else {
            return;
        };
        let mut cx = Context::from_waker(&write);
        loop {
            if w.writing {
                break;
            }
            let wire = &mut *w;
            let Some(out) = wire.out.as_mut() else {
                break;
            };
            if !out.fill(&mut wire.session) {
                kick = true;
            }
            let pending = out.has_pending();
            // Counted before it is written (as the driver does).
            self.publish(wire);
            if !pending {
                break;
            }
            let (again, written) = self.write_once(w, &mut cx);
            w = again;
            match written {
                Some(Poll::Ready(Ok(()))) => {}
                // The driver finds the failure when it writes.
                Some(Poll::Ready(Err(_))) => {
                    write.wake_by_ref();
                    break;
                }
                // The driver is woken when the link takes more; its turn
                // notes that output waits.
                Some(Poll::Pending) => {
                    kick = true;
                    break;
                }
                None => break,
            }
        }
        if w.session
            .poll_timeout()
            .is_some_and(|t| w.armed.is_none_or(|at| t < at))
        {
            kick = true;
        }
        if kick {
            self.kick(&w);
        }
    }
}

impl Wire {
    /// Whether a sender may send directly: the session is connected on a
    /// stream link the driver runs, and no cast or call waits in the
    /// driver. The session's send queue bounds what senders put in (then
    /// they queue in front of it, bounded by the link's `SendQueue`).
    fn direct(&self) -> bool {
        self.backlog == 0 && self.stream && self.wakers.is_some() && self.session.is_connected()
    }

    /// The driver takes a cast out of the backlog into the session.
    /// Refused with [`Error::WireWouldBlock`] while the session's send
    /// queue is full: it stays in the backlog (the driver keeps it, and
    /// senders go on queueing behind it).
    pub(crate) fn take_cast(
        &mut self,
        to: &str,
        msg: &Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), Error> {
        let sent = self.session.cast_traced(to, msg.clone(), trace);
        if !matches!(sent, Err(Error::WireWouldBlock { .. })) {
            // Out of the backlog: senders may go direct again.
            self.backlog -= 1;
        }
        sent
    }

    /// The driver takes a call out of the backlog into the session (its
    /// reply then goes to `reply`); one whose caller gave up is dropped.
    pub(crate) fn take_call(
        &mut self,
        to: &Arc<str>,
        msg: &Bytes,
        trace: Option<TraceContext>,
        reply: ReplyTo,
    ) -> Taken {
        if reply.is_closed() {
            self.backlog -= 1;
            return Taken::Done;
        }
        self.sweep_abandoned_calls();
        match self.session.call_traced(to, msg.clone(), trace) {
            Ok(id) => {
                self.backlog -= 1;
                self.calls.insert(id, (to.clone(), reply));
                Taken::Done
            }
            Err(Error::WireWouldBlock { .. }) => Taken::Blocked(reply),
            Err(err) => {
                self.backlog -= 1;
                Taken::Failed(reply, err)
            }
        }
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
