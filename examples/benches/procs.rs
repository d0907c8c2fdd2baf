//! oscloud between two OS processes against its baselines between the same
//! kind of two processes, in the same run: raw tokio sockets, raw
//! tokio-tungstenite, and zenoh 1.10.2 as the peer column.
//!
//! `cargo bench -p oscloud-examples --bench procs`
//! (`OSCLOUD_BENCH_QUICK=1`: a short smoke run).
//!
//! The bench starts itself again as each peer process (`OSCLOUD_PROCS_PEER`
//! set): a node with the bench server, a raw socket server, a raw
//! WebSocket server, or a zenoh peer (subscriber and queryables). Every
//! figure is one oscloud measure and its baseline run **interleaved in
//! rounds** (A B, B A, A B, ...): each round's oscloud figure is divided by
//! the same round's baseline, and the table gives the median ratio and its
//! min–max over the rounds. Beside every throughput ratio: CPU time (user +
//! system of both processes, each process's own `getrusage`) per GiB or
//! per message, and its ratio, taken the same way.
//!
//! Measures, per link (TCP on 127.0.0.1, Unix socket):
//!
//! - **pipe, 64 KiB writes** to the peer's sink server, timed until a call
//!   (`until N`) says every byte arrived; raw: `write_all` of 64 KiB, then
//!   the peer answers one byte once it has read them all;
//! - **pipe, 1 KiB writes**; raw: the same bytes through a 64 KiB
//!   `BufWriter`;
//! - **64 B casts** to a counting server, a final call as the barrier;
//!   raw: length-prefixed 64-byte messages through a 64 KiB `BufWriter`,
//!   the peer counts them through a `BufReader`;
//! - **call round trip**, sequential 64-byte calls (median and p99 per
//!   call); raw: a 64-byte ping-pong; "socket + ractor": the same
//!   ping-pong whose far side asks a plain ractor actor for each answer;
//! - **zenoh** (peer mode, explicit listen/connect endpoints, no scouting):
//!   the 64 KiB pipe against pub/sub of 64 KiB `put`s, 64 B casts against
//!   64 B `put`s (congestion control `Block`: nothing dropped), call round
//!   trip against `get` to a queryable, and calls/s with 64 in flight
//!   against `get`s with 64 in flight.
//!
//! Then over TCP: **WebSocket** links (`ws://`) against TCP links and
//! against raw tokio-tungstenite (pipe of 64 KiB frames, call round trip),
//! and **encrypted** links against plaintext ones.
//!
//! The whole suite runs once per runtime in `OSCLOUD_BENCH_WORKERS`
//! (default `default,1`): `default` is tokio's multi-thread runtime as
//! `#[tokio::main]` builds it (one worker per core), `1` a multi-thread
//! runtime with one worker; both processes of a measure use the same.
//! zenoh runs its own internal runtimes whatever this is.
//!
//! Knobs: `OSCLOUD_BENCH=pipe,casts,calls,zenoh,ws,secure` (groups to run;
//! default all; `secure-pipe`, only when named, runs the encrypted pipe
//! alone, without plaintext rounds, to profile it; `zenoh-casts`: of the
//! zenoh group, the casts alone), `OSCLOUD_BENCH_RUNS` (rounds, default 5),
//! `OSCLOUD_BENCH_LINK=tcp|unix`, `OSCLOUD_BENCH_WORKERS`,
//! `OSCLOUD_BENCH_QUICK=1` (sizes / 16, 3 rounds, default runtime only),
//! `OSCLOUD_BENCH_IN=main` (measured loops in `block_on`),
//! `OSCLOUD_BENCH_SETTINGS="pipe_window=1MiB, ..."` (node settings, both
//! processes), `OSCLOUD_BENCH_CIPHER=aegis|aesgcm|chacha`,
//! `OSCLOUD_BENCH_METRICS=MS` (both processes serve their metrics and
//! scrape them every MS ms).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Bench, Counters, cpu_time, msg64, on_worker};
use futures::{SinkExt, StreamExt};
use oscloud_actors::{ServerRef, encode};
use oscloud_core::identity::{AllowList, NodeKey};
use oscloud_core::transport::Transports;
use oscloud_core::wire::SecureConfig;
use oscloud_core::{Kernel, Node, NodeConfig, RegistryEvent};
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use oscloud_transport_ws::WsTransport;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader as TokioBufReader, BufWriter,
};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use zenoh::Wait;
use zenoh::bytes::ZBytes;
use zenoh::qos::CongestionControl;

/// Both sides' keys, fixed (throwaway keys for a bench).
const SECRET_PARENT: [u8; 32] = [11; 32];
const SECRET_PEER: [u8; 32] = [22; 32];
/// Calls in flight for the calls/s measure.
const IN_FLIGHT: usize = 64;
/// How long any one wait of the bench may take.
const LONG: Duration = Duration::from_secs(120);

/// How much each measure moves in one run.
#[derive(Clone, Copy)]
struct Sizes {
    /// Bytes of a 64 KiB-frame pipe run.
    pipe: u64,
    /// Bytes of a 1 KiB-frame pipe run.
    small_pipe: u64,
    /// 64 B messages of a cast run.
    casts: u64,
    /// Sequential calls of a round-trip run.
    calls: u64,
    /// Calls of a calls/s run (64 in flight).
    flight: u64,
    /// Rounds of every measure.
    rounds: usize,
}

