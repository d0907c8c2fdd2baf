//! Nodes: a kernel joined to other kernels by links.
//!
//! A [`Node`] is a [`Kernel`] plus a set of [`Transports`] plus the links
//! it made or accepted. When two nodes link, their registries federate:
//! every server registered on one is visible on the other (tagged with the
//! node it lives on), and a reference obtained from a lookup reaches it the
//! same way as a local one: casts, calls and pipes go over the link, with
//! back-pressure end to end.
//!
//! When a link drops, the peer's entries leave the registry with
//! [`ExitReason::LinkDown`](crate::ExitReason::LinkDown) (so monitors get a
//! down notice with the reason), calls in flight fail with
//! [`Error::ServerStopped`], pipes over the link close, and a link this node
//! dialled is dialled again with exponential backoff; once it is back the
//! registries sync again by themselves.
//!
//! Nodes route (`docs/PROTOCOL.md` §13): when A is linked only to B and
//! B to C, B forwards C's servers to A (and A's to C), so A's lookups see
//! C's servers (tagged with C's node id) and A's casts, calls and pipes to
//! them are forwarded by B, pipes with back-pressure end to end (B splices
//! the two bounded pipes). Routes are path-vector: loop-free, limited to
//! [`NodeConfig::max_hops`], chosen by cost (each link costs
//! [`link_cost`]: 1 for a reliable stream, 10 for a serial line or a
//! datagram link) then hops. When a link goes down, the routes through it
//! are withdrawn hop by hop; servers with another route stay reachable
//! through it, the others leave the registry.
//!
//! A forwarded call reaches the far server as a call *from the forwarding
//! node*: each node's access policy checks its own neighbour (B's policy
//! decides what A may reach through B; C's policy decides what B may do).
//! Granting a node access thus grants it to whatever that node forwards
//! for; a far server never sees an identity it did not authenticate.
//!
//! ```
//! use std::sync::Arc;
//! use oscloud_core::transport::{MemTransport, Transports};
//! use oscloud_core::{Kernel, Node};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let mem = MemTransport::new();
//! let mut transports = Transports::new();
//! transports.add(Arc::new(mem.clone()));
//!
//! let a = Node::new(Kernel::new(), transports.clone());
//! let b = Node::new(Kernel::new(), transports);
//! let at = a.listen(&"mem://a".parse()?).await?;
//! let peer = b.connect(&at).await?;
//! assert_eq!(peer, a.kernel().node());
//! # Ok(())
//! # }
//! ```

mod bridge;
mod cast_batch;
mod cast_target;
#[cfg(test)]
mod counting_waker;
mod directory;
mod driver;
mod held_casts;
mod id;
mod idle_close;
mod link_closes;
mod link_io;
mod link_limits;
#[cfg(test)]
mod link_status_tests;
mod link_wire;
pub(crate) mod link_wire_sim;
#[cfg(test)]
mod link_wire_tests;
mod remote;
mod resume;
#[cfg(test)]
mod route_memory_tests;
mod router;
pub(crate) mod routes;
#[cfg(test)]
mod routing_tests;
mod rtt_probe;
mod serving;
mod settings;
mod signals;
mod stats;
#[cfg(test)]
mod tests;
mod wakeups;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, info_span, warn};

pub use id::NodeId;
pub use link_closes::{CLOSE_CODES, LinkCloses, MAX_CLOSE_PEERS};
pub use router::{Route, TooFarRoute};
pub use settings::{SETTINGS, Setting, SettingKind, parse_duration};

use crate::access::AccessPolicy;
use crate::address::Address;
use crate::transport::{Link, LinkKind, Transports};
use crate::wire::{self, FramingKind, LocalInfo, SecureConfig, Session};
use crate::{Error, Kernel};
use directory::OnDemandLink;
use driver::Driver;
use link_io::LinkPorts;
use resume::{Handover, Resumption};
use stats::LinkShared;

