//! Endpoints of servers that live on a linked node.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot};

use super::link_wire::{Direct, LinkWire, ReplyTo, Wire};
use crate::trace::current_trace;
use crate::wire::{Name, RemoteError, RemoteErrorKind};
use crate::{Cast, Endpoint, Error, NodeId, PipeEnd, TraceContext};

/// What a [`RemoteEndpoint`] (or anything else on this node) asks a link's
/// driver to do. Casts and calls go to the session directly when they can
/// (see `link_wire`); everything else, and they when they cannot, goes to
/// the driver through these.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a one-way message to `to` on the peer, in `trace`.
    Cast {
        to: Arc<str>,
        msg: Bytes,
        trace: Option<TraceContext>,
    },
    /// Send a request to `to` on the peer, in `trace`; answer on `reply`.
    Call {
        to: Arc<str>,
        msg: Bytes,
        trace: Option<TraceContext>,
        reply: oneshot::Sender<Result<Bytes, Error>>,
    },
    /// Open a pipe to `server`'s `port` on the peer, bridged to `end`.
    OpenPipe {
        server: String,
        port: String,
        end: PipeEnd,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A local server answered a call the peer made.
    Reply {
        id: crate::wire::CallId,
        result: Result<Bytes, RemoteError>,
    },
    /// The local reader of a pipe took `n` bytes from the peer.
    PipeConsumed { pipe: crate::wire::PipeId, n: usize },
    /// The local reader of a pipe is gone.
    PipeInDone { pipe: crate::wire::PipeId },
    /// A frame from the peer cannot go on into the local pipe: close it.
    PipeFailed {
        pipe: crate::wire::PipeId,
        error: Error,
    },
    /// A local server accepted or refused a pipe the peer opened.
    PipeAttached {
        pipe: crate::wire::PipeId,
        result: Result<(), Error>,
    },
}

/// The bytes of casts and calls waiting for one link's driver, shared by
/// the endpoints of that link: the bound on what a fast sender can pile up
/// in front of a slow link.
///
/// Room is counted in permits of a semaphore, one per byte: a message
/// takes its length in permits (at most the whole limit: a single message
/// larger than the limit goes when the queue is empty), and the driver
/// gives them back once it took the message. Senders that wait for room
/// get it in the order they began to wait, before anyone who merely tries.
#[derive(Debug)]
pub(crate) struct SendQueue {
    room: Semaphore,
    limit: u32,
}

impl SendQueue {
    pub(crate) fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, (u32::MAX as usize).min(Semaphore::MAX_PERMITS));
        Self {
            room: Semaphore::new(limit),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        }
    }

    /// The permits a message of `n` bytes takes.
    fn permits(&self, n: usize) -> u32 {
        u32::try_from(n).unwrap_or(u32::MAX).min(self.limit)
    }

    /// Count `n` more bytes in if there is room for them now; the error
    /// says how full the queue is.
    fn try_admit(&self, n: usize) -> Result<(), Full> {
        match self.room.try_acquire_many(self.permits(n)) {
            Ok(permit) => {
                permit.forget();
                Ok(())
            }
            Err(TryAcquireError::NoPermits) => Err(Full::Busy {
                queued: self.queued(),
                limit: self.limit as usize,
            }),
            Err(TryAcquireError::Closed) => Err(Full::Closed),
        }
    }

    /// Count `n` more bytes in once there is room for them. Cancel-safe:
    /// dropped before it is ready, it took nothing.
    async fn admit(&self, n: usize) -> Result<(), Full> {
        let permit = self
            .room
            .acquire_many(self.permits(n))
            .await
            .map_err(|_| Full::Closed)?;
        permit.forget();
        Ok(())
    }

    /// The driver took messages of `n` bytes in all out (`n` as the sum of
    /// [`SendQueue::taken`] of each).
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            self.room.add_permits(n);
        }
    }

    /// Bytes waiting now (taken by senders, not yet released by the
    /// driver).
    pub(crate) fn queued(&self) -> usize {
        (self.limit as usize).saturating_sub(self.room.available_permits())
    }

    /// What a message of `n` bytes counted, to [`SendQueue::release`].
    pub(crate) fn taken(&self, n: usize) -> usize {
        self.permits(n) as usize
    }

    /// The link is over: senders waiting for room stop waiting (their
    /// messages are not sent), and no more are let in.
    pub(crate) fn close(&self) {
        self.room.close();
    }
}

/// Why a [`SendQueue`] did not let a message in.
enum Full {
    /// Too many bytes wait: `queued` of `limit`.
    Busy { queued: usize, limit: usize },
    /// The link is over.
    Closed,
}