impl Sizes {
    fn get() -> Self {
        let quick = quick();
        let d = if quick { 16 } else { 1 };
        Self {
            pipe: (256 << 20) / d,
            small_pipe: (64 << 20) / d,
            casts: 200_000 / d,
            calls: 20_000 / d,
            flight: 50_000 / d,
            rounds: std::env::var("OSCLOUD_BENCH_RUNS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(if quick { 3 } else { 5 }),
        }
    }
}

fn quick() -> bool {
    std::env::var("OSCLOUD_BENCH_QUICK").is_ok_and(|q| !q.is_empty() && q != "0")
}

fn transports() -> Transports {
    Transports::new()
        .with(Arc::new(TcpTransport))
        .with(Arc::new(UnixTransport))
        .with(Arc::new(WsTransport::ws()))
}

/// A node on `kernel`, secured with `me` admitting `peer` when `secure`.
fn node(kernel: Kernel, secure: bool, me: [u8; 32], peer: [u8; 32]) -> Node {
    let mut config = NodeConfig::default();
    if let Ok(settings) = std::env::var("OSCLOUD_BENCH_SETTINGS") {
        config.apply(&settings).unwrap();
    }
    let node = if secure {
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
    };
    // OSCLOUD_BENCH_METRICS=MS: serve the node's metrics over HTTP and
    // scrape them every MS milliseconds (both processes).
    if let Some(ms) = std::env::var("OSCLOUD_BENCH_METRICS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::spawn(scrape_metrics(node.clone(), Duration::from_millis(ms)));
    }
    node
}

/// Serve `node`'s metrics on loopback and GET them every `every`.
async fn scrape_metrics(node: Node, every: Duration) {
    let registry = oscloud_metrics::registry(&node);
    let server = oscloud_metrics::serve("127.0.0.1:0".parse().unwrap(), registry)
        .await
        .unwrap();
    loop {
        tokio::time::sleep(every).await;
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
            .await
            .unwrap();
        let mut text = Vec::new();
        s.read_to_end(&mut text).await.unwrap();
        assert!(text.starts_with(b"HTTP/1.1 200"));
    }
}

fn kernel(secure: bool, me: [u8; 32]) -> Kernel {
    if secure {
        Kernel::with_node(NodeKey::from_secret(me).node_id())
    } else {
        Kernel::new()
    }
}

// ---------------------------------------------------------------- peers

/// A count that one waiter can wait on until it reaches a target, without
/// a wake-up per increment.
#[derive(Default)]
struct Tally {
    n: AtomicU64,
    want: AtomicU64,
    reached: Notify,
}

impl Tally {
    fn add(&self, k: u64) {
        let n = self.n.fetch_add(k, Ordering::AcqRel) + k;
        if n >= self.want.load(Ordering::Acquire) {
            self.reached.notify_waiters();
        }
    }

    async fn reach(&self, target: u64) {
        self.want.store(target, Ordering::Release);
        loop {
            let woken = self.reached.notified();
            if self.n.load(Ordering::Acquire) >= target {
                self.want.store(u64::MAX, Ordering::Release);
                return;
            }
            woken.await;
        }
    }
}

/// The peer process: `node <addr> <plain|secure>`, `raw <addr>`,
/// `wsraw <addr>` or `zenoh <endpoint>`. Prints the address it listens at,
/// then answers `cpu` lines on stdin with its CPU time; ends when stdin
/// closes.
async fn peer(role: &str) {
    let mut words = role.split(' ');
    let (kind, addr, mode) = (
        words.next().unwrap(),
        words.next().unwrap(),
        words.next().unwrap_or(""),
    );
    let mut keep = Vec::<Box<dyn std::any::Any + Send>>::new();
    let at = match kind {
        "node" => {
            let secure = mode == "secure";
            let k = kernel(secure, SECRET_PEER);
            oscloud_actors::start(&k, "bench", Bench(Arc::new(Counters::default())))
                .await
                .unwrap();
            let n = node(k, secure, SECRET_PEER, SECRET_PARENT);
            let at = n.listen(&addr.parse().unwrap()).await.unwrap().to_string();
            keep.push(Box::new(n));
            at
        }
        "raw" => raw_listen(addr).await,
        "wsraw" => ws_listen(addr).await,
        "zenoh" => {
            let (session, at) = zenoh_serve(addr).await;
            keep.push(Box::new(session));
            at
        }
        _ => panic!("unknown peer role {kind}"),
    };
    println!("{at}");
    std::io::stdout().flush().unwrap();
    // Answer `cpu` until stdin closes.
    tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        let mut line = String::new();
        while stdin.lock().read_line(&mut line).is_ok_and(|n| n > 0) {
            let cpu = cpu_time().0;
            println!("{}", cpu.as_nanos());
            std::io::stdout().flush().unwrap();
            line.clear();
        }
    })
    .await
    .unwrap();
    drop(keep);
}

trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// Listen at `addr` (`tcp://` or `unix://`) and serve raw connections in
/// the background; the address bound.
async fn raw_listen(addr: &str) -> String {
    if let Some(path) = addr.strip_prefix("unix://") {
        let l = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(raw_serve(Box::new(s)));
            }
        });
        addr.to_owned()
    } else {
        let l = TcpListener::bind(addr.trim_start_matches("tcp://"))
            .await
            .unwrap();
        let at = format!("tcp://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                tokio::spawn(raw_serve(Box::new(s)));
            }
        });
        at
    }
}

