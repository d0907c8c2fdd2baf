//! Running a topology: one node on this kernel, wired as the file says.
//!
//! Every node runs the same way whatever the placement: a kernel and a
//! [`Node`], a supervisor with the node's servers (in file order), the
//! control server `oscloud.node.NAME` (status calls, taps), its links, and
//! the pipes it wires (each pipe is wired by the node of its first
//! destination: it opens every end with
//! [`ServerRef::open_pipe`], merges several sources, and splits into the
//! destinations plus a drop-oldest branch for taps).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oscloud_actors::{
    ChildSpec, Context, PipeOutcome, Restart, Server, ServerError, ServerHandle, ServerRef,
    Supervisor, SupervisorHandle, SupervisorSpec, async_trait,
};
use oscloud_core::address::Address;
use oscloud_core::plumbing::{Branch, Split, merge, split};
use oscloud_core::transport::{MemTransport, Transports};
use oscloud_core::{
    Entry, EntryId, ExitReason, Kernel, Node, NodeId, PipeEnd, PipeReader, PipeWriter,
    RegistryEvent,
};
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use oscloud_transport_ws::WsTransport;
use oscloud_transport_zenoh::ZenohTransport;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Error;
use crate::kinds::BuildContext;
use crate::topology::{End, PipeDef, Topology};

/// How long a node waits for peers and for the servers of its pipes.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Frames a tap branch keeps for a slow watcher before dropping the oldest.
pub const TAP_QUEUE: usize = 256;
/// Once a pipe has ended, how long its zenoh tap may take to publish what
/// it holds.
const ZENOH_TAP_LINGER: Duration = Duration::from_secs(10);

/// The control server's name for node `node`.
pub fn control_name(node: &str) -> String {
    format!("oscloud.node.{node}")
}

/// The supervisor's name for node `node`.
pub fn supervisor_name(node: &str) -> String {
    format!("oscloud.supervisor.{node}")
}

/// Where the nodes of a topology really listen and dial.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Per node: addresses it listens on, addresses it dials.
    pub nodes: HashMap<String, (Vec<Address>, Vec<Address>)>,
}

/// How addresses are replaced for a local run.
#[derive(Debug, Clone)]
pub enum Local {
    /// `mem://` addresses (every node in this process).
    Mem(String),
    /// Unix sockets in this directory (one process per node).
    Unix(PathBuf),
}

impl Plan {
    /// The addresses as written in the file (one node per machine).
    pub fn as_written(topo: &Topology) -> Self {
        let nodes = topo
            .nodes
            .iter()
            .map(|n| (n.name.clone(), (n.listen.clone(), n.connect.clone())))
            .collect();
        Self { nodes }
    }

    /// The same links, on local addresses: each listen address becomes a
    /// `mem://` name or a Unix socket, and a dial of it dials the
    /// replacement. Dials of addresses no node of the file listens on are
    /// kept as written.
    pub fn local(topo: &Topology, local: &Local) -> Result<Self, Error> {
        let mut replaced: Vec<(Address, Address)> = Vec::new();
        let mut nodes = HashMap::new();
        for n in &topo.nodes {
            let mut listen = Vec::new();
            for (i, a) in n.listen.iter().enumerate() {
                let text = match local {
                    Local::Mem(run) => format!("mem://{run}-{}-{i}", n.name),
                    Local::Unix(dir) => {
                        format!(
                            "unix://{}",
                            dir.join(format!("{}-{i}.sock", n.name)).display()
                        )
                    }
                };
                let new: Address = text
                    .parse()
                    .map_err(|e| Error::Address(format!("{text}: {e}")))?;
                replaced.push((a.clone(), new.clone()));
                listen.push(new);
            }
            nodes.insert(n.name.clone(), (listen, Vec::new()));
        }
        for n in &topo.nodes {
            let dials = n
                .connect
                .iter()
                .map(|a| {
                    // A serial cable: the peer's serial listen address.
                    let cable_end = n
                        .serial_peers
                        .iter()
                        .find(|(x, _)| x == a)
                        .and_then(|(_, peer)| topo.node(peer))
                        .and_then(|peer| {
                            peer.listen
                                .iter()
                                .find(|l| l.scheme() == oscloud_transport_serial::SCHEME)
                        });
                    replaced
                        .iter()
                        .find(|(l, _)| match cable_end {
                            Some(end) => l == end,
                            None => crate::topology::reaches(a, l),
                        })
                        .map_or_else(|| a.clone(), |(_, new)| new.clone())
                })
                .collect();
            if let Some(entry) = nodes.get_mut(&n.name) {
                entry.1 = dials;
            }
        }
        Ok(Self { nodes })
    }
}

/// The transports of this build; `mem` shared by every node of a process.
pub fn transports(mem: &MemTransport) -> Transports {
    transports_with(mem, Arc::new(ZenohTransport::new()))
}

/// [`transports`] with `zenoh` as the zenoh transport (its sessions shared
/// with the node's pipe taps).
fn transports_with(mem: &MemTransport, zenoh: Arc<ZenohTransport>) -> Transports {
    Transports::new()
        .with(Arc::new(mem.clone()))
        .with(Arc::new(TcpTransport))
        .with(Arc::new(WsTransport::ws()))
        .with(Arc::new(WsTransport::wss()))
        .with(zenoh)
        .with(Arc::new(UnixTransport))
        .with(Arc::new(oscloud_transport_serial::SerialTransport))
}

