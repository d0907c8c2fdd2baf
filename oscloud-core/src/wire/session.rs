//! The session state machine: handshake, reliable ordered delivery,
//! liveness, and the multiplexed channels (registry, messages, pipes).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::framing::{Framer, FramingKind};
use super::packet::{
    CloseCode, DATA_OVERHEAD, EntryInfo, Hello, Msg, PIPE_DATA_OVERHEAD, Packet, RemoteError,
    Resume, RouteInfo, VERSION, encoded_len,
};
use super::rtt::{DEFAULT_MIN_RTO, RttEstimator};
use super::secure::{
    FEATURE_AEGIS, FEATURE_AESGCM, FEATURE_NOISE, FEATURE_PSK, HsOutcome, OpenError, SECURE_MARK,
    SECURE_OVERHEAD, Secure, SecureConfig, Suite,
};
use super::send_queue::SendQueue;
use crate::id_hash::{IdMap, IdSet};
use crate::identity::PublicKey;
use crate::{Error, ExitReason, NodeId};

/// The smallest `max_frame` a session accepts (its own or the peer's).
pub const MIN_FRAME: usize = 128;

/// Hello feature bit 3: this side can resume a session on a new link
/// (`docs/PROTOCOL.md` §12). Sessions resume only when both sides set it.
pub const FEATURE_RESUME: u64 = 8;

/// Hello feature bit 4: this side understands Route messages (forwarded
/// entries of other nodes, `docs/PROTOCOL.md` §13). A node sends Route
/// messages only to peers that set it.
pub const FEATURE_ROUTING: u64 = 16;

/// Most packets kept for resumption on a reliable stream while their
/// acknowledgement is outstanding (the peer acknowledges within its
/// `ack_delay`, so this is reached only if it stops acknowledging).
const RETAIN_MAX: usize = 1 << 16;

/// Duplicate acknowledgements (standalone Acks that acknowledge nothing
/// new while Data is outstanding) that make a lossy-link sender re-send
/// its oldest unacknowledged packet at once, before the retransmission
/// timeout (`docs/PROTOCOL.md` §7).
pub const DUP_ACK_THRESHOLD: u32 = 3;

/// Default keepalive: a Ping goes on an open session after this long
/// without sending anything ([`Config::keepalive`], the node's
/// `NodeConfig::keepalive`; `docs/PROTOCOL.md` §6).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(2);

/// Default idle timeout: a session that received nothing intact for this
/// long closes with code 9, or detaches if resumable ([`Config::idle_timeout`],
/// the node's `NodeConfig::idle_timeout`; `docs/PROTOCOL.md` §6). Three
/// keepalives fit in it, so two lost Pings do not end a session.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(6);

/// Whether the test-only knob asks for one first-in, first-out send queue.
#[cfg(any(test, feature = "test-knobs"))]
fn fifo_send_queue(config: &Config) -> bool {
    config.fifo_send_queue
}

#[cfg(not(any(test, feature = "test-knobs")))]
fn fifo_send_queue(_config: &Config) -> bool {
    false
}

/// Longest close message sent, in bytes, so a Close fits any frame.
const MAX_CLOSE_TEXT: usize = 96;

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Session limits and timers.
///
/// Every buffer a session keeps is bounded by these: received packets out
/// of order (`recv_window` × `max_frame`), pipe bytes (`max_pipes` ×
/// `pipe_window`), calls (`max_pending_calls`) and queued messages
/// (`max_send_queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The link's kind: picks framing and retransmission.
    pub framing: FramingKind,
    /// Largest packet accepted from the peer and sent to it, in bytes
    /// (lowered to what the framing can carry).
    pub max_frame: usize,
    /// Most unacknowledged packets in flight (also capped by the peer's
    /// `recv_window`). Lossy links only: on a reliable stream the stream's
    /// own flow control paces the sender.
    pub send_window: u32,
    /// Most packets buffered ahead of a gap (advertised to the peer).
    pub recv_window: u32,
    /// Bytes each pipe may have in flight towards this side before the
    /// reader consumes them (advertised; the largest pipe frame the peer
    /// may send).
    pub pipe_window: u32,
    /// Most open pipes.
    pub max_pipes: usize,
    /// Most calls waiting for a reply, each way.
    pub max_pending_calls: usize,
    /// Most queued outgoing messages (casts, calls, replies, registry and
    /// pipe control), not counting pipe data, which credit bounds.
    pub max_send_queue: usize,
    /// Send a ping when nothing was sent for this long.
    pub keepalive: Duration,
    /// Close the session when nothing was received for this long (also the
    /// handshake timeout).
    pub idle_timeout: Duration,
    /// First retransmission timeout (lossy links only), used until the
    /// first round-trip time sample; then the timeout follows the
    /// measured round-trip time (RFC 6298, see [`min_rto`](Self::min_rto)
    /// and `docs/PROTOCOL.md` §6.1).
    pub initial_rto: Duration,
    /// Smallest retransmission timeout the round-trip time estimate may
    /// give (lossy links only; at most `initial_rto`). Default 20 ms.
    pub min_rto: Duration,
    /// Retransmission timeout cap, after backoff too.
    pub max_rto: Duration,
    /// How long an acknowledgement may wait for a packet to ride on.
    pub ack_delay: Duration,
    /// How long a partly received segmented frame is kept (datagrams).
    pub reassembly_timeout: Duration,
    /// Keep the session this long after its link is lost, so that it can
    /// resume on a new link (`docs/PROTOCOL.md` §12); `None` (the default)
    /// ends the session with its link. Unacknowledged packets are then
    /// kept on reliable streams too.
    pub resume_grace: Option<Duration>,
    /// Test only: send everything in the order queued, pipe data included
    /// (the scheduling before messages could overtake pipe data), to
    /// measure against.
    #[cfg(any(test, feature = "test-knobs"))]
    #[doc(hidden)]
    pub fifo_send_queue: bool,
}

impl Config {
    /// Defaults suited to `framing`.
    pub fn new(framing: FramingKind) -> Self {
        Self {
            framing,
            max_frame: 64 * 1024,
            send_window: 64,
            recv_window: 64,
            pipe_window: 64 * 1024,
            max_pipes: 256,
            max_pending_calls: 1024,
            max_send_queue: 1024,
            keepalive: DEFAULT_KEEPALIVE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            initial_rto: Duration::from_millis(250),
            min_rto: DEFAULT_MIN_RTO,
            max_rto: Duration::from_secs(4),
            ack_delay: Duration::from_millis(10),
            reassembly_timeout: Duration::from_secs(1),
            resume_grace: None,
            #[cfg(any(test, feature = "test-knobs"))]
            fifo_send_queue: false,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::WireConfig(m.to_owned()));
        if self.max_frame < MIN_FRAME || self.max_frame > u32::MAX as usize {
            return bad("max_frame must be between 128 and 2^32-1 bytes");
        }
        if self.send_window == 0 || self.recv_window == 0 {
            return bad("send_window and recv_window must be at least 1");
        }
        if self.pipe_window == 0 {
            return bad("pipe_window must be at least 1");
        }
        if self.max_send_queue == 0 || self.max_pending_calls == 0 {
            return bad("max_send_queue and max_pending_calls must be at least 1");
        }
        if self.keepalive.is_zero() || self.idle_timeout <= self.keepalive {
            return bad("keepalive must be non-zero and shorter than idle_timeout");
        }
        if self.initial_rto.is_zero() || self.max_rto < self.initial_rto {
            return bad("initial_rto must be non-zero and at most max_rto");
        }
        if self.min_rto.is_zero() || self.min_rto > self.initial_rto {
            return bad("min_rto must be non-zero and at most initial_rto");
        }
        let day = Duration::from_secs(86_400);
        if [
            self.keepalive,
            self.idle_timeout,
            self.max_rto,
            self.ack_delay,
            self.reassembly_timeout,
            self.resume_grace.unwrap_or_default(),
        ]
        .iter()
        .any(|d| *d > day)
        {
            return bad("timers must be at most one day");
        }
        Ok(())
    }
}

/// Who this side is, sent in the Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalInfo {
    /// This node's id.
    pub node: NodeId,
    /// Feature bits (none are defined in version 1; send 0).
    pub features: u64,
    /// A random id for this session (for resumption in later versions).
    pub session_id: u64,
    /// Opaque authentication payload (reserved for a Noise handshake).
    pub auth: Option<Bytes>,
}

impl LocalInfo {
    /// Info for `node` with a fresh random session id and no auth.
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            features: 0,
            session_id: rand::random(),
            auth: None,
        }
    }
}

/// What the peer said about itself in its Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id.
    pub node: NodeId,
    /// The peer's feature bits.
    pub features: u64,
    /// The peer's session id.
    pub session_id: u64,
    /// The peer's authentication payload.
    pub auth: Option<Bytes>,
    /// The peer's static public key, verified by the Noise handshake
    /// (secure sessions only; `None` on plaintext sessions).
    pub key: Option<PublicKey>,
    /// Largest packet the peer accepts.
    pub max_frame: u32,
    /// Packets the peer buffers ahead of a gap.
    pub recv_window: u32,
    /// Initial credit of every pipe towards the peer, in bytes.
    pub pipe_window: u32,
}

/// Identifies one outgoing or incoming call on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Identifies one pipe on a session. Bit 0 tells who opened it: 0 this
/// side, 1 the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipeId(pub u64);

impl PipeId {
    /// Whether this side opened the pipe.
    pub fn is_local(self) -> bool {
        self.0 & 1 == 0
    }
}