/// How a node runs its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Send a ping on a quiet link this often.
    pub keepalive: Duration,
    /// Declare a link dead after this long without hearing from the peer
    /// (this is the liveness timeout: down notices come within it).
    pub idle_timeout: Duration,
    /// First wait before dialling a lost link again.
    pub reconnect_min: Duration,
    /// Longest wait between dial attempts (the backoff doubles up to it).
    pub reconnect_max: Duration,
    /// Bytes each pipe may have in flight towards this node; also the
    /// largest pipe frame the peer may send (its writers get
    /// [`Error::FrameTooLarge`] for a longer one).
    pub pipe_window: u32,
    /// Largest wire packet, which bounds the size of one cast, call or
    /// reply (pipe frames are split to fit).
    pub max_frame: usize,
    /// Largest wire packet on lossy links (serial lines, and datagram links
    /// such as CAN and BLE, where the framing lowers it further to what its
    /// segments can carry), where a damaged
    /// frame is lost whole: small frames lose less to noise, large ones
    /// carry less overhead (a 1 KiB pipe write fits one 2 KiB packet:
    /// 2.4 % framing and headers). Casts, calls and replies must fit in it;
    /// pipe frames are split to fit. Default 2048.
    pub lossy_max_frame: usize,
    /// Most unacknowledged packets in flight on a lossy or datagram link (the peer's
    /// receive window caps it too). A window's worth of line time should
    /// stay below `lossy_initial_rto`: until the link has measured its
    /// round-trip time, the sender re-sends packets that are merely still
    /// on their way: at 115 200 baud (about 11.5 KB/s), 8 packets of a
    /// 1 KiB pipe write take about 0.75 s. It also bounds how
    /// long a call waits behind a running pipe: calls overtake queued pipe
    /// data but not the packets in flight (`docs/PROTOCOL.md` §7.1), so at
    /// most a window of packets of up to `lossy_max_frame` bytes goes
    /// first. Default 8.
    pub lossy_send_window: u32,
    /// First and smallest retransmission timeout on a lossy or datagram
    /// link: the least time a lost frame costs. The timeout then follows
    /// the round-trip time the link measures (RFC 6298: smoothed RTT plus
    /// four times its variation, `docs/PROTOCOL.md` §6.1), which on a
    /// slow line includes the line time of the packets queued ahead, so
    /// packets that are merely slow to be acknowledged are not sent again;
    /// it never drops below this value (a short sample on an idle line
    /// says nothing about a burst of full packets behind it), doubles on
    /// an expiry up to 4 s (or this value, if larger) and stays doubled
    /// until a packet first sent after the expiry is acknowledged. Default
    /// 1 s, for slow
    /// lines; a fast line (a pty, a few Mbaud) can use tens of
    /// milliseconds. [`LinkStatus::stats`] shows the measured RTT and the
    /// timeout in force (`srtt_us`, `rto_us`).
    pub lossy_initial_rto: Duration,
    /// Bytes of casts and calls that may wait for one link; beyond,
    /// [`Endpoint::cast`](crate::Endpoint::cast) and calls wait for room
    /// (back-pressure on the sender instead of growing memory) and
    /// [`Endpoint::try_cast`](crate::Endpoint::try_cast) fails at once
    /// with [`Error::LinkBusy`].
    pub max_queued: usize,
    /// Bytes one link's peer may make this node hold for it (default
    /// 16 MiB), counted twice over: replies to its calls waiting to be
    /// written, and its casts not yet handled by local servers. While
    /// either is above the budget the link is not read: the peer's
    /// writes stop once the socket's buffers are full (TCP back-pressure)
    /// and nothing more of its arrives, so casts are held back, never
    /// dropped. Calls it makes while the request bytes of the calls being
    /// served for it are above the budget get
    /// [`Error::NodeBusy`] at once. A peer that reads none of
    /// this node's bytes for `idle_timeout` while some wait loses its
    /// link. Peak memory for a link is a small multiple of this
    /// (`BENCHMARKS.md`, "Flooding peers"). A listen address may set its
    /// own for the links it accepts (see [`Node::listen`]).
    pub link_budget: usize,
    /// Most calls from one link served at once (default 1024, the number
    /// of calls a session lets a peer have waiting); calls
    /// beyond get [`Error::NodeBusy`] at once, unserved. A listen address
    /// may set its own for the links it accepts (see [`Node::listen`]).
    pub max_serving: usize,
    /// How long a session outlives its link (`docs/PROTOCOL.md` §12).
    /// Zero (the default) ends the session with its link: the peer's
    /// servers leave the registry and calls in flight fail at once. Above
    /// zero, when both nodes set it, a lost link keeps the session: the
    /// peer's servers stay registered, calls and pipes wait, a dialled
    /// link is dialled again (through the next of its addresses, see
    /// [`Node::connect_redundant`]) and the session resumes from the last
    /// acknowledged packet, losing and duplicating nothing. Past the
    /// grace, calls fail with [`Error::LinkNotResumed`], pipes close and
    /// the peer's servers leave with a link-down reason. Down notices
    /// then come within `idle_timeout + resume_grace`.
    pub resume_grace: Duration,
    /// The longest route taken, in nodes on its path (the server's node
    /// included): 1 takes only the neighbours' own servers. Routes longer
    /// than this are refused, and not forwarded when they would become
    /// longer. Default 8; at most [`wire::MAX_ROUTE_PATH`]. Neither
    /// happens silently: each server so held back is logged once (a
    /// warning), and [`Route::at_hop_limit`] marks the routes this node
    /// takes but does not forward.
    pub max_hops: usize,
    /// Test only (feature `test-knobs`): send everything on a link in the
    /// order queued, so pipe data is never overtaken (the scheduling
    /// before messages could overtake it, `docs/PROTOCOL.md` §7.1), to
    /// measure against.
    #[cfg(feature = "test-knobs")]
    #[doc(hidden)]
    pub fifo_send_queue: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            keepalive: wire::DEFAULT_KEEPALIVE,
            idle_timeout: wire::DEFAULT_IDLE_TIMEOUT,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            pipe_window: 256 * 1024,
            max_frame: 1024 * 1024,
            lossy_max_frame: 2048,
            lossy_send_window: 8,
            lossy_initial_rto: Duration::from_secs(1),
            max_queued: 16 * 1024 * 1024,
            link_budget: 16 * 1024 * 1024,
            max_serving: 1024,
            resume_grace: Duration::ZERO,
            max_hops: 8,
            #[cfg(feature = "test-knobs")]
            fifo_send_queue: false,
        }
    }
}

