//! # oscloud-metrics: an oscloud node's counters as OpenMetrics
//!
//! Exports what a [`Node`] already counts — per link (bytes, frames,
//! retransmissions, resumes, authentication failures, round-trip time and
//! its histogram, bytes queued to send), how link sessions closed (per
//! peer and close code), per local server (calls, casts, errors, call
//! latency histogram, mailbox depth, restarts) and the registry's size —
//! in the OpenMetrics text format that Prometheus scrapes, using
//! `prometheus-client`.
//!
//! The counters are read when scraped ([`NodeCollector`] is a
//! `prometheus_client` collector); nothing is added to the node's hot
//! paths for it. Servers written in Python or C show up like Rust ones: their
//! registry endpoints keep the same counters.
//!
//! ```toml
//! [dependencies]
//! oscloud-metrics = "0.1"
//! ```
//!
//! Minimum supported Rust version: 1.88.
//!
//! Every metric name starts with `oscloud_`; the full list, with labels
//! and their bounds, is in `docs/METRICS.md`. The `oscloud` command
//! serves them with `oscloud run --metrics 127.0.0.1:9464`.
//!
//! ## Example
//!
//! ```
//! use oscloud_core::transport::Transports;
//! use oscloud_core::{Kernel, Node};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_metrics::Error> {
//! let node = Node::new(Kernel::new(), Transports::new());
//! // Your own metrics may go in the same registry.
//! let registry = oscloud_metrics::registry(&node);
//! let text = oscloud_metrics::encode(&registry)?;
//! assert!(text.contains("oscloud_registry_entries{scope=\"local\"} 0"));
//! assert!(text.ends_with("# EOF\n"));
//!
//! // Or serve it: GET http://127.0.0.1:PORT/metrics
//! let server = oscloud_metrics::serve("127.0.0.1:0".parse().unwrap(), registry).await?;
//! assert_ne!(server.local_addr().port(), 0);
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]

mod collector;
mod http;

pub use collector::{MAX_PEERS, MAX_SERVERS, NO_PEER, NodeCollector, OTHER};
pub use http::{CONTENT_TYPE, MetricsServer, serve};
pub use prometheus_client;

use oscloud_core::Node;
use prometheus_client::registry::Registry;

/// The prefix of every metric name.
pub const PREFIX: &str = "oscloud";

/// What can go wrong exporting metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint could not listen on its address.
    #[error("metrics endpoint: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A collector failed to encode its metrics.
    #[error("metrics: encoding failed")]
    Encode(#[from] std::fmt::Error),
}

/// A registry (prefix [`PREFIX`]) with a [`NodeCollector`] for `node`;
/// add your own metrics or collectors to it before serving it.
pub fn registry(node: &Node) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(NodeCollector::new(node.clone())));
    registry
}

/// The registry's metrics in the OpenMetrics text format (`# EOF`
/// included).
pub fn encode(registry: &Registry) -> Result<String, Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}
