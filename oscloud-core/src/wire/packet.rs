//! Packets: what one link frame carries, as msgpack arrays.
//!
//! Every packet and every message is a msgpack **array whose first element
//! is a small integer type code**; the remaining elements are positional.
//! Rust names never appear on the wire. Receivers ignore extra trailing
//! elements (room for later versions) and reject missing ones. The exact
//! layouts are in `docs/PROTOCOL.md` and pinned by the golden tests below.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::name::{Name, NameSeed};
use crate::{Capabilities, Error, ExitReason, NodeId, PortDirection, TraceContext};

/// `"OSCL"` as a big-endian u32: the first field of every Hello.
pub const MAGIC: u32 = 0x4F53_434C;
/// The protocol version this code speaks.
pub const VERSION: u32 = 1;

/// Packet type codes (first array element of a packet).
pub(crate) mod code {
    pub(crate) const HELLO: u8 = 1;
    pub(crate) const HELLO_ACK: u8 = 2;
    pub(crate) const DATA: u8 = 3;
    pub(crate) const ACK: u8 = 4;
    pub(crate) const PING: u8 = 5;
    pub(crate) const CLOSE: u8 = 6;
    pub(crate) const HANDSHAKE: u8 = 7;

    pub(crate) const ANNOUNCE: u8 = 16;
    pub(crate) const WITHDRAW: u8 = 17;
    pub(crate) const ROUTE: u8 = 18;
    pub(crate) const CAST: u8 = 32;
    pub(crate) const CALL: u8 = 33;
    pub(crate) const REPLY_OK: u8 = 34;
    pub(crate) const REPLY_ERR: u8 = 35;
    pub(crate) const PIPE_OPEN: u8 = 48;
    pub(crate) const PIPE_DATA: u8 = 49;
    pub(crate) const PIPE_CREDIT: u8 = 50;
    pub(crate) const PIPE_CLOSE: u8 = 51;
    pub(crate) const PIPE_END: u8 = 52;
}

/// A registry entry as announced to the peer. The name and capabilities
/// are shared (cheap to clone): one copy per server serves its registry
/// entry, its routes and what every link announces of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The entry's id on the announcing node (used by `withdraw`).
    pub id: u64,
    /// The server's name.
    pub name: Arc<str>,
    /// What the server advertises.
    pub capabilities: Arc<Capabilities>,
    /// Whether the entry is one member of a group.
    pub group: bool,
}

/// The most node ids a route announcement may carry in its path; longer
/// paths are rejected by the decoder (the node's hop limit is lower).
pub const MAX_ROUTE_PATH: usize = 32;

/// Where a forwarded entry comes from (`docs/PROTOCOL.md` §4.1, §13): sent
/// with a Route message, only to peers that set
/// [`FEATURE_ROUTING`](crate::wire::FEATURE_ROUTING).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The entry's id on the node the server lives on.
    pub origin_id: u64,
    /// The nodes the announcement went through: the node the server lives
    /// on first, the announcing node last; 1 to [`MAX_ROUTE_PATH`] ids.
    /// Shared: the route a node announces to each of its neighbours is
    /// one path.
    pub path: Arc<[NodeId]>,
    /// The cost of the route from the announcing node to the server (the
    /// sum of the link costs on the way; 0 for the announcer's own server).
    pub cost: u32,
    /// The longest pipe frame the route carries from the announcing node
    /// to the server: the smallest pipe window of the nodes after it on
    /// the path. `None` when the announcer did not say (a node that does
    /// not know this element): only the first link's window is known.
    pub pipe_frame: Option<u32>,
}

/// Why a remote call failed, as a small code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteErrorKind {
    /// The receiving node has no server of that name (code 1).
    NotFound,
    /// The server stopped before it answered (code 2).
    Stopped,
    /// The server did not answer in time (code 3).
    Timeout,
    /// The server could not decode the request (code 4).
    Decode,
    /// The server answered with an application error (code 5).
    Failed,
    /// The receiving node's access policy refuses the caller (code 6).
    Denied,
    /// The receiving node serves as many of this link's calls as it takes
    /// at once (`max_serving`) or holds as many bytes of them as it takes
    /// (`link_budget`): the call was not served; retry later (code 7).
    Busy,
    /// A code this version does not know (kept as is).
    Other(u8),
}

impl RemoteErrorKind {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            RemoteErrorKind::NotFound => 1,
            RemoteErrorKind::Stopped => 2,
            RemoteErrorKind::Timeout => 3,
            RemoteErrorKind::Decode => 4,
            RemoteErrorKind::Failed => 5,
            RemoteErrorKind::Denied => 6,
            RemoteErrorKind::Busy => 7,
            RemoteErrorKind::Other(c) => c,
        }
    }

    /// The kind for a wire code.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => RemoteErrorKind::NotFound,
            2 => RemoteErrorKind::Stopped,
            3 => RemoteErrorKind::Timeout,
            4 => RemoteErrorKind::Decode,
            5 => RemoteErrorKind::Failed,
            6 => RemoteErrorKind::Denied,
            7 => RemoteErrorKind::Busy,
            c => RemoteErrorKind::Other(c),
        }
    }
}

/// The error half of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// What kind of failure.
    pub kind: RemoteErrorKind,
    /// Human-readable details.
    pub message: String,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "remote error {}: {}", self.kind.code(), self.message)
    }
}

/// Why a session closed, as a small code (sent in the Close packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// Closed on purpose (0).
    Normal,
    /// The peer broke the protocol (1).
    Protocol,
    /// Unsupported protocol version (2).
    Version,
    /// The Hello did not start with the magic number (3).
    BadMagic,
    /// A frame longer than the limit (4).
    FrameTooLarge,
    /// A packet that does not decode (5).
    Decode,
    /// A pipe id that was never opened (6).
    UnknownPipe,
    /// More pipe data than the credit allowed (7).
    FlowControl,
    /// A per-session limit was exceeded (8).
    Limit,
    /// Nothing heard from the peer for the idle timeout (9).
    IdleTimeout,
    /// The secure handshake failed or the peer is not admitted (10).
    Unauthorized,
    /// An encrypted frame failed authentication or was replayed (11).
    Crypto,
    /// The peer asked to resume a session this side does not have (12):
    /// it restarted, or the grace period passed.
    NoSession,
    /// A code this version does not know.
    Other(u8),
}

impl CloseCode {
    /// How many codes this version knows (0 to `KNOWN - 1`); the others
    /// are [`CloseCode::Other`].
    pub const KNOWN: u8 = 13;

    /// Its name in `docs/PROTOCOL.md` §5.4 (`"Other"` for a code this
    /// version does not know).
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::Normal => "Normal",
            CloseCode::Protocol => "Protocol",
            CloseCode::Version => "Version",
            CloseCode::BadMagic => "BadMagic",
            CloseCode::FrameTooLarge => "FrameTooLarge",
            CloseCode::Decode => "Decode",
            CloseCode::UnknownPipe => "UnknownPipe",
            CloseCode::FlowControl => "FlowControl",
            CloseCode::Limit => "Limit",
            CloseCode::IdleTimeout => "IdleTimeout",
            CloseCode::Unauthorized => "Unauthorized",
            CloseCode::Crypto => "Crypto",
            CloseCode::NoSession => "NoSession",
            CloseCode::Other(_) => "Other",
        }
    }

    /// Where closes with this code are counted, in arrays of
    /// `KNOWN + 1` counters: the wire code for the known ones,
    /// [`KNOWN`](Self::KNOWN) for every other.
    pub fn index(self) -> usize {
        usize::from(self.code().min(Self::KNOWN))
    }

    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::Protocol => 1,
            CloseCode::Version => 2,
            CloseCode::BadMagic => 3,
            CloseCode::FrameTooLarge => 4,
            CloseCode::Decode => 5,
            CloseCode::UnknownPipe => 6,
            CloseCode::FlowControl => 7,
            CloseCode::Limit => 8,
            CloseCode::IdleTimeout => 9,
            CloseCode::Unauthorized => 10,
            CloseCode::Crypto => 11,
            CloseCode::NoSession => 12,
            CloseCode::Other(c) => c,
        }
    }

    /// The close code for a wire code.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => CloseCode::Normal,
            1 => CloseCode::Protocol,
            2 => CloseCode::Version,
            3 => CloseCode::BadMagic,
            4 => CloseCode::FrameTooLarge,
            5 => CloseCode::Decode,
            6 => CloseCode::UnknownPipe,
            7 => CloseCode::FlowControl,
            8 => CloseCode::Limit,
            9 => CloseCode::IdleTimeout,
            10 => CloseCode::Unauthorized,
            11 => CloseCode::Crypto,
            12 => CloseCode::NoSession,
            c => CloseCode::Other(c),
        }
    }
}

