//! Session settings: [`Config`], its defaults and its checks.

use std::time::Duration;

use super::MIN_FRAME;
use crate::Error;
use crate::wire::framing::FramingKind;
use crate::wire::rtt::DEFAULT_MIN_RTO;

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
pub(super) fn fifo_send_queue(config: &Config) -> bool {
    config.fifo_send_queue
}

#[cfg(not(any(test, feature = "test-knobs")))]
pub(super) fn fifo_send_queue(_config: &Config) -> bool {
    false
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

    pub(super) fn validate(&self) -> Result<(), Error> {
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