/// The endpoint of a server on another node: casts and calls go into the
/// link's session directly when they can, else (like every other
/// operation) become [`Command`]s for the driver of the link to that node.
#[derive(Clone)]
pub(crate) struct RemoteEndpoint {
    /// Shared by every cast and call to it, rather than copied.
    pub(crate) name: Arc<str>,
    /// The name as casts and calls put it into the session (made once,
    /// shared).
    wire_name: Name,
    pub(crate) node: NodeId,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) queue: Arc<SendQueue>,
    pub(crate) wire: Arc<LinkWire>,
}

impl std::fmt::Debug for RemoteEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEndpoint")
            .field("name", &self.name)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl RemoteEndpoint {
    /// The endpoint of the server `name` on `node`, reached through the
    /// link whose driver takes `commands` and whose senders share `queue`
    /// and `wire`.
    pub(crate) fn new(
        name: Arc<str>,
        node: NodeId,
        commands: mpsc::UnboundedSender<Command>,
        queue: Arc<SendQueue>,
        wire: Arc<LinkWire>,
    ) -> Self {
        Self {
            wire_name: Name::from(&*name),
            name,
            node,
            commands,
            queue,
            wire,
        }
    }

    fn gone(&self) -> Error {
        Error::ServerStopped {
            name: self.name.to_string(),
            reason: format!("the link to node {} is down", self.node.short()),
        }
    }

    /// The error for a message the queue did not let in.
    fn refused(&self, full: Full) -> Error {
        match full {
            Full::Busy { queued, limit } => Error::LinkBusy {
                node: self.node.short(),
                queued,
                limit,
            },
            Full::Closed => self.gone(),
        }
    }

    /// Hand a cast or call, already counted in the link's queue, to the
    /// driver, behind the casts and calls already there (the lock held
    /// makes that order the order of the session).
    fn send(&self, w: &mut Wire, cmd: Command, len: usize) -> Result<(), Error> {
        match self.commands.send(cmd) {
            Ok(()) => {
                w.backlog += 1;
                Ok(())
            }
            Err(_) => {
                self.queue.release(self.queue.taken(len));
                Err(self.gone())
            }
        }
    }

    /// A cast into the session directly if it can go now, else to the
    /// driver; `admitted` when it was counted in the link's queue (given
    /// back if it goes directly), else it is counted here if there is room.
    /// The message is copied into the session, so it is only cloned when it
    /// goes to the driver.
    fn cast_now(
        &self,
        msg: &Bytes,
        trace: Option<TraceContext>,
        admitted: bool,
    ) -> Result<(), Full> {
        let len = msg.len();
        let mut w = self.wire.lock();
        let mut sent = self.wire.cast(&mut w, &self.wire_name, msg, trace);
        if matches!(sent, Direct::Full) {
            // Write what waits (unless someone else is writing it), and
            // try once more in the room that made.
            self.wire.flush(w);
            w = self.wire.lock();
            sent = self.wire.cast(&mut w, &self.wire_name, msg, trace);
        }
        match sent {
            Direct::Sent(()) => {}
            // As a cast through the driver would: the cast is dropped,
            // and only a debug log says why.
            Direct::Failed(err) => {
                tracing::debug!(to = %self.name, "cast not sent: {err}");
            }
            Direct::Queue | Direct::Full => {
                if !admitted {
                    self.queue.try_admit(len)?;
                }
                let cmd = Command::Cast {
                    to: self.name.clone(),
                    msg: msg.clone(),
                    trace,
                };
                return self.send(&mut w, cmd, len).map_err(|_| Full::Closed);
            }
        }
        drop(w);
        if admitted {
            self.queue.release(self.queue.taken(len));
        }
        Ok(())
    }

    /// A call into the session directly if it can go now, else to the
    /// driver (counted in the link's queue: `admitted` if it was already,
    /// given back if it goes directly).
    fn call_now(
        &self,
        msg: Bytes,
        trace: Option<TraceContext>,
        reply: ReplyTo,
        admitted: bool,
    ) -> Result<Option<ReplyTo>, Error> {
        let len = msg.len();
        let mut w = self.wire.lock();
        let reply = match self
            .wire
            .call(&mut w, (&self.wire_name, &self.name), &msg, trace, reply)
        {
            Ok(Direct::Sent(()) | Direct::Queue | Direct::Full) => None,
            Ok(Direct::Failed(err)) => {
                drop(w);
                if admitted {
                    self.queue.release(self.queue.taken(len));
                }
                return Err(err);
            }
            Err(reply) => Some(reply),
        };
        let Some(reply) = reply else {
            // Written now if the link has room.
            self.wire.flush(w);
            if admitted {
                self.queue.release(self.queue.taken(len));
            }
            return Ok(None);
        };
        if !admitted {
            // Not admitted yet: the caller waits for room, then comes back.
            return Ok(Some(reply));
        }
        let cmd = Command::Call {
            to: self.name.clone(),
            msg,
            trace,
            reply,
        };
        self.send(&mut w, cmd, len)?;
        Ok(None)
    }
}

