//! # oscloud-faults: fault injection for oscloud links
//!
//! Test how nodes behave on imperfect links, reproducibly:
//!
//! - [`Relay`]: a TCP or Unix-socket relay between two nodes that adds
//!   latency, jitter, a bandwidth cap, byte loss, duplication, reordering
//!   and corruption, all decided by a seed, and that cuts, partitions
//!   (refuses new connections) or blackholes (silently stops forwarding)
//!   on command, and heals.
//! - [`StreamFaults`] and [`DatagramFaults`]: the fault engines alone, for
//!   use in your own relays or simulated links (the serial noise relay and
//!   the session property tests use the same idea). They are pure
//!   functions of the seed and the position in the stream: the same seed
//!   gives the same faults for the same bytes, however they are cut into
//!   reads.
//!
//! What to expect: on a reliable-stream link (TCP, Unix) the length
//! framing has no checksum, so damaged bytes make a node close the link (a
//! link flap) — use cuts and partitions there, and byte faults on lossy
//! links, whose sessions retransmit.
//!
//! ```
//! use oscloud_faults::{Faults, StreamFaults};
//!
//! let faults = Faults::seeded(42).loss(0.001).corrupt(0.001);
//! let mut a = StreamFaults::new(&faults, 1);
//! let mut b = StreamFaults::new(&faults, 1);
//! let data = vec![7u8; 100_000];
//! let (mut x, mut y) = (Vec::new(), Vec::new());
//! a.apply(&data, &mut x);
//! for chunk in data.chunks(333) {
//!     b.apply(chunk, &mut y);
//! }
//! assert_eq!(x, y); // same seed, same faults
//! assert!(a.counts().lost > 0 && a.counts().corrupted > 0);
//! ```

mod relay;
mod schedule;

pub use relay::{Relay, RelayStats};
pub use schedule::{DatagramFaults, FaultCounts, Faults, Rng, StreamFaults};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address's scheme is not one the relay handles.
    #[error("the relay handles tcp:// and unix:// addresses, not {0}://")]
    Scheme(String),
    /// Binding or dialling failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}
