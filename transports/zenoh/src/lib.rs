//! # oscloud-transport-zenoh: oscloud links through zenoh routers
//!
//! A node joins a cloud through one or more [zenoh](https://zenoh.io)
//! routers (`zenohd`) instead of dialling its peers' sockets: the routers
//! carry the bytes across networks, NATs and sites, and the node needs to
//! know only a router and its peers' names. The oscloud session runs over
//! the link as over TCP, so Noise encryption, resumable sessions, the
//! allow-list, access control and routing apply unchanged.
//!
//! ## Addresses
//!
//! `zenoh://ROUTER_HOST:PORT/<cloud>/<node>` (port 7447 if left out):
//!
//! - **listening** at it means "be reachable as `<node>` in `<cloud>`
//!   through this router": the node declares its presence and takes link
//!   requests; a second node listening under the same name and cloud gets
//!   [`AddressInUse`](oscloud_core::Error::AddressInUse);
//! - **connecting** to it means "make a link to the node listening as
//!   `<node>` in `<cloud>`"; if no such node is reachable, the dial fails
//!   with [`ConnectionRefused`](oscloud_core::Error::ConnectionRefused)
//!   (and the node dials again later, as for a TCP peer not up yet).
//!
//! Cloud and node names are 1 to 64 ASCII letters, digits, `-`, `_` or
//! `.`. The router is dialled with zenoh's `tcp/HOST:PORT` endpoint, as a
//! zenoh client with multicast scouting off. With `config=FILE`, the zenoh
//! configuration (JSON5) is read from that file instead; a router in the
//! address then replaces the file's `connect/endpoints`, and
//! `zenoh:///<cloud>/<node>?config=FILE` (no router) uses the file's own.
//!
//! All links of one [`ZenohTransport`] through the same router (and file)
//! share one zenoh session.
//!
//! ## The directory (`?directory=1`)
//!
//! A listen address with `directory=1`
//! (`zenoh://router:7447/lab/b?directory=1`) also makes the node use the
//! cloud's directory in zenoh
//! ([`Node::use_directory`](oscloud_core::Node::use_directory)):
//!
//! - every server the node publishes (its own, and those it reaches over
//!   mesh links, so a bridge node publishes its boards' servers) is a
//!   liveliness token `oscloud/<cloud>/srv/<name>/<node>`, withdrawn when
//!   the server leaves the registry, and by the router when the node's
//!   zenoh session goes (a node killed with SIGKILL);
//! - a call, cast or pipe to a name the node does not hold asks
//!   `oscloud/<cloud>/srv/<name>/*` (a liveliness query), dials the node
//!   found (`zenoh://router/<cloud>/<node>`, through the same router) as a
//!   *directory link*, and goes on once the name arrives over it. The
//!   link is reused by later lookups and not dialled again once it ends;
//! - a directory link that carried no cast, call, reply or pipe packet
//!   either way for `directory_idle` (`?directory=1&directory_idle=30s`;
//!   60 s by default, `0` for never), with no call waiting for its reply
//!   and no pipe open, is closed by the node that dialled it (a Normal
//!   Close); the next lookup dials again;
//! - [`Node::watch_directory`](oscloud_core::Node::watch_directory)
//!   follows who publishes a name (`*`: every name) with a liveliness
//!   subscription on `oscloud/<cloud>/srv/<name>/*`, declared when asked:
//!   servers of nodes this node is not linked to show there too;
//! - a server the node's access policy lets no peer look up is not
//!   published.
//!
//! Over a directory link each side announces only what it publishes, and
//! forwards what it learns over it to no one (`docs/PROTOCOL.md` §13.1):
//! nodes that only use the directory dial no one by name and hold only
//! their own servers and those of the nodes they talk to, however large
//! the cloud. Explicit `connect`s and the mesh over them are unchanged;
//! the two mix. `directory` is read on listen addresses only.
//!
//! ## On the zenoh side
//!
//! | key | what |
//! |---|---|
//! | `oscloud/<cloud>/node/<node>` | liveliness token: the node listens |
//! | `oscloud/<cloud>/node/<node>/accept` | queryable: a get with a fresh link id (16 hex digits) as payload asks for a link |
//! | `oscloud/<cloud>/srv/<name>/<node>` | liveliness token: `<node>` publishes server `<name>` in the directory (`<name>` as one chunk: ASCII letters, digits, `-`, `_`, `.` as they are, every other byte as `%XX`, so `pool/w1` is `pool%2Fw1`) |
//! | `oscloud/<cloud>/link/<id>/d`, `…/l` | the dialler's (`d`) and listener's (`l`) frames; each side also holds a liveliness token on its key |
//! | `oscloud/<cloud>/pipe/<node>/<pipe>` | a tapped pipe's frames (see "Pipe taps") |
//!
//! A dialler declares its side of the link (subscriptions, publisher,
//! token) before it asks, and the listener declares its side before it
//! answers, so no frame is published before the peer subscribed.
//!
//! ## Framing and failure
//!
//! One oscloud frame (a packet, or a sealed packet in an encrypted session)
//! travels as one zenoh sample, reliable, with congestion control `Block`
//! (a slow peer slows the sender, nothing is dropped), and its sequence
//! number (8 bytes, big-endian) as the sample's attachment. Frames rather
//! than a byte stream cut into samples: a zenoh sample is already a
//! message, so the peer needs no reassembly, and a `zenoh` subscriber can
//! see one frame per sample. The link is a
//! [`ReliableStream`](oscloud_core::transport::LinkKind::ReliableStream)
//! to the session (nothing is retransmitted), so the link ends at the
//! first sign of loss:
//!
//! - a sample whose number is not the one due (zenoh dropped one, as it may
//!   when a router restarts) ends the link: the session then resumes on a
//!   new one and retransmits what was not acknowledged;
//! - the peer's liveliness token going (its process died, its zenoh session
//!   lost the router, or it closed the link) ends the link, after 200 ms
//!   for its last samples to arrive;
//! - a node closing a link publishes a Delete sample on its key, which ends
//!   the link at once on the other side.
//!
//! A subscriber's queue holds 256 samples; when the session does not read,
//! it blocks the zenoh session's receiving side, which holds up every link
//! through the same session until the session reads again.
//!
//! ## Pipe taps
//!
//! A plain zenoh subscriber (any zenoh client, no oscloud code) can watch
//! a pipe by key expression once the node tapping it publishes its frames
//! with [`ZenohTransport::tap`] (opt-in: a tap costs one zenoh sample per
//! frame). The key is `oscloud/<cloud>/pipe/<node>/<pipe>` ([`tap_key`]);
//! each frame is one `Put` sample, reliable, congestion control `Block`,
//! its payload the frame's bytes as written and its attachment the
//! frame's number (u64, big-endian, from 0); a `Delete` sample on the key
//! marks the end of the pipe. `oscloud/lab/pipe/**` watches every tapped
//! pipe of cloud `lab`, `oscloud/*/pipe/gw/*` every pipe tapped on node
//! `gw`. The tap is fed by a branch of a
//! [`split`](oscloud_core::plumbing::split); a drop-oldest branch keeps a
//! slow router from holding the pipe up (frames it drops get no number,
//! so a subscriber sees the gap). `oscloud run` taps a pipe with
//! `zenoh_tap = "zenoh://ROUTER:PORT/<cloud>/<node>"` in its `[[pipes]]`
//! table.
//!
//! ```no_run
//! use oscloud_core::Kernel;
//! use oscloud_core::plumbing::{Branch, split};
//! use oscloud_transport_zenoh::ZenohTransport;
//!
//! # #[allow(dead_code)]
//! # async fn demo(kernel: Kernel, readings: oscloud_core::PipeReader,
//! #     rules: oscloud_core::PipeWriter) -> Result<(), oscloud_core::Error> {
//! let zenoh = ZenohTransport::new();
//! let (tap_w, tap_r) = kernel.pipe();
//! // Published as oscloud/lab/pipe/gw/readings.
//! let tap = zenoh
//!     .tap(&"zenoh://127.0.0.1:7447/lab/gw".parse()?, "readings", tap_r)
//!     .await?;
//! let fanout = split(readings, vec![Branch::block(rules), Branch::drop_oldest(tap_w, 256)]);
//! # drop((tap, fanout));
//! # Ok(())
//! # }
//! ```
//!
//! ## Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use oscloud_core::transport::Transports;
//! use oscloud_transport_zenoh::ZenohTransport;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let transports = Transports::new().with(Arc::new(ZenohTransport::new()));
//! // Reachable as "b" in cloud "lab" through the router on port 7447.
//! let mut listener = transports.listen(&"zenoh://127.0.0.1:7447/lab/b".parse()?).await?;
//! // Another node (here the same one) links to it through the router.
//! let link = transports.connect(&"zenoh://127.0.0.1:7447/lab/b".parse()?).await?;
//! let accepted = listener.accept().await?;
//! # drop((link, accepted));
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]