/// One raw connection: its first byte says what it wants, the next eight
/// how much (bytes or messages).
async fn raw_serve(s: Box<dyn Duplex>) {
    let mut s = TokioBufReader::with_capacity(64 * 1024, s);
    let what = s.read_u8().await.unwrap();
    let n = s.read_u64().await.unwrap();
    match what {
        b'P' => {
            // Reads of up to 512 KiB, as a node's link reader does.
            let mut buf = vec![0u8; 512 * 1024];
            let mut got = 0u64;
            while got < n {
                got += s.read(&mut buf).await.unwrap() as u64;
            }
            s.write_all(b"k").await.unwrap();
        }
        b'C' => {
            let mut m = [0u8; 64];
            for _ in 0..n {
                let len = s.read_u32().await.unwrap() as usize;
                s.read_exact(&mut m[..len.min(64)]).await.unwrap();
            }
            s.write_all(b"k").await.unwrap();
        }
        b'A' => common::serve_through_actor(&mut s, n).await,
        _ => {
            let mut m = [0u8; 64];
            for _ in 0..n {
                s.read_exact(&mut m).await.unwrap();
                s.write_all(&m).await.unwrap();
            }
        }
    }
}

/// Listen at `addr` (`ws://host:port/...`) with raw tokio-tungstenite.
async fn ws_listen(addr: &str) -> String {
    let hostport = addr
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let l = TcpListener::bind(hostport).await.unwrap();
    let at = format!("ws://{}/", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                let Some(Ok(Message::Binary(first))) = ws.next().await else {
                    return;
                };
                let n = u64::from_be_bytes(first[1..9].try_into().unwrap());
                if first[0] == b'P' {
                    let mut got = 0u64;
                    while got < n {
                        if let Some(Ok(Message::Binary(b))) = ws.next().await {
                            got += b.len() as u64;
                        }
                    }
                    ws.send(Message::Binary(Bytes::from_static(b"k")))
                        .await
                        .unwrap();
                } else {
                    for _ in 0..n {
                        let Some(Ok(m)) = ws.next().await else { return };
                        ws.send(m).await.unwrap();
                    }
                }
            });
        }
    });
    at
}

/// Key expressions of the zenoh peer.
const Z_DATA: &str = "bench/data";
const Z_ECHO: &str = "bench/echo";
const Z_UNTIL: &str = "bench/until";

fn zenoh_config(listen: &[String], connect: &[String]) -> zenoh::Config {
    let mut c = zenoh::Config::default();
    let list = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    c.insert_json5("mode", "\"peer\"").unwrap();
    c.insert_json5("scouting/multicast/enabled", "false")
        .unwrap();
    c.insert_json5("scouting/gossip/enabled", "false").unwrap();
    c.insert_json5("listen/endpoints", &list(listen)).unwrap();
    c.insert_json5("connect/endpoints", &list(connect)).unwrap();
    c
}

/// The zenoh peer: listens at `endpoint` (`tcp/127.0.0.1:0` picks a port),
/// a subscriber on `bench/data` counting bytes and samples, a queryable
/// `bench/echo` answering with the query's payload, and `bench/until`
/// answering once the subscriber has counted `bytes N` or `samples N`.
async fn zenoh_serve(endpoint: &str) -> (zenoh::Session, String) {
    let endpoint = if let Some(host) = endpoint.strip_prefix("tcp/")
        && host.ends_with(":0")
    {
        // A free port, chosen here: zenoh then listens at exactly this.
        let port = std::net::TcpListener::bind(host)
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("tcp/{}:{port}", host.trim_end_matches(":0"))
    } else {
        endpoint.to_owned()
    };
    let session = zenoh::open(zenoh_config(std::slice::from_ref(&endpoint), &[]))
        .await
        .unwrap();
    let (bytes, samples) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let (b, s) = (bytes.clone(), samples.clone());
    session
        .declare_subscriber(Z_DATA)
        .callback(move |sample| {
            b.add(sample.payload().len() as u64);
            s.add(1);
        })
        .background()
        .await
        .unwrap();
    // Answered in zenoh's callback: no hop to a task of this runtime.
    session
        .declare_queryable(Z_ECHO)
        .callback(|q| {
            let payload = q.payload().cloned().unwrap_or_default();
            q.reply(Z_ECHO, payload).wait().unwrap();
        })
        .background()
        .await
        .unwrap();
    let until = session.declare_queryable(Z_UNTIL).await.unwrap();
    tokio::spawn(async move {
        while let Ok(q) = until.recv_async().await {
            let (bytes, samples) = (bytes.clone(), samples.clone());
            tokio::spawn(async move {
                let ask = q
                    .payload()
                    .map(|p| String::from_utf8_lossy(&p.to_bytes()).into_owned())
                    .unwrap_or_default();
                let (what, n) = ask.split_once(' ').unwrap();
                let n: u64 = n.parse().unwrap();
                if what == "bytes" {
                    bytes.reach(n).await;
                } else {
                    samples.reach(n).await;
                }
                q.reply(Z_UNTIL, "ok").await.unwrap();
            });
        }
    });
    (session, endpoint)
}

/// A peer process and the address it listens on.
struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
    addr: String,
}

impl Peer {
    fn start(role: String, workers: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("OSCLOUD_PROCS_PEER", role)
            .env("OSCLOUD_BENCH_WORKERS", workers)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        Self {
            child,
            out,
            addr: line.trim().to_owned(),
        }
    }

