//! The one error type of the kernel.

use std::time::Duration;

/// Everything that can go wrong in the kernel.
///
/// Variants are grouped by the part of the kernel that returns them. Each one
/// says what failed in words a user can act on; none of them is ever produced
/// by a panic.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    // ----- pipes -----
    /// The other end of the pipe is gone (its reader was dropped or closed),
    /// so nothing written now can ever be read.
    #[error("pipe closed: the reading end is gone")]
    PipeClosed,
    /// A non-blocking write found the pipe full.
    #[error("pipe full: {capacity} bytes are already buffered")]
    PipeFull {
        /// The pipe's capacity in bytes.
        capacity: usize,
    },

    /// A frame is longer than the pipe takes (for a pipe to another node,
    /// the peer's pipe window). It was not written; the pipe stays open.
    #[error("pipe frame of {len} bytes is longer than the {max} bytes this pipe takes")]
    FrameTooLarge {
        /// The frame's length in bytes.
        len: usize,
        /// The longest frame the pipe takes.
        max: usize,
    },

    /// A plumbing task (connect, split, merge) was aborted or panicked.
    #[error("pipe task ended abnormally: {0}")]
    PipeTask(String),

    // ----- registry -----
    /// `register` was called with a name that another server already holds.
    #[error("name {name:?} is already registered{}", if *.group { " as a group (join the group instead)" } else { "" })]
    NameTaken {
        /// The contested name.
        name: String,
        /// True when the holder is a group, so joining it would have worked.
        group: bool,
    },
    /// A name that is not a valid server name.
    #[error("invalid server name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No server is registered under this name.
    #[error("no server named {0:?}")]
    NotFound(String),

    // ----- endpoints (delivery to a server, local or remote) -----
    /// The server stopped before it could take or answer the message.
    #[error("server {name:?} stopped: {reason}")]
    ServerStopped {
        /// The server's name.
        name: String,
        /// Why it stopped, as far as is known.
        reason: String,
    },
    /// The server's mailbox is full: it has `limit` messages waiting, and
    /// this one was not queued. Retry later, or slow down.
    #[error(
        "server {name:?} is busy: {limit} messages wait in its mailbox; this one was not queued"
    )]
    ServerBusy {
        /// The server's name.
        name: String,
        /// The mailbox's bound.
        limit: usize,
    },
    /// The call was not answered in time. The server may still process it.
    #[error("call to {name:?} timed out after {after:?}")]
    Timeout {
        /// The server's name.
        name: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// A message could not be decoded by its receiver.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// A message could not be encoded by its sender.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The server took the message but answered with an error.
    #[error("server {name:?} answered with an error: {message}")]
    Remote {
        /// The server's name.
        name: String,
        /// The error text the server sent back.
        message: String,
    },
    /// The server has no port of that name to attach a pipe to.
    #[error("server {name:?} has no pipe port {port:?}")]
    NoSuchPort {
        /// The server's name.
        name: String,
        /// The requested port.
        port: String,
    },

    // ----- addresses -----
    /// A string that is not a valid oscloud address.
    #[error("invalid address {input:?}: {reason}")]
    InvalidAddress {
        /// The string that failed to parse.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    // ----- nodes -----
    /// A link could not be brought up (the transport connected, but the
    /// session did not start).
    #[error("link to {address} failed: {reason}")]
    LinkFailed {
        /// The address dialled.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The link to a node was lost and did not come back within the
    /// resume grace period (`NodeConfig::resume_grace`): the call was
    /// void (it may or may not have run on the peer).
    #[error(
        "the link to node {node} was lost and not resumed within the grace period of {grace:?} \
         (call to {name:?} failed: {reason})"
    )]
    LinkNotResumed {
        /// The server called.
        name: String,
        /// The peer node (short id).
        node: String,
        /// `NodeConfig::resume_grace`.
        grace: Duration,
        /// How the session ended.
        reason: String,
    },
    /// Messages for a linked node are piling up faster than its link
    /// carries them: this one was not sent. Returned only by the calls
    /// that do not wait for room (`Endpoint::try_cast` and the `try_cast`
    /// of the layers above); `cast` and `call` wait instead.
    #[error(
        "the link to node {node} is busy: {queued} bytes of messages wait to be sent \
         (limit {limit}); this message was not sent"
    )]
    LinkBusy {
        /// The peer node (short id).
        node: String,
        /// Bytes of casts and calls waiting for the link.
        queued: usize,
        /// `NodeConfig::max_queued`.
        limit: usize,
    },

    /// The node of server `name` took the call but did not serve it (remote
    /// error kind Busy): it already serves as many calls from this link as
    /// it takes at once, or holds as many bytes of them as its link budget
    /// allows, or the server's mailbox is full there. Nothing was done;
    /// retry later, or slow down.
    #[error("the node of server {name:?} is busy: {reason}; the call was not served")]
    NodeBusy {
        /// The server called.
        name: String,
        /// What the serving node said.
        reason: String,
    },

    // ----- transports -----
    /// No transport serves the address's scheme.
    #[error("no transport for scheme {scheme:?} (known: {known})")]
    UnknownScheme {
        /// The scheme asked for.
        scheme: String,
        /// The schemes served, comma-separated.
        known: String,
    },
    /// Nobody accepts links at the address.
    #[error("connection refused by {address}")]
    ConnectionRefused {
        /// The address dialled.
        address: String,
    },
    /// The address cannot be reached (no route, unknown host, timeout).
    #[error("{address} is unreachable: {reason}")]
    Unreachable {
        /// The address dialled.
        address: String,
        /// Why.
        reason: String,
    },
    /// Something else listens at the address already.
    #[error("address {address} is already in use")]
    AddressInUse {
        /// The address.
        address: String,
    },
    /// The address names a file system path that cannot be used.
    #[error("bad path in {address}: {reason}")]
    BadPath {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// Another I/O error on a link.
    #[error("I/O error on {address}: {message}")]
    Io {
        /// The address.
        address: String,
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error's text.
        message: String,
    },

    // ----- wire protocol -----
    /// The wire session is closed; the text says why.
    #[error("wire session closed: {reason}")]
    WireClosed {
        /// Why the session closed.
        reason: String,
    },
    /// The wire session has not finished its handshake yet: wait for
    /// `wire::Event::Connected`.
    #[error("wire session not connected yet (wait for the Connected event)")]
    WireNotConnected,
    /// The wire session cannot take more now: its send queue is full, or a
    /// pipe has no credit left. A `Writable`/`PipeWritable` event follows
    /// when it can.
    #[error("wire session would block: {what}")]
    WireWouldBlock {
        /// What is exhausted.
        what: &'static str,
    },
    /// A frame or message larger than the link or the peer accepts.
    #[error("wire frame of {len} bytes exceeds the limit of {max} bytes")]
    WireFrameTooLarge {
        /// The frame's length in bytes.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// A configured per-session limit was reached.
    #[error("wire limit reached: at most {limit} {what}")]
    WireLimit {
        /// What is limited.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// No pipe with this id was ever opened on the session.
    #[error("unknown wire pipe {0}")]
    WireUnknownPipe(u64),
    /// No call with this id is waiting for a reply.
    #[error("unknown wire call {0}")]
    WireUnknownCall(u64),
    /// The peer broke the wire protocol, or sent bytes that do not decode.
    #[error("wire protocol error: {0}")]
    WireProtocol(String),
    /// A wire session configuration that cannot work.
    #[error("invalid wire configuration: {0}")]
    WireConfig(String),
    /// A `traceparent` text that is not a W3C Trace Context header of a
    /// version this code reads (see [`TraceContext`](crate::trace::TraceContext)).
    #[error("invalid traceparent {text:?}: {reason}")]
    BadTraceparent {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A node setting given as text ([`NodeConfig::set`](crate::NodeConfig::set))
    /// that is unknown or whose value does not parse or is out of range.
    #[error("invalid node setting {key:?}: {reason}")]
    BadSetting {
        /// The setting's key as given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    // ----- identity and access control -----
    /// A key, allow-list or access-policy file (or text) that cannot be
    /// used: unreadable, malformed, or readable by others.
    #[error("{what} {path}: {reason}")]
    BadKeyFile {
        /// What the file is ("node key", "allow-list", "access policy").
        what: &'static str,
        /// The file (or `<text>` for text given directly).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The access policy of the node that owns the server does not let
    /// the caller do this.
    #[error("permission denied: {action} on server {name:?}")]
    PermissionDenied {
        /// The server's name.
        name: String,
        /// What was refused ("call", "cast", "open a pipe to", "look up").
        action: String,
    },
}

/// Shorthand for results whose error is the kernel's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