// ------------------------------------------------------------------ status

/// What the control server answers to a status call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name in the topology.
    pub node: String,
    /// Its node id.
    pub node_id: String,
    /// The operating-system process it runs in.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_s: f64,
    /// Its servers.
    pub servers: Vec<ServerStatus>,
    /// Its links.
    pub links: Vec<LinkInfo>,
    /// Every pipe of the topology; counters for those wired here.
    pub pipes: Vec<PipeStatus>,
    /// Every node of the topology and where it can be reached.
    pub nodes: Vec<NodeAddress>,
    /// The pipe ends wired on this node, with their counters.
    #[serde(default)]
    pub ends: Vec<EndStatus>,
    /// The servers registered on this node now: name and entry id (ids
    /// are this node's: a new instance gets a new one).
    #[serde(default)]
    pub registered: Vec<(String, u64)>,
    /// How the latest servers that left this node's registry left: name,
    /// entry id, whether it failed (or its link went down).
    #[serde(default)]
    pub exits: Vec<(String, u64, bool)>,
    /// Servers of other nodes this node reaches but announces to no
    /// neighbour, their route being as long as the hop limit lets a route
    /// go: nodes further away cannot reach them.
    #[serde(default)]
    pub at_hop_limit: Vec<HopLimited>,
    /// Servers of other nodes this node cannot reach: a neighbour with a
    /// higher hop limit announced them by routes longer than this node's.
    #[serde(default)]
    pub too_far: Vec<HopLimited>,
    /// The node's hop limit (`NodeConfig::max_hops`).
    #[serde(default)]
    pub max_hops: usize,
}

/// A server of another node that a node reaches at its hop limit
/// ([`NodeStatus::at_hop_limit`]), or not at all, its routes being longer
/// than the limit ([`NodeStatus::too_far`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HopLimited {
    /// The server.
    pub name: String,
    /// The node it lives on (short id).
    pub node: String,
    /// Hops from this node to it (for [`NodeStatus::too_far`], along the
    /// refused route).
    pub hops: usize,
}

/// How many exits a node remembers for [`NodeStatus::exits`].
const EXITS_KEPT: usize = 256;

/// One pipe end wired on a node: a server's port, as the pipe sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndStatus {
    /// The server.
    pub server: String,
    /// Its port.
    pub port: String,
    /// The pipe.
    pub pipe: String,
    /// Whether frames go into the server there (a destination).
    pub input: bool,
    /// Frames through the end (into the server for a destination, out of
    /// it for a source).
    pub frames: u64,
    /// Bytes through the end.
    pub bytes: u64,
    /// Times the end was opened again on a restarted server.
    pub rewires: u64,
    /// Frames the pipe's tap dropped for slow watchers (sources only).
    pub dropped: u64,
    /// Times a frame waited for room in the end (destinations only; see
    /// [`PipeStatus::credit_stalls`]).
    #[serde(default)]
    pub credit_stalls: u64,
}

/// One server of a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Whether it runs now.
    pub running: bool,
    /// How many times it was restarted.
    pub restarts: u64,
    /// Calls, casts, errors and mailbox depth, as its registry endpoint
    /// counts them (the numbers `--metrics` exports).
    #[serde(default)]
    pub calls: u64,
    /// Casts taken.
    #[serde(default)]
    pub casts: u64,
    /// Calls answered with an error and casts that failed.
    #[serde(default)]
    pub errors: u64,
    /// Messages waiting in its mailbox.
    #[serde(default)]
    pub mailbox: u64,
    /// Mean call latency in microseconds (0 before the first call).
    #[serde(default)]
    pub mean_call_us: u64,
}

/// One link of a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LinkInfo {
    /// Local side.
    pub local: String,
    /// Remote side.
    pub remote: String,
    /// The peer's node id (short), if known.
    pub peer: String,
    /// Whether it is up.
    pub connected: bool,
    /// Times it was dialled again.
    pub reconnects: u64,
    /// Wire frames sent.
    pub frames_sent: u64,
    /// Wire frames received.
    pub frames_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Frames dropped by the wire layer.
    pub dropped: u64,
    /// The link's round-trip time in microseconds, as the node's probe
    /// measures it (`oscloud_core::LinkStatus::rtt_us`; 0 until measured).
    #[serde(default)]
    pub rtt_us: u64,
    /// Data packets the session sent again (lossy links; 0 on reliable
    /// streams, which never retransmit).
    #[serde(default)]
    pub retransmissions: u64,
    /// Times a pipe frame waited for the peer's credit on this link.
    #[serde(default)]
    pub credit_stalls: u64,
    /// Bytes waiting to be sent on the link
    /// (`oscloud_core::LinkStatus::send_queue_bytes`).
    #[serde(default)]
    pub send_queue_bytes: u64,
}

/// One pipe of the topology.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipeStatus {
    /// Its name.
    pub name: String,
    /// Its sources.
    pub from: Vec<String>,
    /// Its destinations.
    pub to: Vec<String>,
    /// The node that wires it.
    pub wired_on: String,
    /// Frames through it (0 when wired elsewhere).
    pub frames: u64,
    /// Bytes through it.
    pub bytes: u64,
    /// Frames the tap branch dropped for slow watchers.
    pub tap_dropped: u64,
    /// Times a frame waited for room at a destination: the server's port
    /// was full, or, for a server on another node, the peer's credit
    /// (its reader was behind).
    #[serde(default)]
    pub credit_stalls: u64,
    /// Whether it ended.
    pub finished: bool,
}