impl fmt::Display for PipeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pipe {}{}",
            self.0,
            if self.is_local() { "L" } else { "R" }
        )
    }
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The close code.
    pub code: CloseCode,
    /// What happened, in words.
    pub message: String,
    /// True when the peer closed (its Close packet arrived).
    pub remote: bool,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (code {}{})",
            self.message,
            self.code.code(),
            if self.remote { ", closed by peer" } else { "" }
        )
    }
}

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
        to: String,
        /// The message.
        payload: Bytes,
    },
    /// A request for the server named `to`; answer with
    /// [`Session::reply`].
    Call {
        /// Correlation id to reply with.
        id: CallId,
        /// Target server name.
        to: String,
        /// The request.
        payload: Bytes,
    },
    /// The answer to a call made with [`Session::call`].
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
    /// One frame arrived on a pipe. Call [`Session::pipe_consumed`] once
    /// the reader took it, or the peer runs out of credit.
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
    /// link to that session with [`Session::resume`] (passing `hello`), or
    /// refuse with [`Session::refuse_resume`]. Nothing else happens on
    /// this session until then.
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
    /// a new link with [`Session::resume`]. Calls, pipes and queued
    /// messages wait.
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

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets framed and handed out by `poll_transmit` (first sends and
    /// retransmissions).
    pub frames_sent: u64,
    /// Intact packets received.
    pub frames_received: u64,
    /// Link bytes handed out by `poll_transmit`.
    pub bytes_sent: u64,
    /// Link bytes fed to `handle_input`.
    pub bytes_received: u64,
    /// Application payload bytes sent (casts, calls, replies, pipe frames).
    pub payload_bytes_sent: u64,
    /// Application payload bytes delivered.
    pub payload_bytes_received: u64,
    /// Data packets sent again (after a timeout or a fast retransmit).
    pub retransmissions: u64,
    /// Of those, packets sent again at once because duplicate
    /// acknowledgements showed them lost (fast retransmit, lossy links).
    pub fast_retransmits: u64,
    /// Retransmission timeouts that expired with Data unacknowledged (each
    /// sends every unacknowledged packet again).
    pub timeouts: u64,
    /// Data packets received again (dropped).
    pub duplicates: u64,
    /// Data packets received ahead of a gap (buffered).
    pub out_of_order: u64,
    /// Packets dropped before the handshake or beyond the receive window.
    pub dropped: u64,
    /// Frames dropped by the framing for a bad CRC.
    pub crc_failures: u64,
    /// Frames dropped by the framing as malformed.
    pub framing_failures: u64,
    /// Packets that did not decode (each one closes the session).
    pub decode_failures: u64,
    /// Encrypted frames that failed authentication (tampered, forged or
    /// damaged): dropped on lossy links, fatal on reliable streams.
    pub auth_failures: u64,
    /// Encrypted frames rejected as replays (nonce seen or too old).
    pub replays: u64,
    /// Times the link was lost and the session kept for resumption.
    pub detaches: u64,
    /// Times the session resumed on a new link.
    pub resumes: u64,
    /// Round-trip times measured (lossy links: one timed packet at a
    /// time, never one that was sent again; `docs/PROTOCOL.md` §6.1).
    pub rtt_samples: u64,
    /// Smoothed round-trip time in microseconds (RFC 6298 SRTT), as the
    /// retransmission timer sees it: each sample runs from the packet's
    /// send, or from the last ack that made progress if that came later,
    /// to its ack. 0 before the first sample, and on reliable streams,
    /// which measure none.
    pub srtt_us: u64,
    /// Current retransmission timeout in microseconds, backoff included;
    /// 0 on reliable streams, which retransmit nothing.
    pub rto_us: u64,
}

