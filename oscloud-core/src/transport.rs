//! The transport SDK: how links between nodes are made.
//!
//! A [`Transport`] knows one URI scheme. It dials an [`Address`] into a
//! [`Link`] and listens on one for incoming links. A link says what it is
//! ([`LinkKind`]) so the wire protocol can choose its framing, and hands
//! out owned read and write halves, so reading and writing never share a
//! lock. [`Transports`] holds a set keyed by scheme: a transport crate of
//! your own plugs in with [`Transports::add`], with no change to the core.
//!
//! This crate ships [`MemTransport`] (`mem://name`), in-process links for
//! tests and single-process nodes. Real links live in their own crates:
//! `oscloud-transport-tcp`, `oscloud-transport-unix`, ...

mod mem;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

pub use mem::MemTransport;

use crate::Error;
use crate::address::Address;

/// What a link can do, which decides how the wire protocol frames and
/// protects what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// An ordered byte stream that loses and corrupts nothing (TCP, Unix
    /// sockets, in-process).
    ReliableStream,
    /// An ordered byte stream that may lose, corrupt or insert bytes (a
    /// serial line): frames carry a CRC and the session retransmits.
    LossyStream,
    /// Datagrams of at most `mtu` bytes that may be lost (CAN, BLE): frames
    /// are segmented and the session retransmits.
    Datagram {
        /// The largest datagram, in bytes.
        mtu: usize,
    },
}

/// A description of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// What the link can do.
    pub kind: LinkKind,
    /// The local side, for logs (e.g. `tcp://127.0.0.1:7000`).
    pub local: String,
    /// The remote side, for logs.
    pub remote: String,
}

/// The read half of a stream link.
pub type StreamReader = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a stream link.
pub type StreamWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// The receiving half of a datagram link.
#[async_trait]
pub trait DatagramRx: Send + 'static {
    /// The next datagram; an error ends the link.
    async fn recv(&mut self) -> Result<Bytes, Error>;
}

/// The sending half of a datagram link.
#[async_trait]
pub trait DatagramTx: Send + 'static {
    /// Send one datagram of at most the link's MTU; an error ends the link.
    async fn send(&self, datagram: Bytes) -> Result<(), Error>;
}

/// The owned halves of a link.
pub enum LinkIo {
    /// A byte stream.
    Stream {
        /// Bytes from the peer.
        reader: StreamReader,
        /// Bytes to the peer.
        writer: StreamWriter,
    },
    /// Datagrams.
    Datagram {
        /// Datagrams from the peer.
        rx: Box<dyn DatagramRx>,
        /// Datagrams to the peer.
        tx: Box<dyn DatagramTx>,
    },
}

impl fmt::Debug for LinkIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkIo::Stream { .. } => "LinkIo::Stream",
            LinkIo::Datagram { .. } => "LinkIo::Datagram",
        })
    }
}

/// One connection between two nodes, made by a [`Transport`].
#[derive(Debug)]
pub struct Link {
    /// What it is and where it goes.
    pub info: LinkInfo,
    /// Its halves.
    pub io: LinkIo,
}

impl Link {
    /// A stream link from any reader and writer.
    pub fn stream(
        kind: LinkKind,
        local: impl Into<String>,
        remote: impl Into<String>,
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Self {
        Self {
            info: LinkInfo {
                kind,
                local: local.into(),
                remote: remote.into(),
            },
            io: LinkIo::Stream {
                reader: Box::new(reader),
                writer: Box::new(writer),
            },
        }
    }
}

/// Incoming links at one address. Dropping it stops listening (and frees
/// the address: a Unix socket file is removed).
#[async_trait]
pub trait Listener: Send + 'static {
    /// The next incoming link. An error is about one attempt; the listener
    /// goes on.
    async fn accept(&mut self) -> Result<Link, Error>;

    /// The address actually bound (e.g. with the port chosen for port 0).
    fn local_address(&self) -> Address;

    /// The directory this listener publishes in and finds servers through,
    /// if its address asked for one (for zenoh, `?directory=1`);
    /// [`Node::listen`](crate::Node::listen) then uses it (see
    /// [`Node::use_directory`](crate::Node::use_directory)). None by
    /// default.
    fn directory(&self) -> Option<Arc<dyn crate::directory::Directory>> {
        None
    }
}

/// One kind of link, named by its URI scheme.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// The URI scheme this transport serves, e.g. `"tcp"`.
    fn scheme(&self) -> &'static str;

    /// Dial `addr`.
    async fn connect(&self, addr: &Address) -> Result<Link, Error>;

    /// Listen at `addr`.
    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error>;
}

/// A set of transports keyed by scheme. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Transports {
    by_scheme: BTreeMap<&'static str, Arc<dyn Transport>>,
}

impl Transports {
    /// No transports.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) the transport for its scheme.
    pub fn add(&mut self, transport: Arc<dyn Transport>) -> &mut Self {
        self.by_scheme.insert(transport.scheme(), transport);
        self
    }

    /// With `transport` added (builder style).
    pub fn with(mut self, transport: Arc<dyn Transport>) -> Self {
        self.add(transport);
        self
    }

    /// The schemes served, sorted.
    pub fn schemes(&self) -> Vec<&'static str> {
        self.by_scheme.keys().copied().collect()
    }

    fn get(&self, addr: &Address) -> Result<&Arc<dyn Transport>, Error> {
        self.by_scheme
            .get(addr.scheme())
            .ok_or_else(|| Error::UnknownScheme {
                scheme: addr.scheme().to_owned(),
                known: self.schemes().join(", "),
            })
    }

    /// Dial `addr` with the transport for its scheme.
    pub async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        self.get(addr)?.connect(addr).await
    }

    /// Listen at `addr` with the transport for its scheme.
    pub async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        self.get(addr)?.listen(addr).await
    }
}

/// The transport error for an I/O error while reaching `address`.
pub fn io_error(address: &Address, err: &std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    let address = address.to_string();
    match err.kind() {
        K::ConnectionRefused => Error::ConnectionRefused { address },
        K::AddrInUse => Error::AddressInUse { address },
        K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable | K::TimedOut => {
            Error::Unreachable {
                address,
                reason: err.to_string(),
            }
        }
        K::NotFound | K::PermissionDenied => Error::BadPath {
            address,
            reason: err.to_string(),
        },
        kind => Error::Io {
            address,
            kind,
            message: err.to_string(),
        },
    }
}
