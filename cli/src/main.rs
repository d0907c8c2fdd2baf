//! The `oscloud` command (see the crate docs of `oscloud_cli`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use oscloud_cli::runtime::{self, Local, NodeRun, Outcome, Plan};
use oscloud_cli::topology::Topology;
use oscloud_cli::{Error, console, graph, inspect, kinds};
use oscloud_core::NodeId;
use oscloud_core::address::Address;
use oscloud_core::trace::TraceContext;
use oscloud_core::transport::MemTransport;
use tokio::sync::watch;

/// Run a cloud described in a topology file, and look inside it while it
/// runs.
///
/// A topology file (TOML, or YAML: .yaml/.yml) lists nodes and how they link, the servers each
/// node runs (kind, arguments, supervision) and the pipes between server
/// ports. Placement is configuration: the same file runs in one process,
/// as one process per node, or one node per machine.
#[derive(Debug, Parser)]
#[command(name = "oscloud", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once per process: the size of the `run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check a topology file and say what is wrong, with line numbers.
    Check {
        /// The topology file.
        file: PathBuf,
    },
    /// Run a topology until it finishes by itself or Ctrl-C.
    ///
    /// Without options every node runs in this process (nodes linked
    /// in memory). With --processes each node runs as its own OS process
    /// (this program again, with --node), linked by Unix sockets in a
    /// temporary directory. With --node NAME only that node runs, over the
    /// addresses written in the file (e.g. TCP, one node per machine).
    ///
    /// The run ends when every pipe has ended and every sink fed by a pipe
    /// has stopped; a topology without pipes runs until stopped. When a
    /// supervisor restarts a server, its pipes are wired to the new
    /// instance.
    Run {
        /// The topology file.
        file: PathBuf,
        /// One OS process per node, linked by Unix sockets.
        #[arg(long, conflicts_with = "node")]
        processes: bool,
        /// Run only this node, with the file's addresses.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// Also listen on DIR/NODE.sock for every node, for `oscloud ls`,
        /// `call`, `tap` and `top` (always on with --processes).
        #[arg(long, value_name = "DIR")]
        expose: Option<PathBuf>,
        /// Serve the live web console at this address (e.g.
        /// 127.0.0.1:7781; another than loopback needs TLS and a token):
        /// topology with live link stats, registry, calls, taps and a
        /// terminal on `pty` servers.
        #[arg(long, value_name = "ADDR")]
        console: Option<std::net::SocketAddr>,
        /// The node the console joins (default: the first node, or the
        /// --node one).
        #[arg(long, value_name = "NAME", requires = "console")]
        console_node: Option<String>,
        /// Require this access token for the console (/?token=TOKEN);
        /// also read from OSCLOUD_CONSOLE_TOKEN.
        #[arg(
            long,
            value_name = "TOKEN",
            env = "OSCLOUD_CONSOLE_TOKEN",
            hide_env_values = true
        )]
        console_token: Option<String>,
        /// Serve the console over TLS (HTTPS, wss://) with this PEM
        /// certificate chain (with --console-tls-key).
        #[arg(long, value_name = "FILE", requires = "console_tls_key")]
        console_tls_cert: Option<PathBuf>,
        /// The PEM private key of --console-tls-cert.
        #[arg(long, value_name = "FILE", requires = "console_tls_cert")]
        console_tls_key: Option<PathBuf>,
        /// Serve OpenMetrics (Prometheus) at http://ADDR/metrics: links,
        /// servers, pipes and registry of the nodes in this process,
        /// labelled by node name (see docs/METRICS.md). Not with
        /// --processes: give each `--node` run its own address.
        #[arg(long, value_name = "ADDR", conflicts_with = "processes")]
        metrics: Option<std::net::SocketAddr>,
        /// Export OpenTelemetry traces of calls and casts to the OTLP/HTTP
        /// receiver at URL (e.g. http://127.0.0.1:4318; spans go to
        /// URL/v1/traces): one trace follows a call from node to node
        /// (see docs/TRACING.md). Needs a build with the `otel` feature;
        /// off by default. With --processes every node exports.
        #[arg(long, value_name = "URL")]
        otlp: Option<String>,
        /// The console may only look: its identity is read-only in the
        /// console node's access policy (it sees the registry, the status
        /// and taps; calls, casts and typing into a terminal are refused,
        /// and the page disables them).
        #[arg(long, requires = "console")]
        console_read_only: bool,
        /// Internal (--processes): also listen on this ws:// address, for
        /// the console.
        #[arg(long, hide = true, value_name = "ADDR")]
        console_ws: Option<String>,
        /// Internal (--processes): the console's read-only identity.
        #[arg(long, hide = true, value_name = "NODE_ID", requires = "console_ws")]
        console_read_only_id: Option<String>,
        /// Internal (--processes): replace addresses by sockets in DIR.
        #[arg(long, hide = true, value_name = "DIR")]
        socket_dir: Option<PathBuf>,
        /// Internal (--processes): write this file when the node is done,
        /// then keep serving until stopped.
        #[arg(long, hide = true, value_name = "FILE")]
        done_file: Option<PathBuf>,
    },
    /// List the servers of a running node: name, node, status, restarts,
    /// capabilities.
    Ls {
        /// The node's address (unix:///..., tcp://host:port, ws://host:port/path).
        addr: String,
    },
    /// Call a server: the request is JSON (sent as MessagePack), the
    /// reply is printed as JSON.
    Call {
        /// The node's address.
        addr: String,
        /// The server's name.
        name: String,
        /// The request, as JSON (e.g. '"hello"' or '{"n": 1}').
        request: String,
        /// How long to wait for the reply, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// The trace the call belongs to, as a W3C `traceparent`
        /// (00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>): the
        /// server handles the call in it (see docs/TRACING.md).
        #[arg(long, value_name = "TRACEPARENT")]
        traceparent: Option<TraceContext>,
    },
    /// Send a server a one-way message (JSON, sent as MessagePack); exits
    /// once the link wrote it.
    Cast {
        /// The node's address.
        addr: String,
        /// The server's name.
        name: String,
        /// The message, as JSON.
        message: String,
        /// The trace the cast belongs to, as a W3C `traceparent` (see
        /// `call`).
        #[arg(long, value_name = "TRACEPARENT")]
        traceparent: Option<TraceContext>,
    },
    /// Watch a pipe live: print its frames as they pass (text as is,
    /// anything else as JSON). The pipe never waits for the watcher.
    Tap {
        /// The address of any node of the topology.
        addr: String,
        /// The pipe: SERVER.PORT of one of its ends, or its name.
        pipe: String,
        /// Stop after this many frames.
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// Print every frame as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A live view of a running node: links, servers, rates, restarts, drops.
    ///
    /// Links with frame and byte counters; per server: restarts, messages
    /// (pipe frames) in and out with their rates in frames and bytes per
    /// second, pipe ends wired again after restarts, tap drops; pipes with
    /// their rates. Counters kept on other nodes of the topology are added
    /// when those nodes can be reached.
    Top {
        /// The node's address.
        addr: String,
        /// Refresh period in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Print one screen and exit.
        #[arg(long)]
        once: bool,
    },
    /// Draw a topology: Graphviz DOT on stdout, or SVG with --svg (needs
    /// Graphviz's `dot`).
    Graph {
        /// The topology file.
        file: PathBuf,
        /// Write SVG to this file instead of DOT to stdout.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// List the server kinds a topology can use, with ports and arguments.
    Kinds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let otlp = match &cli.command {
        // Under --processes the node processes export, not this one.
        Cmd::Run {
            otlp: Some(url),
            processes: false,
            node,
            ..
        } => Some((url.as_str(), node.as_deref())),
        _ => None,
    };
    let otlp = match init_tracing(otlp) {
        Ok(otlp) => otlp,
        Err(e) => {
            eprintln!("oscloud: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oscloud: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(Error::Topology(p)) => {
            eprintln!("{p}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("oscloud: {e}");
            ExitCode::FAILURE
        }
    };
    // A blocking read of stdin (the stdin source) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    if let Some(otlp) = otlp {
        shutdown_export(otlp);
    }
    code
}

/// The trace exporter of `--otlp` (none without the `otel` feature).
#[cfg(feature = "otel")]
type Exporter = oscloud_metrics::otel::Otlp;
#[cfg(not(feature = "otel"))]
type Exporter = std::convert::Infallible;

/// Send the spans still buffered.
#[cfg(feature = "otel")]
fn shutdown_export(otlp: Exporter) {
    otlp.shutdown();
}
#[cfg(not(feature = "otel"))]
fn shutdown_export(otlp: Exporter) {
    match otlp {}
}

/// Log to stderr (`RUST_LOG`, default `warn`), and with `otlp` (the
/// `--otlp` URL and the `--node` name) export traces too.
#[cfg(feature = "otel")]
fn init_tracing(otlp: Option<(&str, Option<&str>)>) -> Result<Option<Exporter>, Error> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let otlp = match otlp {
        Some((url, node)) => {
            let service = node.map_or_else(|| "oscloud".to_owned(), |n| format!("oscloud-{n}"));
            Some(oscloud_metrics::otel::Otlp::start(url, &service)?)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(log_layer())
        .with(otlp.as_ref().map(|o| o.layer()))
        .init();
    Ok(otlp)
}

/// Log to stderr (`RUST_LOG`, default `warn`); `--otlp` needs the `otel`
/// feature.
#[cfg(not(feature = "otel"))]
fn init_tracing(otlp: Option<(&str, Option<&str>)>) -> Result<Option<Exporter>, Error> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry().with(log_layer()).init();
    match otlp {
        Some(_) => Err(Error::Usage(
            "--otlp: this oscloud was built without the `otel` feature \
             (cargo build -p oscloud-cli --features otel)"
                .into(),
        )),
        None => Ok(None),
    }
}

/// The stderr log, filtered by `RUST_LOG` (default `warn`).
fn log_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Cmd::Check { file } => {
            let t = Topology::load(&file)?;
            println!(
                "{}: ok ({} nodes, {} servers, {} pipes)",
                file.display(),
                t.nodes.len(),
                t.servers.len(),
                t.pipes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            file,
            processes,
            node,
            expose,
            socket_dir,
            done_file,
            console,
            console_node,
            console_token,
            console_ws,
            console_read_only,
            console_read_only_id,
            console_tls_cert,
            console_tls_key,
            metrics,
            otlp,
        } => {
            let topo = Arc::new(Topology::load(&file)?);
            let console = match console {
                Some(at) => {
                    let tls = match (&console_tls_cert, &console_tls_key) {
                        (Some(c), Some(k)) => Some(oscloud_transport_ws::tls_acceptor(
                            &c.to_string_lossy(),
                            &k.to_string_lossy(),
                        )?),
                        _ => None,
                    };
                    let read_only = console_read_only.then(NodeId::random);
                    let options = (console_node, console_token, tls, read_only);
                    Some(start_console(&topo, at, node.as_deref(), options).await?)
                }
                None => None,
            };
            if processes {
                return run_processes(&file, &topo, console.as_ref(), otlp.as_deref()).await;
            }
            let console_read_only = match console_read_only_id {
                Some(id) => Some(
                    id.parse::<NodeId>()
                        .map_err(|e| Error::Usage(format!("--console-read-only-id {id}: {e}")))?,
                ),
                None => None,
            };
            let console_ws = match (&console, console_ws) {
                (Some((node, ws, ro)), _) => Some((node.clone(), ws.clone(), *ro)),
                (None, Some(ws)) => node.clone().map(|n| (n, ws, console_read_only)),
                (None, None) => None,
            };
            let console_ws = match console_ws {
                Some((n, ws, ro)) => Some((
                    n,
                    ws.parse::<Address>()
                        .map_err(|e| Error::Address(format!("{ws}: {e}")))?,
                    ro,
                )),
                None => None,
            };
            let (stop_tx, stop) = watch::channel(false);
            tokio::spawn(async move {
                if let Ok(sig) = runtime::stop_signal().await {
                    tracing::info!("{sig}: stopping");
                    let _ = stop_tx.send(true);
                }
            });
            if done_file.is_some() {
                // Under --processes: go when the parent goes.
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
            }
            let mem = MemTransport::new();
            let plan = match &socket_dir {
                Some(dir) => Plan::local(&topo, &Local::Unix(dir.clone()))?,
                None if node.is_some() => Plan::as_written(&topo),
                None => Plan::local(&topo, &Local::Mem(format!("run{}", std::process::id())))?,
            };
            // Unix addresses need absolute paths.
            let expose_dir = match expose.or(socket_dir) {
                Some(d) => Some(std::path::absolute(&d)?),
                None => None,
            };
            let expose = exposed(&topo, expose_dir.as_deref())?;
            let names: Vec<String> = match &node {
                Some(n) => {
                    if topo.node(n).is_none() {
                        return Err(Error::Usage(format!(
                            "the topology has no node {n:?} (nodes: {})",
                            topo.nodes
                                .iter()
                                .map(|n| n.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    vec![n.clone()]
                }
                None => topo.nodes.iter().map(|n| n.name.clone()).collect(),
            };
            let runs = names
                .into_iter()
                .map(|name| NodeRun {
                    topo: topo.clone(),
                    plan: plan.clone(),
                    expose: expose.clone(),
                    mem: mem.clone(),
                    console: console_ws
                        .as_ref()
                        .filter(|(n, _, _)| *n == name)
                        .map(|(_, a, _)| a.clone()),
                    console_read_only: console_ws
                        .as_ref()
                        .filter(|(n, _, _)| *n == name)
                        .and_then(|(_, _, ro)| *ro),
                    name,
                })
                .collect();
            // A single node of a multi-node topology cannot know when the
            // others are done: it runs until stopped.
            // With a console the run goes on until stopped, to be looked at.
            let standalone = node.is_some() && topo.nodes.len() > 1 || console.is_some();
            let outcome =
                runtime::run_nodes(runs, standalone, done_file.as_deref(), metrics, stop).await?;
            match outcome {
                Outcome::Finished => tracing::info!("topology finished"),
                Outcome::Stopped => tracing::info!("stopped"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ls { addr } => {
            print!("{}", inspect::ls(&addr).await?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Call {
            addr,
            name,
            request,
            timeout_ms,
            traceparent,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let reply = inspect::call(&addr, &name, &request, timeout, traceparent).await?;
            println!("{reply}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cast {
            addr,
            name,
            message,
            traceparent,
        } => {
            inspect::cast(&addr, &name, &message, traceparent).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Tap {
            addr,
            pipe,
            count,
            json,
        } => {
            tokio::select! {
                r = inspect::tap(&addr, &pipe, count, json) => { r?; }
                _ = runtime::stop_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Top {
            addr,
            interval_ms,
            once,
        } => {
            tokio::select! {
                r = inspect::top(&addr, Duration::from_millis(interval_ms), once) => r?,
                _ = runtime::stop_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Graph { file, svg } => {
            let topo = Topology::load(&file)?;
            let dot = graph::dot(&topo);
            match svg {
                None => print!("{dot}"),
                Some(out) => {
                    use std::io::Write as _;
                    let mut child = Command::new("dot")
                        .arg("-Tsvg")
                        .arg("-o")
                        .arg(&out)
                        .stdin(Stdio::piped())
                        .spawn()
                        .map_err(|e| {
                            Error::Usage(format!(
                                "cannot run Graphviz's `dot` (is it installed?): {e}"
                            ))
                        })?;
                    if let Some(mut stdin) = child.stdin.take() {
                        stdin.write_all(dot.as_bytes())?;
                    }
                    let status = child.wait()?;
                    if !status.success() {
                        return Err(Error::Usage(format!("dot failed: {status}")));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kinds => {
            for k in kinds::KINDS {
                println!("{}: {}", k.name, k.summary);
                if !k.inputs.is_empty() {
                    println!("  input ports:  {}", k.inputs.join(", "));
                }
                if !k.outputs.is_empty() {
                    println!("  output ports: {}", k.outputs.join(", "));
                }
                for a in k.args {
                    println!(
                        "  {:<18} {}{}",
                        a.name,
                        a.help,
                        if a.required { " (required)" } else { "" }
                    );
                }
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Start the web console at `at` (loopback only): pick the console node
/// and its WebSocket address, and serve the page in a task of this
/// process. Returns the console node, the `ws://` address it must
/// listen on, and the console's identity if it is read-only.
async fn start_console(
    topo: &Topology,
    at: std::net::SocketAddr,
    run_node: Option<&str>,
    (console_node, token, tls, read_only): (
        Option<String>,
        Option<String>,
        Option<oscloud_transport_ws::TlsAcceptor>,
        Option<NodeId>,
    ),
) -> Result<ConsoleNode, Error> {
    let token = token.filter(|t| !t.is_empty());
    console::check_address(at, tls.is_some(), token.is_some())?;
    let node = match (console_node, run_node) {
        (Some(c), Some(r)) if c != r => {
            return Err(Error::Usage(format!(
                "--console-node {c}: this process runs node {r} only"
            )));
        }
        (Some(c), _) => c,
        (None, Some(r)) => r.to_owned(),
        (None, None) => topo
            .nodes
            .first()
            .map(|n| n.name.clone())
            .ok_or_else(|| Error::Usage("the topology has no nodes".into()))?,
    };
    if topo.node(&node).is_none() {
        return Err(Error::Usage(format!("the topology has no node {node:?}")));
    }
    let (backend, ws) = console::backend_address()?;
    let console = console::Console {
        node: node.clone(),
        nodes: topo.nodes.iter().map(|n| n.name.clone()).collect(),
        backend,
        token,
        tls,
        read_only,
    };
    let listener = console::bind(at, &console).await?;
    let shown = listener.local_addr()?;
    eprintln!(
        "oscloud: console at {}://{shown}/{} (joins node {node})",
        if console.tls.is_some() {
            "https"
        } else {
            "http"
        },
        if console.token.is_some() {
            "?token=…"
        } else {
            ""
        }
    );
    tokio::spawn(console::serve(listener, console));
    Ok((node, ws, read_only))
}

/// The node the console joins, the `ws://` address it listens on for the
/// console, and the console's identity if it is read-only.
type ConsoleNode = (String, String, Option<NodeId>);

/// The extra listen address of every node when exposing in `dir`.
fn exposed(topo: &Topology, dir: Option<&Path>) -> Result<HashMap<String, Address>, Error> {
    let mut out = HashMap::new();
    if let Some(dir) = dir {
        for n in &topo.nodes {
            let text = format!("unix://{}", dir.join(format!("{}.sock", n.name)).display());
            let a: Address = text
                .parse()
                .map_err(|e| Error::Address(format!("{text}: {e}")))?;
            out.insert(n.name.clone(), a);
        }
    }
    Ok(out)
}

/// `run --processes`: this program once per node, linked by Unix sockets
/// in a temporary directory; done when every node is done; Ctrl-C (or
/// SIGTERM) stops them all.
async fn run_processes(
    file: &Path,
    topo: &Topology,
    console: Option<&ConsoleNode>,
    otlp: Option<&str>,
) -> Result<ExitCode, Error> {
    let dir = tempfile::Builder::new().prefix("oscloud-").tempdir()?;
    let exe = std::env::current_exe()?;
    let stdin_node = topo
        .servers
        .iter()
        .find(|s| s.kind.name == "stdin")
        .map(|s| s.node.clone());
    let mut children: Vec<(String, Child, PathBuf)> = Vec::new();
    for n in &topo.nodes {
        let done = dir.path().join(format!("{}.done", n.name));
        let stdin = if stdin_node.as_deref() == Some(n.name.as_str()) {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut cmd = Command::new(&exe);
        cmd.arg("run")
            .arg(file)
            .arg("--node")
            .arg(&n.name)
            .arg("--socket-dir")
            .arg(dir.path())
            .arg("--done-file")
            .arg(&done)
            .env_remove(console::TOKEN_ENV)
            .stdin(stdin);
        if let Some(url) = otlp {
            cmd.arg("--otlp").arg(url);
        }
        if let Some((node, ws, read_only)) = console
            && *node == n.name
        {
            cmd.arg("--console-ws").arg(ws);
            if let Some(id) = read_only {
                cmd.arg("--console-read-only-id").arg(id.to_string());
            }
        }
        let child = cmd.spawn();
        match child {
            Ok(c) => {
                eprintln!(
                    "oscloud: node {} runs as pid {}, inspect at unix://{}",
                    n.name,
                    c.id(),
                    dir.path().join(format!("{}.sock", n.name)).display()
                );
                children.push((n.name.clone(), c, done));
            }
            Err(e) => {
                stop_children(&mut children);
                return Err(Error::Start(format!("cannot start node {}: {e}", n.name)));
            }
        }
    }
    let mut signal = Box::pin(runtime::stop_signal());
    let mut failed = None;
    loop {
        // With a console the run goes on until stopped, to be looked at.
        if console.is_none() && children.iter().all(|(_, _, d)| d.exists()) {
            break;
        }
        let mut ended = false;
        for (name, c, _) in &mut children {
            match c.try_wait() {
                // A node stops with success only when signalled (Ctrl-C in
                // a terminal reaches the whole process group): stopping.
                Ok(Some(status)) if status.success() => ended = true,
                Ok(Some(status)) => failed = Some(format!("node {name} failed ({status})")),
                _ => {}
            }
        }
        if failed.is_some() || ended {
            break;
        }
        tokio::select! {
            _ = &mut signal => break,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    stop_children(&mut children);
    match failed {
        Some(f) => Err(Error::Start(f)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// SIGTERM every child still running, wait up to 10 s, then SIGKILL.
fn stop_children(children: &mut [(String, Child, PathBuf)]) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for (_, c, _) in children.iter_mut() {
        if let Ok(None) = c.try_wait()
            && let Ok(pid) = i32::try_from(c.id())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, c, _) in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    eprintln!("oscloud: node {name} did not stop within 10 s: killing it");
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
}