/// The Hello: who a side is and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) node: NodeId,
    pub(crate) features: u64,
    pub(crate) session_id: u64,
    pub(crate) auth: Option<Bytes>,
    pub(crate) max_frame: u32,
    pub(crate) recv_window: u32,
    pub(crate) pipe_window: u32,
    /// A request to resume an earlier session (`docs/PROTOCOL.md` §12):
    /// sent as an 11th element only when present.
    pub(crate) resume: Option<Resume>,
}

/// The resume field of a Hello: `[session_id, ack]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// The receiver's session id, as in its Hello of the session resumed.
    pub(crate) session: u64,
    /// The sender's cumulative acknowledgement of the receiver's stream.
    pub(crate) ack: u64,
}

/// One link frame's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Packet {
    Hello(Box<Hello>),
    /// A Hello whose magic or version is not ours (rest not decoded).
    ForeignHello {
        magic: u32,
        version: u32,
    },
    HelloAck {
        session_id: u64,
    },
    Data {
        seq: u64,
        ack: u64,
        msg: Msg,
    },
    Ack {
        ack: u64,
    },
    Ping,
    Close {
        code: CloseCode,
        message: String,
    },
    /// One Noise handshake message (secure sessions, sent in clear).
    Handshake {
        msg: Bytes,
    },
}

/// A reliable, ordered message (carried by a Data packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Msg {
    Announce(Box<EntryInfo>),
    /// An entry of another node, forwarded by the sender.
    Route(Box<EntryInfo>, RouteInfo),
    Withdraw {
        id: u64,
        reason: ExitReason,
    },
    Cast {
        to: Name,
        payload: Bytes,
        trace: Trace,
    },
    Call {
        id: u64,
        to: Name,
        payload: Bytes,
        trace: Trace,
    },
    ReplyOk {
        id: u64,
        payload: Bytes,
    },
    ReplyErr {
        id: u64,
        error: RemoteError,
    },
    PipeOpen {
        pipe: u64,
        server: String,
        port: String,
    },
    PipeData {
        pipe: u64,
        last: bool,
        data: Bytes,
    },
    PipeCredit {
        pipe: u64,
        bytes: u64,
    },
    PipeClose {
        pipe: u64,
        reason: ExitReason,
    },
    /// The sender writes no more on the pipe (half-close); it still reads.
    PipeEnd {
        pipe: u64,
    },
}

/// The optional `trace` element of a Cast or Call (`docs/PROTOCOL.md`
/// §4.2), as sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Trace {
    /// No element: the sender has no context (nothing is encoded).
    #[default]
    None,
    /// A trace context.
    Context(TraceContext),
    /// An element that is not a bin of 25 bytes with non-zero ids: the
    /// message is delivered without a context, and the receiver counts it
    /// as dropped. Encoded as no element.
    Ignored,
}

impl Trace {
    /// The context, if there is one.
    pub(crate) fn context(self) -> Option<TraceContext> {
        match self {
            Trace::Context(t) => Some(t),
            Trace::None | Trace::Ignored => None,
        }
    }
}

impl From<Option<TraceContext>> for Trace {
    fn from(t: Option<TraceContext>) -> Self {
        t.map_or(Trace::None, Trace::Context)
    }
}

/// A `trace` element being decoded: any msgpack value; a bin of the right
/// size with non-zero ids is a context, anything else is ignored.
struct TraceSeed;

impl<'de> DeserializeSeed<'de> for TraceSeed {
    type Value = Trace;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Trace, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Trace;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a trace context")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Trace, E> {
                Ok(TraceContext::from_bytes(v).map_or(Trace::Ignored, Trace::Context))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Trace, A::Error> {
                drain(&mut seq)?;
                Ok(Trace::Ignored)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Trace, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Trace::Ignored)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Trace, E> {
                Ok(Trace::Ignored)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Trace, E> {
                Ok(Trace::Ignored)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Trace, E> {
                Ok(Trace::Ignored)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Trace, E> {
                Ok(Trace::Ignored)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Trace, E> {
                Ok(Trace::Ignored)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Trace, E> {
                Ok(Trace::Ignored)
            }
            fn visit_none<E: de::Error>(self) -> Result<Trace, E> {
                Ok(Trace::Ignored)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Trace, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Trace, D::Error> {
                d.deserialize_any(V)
            }
        }
        d.deserialize_any(V)
    }
}

/// Largest overhead of a Data packet around its message: array header,
/// type, two u64 varints.
pub(crate) const DATA_OVERHEAD: usize = 1 + 1 + 9 + 9;
/// Largest overhead of a PipeData message around its bytes.
pub(crate) const PIPE_DATA_OVERHEAD: usize = 1 + 1 + 9 + 1 + 5;

// ----- encoding -----

struct B<'a>(&'a [u8]);
impl Serialize for B<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Capabilities: four elements, and a fifth, the ports, only when the
/// server has some (so an entry without ports encodes as before ports
/// existed, `docs/PROTOCOL.md` §5.1).
struct Caps<'a>(&'a Capabilities);
impl Serialize for Caps<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ports = &self.0.ports;
        let mut t = s.serialize_tuple(if ports.is_empty() { 4 } else { 5 })?;
        t.serialize_element(&self.0.accepts)?;
        t.serialize_element(&self.0.produces)?;
        t.serialize_element(&self.0.features)?;
        t.serialize_element(&self.0.metadata)?;
        if !ports.is_empty() {
            t.serialize_element(&Ports(ports))?;
        }
        t.end()
    }
}

/// `[[name, direction], …]`, sorted by name.
struct Ports<'a>(&'a BTreeMap<String, PortDirection>);
impl Serialize for Ports<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for (name, dir) in self.0 {
            t.serialize_element(&(name, dir.code()))?;
        }
        t.end()
    }
}

struct Reason<'a>(&'a ExitReason);
impl Serialize for Reason<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (code, text) = match self.0 {
            ExitReason::Normal => (0u8, ""),
            ExitReason::Failed(t) => (1, t.as_str()),
            ExitReason::LinkDown(t) => (2, t.as_str()),
        };
        (code, text).serialize(s)
    }
}

struct Path<'a>(&'a [NodeId]);
impl Serialize for Path<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for n in self.0 {
            t.serialize_element(&B(&n.as_bytes()[..]))?;
        }
        t.end()
    }
}

/// A message serialised with its payload left empty: the head of a split
/// encoding (see [`Packet::encode_split`]).
struct Head<'a>(&'a Msg);

impl Serialize for Head<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_with(s, true)
    }
}

impl Serialize for Msg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_with(s, false)
    }
}

impl Msg {
    /// The payload carried last in this message, if it has one (a Cast or
    /// Call with a trace context carries the context after it).
    fn payload(&self) -> Option<&Bytes> {
        match self {
            Msg::Cast { payload, .. }
            | Msg::Call { payload, .. }
            | Msg::ReplyOk { payload, .. } => Some(payload),
            Msg::PipeData { data, .. } => Some(data),
            _ => None,
        }
    }