mod directory;
mod keys;
mod link;
mod listener;
mod sessions;
mod tap;

pub use tap::{PipeTap, tap_key};

use std::time::Duration;

use async_trait::async_trait;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, Listener, Transport};

/// The URI scheme of links through zenoh.
pub const SCHEME: &str = "zenoh";
/// The router port when the address gives none.
pub const DEFAULT_ROUTER_PORT: u16 = 7447;
/// How long a link request, and the peer's side appearing, may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Address parameter: a zenoh configuration file (JSON5).
pub const PARAM_CONFIG: &str = "config";
pub use directory::{PARAM_DIRECTORY, PARAM_DIRECTORY_IDLE};

/// Links through zenoh routers (`zenoh://router:7447/<cloud>/<node>`).
#[derive(Debug, Default)]
pub struct ZenohTransport {
    sessions: sessions::Sessions,
}

impl ZenohTransport {
    /// A transport with no zenoh session open yet (one opens per router
    /// on first use).
    pub fn new() -> Self {
        Self::default()
    }
}

/// What an address says, checked.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The address as given.
    pub(crate) addr: Address,
    /// The router's zenoh endpoint (`tcp/host:port`), if the address names one.
    pub(crate) router: Option<String>,
    /// The zenoh configuration file, if any.
    pub(crate) config: Option<String>,
    /// The cloud.
    pub(crate) cloud: String,
    /// The node listened as or dialled.
    pub(crate) node: String,
    /// Whether the address asks for the directory (`directory=1`).
    pub(crate) directory: bool,
    /// How long a directory link may go unused (`directory_idle`; None:
    /// never).
    pub(crate) directory_idle: Option<Duration>,
}