/// Where a node can be reached.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeAddress {
    /// The node's name.
    pub name: String,
    /// Addresses it listens on (as run).
    pub listen: Vec<String>,
}

// ------------------------------------------------------------------ taps

/// The receiving side of a pipe's tap branch: hands copies of the frames
/// to whoever watches, never waiting for them.
#[derive(Debug, Default)]
struct TapHub {
    watchers: Mutex<Vec<PipeWriter>>,
    frames: AtomicU64,
    bytes: AtomicU64,
    finished: AtomicBool,
}

impl TapHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PipeWriter>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, frame: &Bytes) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        let mut w = self.lock();
        if !w.is_empty() {
            // A watcher that is full loses this frame; one that is gone
            // is forgotten.
            w.retain(|tx| match tx.try_send(frame.clone()) {
                Ok(()) => true,
                Err((_, oscloud_core::Error::PipeFull { .. })) => true,
                Err(_) => false,
            });
        }
    }
}

struct WiredPipe {
    def: PipeDef,
    hub: Arc<TapHub>,
    split: Mutex<Option<Split>>,
    tap_index: usize,
    /// Each end, whether it is a destination, and its counters.
    ends: Vec<(End, bool, Arc<EndCounters>)>,
}

/// What a node shares with its control server.
pub(crate) struct Shared {
    topo: Arc<Topology>,
    name: String,
    node: Node,
    started: Instant,
    plan_nodes: Vec<NodeAddress>,
    wired: Mutex<Vec<Arc<WiredPipe>>>,
    exits: Arc<Mutex<std::collections::VecDeque<(String, u64, bool)>>>,
    /// The node's zenoh transport, for its pipes' zenoh taps.
    zenoh: Arc<ZenohTransport>,
}

impl Shared {
    fn wired(&self) -> Vec<Arc<WiredPipe>> {
        self.wired.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every pipe of the topology, with the counters of those wired here
    /// (`wired`).
    fn pipes(&self, wired: &[Arc<WiredPipe>]) -> Vec<PipeStatus> {
        self.topo
            .pipes
            .iter()
            .map(|p| {
                let mut st = PipeStatus {
                    name: p.name.clone(),
                    from: p.from.iter().map(End::to_string).collect(),
                    to: p.to.iter().map(End::to_string).collect(),
                    wired_on: self.topo.wiring_node(p).to_owned(),
                    ..PipeStatus::default()
                };
                if let Some(w) = wired.iter().find(|w| w.def.name == p.name) {
                    st.frames = w.hub.frames.load(Ordering::Relaxed);
                    st.bytes = w.hub.bytes.load(Ordering::Relaxed);
                    st.finished = w.hub.finished.load(Ordering::Relaxed);
                    st.credit_stalls = w
                        .ends
                        .iter()
                        .map(|(_, _, c)| c.stalls.load(Ordering::Relaxed))
                        .sum();
                    if let Some(s) = w.split.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                        st.tap_dropped = s.dropped(w.tap_index);
                        st.frames = st.frames.max(s.delivered(0));
                    }
                }
                st
            })
            .collect()
    }

    /// The pipes wired on this node, with their counters.
    pub(crate) fn wired_pipes(&self) -> Vec<PipeStatus> {
        let mut pipes = self.pipes(&self.wired());
        pipes.retain(|p| p.wired_on == self.name);
        pipes
    }