    /// At least as many bytes as the message encodes to, found without
    /// encoding it: for the casts and calls without a trace context (each
    /// header counted at its largest), `None` for the rest.
    pub(crate) fn encoded_len_bound(&self) -> Option<usize> {
        // An array header, the code, the call id, the name's and the
        // payload's headers.
        const ARRAY: usize = 1;
        const CODE: usize = 2;
        const ID: usize = 9;
        const STR_BIN: usize = 5;
        match self {
            Msg::Cast { to, payload, trace } if trace.context().is_none() => {
                Some(ARRAY + CODE + STR_BIN + to.len() + STR_BIN + payload.len())
            }
            Msg::Call {
                to, payload, trace, ..
            } if trace.context().is_none() => {
                Some(ARRAY + CODE + ID + STR_BIN + to.len() + STR_BIN + payload.len())
            }
            _ => None,
        }
    }

    /// Whether this is a Cast or Call that carries a trace context.
    fn has_trace(&self) -> bool {
        match self {
            Msg::Cast { trace, .. } | Msg::Call { trace, .. } => trace.context().is_some(),
            _ => false,
        }
    }

    fn serialize_with<S: Serializer>(&self, s: S, empty_payload: bool) -> Result<S::Ok, S::Error> {
        fn p(b: &Bytes, empty: bool) -> B<'_> {
            B(if empty { &[] } else { &b[..] })
        }
        let e = empty_payload;
        match self {
            Msg::Announce(e) => (
                code::ANNOUNCE,
                e.id,
                &*e.name,
                Caps(&e.capabilities),
                e.group,
            )
                .serialize(s),
            Msg::Route(e, r) => {
                let head = (
                    code::ROUTE,
                    e.id,
                    &*e.name,
                    Caps(&e.capabilities),
                    e.group,
                    r.origin_id,
                    Path(&r.path),
                    r.cost,
                );
                match r.pipe_frame {
                    // Appended last: a receiver that does not know it
                    // skips it.
                    Some(max) => {
                        let (c, id, name, caps, group, origin, path, cost) = head;
                        (c, id, name, caps, group, origin, path, cost, max).serialize(s)
                    }
                    None => head.serialize(s),
                }
            }
            Msg::Withdraw { id, reason } => (code::WITHDRAW, id, Reason(reason)).serialize(s),
            // The trace element is appended last, only when there is a
            // context: a receiver that does not know it skips it.
            Msg::Cast { to, payload, trace } => match trace.context() {
                None => (code::CAST, to, p(payload, e)).serialize(s),
                Some(t) => (code::CAST, to, p(payload, e), B(&t.to_bytes())).serialize(s),
            },
            Msg::Call {
                id,
                to,
                payload,
                trace,
            } => match trace.context() {
                None => (code::CALL, id, to, p(payload, e)).serialize(s),
                Some(t) => (code::CALL, id, to, p(payload, e), B(&t.to_bytes())).serialize(s),
            },
            Msg::ReplyOk { id, payload } => (code::REPLY_OK, id, p(payload, e)).serialize(s),
            Msg::ReplyErr { id, error } => {
                (code::REPLY_ERR, id, error.kind.code(), &error.message).serialize(s)
            }
            Msg::PipeOpen { pipe, server, port } => {
                (code::PIPE_OPEN, pipe, server, port).serialize(s)
            }
            Msg::PipeData { pipe, last, data } => {
                (code::PIPE_DATA, pipe, last, p(data, e)).serialize(s)
            }
            Msg::PipeCredit { pipe, bytes } => (code::PIPE_CREDIT, pipe, bytes).serialize(s),
            Msg::PipeClose { pipe, reason } => {
                (code::PIPE_CLOSE, pipe, Reason(reason)).serialize(s)
            }
            Msg::PipeEnd { pipe } => (code::PIPE_END, pipe).serialize(s),
        }
    }
}

impl Serialize for Packet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Packet::Hello(h) => {
                let head = (
                    code::HELLO,
                    MAGIC,
                    VERSION,
                    B(&h.node.as_bytes()[..]),
                    h.features,
                    h.session_id,
                    h.auth.as_deref().map(B),
                    h.max_frame,
                    h.recv_window,
                    h.pipe_window,
                );
                match h.resume {
                    None => head.serialize(s),
                    Some(r) => {
                        let (a, b, c, d, e, f, g, i, j, k) = head;
                        (a, b, c, d, e, f, g, i, j, k, (r.session, r.ack)).serialize(s)
                    }
                }
            }
            Packet::ForeignHello { magic, version } => (code::HELLO, magic, version).serialize(s),
            Packet::HelloAck { session_id } => (code::HELLO_ACK, session_id).serialize(s),
            Packet::Data { seq, ack, msg } => (code::DATA, seq, ack, msg).serialize(s),
            Packet::Ack { ack } => (code::ACK, ack).serialize(s),
            Packet::Ping => [code::PING].serialize(s),
            Packet::Close { code: c, message } => (code::CLOSE, c.code(), message).serialize(s),
            Packet::Handshake { msg } => (code::HANDSHAKE, B(msg)).serialize(s),
        }
    }
}

/// Encode a value as msgpack.
pub(crate) fn to_vec<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    to_vec_after(0, 0, v)
}

/// Encode a value as msgpack after `prefix` zero bytes, in a buffer with
/// room for `hint` bytes of encoding (it grows if that is too few).
fn to_vec_after<T: Serialize>(prefix: usize, hint: usize, v: &T) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(prefix + hint);
    buf.resize(prefix, 0);
    rmp_serde::encode::write(&mut buf, v).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(buf)
}

/// How many bytes a value encodes to as msgpack, found without keeping
/// (or allocating for) the encoding.
pub(crate) fn encoded_len<T: Serialize>(v: &T) -> Result<usize, Error> {
    /// A writer that only counts.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    rmp_serde::encode::write(&mut count, v).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(count.0)
}

/// The head of a Data packet carrying PipeData, up to and including its
/// bin length, after `prefix` zero bytes (see
/// [`fast_encode::pipe_data_head`](super::fast_encode::pipe_data_head)),
/// for the message every large pipe frame sends.
fn pipe_data_head(
    prefix: usize,
    seq: u64,
    ack: u64,
    pipe: u64,
    last: bool,
    len: usize,
) -> Result<Vec<u8>, Error> {
    if u32::try_from(len).is_err() {
        return Err(Error::Encode("payload over 4 GiB".into()));
    }
    let mut head = Vec::with_capacity(prefix + PIPE_DATA_OVERHEAD + DATA_OVERHEAD);
    head.resize(prefix, 0);
    super::fast_encode::pipe_data_head(&mut head, seq, ack, pipe, last, len);
    Ok(head)
}

/// Room for a packet's encoding apart from its payload: enough for every
/// header field and a short server or port name, so that encoding a small
/// packet allocates once.
const HEAD_HINT: usize = 96;