impl NodeConfig {
    fn session_config(&self, framing: FramingKind) -> wire::Config {
        let mut c = wire::Config::new(framing);
        c.keepalive = self.keepalive;
        c.idle_timeout = self.idle_timeout;
        c.pipe_window = self.pipe_window;
        c.resume_grace = (!self.resume_grace.is_zero()).then_some(self.resume_grace);
        #[cfg(feature = "test-knobs")]
        {
            c.fifo_send_queue = self.fifo_send_queue;
        }
        match framing {
            FramingKind::ReliableStream => c.max_frame = self.max_frame,
            // Datagram links (CAN, BLE) lose whole frames too, and have no
            // flow control of their own: the same small window and patient
            // first timeout keep a slow bus or receiver from being flooded.
            FramingKind::LossyStream | FramingKind::Datagram { .. } => {
                c.max_frame = self.lossy_max_frame;
                c.send_window = self.lossy_send_window;
                c.initial_rto = self.lossy_initial_rto;
                c.min_rto = self.lossy_initial_rto;
                c.max_rto = c.max_rto.max(self.lossy_initial_rto);
            }
        }
        c
    }
}

/// What a node knows about one of its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// A number for the link, unique within this node.
    pub id: u64,
    /// The local side, as the transport describes it (of the link the
    /// session runs on now: it follows a session that resumed on a new
    /// link, see [`NodeConfig::resume_grace`]).
    pub local: String,
    /// The remote side, as the transport describes it (of the link the
    /// session runs on now).
    pub remote: String,
    /// The address this node dials for it, if this node dialled it.
    pub dialed: Option<Address>,
    /// The peer's node id, once the handshake is done. Set, with
    /// `connected`, before the peer's servers show in the registry or
    /// anything is served to the peer, on both the dialling and the
    /// accepting side.
    pub peer: Option<NodeId>,
    /// Whether the session is up now.
    pub connected: bool,
    /// How many times the link came back after it went down: dialled
    /// again, or its session resumed on a new link.
    pub reconnects: u64,
    /// The wire counters (frames, bytes, retransmissions, CRC failures...).
    /// Current with what the link delivered: once a call over the link
    /// returned, the bytes of its request and reply are counted here on
    /// both sides.
    pub stats: wire::Stats,
    /// The link's round-trip time in microseconds as this node measures
    /// it, on every kind of link: the smoothed time a Call to the empty
    /// name (which every node answers at once with `NotFound`) takes to
    /// come back, one probe a second at most while the link is busy, one
    /// per keepalive while it idles. 0 until the first answer. (The
    /// session's own [`Stats::srtt_us`](wire::Stats::srtt_us) is measured
    /// on lossy links only.)
    pub rtt_us: u64,
    /// Times a local pipe writer's frame had to wait for the peer's credit
    /// on this link (the peer's reader was behind): a sign of a slow
    /// consumer, not of a slow link.
    pub credit_stalls: u64,
    /// Bytes waiting to be sent on the link: casts and calls waiting for
    /// its driver (at most [`NodeConfig::max_queued`]) and the replies
    /// and pipe data queued in its session (for a sequence number, the
    /// send window or the link to take them).
    pub send_queue_bytes: u64,
    /// How the link's session closed, once it did: the code, and whether
    /// the peer closed it. (A link's record goes when it ends for good;
    /// [`Node::link_closes`] keeps counting.)
    pub closed: Option<wire::CloseReason>,
    /// Every round trip the node's probe measured on the link (see
    /// `rtt_us`), bucketed: the samples themselves, not smoothed.
    pub probe_rtt: wire::RttHistogram,
    /// The round trips the session's retransmission timer measured
    /// (lossy links; empty on reliable streams), bucketed.
    pub session_rtt: wire::RttHistogram,
}

