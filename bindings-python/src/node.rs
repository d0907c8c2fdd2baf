//! Nodes, server references, server handles and registry watches.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use oscloud_actors::{
    ChildSpec, Restart, ServerOptions, ServerRef, Strategy, Supervisor, SupervisorHandle,
    SupervisorSpec,
};
use oscloud_core::address::Address;
use oscloud_core::endpoint::LATENCY_BUCKETS_NS;
use oscloud_core::identity::{AllowList, NodeKey, PublicKey};
use oscloud_core::trace::{with_trace, with_trace_sync};
use oscloud_core::transport::{MemTransport, Transports};
use oscloud_core::wire::{CloseReason, RttHistogram, SecureConfig};
use oscloud_core::{
    Capabilities, Entry, Error as CoreError, Kernel, LinkStatus, Node, NodeConfig, PortDirection,
    RegistryEvent, Route, TraceContext, Watch,
};
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use oscloud_transport_ws::WsTransport;
use oscloud_transport_zenoh::ZenohTransport;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;

use crate::Error;
use crate::pipe::PyPipe;
use crate::runtime::{self, future_into_py};
use crate::server::{PyServer, Spec};
use crate::value::{decode_py, encode_py};

/// The transports of every node made by this module. `mem://` links join
/// nodes of this one process.
fn transports() -> Transports {
    static MEM: OnceLock<MemTransport> = OnceLock::new();
    let mem = MEM.get_or_init(MemTransport::new).clone();
    Transports::new()
        .with(Arc::new(TcpTransport))
        .with(Arc::new(WsTransport::ws()))
        .with(Arc::new(WsTransport::wss()))
        .with(Arc::new(ZenohTransport::new()))
        .with(Arc::new(UnixTransport))
        .with(Arc::new(mem))
}

fn parse(addr: &str) -> Result<Address, Error> {
    Ok(addr.parse::<Address>()?)
}

fn duration(seconds: f64, what: &str) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        Error::Usage(format!(
            "{what} must be a finite number of seconds >= 0, not {seconds}"
        ))
    })
}

#[derive(Debug)]
struct NodeInner {
    node: Node,
    locals: Arc<TaskLocals>,
    addresses: Mutex<Vec<String>>,
    servers: Mutex<Vec<Arc<SupervisorHandle>>>,
}

/// A node: a kernel with links to other nodes (`oscloud.Node`).
#[pyclass(name = "Node", module = "oscloud._native", frozen)]
#[derive(Debug, Clone)]
pub(crate) struct PyNode {
    inner: Arc<NodeInner>,
}

impl PyNode {
    pub(crate) fn kernel(&self) -> &Kernel {
        self.inner.node.kernel()
    }

