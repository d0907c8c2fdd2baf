//! The wire protocol (version 1), sans-IO.
//!
//! A [`Session`] links two oscloud kernels over any link. It does no I/O and
//! reads no clock: the caller passes `now` in, feeds the bytes the link
//! received, and pulls out the bytes to write, the [`Event`]s to act on and
//! the next deadline, in the style of `quinn-proto`. The same state machine
//! runs over TCP, a serial line or CAN; only the [`FramingKind`] changes:
//!
//! - [`FramingKind::ReliableStream`]: u32 length-prefixed frames
//!   ([`LengthFraming`]); the link is trusted, nothing is retransmitted.
//! - [`FramingKind::LossyStream`]: COBS + CRC-32 frames ([`CobsFraming`]);
//!   damaged frames are dropped and counted, and the session retransmits.
//! - [`FramingKind::Datagram`]: segments of at most `mtu` bytes
//!   ([`SegmentFraming`]); lost segments lose the frame, the session
//!   retransmits.
//!
//! On top, the session gives reliable, ordered, deduplicated delivery
//! (sequence numbers, cumulative acks, retransmission on lossy links with
//! a timeout that follows the measured round-trip time, RFC 6298),
//! liveness (keepalive pings, idle timeout) and three channels:
//! registry sync ([`Session::announce`], [`Session::withdraw`]), messages
//! ([`Session::cast`], [`Session::call`], [`Session::reply`]) and pipes with
//! per-pipe credit ([`Session::open_pipe`], [`Session::pipe_send`],
//! [`Session::pipe_consumed`], [`Session::close_pipe`]). The byte-level
//! format is specified in `docs/PROTOCOL.md`.
//!
//! Messages overtake queued pipe data: casts, calls, replies, registry and
//! pipe control wait in one queue, pipe data (with each pipe's end and
//! close) in another, and the first goes first, with one pipe-data packet
//! after every [`MESSAGE_BURST`] messages so pipes never starve. Each
//! queue keeps its order; a message sent after a pipe write may arrive
//! before that write's data (`docs/PROTOCOL.md` §7.1).
//!
//! # Driving a session
//!
//! A driver (a tokio task, an actor, a test loop) owns the session and the
//! link and repeats:
//!
//! 1. bytes read from the link → [`Session::handle_input`]`(now, &bytes)`
//!    (on datagram links: one call per datagram);
//! 2. the deadline [`Session::poll_timeout`] passed →
//!    [`Session::handle_timeout`]`(now)`;
//! 3. after either, and after every application call, write every chunk of
//!    [`Session::poll_transmit`]`(now)` to the link (on datagram links, each
//!    chunk is one datagram), then dispatch every [`Session::poll_event`];
//! 4. wait for the link, the application or the new `poll_timeout`.
//!
//! Application calls (`cast`, `open_pipe`, ...) fail with
//! [`Error::WireNotConnected`](crate::Error::WireNotConnected) until [`Event::Connected`] and with
//! [`Error::WireClosed`](crate::Error::WireClosed) after [`Event::Closed`]. When
//! [`Event::Closed`] arrives, write out what `poll_transmit` still returns
//! (the Close packet), then drop the session: outstanding calls and open
//! pipes are void.
//!
//! Events queue up inside the session until drained: a driver that stops
//! calling `poll_event` stops nothing else, so drain them promptly (pipe
//! data is bounded by credit, the rest is not).
//!
//! [`FramingKind`] is the wire's view of a link; a transport's link kind
//! maps onto it one to one (reliable stream, lossy stream, datagrams with
//! their MTU).
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use oscloud_core::NodeId;
//! use oscloud_core::wire::{Config, Event, FramingKind, LocalInfo, Session};
//!
//! # fn main() -> Result<(), oscloud_core::Error> {
//! let now = Instant::now();
//! let config = Config::new(FramingKind::ReliableStream);
//! let mut a = Session::new(config.clone(), LocalInfo::new(NodeId::random()), now)?;
//! let mut b = Session::new(config, LocalInfo::new(NodeId::random()), now)?;
//!
//! // A driver loop in miniature: move bytes both ways until quiet.
//! fn pump(x: &mut Session, y: &mut Session, now: Instant) {
//!     loop {
//!         let mut moved = false;
//!         while let Some(bytes) = x.poll_transmit(now) { y.handle_input(now, &bytes); moved = true; }
//!         while let Some(bytes) = y.poll_transmit(now) { x.handle_input(now, &bytes); moved = true; }
//!         if !moved { break; }
//!     }
//! }
//! pump(&mut a, &mut b, now);
//! assert!(matches!(a.poll_event(), Some(Event::Connected(_))));
//! assert!(matches!(b.poll_event(), Some(Event::Connected(_))));
//!
//! a.cast("logger", Bytes::from_static(b"hello"))?;
//! pump(&mut a, &mut b, now);
//! assert_eq!(
//!     b.poll_event(),
//!     Some(Event::Cast { to: "logger".into(), payload: Bytes::from_static(b"hello"), trace: None })
//! );
//! # Ok(())
//! # }
//! ```

mod fast_decode;
mod fast_encode;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod name;
mod packet;
mod rtt;
pub mod secure;
mod send_queue;
mod session;

#[cfg(test)]
mod fast_retransmit_tests;
#[cfg(test)]
pub(crate) mod harness;
#[cfg(test)]
mod protocol_doc;
#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod rtt_tests;
#[cfg(test)]
mod secure_tests;
#[cfg(test)]
mod send_queue_tests;
#[cfg(test)]
mod tests;

pub use framing::{CobsFraming, FramingCounters, FramingKind, LengthFraming, SegmentFraming};
pub use name::Name;
pub use packet::{
    CloseCode, EntryInfo, MAGIC, MAX_ROUTE_PATH, RemoteError, RemoteErrorKind, RouteInfo, VERSION,
};
pub use rtt::{DEFAULT_MIN_RTO, RTO_GRANULARITY, RttHistogram};
pub use secure::{
    FEATURE_AEGIS, FEATURE_AESGCM, FEATURE_NOISE, FEATURE_PSK, SECURE_OVERHEAD, SecureConfig,
    Suite, has_aes_hardware,
};
pub use send_queue::MESSAGE_BURST;
pub use session::{
    CallId, CloseReason, Config, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE, DUP_ACK_THRESHOLD, Event,
    FEATURE_DIRECTORY, FEATURE_RESUME, FEATURE_ROUTING, LocalInfo, MIN_FRAME, PeerInfo, PipeId,
    Session, Stats,
};