struct LinkRecord {
    dialed: Option<Address>,
    /// State and counters, written by the link's driver.
    shared: Arc<LinkShared>,
    /// Set to close the link for good (see [`Node::close_link`]).
    close: watch::Sender<bool>,
}

/// Why a link ended when [`Node::close_link`] closed it.
const CLOSED_HERE: &str = "closed by this node";

struct Inner {
    kernel: Kernel,
    transports: Transports,
    config: NodeConfig,
    /// Noise handshake and encryption on every link, when set.
    security: Option<SecureConfig>,
    /// What each peer may do with the local servers.
    policy: AccessPolicy,
    /// The directory the node finds servers in, if it uses one.
    directory: Mutex<Option<Arc<dyn crate::directory::Directory>>>,
    links: Mutex<HashMap<u64, LinkRecord>>,
    /// Sessions that may resume on a new link.
    sessions: resume::Table,
    /// Routes to the servers of other nodes.
    router: Arc<router::Router>,
    next_link: AtomicU64,
    /// How the links' sessions closed, per peer and code.
    closes: Arc<link_closes::CloseCounts>,
    shutdown: watch::Sender<bool>,
}

/// A kernel joined to other kernels by links. Cheap to clone: clones share
/// one node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.inner.kernel.node())
            .field("links", &self.lock_links().len())
            .finish()
    }
}

impl Node {
    /// A node running `kernel`, able to link over `transports`, with the
    /// default configuration.
    pub fn new(kernel: Kernel, transports: Transports) -> Self {
        Self::with_config(kernel, transports, NodeConfig::default())
    }

    /// A node with a configuration of its own.
    pub fn with_config(kernel: Kernel, transports: Transports, config: NodeConfig) -> Self {
        Self::build(kernel, transports, config, None)
    }

    /// A node whose every link is authenticated and encrypted: a Noise
    /// handshake with `security.key` at the start of each session, peers
    /// admitted by `security.allow`, every frame sealed
    /// (`docs/PROTOCOL.md` §11). Its peers must be secure nodes too.
    ///
    /// The kernel's node id must be the one derived from the key: make the
    /// kernel with `Kernel::with_node(key.node_id())`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use oscloud_core::identity::{AllowList, NodeKey};
    /// use oscloud_core::transport::{MemTransport, Transports};
    /// use oscloud_core::wire::SecureConfig;
    /// use oscloud_core::{Kernel, Node, NodeConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), oscloud_core::Error> {
    /// let mut transports = Transports::new();
    /// transports.add(Arc::new(MemTransport::new()));
    /// let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
    /// let secure = |me: &NodeKey, peer: &NodeKey| {
    ///     SecureConfig::new(me.clone(), AllowList::from_keys([peer.public()]))
    /// };
    /// let a = Node::with_security(Kernel::with_node(ka.node_id()), transports.clone(),
    ///     NodeConfig::default(), secure(&ka, &kb))?;
    /// let b = Node::with_security(Kernel::with_node(kb.node_id()), transports,
    ///     NodeConfig::default(), secure(&kb, &ka))?;
    /// let at = a.listen(&"mem://secure-doc".parse()?).await?;
    /// assert_eq!(b.connect(&at).await?, ka.node_id());
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_security(
        kernel: Kernel,
        transports: Transports,
        config: NodeConfig,
        security: SecureConfig,
    ) -> Result<Self, Error> {
        if kernel.node() != security.key.node_id() {
            return Err(Error::WireConfig(format!(
                "the kernel's node id {} is not derived from the node key (use Kernel::with_node({}))",
                kernel.node(),
                security.key.node_id()
            )));
        }
        Ok(Self::build(kernel, transports, config, Some(security)))
    }