    /// The peer's CPU time so far (user + system, every thread, from its
    /// own `getrusage`).
    fn cpu(&mut self) -> Duration {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"cpu\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        Duration::from_nanos(line.trim().parse().unwrap())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------- the measures

/// What one run of a measure took: wall time and, for round trips, the
/// 99th percentile of one.
#[derive(Clone, Copy, Default)]
struct Timing {
    wall: Duration,
    p99: Duration,
}

impl From<Duration> for Timing {
    fn from(wall: Duration) -> Self {
        Self {
            wall,
            p99: Duration::ZERO,
        }
    }
}

/// Wall time of `lat` (one entry per round trip) and its p99.
fn rtt(wall: Duration, mut lat: Vec<Duration>) -> Timing {
    lat.sort_unstable();
    let p99 = lat
        .get(lat.len() * 99 / 100)
        .copied()
        .unwrap_or(Duration::ZERO);
    Timing { wall, p99 }
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

async fn node_pipe(l: &Linked, bytes: u64, frame: usize) -> Timing {
    l.sent.set(l.sent.get() + bytes);
    let until = encode(&format!("until {}", l.sent.get())).unwrap();
    let server = l.server.clone();
    on_worker(async move {
        let end = server.open_pipe("in").await.unwrap();
        let f = Bytes::from(vec![7u8; frame]);
        let start = Instant::now();
        let (_, w) = end.split();
        for _ in 0..bytes / frame as u64 {
            w.send(f.clone()).await.unwrap();
        }
        server.call(until, LONG).await.unwrap();
        start.elapsed()
    })
    .await
    .into()
}

async fn node_casts(l: &Linked, n: u64) -> Timing {
    let server = l.server.clone();
    on_worker(async move {
        let m = encode(&msg64()).unwrap();
        let start = Instant::now();
        for _ in 0..n {
            // A full link queue makes the cast wait for room.
            server.cast(m.clone()).await.unwrap();
        }
        // The call queues behind every cast on the link and in the mailbox.
        server.call(m, LONG).await.unwrap();
        start.elapsed()
    })
    .await
    .into()
}

async fn node_calls(server: &ServerRef, n: u64) -> Timing {
    let server = server.clone();
    let mut lat = Vec::with_capacity(n as usize);
    let (wall, lat) = on_worker(async move {
        let m = encode(&msg64()).unwrap();
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            server.call(m.clone(), LONG).await.unwrap();
            lat.push(t.elapsed());
        }
        (start.elapsed(), lat)
    })
    .await;
    rtt(wall, lat)
}

async fn node_flight(server: &ServerRef, n: u64) -> Timing {
    let server = server.clone();
    on_worker(async move {
        let m = encode(&msg64()).unwrap();
        let start = Instant::now();
        futures::stream::iter(0..n)
            .map(|_| server.call(m.clone(), LONG))
            .buffer_unordered(IN_FLIGHT)
            .for_each(|r| {
                r.unwrap();
                async {}
            })
            .await;
        start.elapsed()
    })
    .await
    .into()
}

async fn raw_connect(addr: &str, what: u8, n: u64) -> Box<dyn Duplex> {
    let mut s: Box<dyn Duplex> = if let Some(path) = addr.strip_prefix("unix://") {
        Box::new(UnixStream::connect(path).await.unwrap())
    } else {
        let s = TcpStream::connect(addr.trim_start_matches("tcp://"))
            .await
            .unwrap();
        s.set_nodelay(true).unwrap();
        Box::new(s)
    };
    s.write_u8(what).await.unwrap();
    s.write_u64(n).await.unwrap();
    s
}

/// `count` writes of `frame` bytes to the raw peer, through a 64 KiB
/// `BufWriter` when `buffered`, timed until the peer's one-byte answer.
/// `what`: `P`, the peer counts bytes; `C`, each write is a message with a
/// 4-byte length before it, and the peer counts messages.
async fn raw_send(addr: &str, what: u8, count: u64, frame: usize, buffered: bool) -> Timing {
    let prefixed = what == b'C';
    let total = if prefixed {
        count
    } else {
        count * frame as u64
    };
    let s = raw_connect(addr, what, total).await;
    on_worker(async move {
        let f = vec![7u8; frame];
        let start = Instant::now();
        let mut s = BufWriter::with_capacity(if buffered { 64 * 1024 } else { 0 }, s);
        for _ in 0..count {
            if prefixed {
                s.write_u32(frame as u32).await.unwrap();
            }
            s.write_all(&f).await.unwrap();
        }
        s.flush().await.unwrap();
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).await.unwrap();
        start.elapsed()
    })
    .await
    .into()
}

/// `n` 64-byte ping-pongs with the raw peer; `through_actor`: the peer asks
/// a plain ractor actor for each answer.
async fn raw_ping_pong(addr: &str, n: u64, through_actor: bool) -> Timing {
    let mut s = raw_connect(addr, if through_actor { b'A' } else { b'E' }, n).await;
    let (wall, lat) = on_worker(async move {
        let mut m = [7u8; 64];
        let mut lat = Vec::with_capacity(n as usize);
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            s.write_all(&m).await.unwrap();
            s.read_exact(&mut m).await.unwrap();
            lat.push(t.elapsed());
        }
        (start.elapsed(), lat)
    })
    .await;
    rtt(wall, lat)
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(addr: &str, what: u8, n: u64) -> Ws {
    let hostport = addr.trim_start_matches("ws://").trim_end_matches('/');
    let tcp = TcpStream::connect(hostport).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(addr, tcp).await.unwrap();
    let mut first = vec![what];
    first.extend_from_slice(&n.to_be_bytes());
    ws.send(Message::Binary(first.into())).await.unwrap();
    ws
}

/// `bytes` in 64 KiB binary messages with raw tokio-tungstenite.
async fn ws_pipe(addr: &str, bytes: u64) -> Timing {
    let mut ws = ws_connect(addr, b'P', bytes).await;
    on_worker(async move {
        let f = Bytes::from(vec![7u8; 64 * 1024]);
        let start = Instant::now();
        for _ in 0..bytes / f.len() as u64 {
            ws.send(Message::Binary(f.clone())).await.unwrap();
        }
        ws.next().await.unwrap().unwrap();
        start.elapsed()
    })
    .await
    .into()
}

/// `n` 64-byte binary-message ping-pongs with raw tokio-tungstenite.
async fn ws_ping_pong(addr: &str, n: u64) -> Timing {
    let mut ws = ws_connect(addr, b'E', n).await;
    let (wall, lat) = on_worker(async move {
        let m = Bytes::from(vec![7u8; 64]);
        let mut lat = Vec::with_capacity(n as usize);
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            ws.send(Message::Binary(m.clone())).await.unwrap();
            ws.next().await.unwrap().unwrap();
            lat.push(t.elapsed());
        }
        (start.elapsed(), lat)
    })
    .await;
    rtt(wall, lat)
}