impl Packet {
    /// The packet as msgpack bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, Error> {
        to_vec(self)
    }

    /// The packet as msgpack bytes in two parts, `head ‖ tail`, without
    /// copying a large payload: a Data packet's message payload is the last
    /// thing encoded, so `tail` is the payload itself (shared, not copied)
    /// and `head` everything before it, up to and including its bin length.
    /// Small payloads and other packets come whole in `head`.
    #[cfg(test)]
    pub(crate) fn encode_split(&self) -> Result<(Vec<u8>, Bytes), Error> {
        self.encode_split_after(0)
    }

    /// [`encode_split`](Self::encode_split) with `prefix` zero bytes before
    /// the head (room for a framing's length prefix, filled in place).
    pub(crate) fn encode_split_after(&self, prefix: usize) -> Result<(Vec<u8>, Bytes), Error> {
        let Packet::Data { seq, ack, msg } = self else {
            return Ok((to_vec_after(prefix, HEAD_HINT, self)?, Bytes::new()));
        };
        if let Msg::PipeData { pipe, last, data } = msg
            && data.len() >= SPLIT_MIN
        {
            return Ok((
                pipe_data_head(prefix, *seq, *ack, *pipe, *last, data.len())?,
                data.clone(),
            ));
        }
        // A traced Cast or Call has its context after the payload: whole.
        let Some(payload) = msg
            .payload()
            .filter(|p| p.len() >= SPLIT_MIN && !msg.has_trace())
        else {
            let hint = HEAD_HINT + msg.payload().map_or(0, Bytes::len);
            return Ok((to_vec_after(prefix, hint, self)?, Bytes::new()));
        };
        // Encode with an empty payload (`c4 00` at the very end), then put
        // the real bin length in its place.
        let mut head = to_vec_after(prefix, HEAD_HINT, &(code::DATA, seq, ack, Head(msg)))?;
        if !head.ends_with(&[0xc4, 0x00]) {
            return Err(Error::Encode("unexpected payload encoding".into()));
        }
        head.truncate(head.len() - 2);
        let len =
            u32::try_from(payload.len()).map_err(|_| Error::Encode("payload over 4 GiB".into()))?;
        rmp::encode::write_bin_len(&mut head, len).map_err(|e| Error::Encode(e.to_string()))?;
        Ok((head, payload.clone()))
    }

    /// Whether [`encode_split_after`](Self::encode_split_after) leaves the
    /// payload out of the head: a Data packet with a large payload and no
    /// trace context after it.
    pub(crate) fn splits(&self) -> bool {
        matches!(self, Packet::Data { msg, .. }
            if msg.payload().is_some_and(|p| p.len() >= SPLIT_MIN) && !msg.has_trace())
    }

    /// Append the packet, whole, to `buf` as msgpack (the common packets
    /// without serde: `fast_encode`).
    pub(crate) fn encode_into(&self, buf: &mut BytesMut) -> Result<(), Error> {
        if super::fast_encode::encode(self, buf) {
            return Ok(());
        }
        rmp_serde::encode::write(&mut (&mut *buf).writer(), self)
            .map_err(|e| Error::Encode(e.to_string()))
    }

    /// Decode one packet; the whole input must be consumed. Payloads are
    /// copied out of `input`.
    #[cfg(test)]
    pub(crate) fn decode(input: &[u8]) -> Result<Packet, Error> {
        Self::decode_from(input, None)
    }

    /// Decode one packet from a received frame; payloads are slices of
    /// `frame` (no copy).
    pub(crate) fn decode_frame(frame: &Bytes) -> Result<Packet, Error> {
        match super::fast_decode::decode(frame) {
            Some(p) => Ok(p),
            None => Self::decode_serde(frame),
        }
    }

    /// [`Packet::decode_frame`] without its fast path for the common
    /// packets: the full decoder, which the fast path must agree with.
    pub(super) fn decode_serde(frame: &Bytes) -> Result<Packet, Error> {
        Self::decode_from(frame, Some(frame))
    }

    fn decode_from(input: &[u8], frame: Option<&Bytes>) -> Result<Packet, Error> {
        let mut de = rmp_serde::Deserializer::from_read_ref(input);
        let p = PacketSeed(Src(frame))
            .deserialize(&mut de)
            .map_err(|e| Error::WireProtocol(format!("undecodable packet: {e}")))?;
        // Nothing may follow the packet: reading another value must hit
        // the end of the input.
        match IgnoredAny::deserialize(&mut de) {
            Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Ok(p)
            }
            _ => Err(Error::WireProtocol(
                "undecodable packet: trailing bytes after the packet".into(),
            )),
        }
    }
}

/// Payloads at least this long are sent without copying them into the
/// packet's encoding ([`Packet::encode_split`]).
pub(crate) const SPLIT_MIN: usize = 1024;

/// Where decoded payloads come from: slices of the received frame when
/// there is one, else copies.
#[derive(Clone, Copy)]
pub(super) struct Src<'a>(Option<&'a Bytes>);

impl<'a> Src<'a> {
    /// Slices of `frame`.
    pub(super) fn frame(frame: &'a Bytes) -> Self {
        Self(Some(frame))
    }

    pub(super) fn bytes(self, v: &[u8]) -> Bytes {
        match self.0 {
            Some(frame) => {
                let (start, end) = (
                    frame.as_ptr() as usize,
                    frame.as_ptr() as usize + frame.len(),
                );
                let p = v.as_ptr() as usize;
                if !v.is_empty() && p >= start && p + v.len() <= end {
                    // Checked above: not again as `slice_ref` would.
                    frame.slice(p - start..p - start + v.len())
                } else {
                    Bytes::copy_from_slice(v)
                }
            }
            None => Bytes::copy_from_slice(v),
        }
    }
}

/// A payload (msgpack bin), sliced from the frame when possible.
struct PayloadSeed<'a>(Src<'a>);

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = Bytes;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Bytes, D::Error> {
        struct V<'a>(Src<'a>);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
                Ok(self.0.bytes(v))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Bytes::from(v))
            }
        }
        d.deserialize_bytes(V(self.0))
    }
}

fn next_seed<'de, A: SeqAccess<'de>, T: DeserializeSeed<'de>>(
    seq: &mut A,
    seed: T,
    what: &'static str,
) -> Result<T::Value, A::Error> {
    seq.next_element_seed(seed)?
        .ok_or_else(|| de::Error::custom(format_args!("missing field {what}")))
}

// ----- decoding -----

fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    what: &'static str,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::custom(format_args!("missing field {what}")))
}

fn drain<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn next_node<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<NodeId, A::Error> {
    let b: Bytes = next(seq, "node id")?;
    let arr: [u8; 16] = b[..]
        .try_into()
        .map_err(|_| de::Error::custom("node id is not 16 bytes"))?;
    Ok(NodeId::from_bytes(arr))
}

struct CapsOwned(Capabilities);
impl<'de> Deserialize<'de> for CapsOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CapsOwned;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("capabilities array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CapsOwned, A::Error> {
                let accepts: Vec<String> = next(&mut seq, "accepts")?;
                let produces: Vec<String> = next(&mut seq, "produces")?;
                let features: BTreeSet<String> = next(&mut seq, "features")?;
                let metadata: BTreeMap<String, String> = next(&mut seq, "metadata")?;
                // Optional: absent when the server has no ports.
                let ports = seq.next_element::<PortsOwned>()?.unwrap_or_default().0;
                drain(&mut seq)?;
                Ok(CapsOwned(Capabilities {
                    accepts,
                    produces,
                    features,
                    metadata,
                    ports,
                }))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Default)]
struct PortsOwned(BTreeMap<String, PortDirection>);
impl<'de> Deserialize<'de> for PortsOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortsOwned;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ports array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PortsOwned, A::Error> {
                let mut ports = BTreeMap::new();
                while let Some(PortOwned(name, dir)) = seq.next_element()? {
                    ports.insert(name, dir);
                }
                Ok(PortsOwned(ports))
            }
        }
        d.deserialize_seq(V)
    }
}

struct PortOwned(String, PortDirection);
impl<'de> Deserialize<'de> for PortOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortOwned;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("port array [name, direction]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PortOwned, A::Error> {
                let name: String = next(&mut seq, "port name")?;
                let code: u8 = next(&mut seq, "port direction")?;
                drain(&mut seq)?;
                let dir = PortDirection::from_code(code).ok_or_else(|| {
                    de::Error::custom(format_args!("port direction {code} is not 1, 2 or 3"))
                })?;
                Ok(PortOwned(name, dir))
            }
        }
        d.deserialize_seq(V)
    }
}

struct PathOwned(Vec<NodeId>);
impl<'de> Deserialize<'de> for PathOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PathOwned;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("route path array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PathOwned, A::Error> {
                let mut path = Vec::new();
                loop {
                    let b: Option<Bytes> = seq.next_element()?;
                    let Some(b) = b else { break };
                    if path.len() == MAX_ROUTE_PATH {
                        return Err(de::Error::custom(format_args!(
                            "route path longer than {MAX_ROUTE_PATH} nodes"
                        )));
                    }
                    let arr: [u8; 16] = b[..]
                        .try_into()
                        .map_err(|_| de::Error::custom("node id is not 16 bytes"))?;
                    path.push(NodeId::from_bytes(arr));
                }
                if path.is_empty() {
                    return Err(de::Error::custom("empty route path"));
                }
                Ok(PathOwned(path))
            }
        }
        d.deserialize_seq(V)
    }
}