#[async_trait]
impl Endpoint for RemoteEndpoint {
    fn try_cast(&self, msg: Bytes) -> Result<(), Error> {
        self.cast_now(&msg, current_trace(), false)
            .map_err(|f| self.refused(f))
    }

    fn cast(&self, msg: Bytes) -> Cast {
        let len = msg.len();
        let trace = current_trace();
        match self.cast_now(&msg, trace, false) {
            Ok(()) => Cast::done(Ok(())),
            Err(Full::Closed) => Cast::done(Err(self.gone())),
            Err(Full::Busy { .. }) => {
                let this = self.clone();
                Cast::waiting(async move {
                    this.queue.admit(len).await.map_err(|f| this.refused(f))?;
                    this.cast_now(&msg, trace, true)
                        .map_err(|f| this.refused(f))
                })
            }
        }
    }

    /// Waits for room in the link's queue as [`Endpoint::cast`] does.
    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        let (reply, answer) = oneshot::channel();
        let len = msg.len();
        let trace = current_trace();
        if let Some(reply) = self.call_now(msg.clone(), trace, reply, false)? {
            self.queue.admit(len).await.map_err(|f| self.refused(f))?;
            let _ = self.call_now(msg, trace, reply, true)?;
        }
        answer.await.map_err(|_| self.gone())?
    }

    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::OpenPipe {
                server: self.name.to_string(),
                port: port.to_owned(),
                end,
                reply,
            })
            .map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())?
    }
}

/// The kernel error a remote error stands for, as seen by a caller of
/// `server`.
pub(crate) fn from_remote(server: &str, err: RemoteError) -> Error {
    match err.kind {
        RemoteErrorKind::NotFound => Error::NotFound(server.to_owned()),
        RemoteErrorKind::Stopped => Error::ServerStopped {
            name: server.to_owned(),
            reason: err.message,
        },
        RemoteErrorKind::Decode => Error::Decode(err.message),
        RemoteErrorKind::Denied => Error::PermissionDenied {
            name: server.to_owned(),
            action: err.message,
        },
        RemoteErrorKind::Busy => Error::NodeBusy {
            name: server.to_owned(),
            reason: err.message,
        },
        RemoteErrorKind::Timeout | RemoteErrorKind::Failed | RemoteErrorKind::Other(_) => {
            Error::Remote {
                name: server.to_owned(),
                message: err.message,
            }
        }
    }
}

/// The remote error that carries a local server's failure to the caller.
pub(crate) fn to_remote(err: &Error) -> RemoteError {
    let kind = match err {
        Error::NotFound(_) => RemoteErrorKind::NotFound,
        Error::ServerStopped { .. } => RemoteErrorKind::Stopped,
        Error::Decode(_) => RemoteErrorKind::Decode,
        Error::Timeout { .. } => RemoteErrorKind::Timeout,
        Error::PermissionDenied { .. } => RemoteErrorKind::Denied,
        Error::NodeBusy { .. } | Error::ServerBusy { .. } => RemoteErrorKind::Busy,
        _ => RemoteErrorKind::Failed,
    };
    let message = match err {
        Error::ServerStopped { reason, .. } => reason.clone(),
        Error::Decode(m) => m.clone(),
        Error::PermissionDenied { action, .. } => action.clone(),
        Error::NodeBusy { reason, .. } => reason.clone(),
        Error::Remote { message, .. } => message.clone(),
        other => other.to_string(),
    };
    RemoteError { kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_trip() {
        for err in [
            Error::NotFound("x".into()),
            Error::ServerStopped {
                name: "x".into(),
                reason: "failed: boom".into(),
            },
            Error::Decode("bad".into()),
            Error::NodeBusy {
                name: "x".into(),
                reason: "256 calls from this link are being served".into(),
            },
        ] {
            assert_eq!(from_remote("x", to_remote(&err)), err);
        }
        let remote = from_remote("x", to_remote(&Error::PipeClosed));
        assert!(matches!(remote, Error::Remote { .. }));
    }
}
