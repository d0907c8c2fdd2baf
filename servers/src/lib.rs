//! # oscloud-servers: ready-made oscloud servers
//!
//! Servers that are useful as they are, each a plain
//! [`oscloud_actors::Server`] to start alone or under a supervisor:
//!
//! - [`process`]: run any stdio program as a server ("wrap it and speak
//!   bytes"): calls are request/reply lines on its stdin/stdout, pipes are
//!   byte streams to a child's stdin/stdout (ports `stdio`, `in`, `out`),
//!   and its supervisor restarts it when the process dies.
//! - [`pty`]: a program under a pseudo-terminal (ports `in`, `out`).
//! - [`file`](mod@file) and [`stdin`]: sources (port `out`): a file (once, paced,
//!   or in a loop) or this process's standard input, line by line or in
//!   chunks.
//! - [`jsonl`]: a JSON-lines logger (port `in`) to a file or stdout.
//! - [`stdout`]: a terminal sink (port `in`): raw bytes to stdout or a file.
//! - [`tee`]: a stream passes `in` → `out`, a copy goes to a file.
//! - [`pool`]: every worker of a group, on any node, as one pool of CPUs:
//!   jobs (bytes in, bytes out) spread by load, retried when a worker's
//!   node dies, each answered exactly once.
//!
//! Conventions: a source writes to port `out`, a sink reads port `in`;
//! sinks stop normally once every input has ended, so a finite topology
//! ends by itself.
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

pub mod file;
pub mod jsonl;
pub mod pool;
pub mod process;
pub mod pty;
pub mod sink;
pub mod stdin;
pub mod stdout;
pub mod tee;

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
    /// The server runs no child for calls ([`process::ProcessSpec::calls`]).
    #[error("this process server takes no calls (it is a stream filter)")]
    NoCalls,
    /// The stream child (ports `in`/`out`) failed: killed by a signal,
    /// exited with a failure while its input was open, or its stdin or
    /// stdout failed.
    #[error("the stream child process failed: {0}")]
    Stream(String),
    /// The child process gave no reply line in time.
    #[error("the child process gave no reply line within {0:?}")]
    NoReply(std::time::Duration),
}