    fn build(
        kernel: Kernel,
        transports: Transports,
        config: NodeConfig,
        security: Option<SecureConfig>,
    ) -> Self {
        let max_hops = config.max_hops.clamp(1, wire::MAX_ROUTE_PATH);
        Self {
            inner: Arc::new(Inner {
                router: router::Router::new(kernel.registry().clone(), max_hops),
                kernel,
                transports,
                config,
                security,
                policy: AccessPolicy::allow_all(),
                directory: Mutex::new(None),
                links: Mutex::new(HashMap::new()),
                sessions: Default::default(),
                next_link: AtomicU64::new(1),
                closes: Default::default(),
                shutdown: watch::Sender::new(false),
            }),
        }
    }

    /// This node's kernel.
    pub fn kernel(&self) -> &Kernel {
        &self.inner.kernel
    }

    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// This node's access policy (allow everything unless set): a shared
    /// handle, so `node.access_policy().set_text(..)` or `.reload()`
    /// changes it for every link at once (hidden servers are withdrawn
    /// from, and newly visible ones announced to, each peer).
    pub fn access_policy(&self) -> &AccessPolicy {
        &self.inner.policy
    }

    /// Use the rules (and file) of `policy` from now on, on every link.
    pub fn set_access_policy(&self, policy: &AccessPolicy) {
        self.inner.policy.set_from(policy);
    }

    /// The security settings, if links are encrypted.
    pub fn security(&self) -> Option<&SecureConfig> {
        self.inner.security.as_ref()
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, HashMap<u64, LinkRecord>> {
        self.inner.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accept links at `addr` until the node shuts down. Returns the address
    /// actually bound (for example the port chosen for `tcp://host:0`).
    ///
    /// Parameters `link_budget` and `max_serving` on `addr`, written as
    /// their settings are (`tcp://0.0.0.0:7000?link_budget=4MiB&max_serving=64`),
    /// replace [`NodeConfig::link_budget`] and [`NodeConfig::max_serving`]
    /// for the links accepted there; the transport does not see them, and
    /// the address returned does not carry them.
    ///
    /// Settings that [`NodeConfig::validate`] refuses are refused here,
    /// before anything listens.
    pub async fn listen(&self, addr: &Address) -> Result<Address, Error> {
        self.inner.config.validate()?;
        let (at, limits) = link_limits::listener(addr, &self.inner.config)?;
        let mut listener = self.inner.transports.listen(&at).await?;
        let bound = listener.local_address();
        if let Some(directory) = listener.directory() {
            self.use_directory(directory);
        }
        let node = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        let span = info_span!("listen", node = %self.inner.kernel.node().short(), at = %bound);
        tokio::spawn(
            async move {
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(link) => {
                                let node = node.clone();
                                tokio::spawn(async move { node.run_link(link, limits).await; });
                            }
                            Err(err) => {
                                warn!("accept failed: {err}");
                                // Do not spin on a persistent error (such as
                                // too many open files).
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        },
                        () = stopped(&mut shutdown) => break,
                    }
                }
            }
            .instrument(span),
        );
        Ok(bound)
    }

    /// Dial `addr` and keep the link up: returns the peer's node id once the
    /// first handshake is done, then dials again with backoff whenever the
    /// link drops, until the node shuts down.
    ///
    /// Errors from the first attempt (refused, unreachable, handshake
    /// failed) are returned and nothing keeps dialling.
    pub async fn connect(&self, addr: &Address) -> Result<NodeId, Error> {
        self.connect_redundant(std::slice::from_ref(addr)).await
    }

    /// Dial one peer known by several addresses (say TCP and a Unix socket,
    /// or a serial line and TCP) and keep one session with it: the first
    /// address that answers carries the session; when its link is lost,
    /// the next addresses are dialled in turn (wrapping around), and with
    /// [`NodeConfig::resume_grace`] set the session resumes on whichever
    /// answers, without losing or duplicating anything in flight. This is
    /// failover: one link at a time.
    ///
    /// Errors when no address gives a first handshake (the last error is
    /// returned); nothing keeps dialling then. Settings that
    /// [`NodeConfig::validate`] refuses are refused before any dial.
    pub async fn connect_redundant(&self, addrs: &[Address]) -> Result<NodeId, Error> {
        self.dial(addrs, None).await
    }

    /// Dial `addrs` as [`connect_redundant`](Self::connect_redundant)
    /// does; `on_demand` makes a directory link, not dialled again once
    /// it ends (see [`Node::use_directory`]).
    async fn dial(
        &self,
        addrs: &[Address],
        on_demand: Option<OnDemandLink>,
    ) -> Result<NodeId, Error> {
        self.inner.config.validate()?;
        let mut last = Error::LinkFailed {
            address: String::new(),
            reason: "no address to dial".into(),
        };
        for (i, addr) in addrs.iter().enumerate() {
            let link = match self.inner.transports.connect(addr).await {
                Ok(l) => l,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let (connected, handshake) = oneshot::channel();
            let node = self.clone();
            let all = addrs.to_vec();
            tokio::spawn(async move { node.dial_loop(all, i, link, connected, on_demand).await });
            match handshake.await {
                Ok(Ok(peer)) => return Ok(peer),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    return Err(Error::LinkFailed {
                        address: addr.to_string(),
                        reason: "the node shut down".into(),
                    });
                }
            }
        }
        Err(last)
    }

