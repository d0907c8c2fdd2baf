//! Two nodes in two processes linked by a real TCP or Unix socket, against
//! raw tokio sockets between the same two processes, in the same run: the
//! way oscloud is deployed (a node per process), where `node.rs` keeps both
//! nodes in one process.
//!
//! `cargo bench -p oscloud-examples --bench procs`
//!
//! The bench starts itself again as the peer process (`OSCLOUD_PROCS_PEER`
//! set): a node with the bench server, or a raw socket server. Measures:
//!
//! - pipe throughput: 64 KiB frames to the peer's sink server, timed until
//!   a call (`until N`) says every byte arrived; raw: `write_all`, then the
//!   peer answers one byte once it has read them all;
//!   (`OSCLOUD_BENCH_FRAME=1024`: 1 KiB frames; raw then writes through a
//!   64 KiB `BufWriter`);
//! - casts (`OSCLOUD_BENCH=casts` only): 64-byte casts, timed until a call
//!   queued behind them returns; raw: 64-byte writes through a 64 KiB
//!   `BufWriter`;
//! - call round trip: sequential 64-byte calls; raw: a 64-byte ping-pong,
//!   and the same ping-pong whose far side asks a plain ractor actor for
//!   each answer ("socket + ractor": the actor hop every server has);
//! - the same pipe encrypted against plaintext (issue 9's ratio, between
//!   processes).
//!
//! The measured loops run in a task on a runtime worker, as a server's code
//! does. Knobs: `OSCLOUD_BENCH=pipe|calls|secure`, `OSCLOUD_BENCH_RUNS`,
//! `OSCLOUD_BENCH_THREADS` (workers per process, 0: current-thread;
//! `OSCLOUD_BENCH_PEER_THREADS` for the peer process alone),
//! `OSCLOUD_BENCH_SIDE=ours|raw`, `OSCLOUD_BENCH_LINK=tcp|unix`,
//! `OSCLOUD_BENCH_IN=main` (the loops in `block_on` on the main thread),
//! `OSCLOUD_BENCH_SETTINGS="pipe_window=1MiB, ..."` (node settings, both
//! processes), `OSCLOUD_BENCH_CIPHER=aegis|aesgcm|chacha`.
//!
//! CPU time is both processes' (this one by `getrusage`, the peer's from
//! `/proc/PID/task/*/schedstat`).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

mod common;

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Bench, CALLS, Counters, FRAME, MESSAGES, PIPE_BYTES, call_loop, cpu_time, frame, median,
    median_n, mib_s, msg64, on_worker, per_gib, ping_pong, row, runs, used, write_pipe,
};
use oscloud_actors::{ServerRef, encode};
use oscloud_core::identity::{AllowList, NodeKey};
use oscloud_core::transport::Transports;
use oscloud_core::wire::SecureConfig;
use oscloud_core::{Kernel, Node, NodeConfig, RegistryEvent};
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Both sides' keys, fixed (throwaway keys for a bench).
const SECRET_PARENT: [u8; 32] = [11; 32];
const SECRET_PEER: [u8; 32] = [22; 32];

fn transports() -> Transports {
    Transports::new()
        .with(Arc::new(TcpTransport))
        .with(Arc::new(UnixTransport))
}

/// A node on `kernel`, secured with `me` admitting `peer` when `secure`.
fn node(kernel: Kernel, secure: bool, me: [u8; 32], peer: [u8; 32]) -> Node {
    // OSCLOUD_BENCH_SETTINGS="key=value, ...": node settings for both
    // processes (e.g. "pipe_window=1MiB").
    let mut config = NodeConfig::default();
    if let Ok(settings) = std::env::var("OSCLOUD_BENCH_SETTINGS") {
        config.apply(&settings).unwrap();
    }
    if secure {
        let me = NodeKey::from_secret(me);
        let peer = NodeKey::from_secret(peer);
        let mut cfg = SecureConfig::new(me, AllowList::from_keys([peer.public()]));
        // OSCLOUD_BENCH_CIPHER=aesgcm or chacha: offer only that frame
        // cipher (default: AEGIS-256 where the machine has AES hardware).
        let cipher = std::env::var("OSCLOUD_BENCH_CIPHER").unwrap_or_default();
        cfg.offer_aegis = cipher.is_empty() || cipher == "aegis";
        cfg.offer_aes_gcm = cipher != "chacha";
        Node::with_security(kernel, transports(), config, cfg).unwrap()
    } else {
        Node::with_config(kernel, transports(), config)
    }
}