    /// Keep a supervisor started on this node, to stop it with the node.
    pub(crate) fn keep(&self, handle: Arc<SupervisorHandle>) {
        self.inner
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    fn allow_list(&self) -> Result<&AllowList, Error> {
        self.inner
            .node
            .security()
            .map(|s| &s.allow)
            .ok_or_else(|| Error::Usage("this node has no key: start it with key=...".into()))
    }
}

fn public_key(text: &str) -> Result<PublicKey, Error> {
    Ok(text.parse::<PublicKey>()?)
}

/// The security settings `Node.start` was given, checked.
struct Security {
    key: Option<String>,
    allow: Vec<String>,
    allow_file: Option<String>,
    psk: Option<Vec<u8>>,
    open: bool,
}

impl Security {
    fn build(self) -> Result<Option<SecureConfig>, Error> {
        let Some(path) = self.key else {
            if !self.allow.is_empty()
                || self.allow_file.is_some()
                || self.psk.is_some()
                || self.open
            {
                return Err(Error::Usage(
                    "allow, allow_file, psk and open need a node key (key=...)".into(),
                ));
            }
            return Ok(None);
        };
        let key = NodeKey::load_or_generate(&path)?;
        let list = match &self.allow_file {
            Some(file) => AllowList::load(file)?,
            None => AllowList::new(),
        };
        for k in &self.allow {
            list.insert(public_key(k)?);
        }
        if self.open {
            list.set_open(true);
        }
        let mut config = SecureConfig::new(key, list);
        if let Some(psk) = self.psk {
            let psk: [u8; 32] = psk.try_into().map_err(|p: Vec<u8>| {
                Error::Usage(format!("psk must be 32 bytes, not {}", p.len()))
            })?;
            config = config.with_psk(psk);
        }
        Ok(Some(config))
    }
}

/// Make the key file at `path` if it does not exist (mode 0600), and
/// return its public key (64 hex digits): what peers put in their
/// allow-lists.
#[pyfunction]
pub(crate) fn keygen(path: &str) -> PyResult<String> {
    let key = NodeKey::load_or_generate(path).map_err(Error::from)?;
    Ok(key.public().to_string())
}

/// Every node setting `Node.start(config=...)` accepts: `(key, kind,
/// help)`, kind being `duration`, `bytes` or `count`.
#[pyfunction]
pub(crate) fn node_settings() -> Vec<(&'static str, &'static str, &'static str)> {
    oscloud_core::node::SETTINGS
        .iter()
        .map(|s| {
            let kind = match s.kind {
                oscloud_core::node::SettingKind::Duration => "duration",
                oscloud_core::node::SettingKind::Bytes => "bytes",
                oscloud_core::node::SettingKind::Count => "count",
            };
            (s.key, kind, s.help)
        })
        .collect()
}

async fn listen(node: &Node, addr: Address) -> Result<String, Error> {
    Ok(node.listen(&addr).await?.to_string())
}

#[pymethods]
impl PyNode {
    /// Start a node, listen at every address of `listen`, dial every
    /// address of `connect` (waiting for each handshake).
    ///
    /// With `key` (a key file, made if missing), every link is encrypted
    /// and authenticated, and only peers whose public key is in `allow`
    /// (or the allow-list file `allow_file`) are admitted; `psk` (32
    /// bytes) is also required of peers if given; `open` admits every
    /// peer (development only). `config` holds node settings as
    /// `(key, value)` text pairs (`NodeConfig::set`).
    #[staticmethod]
    #[pyo3(signature = (listen = Vec::new(), connect = Vec::new(), key = None, allow = Vec::new(), allow_file = None, psk = None, open = false, config = Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        py: Python<'_>,
        listen: Vec<String>,
        connect: Vec<String>,
        key: Option<String>,
        allow: Vec<String>,
        allow_file: Option<String>,
        psk: Option<Vec<u8>>,
        open: bool,
        config: Vec<(String, String)>,
    ) -> PyResult<Bound<'_, PyAny>> {
        let mut node_config = NodeConfig::default();
        for (k, v) in &config {
            node_config.set(k, v).map_err(Error::from)?;
        }
        node_config.validate().map_err(Error::from)?;
        let security = Security {
            key,
            allow,
            allow_file,
            psk,
            open,
        }
        .build()?;
        let listen = listen
            .iter()
            .map(|a| parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let connect = connect
            .iter()
            .map(|a| parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let locals = Arc::new(runtime::current_locals(py)?);
        future_into_py(py, async move {
            let node = match security {
                Some(sec) => Node::with_security(
                    Kernel::with_node(sec.key.node_id()),
                    transports(),
                    node_config,
                    sec,
                )
                .map_err(Error::from)?,
                None => Node::with_config(Kernel::new(), transports(), node_config),
            };
            let mut bound = Vec::new();
            for addr in listen {
                bound.push(self::listen(&node, addr).await?);
            }
            for addr in connect {
                node.connect(&addr).await.map_err(Error::from)?;
            }
            Ok(PyNode {
                inner: Arc::new(NodeInner {
                    node,
                    locals,
                    addresses: Mutex::new(bound),
                    servers: Mutex::new(Vec::new()),
                }),
            })
        })
    }

    /// This node's id (32 hex digits).
    #[getter]
    fn id(&self) -> String {
        self.kernel().node().to_string()
    }

    /// This node's public key (64 hex digits), if it was started with a
    /// key.
    #[getter]
    fn public_key(&self) -> Option<String> {
        self.inner
            .node
            .security()
            .map(|s| s.key.public().to_string())
    }

    /// Admit the peer with this public key from now on.
    fn allow(&self, key: &str) -> PyResult<()> {
        self.allow_list()?.insert(public_key(key)?);
        Ok(())
    }

    /// Stop admitting the peer with this public key: new handshakes are
    /// refused and its live links are dropped.
    fn revoke(&self, key: &str) -> PyResult<()> {
        self.allow_list()?.remove(&public_key(key)?);
        Ok(())
    }

    /// Read the allow-list file again (peers no longer on it lose their
    /// links).
    fn reload_allow_list(&self) -> PyResult<()> {
        self.allow_list()?.reload().map_err(Error::from)?;
        Ok(())
    }

    /// The public keys admitted now.
    fn allowed_keys(&self) -> PyResult<Vec<String>> {
        Ok(self
            .allow_list()?
            .keys()
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    /// Every link of this node now, with its counters.
    fn links(&self) -> Vec<PyLink> {
        self.inner
            .node
            .links()
            .into_iter()
            .map(PyLink::from)
            .collect()
    }

    /// Every route this node knows to the servers of other nodes (its
    /// neighbours' own servers included, as one-hop routes), sorted by
    /// server name, the route in use first.
    fn routes(&self) -> Vec<PyRoute> {
        self.inner
            .node
            .routes()
            .into_iter()
            .map(PyRoute::from)
            .collect()
    }

    /// Close the link `id` (a `Link.id`) for good: its session ends, the
    /// routes through it are withdrawn, and a link this node dialled is not
    /// dialled again. False if there is no such link.
    fn close_link(&self, id: u64) -> bool {
        self.inner.node.close_link(id)
    }

    /// The addresses this node listens at (as bound: a port `0` is
    /// replaced by the one chosen).
    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.inner
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Listen at one more address; returns the address bound.
    fn listen<'py>(&self, py: Python<'py>, address: &str) -> PyResult<Bound<'py, PyAny>> {
        let addr = parse(address)?;
        let inner = self.inner.clone();
        future_into_py(py, async move {
            let bound = listen(&inner.node, addr).await?;
            inner
                .addresses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(bound.clone());
            Ok(bound)
        })
    }

    /// Dial `address` and keep the link up; returns the peer's node id.
    fn connect<'py>(&self, py: Python<'py>, address: &str) -> PyResult<Bound<'py, PyAny>> {
        let addr = parse(address)?;
        let node = self.inner.node.clone();
        future_into_py(py, async move {
            let peer = node.connect(&addr).await.map_err(Error::from)?;
            Ok(peer.to_string())
        })
    }

    /// A reference to the server `name`; with `wait`, wait up to that many
    /// seconds for it to appear (for example on a node just linked).
    #[pyo3(signature = (name, wait = None))]
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        name: String,
        wait: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kernel = self.kernel().clone();
        let wait = wait.map(|w| duration(w, "wait")).transpose()?;
        future_into_py(py, async move {
            let registry = kernel.registry();
            if let Some(wait) = wait {
                let mut watch = registry.watch();
                let found = tokio::time::timeout(wait, async {
                    while let Some(ev) = watch.next().await {
                        if matches!(&ev, RegistryEvent::Added(e) if e.name() == name) {
                            return;
                        }
                    }
                })
                .await;
                if found.is_err() {
                    return Err(Error::Core(CoreError::NotFound(name)).into());
                }
            }
            let raw = ServerRef::lookup(&kernel, &name).map_err(Error::from)?;
            Ok(PyServerRef { raw })
        })
    }

    /// A reference to `name` without checking that it exists now (it is
    /// resolved on every use).
    fn server_ref(&self, name: &str) -> PyServerRef {
        PyServerRef {
            raw: ServerRef::new(self.kernel(), name),
        }
    }

    /// Start a Python server under its own supervisor. Used by
    /// `Node.server`; returns once it is registered.
    #[pyo3(signature = (name, target, is_class, accepts, produces, group, restart, max_restarts, period, with_caller = false, ports = Vec::new(), with_trace = false))]
    #[allow(clippy::too_many_arguments)]
    fn _serve(
        &self,
        py: Python<'_>,
        name: String,
        target: Py<PyAny>,
        is_class: bool,
        accepts: Vec<String>,
        produces: Vec<String>,
        group: bool,
        restart: &str,
        max_restarts: u32,
        period: f64,
        with_caller: bool,
        ports: Vec<(String, String)>,
        with_trace: bool,
    ) -> PyResult<PyServerHandle> {
        let restart = match restart {
            "permanent" => Restart::Permanent,
            "transient" => Restart::Transient,
            "temporary" => Restart::Temporary,
            other => {
                return Err(Error::Usage(format!(
                    "restart must be \"permanent\", \"transient\" or \"temporary\", not {other:?}"
                ))
                .into());
            }
        };
        let period = duration(period, "period")?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Usage(
                "Node.server cannot be used from inside a server's __init__".into(),
            )
            .into());
        }
        let mut caps = Capabilities::new();
        for a in accepts {
            caps = caps.accepts(a);
        }
        for p in produces {
            caps = caps.produces(p);
        }
        for (port, dir) in ports {
            let dir = PortDirection::parse(&dir).ok_or_else(|| {
                Error::Usage(format!(
                    "port {port:?}: direction must be \"in\", \"out\" or \"both\", not {dir:?}"
                ))
            })?;
            caps = caps.port(port, dir);
        }
        let mut opts = ServerOptions::new(name.clone()).capabilities(caps);
        if group {
            opts = opts.group();
        }
        let server = PyServer(Arc::new(Spec {
            name: name.clone(),
            target,
            is_class,
            with_caller,
            with_trace,
            locals: self.inner.locals.clone(),
        }));
        let spec = SupervisorSpec::new(format!("python-supervisor:{name}"))
            .unregistered()
            .strategy(Strategy::OneForOne)
            .intensity(max_restarts, period)
            .child(ChildSpec::server(opts, move || server.clone()).restart(restart));
        let kernel = self.kernel().clone();
        // Starting takes microseconds (plus a class's __init__, which runs
        // on a runtime thread): wait for it without the GIL.
        let started = runtime::block_on(py, Supervisor::start(&kernel, spec))?;
        let handle = Arc::new(started.map_err(Error::from)?);
        self.inner
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle.clone());
        Ok(PyServerHandle { name, handle })
    }

    /// Every server in the registry now (local and on linked nodes),
    /// optionally only names starting with `prefix`.
    #[pyo3(signature = (prefix = None))]
    fn servers(&self, prefix: Option<&str>) -> Vec<PyEntry> {
        let local = self.kernel().node();
        self.kernel()
            .registry()
            .entries()
            .into_iter()
            .filter(|e| prefix.is_none_or(|p| e.name().starts_with(p)))
            .map(|e| PyEntry::new(&e, local))
            .collect()
    }

    /// A stream of registry changes: first one `added` event per server
    /// present now, then every change in order.
    fn watch(&self) -> PyWatch {
        PyWatch {
            watch: Arc::new(tokio::sync::Mutex::new(self.kernel().registry().watch())),
            local: self.kernel().node(),
        }
    }

    /// The ids of the nodes linked now.
    fn peers(&self) -> Vec<String> {
        self.inner
            .node
            .links()
            .into_iter()
            .filter(|l| l.connected)
            .filter_map(|l| l.peer.map(|p| p.to_string()))
            .collect()
    }

    /// Stop every server started here (each under its supervisor) and drop
    /// every link.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        future_into_py(py, async move {
            let servers: Vec<_> = inner
                .servers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
                .collect();
            for s in servers.iter().rev() {
                s.stop().await;
            }
            inner.node.shutdown();
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!("<oscloud.Node {}>", self.kernel().node().short())
    }
}

