//! Two nodes in one process linked by a real TCP or Unix socket, against raw
//! tokio sockets doing the same work in the same run.
//!
//! `cargo bench -p oscloud-examples --bench node`
//!
//! - pipe throughput: 64 KiB frames through `ServerRef::open_pipe` to a
//!   sink server on the other node, vs `write_all`/`read` on a raw socket;
//! - 64-byte message rate: casts to a counting server (a final call is the
//!   barrier), vs 64-byte length-prefixed messages on a raw socket;
//! - call round trip: sequential calls, vs a raw 64-byte ping-pong, and vs
//!   the same ping-pong whose far side asks a plain ractor actor for each
//!   answer ("socket + ractor").
//!
//! `OSCLOUD_BENCH=secure`: encrypted against plaintext links over TCP;
//! `OSCLOUD_BENCH=ws`: WebSocket against TCP links.
//!
//! The pipe writer and the callers run in a task on a runtime worker, as a
//! server's code does (`OSCLOUD_BENCH_IN=main`: in `block_on`).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{
    Bench, CALLS, Counters, FRAME, MESSAGES, PIPE_BYTES, Sample, call_loop, cpu_time, median,
    median_n, msg64, on_worker, ping_pong, runs, used, write_pipe,
};
use oscloud_actors::{ServerRef, encode};
use oscloud_core::identity::{AllowList, NodeKey};
use oscloud_core::transport::Transports;
use oscloud_core::wire::SecureConfig;
use oscloud_core::{Kernel, Node, NodeConfig, RegistryEvent};
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use oscloud_transport_ws::WsTransport;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

struct Pair {
    client: Kernel,
    counters: Arc<Counters>,
    _nodes: (Node, Node),
    _dir: Option<tempfile::TempDir>,
}

async fn pair(unix: bool) -> Pair {
    pair_with(if unix { "unix" } else { "tcp" }, false).await
}

/// A pair of nodes linked by `link` (`tcp`, `unix` or `ws`); with
/// `secure`, every link runs the Noise handshake and seals every frame.
async fn pair_with(link: &str, secure: bool) -> Pair {
    let transports = Transports::new()
        .with(Arc::new(TcpTransport))
        .with(Arc::new(WsTransport::ws()))
        .with(Arc::new(UnixTransport));
    let (key_a, key_b) = (NodeKey::generate(), NodeKey::generate());
    let (ka, kb) = if secure {
        (
            Kernel::with_node(key_a.node_id()),
            Kernel::with_node(key_b.node_id()),
        )
    } else {
        (Kernel::new(), Kernel::new())
    };
    let counters = Arc::new(Counters::default());
    oscloud_actors::start(&ka, "bench", Bench(counters.clone()))
        .await
        .unwrap();
    // OSCLOUD_BENCH_WINDOW=<bytes> sets the per-pipe credit window.
    let mut config = NodeConfig::default();
    if let Some(w) = std::env::var("OSCLOUD_BENCH_WINDOW")
        .ok()
        .and_then(|w| w.parse().ok())
    {
        config.pipe_window = w;
    }
    // OSCLOUD_BENCH_RESUME=<seconds> turns on session resumption (the
    // sender then keeps unacknowledged packets on TCP/Unix links too).
    if let Some(g) = std::env::var("OSCLOUD_BENCH_RESUME")
        .ok()
        .and_then(|g| g.parse().ok())
    {
        config.resume_grace = std::time::Duration::from_secs(g);
    }
    let (a, b) = if secure {
        // OSCLOUD_BENCH_CIPHER=aesgcm or chacha: offer only that frame
        // cipher (default: AEGIS-256 where the machine has AES hardware).
        let cipher = std::env::var("OSCLOUD_BENCH_CIPHER").unwrap_or_default();
        let sc = |me: &NodeKey, peer: &NodeKey| {
            let mut c = SecureConfig::new(me.clone(), AllowList::from_keys([peer.public()]));
            c.offer_aegis = cipher.is_empty() || cipher == "aegis";
            c.offer_aes_gcm = cipher != "chacha";
            c
        };
        (
            Node::with_security(ka, transports.clone(), config.clone(), sc(&key_a, &key_b))
                .unwrap(),
            Node::with_security(kb.clone(), transports, config, sc(&key_b, &key_a)).unwrap(),
        )
    } else {
        (
            Node::with_config(ka, transports.clone(), config.clone()),
            Node::with_config(kb.clone(), transports, config),
        )
    };
    let (addr, dir) = match link {
        "unix" => {
            let dir = tempfile::tempdir().unwrap();
            let a = format!("unix://{}/a.sock", dir.path().display());
            (a, Some(dir))
        }
        "ws" => ("ws://127.0.0.1:0/oscloud".to_owned(), None),
        _ => ("tcp://127.0.0.1:0".to_owned(), None),
    };
    let at = a.listen(&addr.parse().unwrap()).await.unwrap();
    let mut watch = kb.registry().watch();
    b.connect(&at).await.unwrap();
    while let Some(ev) = watch.next().await {
        if matches!(&ev, RegistryEvent::Added(e) if e.name() == "bench") {
            break;
        }
    }
    Pair {
        client: kb,
        counters,
        _nodes: (a, b),
        _dir: dir,
    }
}