/// A zenoh session in this process connected to a zenoh peer, with the
/// peer's subscriber and queryables reachable.
struct Zenoh {
    session: zenoh::Session,
    sent_bytes: std::cell::Cell<u64>,
    sent_samples: std::cell::Cell<u64>,
}

async fn zenoh_connect(peer: &Peer) -> Zenoh {
    let session = zenoh::open(zenoh_config(&[], std::slice::from_ref(&peer.addr)))
        .await
        .unwrap();
    // Until the peer's queryable answers (its declarations have arrived).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let replies = session
            .get(Z_ECHO)
            .timeout(Duration::from_secs(1))
            .await
            .unwrap();
        if let Ok(r) = replies.recv_async().await
            && r.result().is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the zenoh peer never answered");
    }
    Zenoh {
        session,
        sent_bytes: std::cell::Cell::new(0),
        sent_samples: std::cell::Cell::new(0),
    }
}

impl Zenoh {
    /// Wait until the peer's subscriber counted `what` (`bytes N` or
    /// `samples N`).
    async fn until(session: &zenoh::Session, what: String) {
        let replies = session
            .get(Z_UNTIL)
            .payload(what)
            .timeout(LONG)
            .await
            .unwrap();
        replies.recv_async().await.unwrap().result().unwrap();
    }

    /// `n` `put`s of `size` bytes on `bench/data` (congestion control
    /// `Block`: none dropped), timed until the subscriber counted them.
    async fn puts(&self, n: u64, size: usize) -> Timing {
        self.sent_bytes.set(self.sent_bytes.get() + n * size as u64);
        self.sent_samples.set(self.sent_samples.get() + n);
        let what = if size > 64 {
            format!("bytes {}", self.sent_bytes.get())
        } else {
            format!("samples {}", self.sent_samples.get())
        };
        let session = self.session.clone();
        on_worker(async move {
            let publisher = session
                .declare_publisher(Z_DATA)
                .congestion_control(CongestionControl::Block)
                .await
                .unwrap();
            let payload = ZBytes::from(vec![7u8; size]);
            let start = Instant::now();
            for _ in 0..n {
                publisher.put(payload.clone()).await.unwrap();
            }
            Self::until(&session, what).await;
            let t = start.elapsed();
            drop(publisher);
            t
        })
        .await
        .into()
    }

    /// `n` sequential 64-byte `get`s to the echo queryable.
    async fn gets(&self, n: u64) -> Timing {
        let session = self.session.clone();
        let (wall, lat) = on_worker(async move {
            let payload = ZBytes::from(vec![7u8; 64]);
            let mut lat = Vec::with_capacity(n as usize);
            let start = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                let replies = session
                    .get(Z_ECHO)
                    .payload(payload.clone())
                    .timeout(LONG)
                    .await
                    .unwrap();
                replies.recv_async().await.unwrap().result().unwrap();
                lat.push(t.elapsed());
            }
            (start.elapsed(), lat)
        })
        .await;
        rtt(wall, lat)
    }

    /// `n` 64-byte `get`s, 64 in flight.
    async fn flight(&self, n: u64) -> Timing {
        let session = self.session.clone();
        on_worker(async move {
            let payload = ZBytes::from(vec![7u8; 64]);
            let start = Instant::now();
            futures::stream::iter(0..n)
                .map(|_| {
                    let (session, payload) = (session.clone(), payload.clone());
                    async move {
                        let replies = session
                            .get(Z_ECHO)
                            .payload(payload)
                            .timeout(LONG)
                            .await
                            .unwrap();
                        replies.recv_async().await.unwrap().result().unwrap();
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .for_each(|()| async {})
                .await;
            start.elapsed()
        })
        .await
        .into()
    }
}

// ------------------------------------------------------------ rounds

/// One run of one side: its timing and the CPU time of this process and
/// of the peer it ran against.
#[derive(Clone, Copy)]
struct Run {
    t: Timing,
    cpu_here: Duration,
    cpu_peer: Duration,
}

impl Run {
    fn cpu(&self) -> Duration {
        self.cpu_here + self.cpu_peer
    }
}

/// `rounds` rounds of A and B, interleaved (A B, B A, ...).
fn rounds<FA, FB>(
    rt: &tokio::runtime::Runtime,
    rounds: usize,
    (a_peer, a): (&mut Peer, impl Fn() -> FA),
    (b_peer, b): (&mut Peer, impl Fn() -> FB),
) -> Vec<[Run; 2]>
where
    FA: std::future::Future<Output = Timing>,
    FB: std::future::Future<Output = Timing>,
{
    // A first run of each, not counted: connections and buffers warm.
    rt.block_on(a());
    rt.block_on(b());
    let mut out = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let mut got = [None, None];
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let peer = if side == 0 {
                &mut *a_peer
            } else {
                &mut *b_peer
            };
            let (here, there) = (cpu_time().0, peer.cpu());
            let t = if side == 0 {
                rt.block_on(a())
            } else {
                rt.block_on(b())
            };
            got[side] = Some(Run {
                t,
                cpu_here: cpu_time().0 - here,
                cpu_peer: peer.cpu() - there,
            });
        }
        out.push([got[0].unwrap(), got[1].unwrap()]);
    }
    out
}