fn kernel(secure: bool, me: [u8; 32]) -> Kernel {
    if secure {
        Kernel::with_node(NodeKey::from_secret(me).node_id())
    } else {
        Kernel::new()
    }
}

/// The peer process: `node <addr> <plain|secure>` or `raw <addr>`. Prints
/// the address it listens on, serves until its stdin closes.
async fn peer(role: &str) {
    let mut words = role.split(' ');
    let (kind, addr, mode) = (
        words.next().unwrap(),
        words.next().unwrap(),
        words.next().unwrap_or(""),
    );
    let stop = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    });
    if kind == "node" {
        let secure = mode == "secure";
        let k = kernel(secure, SECRET_PEER);
        oscloud_actors::start(&k, "bench", Bench(Arc::new(Counters::default())))
            .await
            .unwrap();
        let n = node(k, secure, SECRET_PEER, SECRET_PARENT);
        let at = n.listen(&addr.parse().unwrap()).await.unwrap();
        println!("{at}");
        std::io::stdout().flush().unwrap();
        let _ = stop.await;
        return;
    }
    // raw: each connection says what it wants in its first byte.
    let serve = |mut s: Box<dyn Duplex>| async move {
        let mut what = [0u8; 1];
        s.read_exact(&mut what).await.unwrap();
        if what[0] == b'P' || what[0] == b'M' {
            let total = if what[0] == b'P' {
                PIPE_BYTES
            } else {
                MESSAGES as usize * 64
            };
            let mut buf = vec![0u8; FRAME];
            let mut got = 0;
            while got < total {
                got += s.read(&mut buf).await.unwrap();
            }
            s.write_all(b"k").await.unwrap();
        } else if what[0] == b'A' {
            common::serve_through_actor(&mut s).await;
        } else {
            let mut m = [0u8; 64];
            for _ in 0..CALLS {
                s.read_exact(&mut m).await.unwrap();
                s.write_all(&m).await.unwrap();
            }
        }
    };
    if let Some(path) = addr.strip_prefix("unix://") {
        let l = UnixListener::bind(path).unwrap();
        println!("{addr}");
        std::io::stdout().flush().unwrap();
        let accept = async {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(serve(Box::new(s)));
            }
        };
        tokio::select! { () = accept => {}, _ = stop => {} }
    } else {
        let l = TcpListener::bind(addr.trim_start_matches("tcp://"))
            .await
            .unwrap();
        println!("tcp://{}", l.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        let accept = async {
            loop {
                let (s, _) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                tokio::spawn(serve(Box::new(s)));
            }
        };
        tokio::select! { () = accept => {}, _ = stop => {} }
    }
}

trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A peer process and the address it listens on.
struct Peer {
    child: Child,
    addr: String,
}