    /// Dial the addresses in turn from `*at` until one answers (`*at` is
    /// then its index); backoff after every full round. None when the node
    /// shuts down.
    async fn dial_any(
        &self,
        addrs: &[Address],
        at: &mut usize,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
    ) -> Option<Link> {
        let config = &self.inner.config;
        loop {
            for _ in 0..addrs.len() {
                let addr = &addrs[*at % addrs.len()];
                let dialled = tokio::select! {
                    r = self.inner.transports.connect(addr) => r,
                    () = stopped(shutdown) => return None,
                };
                match dialled {
                    Ok(l) => return Some(l),
                    Err(err) => debug!(%addr, "dial failed: {err}"),
                }
                *at = (*at + 1) % addrs.len();
            }
            debug!("no address answered; next round in {backoff:?}");
            if self.wait(shutdown, *backoff).await {
                return None;
            }
            *backoff = (*backoff * 2).min(config.reconnect_max);
        }
    }

    async fn dial_loop(
        self,
        addrs: Vec<Address>,
        mut at: usize,
        first: Link,
        connected: oneshot::Sender<Result<NodeId, Error>>,
        on_demand: Option<OnDemandLink>,
    ) {
        let config = &self.inner.config;
        let mut shutdown = self.inner.shutdown.subscribe();
        let id = self.inner.next_link.fetch_add(1, Ordering::Relaxed);
        let mut connected = Some(connected);
        let mut link = Some(first);
        let mut backoff = config.reconnect_min;
        let mut reconnects = 0u64;
        loop {
            let current = match link.take() {
                Some(l) => l,
                None => match self
                    .dial_any(&addrs, &mut at, &mut shutdown, &mut backoff)
                    .await
                {
                    Some(l) => l,
                    None => return,
                },
            };
            let addr = addrs[at % addrs.len()].clone();
            let (handover_tx, handover_rx) = mpsc::unbounded_channel();
            let (redial_tx, redial_rx) = mpsc::unbounded_channel();
            // Counts resumptions, so that dialling again backs off while
            // new links do not lead to one (a relay or peer that accepts
            // and drops at once).
            let resumed = Arc::new(AtomicU64::new(0));
            let on_state = {
                let resumed = resumed.clone();
                let f: resume::OnState = Arc::new(move |up| {
                    if up {
                        resumed.fetch_add(1, Ordering::Relaxed);
                    }
                });
                f
            };
            let resumption = Resumption::new(
                self.inner.sessions.clone(),
                config.resume_grace,
                Some((handover_tx.clone(), handover_rx)),
                Some(redial_tx),
                Some(on_state),
            );
            let (tx, mut rx) = oneshot::channel();
            let running = self.run_link_as(
                id,
                current,
                Some((addr.clone(), tx, on_demand)),
                reconnects,
                resumption,
                link_limits::limits(config),
            );
            let running =
                self.keep_linked(running, redial_rx, handover_tx, &addrs, &mut at, &resumed);
            tokio::pin!(running);
            let ended = match connected.take() {
                // Later attempts: just run the link.
                None => running.await,
                // The first attempt: report the handshake as soon as it is
                // done, or the failure if the link ends before it.
                Some(first) => {
                    let mut first = Some(first);
                    let early = tokio::select! {
                        ended = &mut running => Some(ended),
                        peer = &mut rx => match peer {
                            Ok(peer) => {
                                if let Some(first) = first.take() {
                                    let _ = first.send(Ok(peer));
                                }
                                None
                            }
                            // The link ended before its handshake (refused,
                            // for example): report why below.
                            Err(_) => Some((&mut running).await),
                        }
                    };
                    match early {
                        None => running.await,
                        Some(ended) => match (rx.try_recv(), first.take()) {
                            (_, None) => ended,
                            (Ok(peer), Some(first)) => {
                                let _ = first.send(Ok(peer));
                                ended
                            }
                            (Err(_), Some(first)) => {
                                let _ = first.send(Err(Error::LinkFailed {
                                    address: addr.to_string(),
                                    reason: ended.reason,
                                }));
                                self.lock_links().remove(&id);
                                return;
                            }
                        },
                    }
                }
            };
            if *shutdown.borrow() {
                return;
            }
            // A directory link is not dialled again: the next lookup asks
            // the directory again.
            if ended.reason == CLOSED_HERE || on_demand.is_some() {
                self.lock_links().remove(&id);
                return;
            }
            if ended.was_connected {
                backoff = config.reconnect_min;
            }
            reconnects += 1;
            if self.wait(&mut shutdown, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(config.reconnect_max);
        }
    }

    /// Run a dialled link's driver; whenever it reports its link lost (its
    /// session waits to resume), dial again — the next address first — and
    /// hand it the new link. Ends with the driver.
    async fn keep_linked(
        &self,
        running: impl std::future::Future<Output = driver::Ended>,
        mut redial: mpsc::UnboundedReceiver<()>,
        handover: mpsc::UnboundedSender<Handover>,
        addrs: &[Address],
        at: &mut usize,
        resumed: &AtomicU64,
    ) -> driver::Ended {
        tokio::pin!(running);
        let mut shutdown = self.inner.shutdown.subscribe();
        let config = &self.inner.config;
        // Resumptions seen when the last new link was handed over.
        let mut handed: Option<u64> = None;
        let mut pause = config.reconnect_min;
        loop {
            tokio::select! {
                ended = &mut running => return ended,
                Some(()) = redial.recv() => {
                    // The last new link did not resume: back off.
                    if handed == Some(resumed.load(Ordering::Relaxed)) {
                        let waited = tokio::select! {
                            ended = &mut running => return ended,
                            stop = self.wait(&mut shutdown, pause) => stop,
                        };
                        if waited {
                            return running.await;
                        }
                        pause = (pause * 2).min(config.reconnect_max);
                    } else {
                        pause = config.reconnect_min;
                    }
                    // Fail over: the next address first.
                    *at = (*at + 1) % addrs.len();
                    let mut backoff = config.reconnect_min;
                    let link = tokio::select! {
                        ended = &mut running => return ended,
                        l = self.dial_any(addrs, at, &mut shutdown, &mut backoff) => l,
                    };
                    let Some(link) = link else {
                        return running.await;
                    };
                    let config = config.session_config(framing_of(link.info.kind));
                    let next = Handover {
                        io: LinkPorts::new(link.io),
                        hello: None,
                        local: link.info.local,
                        remote: link.info.remote,
                        config,
                    };
                    debug!(link = %next.name(), "dialled again to resume");
                    handed = Some(resumed.load(Ordering::Relaxed));
                    let _ = handover.send(next);
                }
            }
        }
    }

    /// Wait `d`; true if the node shut down meanwhile.
    async fn wait(&self, shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => false,
            () = stopped(shutdown) => true,
        }
    }