struct ReasonOwned(ExitReason);
impl<'de> Deserialize<'de> for ReasonOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReasonOwned;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("exit reason array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ReasonOwned, A::Error> {
                let code: u8 = next(&mut seq, "reason code")?;
                let text: String = next(&mut seq, "reason text")?;
                drain(&mut seq)?;
                Ok(ReasonOwned(match code {
                    0 => ExitReason::Normal,
                    1 => ExitReason::Failed(text),
                    // Unknown codes from later versions read as link trouble
                    // with the text kept.
                    _ => ExitReason::LinkDown(text),
                }))
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'de> Deserialize<'de> for Msg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MsgSeed(Src(None)).deserialize(d)
    }
}

/// A message, its payload sliced from the frame when possible.
struct MsgSeed<'a>(Src<'a>);

impl<'de> DeserializeSeed<'de> for MsgSeed<'_> {
    type Value = Msg;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Msg, D::Error> {
        struct V<'a>(Src<'a>);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Msg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("message array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Msg, A::Error> {
                let s = &mut seq;
                let ty: u8 = next(s, "message type")?;
                let msg = match ty {
                    code::ANNOUNCE => Msg::Announce(Box::new(EntryInfo {
                        id: next(s, "id")?,
                        name: next::<_, String>(s, "name")?.into(),
                        capabilities: Arc::new(next::<_, CapsOwned>(s, "capabilities")?.0),
                        group: next(s, "group")?,
                    })),
                    code::ROUTE => Msg::Route(
                        Box::new(EntryInfo {
                            id: next(s, "id")?,
                            name: next::<_, String>(s, "name")?.into(),
                            capabilities: Arc::new(next::<_, CapsOwned>(s, "capabilities")?.0),
                            group: next(s, "group")?,
                        }),
                        RouteInfo {
                            origin_id: next(s, "origin id")?,
                            path: next::<_, PathOwned>(s, "path")?.0.into(),
                            cost: next(s, "cost")?,
                            pipe_frame: s.next_element()?,
                        },
                    ),
                    code::WITHDRAW => Msg::Withdraw {
                        id: next(s, "id")?,
                        reason: next::<_, ReasonOwned>(s, "reason")?.0,
                    },
                    code::CAST => Msg::Cast {
                        to: next_seed(s, NameSeed(self.0), "to")?,
                        payload: next_seed(s, PayloadSeed(self.0), "payload")?,
                        trace: s.next_element_seed(TraceSeed)?.unwrap_or_default(),
                    },
                    code::CALL => Msg::Call {
                        id: next(s, "call id")?,
                        to: next_seed(s, NameSeed(self.0), "to")?,
                        payload: next_seed(s, PayloadSeed(self.0), "payload")?,
                        trace: s.next_element_seed(TraceSeed)?.unwrap_or_default(),
                    },
                    code::REPLY_OK => Msg::ReplyOk {
                        id: next(s, "call id")?,
                        payload: next_seed(s, PayloadSeed(self.0), "payload")?,
                    },
                    code::REPLY_ERR => Msg::ReplyErr {
                        id: next(s, "call id")?,
                        error: RemoteError {
                            kind: RemoteErrorKind::from_code(next(s, "error kind")?),
                            message: next(s, "error message")?,
                        },
                    },
                    code::PIPE_OPEN => Msg::PipeOpen {
                        pipe: next(s, "pipe id")?,
                        server: next(s, "server")?,
                        port: next(s, "port")?,
                    },
                    code::PIPE_DATA => Msg::PipeData {
                        pipe: next(s, "pipe id")?,
                        last: next(s, "last")?,
                        data: next_seed(s, PayloadSeed(self.0), "data")?,
                    },
                    code::PIPE_CREDIT => Msg::PipeCredit {
                        pipe: next(s, "pipe id")?,
                        bytes: next(s, "credit")?,
                    },
                    code::PIPE_CLOSE => Msg::PipeClose {
                        pipe: next(s, "pipe id")?,
                        reason: next::<_, ReasonOwned>(s, "reason")?.0,
                    },
                    code::PIPE_END => Msg::PipeEnd {
                        pipe: next(s, "pipe id")?,
                    },
                    other => {
                        return Err(de::Error::custom(format_args!(
                            "unknown message type {other}"
                        )));
                    }
                };
                drain(s)?;
                Ok(msg)
            }
        }
        d.deserialize_seq(V(self.0))
    }
}

impl<'de> Deserialize<'de> for Packet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PacketSeed(Src(None)).deserialize(d)
    }
}

/// A packet, its payload sliced from the frame when possible.
struct PacketSeed<'a>(Src<'a>);