/// A `traceparent` argument as a context (`UsageError` if it is not one).
fn parse_trace(traceparent: Option<&str>) -> PyResult<Option<TraceContext>> {
    traceparent
        .map(|t| {
            t.parse::<TraceContext>()
                .map_err(Error::from)
                .map_err(PyErr::from)
        })
        .transpose()
}

/// A reference to a server by name, local or remote (`oscloud.ServerRef`).
#[pyclass(name = "ServerRef", module = "oscloud._native", frozen)]
#[derive(Debug)]
pub(crate) struct PyServerRef {
    raw: ServerRef,
}

impl PyServerRef {
    /// Queue `messages` in order while the link has room; the rest, from
    /// the first that found it full, by an awaitable that waits for room
    /// for each. `None` when every one is queued.
    fn cast_all<'py>(
        &self,
        py: Python<'py>,
        messages: Vec<Bytes>,
        trace: Option<TraceContext>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut rest = messages.into_iter();
        while let Some(msg) = rest.next() {
            match with_trace_sync(trace, || self.raw.try_cast(msg.clone())) {
                Ok(()) => {}
                Err(oscloud_actors::Error::Core(CoreError::LinkBusy { .. })) => {
                    let raw = self.raw.clone();
                    return future_into_py(py, async move {
                        for msg in std::iter::once(msg).chain(rest) {
                            with_trace(trace, raw.cast(msg))
                                .await
                                .map_err(Error::from)?;
                        }
                        Ok(())
                    })
                    .map(Some);
                }
                Err(e) => return Err(Error::from(e).into()),
            }
        }
        Ok(None)
    }
}

