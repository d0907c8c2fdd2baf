//! # oscloud-servers: ready-made oscloud servers
//!
//! Servers that are useful as they are, each a plain
//! [`oscloud_actors::Server`] to start alone or under a supervisor:
//!
//! - [`process`]: run any stdio program as a server ("wrap it and speak
//!   bytes"): calls are request/reply lines on its stdin/stdout, pipes are
//!   raw byte streams to a fresh child's stdin/stdout, and its supervisor
//!   restarts it when the process dies.
//!
//! ```toml
//! [dependencies]
//! oscloud-servers = "0.1"
//! ```
//!
//! Minimum supported Rust version: 1.88.
//!
//! ## Example
//!
//! ```
//! use std::time::Duration;
//! use oscloud_actors::{ServerRef, Supervisor, SupervisorSpec};
//! use oscloud_core::Kernel;
//! use oscloud_servers::process::ProcessSpec;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_actors::Error> {
//! let kernel = Kernel::new();
//! // `tr` block-buffers a pipe; `stdbuf -oL` makes it answer line by line.
//! let upper = ProcessSpec::new("stdbuf").args(["-oL", "tr", "a-z", "A-Z"]);
//! let tree = Supervisor::start(
//!     &kernel,
//!     SupervisorSpec::new("root").child(upper.child_spec("upper")),
//! )
//! .await?;
//!
//! let server = ServerRef::lookup(&kernel, "upper")?.typed::<String, String>();
//! let reply = server.call(&"hello".to_owned(), Duration::from_secs(5)).await?;
//! assert_eq!(reply, "HELLO");
//!
//! tree.stop().await;
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]

pub mod process;

/// What can go wrong in a ready-made server. A server that returns one
/// from a handler fails, and its supervisor decides what happens next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A child process could not be started.
    #[error("cannot start {program:?}: {reason}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// The child process exited.
    #[error("the child process exited ({0})")]
    Exited(String),
    /// The child process gave no reply line in time.
    #[error("the child process gave no reply line within {0:?}")]
    NoReply(std::time::Duration),
}