/// Median, min and max of `v`.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn ratio_cell((med, lo, hi): (f64, f64, f64)) -> String {
    format!("**{med:.2}×** ({lo:.2}–{hi:.2})")
}

/// The table's header (markdown, as BENCHMARKS.md has it).
fn header(title: &str, a: &str, b: &str) {
    println!("\n{title}\n");
    println!(
        "| link | measure | {a} | {b} | {a} / {b}, median (min–max) | CPU, {a} / {b} | CPU ratio, median (min–max) |"
    );
    println!("|---|---|---|---|---|---|---|");
}

/// A throughput row: `amount` units per run; CPU per `per` units.
fn rate_row(
    link: &str,
    measure: &str,
    runs: &[[Run; 2]],
    (amount, unit): (f64, &str),
    (per, per_unit, cpu_unit): (f64, &str, &str),
) {
    let rate = |r: &Run| amount / r.t.wall.as_secs_f64();
    let cpu = |r: &Run| r.cpu().as_secs_f64() * per / amount;
    let med =
        |f: &dyn Fn(&Run) -> f64, side: usize| spread(runs.iter().map(|r| f(&r[side])).collect()).0;
    let ratio = spread(runs.iter().map(|r| rate(&r[0]) / rate(&r[1])).collect());
    let cpu_ratio = spread(runs.iter().map(|r| cpu(&r[0]) / cpu(&r[1])).collect());
    let (scale, cpu_scale) = (
        if unit == "MiB/s" {
            1.0 / 1048576.0
        } else {
            1e-3
        },
        if cpu_unit == "ms" { 1e3 } else { 1e6 },
    );
    let u = if unit == "MiB/s" { "MiB/s" } else { "k/s" };
    println!(
        "| {link} | {measure} | {:.0} {u} | {:.0} {u} | {} | {:.2} / {:.2} {cpu_unit} per {per_unit} | {} |",
        med(&rate, 0) * scale,
        med(&rate, 1) * scale,
        ratio_cell(ratio),
        med(&cpu, 0) * cpu_scale,
        med(&cpu, 1) * cpu_scale,
        ratio_cell(cpu_ratio),
    );
}

/// A round-trip row: `n` round trips per run; the median per call, its
/// ratio, and the p99 ratio; CPU per call.
fn rtt_row(link: &str, measure: &str, runs: &[[Run; 2]], n: u64) {
    let us = |r: &Run| r.t.wall.as_secs_f64() * 1e6 / n as f64;
    let p99 = |r: &Run| r.t.p99.as_secs_f64() * 1e6;
    let cpu = |r: &Run| r.cpu().as_secs_f64() * 1e6 / n as f64;
    let med =
        |f: &dyn Fn(&Run) -> f64, side: usize| spread(runs.iter().map(|r| f(&r[side])).collect()).0;
    let ratio = spread(runs.iter().map(|r| us(&r[0]) / us(&r[1])).collect());
    let p99_ratio = spread(runs.iter().map(|r| p99(&r[0]) / p99(&r[1])).collect());
    let cpu_ratio = spread(runs.iter().map(|r| cpu(&r[0]) / cpu(&r[1])).collect());
    println!(
        "| {link} | {measure} | {:.1} µs (p99 {:.0}) | {:.1} µs (p99 {:.0}) | {}; p99 {} | {:.1} / {:.1} µs per call | {} |",
        med(&us, 0),
        med(&p99, 0),
        med(&us, 1),
        med(&p99, 1),
        ratio_cell(ratio),
        ratio_cell(p99_ratio),
        med(&cpu, 0),
        med(&cpu, 1),
        ratio_cell(cpu_ratio),
    );
}

/// The receiver's CPU per message of a cast measure, both sides.
fn receiver_row(link: &str, measure: &str, runs: &[[Run; 2]], n: u64) {
    let us = |r: &Run| r.cpu_peer.as_secs_f64() * 1e6 / n as f64;
    let med = |side: usize| spread(runs.iter().map(|r| us(&r[side])).collect()).0;
    let ratio = spread(runs.iter().map(|r| us(&r[0]) / us(&r[1])).collect());
    println!(
        "| {link} | {measure} | {:.2} µs/msg | {:.2} µs/msg | {} | | |",
        med(0),
        med(1),
        ratio_cell(ratio),
    );
}

// ------------------------------------------------------------ the suite

/// Whether `OSCLOUD_BENCH` names `group` (groups that run only when named).
fn explicitly(group: &str) -> bool {
    std::env::var("OSCLOUD_BENCH").is_ok_and(|b| b.split(',').any(|g| g.trim() == group))
}

fn wants(group: &str) -> bool {
    std::env::var("OSCLOUD_BENCH").map_or(true, |b| b.is_empty()) || explicitly(group)
}

fn runtime(workers: &str) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Ok(n) = workers.parse::<usize>() {
        b.worker_threads(n);
    }
    b.enable_all().build().unwrap()
}

/// One runtime's measures: each pair of sides run in interleaved rounds,
/// then printed as a row.
struct Measures<'a> {
    rt: &'a tokio::runtime::Runtime,
    rounds: usize,
}