#[pymethods]
impl PyServerRef {
    /// The server's name.
    #[getter]
    fn name(&self) -> &str {
        self.raw.name()
    }

    /// Send `message` and wait at most `timeout` seconds for the reply;
    /// with `traceparent`, the call belongs to that trace.
    #[pyo3(signature = (message, timeout = 5.0, traceparent = None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
        timeout: f64,
        traceparent: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bytes = Bytes::from(encode_py(message)?);
        let timeout = duration(timeout, "timeout")?;
        let trace = parse_trace(traceparent)?;
        let raw = self.raw.clone();
        future_into_py(py, async move {
            let reply = with_trace(trace, raw.call(bytes, timeout))
                .await
                .map_err(Error::from)?;
            Python::attach(|py| Ok(decode_py(py, &reply)?.unbind()))
        })
    }

    /// Send `message` one way. Queued at once when the link to the
    /// server's node has room: returns `None`, nothing to await (casts made
    /// one after another keep their order). Only a full link returns an
    /// awaitable, which completes once the message is queued; with
    /// `traceparent`, the cast belongs to that trace.
    #[pyo3(signature = (message, traceparent = None))]
    fn cast<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
        traceparent: Option<&str>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let bytes = Bytes::from(encode_py(message)?);
        let trace = parse_trace(traceparent)?;
        self.cast_all(py, vec![bytes], trace)
    }

    /// Send `message` one way without waiting: raises `LinkBusy` at once
    /// (the message not sent) when the link to the server's node is full.
    #[pyo3(signature = (message, traceparent = None))]
    fn try_cast(&self, message: &Bound<'_, PyAny>, traceparent: Option<&str>) -> PyResult<()> {
        let bytes = Bytes::from(encode_py(message)?);
        let trace = parse_trace(traceparent)?;
        with_trace_sync(trace, || self.raw.try_cast(bytes)).map_err(Error::from)?;
        Ok(())
    }

    /// Send every message of `messages` one way, in order: each is encoded
    /// first (an `EncodeError` sends none), then queued while the link has
    /// room. Returns `None` when all are queued, else an awaitable that
    /// queues the rest as room comes.
    #[pyo3(signature = (messages, traceparent = None))]
    fn cast_many<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
        traceparent: Option<&str>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let all = messages
            .try_iter()?
            .map(|m| Ok(Bytes::from(encode_py(&m?)?)))
            .collect::<PyResult<Vec<_>>>()?;
        let trace = parse_trace(traceparent)?;
        self.cast_all(py, all, trace)
    }

    /// Open a duplex pipe to the server's port `port`.
    /// Open a duplex pipe to the server's port `port`.
    fn open_pipe<'py>(&self, py: Python<'py>, port: String) -> PyResult<Bound<'py, PyAny>> {
        let raw = self.raw.clone();
        future_into_py(py, async move {
            let end = raw.open_pipe(&port).await.map_err(Error::from)?;
            Ok(PyPipe::new(end))
        })
    }

    fn __repr__(&self) -> String {
        format!("<oscloud.ServerRef {:?}>", self.raw.name())
    }
}