    /// Run a link a listener accepted, with `limits`.
    async fn run_link(&self, link: Link, limits: driver::Limits) -> driver::Ended {
        let id = self.inner.next_link.fetch_add(1, Ordering::Relaxed);
        let resumption = Resumption::new(
            self.inner.sessions.clone(),
            self.inner.config.resume_grace,
            None,
            None,
            None,
        );
        let ended = self
            .run_link_as(id, link, None, 0, resumption, limits)
            .await;
        self.lock_links().remove(&id);
        ended
    }

    async fn run_link_as(
        &self,
        id: u64,
        link: Link,
        dial: Option<(Address, oneshot::Sender<NodeId>, Option<OnDemandLink>)>,
        reconnects: u64,
        resumption: Resumption,
        limits: driver::Limits,
    ) -> driver::Ended {
        // A dialled link: its address, who waits for its handshake, and
        // whether it is a directory link.
        let (dialed, connected, on_demand) =
            dial.map_or((None, None, None), |(a, c, d)| (Some(a), Some(c), d));
        let directory = on_demand.is_some();
        let kernel = self.inner.kernel.clone();
        let framing = framing_of(link.info.kind);
        let shared = Arc::new(LinkShared::new(
            link.info.local.clone(),
            link.info.remote.clone(),
            reconnects,
            self.inner.closes.clone(),
        ));
        let name = resume::link_name(&link.info.local, &link.info.remote);
        let cost = link_cost(link.info.kind);
        let (close, closed) = watch::channel(false);
        self.lock_links().insert(
            id,
            LinkRecord {
                dialed,
                shared: shared.clone(),
                close,
            },
        );
        let session_config = self.inner.config.session_config(framing);
        let mut local = LocalInfo::new(kernel.node());
        local.features |= wire::FEATURE_ROUTING;
        if directory {
            local.features |= wire::FEATURE_DIRECTORY;
        }
        let now = std::time::Instant::now();
        let session = match &self.inner.security {
            Some(sec) => Session::new_secure(session_config, local, sec.clone(), now),
            None => Session::new(session_config, local, now),
        };
        let session = match session {
            Ok(s) => s,
            Err(err) => {
                return driver::Ended {
                    reason: format!("bad configuration: {err}"),
                    was_connected: false,
                };
            }
        };
        let span = info_span!("link", node = %kernel.node().short(), link = id, remote = %link.info.remote);
        let io = LinkPorts::new(link.io);
        let shutdown = self.inner.shutdown.subscribe();
        let driver = Driver::new(
            kernel,
            session,
            name,
            shared.clone(),
            connected,
            limits,
            self.inner.policy.clone(),
            self.inner.security.as_ref().map(|s| s.allow.clone()),
            resumption,
            driver::Routing {
                router: self.inner.router.clone(),
                link: id,
                cost,
                directory,
                idle: on_demand.and_then(|d| d.idle),
            },
            (shutdown, closed),
        );
        let ended = driver.run(io).instrument(span).await;
        shared.lost();
        ended
    }