impl Measures<'_> {
    /// Two sides in rounds, printed as a throughput row: `amount` units
    /// per run, CPU per `per`.
    fn rate<FA, FB>(
        &self,
        (link, measure): (&str, &str),
        amount: (f64, &str),
        per: (f64, &str, &str),
        a: (&mut Peer, impl Fn() -> FA),
        b: (&mut Peer, impl Fn() -> FB),
    ) -> Vec<[Run; 2]>
    where
        FA: std::future::Future<Output = Timing>,
        FB: std::future::Future<Output = Timing>,
    {
        let r = rounds(self.rt, self.rounds, a, b);
        rate_row(link, measure, &r, amount, per);
        r
    }

    /// A pipe of `bytes`: MiB/s and CPU per GiB.
    fn pipe<FA, FB>(
        &self,
        row: (&str, &str),
        bytes: u64,
        a: (&mut Peer, impl Fn() -> FA),
        b: (&mut Peer, impl Fn() -> FB),
    ) where
        FA: std::future::Future<Output = Timing>,
        FB: std::future::Future<Output = Timing>,
    {
        let gib = (1u64 << 30) as f64;
        self.rate(row, (bytes as f64, "MiB/s"), (gib, "GiB", "ms"), a, b);
    }

    /// `n` one-way messages: k/s and CPU per message, then the receiver's
    /// CPU per message.
    fn messages<FA, FB>(
        &self,
        (link, measure): (&str, &str),
        n: u64,
        a: (&mut Peer, impl Fn() -> FA),
        b: (&mut Peer, impl Fn() -> FB),
    ) where
        FA: std::future::Future<Output = Timing>,
        FB: std::future::Future<Output = Timing>,
    {
        let r = self.rate(
            (link, measure),
            (n as f64, "msg/s"),
            (1.0, "msg", "µs"),
            a,
            b,
        );
        receiver_row(link, &format!("{measure}, receiver CPU"), &r, n);
    }

    /// `n` round trips: time per round trip, p99 and CPU per round trip.
    fn round_trips<FA, FB>(
        &self,
        (link, measure): (&str, &str),
        n: u64,
        a: (&mut Peer, impl Fn() -> FA),
        b: (&mut Peer, impl Fn() -> FB),
    ) where
        FA: std::future::Future<Output = Timing>,
        FB: std::future::Future<Output = Timing>,
    {
        rtt_row(link, measure, &rounds(self.rt, self.rounds, a, b), n);
    }
}

