//! # oscloud-core: the oscloud kernel
//!
//! oscloud builds an operating-system-shaped cloud out of many small servers.
//! This crate is its kernel, and like a microkernel it is **mechanism only**:
//!
//! - [pipes](pipe): bounded, back-pressured channels of byte frames;
//! - [plumbing]: connect, split (fan-out) and merge (fan-in) pipes;
//! - the [registry]: servers advertise a name and [`Capabilities`], others
//!   look them up, query them and watch them come and go;
//! - [addresses](address) and the [transport] SDK that links nodes, the
//!   [wire] protocol that carries pipes and messages over any link (sans-IO,
//!   specified in `docs/PROTOCOL.md`), and the [`Node`] that joins kernels:
//!   registries federate, and a server on another node is reached exactly
//!   like a local one;
//! - [identity] (node keys, allow-lists) and [access] (per-server access
//!   policy, the calling node's identity): links between nodes with keys
//!   are authenticated and encrypted (Noise, `docs/PROTOCOL.md` §11).
//!
//! It knows nothing of what flows through it. Servers (see `oscloud-actors`)
//! run *on* the kernel and talk *through* it; the kernel never starts, stops
//! or restarts one.
//!
//! ```toml
//! [dependencies]
//! oscloud-core = "0.1"
//! ```
//!
//! Minimum supported Rust version: 1.88. Every async API that can be
//! cancelled says whether it is cancel-safe.
//!
//! ## Example
//!
//! ```
//! use bytes::Bytes;
//! use oscloud_core::Kernel;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let kernel = Kernel::new();
//! let (writer, mut reader) = kernel.pipe();
//! writer.send(Bytes::from_static(b"hello")).await?;
//! drop(writer); // end of stream
//! assert_eq!(reader.recv().await, Some(Bytes::from_static(b"hello")));
//! assert_eq!(reader.recv().await, None);
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]

pub mod access;
pub mod address;
pub mod directory;
pub mod endpoint;
pub mod error;
mod id_hash;
pub mod identity;
pub mod kernel;
pub mod node;
pub mod pipe;
pub mod plumbing;
pub mod registry;
pub mod trace;
pub mod transport;
pub mod wire;

pub use endpoint::{Cast, Endpoint};
pub use error::{Error, Result};
pub use kernel::Kernel;
pub use node::{
    CLOSE_CODES, LinkCloses, LinkStatus, MAX_CLOSE_PEERS, Node, NodeConfig, NodeId, Route,
    TooFarRoute,
};
pub use pipe::{PipeConfig, PipeEnd, PipeReader, PipeWriter};
pub use registry::{
    Capabilities, Entry, EntryId, EntrySpec, ExitReason, Filter, PortDirection, Registration,
    Registry, RegistryEvent, Watch,
};
pub use trace::TraceContext;
