//! A node for the multi-process tests, driven line by line on stdin.
//!
//! It runs one oscloud node (TCP, WebSocket, zenoh, Unix, serial, CAN, USB and BLE transports) with three servers
//! under a supervisor, named after the node:
//!
//! - `upper-<name>`: a call with a string answers it upper-cased, tagged
//!   `from <name>`;
//! - `sink-<name>`: pipe port `in` counts bytes and an FNV-1a checksum; a
//!   call answers `(bytes, checksum)`; pipe port `source` writes 64 KiB
//!   frames for as long as the pipe takes them;
//! - `slow-<name>`: handles casts of a string slowly (10 000 a second at
//!   most); a call answers how many casts it handled (as a string);
//! - `relay-<name>`: pipe port `in` forwards every frame to the server and
//!   port given by `--relay-to server:port`;
//! - `hop-<name>`: a call with a string calls the server given by
//!   `--hop-to SERVER` with it and answers `<name>>` and that reply (or the
//!   string itself without `--hop-to`): a call chain across nodes;
//! - with `--pool-worker GROUP`, `GROUP/<name>`: a pool worker (see
//!   `oscloud_servers::pool`): a call with `(n, rounds)` answers
//!   `oscloud_tests::pool_work(n, rounds)`.
//!
//! Arguments: `--name N`, `--listen URI` (repeatable), `--connect URI`
//! (repeatable; dialled in the background until the peer answers),
//! `--keepalive-ms`, `--idle-ms`, `--relay-to server:port`, `--key FILE`
//! (a secure node: every link encrypted, its node key read from FILE, or
//! made there if missing; prints `key <public key>` first) and `--allow
//! KEY` (repeatable: a peer public key the secure node admits), `--config
//! key=value` (repeatable: a node setting, `NodeConfig::set`), `--hop-to
//! SERVER`, `--otlp URL` (export OpenTelemetry spans over OTLP/HTTP to URL,
//! as the service `testnode-<name>`; sent at `quit`).
//!
//! Output lines (stdout): `listening <uri>` for every bound address, `ready`,
//! then one answer per command:
//!
//! | command | answer |
//! |---|---|
//! | `wait NAME` | `found NAME <node>` once NAME is in the registry |
//! | `watch NAME` | `watching NAME`, then (later, by itself) `gone NAME <reason>` when it leaves |
//! | `dwatch NAME` | `dwatching NAME`, then (later, by itself) `published NAME NODE` / `withdrawn NAME NODE` for every node that publishes NAME in the directory (`*`: every name), this node left out |
//! | `policy TEXT` | `policy set`: the access policy becomes TEXT, its lines separated by `;` |
//! | `call SERVER TEXT` | `reply <text>` or `error <message>` |
//! | `tracedcall SERVER TEXT` | the same, made in a new `testnode.call` span (a new trace with `--otlp`) |
//! | `pipe SERVER PORT N` | `piped N <checksum>` once N bytes were written |
//! | `casts SERVER N` | `cast N` once N casts of a string were sent |
//! | `castwait SERVER N` | `handled <n>` once the `slow-` server SERVER handled N casts |
//! | `sinkwait SERVER N` | `sink <bytes> <checksum>` once the sink counted N bytes |
//! | `calls SERVER N` | `called N <µs>`: N sequential calls of a 64-byte string, timed (for scripts/bench-ts.sh) |
//! | `fill SERVER PORT N` | `filled N <µs>` once N bytes were written in 64 KiB frames of one byte value, timed |
//! | `route NAME` | `route NAME hops <n> cost <c>` for the route in use to a server of another node, or `noroute NAME` |
//! | `register NAME` | `registered NAME`: an echo server (a call answers its request) under NAME |
//! | `unregister NAME` | `unregistered NAME`: the server `register` made leaves the registry |
//! | `entries` | `entries <n> routes <r> links <l>`: the registry's entries (this node's servers included), the routes and the links it holds |
//! | `quit` | (exits) |
//!
//! Every wait has a deadline and answers `timeout <what>` when it expires.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use oscloud_actors::{
    ChildSpec, Context, PipeOutcome, Server, ServerError, ServerRef, Supervisor, SupervisorSpec,
    async_trait,
};
use oscloud_core::address::Address;
use oscloud_core::directory::DirectoryEvent;
use oscloud_core::transport::Transports;
use oscloud_core::{Kernel, Node, NodeConfig, PipeEnd, PortDirection, RegistryEvent};
use oscloud_tests::{Fnv, pool_work, pseudo_random_frames};
use oscloud_transport_ble::{BleCentralTransport, BlePeripheralTransport};
use oscloud_transport_can::CanTransport;
use oscloud_transport_serial::SerialTransport;
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use oscloud_transport_usb::{UsbGadgetTransport, UsbHostTransport};
use oscloud_transport_ws::WsTransport;
use oscloud_transport_zenoh::ZenohTransport;
use tokio::io::{AsyncBufReadExt, BufReader};