/// [`Stats::COUNTERS`], [`Stats::counters`] and [`Stats::from_counters`]
/// over the counters named once. Both functions destructure or build
/// [`Stats`] whole (no `..`), so a counter added to it does not compile
/// until it is listed here too.
macro_rules! stats_counters {
    ($($field:ident),* $(,)?) => {
        impl Stats {
            /// How many counters [`Stats`] has.
            pub const COUNTERS: usize = [$(stringify!($field)),*].len();

            /// Every counter with its name (the field's name), in the order
            /// the fields are declared. Whatever shows or stores the
            /// counters one by one (the node's link records, the Python
            /// binding's `Link.stats`) goes through this list, so it has
            /// every counter.
            pub fn counters(&self) -> [(&'static str, u64); Self::COUNTERS] {
                let Stats { $($field),* } = *self;
                [$((stringify!($field), $field)),*]
            }

            /// The counters from their values, in the order of
            /// [`counters`](Self::counters).
            pub fn from_counters(values: [u64; Self::COUNTERS]) -> Self {
                let [$($field),*] = values;
                Stats { $($field),* }
            }
        }
    };
}

stats_counters!(
    frames_sent,
    frames_received,
    bytes_sent,
    bytes_received,
    payload_bytes_sent,
    payload_bytes_received,
    retransmissions,
    fast_retransmits,
    timeouts,
    duplicates,
    out_of_order,
    dropped,
    crc_failures,
    framing_failures,
    decode_failures,
    auth_failures,
    replays,
    detaches,
    resumes,
    rtt_samples,
    srtt_us,
    rto_us,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Open,
    /// Link lost; kept until the grace ends.
    Detached,
    /// On a new link; our resume Hello sent, the peer's awaited.
    Resuming,
    Closed,
}

#[derive(Debug, Default)]
struct Pipe {
    /// Bytes we may still send.
    send_credit: u64,
    /// A send was refused for lack of credit.
    blocked: bool,
    /// Bytes received and not yet given back as credit.
    recv_used: u64,
    /// Credit given back by the application, not yet queued for the peer:
    /// grants made between two transmissions go in one PipeCredit.
    grant: u64,
    /// Fragments of a frame not yet complete.
    partial: BytesMut,
    /// We sent PipeEnd: no more data from this side.
    send_ended: bool,
    /// The peer sent PipeEnd: no more data from that side.
    recv_ended: bool,
}

/// One side of a wire session, sans-IO. See the [module docs](super) for
/// how to drive it.
#[derive(Debug)]
pub struct Session {
    config: Config,
    local: LocalInfo,
    framer: Framer,
    /// Frames cut from the input, kept between inputs (emptied) so that
    /// decoding does not allocate a list every time.
    rx_frames: Vec<Bytes>,
    max_frame: usize,
    state: State,
    closed: Option<CloseReason>,
    peer: Option<PeerInfo>,
    now: Instant,
    stats: Stats,
    out: VecDeque<Bytes>,
    events: VecDeque<Event>,

    // secure layer (None: plaintext session)
    secure: Option<Secure>,
    /// Noise handshake messages waiting to be sent.
    hs_out: VecDeque<Bytes>,

    // resumption
    /// Both sides can resume (known once the peer's Hello is in).
    resumable: bool,
    /// When a detached session gives up.
    grace_until: Option<Instant>,
    /// The peer's acknowledgement from its resume Hello, applied when the
    /// resumption completes.
    resume_ack: Option<u64>,
    /// A fresh session reported [`Event::ResumeRequested`].
    resume_requested: bool,
    /// The resume field of our Hellos on the current link (fixed when the
    /// resumption starts, so re-sent Hellos are the same bytes).
    hello_resume: Option<Resume>,
    /// The secure settings, to run a new handshake on resumption.
    secure_cfg: Option<SecureConfig>,

    // handshake
    send_hello: bool,
    send_hello_ack: bool,
    hello_confirmed: bool,

    // sending
    /// Messages not yet sent (messages ahead of pipe data, see
    /// [`SendQueue`]); the flag marks those counted in `queued_app`.
    queue: SendQueue,
    queued_app: usize,
    queue_blocked: bool,
    next_seq: u64,
    in_flight: VecDeque<(u64, Msg)>,
    retransmit_next: Option<u64>,
    /// A packet to send again at once (fast retransmit).
    fast_resend: Option<u64>,
    /// Duplicate acknowledgements in a row.
    dup_acks: u32,
    /// The highest seq sent when loss recovery began: no new fast
    /// retransmit until the peer acknowledges past it.
    recover: u64,
    /// In fast recovery: a partial acknowledgement (progress, but not past
    /// `recover`) re-sends the next packet at once.
    fast_recovery: bool,
    /// Standalone Acks owed at once, one per Data packet received ahead
    /// of a gap: the sender counts them as duplicate acknowledgements.
    gap_acks: u32,
    /// Round-trip time estimate and retransmission timeout (lossy links).
    rtt: RttEstimator,
    /// The Data packet being timed for a round-trip sample and when it was
    /// sent; cleared by any retransmission (Karn's rule).
    rtt_probe: Option<(u64, Instant)>,
    /// The retransmission timer last ran for the handshake: its backoff
    /// ends with the handshake.
    hs_backoff: bool,
    /// After a Data timeout: the first seq sent after it (everything
    /// before went again). An ack reaching it ends the backoff, as a
    /// fresh sample does (Karn).
    backoff_until: Option<u64>,
    /// An ack made progress since the last Data timeout.
    acked_since_timeout: bool,
    /// When an ack last made progress (the retransmission timer restarts
    /// then).
    last_progress: Option<Instant>,
    rto_at: Option<Instant>,
    last_sent: Instant,
    ping_due: bool,

    // receiving
    recv_next: u64,
    reorder: BTreeMap<u64, Msg>,
    ack_at: Option<Instant>,
    last_recv: Instant,

    // channels
    next_call: u64,
    pending_calls: IdSet<u64>,
    incoming_calls: IdSet<u64>,
    pipes: IdMap<u64, Pipe>,
    /// Pipes with credit to give back (see [`Pipe::grant`]).
    grants_due: Vec<u64>,
    next_local_pipe: u64,
    next_remote_pipe: u64,
}

impl Session {
    /// A new session that starts its handshake at once (its Hello is the
    /// first thing `poll_transmit` returns). Both sides call this; there
    /// are no client/server roles.
    pub fn new(config: Config, local: LocalInfo, now: Instant) -> Result<Self, Error> {
        Self::build(config, local, None, now)
    }

    /// A session that authenticates the peer with a Noise handshake after
    /// the Hellos and encrypts every frame after it (`docs/PROTOCOL.md`
    /// §11). `local.node` must be the node id derived from `secure.key`;
    /// the feature bits are set here. [`Event::Connected`] comes only once
    /// the handshake succeeded and the peer is admitted; its
    /// [`PeerInfo::key`] is the peer's verified public key.
    pub fn new_secure(
        config: Config,
        mut local: LocalInfo,
        secure: SecureConfig,
        now: Instant,
    ) -> Result<Self, Error> {
        if local.node != secure.key.node_id() {
            return Err(Error::WireConfig(format!(
                "node id {} is not derived from the node key (expected {})",
                local.node,
                secure.key.node_id()
            )));
        }
        local.features |= secure.features();
        let strict = !config.framing.is_lossy();
        let mut session = Self::build(
            config,
            local,
            Some(Secure::new(secure.clone(), strict)),
            now,
        )?;
        session.secure_cfg = Some(secure);
        Ok(session)
    }

    fn build(
        config: Config,
        mut local: LocalInfo,
        secure: Option<Secure>,
        now: Instant,
    ) -> Result<Self, Error> {
        config.validate()?;
        if config.resume_grace.is_some() {
            local.features |= FEATURE_RESUME;
        }
        let framer = Framer::new(config.framing, config.max_frame, config.reassembly_timeout)?;
        let max_frame = framer.max_frame();
        if max_frame < MIN_FRAME {
            return Err(Error::WireConfig(format!(
                "the framing carries at most {max_frame} bytes, less than {MIN_FRAME}"
            )));
        }
        let lossy = config.framing.is_lossy();
        let rtt = RttEstimator::new(&config);
        let rto = rtt.rto();
        let session = Self {
            framer,
            rx_frames: Vec::new(),
            max_frame,
            state: State::Handshake,
            closed: None,
            peer: None,
            now,
            stats: Stats::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            secure,
            hs_out: VecDeque::new(),
            resumable: false,
            grace_until: None,
            resume_ack: None,
            resume_requested: false,
            hello_resume: None,
            secure_cfg: None,
            send_hello: true,
            send_hello_ack: false,
            hello_confirmed: !lossy,
            queue: SendQueue::new(fifo_send_queue(&config)),
            queued_app: 0,
            queue_blocked: false,
            next_seq: 1,
            in_flight: VecDeque::new(),
            retransmit_next: None,
            fast_resend: None,
            dup_acks: 0,
            recover: 0,
            fast_recovery: false,
            gap_acks: 0,
            rtt,
            rtt_probe: None,
            hs_backoff: lossy,
            backoff_until: None,
            acked_since_timeout: false,
            last_progress: None,
            rto_at: lossy.then_some(now + rto),
            last_sent: now,
            ping_due: false,
            recv_next: 1,
            reorder: BTreeMap::new(),
            ack_at: None,
            last_recv: now,
            next_call: 1,
            pending_calls: IdSet::default(),
            incoming_calls: IdSet::default(),
            pipes: IdMap::default(),
            grants_due: Vec::new(),
            next_local_pipe: 0,
            next_remote_pipe: 0,
            config,
            local,
        };
        let hello = session.hello().encode()?;
        if hello.len() > max_frame {
            return Err(Error::WireConfig(format!(
                "the Hello ({} bytes, with auth) does not fit max_frame {max_frame}",
                hello.len()
            )));
        }
        Ok(session)
    }

    fn hello(&self) -> Packet {
        Packet::Hello(Box::new(Hello {
            node: self.local.node,
            features: self.local.features,
            session_id: self.local.session_id,
            auth: self.local.auth.clone(),
            max_frame: self.max_frame as u32,
            recv_window: self.config.recv_window,
            pipe_window: self.config.pipe_window,
            resume: self.hello_resume,
        }))
    }

    // ----- driver side -----

    /// Feed bytes received from the link (for datagram links: exactly one
    /// datagram). Never fails: bad input is dropped (lossy links) or closes
    /// the session (see [`Event::Closed`]).
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.advance(now);
        if matches!(self.state, State::Closed | State::Detached) {
            return;
        }
        self.stats.bytes_received += data.len() as u64;
        let mut frames = std::mem::take(&mut self.rx_frames);
        let res = self.framer.decode(now, data, &mut frames);
        self.handle_frames(frames, res);
    }

    /// Like [`handle_input`](Self::handle_input), for byte streams read
    /// into a buffer the caller keeps: whole frames are taken out of `buf`
    /// (on reliable streams without copying them), and what is left is the
    /// start of a frame, with room reserved for its rest. Read more bytes
    /// onto the end of `buf` and call again.
    pub fn handle_input_buf(&mut self, now: Instant, buf: &mut BytesMut) {
        self.advance(now);
        if matches!(self.state, State::Closed | State::Detached) {
            buf.clear();
            return;
        }
        let before = buf.len();
        if self.secure.is_some()
            && let Framer::Length(f) = &mut self.framer
        {
            // Sealed frames are decrypted where they were read.
            let mut frames = Vec::new();
            let res = f.decode_buf_mut(buf, &mut frames);
            self.stats.bytes_received += (before - buf.len()) as u64;
            for frame in frames {
                if frame.first() == Some(&SECURE_MARK) {
                    self.handle_sealed(frame);
                } else {
                    self.handle_frame(&frame.freeze());
                }
                if self.state == State::Closed {
                    return;
                }
            }
            self.handle_frames(Vec::new(), res);
            return;
        }
        let mut frames = std::mem::take(&mut self.rx_frames);
        let res = self.framer.decode_buf(now, buf, &mut frames);
        self.stats.bytes_received += (before - buf.len()) as u64;
        self.handle_frames(frames, res);
    }

    /// Handle the frames just decoded (`res` says how decoding ended);
    /// `frames` is kept, emptied, for the next input.
    fn handle_frames(&mut self, mut frames: Vec<Bytes>, res: Result<(), Error>) {
        self.sync_framing_stats();
        let mut closed = false;
        for frame in frames.drain(..) {
            self.handle_frame(&frame);
            if self.state == State::Closed {
                closed = true;
                break;
            }
        }
        self.rx_frames = frames;
        if closed {
            return;
        }
        if let Err(e) = res {
            let code = match e {
                Error::WireFrameTooLarge { .. } => CloseCode::FrameTooLarge,
                _ => CloseCode::Protocol,
            };
            self.close_with(code, e.to_string());
        }
    }

    /// The next chunk of link bytes to write, already framed (for datagram
    /// links: one datagram). Call until `None` after every other call.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.advance(now);
        self.queue_grants();
        loop {
            if let Some(b) = self.out.pop_front() {
                self.stats.bytes_sent += b.len() as u64;
                self.last_sent = self.now;
                return Some(b);
            }
            if !self.produce() {
                return None;
            }
        }
    }

    /// The next event for the application, if any. Drain after every call
    /// that feeds the session.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next;
    /// `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        if self.state == State::Detached {
            return self.grace_until;
        }
        let mut t = self.last_recv + self.config.idle_timeout;
        let mut take = |x: Option<Instant>| {
            if let Some(x) = x {
                t = t.min(x);
            }
        };
        take(self.grace_until);
        take(self.ack_at);
        take(self.rto_at);
        take(self.framer.timeout());
        if self.state == State::Open && !self.ping_due {
            take(Some(self.last_sent + self.config.keepalive));
        }
        Some(t)
    }

    /// Run the timers due at `now` (retransmission, delayed ack, keepalive,
    /// idle timeout, reassembly). Then drain `poll_transmit` and
    /// `poll_event`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.state == State::Closed {
            return;
        }
        let now = self.now;
        if self.grace_until.is_some_and(|g| now >= g) {
            let grace = self.config.resume_grace.unwrap_or_default();
            self.close_with(
                CloseCode::IdleTimeout,
                format!(
                    "the link was lost and the session not resumed within its grace of {grace:?}"
                ),
            );
            return;
        }
        if self.state == State::Detached {
            return;
        }
        if now >= self.last_recv + self.config.idle_timeout {
            if self.resumable && matches!(self.state, State::Open | State::Resuming) {
                let idle = self.config.idle_timeout;
                self.detach(format!("nothing heard from the peer for {idle:?}"));
                return;
            }
            let what = if self.state == State::Handshake {
                "handshake"
            } else {
                "idle"
            };
            self.close_with(
                CloseCode::IdleTimeout,
                format!(
                    "{what} timeout: nothing heard from the peer for {:?}",
                    self.config.idle_timeout
                ),
            );
            return;
        }
        self.framer.handle_timeout(now);
        self.sync_framing_stats();
        if self.rto_at.is_some_and(|t| t <= now) {
            if !self.hello_confirmed {
                self.send_hello = true;
            }
            let awaiting = self.secure_awaiting();
            if awaiting
                && self.hs_out.is_empty()
                && let Some(m) = self.secure.as_ref().and_then(Secure::last_sent)
            {
                self.hs_out.push_back(m);
            }
            if let Some(&(seq, _)) = self.in_flight.front() {
                self.retransmit_next = Some(seq);
                self.stats.timeouts += 1;
                // Everything unacknowledged goes again: the duplicates it
                // makes the peer acknowledge must not count as losses.
                self.recover = self.next_seq - 1;
                self.fast_recovery = false;
                self.fast_resend = None;
                self.dup_acks = 0;
                // Karn: whatever acknowledges the timed packet now may
                // acknowledge its copy.
                self.rtt_probe = None;
                // Data timed out: this backoff is the path's, kept until
                // a packet sent after this expiry is acknowledged (or a
                // fresh sample), even if the handshake ends meanwhile.
                self.hs_backoff = false;
                self.backoff_until = Some(self.next_seq);
                // Backed off already and the last expiry's retransmission
                // made progress: the path delivers, this is another loss,
                // not a longer round trip; the RTO keeps its level instead
                // of doubling again.
                let progress = std::mem::take(&mut self.acked_since_timeout);
                if !(progress && self.rtt.is_backed_off()) {
                    self.rtt.on_timeout();
                }
            } else {
                self.hs_backoff = true;
                self.rtt.on_timeout();
            }
            self.rto_at = (!self.hello_confirmed || !self.in_flight.is_empty() || awaiting)
                .then_some(now + self.rtt.rto());
        }
        if self.state == State::Open && now >= self.last_sent + self.config.keepalive {
            self.ping_due = true;
        }
    }

    /// Bytes sent and received so far: [`stats`](Self::stats)' first two
    /// counters, without building the rest.
    pub(crate) fn bytes_moved(&self) -> (u64, u64) {
        (self.stats.bytes_sent, self.stats.bytes_received)
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let lossy = self.config.framing.is_lossy();
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Stats {
            rtt_samples: self.rtt.samples(),
            srtt_us: self.rtt.srtt().filter(|_| lossy).map_or(0, us),
            rto_us: if lossy { us(self.rtt.rto()) } else { 0 },
            ..self.stats
        }
    }

    /// The smoothed round-trip time measured on this link, to the
    /// nanosecond (test only: [`Stats::srtt_us`] is what the session
    /// shows).
    #[cfg(test)]
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// The retransmission timeout now, backoff included, to the
    /// nanosecond (test only: [`Stats::rto_us`] is what the session shows).
    #[cfg(test)]
    pub(crate) fn rto(&self) -> Duration {
        self.rtt.rto()
    }

    /// Forget the round-trip time measured so far (a new link): the
    /// estimate starts again from `initial_rto`.
    fn restart_rtt(&mut self) {
        self.rtt = RttEstimator::new(&self.config);
        self.rtt_probe = None;
        self.backoff_until = None;
        self.last_progress = None;
    }

    /// Data packets sent and not yet acknowledged (test only).
    #[cfg(test)]
    pub(crate) fn unacked(&self) -> usize {
        self.in_flight.len()
    }

    /// The peer, once its Hello arrived.
    pub fn peer(&self) -> Option<&PeerInfo> {
        self.peer.as_ref()
    }

    /// This side's Hello info.
    pub fn local(&self) -> &LocalInfo {
        &self.local
    }

    /// The epoch of the key sealing outgoing frames (0 after the
    /// handshake, +1 per rekey); `None` on plaintext sessions or before
    /// the handshake finished.
    pub fn key_epoch(&self) -> Option<u64> {
        self.secure.as_ref().and_then(Secure::tx_epoch)
    }

    /// The cipher suite of a secure session, once its handshake started.
    pub fn cipher_suite(&self) -> Option<Suite> {
        self.secure.as_ref().and_then(Secure::suite)
    }

    /// The link kind this session runs over.
    pub fn framing_kind(&self) -> FramingKind {
        self.config.framing
    }

    /// Whether the handshake finished and the session is not closed.
    pub fn is_connected(&self) -> bool {
        self.state == State::Open
    }

    /// Why the session closed, once it did.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    /// The largest packet this side accepts (config, lowered to the
    /// framing's limit).
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Close the session: a Close packet is queued for the peer and
    /// [`Event::Closed`] follows. Idempotent.
    pub fn close(&mut self, message: &str) {
        self.close_with(CloseCode::Normal, message.to_owned());
    }

    /// Close the session because the peer is no longer admitted (its key
    /// left the allow-list): like [`close`](Self::close), with
    /// [`CloseCode::Unauthorized`] so both sides report a refused link.
    pub fn revoke(&mut self, message: &str) {
        self.close_with(CloseCode::Unauthorized, message.to_owned());
    }

    // ----- resumption -----

    /// Whether this session resumes after a lost link (both sides can, and
    /// it is connected, detached or resuming).
    pub fn is_resumable(&self) -> bool {
        self.resumable && matches!(self.state, State::Open | State::Detached | State::Resuming)
    }

    /// Whether the session has no link now (detached, not yet resuming).
    pub fn awaiting_link(&self) -> bool {
        self.state == State::Detached
    }

    /// Whether the session waits for a new link (detached, or resuming on
    /// one).
    pub fn is_detached(&self) -> bool {
        matches!(self.state, State::Detached | State::Resuming)
    }

    /// The link is gone. A resumable session is kept ([`Event::Detached`]
    /// follows; true is returned) until [`resume`](Self::resume) or the end
    /// of its grace; any other session closes ([`Event::Closed`]; false).
    pub fn link_lost(&mut self, now: Instant, reason: &str) -> bool {
        self.advance(now);
        if self.is_resumable() {
            self.detach(reason.to_owned());
            return true;
        }
        if self.state != State::Closed {
            self.finish(CloseReason {
                code: CloseCode::Normal,
                message: reason.to_owned(),
                remote: false,
            });
        }
        false
    }

    fn detach(&mut self, reason: String) {
        if self.state == State::Detached {
            return;
        }
        tracing::debug!(%reason, "wire session detached from its link");
        self.state = State::Detached;
        self.stats.detaches += 1;
        if self.grace_until.is_none() {
            self.grace_until = Some(self.now + self.config.resume_grace.unwrap_or_default());
        }
        self.out.clear();
        self.hs_out.clear();
        self.reorder.clear();
        self.retransmit_next = None;
        self.fast_resend = None;
        self.fast_recovery = false;
        self.dup_acks = 0;
        self.gap_acks = 0;
        self.resume_ack = None;
        self.rto_at = None;
        self.ack_at = None;
        self.ping_due = false;
        self.send_hello = false;
        self.send_hello_ack = false;
        if let Ok(framer) = Framer::new(
            self.config.framing,
            self.config.max_frame,
            self.config.reassembly_timeout,
        ) {
            self.framer = framer;
        }
        self.events.push_back(Event::Detached { reason });
    }

    /// The settings this session runs with (the framing, timers and
    /// windows of its current link's kind).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Move a session that waits for a new link (or is about to be given
    /// one with [`resume`](Self::resume)) to a link of another kind: its
    /// framing, retransmission, send window and timers become those of
    /// `link` (a [`Config`] for the new kind); the limits agreed at the
    /// handshake (`max_frame`, `recv_window`, `pipe_window`) stay, as the
    /// resumption requires (`docs/PROTOCOL.md` §12.1). Call it before
    /// `resume`. Fails, changing nothing, if the session is not resumable
    /// or the new framing cannot carry the session's packets.
    pub fn set_link_kind(&mut self, now: Instant, link: &Config) -> Result<(), Error> {
        self.advance(now);
        if !self.is_resumable() {
            return Err(Error::WireClosed {
                reason: "the session cannot resume".into(),
            });
        }
        if link.framing == self.config.framing {
            return Ok(());
        }
        let framer = Framer::new(link.framing, self.max_frame, link.reassembly_timeout)?;
        if framer.max_frame() < self.max_frame {
            return Err(Error::WireConfig(format!(
                "a {:?} link carries packets of at most {} bytes; this session uses {}",
                link.framing,
                framer.max_frame(),
                self.max_frame
            )));
        }
        if self.state != State::Detached {
            self.detach("moved to a link of another kind".into());
        }
        tracing::debug!(from = ?self.config.framing, to = ?link.framing, "wire session changes link kind");
        self.framer = framer;
        self.config.framing = link.framing;
        self.config.send_window = link.send_window;
        self.config.initial_rto = link.initial_rto;
        self.config.min_rto = link.min_rto;
        self.config.max_rto = link.max_rto;
        self.config.ack_delay = link.ack_delay;
        self.config.reassembly_timeout = link.reassembly_timeout;
        // Another kind of link: what was measured on the old one is void.
        self.restart_rtt();
        Ok(())
    }

    /// Continue this session on a new link (whose bytes now go through
    /// this session): our resume Hello goes out first. `peer_hello` is the
    /// peer's resume Hello when the peer asked first (from
    /// [`Event::ResumeRequested`] of the session that received it).
    /// [`Event::Resumed`] follows once both sides agree (and, on secure
    /// sessions, a new Noise handshake proved the same peer key).
    pub fn resume(&mut self, now: Instant, peer_hello: Option<Bytes>) -> Result<(), Error> {
        self.advance(now);
        if !self.is_resumable() {
            return Err(Error::WireClosed {
                reason: self
                    .closed
                    .as_ref()
                    .map_or_else(|| "the session cannot resume".into(), ToString::to_string),
            });
        }
        if self.state != State::Detached {
            self.detach("resumed on another link".into());
        }
        self.state = State::Resuming;
        self.hello_resume = self.peer.as_ref().map(|peer| Resume {
            session: peer.session_id,
            ack: self.recv_next - 1,
        });
        self.send_hello = true;
        self.hello_confirmed = !self.config.framing.is_lossy();
        self.restart_rtt();
        self.hs_backoff = self.config.framing.is_lossy();
        self.rto_at = self
            .config
            .framing
            .is_lossy()
            .then_some(self.now + self.rtt.rto());
        self.last_recv = self.now;
        self.last_sent = self.now;
        if let Some(cfg) = &self.secure_cfg {
            self.secure = Some(Secure::new(cfg.clone(), !self.config.framing.is_lossy()));
        }
        if let Some(hello) = peer_hello {
            self.handle_packet(&hello, false);
        }
        Ok(())
    }

    /// Answer an [`Event::ResumeRequested`] with "no such session": the
    /// peer gets Close code 12 and starts a new session.
    pub fn refuse_resume(&mut self, why: &str) {
        self.close_with(CloseCode::NoSession, why.to_owned());
    }

    /// The resumption handshake is done: apply the peer's acknowledgement,
    /// send again what it lacks, and run.
    fn finish_resume(&mut self) {
        let Some(ack) = self.resume_ack.take() else {
            return;
        };
        let lowest = self.in_flight.front().map_or(self.next_seq, |(s, _)| *s);
        if ack >= self.next_seq || ack + 1 < lowest {
            self.close_with(
                CloseCode::Protocol,
                format!(
                    "cannot resume: the peer acknowledges packet {ack}, but packets {lowest} to {} are what it may lack",
                    self.next_seq - 1
                ),
            );
            return;
        }
        while self.in_flight.front().is_some_and(|(s, _)| *s <= ack) {
            self.in_flight.pop_front();
        }
        self.retransmit_next = self.in_flight.front().map(|(s, _)| *s);
        // All of it goes again: no fast retransmit for what it duplicates.
        self.recover = self.next_seq - 1;
        self.rtt.clear_backoff();
        self.hs_backoff = false;
        self.rtt_probe = None;
        self.rto_at = (self.config.framing.is_lossy() && !self.in_flight.is_empty())
            .then_some(self.now + self.rtt.rto());
        self.state = State::Open;
        self.grace_until = None;
        self.ack_at = Some(self.now);
        self.stats.resumes += 1;
        tracing::debug!(resent = self.in_flight.len(), "wire session resumed");
        self.events.push_back(Event::Resumed);
    }

    // ----- application side -----

    /// Tell the peer about a registry entry of this node.
    pub fn announce(&mut self, entry: EntryInfo) -> Result<(), Error> {
        self.enqueue(Msg::Announce(Box::new(entry)))
    }

    /// Tell the peer about a registry entry of another node that this node
    /// forwards to (send only if the peer set [`FEATURE_ROUTING`]). An id
    /// announced again replaces the earlier announcement.
    pub fn announce_route(&mut self, entry: EntryInfo, route: RouteInfo) -> Result<(), Error> {
        self.enqueue(Msg::Route(Box::new(entry), route))
    }

    /// Tell the peer a previously announced entry is gone.
    pub fn withdraw(&mut self, id: u64, reason: ExitReason) -> Result<(), Error> {
        self.enqueue(Msg::Withdraw { id, reason })
    }

    /// Send a one-way message to the server named `to` on the peer.
    pub fn cast(&mut self, to: &str, payload: Bytes) -> Result<(), Error> {
        let n = payload.len() as u64;
        self.enqueue(Msg::Cast {
            to: to.to_owned(),
            payload,
        })?;
        self.stats.payload_bytes_sent += n;
        Ok(())
    }

    /// Send a request to the server named `to` on the peer; the answer
    /// comes as [`Event::Reply`] with the returned id.
    pub fn call(&mut self, to: &str, payload: Bytes) -> Result<CallId, Error> {
        if self.pending_calls.len() >= self.config.max_pending_calls {
            self.check_open()?;
            return Err(Error::WireLimit {
                what: "pending calls",
                limit: self.config.max_pending_calls,
            });
        }
        let id = self.next_call;
        let n = payload.len() as u64;
        self.enqueue(Msg::Call {
            id,
            to: to.to_owned(),
            payload,
        })?;
        self.next_call += 1;
        self.pending_calls.insert(id);
        self.stats.payload_bytes_sent += n;
        Ok(CallId(id))
    }

    /// Stop waiting for a call's reply (e.g. after a timeout); a late reply
    /// is then dropped. Returns whether the call was pending.
    pub fn cancel_call(&mut self, id: CallId) -> bool {
        self.pending_calls.remove(&id.0)
    }

    /// Answer a call received as [`Event::Call`].
    pub fn reply(&mut self, id: CallId, result: Result<Bytes, RemoteError>) -> Result<(), Error> {
        self.check_open()?;
        if !self.incoming_calls.contains(&id.0) {
            return Err(Error::WireUnknownCall(id.0));
        }
        let (msg, n) = match result {
            Ok(payload) => {
                let n = payload.len() as u64;
                (Msg::ReplyOk { id: id.0, payload }, n)
            }
            Err(error) => (Msg::ReplyErr { id: id.0, error }, 0),
        };
        self.enqueue(msg)?;
        self.incoming_calls.remove(&id.0);
        self.stats.payload_bytes_sent += n;
        Ok(())
    }

    /// Open a pipe to port `port` of server `to_server` on the peer. It may
    /// be written at once; the peer may refuse it by closing it.
    pub fn open_pipe(&mut self, to_server: &str, port: &str) -> Result<PipeId, Error> {
        let credit = u64::from(self.check_open()?.pipe_window);
        if self.pipes.len() >= self.config.max_pipes {
            return Err(Error::WireLimit {
                what: "open pipes",
                limit: self.config.max_pipes,
            });
        }
        let id = self.next_local_pipe << 1;
        self.enqueue(Msg::PipeOpen {
            pipe: id,
            server: to_server.to_owned(),
            port: port.to_owned(),
        })?;
        self.next_local_pipe += 1;
        self.pipes.insert(
            id,
            Pipe {
                send_credit: credit,
                ..Pipe::default()
            },
        );
        Ok(PipeId(id))
    }

    /// Bytes that may be sent on a pipe now (`None` if it is not open).
    pub fn pipe_credit(&self, id: PipeId) -> Option<u64> {
        self.pipes.get(&id.0).map(|p| p.send_credit)
    }

    /// Send one frame on a pipe. Fails with [`Error::WireWouldBlock`] when
    /// the peer's credit is short ([`Event::PipeWritable`] follows), with
    /// [`Error::WireFrameTooLarge`] when the frame exceeds the peer's
    /// `pipe_window`, and with [`Error::PipeClosed`] once the pipe closed.
    pub fn pipe_send(&mut self, id: PipeId, data: Bytes) -> Result<(), Error> {
        let peer = self.check_open()?;
        let window = peer.pipe_window as usize;
        let send_max = self.send_max();
        let known = self.pipe_known(id.0);
        let Some(pipe) = self.pipes.get_mut(&id.0) else {
            return Err(if known {
                Error::PipeClosed
            } else {
                Error::WireUnknownPipe(id.0)
            });
        };
        if pipe.send_ended {
            return Err(Error::PipeClosed);
        }
        let len = data.len();
        if len > window {
            return Err(Error::WireFrameTooLarge { len, max: window });
        }
        if len as u64 > pipe.send_credit {
            pipe.blocked = true;
            return Err(Error::WireWouldBlock {
                what: "pipe credit",
            });
        }
        pipe.send_credit -= len as u64;
        let chunk = send_max - DATA_OVERHEAD - PIPE_DATA_OVERHEAD;
        let mut rest = data;
        loop {
            let piece = rest.split_to(rest.len().min(chunk));
            let last = rest.is_empty();
            self.queue.push_pipe(Msg::PipeData {
                pipe: id.0,
                last,
                data: piece,
            });
            if last {
                break;
            }
        }
        self.stats.payload_bytes_sent += len as u64;
        Ok(())
    }

    /// The local reader took `n` bytes of a pipe's frames: give the peer
    /// that much credit back. Ignored for a closed pipe.
    pub fn pipe_consumed(&mut self, id: PipeId, n: usize) -> Result<(), Error> {
        self.check_open()?;
        let known = self.pipe_known(id.0);
        let Some(pipe) = self.pipes.get_mut(&id.0) else {
            return if known {
                Ok(())
            } else {
                Err(Error::WireUnknownPipe(id.0))
            };
        };
        let delivered = pipe.recv_used.saturating_sub(pipe.partial.len() as u64);
        let grant = (n as u64).min(delivered);
        if grant > 0 {
            pipe.recv_used -= grant;
            if pipe.grant == 0 {
                self.grants_due.push(id.0);
            }
            pipe.grant += grant;
        }
        Ok(())
    }

    /// Half-close a pipe: this side sends no more frames on it (further
    /// [`pipe_send`](Self::pipe_send)s fail with
    /// [`Error::PipeClosed`](crate::Error::PipeClosed)), but still reads.
    /// The peer gets [`Event::PipeEnded`] after every frame sent before.
    /// Ending an ended or closed pipe is a no-op.
    pub fn end_pipe(&mut self, id: PipeId) -> Result<(), Error> {
        self.check_open()?;
        let known = self.pipe_known(id.0);
        let Some(pipe) = self.pipes.get_mut(&id.0) else {
            return if known {
                Ok(())
            } else {
                Err(Error::WireUnknownPipe(id.0))
            };
        };
        if !std::mem::replace(&mut pipe.send_ended, true) {
            self.queue.push_pipe(Msg::PipeEnd { pipe: id.0 });
        }
        Ok(())
    }

    /// Close a pipe; the peer gets [`Event::PipeClosed`] after every frame
    /// sent before. Closing a closed pipe is a no-op.
    pub fn close_pipe(&mut self, id: PipeId, reason: ExitReason) -> Result<(), Error> {
        self.check_open()?;
        if self.pipes.remove(&id.0).is_none() {
            return if self.pipe_known(id.0) {
                Ok(())
            } else {
                Err(Error::WireUnknownPipe(id.0))
            };
        }
        self.queue.push_pipe(Msg::PipeClose { pipe: id.0, reason });
        Ok(())
    }

    // ----- internals -----

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn sync_framing_stats(&mut self) {
        let c = self.framer.counters();
        self.stats.crc_failures = c.crc_failures;
        self.stats.framing_failures = c.framing_failures;
    }

    fn check_open(&self) -> Result<&PeerInfo, Error> {
        match (&self.state, &self.peer, &self.closed) {
            (State::Closed, _, reason) => Err(Error::WireClosed {
                reason: reason
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
            }),
            (State::Open | State::Detached | State::Resuming, Some(peer), _) => Ok(peer),
            _ => Err(Error::WireNotConnected),
        }
    }

    /// The largest packet we may send: ours and the peer's limit (less
    /// the encryption overhead on secure sessions).
    fn send_max(&self) -> usize {
        let peer = self
            .peer
            .as_ref()
            .map_or(MIN_FRAME, |p| p.max_frame as usize);
        let overhead = if self.secure.is_some() {
            SECURE_OVERHEAD
        } else {
            0
        };
        self.max_frame.min(peer) - overhead
    }

    fn enqueue(&mut self, msg: Msg) -> Result<(), Error> {
        self.check_open()?;
        if self.queued_app >= self.config.max_send_queue {
            self.queue_blocked = true;
            return Err(Error::WireWouldBlock {
                what: "send queue full",
            });
        }
        let len = encoded_len(&msg)?;
        let max = self.send_max() - DATA_OVERHEAD;
        if len > max {
            return Err(Error::WireFrameTooLarge { len, max });
        }
        self.queued_app += 1;
        self.queue.push_message(msg, true);
        Ok(())
    }

    fn pipe_known(&self, id: u64) -> bool {
        let n = id >> 1;
        if id & 1 == 0 {
            n < self.next_local_pipe
        } else {
            n < self.next_remote_pipe
        }
    }

    fn close_with(&mut self, code: CloseCode, message: String) {
        if self.state == State::Closed {
            return;
        }
        tracing::debug!(code = code.code(), %message, "wire session closing");
        let packet = Packet::Close {
            code,
            message: truncate(&message, MAX_CLOSE_TEXT).to_owned(),
        };
        if let Ok(bytes) = packet.encode() {
            // Sealed once keys are in place (the peer then only takes
            // sealed packets); in clear during the handshake.
            let bytes = match self.secure.as_mut() {
                Some(sec) if sec.has_keys() => sec.seal(self.now, &bytes, &[]),
                _ => Some(Bytes::from(bytes)),
            };
            // A Close packet that does not fit is not sent; the peer times out.
            if let Some(bytes) = bytes
                && self.framer.encode(&bytes, &mut self.out).is_ok()
            {
                self.stats.frames_sent += 1;
            }
        }
        self.finish(CloseReason {
            code,
            message,
            remote: false,
        });
    }

    fn finish(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.resumable = false;
        self.grace_until = None;
        self.resume_ack = None;
        self.queue.clear();
        self.in_flight.clear();
        self.reorder.clear();
        self.pipes.clear();
        self.pending_calls.clear();
        self.incoming_calls.clear();
        self.rto_at = None;
        self.ack_at = None;
        self.closed = Some(reason.clone());
        self.events.push_back(Event::Closed { reason });
    }

    fn protocol_error(&mut self, code: CloseCode, message: String) {
        self.close_with(code, message);
    }

    /// Build one packet into `out`; false when there is nothing to send.
    fn produce(&mut self) -> bool {
        if matches!(self.state, State::Closed | State::Detached) {
            return false;
        }
        let packet = if self.send_hello {
            self.send_hello = false;
            self.hello()
        } else if self.send_hello_ack {
            self.send_hello_ack = false;
            Packet::HelloAck {
                session_id: self.peer.as_ref().map_or(0, |p| p.session_id),
            }
        } else if let Some(msg) = self.hs_out.pop_front() {
            Packet::Handshake { msg }
        } else if self.secure.as_ref().is_some_and(|s| !s.has_keys()) {
            // Nothing but the handshake goes out before the keys.
            return false;
        } else if self.gap_acks > 0 && self.state == State::Open {
            self.gap_acks -= 1;
            if self.gap_acks == 0 {
                self.ack_at = None;
            }
            Packet::Ack {
                ack: self.recv_next - 1,
            }
        } else if let Some(p) = self.next_data() {
            p
        } else if self.ack_at.is_some_and(|t| t <= self.now) {
            self.ack_at = None;
            Packet::Ack {
                ack: self.recv_next - 1,
            }
        } else if self.ping_due {
            self.ping_due = false;
            Packet::Ping
        } else {
            return false;
        };
        let clear = matches!(
            packet,
            Packet::Hello(_) | Packet::HelloAck { .. } | Packet::Handshake { .. }
        );
        // A plaintext packet on a length-prefixed stream is encoded after
        // room for its prefix, and goes out without another copy.
        let prefix = match self.framer.in_place_prefix() {
            Some(prefix) if clear || self.secure.is_none() => prefix,
            _ => 0,
        };
        let res = match packet.encode_split_after(prefix) {
            Ok((head, tail)) if prefix > 0 => self
                .framer
                .frame_parts_in_place(head, tail, &mut self.out)
                .map(drop),
            Ok((head, tail)) => match self.secure.as_mut() {
                // On a length-prefixed stream the frame is sealed after
                // room for the prefix and goes out as one chunk, in a
                // buffer reused from an earlier frame when one came back.
                Some(sec) if !clear && self.framer.in_place_prefix().is_some() => {
                    let prefix = self.framer.in_place_prefix().unwrap_or(0);
                    match sec.seal_after(self.now, prefix, &head, &tail) {
                        Some(buf) => self
                            .framer
                            .frame_in_place(buf, &mut self.out)
                            .map(|chunk| sec.recycle(&chunk)),
                        None => Err(Error::Encode("no key to seal the packet".into())),
                    }
                }
                Some(sec) if !clear => match sec.seal(self.now, &head, &tail) {
                    Some(frame) => self.framer.encode(&frame, &mut self.out),
                    None => Err(Error::Encode("no key to seal the packet".into())),
                },
                _ => self.framer.encode_parts(&head, tail, &mut self.out),
            },
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {
                self.stats.frames_sent += 1;
                true
            }
            Err(e) => {
                // Sizes are checked on entry, so this is a bug; do not panic.
                self.close_with(CloseCode::Protocol, format!("cannot send a packet: {e}"));
                true
            }
        }
    }

    /// Queue one PipeCredit per pipe for the credit given back since the
    /// last transmission.
    fn queue_grants(&mut self) {
        for id in std::mem::take(&mut self.grants_due) {
            if let Some(pipe) = self.pipes.get_mut(&id)
                && pipe.grant > 0
            {
                let bytes = std::mem::take(&mut pipe.grant);
                self.queue
                    .push_message(Msg::PipeCredit { pipe: id, bytes }, false);
            }
        }
    }

    fn next_data(&mut self) -> Option<Packet> {
        if self.state != State::Open {
            return None;
        }
        let ack = self.recv_next - 1;
        if let Some(seq) = self.fast_resend.take() {
            let front = self.in_flight.front().map_or(u64::MAX, |(s, _)| *s);
            let idx = seq.checked_sub(front).map(|i| i as usize);
            if let Some((_, msg)) = idx.and_then(|i| self.in_flight.get(i)) {
                let msg = msg.clone();
                self.stats.retransmissions += 1;
                self.ack_at = None;
                return Some(Packet::Data { seq, ack, msg });
            }
        }
        if let Some(seq) = self.retransmit_next {
            let front = self.in_flight.front().map_or(u64::MAX, |(s, _)| *s);
            let idx = seq.checked_sub(front).map(|i| i as usize);
            if let Some((_, msg)) = idx.and_then(|i| self.in_flight.get(i)) {
                let msg = msg.clone();
                self.retransmit_next = (seq + 1 < self.next_seq).then_some(seq + 1);
                self.stats.retransmissions += 1;
                self.ack_at = None;
                return Some(Packet::Data { seq, ack, msg });
            }
            self.retransmit_next = None;
        }
        let lossy = self.config.framing.is_lossy();
        let window = if lossy {
            self.config
                .send_window
                .min(self.peer.as_ref().map_or(1, |p| p.recv_window)) as usize
        } else {
            RETAIN_MAX
        };
        if (lossy || self.resumable) && self.in_flight.len() >= window {
            return None;
        }
        let (msg, counted) = self.queue.pop()?;
        if counted {
            self.queued_app -= 1;
            if self.queue_blocked && self.queued_app < self.config.max_send_queue {
                self.queue_blocked = false;
                self.events.push_back(Event::Writable);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if lossy {
            self.in_flight.push_back((seq, msg.clone()));
            if self.rtt_probe.is_none() {
                self.rtt_probe = Some((seq, self.now));
            }
            if self.rto_at.is_none() {
                self.rto_at = Some(self.now + self.rtt.rto());
            }
        } else if self.resumable {
            // Kept (payloads shared, not copied) until acknowledged, to be
            // sent again on a new link.
            self.in_flight.push_back((seq, msg.clone()));
        }
        self.ack_at = None;
        Some(Packet::Data { seq, ack, msg })
    }

    /// A frame starting with the secure mark, owned: decrypted in place.
    fn handle_sealed(&mut self, frame: BytesMut) {
        let Some(sec) = self.secure.as_mut() else {
            return self.handle_frame(&frame.freeze());
        };
        match sec.open_owned(frame) {
            Ok(packet) => self.handle_packet(&packet, true),
            Err(e) => self.open_failed(e),
        }
    }

    fn handle_frame(&mut self, frame: &Bytes) {
        if self.secure.is_some() && frame.first() == Some(&SECURE_MARK) {
            return self.handle_sealed(BytesMut::from(&frame[..]));
        }
        self.handle_packet(frame, false);
    }

    /// A packet as received, or as opened from a sealed frame.
    fn handle_packet(&mut self, frame: &Bytes, sealed: bool) {
        self.last_recv = self.now;
        let packet = match Packet::decode_frame(frame) {
            Ok(p) => p,
            Err(e) => {
                self.stats.decode_failures += 1;
                self.protocol_error(CloseCode::Decode, e.to_string());
                return;
            }
        };
        self.stats.frames_received += 1;
        if self.secure.is_some() && !self.secure_accepts(&packet, sealed) {
            return;
        }
        if sealed {
            // The initiator's proof that the responder has the keys.
            self.secure_connected();
        }
        match packet {
            Packet::ForeignHello { magic, version } => {
                if magic != super::MAGIC {
                    self.protocol_error(
                        CloseCode::BadMagic,
                        format!("not an oscloud peer: bad magic {magic:#010x}"),
                    );
                } else {
                    self.protocol_error(
                        CloseCode::Version,
                        format!(
                            "unsupported protocol version {version} (this side speaks {VERSION})"
                        ),
                    );
                }
            }
            Packet::Hello(h) => self.handle_hello(*h, frame),
            Packet::Handshake { msg } => self.handle_handshake(msg),
            Packet::HelloAck { session_id } => {
                if session_id == self.local.session_id {
                    self.hello_confirmed = true;
                }
            }
            Packet::Data { seq, ack, msg } => {
                if self.peer.is_none() {
                    self.stats.dropped += 1;
                    return;
                }
                self.hello_confirmed = true;
                self.handle_ack(ack, false);
                if self.state == State::Open {
                    self.handle_data(seq, msg);
                }
            }
            Packet::Ack { ack } => {
                // Not a proof that the peer has our Hello: a peer may
                // answer a Ping before it does.
                if self.peer.is_none() {
                    self.stats.dropped += 1;
                    return;
                }
                self.handle_ack(ack, true);
            }
            Packet::Ping => {
                if self.peer.is_some() {
                    self.ack_at = Some(self.now);
                }
            }
            Packet::Close { code, message } => {
                self.finish(CloseReason {
                    code,
                    message,
                    remote: true,
                });
            }
        }
        let awaiting = self.secure_awaiting();
        if self.hello_confirmed
            && self.in_flight.is_empty()
            && !awaiting
            && self.state != State::Closed
        {
            self.rto_at = None;
        } else if awaiting && self.rto_at.is_none() {
            self.rto_at = Some(self.now + self.rtt.rto());
        }
        if self.hello_confirmed && !awaiting && std::mem::take(&mut self.hs_backoff) {
            self.rtt.clear_backoff();
        }
    }

    /// Whether a handshake message of ours may need sending again (lossy
    /// links only).
    fn secure_awaiting(&self) -> bool {
        self.config.framing.is_lossy() && self.secure.as_ref().is_some_and(Secure::awaiting)
    }

    /// An encrypted frame did not open: dropped on lossy links (the
    /// session retransmits what mattered), fatal on reliable streams.
    fn open_failed(&mut self, e: OpenError) {
        match e {
            OpenError::Replay => self.stats.replays += 1,
            OpenError::Auth | OpenError::Malformed => self.stats.auth_failures += 1,
            OpenError::NoKeys => self.stats.dropped += 1,
        }
        if self.config.framing.is_lossy() {
            tracing::debug!("dropped a frame: {e}");
        } else {
            tracing::warn!("{e}: closing the link");
            self.close_with(CloseCode::Crypto, e.to_string());
        }
    }

    /// On a secure session, whether a decoded packet may be acted on:
    /// only the handshake travels in clear (and a Close before the peer
    /// proved it has the keys); everything else must be sealed.
    fn secure_accepts(&mut self, packet: &Packet, sealed: bool) -> bool {
        let handshake = matches!(
            packet,
            Packet::Hello(_)
                | Packet::ForeignHello { .. }
                | Packet::HelloAck { .. }
                | Packet::Handshake { .. }
        );
        if sealed && handshake {
            self.protocol_error(
                CloseCode::Protocol,
                "handshake packet inside an encrypted frame".into(),
            );
            return false;
        }
        if sealed || handshake {
            return true;
        }
        let confirmed = self.secure.as_ref().is_some_and(Secure::confirmed);
        if matches!(packet, Packet::Close { .. }) && !confirmed {
            return true;
        }
        // A packet in clear where only sealed ones are allowed: injected,
        // or a peer that does not encrypt.
        self.stats.dropped += 1;
        if self.config.framing.is_lossy() {
            tracing::debug!("dropped a packet sent in clear on an encrypted session");
        } else {
            self.protocol_error(
                CloseCode::Crypto,
                "packet in clear on an encrypted session".into(),
            );
        }
        false
    }

    /// Start the Noise handshake once the peer's Hello is in; false if the
    /// session closed instead.
    fn secure_start(&mut self, h: &Hello, raw: &[u8]) -> bool {
        let Some(sec) = self.secure.as_mut() else {
            if h.features & FEATURE_NOISE != 0 {
                self.protocol_error(
                    CloseCode::Unauthorized,
                    "the peer requires encrypted links and this node has no key".into(),
                );
                return false;
            }
            return true;
        };
        let want = sec.features() & (FEATURE_NOISE | FEATURE_PSK);
        let have = h.features & (FEATURE_NOISE | FEATURE_PSK);
        if have != want {
            let why = if have & FEATURE_NOISE == 0 {
                "the peer does not encrypt (it has no node key); this node requires it"
            } else {
                "a pre-shared key is configured on one side only"
            };
            self.protocol_error(CloseCode::Unauthorized, why.into());
            return false;
        }
        if h.session_id == self.local.session_id {
            self.protocol_error(
                CloseCode::Protocol,
                "both sides picked the same session id".into(),
            );
            return false;
        }
        let ours = match self.hello().encode() {
            Ok(b) => b,
            Err(e) => {
                self.protocol_error(CloseCode::Protocol, e.to_string());
                return false;
            }
        };
        let initiator = self.local.session_id < h.session_id;
        let both = self.local.features & h.features;
        let suite = if both & FEATURE_AEGIS != 0 {
            Suite::Aegis256
        } else if both & FEATURE_AESGCM != 0 {
            Suite::AesGcm
        } else {
            Suite::ChaChaPoly
        };
        let hellos = if initiator {
            [&ours[..], raw]
        } else {
            [raw, &ours[..]]
        };
        let Some(sec) = self.secure.as_mut() else {
            return false;
        };
        match sec.start(initiator, suite, hellos) {
            Ok(first) => {
                self.hs_out.extend(first);
                true
            }
            Err(e) => {
                self.protocol_error(CloseCode::Protocol, e);
                false
            }
        }
    }

    fn handle_handshake(&mut self, msg: Bytes) {
        let now = self.now;
        let Some(sec) = self.secure.as_mut() else {
            self.protocol_error(
                CloseCode::Protocol,
                "handshake message on a plaintext session".into(),
            );
            return;
        };
        let Some(claimed) = self.peer.as_ref().map(|p| p.node).filter(|_| sec.started()) else {
            // Before the peer's Hello (reordered on a lossy link): it is
            // sent again.
            self.stats.dropped += 1;
            return;
        };
        match sec.on_handshake(&msg, now, claimed) {
            HsOutcome::Nothing => {}
            HsOutcome::Send(m) => self.hs_out.push_back(m),
            HsOutcome::Duplicate => {
                if let Some(m) = sec.last_sent() {
                    self.hs_out.push_back(m);
                } else if sec.has_keys() && !sec.is_initiator() {
                    // Our confirmation was lost: send another.
                    self.ping_due = true;
                }
            }
            HsOutcome::Established { peer, send } => {
                let initiator = sec.is_initiator();
                if self.state == State::Resuming
                    && self.peer.as_ref().and_then(|p| p.key) != Some(peer)
                {
                    self.protocol_error(
                        CloseCode::Unauthorized,
                        format!(
                            "resumption refused: the peer proved key {}, not the key of the session",
                            peer.short()
                        ),
                    );
                    return;
                }
                self.hs_out.extend(send);
                if let Some(p) = self.peer.as_mut() {
                    p.key = Some(peer);
                }
                tracing::debug!(peer = %peer.short(), initiator, "noise handshake done");
                if !initiator {
                    // The responder confirms with its first sealed packet.
                    self.ping_due = true;
                }
                self.secure_connected();
            }
            HsOutcome::Refused(reason) => {
                tracing::warn!("link refused: {reason}");
                self.protocol_error(CloseCode::Unauthorized, reason);
            }
        }
    }

    /// Open the session once the secure handshake is done (and, for the
    /// initiator, confirmed by the peer).
    fn secure_connected(&mut self) {
        if !matches!(self.state, State::Handshake | State::Resuming) {
            return;
        }
        let ready = self
            .secure
            .as_ref()
            .is_some_and(|s| s.has_keys() && s.confirmed());
        let Some(peer) = self.peer.clone().filter(|_| ready) else {
            return;
        };
        if self.state == State::Resuming {
            self.finish_resume();
            return;
        }
        tracing::debug!(peer = %peer.node.short(), "wire session connected (encrypted)");
        self.state = State::Open;
        self.events.push_back(Event::Connected(Box::new(peer)));
    }

    fn handle_hello(&mut self, h: Hello, raw: &[u8]) {
        if self.state == State::Resuming {
            return self.handle_resume_hello(h, raw);
        }
        if self.peer.is_none()
            && let Some(r) = h.resume
        {
            if self.config.resume_grace.is_none() {
                self.close_with(
                    CloseCode::NoSession,
                    "this node does not resume sessions".into(),
                );
            } else if !std::mem::replace(&mut self.resume_requested, true) {
                self.events.push_back(Event::ResumeRequested {
                    node: h.node,
                    peer_session: h.session_id,
                    session: r.session,
                    hello: Bytes::copy_from_slice(raw),
                });
            }
            return;
        }
        if let Some(peer) = &self.peer {
            if peer.session_id == h.session_id && peer.node == h.node {
                // A retransmitted Hello: our HelloAck was lost.
                self.send_hello_ack = true;
            } else if self.config.framing.is_lossy() {
                // On a line without connections (serial, CAN, BLE) this
                // means the peer restarted its side. A Close would reach
                // its new session and end that one too, so this session
                // ends quietly; the link starts a new one, which answers
                // the peer's next Hello (PROTOCOL.md §6).
                tracing::debug!("the peer started a new session over this one; ending it");
                self.finish(CloseReason {
                    code: CloseCode::Normal,
                    message: "the peer started a new session over this one".into(),
                    remote: true,
                });
            } else {
                self.protocol_error(
                    CloseCode::Protocol,
                    "the peer started a new session over this one".into(),
                );
            }
            return;
        }
        if (h.max_frame as usize) < MIN_FRAME || h.recv_window == 0 || h.pipe_window == 0 {
            self.protocol_error(
                CloseCode::Protocol,
                format!(
                    "peer limits too small: max_frame {} (at least {MIN_FRAME}), recv_window {}, pipe_window {}",
                    h.max_frame, h.recv_window, h.pipe_window
                ),
            );
            return;
        }
        if !self.secure_start(&h, raw) {
            return;
        }
        self.resumable = self.config.resume_grace.is_some() && h.features & FEATURE_RESUME != 0;
        let peer = PeerInfo {
            node: h.node,
            features: h.features,
            session_id: h.session_id,
            auth: h.auth,
            key: None,
            max_frame: h.max_frame,
            recv_window: h.recv_window,
            pipe_window: h.pipe_window,
        };
        if self.secure.is_some() {
            // Connected comes after the Noise handshake.
            self.peer = Some(peer);
            self.send_hello_ack = true;
            return;
        }
        tracing::debug!(peer = %peer.node.short(), "wire session connected");
        self.peer = Some(peer.clone());
        self.state = State::Open;
        self.send_hello_ack = true;
        self.events.push_back(Event::Connected(Box::new(peer)));
    }

    /// A Hello on the new link of a resuming session.
    fn handle_resume_hello(&mut self, h: Hello, raw: &[u8]) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let ours = h.resume.is_some_and(|r| r.session == self.local.session_id);
        if h.node != peer.node || h.session_id != peer.session_id || !ours {
            // The Hello of the session the peer's node started on this
            // link before it handed the link to the session we resume.
            self.stats.dropped += 1;
            return;
        }
        self.send_hello_ack = true;
        let started = self.secure.as_ref().is_some_and(Secure::started);
        if self.resume_ack.is_some() || started {
            return; // a repeated resume Hello
        }
        if h.max_frame != peer.max_frame
            || h.recv_window != peer.recv_window
            || h.pipe_window != peer.pipe_window
            || h.features != peer.features
        {
            self.close_with(
                CloseCode::Protocol,
                "cannot resume: the peer's limits or features changed".into(),
            );
            return;
        }
        self.resume_ack = h.resume.map(|r| r.ack);
        if self.secure.is_some() {
            // A new Noise handshake must prove the same peer key.
            self.secure_start(&h, raw);
            return;
        }
        self.finish_resume();
    }

    /// An acknowledgement from the peer; `standalone` when it came in an
    /// Ack packet (only those count as duplicates: every Data packet
    /// repeats the ack, new or not).
    fn handle_ack(&mut self, ack: u64, standalone: bool) {
        if ack >= self.next_seq {
            self.protocol_error(
                CloseCode::Protocol,
                format!("acknowledgement of packet {ack}, which was never sent"),
            );
            return;
        }
        let mut progress = false;
        while self.in_flight.front().is_some_and(|(s, _)| *s <= ack) {
            self.in_flight.pop_front();
            progress = true;
        }
        if progress {
            self.acked_since_timeout = true;
            if let Some((seq, sent)) = self.rtt_probe
                && seq <= ack
            {
                // Timed from when the timer began to wait for it: its
                // send, or the last ack that made progress if that came
                // later (the timer restarts then, RFC 6298 5.3).
                let from = self.last_progress.map_or(sent, |t| t.max(sent));
                self.rtt_probe = None;
                self.rtt.sample(self.now.saturating_duration_since(from));
            }
            self.last_progress = Some(self.now);
            if self.backoff_until.is_some_and(|s| s <= ack) {
                // A packet first sent after the last expiry arrived: the
                // path delivers again (Karn and Partridge). Waiting for a
                // timed packet instead keeps a noisy link, where
                // retransmissions void most of them, backed off for long.
                self.backoff_until = None;
                self.rtt.clear_backoff();
            }
            // The timer restarts for the oldest packet left (RFC 6298
            // 5.3), with the backoff kept until then.
            self.rto_at = (self.config.framing.is_lossy() && !self.in_flight.is_empty())
                .then_some(self.now + self.rtt.rto());
            if self.retransmit_next.is_some_and(|s| s <= ack) {
                self.retransmit_next = self.in_flight.front().map(|(s, _)| *s);
            }
            self.dup_acks = 0;
            if self.fast_resend.is_some_and(|s| s <= ack) {
                self.fast_resend = None;
            }
            if self.fast_recovery {
                if ack < self.recover {
                    // A partial acknowledgement: the next packet is lost
                    // too (NewReno).
                    self.fast_retransmit();
                } else {
                    self.fast_recovery = false;
                }
            }
        } else if standalone && self.config.framing.is_lossy() {
            self.on_duplicate_ack();
        }
    }

    /// A standalone Ack that acknowledged nothing new.
    fn on_duplicate_ack(&mut self) {
        let Some(&(front, _)) = self.in_flight.front() else {
            return;
        };
        self.dup_acks += 1;
        if self.dup_acks == DUP_ACK_THRESHOLD && front > self.recover {
            self.recover = self.next_seq - 1;
            self.fast_recovery = true;
            self.fast_retransmit();
        }
    }

    /// Send the oldest unacknowledged packet again at once, and give it a
    /// whole retransmission timeout.
    fn fast_retransmit(&mut self) {
        let Some(&(front, _)) = self.in_flight.front() else {
            return;
        };
        if self.retransmit_next.is_some_and(|s| s <= front) {
            return; // a timeout's go-back-N sends it anyway
        }
        self.fast_resend = Some(front);
        self.stats.fast_retransmits += 1;
        // Karn: a later ack may be for the copy, or held up by the gap.
        self.rtt_probe = None;
        self.rto_at = Some(self.now + self.rtt.rto());
    }

    fn handle_data(&mut self, seq: u64, msg: Msg) {
        if seq < self.recv_next || self.reorder.contains_key(&seq) {
            self.stats.duplicates += 1;
            self.ack_at = Some(self.now);
            return;
        }
        if seq > self.recv_next {
            if seq - self.recv_next >= u64::from(self.config.recv_window) {
                self.stats.dropped += 1;
            } else {
                self.stats.out_of_order += 1;
                self.reorder.insert(seq, msg);
                // One Ack per packet past the gap, each on its own: the
                // sender counts them to re-send the missing one at once.
                self.gap_acks = (self.gap_acks + 1).min(self.config.recv_window);
            }
            self.ack_at = Some(self.now);
            return;
        }
        self.deliver(msg);
        self.recv_next += 1;
        while self.state == State::Open {
            let Some(msg) = self.reorder.remove(&self.recv_next) else {
                break;
            };
            self.deliver(msg);
            self.recv_next += 1;
        }
        let due = self.now + self.config.ack_delay;
        self.ack_at = Some(self.ack_at.map_or(due, |t| t.min(due)));
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Announce(e) => self.events.push_back(Event::PeerAnnounced(e)),
            Msg::Route(e, r) => self.events.push_back(Event::PeerRouted(e, r)),
            Msg::Withdraw { id, reason } => {
                self.events.push_back(Event::PeerWithdrew { id, reason })
            }
            Msg::Cast { to, payload } => {
                self.stats.payload_bytes_received += payload.len() as u64;
                self.events.push_back(Event::Cast { to, payload });
            }
            Msg::Call { id, to, payload } => {
                if self.incoming_calls.len() >= self.config.max_pending_calls {
                    self.protocol_error(
                        CloseCode::Limit,
                        format!(
                            "more than {} calls waiting for a reply",
                            self.config.max_pending_calls
                        ),
                    );
                    return;
                }
                if !self.incoming_calls.insert(id) {
                    self.protocol_error(CloseCode::Protocol, format!("call id {id} reused"));
                    return;
                }
                self.stats.payload_bytes_received += payload.len() as u64;
                self.events.push_back(Event::Call {
                    id: CallId(id),
                    to,
                    payload,
                });
            }
            Msg::ReplyOk { id, payload } => {
                self.stats.payload_bytes_received += payload.len() as u64;
                self.handle_reply(id, Ok(payload));
            }
            Msg::ReplyErr { id, error } => self.handle_reply(id, Err(error)),
            Msg::PipeOpen { pipe, server, port } => self.handle_pipe_open(pipe, server, port),
            Msg::PipeData { pipe, last, data } => self.handle_pipe_data(pipe ^ 1, last, data),
            Msg::PipeCredit { pipe, bytes } => {
                let id = pipe ^ 1;
                let window = self.peer.as_ref().map_or(0, |p| u64::from(p.pipe_window));
                let (over, writable) = match self.pipe_or_close(id) {
                    None => return,
                    Some(p) => {
                        p.send_credit = p.send_credit.saturating_add(bytes);
                        (p.send_credit > window, std::mem::take(&mut p.blocked))
                    }
                };
                if over {
                    self.protocol_error(
                        CloseCode::FlowControl,
                        format!("pipe credit above the window on {}", PipeId(id)),
                    );
                } else if writable {
                    self.events
                        .push_back(Event::PipeWritable { id: PipeId(id) });
                }
            }
            Msg::PipeEnd { pipe } => {
                let id = pipe ^ 1;
                if let Some(p) = self.pipe_or_close(id)
                    && !std::mem::replace(&mut p.recv_ended, true)
                {
                    self.events.push_back(Event::PipeEnded { id: PipeId(id) });
                }
            }
            Msg::PipeClose { pipe, reason } => {
                let id = pipe ^ 1;
                if self.pipe_or_close(id).is_some() {
                    self.pipes.remove(&id);
                    self.events.push_back(Event::PipeClosed {
                        id: PipeId(id),
                        reason,
                    });
                }
            }
        }
    }

    fn handle_reply(&mut self, id: u64, result: Result<Bytes, RemoteError>) {
        if self.pending_calls.remove(&id) {
            self.events.push_back(Event::Reply {
                id: CallId(id),
                result,
            });
        } else if id >= self.next_call {
            self.protocol_error(
                CloseCode::Protocol,
                format!("reply to call {id}, which was never made"),
            );
        }
        // else: a cancelled call; drop the late reply.
    }

    /// The open pipe `id`; None if it is closed (ignore the message) or
    /// unknown (the session is closed).
    fn pipe_or_close(&mut self, id: u64) -> Option<&mut Pipe> {
        if !self.pipes.contains_key(&id) {
            if !self.pipe_known(id) {
                self.protocol_error(
                    CloseCode::UnknownPipe,
                    format!("message for {}, which was never opened", PipeId(id)),
                );
            }
            return None;
        }
        self.pipes.get_mut(&id)
    }

    fn handle_pipe_open(&mut self, wire_id: u64, server: String, port: String) {
        let id = wire_id ^ 1;
        if id & 1 == 0 || id >> 1 != self.next_remote_pipe {
            self.protocol_error(
                CloseCode::Protocol,
                format!(
                    "pipe opened with id {wire_id}, expected {}",
                    self.next_remote_pipe << 1
                ),
            );
            return;
        }
        self.next_remote_pipe += 1;
        if self.pipes.len() >= self.config.max_pipes {
            // Refuse it; its data is then ignored as that of a closed pipe.
            let reason = ExitReason::Failed(format!(
                "too many pipes (at most {})",
                self.config.max_pipes
            ));
            // A refusal: nothing of this pipe is queued here, so it need
            // not wait behind pipe data.
            self.queue
                .push_message(Msg::PipeClose { pipe: id, reason }, false);
            return;
        }
        let credit = self.peer.as_ref().map_or(0, |p| u64::from(p.pipe_window));
        self.pipes.insert(
            id,
            Pipe {
                send_credit: credit,
                ..Pipe::default()
            },
        );
        self.events.push_back(Event::PipeOpened {
            id: PipeId(id),
            server,
            port,
        });
    }

    fn handle_pipe_data(&mut self, id: u64, last: bool, data: Bytes) {
        let window = u64::from(self.config.pipe_window);
        if self.pipes.get(&id).is_some_and(|p| p.recv_ended) {
            self.protocol_error(
                CloseCode::Protocol,
                format!("data after the end of {}", PipeId(id)),
            );
            return;
        }
        let frame = match self.pipe_or_close(id) {
            None => return,
            Some(p) => {
                p.recv_used += data.len() as u64;
                if p.recv_used > window {
                    None
                } else if !last {
                    p.partial.extend_from_slice(&data);
                    return;
                } else if p.partial.is_empty() {
                    Some(data)
                } else {
                    p.partial.extend_from_slice(&data);
                    Some(p.partial.split().freeze())
                }
            }
        };
        let Some(bytes) = frame else {
            self.protocol_error(
                CloseCode::FlowControl,
                format!("more data than the credit allows on {}", PipeId(id)),
            );
            return;
        };
        self.stats.payload_bytes_received += bytes.len() as u64;
        self.events.push_back(Event::PipeData {
            id: PipeId(id),
            bytes,
        });
    }
}