/// A Python server started by `Node.server` (`oscloud.ServerHandle`).
#[pyclass(name = "ServerHandle", module = "oscloud._native", frozen)]
#[derive(Debug)]
pub(crate) struct PyServerHandle {
    name: String,
    handle: Arc<SupervisorHandle>,
}

#[pymethods]
impl PyServerHandle {
    /// The server's registered name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// How many times its supervisor restarted it.
    #[getter]
    fn restarts(&self) -> u64 {
        self.handle.stats().total_restarts()
    }

    /// Whether it runs now (false once its supervisor gave up or it was
    /// stopped).
    #[getter]
    fn running(&self) -> bool {
        self.handle.stats().children.iter().any(|c| c.running)
    }

    /// Stop it (and its supervisor).
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.handle.clone();
        future_into_py(py, async move {
            handle.stop().await;
            Ok(())
        })
    }

    /// Wait until its supervisor ends; raises `oscloud.Error` if it gave
    /// up (restart intensity exceeded).
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.handle.clone();
        future_into_py(py, async move {
            handle.wait().await.map_err(Error::from)?;
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!("<oscloud.ServerHandle {:?}>", self.name)
    }
}

/// One link of a node and its counters (`oscloud.Link`).
#[pyclass(name = "Link", module = "oscloud._native", frozen, get_all)]
#[derive(Debug, Clone)]
pub(crate) struct PyLink {
    /// A number for the link, unique within the node.
    id: u64,
    /// The local side, as the transport describes it.
    local: String,
    /// The remote side, as the transport describes it.
    remote: String,
    /// The address the node dials for it, if it dialled it.
    dialed: Option<String>,
    /// The peer's node id, once the handshake is done.
    peer: Option<String>,
    /// Whether the session is up now.
    connected: bool,
    /// How many times the link was dialled again after it went down.
    reconnects: u64,
    /// The wire counters, by the names of Rust's `oscloud_core::wire::Stats`
    /// fields: `frames_sent`, `frames_received`, `bytes_sent`,
    /// `bytes_received`, `payload_bytes_sent`, `payload_bytes_received`,
    /// `retransmissions`, `fast_retransmits`, `timeouts`, `duplicates`,
    /// `out_of_order`, `dropped`, `crc_failures`, `framing_failures`,
    /// `decode_failures`, `auth_failures`, `replays`, `detaches`,
    /// `resumes`, and the round-trip time measured on lossy links:
    /// `rtt_samples`, `srtt_us` (smoothed RTT, µs; 0 before the first
    /// sample and on reliable streams) and `rto_us` (the retransmission
    /// timeout in force, µs; 0 on reliable streams).
    stats: BTreeMap<String, u64>,
    /// The link's round-trip time in microseconds as the node measures it
    /// on every kind of link (a probe call answered at once by the peer
    /// node; smoothed); 0 until the first answer.
    rtt_us: u64,
    /// Times a local pipe writer's frame waited for the peer's credit on
    /// this link (the peer's reader was behind).
    credit_stalls: u64,
    /// Bytes waiting to be sent on the link (casts and calls waiting for
    /// its driver, replies and pipe data queued in its session).
    send_queue_bytes: u64,
    /// How the link's session closed, once it did; `None` while it runs.
    closed: Option<PyLinkClose>,
    /// Every round trip the node's probe measured on the link, bucketed.
    probe_rtt: PyRttHistogram,
    /// The round trips the session's retransmission timer measured (lossy
    /// links; empty on reliable streams), bucketed.
    session_rtt: PyRttHistogram,
}

