//! The counters of a session: [`Stats`].

use super::Session;
use crate::wire::RttHistogram;
use std::time::Duration;

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
    /// Packets dropped before the handshake, beyond the receive window or
    /// not for this session (a HelloAck naming another session), and
    /// Withdraws of entries the peer had not announced.
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

impl Session {
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

    /// The round-trip times the retransmission timer measured, bucketed
    /// (lossy links; empty on reliable streams, which measure none).
    pub fn rtt_histogram(&self) -> RttHistogram {
        *self.rtt.histogram()
    }

    /// Bytes queued for the peer and not yet taken by
    /// [`poll_transmit`](Self::poll_transmit) that the session counts:
    /// replies and pipe data ([`queued_reply_bytes`] and
    /// [`queued_pipe_bytes`]).
    ///
    /// [`queued_reply_bytes`]: Self::queued_reply_bytes
    /// [`queued_pipe_bytes`]: Self::queued_pipe_bytes
    pub fn queued_bytes(&self) -> usize {
        self.queued_reply_bytes() + self.queued_pipe_bytes()
    }

    pub(super) fn sync_framing_stats(&mut self) {
        let c = self.framer.counters();
        self.stats.crc_failures = c.crc_failures;
        self.stats.framing_failures = c.framing_failures;
    }
}
