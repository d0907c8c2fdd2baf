//! What a session reports to its driver: [`Event`].

use bytes::Bytes;

use super::{CallId, CloseReason, PeerInfo, PipeId};
use crate::wire::Name;
use crate::wire::packet::{EntryInfo, RemoteError, RouteInfo};
use crate::{ExitReason, NodeId};

/// Something the application (the node driver) must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake finished: the application calls are available.
    Connected(Box<PeerInfo>),
    /// The peer announced a registry entry.
    PeerAnnounced(Box<EntryInfo>),
    /// The peer forwarded a registry entry of another node.
    PeerRouted(Box<EntryInfo>, RouteInfo),
    /// The peer withdrew a registry entry.
    PeerWithdrew {
        /// The entry's id on the peer.
        id: u64,
        /// Why it left.
        reason: ExitReason,
    },
    /// A one-way message for the server named `to` on this node.
    Cast {
        /// Target server name (a group name picks a member here).
        to: Name,
        /// The message.
        payload: Bytes,
    },
    /// A request for the server named `to`; answer with
    /// [`Session::reply`](super::Session::reply).
    Call {
        /// Correlation id to reply with.
        id: CallId,
        /// Target server name.
        to: Name,
        /// The request.
        payload: Bytes,
    },
    /// The answer to a call made with [`Session::call`](super::Session::call).
    Reply {
        /// The call's id.
        id: CallId,
        /// The answer.
        result: Result<Bytes, RemoteError>,
    },
    /// The peer opened a pipe to port `port` of server `server` here.
    PipeOpened {
        /// The pipe.
        id: PipeId,
        /// Target server name.
        server: String,
        /// Target port.
        port: String,
    },
    /// One frame arrived on a pipe. Call
    /// [`Session::pipe_consumed`](super::Session::pipe_consumed) once the
    /// reader took it, or the peer runs out of credit.
    PipeData {
        /// The pipe.
        id: PipeId,
        /// The frame, exactly as given to `pipe_send`.
        bytes: Bytes,
    },
    /// A pipe that refused a send has credit again.
    PipeWritable {
        /// The pipe.
        id: PipeId,
    },
    /// The peer will send no more on a pipe (half-close: it still reads,
    /// and the pipe stays open until one side closes it).
    PipeEnded {
        /// The pipe.
        id: PipeId,
    },
    /// The peer closed a pipe.
    PipeClosed {
        /// The pipe.
        id: PipeId,
        /// Why.
        reason: ExitReason,
    },
    /// The send queue that refused a message has room again.
    Writable,
    /// A new session's peer asked to resume an earlier session of this
    /// node instead (its Hello named our session `session`). Hand the
    /// link to that session with [`Session::resume`](super::Session::resume)
    /// (passing `hello`), or refuse with
    /// [`Session::refuse_resume`](super::Session::refuse_resume). Nothing
    /// else happens on this session until then.
    ResumeRequested {
        /// The peer's node id (as claimed; a secure session proves it
        /// during the resumption).
        node: NodeId,
        /// The peer's session id.
        peer_session: u64,
        /// Our session id the peer wants to resume.
        session: u64,
        /// The peer's Hello, exactly as received.
        hello: Bytes,
    },
    /// The link was lost, the session is kept for its resume grace: give it
    /// a new link with [`Session::resume`](super::Session::resume). Calls,
    /// pipes and queued messages wait.
    Detached {
        /// Why the link was lost.
        reason: String,
    },
    /// The session resumed on a new link: what the peer had not
    /// acknowledged is sent again, duplicates are discarded.
    Resumed,
    /// The session is over. Nothing more comes; outstanding calls and open
    /// pipes are void.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}
