//! Endpoints: how the kernel delivers bytes to a registered server.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::{Error, PipeEnd};

pub mod stats;

pub use stats::{LATENCY_BUCKETS_NS, Mailbox, ServerCounters, ServerStats};

/// Where messages for one registered server go.
///
/// The kernel does not know what a server is: it only stores, for each
/// registry entry, an endpoint that accepts encoded messages. A server
/// framework (such as `oscloud-actors`) implements it for local servers; the
/// node layer implements it for servers on other nodes by forwarding over a
/// link. Callers hold the same `Arc<dyn Endpoint>` either way, which is what
/// makes a server reference location-transparent.
///
/// Messages are opaque bytes (MessagePack by convention).
#[async_trait]
pub trait Endpoint: Send + Sync + fmt::Debug + 'static {
    /// Deliver a one-way message without waiting, neither for the server
    /// to handle it nor for room on the way to it.
    ///
    /// Returns [`Error::ServerStopped`] when the server can no longer take
    /// messages, and [`Error::LinkBusy`] when the link to the server's node
    /// holds as many bytes of messages as it may (`NodeConfig::max_queued`):
    /// the message was not sent, for a caller that prefers dropping it to
    /// waiting.
    fn try_cast(&self, msg: Bytes) -> Result<(), Error>;

    /// Deliver one-way messages, in order, as [`Endpoint::try_cast`] would
    /// one after the other: a link's driver hands a local server the casts
    /// of one read that are for it this way, so that an endpoint with a
    /// mailbox can take them as one message and wake its server once.
    ///
    /// Every message is tried; the first error is returned (the messages
    /// it refused are dropped, as a failed `try_cast` drops its message).
    /// The default calls [`Endpoint::try_cast`] for each.
    fn try_cast_batch(&self, msgs: Vec<Bytes>) -> Result<(), Error> {
        let mut outcome = Ok(());
        for msg in msgs {
            if let (Err(err), Ok(())) = (self.try_cast(msg), &outcome) {
                outcome = Err(err);
            }
        }
        outcome
    }

    /// Deliver a one-way message without waiting for the server to handle
    /// it, but waiting for room on the way to it: where
    /// [`Endpoint::try_cast`] fails with [`Error::LinkBusy`], this waits
    /// until the link has sent enough of what is queued before it.
    ///
    /// When there is room the message goes at once, in this call, and the
    /// returned [`Cast`] is ready; otherwise it goes when the `Cast` is
    /// awaited and room comes. Cancel-safe: a `Cast` dropped before it is
    /// ready has sent nothing. Casts that wait are sent in the order they
    /// began to wait, after those already queued.
    ///
    /// The default does not wait: [`Endpoint::try_cast`], for endpoints
    /// that never refuse a message as busy.
    fn cast(&self, msg: Bytes) -> Cast {
        Cast::done(self.try_cast(msg))
    }

    /// Deliver a request and wait for the reply.
    ///
    /// The endpoint itself does not time out; callers wrap this in their own
    /// timeout. Dropping the future abandons the call (a late reply is
    /// discarded).
    ///
    /// A call from a peer node is polled by that link's driver, together
    /// with everything else on the link: the future must not block the
    /// thread (hand the work to a task, a thread or an actor and await its
    /// answer, as `oscloud-actors` and the C bindings do).
    async fn call(&self, msg: Bytes) -> Result<Bytes, Error>;

    /// Hand one end of a pipe to the server's port `port`.
    ///
    /// Returns [`Error::NoSuchPort`] when the server does not accept pipes on
    /// that port.
    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), Error>;

    /// The server's counters (calls, casts, errors, latency, mailbox,
    /// restarts), if the endpoint keeps them. Local servers of
    /// `oscloud-actors` (Rust and Python) and of the C bindings do; the
    /// endpoints of servers on other nodes return `None` (their own node
    /// counts them). The default is `None`.
    fn stats(&self) -> Option<ServerStats> {
        None
    }

    /// The endpoint itself, for a server framework to recognise its own
    /// endpoints of servers in this process (by downcasting) and hand them
    /// values without encoding them, as `oscloud-actors` does for a typed
    /// request whose type the server takes. The default is `None`: the
    /// endpoint is reached by bytes only.
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }
}

/// A cast that may wait for room on the way to its server (see
/// [`Endpoint::cast`]): a future of the cast's outcome.
#[must_use = "a cast that waits for room is sent only when awaited"]
pub struct Cast(CastState);

enum CastState {
    /// Sent (or refused) already; `None` once the outcome was taken.
    Done(Option<Result<(), Error>>),
    /// Waiting for room.
    Waiting(BoxFuture<'static, Result<(), Error>>),
}

impl Cast {
    /// A cast that was sent, or refused, at once.
    pub fn done(outcome: Result<(), Error>) -> Self {
        Self(CastState::Done(Some(outcome)))
    }

    /// A cast that is sent by `sending`, once there is room.
    pub fn waiting(sending: impl Future<Output = Result<(), Error>> + Send + 'static) -> Self {
        Self(CastState::Waiting(Box::pin(sending)))
    }
}

impl Future for Cast {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            // Polled again after it was ready: the outcome was taken, and
            // a second poll has nothing new to say.
            CastState::Done(outcome) => Poll::Ready(outcome.take().unwrap_or(Ok(()))),
            CastState::Waiting(sending) => sending.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Cast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            CastState::Done(outcome) => f.debug_tuple("Cast::Done").field(outcome).finish(),
            CastState::Waiting(_) => f.write_str("Cast::Waiting"),
        }
    }
}