const DEADLINE: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

struct Upper {
    node: String,
}

#[async_trait]
impl Server for Upper {
    type Request = String;
    type Reply = String;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        _: &mut (),
        text: String,
    ) -> Result<String, ServerError> {
        Ok(format!("{} from {}", text.to_uppercase(), self.node))
    }
}

struct Slow;

#[async_trait]
impl Server for Slow {
    type Request = String;
    type Reply = String;
    type State = u64;

    async fn init(&self, _ctx: &mut Context) -> Result<u64, ServerError> {
        Ok(0)
    }

    async fn handle_cast(
        &self,
        _ctx: &mut Context,
        handled: &mut u64,
        _: String,
    ) -> Result<(), ServerError> {
        *handled += 1;
        if handled.is_multiple_of(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        handled: &mut u64,
        _: String,
    ) -> Result<String, ServerError> {
        Ok(handled.to_string())
    }
}

#[derive(Default)]
struct SinkState(Arc<std::sync::Mutex<Fnv>>);

struct Sink;

#[async_trait]
impl Server for Sink {
    type Request = ();
    type Reply = (u64, u64);
    type State = SinkState;

    async fn init(&self, _ctx: &mut Context) -> Result<SinkState, ServerError> {
        Ok(SinkState::default())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        state: &mut SinkState,
        _: (),
    ) -> Result<(u64, u64), ServerError> {
        let f = state.0.lock().map_err(|_| "sink state poisoned")?;
        Ok((f.bytes, f.hash))
    }

    fn ports(&self) -> Vec<(String, PortDirection)> {
        vec![("in".to_owned(), PortDirection::In)]
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        state: &mut SinkState,
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        if port == "source" {
            // Writes 64 KiB frames (each its own memory) for as long as
            // the pipe takes them.
            let (_, writer) = end.split();
            ctx.spawn(async move {
                while writer
                    .send(bytes::Bytes::from(vec![0x5a; 64 * 1024]))
                    .await
                    .is_ok()
                {}
            });
            return Ok(PipeOutcome::Accepted);
        }
        if port != "in" {
            return Ok(PipeOutcome::NoSuchPort);
        }
        let tally = state.0.clone();
        let (mut reader, _) = end.split();
        ctx.spawn(async move {
            while let Some(frame) = reader.recv().await {
                if let Ok(mut f) = tally.lock() {
                    f.update(&frame);
                }
            }
        });
        Ok(PipeOutcome::Accepted)
    }
}

struct Relay {
    to: Option<(String, String)>,
}

#[async_trait]
impl Server for Relay {
    type Request = ();
    type Reply = ();
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(&self, _: &mut Context, _: &mut (), _: ()) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        _: &mut (),
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        let Some((server, to_port)) = self.to.clone().filter(|_| port == "in") else {
            return Ok(PipeOutcome::NoSuchPort);
        };
        let onward = ServerRef::lookup(ctx.kernel(), &server)?
            .open_pipe(&to_port)
            .await?;
        let (reader, _) = end.split();
        let (_, writer) = onward.split();
        let link = oscloud_core::plumbing::connect(reader, writer);
        ctx.spawn(async move {
            let _ = link.finished().await;
        });
        Ok(PipeOutcome::Accepted)
    }
}

