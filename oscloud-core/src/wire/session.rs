//! The session state machine: handshake, reliable ordered delivery,
//! liveness, and the multiplexed channels (registry, messages, pipes).
//!
//! [`Session`], its construction and its driver-facing calls live here;
//! each concern's part of it is in its own file, as further `impl Session`
//! blocks:
//!
//! - `config`, `events`, `stats`: the settings, what the session reports,
//!   its counters;
//! - `hello`, `noise`, `resume`: opening a session (the Hello exchange, the
//!   Noise handshake of secure sessions) and resuming it on a new link;
//! - `receive`, `transmit`: packets taken from and handed to the link;
//! - `reliable`, `timers`: sequence numbers, acknowledgements and
//!   retransmission, and every timer;
//! - `registry`, `calls`, `pipes`, `credit`: the channels (entries,
//!   messages and calls, pipes and their flow control);
//! - `close`: ending a session.

mod calls;
mod close;
mod config;
mod credit;
mod events;
mod hello;
mod noise;
mod pipes;
mod receive;
mod registry;
mod reliable;
mod resume;
mod stats;
mod timers;
mod transmit;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::framing::{Framer, FramingKind};
use super::packet::{Msg, Resume};
use super::rtt::RttEstimator;
use super::secure::{SECURE_MARK, Secure, SecureConfig, Suite};
use super::send_queue::SendQueue;
use crate::Error;
use crate::id_hash::{IdMap, IdSet};

pub use calls::CallId;
pub use close::CloseReason;
pub use config::{Config, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE};
pub use events::Event;
pub use hello::{LocalInfo, PeerInfo};
pub use pipes::PipeId;
pub use reliable::DUP_ACK_THRESHOLD;
pub use stats::Stats;

use config::fifo_send_queue;
use pipes::Pipe;

/// The smallest `max_frame` a session accepts (its own or the peer's).
pub const MIN_FRAME: usize = 128;

/// Small packets packed into one chunk of [`Session::poll_transmit`] stop
/// once the chunk is this long.
const PACK_BYTES: usize = 64 * 1024;

/// Hello feature bit 3: this side can resume a session on a new link
/// (`docs/PROTOCOL.md` §12). Sessions resume only when both sides set it.
pub const FEATURE_RESUME: u64 = 8;

/// Hello feature bit 4: this side understands Route messages (forwarded
/// entries of other nodes, `docs/PROTOCOL.md` §13). A node sends Route
/// messages only to peers that set it.
pub const FEATURE_ROUTING: u64 = 16;

/// Hello feature bit 6: this side dialled the link on demand, after
/// finding the peer in a directory (`docs/PROTOCOL.md` §13.1): each side
/// announces over it only what it publishes in the directory, and
/// forwards nothing learned over it to anyone.
pub const FEATURE_DIRECTORY: u64 = 64;

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
    /// Small frames packed one after another, to leave as one chunk
    /// (see [`Session::poll_transmit`]); empty between calls.
    packed: BytesMut,
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
    /// The driver stopped reading the link (its budget is spent): the
    /// idle timeout does not run, since the peer's packets wait unread.
    input_paused: bool,

    // channels
    /// Entry ids the peer announced (by Announce or Route) and has not
    /// withdrawn.
    peer_entries: IdSet<u64>,
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
            packed: BytesMut::new(),
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
            input_paused: false,
            peer_entries: IdSet::default(),
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

    /// The next chunk of link bytes to write, already framed (for datagram
    /// links: one datagram). Call until `None` after every other call.
    ///
    /// On a plaintext reliable stream, small packets (casts, calls,
    /// replies, acks: every packet not split around a large payload) are
    /// encoded one after another into one buffer and come out as one
    /// chunk of up to about 64 KiB: a burst of casts costs one
    /// chunk, not an allocation and a chunk each.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.advance(now);
        self.queue_grants();
        let chunk = match self.out.pop_front() {
            Some(b) => b,
            None => {
                // Packed packets come before anything `produce` queued in
                // `out` (it stops at the first such packet).
                while self.out.is_empty() && self.packed.len() < PACK_BYTES && self.produce() {}
                if self.packed.is_empty() {
                    self.out.pop_front()?
                } else {
                    self.packed.split().freeze()
                }
            }
        };
        self.stats.bytes_sent += chunk.len() as u64;
        self.last_sent = self.now;
        Some(chunk)
    }

    /// The next event for the application, if any. Drain after every call
    /// that feeds the session.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Every event for the application, moved onto the end of `into` in
    /// one go (the events of one read, under one lock of the caller's).
    pub(crate) fn take_events(&mut self, into: &mut VecDeque<Event>) {
        if into.is_empty() {
            std::mem::swap(into, &mut self.events);
        } else {
            into.append(&mut self.events);
        }
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

    /// Bytes of replies queued for the peer and not yet taken by
    /// [`poll_transmit`](Self::poll_transmit): the memory the peer's calls
    /// make this side hold while the peer does not read. A driver stops
    /// reading (and so serving new calls) while this is too high, so that
    /// the peer's unread replies are bounded by its reading, not by what it
    /// sends.
    pub fn queued_reply_bytes(&self) -> usize {
        self.queue.queued_reply_bytes()
    }

    /// Bytes of pipe data queued for the peer and not yet taken by
    /// [`poll_transmit`](Self::poll_transmit). Pipe credit bounds it per
    /// pipe by the peer's window, which the peer chooses; a driver stops
    /// taking frames from local writers while this is too high.
    pub fn queued_pipe_bytes(&self) -> usize {
        self.queue.queued_pipe_bytes()
    }

    /// The settings this session runs with (the framing, timers and
    /// windows of its current link's kind).
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
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
}