impl<'de> DeserializeSeed<'de> for PacketSeed<'_> {
    type Value = Packet;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Packet, D::Error> {
        struct V<'a>(Src<'a>);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Packet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("packet array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Packet, A::Error> {
                let s = &mut seq;
                let ty: u8 = next(s, "packet type")?;
                let p = match ty {
                    code::HELLO => {
                        let magic: u32 = next(s, "magic")?;
                        let version: u32 = next(s, "version")?;
                        if magic != MAGIC || version != VERSION {
                            drain(s)?;
                            return Ok(Packet::ForeignHello { magic, version });
                        }
                        Packet::Hello(Box::new(Hello {
                            node: next_node(s)?,
                            features: next(s, "features")?,
                            session_id: next(s, "session id")?,
                            auth: next(s, "auth")?,
                            max_frame: next(s, "max frame")?,
                            recv_window: next(s, "receive window")?,
                            pipe_window: next(s, "pipe window")?,
                            resume: s
                                .next_element::<Option<(u64, u64)>>()?
                                .flatten()
                                .map(|(session, ack)| Resume { session, ack }),
                        }))
                    }
                    code::HELLO_ACK => Packet::HelloAck {
                        session_id: next(s, "session id")?,
                    },
                    code::DATA => Packet::Data {
                        seq: next(s, "seq")?,
                        ack: next(s, "ack")?,
                        msg: next_seed(s, MsgSeed(self.0), "message")?,
                    },
                    code::ACK => Packet::Ack {
                        ack: next(s, "ack")?,
                    },
                    code::PING => Packet::Ping,
                    code::CLOSE => Packet::Close {
                        code: CloseCode::from_code(next(s, "close code")?),
                        message: next(s, "close message")?,
                    },
                    code::HANDSHAKE => Packet::Handshake {
                        msg: next_seed(s, PayloadSeed(self.0), "handshake message")?,
                    },
                    other => {
                        return Err(de::Error::custom(format_args!(
                            "unknown packet type {other}"
                        )));
                    }
                };
                drain(s)?;
                Ok(p)
            }
        }
        d.deserialize_seq(V(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol_doc::assert_in_doc;

    /// The message of a Data packet whose seq and ack are below 128 (four
    /// bytes of header): what §4's inline vectors show.
    fn message_part(packet: &[u8]) -> &[u8] {
        &packet[4..]
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn hex_bytes(h: &str) -> Vec<u8> {
        let h = h.replace(' ', "");
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    fn roundtrip(p: Packet) -> Vec<u8> {
        let bytes = p.encode().unwrap();
        assert_eq!(Packet::decode(&bytes).unwrap(), p);
        bytes
    }

    #[test]
    fn golden_hello() {
        let p = Packet::Hello(Box::new(Hello {
            node: NodeId::from_bytes([0xab; 16]),
            features: 0,
            session_id: 0x0102_0304_0506_0708,
            auth: None,
            max_frame: 65536,
            recv_window: 64,
            pipe_window: 65536,
            resume: None,
        }));
        let b = roundtrip(p);
        assert_eq!(
            hex(&b),
            concat!(
                "9a",                                   // array of 10
                "01",                                   // type 1 = Hello
                "ce4f53434c",                           // magic u32
                "01",                                   // version 1
                "c410abababababababababababababababab", // bin8 len 16: node id
                "00",                                   // features
                "cf0102030405060708",                   // session id u64
                "c0",                                   // auth nil
                "ce00010000",                           // max frame
                "40",                                   // receive window
                "ce00010000",                           // pipe window
            )
        );
        assert_in_doc(&b);
    }

    #[test]
    fn golden_resume_hello() {
        let p = Packet::Hello(Box::new(Hello {
            node: NodeId::from_bytes([0xab; 16]),
            features: 8,
            session_id: 7,
            auth: None,
            max_frame: 65536,
            recv_window: 64,
            pipe_window: 65536,
            resume: Some(Resume {
                session: 9,
                ack: 300,
            }),
        }));
        let b = roundtrip(p);
        assert!(hex(&b).starts_with("9b01"), "array of 11: {}", hex(&b));
        assert!(
            hex(&b).ends_with("9209cd012c"),
            "[9, 300] last: {}",
            hex(&b)
        );
    }

    #[test]
    fn golden_small_packets() {
        let ping = roundtrip(Packet::Ping);
        assert_eq!(hex(&ping), "9105");
        let ack = roundtrip(Packet::Ack { ack: 300 });
        assert_eq!(hex(&ack), "9204cd012c");
        let hello_ack = roundtrip(Packet::HelloAck { session_id: 7 });
        assert_eq!(hex(&hello_ack), "920207");
        let close = roundtrip(Packet::Close {
            code: CloseCode::Version,
            message: "v".into(),
        });
        assert_eq!(hex(&close), "930602a176");
        for b in [ping, ack, hello_ack, close] {
            assert_in_doc(&b);
        }
    }

    #[test]
    fn golden_messages() {
        let cast = Packet::Data {
            seq: 1,
            ack: 0,
            msg: Msg::Cast {
                to: "log".into(),
                // The MessagePack str "hi" (§4.2: payloads are MessagePack).
                payload: Bytes::from_static(b"\xa2hi"),
                trace: Trace::None,
            },
        };
        // [3, 1, 0, [32, "log", bin a2 68 69]]
        let cast = roundtrip(cast);
        assert_eq!(hex(&cast), "940301009320a36c6f67c403a26869");
        assert_in_doc(&cast);
        let pipe = Packet::Data {
            seq: 2,
            ack: 1,
            msg: Msg::PipeData {
                pipe: 4,
                last: true,
                data: Bytes::from_static(b"\x00"),
            },
        };
        // [3, 2, 1, [49, 4, true, bin 00]]
        let pipe = roundtrip(pipe);
        assert_eq!(hex(&pipe), "94030201943104c3c40100");
        assert_in_doc(&pipe);
        let err = Packet::Data {
            seq: 3,
            ack: 1,
            msg: Msg::ReplyErr {
                id: 9,
                error: RemoteError {
                    kind: RemoteErrorKind::NotFound,
                    message: "x".into(),
                },
            },
        };
        let err = roundtrip(err);
        assert_eq!(hex(&err), "9403030194230901a178");
        assert_in_doc(&err);
        let ann = Packet::Data {
            seq: 4,
            ack: 0,
            msg: Msg::Announce(Box::new(EntryInfo {
                id: 5,
                name: "a".into(),
                capabilities: Capabilities::new()
                    .accepts("r")
                    .feature("f")
                    .meta("k", "v")
                    .into(),
                group: true,
            })),
        };
        // [3,4,0,[16,5,"a",[["r"],[],["f"],{"k":"v"}],true]]
        let ann = roundtrip(ann);
        assert_eq!(
            hex(&ann),
            "940304009510 05a161 94 91a172 90 91a166 81a16ba176 c3".replace(' ', "")
        );
        assert_in_doc(&ann);
        let close = Packet::Data {
            seq: 5,
            ack: 0,
            msg: Msg::PipeClose {
                pipe: 1,
                reason: ExitReason::Failed("no".into()),
            },
        };
        let close = roundtrip(close);
        assert_eq!(hex(&close), "940305009333019201a26e6f");
        assert_in_doc(&close);
        let route = Packet::Data {
            seq: 7,
            ack: 0,
            msg: Msg::Route(
                Box::new(EntryInfo {
                    id: 5,
                    name: "a".into(),
                    capabilities: Capabilities::new().into(),
                    group: false,
                }),
                RouteInfo {
                    origin_id: 2,
                    path: vec![NodeId::from_bytes([0xcc; 16])].into(),
                    cost: 1,
                    pipe_frame: None,
                },
            ),
        };
        // [3,7,0,[18,5,"a",[[],[],[],{}],false,2,[bin16],1]]
        assert_eq!(
            hex(&roundtrip(route.clone())),
            format!(
                "940307009812 05a161 94909090 80 c2 02 91c410{} 01",
                "cc".repeat(16)
            )
            .replace(' ', "")
        );
        // With the route's pipe frame limit appended (65536):
        // [3,7,0,[18,5,"a",[[],[],[],{}],false,2,[bin16],1,65536]]
        let mut limited = route;
        if let Packet::Data {
            msg: Msg::Route(_, r),
            ..
        } = &mut limited
        {
            r.pipe_frame = Some(64 * 1024);
        }
        assert_eq!(
            hex(&roundtrip(limited)),
            format!(
                "940307009912 05a161 94909090 80 c2 02 91c410{} 01 ce00010000",
                "cc".repeat(16)
            )
            .replace(' ', "")
        );
        // A later element after it is skipped.
        let later = hex_bytes(&format!(
            "940307009a12 05a161 94909090 80 c2 02 91c410{} 01 ce00010000 c0",
            "cc".repeat(16)
        ));
        assert!(matches!(
            Packet::decode(&later),
            Ok(Packet::Data {
                msg: Msg::Route(
                    _,
                    RouteInfo {
                        pipe_frame: Some(65536),
                        ..
                    }
                ),
                ..
            })
        ));
        // An empty path, or one longer than MAX_ROUTE_PATH, is refused.
        let empty = hex_bytes("940307009812 05a161 94909090 80 c2 02 90 01");
        assert!(Packet::decode(&empty).is_err());
        // [3,6,0,[52,4]]: PipeEnd is `92 34 04` inside the Data packet.
        let end = Packet::Data {
            seq: 6,
            ack: 0,
            msg: Msg::PipeEnd { pipe: 4 },
        };
        let end = roundtrip(end);
        assert_eq!(hex(&end), "94030600923404");
        assert_in_doc(message_part(&end));
    }

    /// The vectors of the rules a second implementation needs besides the
    /// layouts: pipe ports in capabilities (§5.1), a zero PipeCredit
    /// (§8), and the call of the worked example (§10).
    #[test]
    fn golden_rules() {
        // [3,9,0,[16,6,"cat",[[],[],[],{},[["in",1],["out",2]]],false]]
        let ann = roundtrip(Packet::Data {
            seq: 9,
            ack: 0,
            msg: Msg::Announce(Box::new(EntryInfo {
                id: 6,
                name: "cat".into(),
                capabilities: Capabilities::new()
                    .port("out", PortDirection::Out)
                    .port("in", PortDirection::In)
                    .into(),
                group: false,
            })),
        });
        assert_eq!(
            hex(&ann),
            "940309009510 06a3636174 95909090 80 92 92a2696e01 92a36f757402 c2".replace(' ', "")
        );
        assert_in_doc(&ann);
        // A receiver that predates ports skips the fifth element; one that
        // knows them reads four elements as no ports (the other vectors).
        // A direction other than 1, 2 or 3 makes the packet undecodable.
        let mut bad = ann.clone();
        let at = bad.len() - 2;
        assert_eq!(bad[at], 2);
        bad[at] = 4;
        assert!(Packet::decode(&bad).is_err());

        // [3,8,0,[50,1,0]]: a zero-byte PipeCredit.
        let credit = roundtrip(Packet::Data {
            seq: 8,
            ack: 0,
            msg: Msg::PipeCredit { pipe: 1, bytes: 0 },
        });
        assert_eq!(hex(&credit), "9403080093320100");
        assert_in_doc(&credit);

        // [3,1,0,[33,1,"upper",bin a5 "hello"]] and its reply
        // [3,1,1,[34,1,bin a5 "HELLO"]]: MessagePack strs as payloads.
        let call = roundtrip(Packet::Data {
            seq: 1,
            ack: 0,
            msg: Msg::Call {
                id: 1,
                to: "upper".into(),
                payload: Bytes::from_static(b"\xa5hello"),
                trace: Trace::None,
            },
        });
        assert_eq!(
            hex(&call),
            "94030100 942101 a57570706572 c406a568656c6c6f".replace(' ', "")
        );
        assert_in_doc(&call);
        let reply = roundtrip(Packet::Data {
            seq: 1,
            ack: 1,
            msg: Msg::ReplyOk {
                id: 1,
                payload: Bytes::from_static(b"\xa5HELLO"),
            },
        });
        assert_eq!(
            hex(&reply),
            "94030101 932201 c406a548454c4c4f".replace(' ', "")
        );
        assert_in_doc(&reply);
    }

    /// The W3C Trace Context example: trace-id 4bf9…4736, parent-id
    /// 00f0…02b7, flags 01 (sampled).
    fn w3c_example() -> TraceContext {
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap()
    }

    /// §4.2 trace context: the golden Cast and Call of §4 with a trace
    /// element, and the receiver's rule for one that is not a context.
    #[test]
    fn golden_trace() {
        let t = w3c_example();
        let trace_hex = "c419 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 01";
        // [3,1,0,[32,"log",bin a2 68 69, bin trace]]
        let cast = roundtrip(Packet::Data {
            seq: 1,
            ack: 0,
            msg: Msg::Cast {
                to: "log".into(),
                payload: Bytes::from_static(b"\xa2hi"),
                trace: Trace::Context(t),
            },
        });
        assert_eq!(
            hex(&cast),
            format!("94030100 9420 a36c6f67 c403a26869 {trace_hex}").replace(' ', "")
        );
        assert_in_doc(&cast);
        // [3,1,0,[33,1,"upper",bin a5 "hello", bin trace]]
        let call = roundtrip(Packet::Data {
            seq: 1,
            ack: 0,
            msg: Msg::Call {
                id: 1,
                to: "upper".into(),
                payload: Bytes::from_static(b"\xa5hello"),
                trace: Trace::Context(t),
            },
        });
        assert_eq!(
            hex(&call),
            format!("94030100 952101 a57570706572 c406a568656c6c6f {trace_hex}").replace(' ', "")
        );
        assert_in_doc(&call);
        // A later element after the trace is skipped (§1).
        let mut later = call.clone();
        later[4] = 0x96;
        later.push(0xc0);
        assert_eq!(
            Packet::decode(&later).unwrap(),
            Packet::decode(&call).unwrap()
        );
        // Not a context: ignored, the call still decodes (the session
        // counts it as dropped).
        let head = hex_bytes("94030100 952101 a57570706572 c406a568656c6c6f");
        let zero_trace = format!("c419{}{}01", "00".repeat(16), "11".repeat(8));
        let zero_parent = format!("c419{}{}01", "11".repeat(16), "00".repeat(8));
        for element in [
            "c418 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7", // 24 bytes
            "c41a 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 0100", // 26
            zero_trace.as_str(),
            zero_parent.as_str(),
            "c0",             // nil
            "07",             // an integer
            "a3 616263",      // a str
            "93 01 02 03",    // an array
            "81 a1 6b a1 76", // a map
            "c7 01 05 00",    // an ext
            "d9 03 616263",   // a str8
        ] {
            let mut b = head.clone();
            b.extend(hex_bytes(element));
            match Packet::decode(&b) {
                Ok(Packet::Data {
                    msg: Msg::Call { trace, id: 1, .. },
                    ..
                }) => assert_eq!(trace, Trace::Ignored, "{element}"),
                other => panic!("{element}: {other:?}"),
            }
        }
        // Without the element: no trace (the §4 vector).
        let plain = hex_bytes("94030100 942101 a57570706572 c406a568656c6c6f");
        assert!(matches!(
            Packet::decode(&plain),
            Ok(Packet::Data {
                msg: Msg::Call {
                    trace: Trace::None,
                    ..
                },
                ..
            })
        ));
        // A traced payload of any size is encoded whole: the split
        // encoding is the same bytes.
        let big = Packet::Data {
            seq: 1,
            ack: 0,
            msg: Msg::Cast {
                to: "log".into(),
                payload: Bytes::from(vec![7; 4 * SPLIT_MIN]),
                trace: Trace::Context(t),
            },
        };
        let (head, tail) = big.encode_split().unwrap();
        assert!(tail.is_empty());
        assert_eq!(head, big.encode().unwrap());
    }

    #[test]
    fn all_messages_roundtrip() {
        let msgs = [
            Msg::Route(
                Box::new(EntryInfo {
                    id: 7,
                    name: "far".into(),
                    capabilities: Capabilities::new().accepts("r").into(),
                    group: false,
                }),
                RouteInfo {
                    origin_id: 3,
                    path: vec![NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16])].into(),
                    cost: 11,
                    pipe_frame: Some(4096),
                },
            ),
            Msg::PipeEnd { pipe: 9 },
            Msg::Withdraw {
                id: 1,
                reason: ExitReason::LinkDown("x".into()),
            },
            Msg::Call {
                id: u64::MAX,
                to: "s".into(),
                payload: Bytes::new(),
                trace: Trace::None,
            },
            Msg::ReplyOk {
                id: 2,
                payload: Bytes::from_static(b"ok"),
            },
            Msg::PipeOpen {
                pipe: 0,
                server: "s".into(),
                port: "in".into(),
            },
            Msg::PipeCredit {
                pipe: 3,
                bytes: 70000,
            },
        ];
        for msg in msgs {
            roundtrip(Packet::Data {
                seq: 1,
                ack: 1,
                msg,
            });
        }
    }

    #[test]
    fn split_encoding_is_the_same_bytes_and_decoding_shares_the_frame() {
        let big = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let msgs = [
            Msg::PipeData {
                pipe: 4,
                last: true,
                data: big.clone(),
            },
            Msg::Cast {
                to: "sink".into(),
                payload: big.slice(..SPLIT_MIN),
                trace: Trace::None,
            },
            Msg::Call {
                id: 7,
                to: "s".into(),
                payload: big.slice(..300),
                trace: Trace::None,
            },
            Msg::ReplyOk {
                id: 8,
                payload: big.slice(..65_535),
            },
            Msg::PipeCredit { pipe: 1, bytes: 5 },
        ];
        for msg in msgs {
            let p = Packet::Data {
                seq: 3,
                ack: 2,
                msg,
            };
            let (head, tail) = p.encode_split().unwrap();
            let mut joined = head.clone();
            joined.extend_from_slice(&tail);
            assert_eq!(joined, p.encode().unwrap());
            assert_eq!(encoded_len(&p).unwrap(), joined.len());
            // With room for a prefix: the same head after it.
            let (after, tail_after) = p.encode_split_after(4).unwrap();
            assert_eq!(after[..4], [0; 4]);
            assert_eq!(after[4..], head[..]);
            assert_eq!(tail_after, tail);
            let frame = Bytes::from(joined);
            let back = Packet::decode_frame(&frame).unwrap();
            assert_eq!(back, p);
            if let Packet::Data { msg, .. } = back
                && let Some(payload) = msg.payload().filter(|b| !b.is_empty())
            {
                // The payload points into the frame: no copy was made.
                let (f, b) = (frame.as_ptr() as usize, payload.as_ptr() as usize);
                assert!(b >= f && b + payload.len() <= f + frame.len());
            }
        }
        // Not a Data packet: whole.
        let (head, tail) = Packet::Ack { ack: 1 }.encode_split().unwrap();
        assert!(tail.is_empty());
        assert_eq!(head, Packet::Ack { ack: 1 }.encode().unwrap());
    }

    #[test]
    fn foreign_hello_and_trailing_fields() {
        // A version-2 hello with unknown fields: recognised as foreign.
        let b = to_vec(&(1u8, MAGIC, 2u32, "whatever", 1, 2, 3)).unwrap();
        assert_eq!(
            Packet::decode(&b).unwrap(),
            Packet::ForeignHello {
                magic: MAGIC,
                version: 2
            }
        );
        // Extra trailing elements are ignored.
        let b = to_vec(&(4u8, 9u64, "later")).unwrap();
        assert_eq!(Packet::decode(&b).unwrap(), Packet::Ack { ack: 9 });
    }

    #[test]
    fn bad_packets_are_errors() {
        for bad in [
            &b""[..],
            b"\x90",
            b"\x91\x63",
            b"\x92\x04",
            b"\x92\x04\xa1x",
            b"\x9105\x00",
            b"\x91\x05\x00", // trailing byte
            b"\xdd\xff\xff\xff\xff",
            b"\xc6\xff\xff\xff\xff",
        ] {
            assert!(Packet::decode(bad).is_err(), "{bad:?}");
        }
        // An unknown message type inside Data.
        let b = to_vec(&(3u8, 1u64, 0u64, (99u8,))).unwrap();
        assert!(Packet::decode(&b).is_err());
        // A node id of the wrong size.
        let b = to_vec(&(1u8, MAGIC, VERSION, B(&[1, 2]), 0, 0, (), 1, 1, 1)).unwrap();
        assert!(Packet::decode(&b).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, .. Default::default() })]

        /// The PipeData head written without serde is the bytes serde
        /// writes, for any numbers and lengths on either side of the
        /// integer and bin-length encodings' boundaries.
        #[test]
        fn pipe_data_head_is_what_serde_writes(
            seq in proptest::prelude::any::<u64>(),
            ack in proptest::prelude::any::<u64>(),
            pipe in proptest::prelude::any::<u64>(),
            last in proptest::prelude::any::<bool>(),
            len in proptest::prop_oneof![SPLIT_MIN..70_000usize, 65_530..65_540usize],
            small in proptest::prelude::any::<bool>(),
        ) {
            // Small numbers too: the shortest forms differ below 128, 256,
            // 65 536 and 2^32.
            let shrink = |v: u64| if small { v % 70_000 } else { v };
            let p = Packet::Data {
                seq: shrink(seq),
                ack: shrink(ack),
                msg: Msg::PipeData {
                    pipe: shrink(pipe),
                    last,
                    data: Bytes::from(vec![7u8; len]),
                },
            };
            let (head, tail) = p.encode_split_after(4).unwrap();
            let mut joined = head[4..].to_vec();
            joined.extend_from_slice(&tail);
            proptest::prop_assert_eq!(joined, p.encode().unwrap());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, .. Default::default() })]

        /// Casts and Calls with any trace context round-trip; any bytes as
        /// the trace element decode to a context or are ignored, never
        /// fail the message (what the `trace` fuzz target runs).
        #[test]
        fn trace_elements_never_fail_the_message(
            trace_id in proptest::prelude::any::<[u8; 16]>(),
            parent_id in proptest::prelude::any::<[u8; 8]>(),
            flags in proptest::prelude::any::<u8>(),
            element in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let trace = Trace::from(TraceContext::new(trace_id, parent_id, flags));
            for msg in [
                Msg::Cast { to: "s".into(), payload: Bytes::from_static(b"\xc0"), trace },
                Msg::Call { id: 3, to: "s".into(), payload: Bytes::new(), trace },
            ] {
                roundtrip(Packet::Data { seq: 1, ack: 0, msg });
            }
            // The element as a bin of any length: a context only at 25.
            let mut b = hex_bytes("94030100 952103 a173 c400");
            rmp::encode::write_bin(&mut b, &element).unwrap();
            let decoded = Packet::decode(&b).unwrap();
            let Packet::Data { msg: Msg::Call { trace, .. }, .. } = decoded else {
                return Err(proptest::test_runner::TestCaseError::fail("not a call"));
            };
            proptest::prop_assert_eq!(
                trace.context().is_some(),
                TraceContext::from_bytes(&element).is_some()
            );
            proptest::prop_assert_ne!(trace, Trace::None);
            crate::wire::fuzzing::trace(&element);
            crate::wire::fuzzing::trace(&b[11..]);
        }

        /// The bound an untraced cast or call is checked against on entry
        /// is never below its encoding, whatever the lengths of its name
        /// and payload and its call id; packed behind other frames, its
        /// frame is the length and the packet, as `encode` gives it.
        #[test]
        fn cast_and_call_bounds_cover_their_encoding(
            name in 0usize..70_000,
            payload in 0usize..70_000,
            id in proptest::prelude::any::<u64>(),
            before in 0usize..64,
        ) {
            let to: Name = "n".repeat(name).into();
            let payload = Bytes::from(vec![7u8; payload]);
            for msg in [
                Msg::Cast { to: to.clone(), payload: payload.clone(), trace: Trace::None },
                Msg::Call { id, to: to.clone(), payload: payload.clone(), trace: Trace::None },
            ] {
                let bound = msg.encoded_len_bound().unwrap_or(0);
                proptest::prop_assert!(bound >= encoded_len(&msg).unwrap());
                let packet = Packet::Data { seq: id, ack: id / 2, msg };
                let mut buf = BytesMut::from(&vec![1u8; before][..]);
                let framing = crate::wire::LengthFraming::new(usize::MAX);
                framing.pack(&mut buf, |b| packet.encode_into(b)).unwrap();
                let whole = packet.encode().unwrap();
                proptest::prop_assert_eq!(&buf[before..before + 4], &(whole.len() as u32).to_be_bytes()[..]);
                proptest::prop_assert_eq!(&buf[before + 4..], &whole[..]);
            }
        }

        /// Route messages: a path of 1 to MAX_ROUTE_PATH nodes round-trips,
        /// others are refused; any one byte changed in the encoding
        /// decodes or fails cleanly, and the route table takes whatever
        /// decodes without panicking (what the `route` fuzz target runs).
        #[test]
        fn route_messages_decode_or_fail_cleanly(
            len in 0usize..40,
            seed in 0u8..255,
            origin_id in proptest::prelude::any::<u64>(),
            cost in proptest::prelude::any::<u32>(),
            pipe_frame in proptest::prelude::any::<Option<u32>>(),
            flip in proptest::prelude::any::<(usize, u8)>(),
        ) {
            let path: Vec<NodeId> = (0..len)
                .map(|i| NodeId::from_bytes([seed.wrapping_add(i as u8); 16]))
                .collect();
            let p = Packet::Data {
                seq: 1,
                ack: 0,
                msg: Msg::Route(
                    Box::new(EntryInfo {
                        id: 3,
                        name: "s".into(),
                        capabilities: Capabilities::new().into(),
                        group: false,
                    }),
                    RouteInfo { origin_id, path: path.into(), cost, pipe_frame },
                ),
            };
            let bytes = p.encode().unwrap();
            let decoded = Packet::decode(&bytes);
            proptest::prop_assert_eq!(decoded.is_ok(), (1..=MAX_ROUTE_PATH).contains(&len));
            if let Ok(d) = decoded {
                proptest::prop_assert_eq!(d, p);
            }
            let mut bad = bytes.clone();
            let i = flip.0 % bad.len();
            bad[i] ^= flip.1 | 1;
            let _ = Packet::decode(&bad);
            crate::wire::fuzzing::route(&bad);
            crate::wire::fuzzing::route(&bytes[6..]);
        }
    }
}