/// A pool worker: `(n, rounds)` → [`pool_work`]`(n, rounds)`.
struct Hop {
    node: String,
    to: Option<String>,
}

#[async_trait]
impl Server for Hop {
    type Request = String;
    type Reply = String;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        ctx: &mut Context,
        _: &mut (),
        text: String,
    ) -> Result<String, ServerError> {
        let Some(to) = &self.to else {
            return Ok(text);
        };
        let next = ServerRef::new(ctx.kernel(), to).typed::<String, String>();
        Ok(format!(
            "{}>{}",
            self.node,
            next.call(&text, CALL_TIMEOUT).await?
        ))
    }
}

struct PoolWorker;

#[async_trait]
impl Server for PoolWorker {
    type Request = (u64, u32);
    type Reply = u64;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        _: &mut (),
        (n, rounds): (u64, u32),
    ) -> Result<u64, ServerError> {
        Ok(pool_work(n, rounds))
    }
}

#[derive(Default)]
struct Args {
    name: String,
    listen: Vec<Address>,
    connect: Vec<Address>,
    keepalive: Option<Duration>,
    idle: Option<Duration>,
    relay_to: Option<(String, String)>,
    key: Option<std::path::PathBuf>,
    allow: Vec<String>,
    settings: Vec<String>,
    pool_worker: Option<String>,
    hop_to: Option<String>,
    otlp: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => a.name = value()?,
            "--key" => a.key = Some(value()?.into()),
            "--allow" => a.allow.push(value()?),
            "--config" => a.settings.push(value()?),
            "--listen" => a.listen.push(value()?.parse().map_err(|e| format!("{e}"))?),
            "--connect" => a
                .connect
                .push(value()?.parse().map_err(|e| format!("{e}"))?),
            "--keepalive-ms" => {
                a.keepalive = Some(Duration::from_millis(
                    value()?.parse().map_err(|e| format!("{e}"))?,
                ))
            }
            "--idle-ms" => {
                a.idle = Some(Duration::from_millis(
                    value()?.parse().map_err(|e| format!("{e}"))?,
                ))
            }
            "--pool-worker" => a.pool_worker = Some(value()?),
            "--hop-to" => a.hop_to = Some(value()?),
            "--otlp" => a.otlp = Some(value()?),
            "--relay-to" => {
                let v = value()?;
                let (s, p) = v.split_once(':').ok_or("--relay-to wants server:port")?;
                a.relay_to = Some((s.to_owned(), p.to_owned()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.name.is_empty() {
        return Err("--name is required".into());
    }
    Ok(a)
}

async fn wait_for(kernel: &Kernel, name: &str) -> String {
    let mut watch = kernel.registry().watch();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(ev) = watch.next().await {
            if let RegistryEvent::Added(e) = ev
                && e.name() == name
            {
                return Some(e.node().short());
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(node)) => format!("found {name} {node}"),
        _ => format!("timeout wait {name}"),
    }
}

/// Answer `watching`, then report `gone` by itself when the name leaves.
fn watch_gone(kernel: &Kernel, name: &str) -> String {
    let mut watch = kernel.registry().watch();
    if kernel.registry().lookup(name).is_err() {
        return format!("absent {name}");
    }
    let name = name.to_owned();
    let reply = format!("watching {name}");
    tokio::spawn(async move {
        let gone = tokio::time::timeout(DEADLINE, async {
            while let Some(ev) = watch.next().await {
                if let RegistryEvent::Removed { entry, reason } = ev
                    && entry.name() == name
                {
                    return Some(reason);
                }
            }
            None
        })
        .await;
        match gone {
            Ok(Some(reason)) => println!("gone {name} {reason}"),
            _ => println!("timeout gone {name}"),
        }
    });
    reply
}

/// Answer `dwatching`, then report by itself every node that publishes or
/// withdraws `name` in the directory (`published NAME NODE`, `withdrawn
/// NAME NODE`), for as long as the node runs.
async fn watch_directory(node: &Node, name: &str) -> String {
    let mut watch = match node.watch_directory(name).await {
        Ok(w) => w,
        Err(e) => return format!("error {e}"),
    };
    tokio::spawn(async move {
        while let Some(ev) = watch.next().await {
            match ev {
                DirectoryEvent::Published { name, node } => println!("published {name} {node}"),
                DirectoryEvent::Withdrawn { name, node } => println!("withdrawn {name} {node}"),
            }
        }
    });
    format!("dwatching {name}")
}

/// `n` bytes into `server`'s `port`: for `pipe`, the checksummed
/// pseudo-random frames (`piped n <checksum>`); for `fill`, 64 KiB frames of
/// one value, no per-byte work in the writer (`filled n <µs>`, timed).
async fn pipe_to(
    kernel: &Kernel,
    verb: &str,
    server: &str,
    port: &str,
    n: usize,
) -> Result<String, String> {
    let end = ServerRef::lookup(kernel, server)
        .map_err(|e| e.to_string())?
        .open_pipe(port)
        .await
        .map_err(|e| e.to_string())?;
    let (_, writer) = end.split();
    let start = std::time::Instant::now();
    let frames: Box<dyn Iterator<Item = bytes::Bytes> + Send> = if verb == "fill" {
        let mut left = n;
        Box::new(std::iter::from_fn(move || {
            let len = left.min(64 * 1024);
            left -= len;
            (len > 0).then(|| bytes::Bytes::from(vec![0x5a; len]))
        }))
    } else {
        Box::new(pseudo_random_frames(n))
    };
    let mut fnv = Fnv::default();
    for frame in frames {
        if verb == "fill" {
            fnv.bytes += frame.len() as u64;
        } else {
            fnv.update(&frame);
        }
        writer.send(frame).await.map_err(|e| e.to_string())?;
    }
    Ok(match verb {
        "fill" => format!("filled {} {}", fnv.bytes, start.elapsed().as_micros()),
        _ => format!("piped {} {}", fnv.bytes, fnv.hash),
    })
}

/// `n` sequential calls of a 64-byte string to `server`: `called n <µs>`.
async fn timed_calls(kernel: &Kernel, server: &str, n: u64) -> String {
    let r = ServerRef::new(kernel, server).typed::<String, String>();
    let text = "x".repeat(64);
    let start = std::time::Instant::now();
    for _ in 0..n {
        if let Err(e) = r.call(&text, CALL_TIMEOUT).await {
            return format!("error {e}");
        }
    }
    format!("called {n} {}", start.elapsed().as_micros())
}

async fn casts(kernel: &Kernel, server: &str, n: u64) -> String {
    let r = ServerRef::new(kernel, server).typed::<String, String>();
    for i in 0..n {
        if let Err(e) = r.cast(&format!("cast {i}")).await {
            return format!("error {e}");
        }
    }
    format!("cast {n}")
}

async fn cast_wait(kernel: &Kernel, server: &str, n: u64) -> String {
    let slow = ServerRef::new(kernel, server).typed::<String, String>();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match slow.call(&String::new(), CALL_TIMEOUT).await {
            Ok(count) if count.parse::<u64>().is_ok_and(|c| c >= n) => {
                return format!("handled {count}");
            }
            Ok(_) if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
            Ok(count) => return format!("timeout handled {count}"),
            Err(e) => return format!("error {e}"),
        }
    }
}

async fn sink_wait(kernel: &Kernel, server: &str, n: u64) -> String {
    let sink = ServerRef::new(kernel, server).typed::<(), (u64, u64)>();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match sink.call(&(), CALL_TIMEOUT).await {
            Ok((bytes, hash)) if bytes >= n => return format!("sink {bytes} {hash}"),
            Ok(_) if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
            Ok((bytes, _)) => return format!("timeout sink at {bytes} bytes"),
            Err(e) => return format!("error {e}"),
        }
    }
}

/// The servers `register` made (echo servers), until `unregister`.
fn extra()
-> std::sync::MutexGuard<'static, std::collections::HashMap<String, oscloud_core::Registration>> {
    static EXTRA: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, oscloud_core::Registration>>,
    > = std::sync::OnceLock::new();
    EXTRA
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

async fn command(node: &Node, line: &str) -> Option<String> {
    let kernel = node.kernel();
    let mut words = line.splitn(3, ' ');
    let verb = words.next().unwrap_or("");
    let a = words.next().unwrap_or("");
    let b = words.next().unwrap_or("");
    Some(match verb {
        "wait" => wait_for(kernel, a).await,
        "watch" => watch_gone(kernel, a),
        "dwatch" => watch_directory(node, a).await,
        // The access policy's text, lines separated by `;`.
        "policy" => {
            let text = line.trim_start_matches("policy").replace(';', "\n");
            match node.access_policy().set_text(&text) {
                Ok(()) => "policy set".to_owned(),
                Err(e) => format!("error {e}"),
            }
        }
        "call" | "tracedcall" => {
            use tracing::Instrument;
            let r = ServerRef::new(kernel, a).typed::<String, String>();
            let text = b.to_owned();
            let call = r.call(&text, CALL_TIMEOUT);
            let span = match verb {
                "tracedcall" => tracing::info_span!("testnode.call", server = a),
                _ => tracing::Span::none(),
            };
            match call.instrument(span).await {
                Ok(text) => format!("reply {text}"),
                Err(e) => format!("error {e}"),
            }
        }
        "pipe" | "fill" => {
            let (port, n) = b.split_once(' ').unwrap_or((b, "0"));
            match n.parse() {
                Ok(n) => pipe_to(kernel, verb, a, port, n)
                    .await
                    .unwrap_or_else(|e| format!("error {e}")),
                Err(_) => format!("error bad byte count {n:?}"),
            }
        }
        "calls" => match b.parse() {
            Ok(n) => timed_calls(kernel, a, n).await,
            Err(_) => format!("error bad call count {b:?}"),
        },
        "casts" => match b.parse() {
            Ok(n) => casts(kernel, a, n).await,
            Err(_) => format!("error bad cast count {b:?}"),
        },
        "castwait" => match b.parse() {
            Ok(n) => cast_wait(kernel, a, n).await,
            Err(_) => format!("error bad cast count {b:?}"),
        },
        "sinkwait" => match b.parse() {
            Ok(n) => sink_wait(kernel, a, n).await,
            Err(_) => format!("error bad byte count {b:?}"),
        },
        "register" => {
            let echo = Arc::new(oscloud_tests::Echo);
            match kernel
                .registry()
                .register(a, oscloud_core::Capabilities::new(), echo)
            {
                Ok(reg) => {
                    extra().insert(a.to_owned(), reg);
                    format!("registered {a}")
                }
                Err(e) => format!("error {e}"),
            }
        }
        "unregister" => match extra().remove(a) {
            Some(reg) => {
                drop(reg);
                format!("unregistered {a}")
            }
            None => format!("error {a} was not registered here"),
        },
        "entries" => format!(
            "entries {} routes {} links {}",
            kernel.registry().entries().len(),
            node.routes().len(),
            node.links().len()
        ),
        "route" => match node.routes().into_iter().find(|r| r.best && r.name == a) {
            Some(r) => format!("route {a} hops {} cost {}", r.path.len(), r.cost),
            None => format!("noroute {a}"),
        },
        "quit" => return None,
        other => format!("error unknown command {other:?}"),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let args = parse_args()?;
    let otlp = match &args.otlp {
        Some(url) => Some(oscloud_metrics::otel::Otlp::start(
            url,
            &format!("testnode-{}", args.name),
        )?),
        None => None,
    };
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        );
    tracing_subscriber::registry()
        .with(log)
        .with(otlp.as_ref().map(|o| o.layer()))
        .init();
    let key = match &args.key {
        Some(path) => Some(oscloud_core::identity::NodeKey::load_or_generate(path)?),
        None => None,
    };
    let kernel = match &key {
        Some(k) => Kernel::with_node(k.node_id()),
        None => Kernel::new(),
    };
    let mut config = NodeConfig::default();
    if let Some(k) = args.keepalive {
        config.keepalive = k;
    }
    if let Some(i) = args.idle {
        config.idle_timeout = i;
    }
    for setting in &args.settings {
        config.apply(setting)?;
    }
    config.validate()?;
    let transports = Transports::new()
        .with(Arc::new(TcpTransport))
        .with(Arc::new(WsTransport::ws()))
        .with(Arc::new(ZenohTransport::new()))
        .with(Arc::new(UnixTransport))
        .with(Arc::new(SerialTransport))
        .with(Arc::new(CanTransport))
        .with(Arc::new(UsbHostTransport))
        .with(Arc::new(UsbGadgetTransport))
        .with(Arc::new(BleCentralTransport))
        .with(Arc::new(BlePeripheralTransport));
    let node = match key {
        Some(key) => {
            println!("key {}", key.public());
            let allow = args
                .allow
                .iter()
                .map(|k| k.parse())
                .collect::<Result<Vec<oscloud_core::identity::PublicKey>, _>>()?;
            let security = oscloud_core::wire::SecureConfig::new(
                key,
                oscloud_core::identity::AllowList::from_keys(allow),
            );
            Node::with_security(kernel.clone(), transports, config, security)?
        }
        None => Node::with_config(kernel.clone(), transports, config),
    };

    let name = args.name.clone();
    let relay_to = args.relay_to.clone();
    let hop_to = args.hop_to.clone();
    let mut spec = SupervisorSpec::new(format!("root-{name}"));
    if let Some(group) = &args.pool_worker {
        spec = spec.child(ChildSpec::server(format!("{group}/{name}"), || PoolWorker));
    }
    let _tree = Supervisor::start(
        &kernel,
        spec.child(ChildSpec::server(format!("upper-{name}"), {
            let name = name.clone();
            move || Upper { node: name.clone() }
        }))
        .child(ChildSpec::server(format!("hop-{name}"), {
            let name = name.clone();
            move || Hop {
                node: name.clone(),
                to: hop_to.clone(),
            }
        }))
        .child(ChildSpec::server(format!("sink-{name}"), || Sink))
        .child(ChildSpec::server(format!("slow-{name}"), || Slow))
        .child(ChildSpec::server(format!("relay-{name}"), move || Relay {
            to: relay_to.clone(),
        })),
    )
    .await?;

    for addr in &args.listen {
        let bound = node.listen(addr).await?;
        println!("listening {bound}");
    }
    for addr in args.connect {
        let node = node.clone();
        tokio::spawn(async move {
            // The peer may not be up yet: dial until it answers.
            loop {
                match node.connect(&addr).await {
                    Ok(peer) => {
                        println!("linked {addr} {}", peer.short());
                        return;
                    }
                    Err(e) => {
                        tracing::debug!("dial {addr}: {e}; again");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
    }
    println!("ready");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match command(&node, line.trim()).await {
            Some(answer) => println!("{answer}"),
            None => break,
        }
    }
    node.shutdown();
    if let Some(otlp) = otlp {
        otlp.shutdown();
    }
    Ok(())
}
