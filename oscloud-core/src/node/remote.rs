//! Endpoints of servers that live on a linked node.

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
    /// A local server accepted or refused a pipe the peer opened.
    PipeAttached {
        pipe: crate::wire::PipeId,
        result: Result<(), Error>,
    },
}

/// The endpoint of a server on another node: every operation becomes a
/// [`Command`] for the driver of the link to that node.
#[derive(Debug)]
pub(crate) struct RemoteEndpoint {
    pub(crate) name: String,
    pub(crate) node: NodeId,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

impl RemoteEndpoint {
    fn gone(&self) -> Error {
        Error::ServerStopped {
            name: self.name.clone(),
            reason: format!("the link to node {} is down", self.node.short()),
        }
    }
}

#[async_trait]
impl Endpoint for RemoteEndpoint {
    fn cast(&self, msg: Bytes) -> Result<(), Error> {
        self.commands
            .send(Command::Cast {
                to: self.name.clone(),
                msg,
            })
            .map_err(|_| self.gone())
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Call {
                to: self.name.clone(),
                msg,
                reply,
            })
            .map_err(|_| self.gone())?;
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
        _ => RemoteErrorKind::Failed,
    };
    let message = match err {
        Error::ServerStopped { reason, .. } => reason.clone(),
        Error::Decode(m) => m.clone(),
        Error::PermissionDenied { action, .. } => action.clone(),
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
        ] {
            assert_eq!(from_remote("x", to_remote(&err)), err);
        }
        let remote = from_remote("x", to_remote(&Error::PipeClosed));
        assert!(matches!(remote, Error::Remote { .. }));
    }
}