    async fn status(&self, kernel: &Kernel) -> NodeStatus {
        let stats = ServerRef::new(kernel, &supervisor_name(&self.name))
            .typed::<oscloud_actors::SupervisorRequest, oscloud_actors::SupervisorStats>()
            .call(
                &oscloud_actors::SupervisorRequest::Stats,
                Duration::from_secs(2),
            )
            .await
            .unwrap_or_default();
        let servers = self
            .topo
            .servers
            .iter()
            .filter(|s| s.node == self.name)
            .map(|s| {
                let c = stats.children.iter().find(|c| c.id == s.name);
                let counted = kernel
                    .registry()
                    .lookup_all(&s.name)
                    .iter()
                    .filter(|e| e.node() == kernel.node())
                    .find_map(|e| e.endpoint().stats())
                    .unwrap_or_default();
                ServerStatus {
                    name: s.name.clone(),
                    kind: s.kind.name.to_owned(),
                    running: c.is_some_and(|c| c.running),
                    restarts: c.map_or(0, |c| c.restarts),
                    calls: counted.calls,
                    casts: counted.casts,
                    errors: counted.errors,
                    mailbox: counted.mailbox,
                    mean_call_us: u64::try_from(
                        counted
                            .latency_sum
                            .as_micros()
                            .checked_div(u128::from(counted.calls))
                            .unwrap_or(0),
                    )
                    .unwrap_or(u64::MAX),
                }
            })
            .collect();
        let links = self
            .node
            .links()
            .into_iter()
            .map(|l| LinkInfo {
                local: l.local,
                remote: l.remote,
                peer: l.peer.map(|p| p.short()).unwrap_or_default(),
                connected: l.connected,
                reconnects: l.reconnects,
                frames_sent: l.stats.frames_sent,
                frames_received: l.stats.frames_received,
                bytes_sent: l.stats.bytes_sent,
                bytes_received: l.stats.bytes_received,
                dropped: l.stats.dropped,
                rtt_us: l.rtt_us,
                retransmissions: l.stats.retransmissions,
                credit_stalls: l.credit_stalls,
                send_queue_bytes: l.send_queue_bytes,
            })
            .collect();
        let wired = self.wired();
        let pipes = self.pipes(&wired);
        let mut ends = Vec::new();
        for w in &wired {
            let tap_dropped = w
                .split
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map_or(0, |s| s.dropped(w.tap_index));
            for (end, input, c) in &w.ends {
                ends.push(EndStatus {
                    server: end.server.clone(),
                    port: end.port.clone(),
                    pipe: w.def.name.clone(),
                    input: *input,
                    frames: c.frames.load(Ordering::Relaxed),
                    bytes: c.bytes.load(Ordering::Relaxed),
                    rewires: c.rewires.load(Ordering::Relaxed),
                    dropped: if *input { 0 } else { tap_dropped },
                    credit_stalls: c.stalls.load(Ordering::Relaxed),
                });
            }
        }
        let me = kernel.node();
        let registered = kernel
            .registry()
            .entries()
            .into_iter()
            .filter(|e| e.node() == me)
            .map(|e| (e.name().to_owned(), e.id().0))
            .collect();
        let exits = self
            .exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let at_hop_limit = self
            .node
            .routes()
            .into_iter()
            .filter(|r| r.best && r.at_hop_limit)
            .map(|r| HopLimited {
                name: r.name,
                node: r.node.short(),
                hops: r.path.len(),
            })
            .collect();
        let too_far = self
            .node
            .too_far_routes()
            .into_iter()
            .map(|r| HopLimited {
                name: r.name,
                node: r.node.short(),
                hops: r.hops,
            })
            .collect();
        NodeStatus {
            ends,
            registered,
            exits,
            at_hop_limit,
            too_far,
            max_hops: self.node.config().max_hops,
            node: self.name.clone(),
            node_id: kernel.node().to_string(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            servers,
            links,
            pipes,
            nodes: self.plan_nodes.clone(),
        }
    }
}

/// The port of a node's control server that streams its status: a
/// [`NodeStatus`] (MessagePack, as a status call answers) when opened and
/// every [`STATUS_EVERY`] after, while the pipe is read. A pipe opened on
/// it reads only, so a read-only peer (the console with
/// `--console-read-only`) gets live status without calling.
pub const STATUS_PORT: &str = ".status";

/// How often [`STATUS_PORT`] sends the status.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The control server of a node: `status` calls and taps.
///
/// - A call with any request (`"status"`) gets the [`NodeStatus`].
/// - A pipe opened on [`STATUS_PORT`] gets the status every second.
/// - A pipe opened on port `SERVER.PORT` (an end of a pipe wired on this
///   node) or on a pipe's name gets a copy of the pipe's frames from now
///   on; a slow watcher loses frames, it never slows the pipe.
struct Control(Arc<Shared>);

#[async_trait]
impl Server for Control {
    type Request = serde::de::IgnoredAny;
    type Reply = NodeStatus;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        ctx: &mut Context,
        _state: &mut (),
        _req: serde::de::IgnoredAny,
    ) -> Result<NodeStatus, ServerError> {
        Ok(self.0.status(ctx.kernel()).await)
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        _state: &mut (),
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        if port == STATUS_PORT {
            let (_reader, writer) = end.split();
            let (shared, kernel) = (self.0.clone(), ctx.kernel().clone());
            tokio::spawn(async move {
                loop {
                    let status = shared.status(&kernel).await;
                    let Ok(frame) = oscloud_actors::encode(&status) else {
                        break;
                    };
                    // Ends when the watcher closes the pipe.
                    if writer.send(frame).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(STATUS_EVERY).await;
                }
            });
            return Ok(PipeOutcome::Accepted);
        }
        let wired = self.0.wired();
        let found = wired.iter().find(|w| {
            w.def.name == port
                || w.def
                    .from
                    .iter()
                    .chain(&w.def.to)
                    .any(|e| e.to_string() == port)
        });
        match found {
            Some(w) => {
                let (_reader, writer) = end.split();
                if !w.hub.finished.load(Ordering::SeqCst) {
                    w.hub.lock().push(writer);
                }
                Ok(PipeOutcome::Accepted)
            }
            None => Ok(PipeOutcome::NoSuchPort),
        }
    }
}

// ------------------------------------------------------------------ running

/// One node of a topology, ready to run.
#[derive(Debug, Clone)]
pub struct NodeRun {
    /// The topology.
    pub topo: Arc<Topology>,
    /// Which node.
    pub name: String,
    /// Effective addresses of every node.
    pub plan: Plan,
    /// Extra listen addresses (for inspection) per node.
    pub expose: HashMap<String, Address>,
    /// The in-process transport shared by the nodes of this process.
    pub mem: MemTransport,
    /// A loopback WebSocket address this node also listens on, for the
    /// web console (`run --console`): set on the console node only.
    pub console: Option<Address>,
    /// The console's identity, read-only in this node's access policy
    /// (`run --console-read-only`; console node only).
    pub console_read_only: Option<NodeId>,
}

/// A node that is up.
pub struct RunningNode {
    /// The node's name.
    pub name: String,
    node: Node,
    shared: Arc<Shared>,
    tree: SupervisorHandle,
    control: ServerHandle,
    pipes: Vec<tokio::task::JoinHandle<Result<(), Error>>>,
    sinks: Vec<String>,
    exit_watch: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("name", &self.name)
            .finish()
    }
}

