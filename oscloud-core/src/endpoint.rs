//! Endpoints: how the kernel delivers bytes to a registered server.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Error, PipeEnd};

pub mod stats;

pub use stats::{LATENCY_BUCKETS_NS, Mailbox, ServerCounters, ServerStats};

/// Where messages for one registered server go.
///
/// The kernel does not know what a server is: it only stores, for each
/// registry entry, an endpoint that accepts encoded messages. A server
/// framework (such as `oscloud-actors`) implements it for local servers; the
/// node layer implements it for servers on other nodes by forwarding over a
/// link. Callers hold the same `Arc<dyn Endpoint>` either way, which is what
/// makes a server reference location-transparent.
///
/// Messages are opaque bytes (MessagePack by convention).
#[async_trait]
pub trait Endpoint: Send + Sync + fmt::Debug + 'static {
    /// Deliver a one-way message without waiting for the server to handle it.
    ///
    /// Returns [`Error::ServerStopped`] when the server can no longer take
    /// messages.
    fn cast(&self, msg: Bytes) -> Result<(), Error>;

    /// Deliver a request and wait for the reply.
    ///
    /// The endpoint itself does not time out; callers wrap this in their own
    /// timeout. Dropping the future abandons the call (a late reply is
    /// discarded).
    ///
    /// A call from a peer node is polled by that link's driver, together
    /// with everything else on the link: the future must not block the
    /// thread (hand the work to a task, a thread or an actor and await its
    /// answer, as `oscloud-actors` and the C bindings do).
    async fn call(&self, msg: Bytes) -> Result<Bytes, Error>;

    /// Hand one end of a pipe to the server's port `port`.
    ///
    /// Returns [`Error::NoSuchPort`] when the server does not accept pipes on
    /// that port.
    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), Error>;

    /// The server's counters (calls, casts, errors, latency, mailbox,
    /// restarts), if the endpoint keeps them. Local servers of
    /// `oscloud-actors` (Rust and Python) and of the C bindings do; the
    /// endpoints of servers on other nodes return `None` (their own node
    /// counts them). The default is `None`.
    fn stats(&self) -> Option<ServerStats> {
        None
    }
}