    /// Every link of this node now.
    pub fn links(&self) -> Vec<LinkStatus> {
        let mut out: Vec<LinkStatus> = self
            .lock_links()
            .iter()
            .map(|(id, r)| {
                let state = r.shared.state();
                LinkStatus {
                    id: *id,
                    local: state.local,
                    remote: state.remote,
                    dialed: r.dialed.clone(),
                    peer: state.peer,
                    connected: state.connected,
                    reconnects: state.reconnects,
                    stats: r.shared.stats(),
                    rtt_us: r.shared.rtt_us(),
                    credit_stalls: r.shared.credit_stalls(),
                    send_queue_bytes: r.shared.send_queue_bytes(),
                    closed: state.closed,
                    probe_rtt: state.probe_rtt,
                    session_rtt: state.session_rtt,
                }
            })
            .collect();
        out.sort_by_key(|l| l.id);
        out
    }

    /// How the sessions of this node's links closed since it started, per
    /// peer (see [`LinkCloses`]): counted when a session closes, so links
    /// gone for good are still in.
    pub fn link_closes(&self) -> Vec<LinkCloses> {
        self.inner.closes.snapshot()
    }

    /// Close the link `id` (as [`links`](Self::links) numbers it) for
    /// good: its session ends (without a Close packet: the peer sees the
    /// link close), the routes through it are withdrawn, and a link this
    /// node dialled is not dialled again (a peer that dialled it may dial
    /// again). False if there is no such link.
    pub fn close_link(&self, id: u64) -> bool {
        match self.lock_links().get(&id) {
            Some(rec) => {
                rec.close.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Every route this node knows to the servers of other nodes (direct
    /// neighbours' servers included, as one-hop routes), sorted by name,
    /// the route in use first.
    pub fn routes(&self) -> Vec<Route> {
        self.inner.router.routes()
    }

    /// The servers of other nodes this node cannot reach because every
    /// route announced for them is longer than [`NodeConfig::max_hops`]
    /// (a neighbour with a higher limit announced them), as long as that
    /// neighbour keeps announcing them; at most 1024, each also logged
    /// once as a warning. Empty when every node has the same limit: a
    /// node then does not announce routes at the limit
    /// ([`Route::at_hop_limit`]).
    pub fn too_far_routes(&self) -> Vec<TooFarRoute> {
        self.inner.router.too_far_routes()
    }

    /// Stop listening and dialling and drop every link. The kernel and its
    /// local servers are untouched.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// The routing cost of a link of `kind`: 1 for a reliable stream (TCP,
/// Unix socket, memory), 10 for a serial line or a datagram link (CAN,
/// BLE), which are slower and lossy. A route costs the sum of its links.
pub fn link_cost(kind: LinkKind) -> u32 {
    match kind {
        LinkKind::ReliableStream => 1,
        LinkKind::LossyStream | LinkKind::Datagram { .. } => 10,
    }
}

/// The framing (and retransmission) a link of `kind` needs.
fn framing_of(kind: LinkKind) -> FramingKind {
    match kind {
        LinkKind::ReliableStream => FramingKind::ReliableStream,
        LinkKind::LossyStream => FramingKind::LossyStream,
        LinkKind::Datagram { mtu } => FramingKind::Datagram { mtu },
    }
}

/// Resolves once the node is shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}
