//! # oscloud-cli: the `oscloud` command
//!
//! Describe a cloud in a TOML (or YAML) file, run it, and look inside it
//! while it runs, without writing a Rust `main`:
//!
//! ```text
//! oscloud check topo.toml              # validate (line-numbered errors)
//! oscloud run topo.toml                # every node in this process
//! oscloud run topo.toml --processes    # one OS process per node (Unix sockets)
//! oscloud run topo.toml --node hub     # one node, addresses as written (TCP...)
//! oscloud ls ADDR                      # the registry of a running node
//! oscloud call ADDR NAME '"json"'      # call a server, JSON in and out
//! oscloud tap ADDR sensor.out          # watch a pipe live
//! oscloud top ADDR                     # live view: links, servers, rates, pipes
//! oscloud run topo.toml --console 127.0.0.1:7781   # and a live web console
//! oscloud graph topo.toml              # Graphviz DOT (--svg with `dot`)
//! oscloud kinds                        # the server kinds and their ports
//! ```
//!
//! Install with `cargo install oscloud-cli`. Minimum supported Rust
//! version: 1.88. Unix only (PTYs, Unix sockets, signals).
//!
//! The library part is what the command is made of: [`topology`] parses
//! and checks files, [`kinds`] is the table of server kinds, [`runtime`]
//! runs nodes (and keeps pipes wired through server restarts), [`inspect`]
//! talks to running ones, [`console`] serves the web console, [`graph`]
//! draws, [`yaml`] reads YAML files.
//!
//! ```
//! use std::path::Path;
//! use oscloud_cli::topology::Topology;
//!
//! let text = r#"
//! [nodes.main]
//!
//! [servers.sensor]
//! kind = "file"
//! args = { path = "readings.txt" }
//!
//! [servers.log]
//! kind = "jsonl"
//!
//! [[pipes]]
//! from = "sensor.out"
//! to = ["log.in"]
//! "#;
//! let topo = Topology::parse(text, Path::new("topo.toml")).expect("valid");
//! assert_eq!(topo.pipes[0].to[0].to_string(), "log.in");
//!
//! let bad = text.replace("\"jsonl\"", "\"jsonx\"");
//! let err = Topology::parse(&bad, Path::new("topo.toml")).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "topo.toml:9:8: unknown server kind \"jsonx\" \
//!      (known kinds: process, pty, file, stdin, jsonl, stdout, tee, pool)"
//! );
//! ```
#![doc(test(attr(deny(warnings))))]

pub mod console;
pub mod graph;
pub mod inspect;
pub mod kinds;
pub mod metrics;
pub mod runtime;
pub mod topology;
pub mod yaml;

/// Everything the `oscloud` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology file has problems.
    #[error("{0}")]
    Topology(#[from] topology::Problems),
    /// A kernel error (links, pipes, registry).
    #[error("{0}")]
    Core(#[from] oscloud_core::Error),
    /// A server framework error.
    #[error("{0}")]
    Actors(#[from] oscloud_actors::Error),
    /// A node or pipe could not start.
    #[error("{0}")]
    Start(String),
    /// A bad address.
    #[error("bad address {0}")]
    Address(String),
    /// The command was used wrongly.
    #[error("{0}")]
    Usage(String),
    /// JSON in or out.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An I/O error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The metrics endpoint could not start.
    #[error("{0}")]
    Metrics(#[from] oscloud_metrics::Error),
}