impl NodeRun {
    /// Start the node: servers, control server, links, pipes.
    pub async fn start(self) -> Result<RunningNode, Error> {
        let topo = self.topo.clone();
        let def = topo
            .node(&self.name)
            .ok_or_else(|| Error::Usage(format!("the topology has no node {:?}", self.name)))?
            .clone();
        let (listen, dial) = self.plan.nodes.get(&self.name).cloned().unwrap_or_default();
        let kernel = Kernel::new();
        let zenoh = Arc::new(ZenohTransport::new());
        let node = Node::with_config(
            kernel.clone(),
            transports_with(&self.mem, zenoh.clone()),
            def.config.clone(),
        );
        if let Some(id) = self.console_read_only {
            node.access_policy().set_text(&format!("readonly {id}\n"))?;
            info!(node = %self.name, "the console ({}) is read-only here", id.short());
        }

        // Servers, under the node's supervisor, in file order.
        let base = topo.base_dir();
        let mut spec = SupervisorSpec::new(supervisor_name(&self.name))
            .strategy(def.strategy)
            .intensity(def.max_restarts, def.period);
        let mut sinks = Vec::new();
        for s in topo.servers.iter().filter(|s| s.node == self.name) {
            let cx = BuildContext {
                base: &base,
                in_pipes: topo.in_pipes(&s.name),
            };
            let child: ChildSpec = s
                .kind
                .child_spec(s, &cx)
                .map_err(|e| Error::Start(format!("server {:?}: {e}", s.name)))?;
            spec = spec.child(child);
            let fed = topo
                .pipes
                .iter()
                .any(|p| p.to.iter().any(|e| e.server == s.name));
            if s.kind.finishes && fed {
                sinks.push(s.name.clone());
            }
        }
        let tree = Supervisor::start(&kernel, spec).await?;

        let mut plan_nodes: Vec<NodeAddress> = topo
            .nodes
            .iter()
            .map(|n| {
                let mut listen: Vec<String> = self
                    .plan
                    .nodes
                    .get(&n.name)
                    .map(|(l, _)| l.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                if let Some(x) = self.expose.get(&n.name) {
                    listen.insert(0, x.to_string());
                }
                NodeAddress {
                    name: n.name.clone(),
                    listen,
                }
            })
            .collect();
        plan_nodes.retain(|n| !n.name.is_empty());
        let shared = Arc::new(Shared {
            topo: topo.clone(),
            name: self.name.clone(),
            node: node.clone(),
            started: Instant::now(),
            plan_nodes,
            wired: Mutex::new(Vec::new()),
            exits: Arc::default(),
            zenoh,
        });
        // Remember how this node's servers leave, for the nodes that wire
        // their pipes (see `Rewire::restarted`).
        let mut watch = kernel.registry().watch();
        let exits = shared.exits.clone();
        let me = kernel.node();
        let exit_watch = tokio::spawn(async move {
            while let Some(event) = watch.next().await {
                if let RegistryEvent::Removed { entry, reason } = event
                    && entry.node() == me
                {
                    let mut q = exits.lock().unwrap_or_else(|e| e.into_inner());
                    if q.len() >= EXITS_KEPT {
                        q.pop_front();
                    }
                    q.push_back((
                        entry.name().to_owned(),
                        entry.id().0,
                        !matches!(reason, ExitReason::Normal),
                    ));
                }
            }
        });
        let control = oscloud_actors::start(
            &kernel,
            control_name(&self.name).as_str(),
            Control(shared.clone()),
        )
        .await?;

        // Links.
        if let Some(x) = self.expose.get(&self.name) {
            node.listen(x).await?;
        }
        if let Some(x) = &self.console {
            let at = node.listen(x).await?;
            info!(node = %self.name, "console link on {at}");
        }
        for a in &listen {
            let at = node.listen(a).await?;
            info!(node = %self.name, "listening on {at}");
        }
        for a in &dial {
            dial_until_up(&node, a).await?;
            info!(node = %self.name, "linked over {a}");
        }

        // Pipes wired here.
        let mut pipes = Vec::new();
        for p in topo
            .pipes
            .iter()
            .filter(|p| topo.wiring_node(p) == self.name)
        {
            let kernel = kernel.clone();
            let p = p.clone();
            let shared = shared.clone();
            pipes.push(tokio::spawn(async move { wire(&kernel, p, &shared).await }));
        }
        Ok(RunningNode {
            name: self.name,
            node,
            shared,
            tree,
            control,
            pipes,
            sinks,
            exit_watch,
        })
    }
}

/// Dial `addr`, trying again while the peer is not up yet.
async fn dial_until_up(node: &Node, addr: &Address) -> Result<(), Error> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match node.connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                debug!("dial {addr}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long a pipe end that stopped waits for its server's node to say
/// how the server left.
pub const EXIT_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Wait until `server` is in this kernel's registry (local or linked)
/// under an entry other than `dead`; give up at `deadline` (never if
/// `None`).
async fn wait_for_entry(
    kernel: &Kernel,
    server: &str,
    dead: Option<EntryId>,
    deadline: Option<Instant>,
) -> Result<Entry, Error> {
    loop {
        match kernel.registry().lookup(server) {
            Ok(e) if Some(e.id()) != dead => return Ok(e),
            _ => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let what = if dead.is_some() {
                "did not come back"
            } else {
                "did not appear"
            };
            return Err(Error::Start(format!(
                "server {server:?} {what} within {START_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counters of one pipe end wired on this node.
#[derive(Debug, Default)]
struct EndCounters {
    frames: AtomicU64,
    bytes: AtomicU64,
    rewires: AtomicU64,
    /// Times a frame found the end full and waited (destinations).
    stalls: AtomicU64,
}

impl EndCounters {
    fn count(&self, frame: &Bytes) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
    }
}

/// One end of a pipe kept wired to whichever instance of its server runs.
struct Rewire {
    kernel: Kernel,
    end: End,
    restart: Restart,
    counters: Arc<EndCounters>,
    /// The control server of the server's node.
    control: String,
    /// The instance that died (its entry in this registry), once one did.
    dead: Option<EntryId>,
    /// The instance the end is open on: its entry id on its own node.
    instance: Option<u64>,
}

impl Rewire {
    fn new(
        kernel: &Kernel,
        end: &End,
        server: Option<&crate::topology::ServerDef>,
        counters: Arc<EndCounters>,
    ) -> Self {
        Self {
            kernel: kernel.clone(),
            end: end.clone(),
            restart: server.map_or(Restart::Transient, |s| s.restart),
            counters,
            control: control_name(server.map_or("", |s| s.node.as_str())),
            dead: None,
            instance: None,
        }
    }

    /// The status of the server's node (whose registry is the authority on
    /// its servers).
    async fn node_status(&self) -> Result<NodeStatus, Error> {
        Ok(ServerRef::new(&self.kernel, &self.control)
            .typed::<&str, NodeStatus>()
            .call(&"status", EXIT_QUERY_TIMEOUT)
            .await?)
    }

    /// Open the end on the current instance of its server (waiting for a
    /// new one after a crash).
    async fn open(&mut self) -> Result<(Entry, PipeEnd), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let entry =
                wait_for_entry(&self.kernel, &self.end.server, self.dead, Some(deadline)).await?;
            match ServerRef::new(&self.kernel, &self.end.server)
                .open_pipe(&self.end.port)
                .await
            {
                Ok(end) => {
                    wait_for_entry(&self.kernel, &self.control, None, Some(deadline)).await?;
                    self.instance = self.node_status().await.ok().and_then(|st| {
                        st.registered
                            .iter()
                            .find(|(n, _)| *n == self.end.server)
                            .map(|(_, id)| *id)
                    });
                    return Ok((entry, end));
                }
                // It died between the look-up and the open: the next one.
                Err(_)
                    if self
                        .kernel
                        .registry()
                        .lookup(&self.end.server)
                        .map_or(true, |e| e.id() != entry.id())
                        && Instant::now() < deadline =>
                {
                    self.dead = Some(entry.id());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The end stopped (its stream ended or its reader went away): whether
    /// that is because its server went away and will be restarted, in which
    /// case the end is to be opened again on the new instance.
    ///
    /// The server's node is asked: a server that leaves its registry does
    /// so before its pipes end, so by the time this node has seen the end
    /// stop and asks, the answer is settled. Still registered as the same
    /// instance: the stream just ended. Gone: restarted if it failed (or,
    /// `permanent`, in any case). No answer (its node is gone): waited for.
    async fn restarted(&mut self, entry: &Entry) -> bool {
        if self.restart == Restart::Temporary {
            return false;
        }
        let Some(instance) = self.instance else {
            return false;
        };
        let deadline = Instant::now() + EXIT_QUERY_TIMEOUT;
        let again = loop {
            let st = match self.node_status().await {
                Ok(st) => st,
                Err(e) => {
                    debug!(end = %self.end, "no status from the server's node: {e}");
                    break true;
                }
            };
            let name = &self.end.server;
            if st
                .registered
                .iter()
                .any(|(n, id)| n == name && *id == instance)
            {
                return false;
            }
            if let Some((_, _, failed)) = st
                .exits
                .iter()
                .find(|(n, id, _)| n == name && *id == instance)
            {
                break *failed || self.restart == Restart::Permanent;
            }
            // Gone, and its node has not written down how yet.
            if Instant::now() >= deadline {
                break true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if again {
            info!(end = %self.end, "server went away: wiring the pipe end to its next instance");
            self.dead = Some(entry.id());
            self.counters.rewires.fetch_add(1, Ordering::Relaxed);
        }
        again
    }

    /// A source end: its frames into `to`, through restarts, until its
    /// stream really ends (or nobody reads `to`).
    async fn feed(mut self, to: PipeWriter) -> Result<(), Error> {
        loop {
            let (entry, end) = self.open().await?;
            let (mut reader, writer) = end.split();
            drop(writer); // nothing goes back into a source
            while let Some(frame) = reader.recv().await {
                self.counters.count(&frame);
                match to.send(frame).await {
                    Ok(()) => {}
                    Err(e @ oscloud_core::Error::FrameTooLarge { .. }) => return Err(e.into()),
                    Err(_) => return Ok(()),
                }
            }
            if !self.restarted(&entry).await {
                return Ok(());
            }
        }
    }

    /// A destination end: the frames of `from` into it, through restarts
    /// (the frame the dead instance refused goes to the next one), until
    /// `from` ends or the server is gone for good.
    async fn deliver(mut self, mut from: PipeReader) -> Result<(), Error> {
        let mut pending: Option<Bytes> = None;
        loop {
            let (entry, end) = self.open().await?;
            let (reader, writer) = end.split();
            drop(reader); // nothing comes back from a destination
            loop {
                let frame = match pending.take() {
                    Some(f) => f,
                    // A server that goes away while no frame is due is
                    // noticed at once.
                    None => tokio::select! {
                        f = from.recv() => match f {
                            Some(f) => f,
                            None => return Ok(()),
                        },
                        () = writer.closed() => break,
                    },
                };
                // Tried first, so a frame that has to wait for room is
                // counted as a stall.
                let sent = match writer.try_send(frame.clone()) {
                    Err((f, oscloud_core::Error::PipeFull { .. })) => {
                        self.counters.stalls.fetch_add(1, Ordering::Relaxed);
                        writer.send(f).await
                    }
                    Err((_, e)) => Err(e),
                    Ok(()) => Ok(()),
                };
                match sent {
                    Ok(()) => {}
                    // No instance of the server could take it.
                    Err(e @ oscloud_core::Error::FrameTooLarge { .. }) => return Err(e.into()),
                    Err(_) => {
                        pending = Some(frame);
                        break;
                    }
                }
                self.counters.count(&frame);
            }
            drop(writer);
            if !self.restarted(&entry).await {
                return Ok(());
            }
        }
    }
}

/// Open every end of `p` and join them: merge the sources, split into the
/// destinations and the tap branch. Every end is kept wired to the
/// current instance of its server: when a server fails and its supervisor
/// restarts it, its ends are opened again on the new instance. Returns
/// when the pipe has ended.
async fn wire(kernel: &Kernel, p: PipeDef, shared: &Shared) -> Result<(), Error> {
    let mut tasks: tokio::task::JoinSet<Result<(), Error>> = tokio::task::JoinSet::new();
    let mut ends = Vec::new();
    let mut sources = Vec::new();
    for e in &p.from {
        let counters = Arc::<EndCounters>::default();
        ends.push((e.clone(), false, counters.clone()));
        let (w, r) = kernel.pipe();
        sources.push(r);
        tasks.spawn(Rewire::new(kernel, e, shared.topo.server(&e.server), counters).feed(w));
    }
    let mut branches = Vec::new();
    for e in &p.to {
        let counters = Arc::<EndCounters>::default();
        ends.push((e.clone(), true, counters.clone()));
        let (w, r) = kernel.pipe();
        branches.push(Branch::block(w));
        tasks.spawn(Rewire::new(kernel, e, shared.topo.server(&e.server), counters).deliver(r));
    }
    let source = if sources.len() == 1 {
        sources
            .pop()
            .ok_or_else(|| Error::Start("no source".into()))?
    } else {
        let (w, r) = kernel.pipe();
        let _merge = merge(sources, w);
        r
    };
    let (tap_w, mut tap_r) = kernel.pipe();
    let tap_index = branches.len();
    branches.push(Branch::drop_oldest(tap_w, TAP_QUEUE));
    // Published on zenoh when the topology asks; never holds the pipe up
    // (a drop-oldest branch), and a tap that cannot start is only logged.
    let zenoh_tap = p.zenoh_tap.clone().map(|at| {
        let (w, r) = kernel.pipe();
        branches.push(Branch::drop_oldest(w, TAP_QUEUE));
        let (zenoh, name) = (shared.zenoh.clone(), p.name.clone());
        tokio::spawn(async move {
            match zenoh.tap(&at, &name, r).await {
                Ok(tap) => {
                    info!(pipe = %name, key = %tap.key(), "pipe tapped on zenoh");
                    if let Err(e) = tap.finished().await {
                        warn!(pipe = %name, "the zenoh tap stopped: {e}");
                    }
                }
                Err(e) => warn!(pipe = %name, "no zenoh tap: {e}"),
            }
        })
    });
    let hub = Arc::new(TapHub::default());
    let wired = Arc::new(WiredPipe {
        def: p.clone(),
        hub: hub.clone(),
        split: Mutex::new(Some(split(source, branches))),
        tap_index,
        ends,
    });
    shared
        .wired
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(wired.clone());
    debug!(pipe = %p.name, "wired");
    // The tap branch ends once the split has handed every frame to every
    // blocking branch: that is the end of the pipe's sources.
    let mut failed = None;
    loop {
        tokio::select! {
            frame = tap_r.recv() => match frame {
                Some(frame) => hub.publish(&frame),
                None => break,
            },
            Some(done) = tasks.join_next(), if failed.is_none() => {
                if let Ok(Err(e)) = done {
                    failed = Some(e);
                    break;
                }
            }
        }
    }
    if let Some(e) = failed {
        tasks.abort_all();
        return Err(e);
    }
    hub.finished.store(true, Ordering::SeqCst);
    hub.lock().clear();
    let s = wired.split.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(s) = s {
        // Keep the final counters readable.
        let frames = s.delivered(0);
        hub.frames.fetch_max(frames, Ordering::Relaxed);
        if let Err(e) = s.finished().await {
            warn!(pipe = %p.name, "pipe ended abnormally: {e}");
        }
    }
    // The destinations get what was queued for them.
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            return Err(e);
        }
    }
    if let Some(mut tap) = zenoh_tap {
        // It has every frame once the split ended: let it publish them
        // (not waiting forever for a router that is not there).
        if tokio::time::timeout(ZENOH_TAP_LINGER, &mut tap)
            .await
            .is_err()
        {
            warn!(pipe = %p.name, "the zenoh tap did not finish within {ZENOH_TAP_LINGER:?}");
            tap.abort();
        }
    }
    info!(pipe = %p.name, frames = hub.frames.load(Ordering::Relaxed), "pipe ended");
    Ok(())
}

impl RunningNode {
    /// The node, and what its control server reads (for `--metrics`).
    pub(crate) fn observed(&self) -> (&Node, Arc<Shared>) {
        (&self.node, self.shared.clone())
    }

    /// Whether the node's part of the topology is done: every pipe it
    /// wires has ended and every sink it runs that is fed by a pipe has
    /// stopped. A node with neither is never done by itself.
    pub fn is_done(&self) -> bool {
        if self.pipes.is_empty() && self.sinks.is_empty() {
            return false;
        }
        let stats = self.tree.stats();
        self.pipes.iter().all(|p| p.is_finished())
            && self.sinks.iter().all(|s| {
                stats
                    .children
                    .iter()
                    .find(|c| &c.id == s)
                    .is_none_or(|c| !c.running)
            })
    }

    /// Whether the node is done or has nothing that could finish.
    pub fn can_finish(&self) -> bool {
        !(self.pipes.is_empty() && self.sinks.is_empty())
    }

    /// A pipe that failed to be wired, if any (the error).
    pub async fn failed_pipe(&mut self) -> Option<Error> {
        let mut i = 0;
        while i < self.pipes.len() {
            if self.pipes[i].is_finished() {
                let h = self.pipes.remove(i);
                match h.await {
                    Ok(Ok(())) => {
                        // Keep a finished marker.
                        self.pipes.insert(i, tokio::spawn(async { Ok(()) }));
                        i += 1;
                    }
                    Ok(Err(e)) => return Some(e),
                    Err(e) => return Some(Error::Start(format!("pipe task: {e}"))),
                }
            } else {
                i += 1;
            }
        }
        None
    }

    /// The supervisor's failure, if it has failed (restart intensity
    /// exceeded).
    pub async fn supervisor_failed(&self) -> Option<Error> {
        match tokio::time::timeout(Duration::from_millis(1), self.tree.wait()).await {
            Ok(Err(e)) => Some(e.into()),
            _ => None,
        }
    }

    /// Stop the servers (reverse order) and the links.
    pub async fn stop(self) {
        for p in &self.pipes {
            p.abort();
        }
        self.exit_watch.abort();
        self.tree.stop().await;
        self.control.stop().await;
        self.node.shutdown();
    }
}

/// Resolves at the first SIGINT or SIGTERM.
pub async fn stop_signal() -> Result<&'static str, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}

/// Run `nodes` in this process until every one that can finish is done, a
/// server tree fails, or a stop signal; then stop them all. A topology with
/// no pipes has nothing that can finish: its nodes run until the stop
/// signal. With `keep_running` they run until the stop signal even when
/// done, and `done_file` (if any) is written once they are done (a node
/// with nothing to finish is done at once when other nodes of the topology
/// have pipes, and never otherwise).
pub async fn run_nodes(
    runs: Vec<NodeRun>,
    keep_running: bool,
    done_file: Option<&Path>,
    metrics: Option<std::net::SocketAddr>,
    mut stop: watch::Receiver<bool>,
) -> Result<Outcome, Error> {
    // Every pipe is wired by one node, so the topology can finish, here
    // or in other processes, exactly when it has a pipe.
    let topology_can_finish = runs.first().is_some_and(|r| !r.topo.pipes.is_empty());
    let mut nodes = Vec::new();
    for r in runs {
        let name = r.name.clone();
        match r.start().await {
            Ok(n) => nodes.push(n),
            Err(e) => {
                for n in nodes {
                    n.stop().await;
                }
                return Err(Error::Start(format!("node {name:?}: {e}")));
            }
        }
    }
    let _metrics = match metrics {
        Some(at) => match crate::metrics::serve(at, &nodes).await {
            Ok(server) => Some(server),
            Err(e) => {
                for n in nodes.into_iter().rev() {
                    n.stop().await;
                }
                return Err(e);
            }
        },
        None => None,
    };
    let mut reported = false;
    let outcome = loop {
        let mut failure = None;
        for n in &mut nodes {
            if let Some(e) = n.failed_pipe().await {
                failure = Some(Error::Start(format!("node {:?}: {e}", n.name)));
                break;
            }
            if let Some(e) = n.supervisor_failed().await {
                failure = Some(Error::Start(format!("node {:?}: {e}", n.name)));
                break;
            }
        }
        if let Some(e) = failure {
            for n in nodes.into_iter().rev() {
                n.stop().await;
            }
            return Err(e);
        }
        let done = topology_can_finish
            && nodes
                .iter()
                .filter(|n| n.can_finish())
                .all(RunningNode::is_done);
        if done && !reported {
            reported = true;
            if let Some(f) = done_file {
                std::fs::write(f, b"done\n")?;
            }
            if !keep_running {
                break Outcome::Finished;
            }
        }
        tokio::select! {
            _ = stop.changed() => break Outcome::Stopped,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    for n in nodes.into_iter().rev() {
        n.stop().await;
    }
    Ok(outcome)
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every pipe and sink finished.
    Finished,
    /// A stop signal came.
    Stopped,
}