fn suite(workers: &str, sz: Sizes, dir: &std::path::Path) {
    let rt = runtime(workers);
    let m = Measures {
        rt: &rt,
        rounds: sz.rounds,
    };
    let label = if workers == "default" {
        "tokio's default runtime (a worker per core)".to_owned()
    } else {
        format!("{workers} runtime worker(s) per process")
    };
    let n = sz.rounds;
    let links: Vec<&str> = ["tcp", "unix"]
        .into_iter()
        .filter(|l| {
            std::env::var("OSCLOUD_BENCH_LINK").map_or(true, |only| only.is_empty() || only == *l)
        })
        .collect();
    let addr = |link: &str, name: &str| match link {
        "tcp" => "tcp://127.0.0.1:0".to_owned(),
        _ => format!("unix://{}/{name}-{workers}.sock", dir.display()),
    };
    const BIG: usize = 64 * 1024;
    if wants("pipe") || wants("casts") || wants("calls") {
        header(
            &format!("oscloud against raw sockets, two processes, {label}, {n} rounds"),
            "oscloud",
            "raw",
        );
        for &link in &links {
            let mut ours = Peer::start(format!("node {} plain", addr(link, "node")), workers);
            let mut raw = Peer::start(format!("raw {}", addr(link, "raw")), workers);
            let l = rt.block_on(link_node(&ours, false));
            let raw_addr = raw.addr.clone();
            if wants("pipe") {
                m.pipe(
                    (link, "pipe, 64 KiB writes"),
                    sz.pipe,
                    (&mut ours, || node_pipe(&l, sz.pipe, BIG)),
                    (&mut raw, || {
                        raw_send(&raw_addr, b'P', sz.pipe / BIG as u64, BIG, false)
                    }),
                );
                m.pipe(
                    (link, "pipe, 1 KiB writes (raw: 64 KiB `BufWriter`)"),
                    sz.small_pipe,
                    (&mut ours, || node_pipe(&l, sz.small_pipe, 1024)),
                    (&mut raw, || {
                        raw_send(&raw_addr, b'P', sz.small_pipe / 1024, 1024, true)
                    }),
                );
            }
            if wants("casts") {
                m.messages(
                    (link, "64 B casts (raw: `BufWriter`)"),
                    sz.casts,
                    (&mut ours, || node_casts(&l, sz.casts)),
                    (&mut raw, || raw_send(&raw_addr, b'C', sz.casts, 64, true)),
                );
            }
            if wants("calls") {
                m.round_trips(
                    (link, "call round trip, 64 B"),
                    sz.calls,
                    (&mut ours, || node_calls(&l.server, sz.calls)),
                    (&mut raw, || raw_ping_pong(&raw_addr, sz.calls, false)),
                );
                m.round_trips(
                    (link, "call vs socket + ractor"),
                    sz.calls,
                    (&mut ours, || node_calls(&l.server, sz.calls)),
                    (&mut raw, || raw_ping_pong(&raw_addr, sz.calls, true)),
                );
            }
        }
    }
    let zenoh_all = wants("zenoh");
    if zenoh_all || wants("zenoh-casts") {
        header(
            &format!("oscloud against zenoh 1.10.2, two processes, {label}, {n} rounds"),
            "oscloud",
            "zenoh",
        );
        for &link in &links {
            let mut ours = Peer::start(format!("node {} plain", addr(link, "znode")), workers);
            let endpoint = match link {
                "tcp" => "tcp/127.0.0.1:0".to_owned(),
                _ => format!("unixsock-stream/{}/zenoh-{workers}.sock", dir.display()),
            };
            let mut z = Peer::start(format!("zenoh {endpoint}"), workers);
            let l = rt.block_on(link_node(&ours, false));
            let zs = rt.block_on(zenoh_connect(&z));
            if zenoh_all {
                m.pipe(
                    (link, "pipe 64 KiB writes vs pub/sub 64 KiB `put`"),
                    sz.pipe,
                    (&mut ours, || node_pipe(&l, sz.pipe, BIG)),
                    (&mut z, || zs.puts(sz.pipe / BIG as u64, BIG)),
                );
            }
            m.messages(
                (link, "64 B casts vs 64 B `put`"),
                sz.casts,
                (&mut ours, || node_casts(&l, sz.casts)),
                (&mut z, || zs.puts(sz.casts, 64)),
            );
            if !zenoh_all {
                continue;
            }
            m.round_trips(
                (link, "call round trip vs `get`, 64 B"),
                sz.calls,
                (&mut ours, || node_calls(&l.server, sz.calls)),
                (&mut z, || zs.gets(sz.calls)),
            );
            m.rate(
                (link, "calls/s vs `get`/s, 64 B, 64 in flight"),
                (sz.flight as f64, "call/s"),
                (1.0, "call", "µs"),
                (&mut ours, || node_flight(&l.server, sz.flight)),
                (&mut z, || zs.flight(sz.flight)),
            );
        }
    }
    if wants("ws") {
        header(
            &format!("oscloud over WebSocket, two processes, {label}, {n} rounds"),
            "ws",
            "baseline",
        );
        let mut ws = Peer::start("node ws://127.0.0.1:0/oscloud plain".to_owned(), workers);
        let mut tcp = Peer::start("node tcp://127.0.0.1:0 plain".to_owned(), workers);
        let mut raw = Peer::start("wsraw ws://127.0.0.1:0/".to_owned(), workers);
        let (lw, lt) = (
            rt.block_on(link_node(&ws, false)),
            rt.block_on(link_node(&tcp, false)),
        );
        let raw_addr = raw.addr.clone();
        m.pipe(
            ("ws", "pipe 64 KiB, baseline: oscloud over tcp"),
            sz.pipe,
            (&mut ws, || node_pipe(&lw, sz.pipe, BIG)),
            (&mut tcp, || node_pipe(&lt, sz.pipe, BIG)),
        );
        m.pipe(
            ("ws", "pipe 64 KiB, baseline: raw tokio-tungstenite"),
            sz.pipe,
            (&mut ws, || node_pipe(&lw, sz.pipe, BIG)),
            (&mut raw, || ws_pipe(&raw_addr, sz.pipe)),
        );
        m.round_trips(
            ("ws", "call round trip, baseline: oscloud over tcp"),
            sz.calls,
            (&mut ws, || node_calls(&lw.server, sz.calls)),
            (&mut tcp, || node_calls(&lt.server, sz.calls)),
        );
        m.round_trips(
            ("ws", "call round trip, baseline: raw tokio-tungstenite"),
            sz.calls,
            (&mut ws, || node_calls(&lw.server, sz.calls)),
            (&mut raw, || ws_ping_pong(&raw_addr, sz.calls)),
        );
    }
    // OSCLOUD_BENCH=secure-pipe (named explicitly, never part of the
    // default suite): the encrypted pipe alone, no plaintext rounds, so a
    // profiler attached to both processes sees only sealing and opening.
    if explicitly("secure-pipe") {
        let sec = Peer::start("node tcp://127.0.0.1:0 secure".to_owned(), workers);
        let ls = rt.block_on(link_node(&sec, true));
        for round in 1..=n {
            let t = rt.block_on(node_pipe(&ls, sz.pipe, BIG));
            let rate = sz.pipe as f64 / t.wall.as_secs_f64() / (1u64 << 20) as f64;
            println!("encrypted pipe alone, round {round}: {rate:.0} MiB/s");
        }
        drop(ls);
        drop(sec);
    }
    if wants("secure") {
        header(
            &format!("encrypted against plaintext links, two processes, {label}, {n} rounds"),
            "encrypted",
            "plaintext",
        );
        let mut sec = Peer::start("node tcp://127.0.0.1:0 secure".to_owned(), workers);
        let mut plain = Peer::start("node tcp://127.0.0.1:0 plain".to_owned(), workers);
        let ls = rt.block_on(link_node(&sec, true));
        let lp = rt.block_on(link_node(&plain, false));
        m.pipe(
            ("tcp", "pipe, 64 KiB writes"),
            sz.pipe,
            (&mut sec, || node_pipe(&ls, sz.pipe, BIG)),
            (&mut plain, || node_pipe(&lp, sz.pipe, BIG)),
        );
        m.round_trips(
            ("tcp", "call round trip, 64 B"),
            sz.calls,
            (&mut sec, || node_calls(&ls.server, sz.calls)),
            (&mut plain, || node_calls(&lp.server, sz.calls)),
        );
    }
}

fn main() {
    if let Ok(role) = std::env::var("OSCLOUD_PROCS_PEER") {
        let workers = std::env::var("OSCLOUD_BENCH_WORKERS").unwrap_or_default();
        runtime(&workers).block_on(peer(&role));
        return;
    }
    let sz = Sizes::get();
    let dir = tempfile::tempdir().unwrap();
    let workers = std::env::var("OSCLOUD_BENCH_WORKERS")
        .unwrap_or_else(|_| if quick() { "default" } else { "default,1" }.to_owned());
    for w in workers.split(',') {
        suite(w.trim(), sz, dir.path());
    }
}