impl Peer {
    fn start(role: String) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("OSCLOUD_PROCS_PEER", role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            addr: line.trim().to_owned(),
        }
    }

    /// CPU time and context switches of the peer process so far (every
    /// thread's).
    fn cpu(&self) -> (Duration, u64) {
        let dir = format!("/proc/{}/task", self.child.id());
        let (mut ns, mut switches) = (0u64, 0u64);
        for t in std::fs::read_dir(dir).unwrap().flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            if let Ok(s) = std::fs::read_to_string(t.path().join("status")) {
                switches += s
                    .lines()
                    .filter(|l| l.contains("ctxt_switches"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        (Duration::from_nanos(ns), switches)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A node in this process linked to a node peer; its bench server's ref.
struct Linked {
    _node: Node,
    server: ServerRef,
    /// Pipe bytes sent to the peer so far (its counter is cumulative).
    sent: std::cell::Cell<u64>,
}

async fn link_node(peer: &Peer, secure: bool) -> Linked {
    let k = kernel(secure, SECRET_PARENT);
    let n = node(k.clone(), secure, SECRET_PARENT, SECRET_PEER);
    let mut watch = k.registry().watch();
    n.connect(&peer.addr.parse().unwrap()).await.unwrap();
    while let Some(ev) = watch.next().await {
        if matches!(&ev, RegistryEvent::Added(e) if e.name() == "bench") {
            break;
        }
    }
    Linked {
        _node: n,
        server: ServerRef::new(&k, "bench"),
        sent: std::cell::Cell::new(0),
    }
}

async fn node_pipe(l: &Linked) -> Duration {
    l.sent.set(l.sent.get() + PIPE_BYTES as u64);
    let until = encode(&format!("until {}", l.sent.get())).unwrap();
    let server = l.server.clone();
    on_worker(async move {
        let start = write_pipe(&server).await;
        server.call(until, Duration::from_secs(60)).await.unwrap();
        start.elapsed()
    })
    .await
}

async fn raw_connect(addr: &str, what: u8) -> Box<dyn Duplex> {
    let mut s: Box<dyn Duplex> = if let Some(path) = addr.strip_prefix("unix://") {
        Box::new(UnixStream::connect(path).await.unwrap())
    } else {
        let s = TcpStream::connect(addr.trim_start_matches("tcp://"))
            .await
            .unwrap();
        s.set_nodelay(true).unwrap();
        Box::new(s)
    };
    s.write_all(&[what]).await.unwrap();
    s
}

/// [`MESSAGES`] 64-byte casts to the bench server, timed until a call
/// queued behind them returns.
async fn node_casts(l: &Linked) -> Duration {
    let server = l.server.clone();
    on_worker(async move {
        let m = encode(&msg64()).unwrap();
        let start = Instant::now();
        for _ in 0..MESSAGES {
            server.cast(m.clone()).await.unwrap();
        }
        server.call(m, Duration::from_secs(60)).await.unwrap();
        start.elapsed()
    })
    .await
}

/// Raw writes: [`PIPE_BYTES`] in frames of [`frame()`] bytes (`what` =
/// `P`), or [`MESSAGES`] 64-byte messages (`M`), through a 64 KiB
/// `BufWriter` for frames smaller than that.
async fn raw_pipe(addr: &str, what: u8) -> Duration {
    let s = raw_connect(addr, what).await;
    on_worker(async move {
        let (size, count) = match what {
            b'P' => (frame(), PIPE_BYTES / frame()),
            _ => (64, MESSAGES as usize),
        };
        let frame = vec![7u8; size];
        let mut s = tokio::io::BufWriter::with_capacity(if size < FRAME { FRAME } else { 0 }, s);
        let start = Instant::now();
        for _ in 0..count {
            s.write_all(&frame).await.unwrap();
        }
        s.flush().await.unwrap();
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).await.unwrap();
        start.elapsed()
    })
    .await
}

/// A 64-byte ping-pong with the raw peer; `through_actor`: the peer asks
/// a plain ractor actor for each answer.
async fn raw_ping_pong(addr: &str, through_actor: bool) -> Duration {
    ping_pong(raw_connect(addr, if through_actor { b'A' } else { b'E' }).await).await
}

/// Median wall time, CPU time and context switches of both processes for
/// each side, run alternately (`OSCLOUD_BENCH_SIDE=ours` or `raw`: that
/// side only, to profile it).
fn measure<FA, FB>(
    rt: &tokio::runtime::Runtime,
    (a_peer, a): (&Peer, impl Fn() -> FA),
    (b_peer, b): (&Peer, impl Fn() -> FB),
) -> [Measured; 2]
where
    FA: std::future::Future<Output = Duration>,
    FB: std::future::Future<Output = Duration>,
{
    let side = std::env::var("OSCLOUD_BENCH_SIDE").unwrap_or_default();
    let mut got: [[Vec<Duration>; 2]; 2] = Default::default();
    let mut switches: [Vec<u64>; 2] = Default::default();
    let mut once =
        |i: usize, peer: &Peer, wall: Duration, before: ((Duration, u64), (Duration, u64))| {
            let (cpu, sw) = used(before.0);
            let (peer_cpu, peer_sw) = peer.cpu();
            got[i][0].push(wall);
            got[i][1].push(cpu + (peer_cpu - before.1.0));
            switches[i].push(sw + (peer_sw - before.1.1));
        };
    for _ in 0..runs() {
        if side != "raw" {
            let before = (cpu_time(), a_peer.cpu());
            let wall = rt.block_on(a());
            once(0, a_peer, wall, before);
        }
        if side != "ours" {
            let before = (cpu_time(), b_peer.cpu());
            let wall = rt.block_on(b());
            once(1, b_peer, wall, before);
        }
    }
    let [[wa, ca], [wb, cb]] = got;
    let [sa, sb] = switches;
    let med = |v: Vec<Duration>| {
        if v.is_empty() {
            Duration::ZERO
        } else {
            median(v)
        }
    };
    [
        Measured {
            wall: med(wa),
            cpu: med(ca),
            switches: median_n(sa),
        },
        Measured {
            wall: med(wb),
            cpu: med(cb),
            switches: median_n(sb),
        },
    ]
}

/// One side's medians: wall time, CPU time and context switches (both
/// processes).
#[derive(Clone, Copy)]
struct Measured {
    wall: Duration,
    cpu: Duration,
    switches: u64,
}

/// The rows of a pipe measure: rate and CPU per GiB.
fn pipe_rows(link: &str, [a, b]: [Measured; 2]) {
    let (aw, ac, bw, bc) = (a.wall, a.cpu, b.wall, b.cpu);
    let rate = |d| format!("{:.0} MiB/s", mib_s(d));
    row(
        link,
        &format!("pipe, {} B frames", frame()),
        &rate(aw),
        &rate(bw),
        mib_s(aw) / mib_s(bw),
    );
    let cpu = |d| format!("{:.0} ms", per_gib(d));
    let ratio = per_gib(ac) / per_gib(bc);
    row(link, "pipe, CPU per GiB (both)", &cpu(ac), &cpu(bc), ratio);
}

/// The rows of a call measure: round trip and (with `cpu`) CPU per call.
fn call_rows(link: &str, [a, b]: [Measured; 2], cpu: bool) {
    let (aw, ac, bw, bc) = (a.wall, a.cpu, b.wall, b.cpu);
    let us = |d: Duration| d.as_secs_f64() * 1e6 / CALLS as f64;
    let show = |d| format!("{:.1} µs", us(d));
    row(
        link,
        "call round trip (64 B)",
        &show(aw),
        &show(bw),
        us(aw) / us(bw),
    );
    if cpu {
        row(
            link,
            "call, CPU per call (both)",
            &show(ac),
            &show(bc),
            us(ac) / us(bc),
        );
        let per_call = |n: u64| n as f64 / CALLS as f64;
        row(
            link,
            "call, switches per call (both)",
            &format!("{:.2}", per_call(a.switches)),
            &format!("{:.2}", per_call(b.switches)),
            per_call(a.switches) / per_call(b.switches),
        );
    }
}

fn header(ours: &str, theirs: &str) {
    println!(
        "{:<6} {:<26} {:>14} {:>14} {:>10}",
        "link", "measure", ours, theirs, "ratio"
    );
}

fn main() {
    // OSCLOUD_BENCH_THREADS=N: N runtime worker threads per process
    // (default 2); 0: a current-thread runtime. OSCLOUD_BENCH_PEER_THREADS
    // sets the peer process's alone.
    let var = if std::env::var("OSCLOUD_PROCS_PEER").is_ok()
        && std::env::var("OSCLOUD_BENCH_PEER_THREADS").is_ok()
    {
        "OSCLOUD_BENCH_PEER_THREADS"
    } else {
        "OSCLOUD_BENCH_THREADS"
    };
    let threads: usize = std::env::var(var)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let rt = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    }
    .enable_all()
    .build()
    .unwrap();
    if let Ok(role) = std::env::var("OSCLOUD_PROCS_PEER") {
        rt.block_on(peer(&role));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = runs();
    println!("two nodes in two processes vs raw sockets between two processes; median of {n} runs");
    header("oscloud", "raw socket");
    // OSCLOUD_BENCH=secure: only encrypted against plaintext; =pipe or
    // =calls: only those plaintext measures (e.g. to profile them).
    let only = std::env::var("OSCLOUD_BENCH").unwrap_or_default();
    // OSCLOUD_BENCH_LINK=tcp or unix: that link only.
    let link_only = std::env::var("OSCLOUD_BENCH_LINK").unwrap_or_default();
    let links: Vec<&str> = if only == "secure" {
        Vec::new()
    } else {
        ["tcp", "unix"]
            .into_iter()
            .filter(|l| link_only.is_empty() || *l == link_only)
            .collect()
    };
    for link in links {
        let addr = |name: &str| match link {
            "tcp" => "tcp://127.0.0.1:0".to_owned(),
            _ => format!("unix://{}/{name}.sock", dir.path().display()),
        };
        let ours = Peer::start(format!("node {} plain", addr("node")));
        let raw = Peer::start(format!("raw {}", addr("raw")));
        let l = rt.block_on(link_node(&ours, false));
        if only == "casts" {
            let casts = || node_casts(&l);
            let [a, b] = measure(&rt, (&ours, casts), (&raw, || raw_pipe(&raw.addr, b'M')));
            let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64();
            let show = |d| format!("{:.0}/s", rate(d));
            row(
                link,
                "casts (64 B)",
                &show(a.wall),
                &show(b.wall),
                rate(a.wall) / rate(b.wall),
            );
            continue;
        }
        if only != "calls" {
            let pipe = || node_pipe(&l);
            pipe_rows(
                link,
                measure(&rt, (&ours, pipe), (&raw, || raw_pipe(&raw.addr, b'P'))),
            );
        }
        if only != "pipe" {
            let calls = || call_loop(l.server.clone());
            let ping_pong = || raw_ping_pong(&raw.addr, false);
            call_rows(link, measure(&rt, (&ours, calls), (&raw, ping_pong)), true);
            // The same calls against a baseline that has the server's
            // actor hop too.
            let with_actor = || raw_ping_pong(&raw.addr, true);
            let [a, b] = measure(&rt, (&ours, calls), (&raw, with_actor));
            let us = |d: Duration| d.as_secs_f64() * 1e6 / CALLS as f64;
            row(
                link,
                "call vs socket + ractor",
                &format!("{:.1} µs", us(a.wall)),
                &format!("{:.1} µs", us(b.wall)),
                us(a.wall) / us(b.wall),
            );
        }
    }
    if only == "pipe" || only == "calls" || only == "casts" {
        return;
    }
    // Encrypted against plaintext, over TCP.
    let sec = Peer::start("node tcp://127.0.0.1:0 secure".to_owned());
    let plain = Peer::start("node tcp://127.0.0.1:0 plain".to_owned());
    let ls = rt.block_on(link_node(&sec, true));
    let lp = rt.block_on(link_node(&plain, false));
    println!();
    header("encrypted", "plaintext");
    let (a, b) = (|| node_pipe(&ls), || node_pipe(&lp));
    pipe_rows("tcp", measure(&rt, (&sec, a), (&plain, b)));
    let (a, b) = (
        || call_loop(ls.server.clone()),
        || call_loop(lp.server.clone()),
    );
    call_rows("tcp", measure(&rt, (&sec, a), (&plain, b)), false);
}