/// How a link's session closed (`oscloud.LinkClose`).
#[pyclass(name = "LinkClose", module = "oscloud._native", frozen, get_all)]
#[derive(Debug, Clone)]
pub(crate) struct PyLinkClose {
    /// The close code (`docs/PROTOCOL.md` §5.4: 0 normal, 9 idle timeout, ...).
    code: u8,
    /// The code's name (`"Normal"`, `"IdleTimeout"`, ...; `"Other"` for a
    /// code this version does not know).
    name: &'static str,
    /// What happened, in words.
    message: String,
    /// Whether the peer closed it (its Close packet arrived).
    remote: bool,
}

impl From<CloseReason> for PyLinkClose {
    fn from(c: CloseReason) -> Self {
        Self {
            code: c.code.code(),
            name: c.code.name(),
            message: c.message,
            remote: c.remote,
        }
    }
}

#[pymethods]
impl PyLinkClose {
    fn __repr__(&self) -> String {
        format!(
            "<oscloud.LinkClose {} ({}){}: {:?}>",
            self.name,
            self.code,
            if self.remote { " by peer" } else { "" },
            self.message
        )
    }
}

/// Round-trip times counted per bucket (`oscloud.RttHistogram`).
#[pyclass(name = "RttHistogram", module = "oscloud._native", frozen, get_all)]
#[derive(Debug, Clone)]
pub(crate) struct PyRttHistogram {
    /// Samples per bucket, not cumulative: one per bound of `bounds_ns`,
    /// then one for longer round trips.
    buckets: Vec<u64>,
    /// The buckets' upper bounds in nanoseconds (25 µs to 5 s).
    bounds_ns: Vec<u64>,
    /// The samples' sum, in microseconds.
    sum_us: u64,
    /// Samples counted.
    count: u64,
}

