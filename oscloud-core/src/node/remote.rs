//! Endpoints of servers that live on a linked node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::wire::{RemoteError, RemoteErrorKind};
use crate::{Endpoint, Error, NodeId, PipeEnd};

/// What a [`RemoteEndpoint`] (or anything else on this node) asks a link's
/// driver to do. The driver owns the session; everything else talks to it
/// through these.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a one-way message to `to` on the peer.
    Cast { to: String, msg: Bytes },
    /// Send a request to `to` on the peer; answer on `reply`.
    Call {
        to: String,
        msg: Bytes,
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
#[derive(Debug)]
pub(crate) struct SendQueue {
    bytes: AtomicUsize,
    limit: usize,
}

impl SendQueue {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            bytes: AtomicUsize::new(0),
            limit,
        }
    }

    /// Count `n` more bytes in, unless that goes over the limit (a single
    /// message larger than the limit goes when the queue is empty).
    fn admit(&self, n: usize, node: NodeId) -> Result<(), Error> {
        let before = self.bytes.fetch_add(n, Ordering::AcqRel);
        if before > 0 && before + n > self.limit {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(Error::LinkBusy {
                node: node.short(),
                queued: before,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// The driver took `n` bytes out.
    pub(crate) fn release(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The endpoint of a server on another node: every operation becomes a
/// [`Command`] for the driver of the link to that node.
#[derive(Debug)]
pub(crate) struct RemoteEndpoint {
    pub(crate) name: String,
    pub(crate) node: NodeId,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) queue: Arc<SendQueue>,
}

impl RemoteEndpoint {
    fn gone(&self) -> Error {
        Error::ServerStopped {
            name: self.name.clone(),
            reason: format!("the link to node {} is down", self.node.short()),
        }
    }

    /// Queue a cast or call for the driver, within the link's budget.
    fn queue(&self, cmd: Command, len: usize) -> Result<(), Error> {
        self.queue.admit(len, self.node)?;
        self.commands.send(cmd).map_err(|_| {
            self.queue.release(len);
            self.gone()
        })
    }
}

#[async_trait]
impl Endpoint for RemoteEndpoint {
    fn cast(&self, msg: Bytes) -> Result<(), Error> {
        let len = msg.len();
        let cmd = Command::Cast {
            to: self.name.clone(),
            msg,
        };
        self.queue(cmd, len)
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        let (reply, answer) = oneshot::channel();
        let len = msg.len();
        let cmd = Command::Call {
            to: self.name.clone(),
            msg,
            reply,
        };
        self.queue(cmd, len)?;
        answer.await.map_err(|_| self.gone())?
    }

    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::OpenPipe {
                server: self.name.clone(),
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
