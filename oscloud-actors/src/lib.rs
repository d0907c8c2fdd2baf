//! # oscloud-actors: servers as supervised actors
//!
//! oscloud servers are [ractor] actors that run *on* the
//! [oscloud kernel](oscloud_core) and talk *through* it:
//!
//! - a [`Server`] is behaviour (handlers for casts, calls, pipes and
//!   monitor notices) plus a state built by [`Server::init`];
//! - it registers itself in the kernel registry (name + capabilities, alone
//!   or as a group member) when it starts, and leaves it when it stops —
//!   with [`ExitReason::Failed`](oscloud_core::ExitReason::Failed) when it
//!   failed, so watchers see `Removed` then `Added` on a restart;
//! - messages cross the server boundary as MessagePack bytes through the
//!   registry entry's [`Endpoint`](oscloud_core::Endpoint), so a
//!   [`ServerRef`] / [`TypedRef`] works the same whether the server is in
//!   this process or on another node (a request a [`TypedRef`] is given
//!   by value, for a server in this process that takes its type, is moved
//!   rather than encoded: see [`Outgoing`]);
//! - a [`Supervisor`] (itself a registered server) restarts failed servers
//!   with OTP's strategies, restart policies and restart intensity;
//! - [`Context::monitor`] watches another server **by name**.
//!
//! Failure semantics ("let it crash"): an undecodable message gets the
//! caller a [`Decode`](oscloud_core::Error::Decode) error and the server
//! keeps running; a handler that returns `Err` or panics makes the server
//! fail — pending callers get
//! [`ServerStopped`](oscloud_core::Error::ServerStopped) with the reason,
//! and its supervisor decides. Application-level errors belong in the
//! `Reply` type.
//!
//! ```toml
//! [dependencies]
//! oscloud-actors = "0.1"
//! ```
//!
//! Minimum supported Rust version: 1.88.
//!
//! ## Why not `ractor-supervisor`
//!
//! The `ractor-supervisor` crate (0.2, ractor 0.16) was evaluated. Its
//! one-for-all / rest-for-one restarts *kill* the children in no defined
//! order and then sleep 10 ms hoping their names are free, children must
//! carry ractor global names, and a supervisor is not a registered server.
//! The semantics required here (graceful stop in reverse start order,
//! fresh server per restart from a factory, registry integration, counters,
//! escalation after stopping children) are written directly on ractor's
//! `spawn_linked` and `handle_supervisor_evt`, with Erlang/OTP's
//! `supervisor` as the reference.
//!
//! ## Example
//!
//! ```
//! use std::time::Duration;
//! use oscloud_actors::{
//!     async_trait, ChildSpec, Context, Server, ServerError, ServerRef, Strategy, Supervisor,
//!     SupervisorSpec,
//! };
//! use oscloud_core::Kernel;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum Request { Add(u64), Get }
//!
//! struct Counter;
//!
//! #[async_trait]
//! impl Server for Counter {
//!     type Request = Request;
//!     type Reply = u64;
//!     type State = u64;
//!
//!     async fn init(&self, _ctx: &mut Context) -> Result<u64, ServerError> {
//!         Ok(0)
//!     }
//!     async fn handle_cast(&self, _ctx: &mut Context, total: &mut u64, req: Request)
//!         -> Result<(), ServerError> {
//!         if let Request::Add(n) = req { *total += n; }
//!         Ok(())
//!     }
//!     async fn handle_call(&self, _ctx: &mut Context, total: &mut u64, _req: Request)
//!         -> Result<u64, ServerError> {
//!         Ok(*total)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_actors::Error> {
//! let kernel = Kernel::new();
//! let tree = Supervisor::start(
//!     &kernel,
//!     SupervisorSpec::new("root")
//!         .strategy(Strategy::OneForOne)
//!         .intensity(3, Duration::from_secs(5))
//!         .child(ChildSpec::server("counter", || Counter)),
//! )
//! .await?;
//!
//! let counter = ServerRef::lookup(&kernel, "counter")?.typed::<Request, u64>();
//! counter.cast(&Request::Add(2)).await?;
//! counter.cast(&Request::Add(3)).await?;
//! assert_eq!(counter.call(&Request::Get, Duration::from_secs(1)).await?, 5);
//!
//! assert_eq!(tree.stats().total_restarts(), 0);
//! tree.stop().await;
//! tree.wait().await?;
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]

pub mod context;
mod deadline;
pub mod error;
pub mod server;
pub mod server_ref;
pub mod supervisor;

pub use async_trait::async_trait;
pub use context::{Context, MonitorRef, ReplyTo};
pub use error::{Error, Result};
pub use server::{Down, PipeOutcome, Server, ServerError, ServerHandle, ServerOptions, start};
pub use server_ref::{Outgoing, ServerRef, TypedRef, decode, encode};
pub use supervisor::{
    ChildSpec, ChildStats, Restart, Strategy, Supervisor, SupervisorHandle, SupervisorRequest,
    SupervisorSpec, SupervisorStats,
};