impl From<RttHistogram> for PyRttHistogram {
    fn from(h: RttHistogram) -> Self {
        Self {
            buckets: h.buckets.to_vec(),
            bounds_ns: LATENCY_BUCKETS_NS.to_vec(),
            sum_us: h.sum_us,
            count: h.count(),
        }
    }
}

#[pymethods]
impl PyRttHistogram {
    fn __repr__(&self) -> String {
        format!(
            "<oscloud.RttHistogram {} samples, {} µs in all>",
            self.count, self.sum_us
        )
    }
}

impl From<LinkStatus> for PyLink {
    fn from(l: LinkStatus) -> Self {
        let stats = l
            .stats
            .counters()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Self {
            id: l.id,
            local: l.local,
            remote: l.remote,
            dialed: l.dialed.map(|a| a.to_string()),
            peer: l.peer.map(|p| p.to_string()),
            connected: l.connected,
            reconnects: l.reconnects,
            stats,
            rtt_us: l.rtt_us,
            credit_stalls: l.credit_stalls,
            send_queue_bytes: l.send_queue_bytes,
            closed: l.closed.map(PyLinkClose::from),
            probe_rtt: l.probe_rtt.into(),
            session_rtt: l.session_rtt.into(),
        }
    }
}

#[pymethods]
impl PyLink {
    fn __repr__(&self) -> String {
        format!(
            "<oscloud.Link {} {} → {}{}>",
            self.id,
            self.local,
            self.remote,
            if self.connected { " (up)" } else { "" }
        )
    }
}

/// A route from a node to a server of another node (`oscloud.Route`).
#[pyclass(name = "Route", module = "oscloud._native", frozen, get_all)]
#[derive(Debug, Clone)]
pub(crate) struct PyRoute {
    /// The server's name.
    name: String,
    /// The id of the node the server lives on.
    node: String,
    /// The node ids between here and there: the server's node first, the
    /// neighbour the route goes through last.
    path: Vec<String>,
    /// The total cost (the sum of the link costs along the path: 1 per
    /// reliable stream link, 10 per serial or datagram link).
    cost: u64,
    /// The id of this node's link the route goes through (`Link.id`).
    link: u64,
    /// Whether it is the route in use (the best one).
    best: bool,
}

impl From<Route> for PyRoute {
    fn from(r: Route) -> Self {
        Self {
            name: r.name,
            node: r.node.to_string(),
            path: r.path.iter().map(ToString::to_string).collect(),
            cost: r.cost,
            link: r.link,
            best: r.best,
        }
    }
}

#[pymethods]
impl PyRoute {
    fn __repr__(&self) -> String {
        format!(
            "<oscloud.Route {:?} on {} cost {} via link {}{}>",
            self.name,
            &self.node[..8.min(self.node.len())],
            self.cost,
            self.link,
            if self.best { " (best)" } else { "" }
        )
    }
}