impl Target {
    pub(crate) fn parse(addr: &Address) -> Result<Self, Error> {
        addr.check_params(&[PARAM_CONFIG, PARAM_DIRECTORY, PARAM_DIRECTORY_IDLE])?;
        let directory = directory::wanted(addr)?;
        let directory_idle = directory::idle(addr)?;
        let config = addr.param(PARAM_CONFIG).map(str::to_owned);
        let router = if addr.host().is_empty() {
            if addr.port_or_text().is_some() {
                return Err(invalid(addr, "a router port without a host"));
            }
            None
        } else {
            let port = match (addr.port(), addr.port_text()) {
                (Some(p), _) => p,
                (None, None) => DEFAULT_ROUTER_PORT,
                (None, Some(t)) => return Err(invalid(addr, format!("bad router port {t:?}"))),
            };
            if port == 0 {
                return Err(invalid(addr, "the router port cannot be 0"));
            }
            let host = if addr.host().contains(':') {
                format!("[{}]", addr.host())
            } else {
                addr.host().to_owned()
            };
            Some(format!("tcp/{host}:{port}"))
        };
        if router.is_none() && config.is_none() {
            return Err(invalid(
                addr,
                format!("name a router (zenoh://host:port/...) or a {PARAM_CONFIG}= file"),
            ));
        }
        let path = addr.path().strip_prefix('/').unwrap_or(addr.path());
        let (cloud, node) = path
            .split_once('/')
            .ok_or_else(|| invalid(addr, "the path must be /<cloud>/<node>"))?;
        for (what, name) in [("cloud", cloud), ("node", node)] {
            if !keys::valid_name(name) {
                return Err(invalid(
                    addr,
                    format!(
                        "{what} name {name:?}: 1 to 64 ASCII letters, digits, '-', '_' or '.' \
                         (the path must be /<cloud>/<node>)"
                    ),
                ));
            }
        }
        Ok(Self {
            addr: addr.clone(),
            router,
            config,
            cloud: cloud.to_owned(),
            node: node.to_owned(),
            directory,
            directory_idle,
        })
    }
}

pub(crate) fn invalid(addr: &Address, reason: impl Into<String>) -> Error {
    Error::InvalidAddress {
        input: addr.to_string(),
        reason: reason.into(),
    }
}

#[async_trait]
impl Transport for ZenohTransport {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        let target = Target::parse(addr)?;
        let session = self.sessions.get(&target).await?;
        link::dial(&session, &target).await
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        let target = Target::parse(addr)?;
        let session = self.sessions.get(&target).await?;
        listener::ZenohLinks::bind(session, target).await
    }
}

#[cfg(test)]
mod tests;