async fn node_pipe(p: &Pair) -> Duration {
    p.counters.bytes.store(0, Ordering::Relaxed);
    let (server, counters) = (ServerRef::new(&p.client, "bench"), p.counters.clone());
    on_worker(async move {
        let start = write_pipe(&server).await;
        counters.bytes_reach(PIPE_BYTES as u64).await;
        start.elapsed()
    })
    .await
}

async fn node_casts(p: &Pair) -> Duration {
    p.counters.casts.store(0, Ordering::Relaxed);
    let r = ServerRef::new(&p.client, "bench");
    let m = encode(&msg64()).unwrap();
    assert_eq!(m.len(), 64);
    let start = Instant::now();
    for _ in 0..MESSAGES {
        r.cast(m.clone()).await.unwrap();
    }
    // The call queues behind every cast on the link and in the mailbox.
    r.call(m.clone(), Duration::from_secs(60)).await.unwrap();
    let t = start.elapsed();
    assert_eq!(p.counters.casts.load(Ordering::Relaxed), MESSAGES);
    t
}

async fn node_calls(p: &Pair) -> Duration {
    call_loop(ServerRef::new(&p.client, "bench")).await
}

/// A connected pair of raw sockets of the kind asked for.
async fn raw_pair(unix: bool) -> (Box<dyn Duplex>, Box<dyn Duplex>, Option<tempfile::TempDir>) {
    if unix {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.sock");
        let l = UnixListener::bind(&path).unwrap();
        let c = UnixStream::connect(&path).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (Box::new(c), Box::new(s), Some(dir))
    } else {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        c.set_nodelay(true).unwrap();
        s.set_nodelay(true).unwrap();
        (Box::new(c), Box::new(s), None)
    }
}

trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

async fn raw_pipe(unix: bool) -> Duration {
    let (mut c, mut s, _d) = raw_pair(unix).await;
    on_worker(async move {
        let frame = vec![7u8; FRAME];
        let start = Instant::now();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; FRAME];
            let mut got = 0;
            while got < PIPE_BYTES {
                got += s.read(&mut buf).await.unwrap();
            }
        });
        for _ in 0..PIPE_BYTES / FRAME {
            c.write_all(&frame).await.unwrap();
        }
        reader.await.unwrap();
        start.elapsed()
    })
    .await
}

async fn raw_messages(unix: bool) -> Duration {
    let (c, s, _d) = raw_pair(unix).await;
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut r = BufReader::new(s);
        let mut msg = [0u8; 64];
        for _ in 0..MESSAGES {
            let len = r.read_u32().await.unwrap() as usize;
            r.read_exact(&mut msg[..len]).await.unwrap();
        }
    });
    let mut w = BufWriter::new(c);
    let m = [7u8; 64];
    for _ in 0..MESSAGES {
        w.write_u32(64).await.unwrap();
        w.write_all(&m).await.unwrap();
    }
    w.flush().await.unwrap();
    reader.await.unwrap();
    start.elapsed()
}

/// A 64-byte ping-pong on a raw socket pair; `through_actor`: the far
/// side asks a plain ractor actor for each answer.
async fn raw_ping_pong(unix: bool, through_actor: bool) -> Duration {
    let (c, mut s, _d) = raw_pair(unix).await;
    let echo = tokio::spawn(async move {
        if through_actor {
            common::serve_through_actor(&mut s, CALLS).await;
            return;
        }
        let mut m = [0u8; 64];
        for _ in 0..CALLS {
            s.read_exact(&mut m).await.unwrap();
            s.write_all(&m).await.unwrap();
        }
    });
    let t = ping_pong(c).await;
    echo.await.unwrap();
    t
}