/// One registry entry (`oscloud.Entry`).
#[pyclass(name = "Entry", module = "oscloud._native", frozen, get_all)]
#[derive(Debug, Clone)]
pub(crate) struct PyEntry {
    /// The server's name.
    name: String,
    /// The id of the node it lives on.
    node: String,
    /// Whether it lives on this node.
    local: bool,
    /// Whether it is one member of a group.
    group: bool,
    /// The message kinds it accepts.
    accepts: Vec<String>,
    /// The message kinds it produces.
    produces: Vec<String>,
    /// Its pipe ports: name → `"in"`, `"out"` or `"both"`.
    ports: BTreeMap<String, String>,
}

impl PyEntry {
    fn new(e: &Entry, local: oscloud_core::NodeId) -> Self {
        Self {
            name: e.name().to_owned(),
            node: e.node().to_string(),
            local: e.node() == local,
            group: e.is_group_member(),
            accepts: e.capabilities().accepts.clone(),
            produces: e.capabilities().produces.clone(),
            ports: e
                .capabilities()
                .ports
                .iter()
                .map(|(name, dir)| (name.clone(), dir.as_str().to_owned()))
                .collect(),
        }
    }
}

#[pymethods]
impl PyEntry {
    fn __repr__(&self) -> String {
        format!(
            "<oscloud.Entry {:?} on {}{}>",
            self.name,
            &self.node[..8.min(self.node.len())],
            if self.local { " (this node)" } else { "" }
        )
    }
}

/// A registry change (`oscloud.RegistryEvent`).
#[pyclass(name = "RegistryEvent", module = "oscloud._native", frozen, get_all)]
#[derive(Debug)]
pub(crate) struct PyEvent {
    /// `"added"` or `"removed"`.
    kind: &'static str,
    /// The entry concerned.
    entry: PyEntry,
    /// Why it was removed (`"normal exit"`, `"failed: ..."`,
    /// `"link down: ..."`); `None` for `added`.
    reason: Option<String>,
}

#[pymethods]
impl PyEvent {
    /// The server's name (`event.entry.name`).
    #[getter]
    fn name(&self) -> &str {
        &self.entry.name
    }

    fn __repr__(&self) -> String {
        match &self.reason {
            Some(r) => format!(
                "<oscloud.RegistryEvent {} {:?}: {r}>",
                self.kind, self.entry.name
            ),
            None => format!(
                "<oscloud.RegistryEvent {} {:?}>",
                self.kind, self.entry.name
            ),
        }
    }
}

/// An async iterator over registry changes (`oscloud.Watch`).
#[pyclass(name = "Watch", module = "oscloud._native", frozen)]
#[derive(Debug)]
pub(crate) struct PyWatch {
    watch: Arc<tokio::sync::Mutex<Watch>>,
    local: oscloud_core::NodeId,
}

impl PyWatch {
    async fn next_event(
        watch: Arc<tokio::sync::Mutex<Watch>>,
        local: oscloud_core::NodeId,
    ) -> Option<PyEvent> {
        let ev = watch.lock().await.next().await?;
        Some(match ev {
            RegistryEvent::Added(e) => PyEvent {
                kind: "added",
                entry: PyEntry::new(&e, local),
                reason: None,
            },
            RegistryEvent::Removed { entry, reason } => PyEvent {
                kind: "removed",
                entry: PyEntry::new(&entry, local),
                reason: Some(reason.to_string()),
            },
        })
    }
}

#[pymethods]
impl PyWatch {
    /// The next change; with `timeout`, `None` if none came in time.
    #[pyo3(signature = (timeout = None))]
    fn next<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let (watch, local) = (self.watch.clone(), self.local);
        let timeout = timeout.map(|t| duration(t, "timeout")).transpose()?;
        future_into_py(py, async move {
            Ok(match timeout {
                Some(t) => tokio::time::timeout(t, Self::next_event(watch, local))
                    .await
                    .ok()
                    .flatten(),
                None => Self::next_event(watch, local).await,
            })
        })
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (watch, local) = (self.watch.clone(), self.local);
        future_into_py(py, async move {
            match Self::next_event(watch, local).await {
                Some(ev) => Ok(ev),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }
}