/// Median times of `ours` and `raw`, run alternately `runs()` times each.
fn measure<FA, FB>(
    rt: &tokio::runtime::Runtime,
    ours: impl Fn() -> FA,
    raw: impl Fn() -> FB,
) -> (Sample, Sample)
where
    FA: std::future::Future<Output = Duration>,
    FB: std::future::Future<Output = Duration>,
{
    let (mut a, mut b, mut ca, mut cb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    // OSCLOUD_BENCH_SIDE=ours (or raw) runs one side only, to profile it.
    let side = std::env::var("OSCLOUD_BENCH_SIDE").unwrap_or_default();
    for _ in 0..runs() {
        if side != "raw" {
            let c = cpu_time();
            a.push(rt.block_on(ours()));
            let (cpu, switches) = used(c);
            ca.push(cpu);
            sa.push(switches);
        }
        if side != "ours" {
            let c = cpu_time();
            b.push(rt.block_on(raw()));
            let (cpu, switches) = used(c);
            cb.push(cpu);
            sb.push(switches);
        }
    }
    for v in [&mut a, &mut b, &mut ca, &mut cb] {
        if v.is_empty() {
            v.push(Duration::from_nanos(1));
        }
    }
    (
        Sample {
            wall: median(a),
            cpu: median(ca),
            switches: median_n(sa),
        },
        Sample {
            wall: median(b),
            cpu: median(cb),
            switches: median_n(sb),
        },
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "two nodes in one process vs raw sockets; median of {} runs",
        runs()
    );
    println!(
        "{:<6} {:<26} {:>14} {:>14} {:>10}",
        "link", "measure", "oscloud", "raw socket", "ratio"
    );
    // OSCLOUD_BENCH=pipe (or casts, calls) runs one measure only, e.g. to
    // profile it.
    let only = std::env::var("OSCLOUD_BENCH").unwrap_or_default();
    let run = |what: &str| only.is_empty() || only == what;
    if run("secure") {
        secure_vs_plain(&rt);
        if only == "secure" {
            return;
        }
    }
    if only == "ws" {
        ws_vs_tcp(&rt);
        return;
    }
    for unix in [false, true] {
        let link = if unix { "unix" } else { "tcp" };
        let p = rt.block_on(pair(unix));
        let mut rows = Vec::new();
        if run("pipe") {
            let (a, b) = measure(&rt, || node_pipe(&p), || raw_pipe(unix));
            let mib = |d: Duration| PIPE_BYTES as f64 / 1048576.0 / d.as_secs_f64();
            let (x, y) = (mib(a.wall), mib(b.wall));
            rows.push((
                "pipe, 64 KiB frames",
                format!("{x:.0} MiB/s"),
                format!("{y:.0} MiB/s"),
                x / y,
            ));
            // CPU time per GiB moved: what the pipe costs, whatever else
            // the machine is doing.
            let per_gib =
                |d: Duration| d.as_secs_f64() * 1e3 * (1 << 30) as f64 / PIPE_BYTES as f64;
            let (x, y) = (per_gib(a.cpu), per_gib(b.cpu));
            rows.push((
                "pipe, CPU per GiB",
                format!("{x:.0} ms"),
                format!("{y:.0} ms"),
                x / y,
            ));
        }
        if run("casts") {
            let (a, b) = measure(&rt, || node_casts(&p), || raw_messages(unix));
            let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64() / 1000.0;
            let (x, y) = (rate(a.wall), rate(b.wall));
            rows.push((
                "64-byte messages (casts)",
                format!("{x:.0} k/s"),
                format!("{y:.0} k/s"),
                x / y,
            ));
        }
        if run("calls") {
            let (a, b) = measure(&rt, || node_calls(&p), || raw_ping_pong(unix, false));
            let rtt = |d: Duration| d.as_secs_f64() * 1e6 / CALLS as f64;
            let (x, y) = (rtt(a.wall), rtt(b.wall));
            rows.push((
                "call round trip (64 B)",
                format!("{x:.1} µs"),
                format!("{y:.1} µs"),
                x / y,
            ));
            // CPU and context switches per call: what a call costs, much
            // less dependent on the machine's load than its wall time.
            let (x, y) = (rtt(a.cpu), rtt(b.cpu));
            rows.push((
                "call, CPU per call",
                format!("{x:.1} µs"),
                format!("{y:.1} µs"),
                x / y,
            ));
            let per_call = |n: u64| n as f64 / CALLS as f64;
            let (x, y) = (per_call(a.switches), per_call(b.switches));
            rows.push((
                "call, switches per call",
                format!("{x:.2}"),
                format!("{y:.2}"),
                x / y.max(1e-9),
            ));
            // Against a baseline that has the server's actor hop too.
            let (a, b) = measure(&rt, || node_calls(&p), || raw_ping_pong(unix, true));
            let (x, y) = (rtt(a.wall), rtt(b.wall));
            rows.push((
                "call vs socket + ractor",
                format!("{x:.1} µs"),
                format!("{y:.1} µs"),
                x / y,
            ));
        }
        for (m, x, y, r) in rows {
            println!("{link:<6} {m:<26} {x:>14} {y:>14} {r:>9.2}x");
        }
    }
}

/// Encrypted (Noise handshake, frames sealed with AEGIS-256 where the
/// machine has AES hardware; see `OSCLOUD_BENCH_CIPHER`) against plaintext
/// links, both over TCP, in the same run: pipe throughput, casts, call
/// round trip.
fn secure_vs_plain(rt: &tokio::runtime::Runtime) {
    println!(
        "encrypted vs plaintext links over TCP; median of {} runs",
        runs()
    );
    let sec = rt.block_on(pair_with("tcp", true));
    let plain = rt.block_on(pair_with("tcp", false));
    side_by_side(rt, "tcp", ("encrypted", &sec), ("plaintext", &plain));
}

/// WebSocket links (`ws://`, one frame per binary message, through the
/// link's bridge task) against TCP links, in the same run
/// (`OSCLOUD_BENCH=ws`).
fn ws_vs_tcp(rt: &tokio::runtime::Runtime) {
    println!(
        "WebSocket vs TCP links, plaintext; median of {} runs",
        runs()
    );
    let ws = rt.block_on(pair_with("ws", false));
    let tcp = rt.block_on(pair_with("tcp", false));
    side_by_side(rt, "ws", ("websocket", &ws), ("tcp", &tcp));
}

/// Pipe throughput, casts and call round trip of two pairs of nodes,
/// measured in turn.
fn side_by_side(rt: &tokio::runtime::Runtime, link: &str, x: (&str, &Pair), y: (&str, &Pair)) {
    println!(
        "{:<6} {:<26} {:>14} {:>14} {:>10}",
        "link", "measure", x.0, y.0, "ratio"
    );
    let ((_, first), (_, second)) = (x, y);
    let mut rows = Vec::new();
    let (a, b) = measure(rt, || node_pipe(first), || node_pipe(second));
    let mib = |d: Duration| PIPE_BYTES as f64 / 1048576.0 / d.as_secs_f64();
    let (x, y) = (mib(a.wall), mib(b.wall));
    rows.push((
        "pipe, 64 KiB frames",
        format!("{x:.0} MiB/s"),
        format!("{y:.0} MiB/s"),
        x / y,
    ));
    let per_gib = |d: Duration| d.as_secs_f64() * 1e3 * (1 << 30) as f64 / PIPE_BYTES as f64;
    let (x, y) = (per_gib(a.cpu), per_gib(b.cpu));
    rows.push((
        "pipe, CPU per GiB",
        format!("{x:.0} ms"),
        format!("{y:.0} ms"),
        x / y,
    ));
    // OSCLOUD_BENCH_SECURE=pipe: the pipe measures only (for quick reruns).
    let pipe_only = std::env::var("OSCLOUD_BENCH_SECURE").is_ok_and(|v| v == "pipe");
    let (a, b) = if pipe_only {
        (Sample::default(), Sample::default())
    } else {
        measure(rt, || node_casts(first), || node_casts(second))
    };
    let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64() / 1000.0;
    let (x, y) = (rate(a.wall), rate(b.wall));
    rows.push((
        "64-byte messages (casts)",
        format!("{x:.0} k/s"),
        format!("{y:.0} k/s"),
        x / y,
    ));
    let (a, b) = if pipe_only {
        (Sample::default(), Sample::default())
    } else {
        measure(rt, || node_calls(first), || node_calls(second))
    };
    let rtt = |d: Duration| d.as_secs_f64() * 1e6 / CALLS as f64;
    let (x, y) = (rtt(a.wall), rtt(b.wall));
    rows.push((
        "call round trip (64 B)",
        format!("{x:.1} µs"),
        format!("{y:.1} µs"),
        x / y,
    ));
    for (m, x, y, r) in rows {
        println!("{link:<6} {m:<26} {x:>14} {y:>14} {r:>9.2}x");
    }
}
