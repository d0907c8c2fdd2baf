//! Link flaps, failover and partitions with resumable sessions: two nodes
//! on real Unix and TCP sockets (and WebSocket links over TCP), joined through `oscloud-faults` relays
//! that cut the link on command, and failover between links of different
//! kinds (a serial line over real pseudo-terminals, joined by the
//! `oscloud-serial-relay` process, and TCP). Every call, cast and pipe byte
//! must be accounted for exactly once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::address::Address;
use oscloud_core::identity::{AllowList, NodeKey};
use oscloud_core::transport::Transports;
use oscloud_core::wire::SecureConfig;
use oscloud_core::{Endpoint, Entry, Error, Kernel, LinkStatus, Node, NodeConfig, PipeEnd};
use oscloud_faults::{Faults, Relay};
use oscloud_tests::{Fnv, pseudo_random_frames};
use oscloud_transport_serial::SerialTransport;
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use oscloud_transport_ws::WsTransport;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What the server saw.
#[derive(Debug, Default)]
struct Seen {
    /// Times each call id was executed.
    calls: Mutex<HashMap<u64, u32>>,
    /// Cast numbers, in arrival order.
    casts: Mutex<Vec<u64>>,
}

/// Echoes calls (a call whose 9th byte is `h` hangs forever), records
/// casts; port `collect` reads a pipe to its end and answers with the byte
/// count and FNV-1a checksum.
#[derive(Debug)]
struct Echo(Arc<Seen>);

fn num(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

#[async_trait]
impl Endpoint for Echo {
    fn try_cast(&self, msg: Bytes) -> Result<(), Error> {
        self.0.casts.lock().unwrap().push(num(&msg));
        Ok(())
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        *self.0.calls.lock().unwrap().entry(num(&msg)).or_default() += 1;
        if msg.get(8) == Some(&b'h') {
            std::future::pending::<()>().await;
        }
        Ok(msg)
    }

    async fn open_pipe(&self, _port: &str, end: PipeEnd) -> Result<(), Error> {
        oscloud_tests::answer_collect(end);
        Ok(())
    }
}

fn config(grace: Duration) -> NodeConfig {
    NodeConfig {
        keepalive: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(2),
        reconnect_min: Duration::from_millis(1),
        reconnect_max: Duration::from_millis(20),
        pipe_window: 64 * 1024,
        resume_grace: grace,
        ..NodeConfig::default()
    }
}

fn transports() -> Transports {
    let mut t = Transports::new();
    t.add(Arc::new(TcpTransport));
    t.add(Arc::new(UnixTransport));
    t.add(Arc::new(WsTransport::ws()));
    t
}

struct Server {
    node: Node,
    seen: Arc<Seen>,
    _reg: oscloud_core::Registration,
}

fn server(node: Node) -> Server {
    let seen = Arc::new(Seen::default());
    let reg = node
        .kernel()
        .registry()
        .register("echo", Default::default(), Arc::new(Echo(seen.clone())))
        .unwrap();
    Server {
        node,
        seen,
        _reg: reg,
    }
}

async fn lookup(node: &Node, name: &str) -> Entry {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(e) = node.kernel().registry().lookup(name) {
            return e;
        }
        assert!(Instant::now() < deadline, "{name} not announced in time");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn link(node: &Node) -> LinkStatus {
    let links = node.links();
    assert_eq!(links.len(), 1, "{links:?}");
    links.into_iter().next().unwrap()
}

/// Cut the link `flaps` times, each time once the session resumed on the
/// new link and carried some traffic.
async fn flap(a: &Node, relay: &Relay, flaps: u64) {
    let (mut t_resume, mut t_traffic) = (Duration::ZERO, Duration::ZERO);
    for i in 1..=flaps {
        let t = Instant::now();
        until(20, "the session to resume", || {
            link(a).stats.resumes >= i - 1 && link(a).connected
        })
        .await;
        t_resume += t.elapsed();
        let t = Instant::now();
        let seen = link(a).stats.frames_received;
        until(20, "traffic on the new link", || {
            link(a).stats.frames_received >= seen + 4
        })
        .await;
        t_traffic += t.elapsed();
        relay.cut();
    }
    println!("  waiting for resumption {t_resume:?}, for traffic {t_traffic:?}");
    until(20, "the last resumption", || link(a).stats.resumes >= flaps).await;
}

/// Poll `f` every millisecond until true, for at most `secs`.
async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A stream of calls, casts and a pipe transfer from `node` to `echo`,
/// until `stop`; returns what it sent and what came back.
struct Load {
    stop: Arc<AtomicBool>,
    calls: tokio::task::JoinHandle<u64>,
    casts: tokio::task::JoinHandle<u64>,
    pipe: tokio::task::JoinHandle<(Fnv, Bytes)>,
}

fn load(node: &Node, echo: &Entry) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let next_call = Arc::new(AtomicU64::new(0));
    // Calls: four callers, each waits for its answer.
    let calls = {
        let (echo, stop, next) = (echo.clone(), stop.clone(), next_call.clone());
        tokio::spawn(async move {
            let mut callers = Vec::new();
            for _ in 0..4 {
                let (echo, stop, next) = (echo.clone(), stop.clone(), next.clone());
                callers.push(tokio::spawn(async move {
                    let mut done = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        let msg = Bytes::copy_from_slice(&id.to_be_bytes());
                        let reply = tokio::time::timeout(
                            Duration::from_secs(20),
                            echo.endpoint().call(msg.clone()),
                        )
                        .await
                        .expect("call answered in time")
                        .expect("call succeeded");
                        assert_eq!(reply, msg);
                        done += 1;
                    }
                    done
                }));
            }
            let mut total = 0;
            for c in callers {
                total += c.await.unwrap();
            }
            total
        })
    };
    // Casts: numbered, one per millisecond or so (a cast has no answer
    // to pace it).
    let casts = {
        let (echo, stop) = (echo.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match echo
                    .endpoint()
                    .cast(Bytes::copy_from_slice(&n.to_be_bytes()))
                    .await
                {
                    Ok(()) => n += 1,
                    Err(e) => panic!("cast failed: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        })
    };
    let pipe = {
        let (node, echo, stop) = (node.clone(), echo.clone(), stop.clone());
        tokio::spawn(async move {
            let (mine, theirs) = node.kernel().duplex();
            echo.endpoint().open_pipe("collect", theirs).await.unwrap();
            let (mut reader, writer) = mine.split();
            let mut sent = Fnv::default();
            let mut frames = pseudo_random_frames(usize::MAX);
            while !stop.load(Ordering::Relaxed) {
                let f = frames.next().unwrap();
                sent.update(&f);
                writer.send(f).await.unwrap();
                // Paced (a few MB/s), so that the test measures flaps, not
                // how fast a debug build copies bytes.
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            drop(writer);
            let answer = tokio::time::timeout(Duration::from_secs(30), reader.recv())
                .await
                .expect("pipe answered in time")
                .expect("an answer");
            (sent, answer)
        })
    };
    Load {
        stop,
        calls,
        casts,
        pipe,
    }
}

/// Stop the load and check every call, cast and byte arrived exactly once.
async fn finish(load: Load, server: &Server) -> (u64, u64, u64) {
    load.stop.store(true, Ordering::Relaxed);
    let calls = load.calls.await.unwrap();
    let casts = load.casts.await.unwrap();
    let (sent, answer) = load.pipe.await.unwrap();
    assert_eq!(answer[..8], sent.bytes.to_be_bytes(), "pipe byte count");
    assert_eq!(answer[8..], sent.hash.to_be_bytes(), "pipe checksum");
    // Casts are one-way: wait for the last ones to land.
    until(10, "the last casts", || {
        server.seen.casts.lock().unwrap().len() as u64 >= casts
    })
    .await;
    let got = server.seen.casts.lock().unwrap().clone();
    assert_eq!(got.len() as u64, casts, "casts exactly once");
    assert!(got.iter().copied().eq(0..casts), "casts in order");
    let executed = server.seen.calls.lock().unwrap();
    assert_eq!(executed.len() as u64, calls, "every call ran");
    assert!(executed.values().all(|&n| n == 1), "no call ran twice");
    (calls, casts, sent.bytes)
}

fn unix_addr(dir: &tempfile::TempDir, name: &str) -> Address {
    format!("unix://{}/{name}", dir.path().display())
        .parse()
        .unwrap()
}

/// The links the flap tests cut.
#[derive(Debug, Clone, Copy)]
enum Net {
    /// A Unix socket.
    Unix,
    /// A TCP connection.
    Tcp,
    /// A WebSocket link (over TCP).
    Ws,
}

/// `b` listens on `net` with a relay in front (seeded with `seed`):
/// the relay, and the address that reaches `b` through it.
async fn behind_relay(b: &Node, net: Net, dir: &tempfile::TempDir, seed: u64) -> (Relay, Address) {
    match net {
        Net::Unix => {
            let at = b.listen(&unix_addr(dir, "b.sock")).await.unwrap();
            let relay = Relay::start(&unix_addr(dir, "relay.sock"), &at, Faults::seeded(seed))
                .await
                .unwrap();
            let through = relay.address().clone();
            (relay, through)
        }
        Net::Tcp | Net::Ws => {
            let listen = match net {
                Net::Ws => "ws://127.0.0.1:0/oscloud",
                _ => "tcp://127.0.0.1:0",
            };
            let at = b.listen(&listen.parse().unwrap()).await.unwrap();
            let tcp = format!("tcp://127.0.0.1:{}", at.port().unwrap());
            let relay = Relay::start(
                &"tcp://127.0.0.1:0".parse().unwrap(),
                &tcp.parse().unwrap(),
                Faults::seeded(seed),
            )
            .await
            .unwrap();
            let port = relay.address().port().unwrap();
            let through = match net {
                Net::Ws => format!("ws://127.0.0.1:{port}/oscloud"),
                _ => format!("tcp://127.0.0.1:{port}"),
            };
            (relay, through.parse().unwrap())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_link_flaps_lose_and_duplicate_nothing() {
    thousand_flaps(Net::Unix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_websocket_link_flaps_lose_and_duplicate_nothing() {
    thousand_flaps(Net::Ws).await;
}

async fn thousand_flaps(net: Net) {
    if std::env::var("FLAPS_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("FLAPS_LOG").unwrap())
            .with_ansi(false)
            .try_init();
    }
    let flaps: u64 = std::env::var("FLAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let b = server(Node::with_config(
        Kernel::new(),
        transports(),
        config(Duration::from_secs(10)),
    ));
    let (relay, through) = behind_relay(&b.node, net, &dir, 10).await;
    let a = Node::with_config(Kernel::new(), transports(), config(Duration::from_secs(10)));
    a.connect(&through).await.unwrap();
    let echo = lookup(&a, "echo").await;
    let load = load(&a, &echo);
    let t = Instant::now();
    flap(&a, &relay, flaps).await;
    let flapping = t.elapsed();
    let (calls, casts, bytes) = finish(load, &b).await;
    let la = link(&a);
    let s = la.stats;
    println!(
        "{net:?}: {flaps} link flaps in {flapping:?}: {calls} calls, {casts} casts and a pipe of {bytes} bytes, \
         each exactly once; {} resumptions, {} packets sent again, {} duplicates dropped (side a), \
         relay connections {}",
        s.resumes,
        s.retransmissions,
        s.duplicates,
        relay.connections()
    );
    assert_eq!(s.resumes, flaps);
    assert!(calls > 0 && casts > 0 && bytes > 0);
    assert!(la.connected);
    assert_eq!(
        b.node.links().len(),
        1,
        "one session on b: {:?}",
        b.node.links()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_between_tcp_and_unix_loses_nothing() {
    failover_with_unix(Net::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_between_websocket_and_unix_loses_nothing() {
    failover_with_unix(Net::Ws).await;
}

/// A session on `net` moves to a Unix socket when `net` is partitioned,
/// and back when it heals and the Unix path goes.
async fn failover_with_unix(net: Net) {
    let dir = tempfile::tempdir().unwrap();
    let b = server(Node::with_config(
        Kernel::new(),
        transports(),
        config(Duration::from_secs(10)),
    ));
    let (via_net, net_at) = behind_relay(&b.node, net, &dir, 1).await;
    let (via_unix, unix_at) = behind_relay(&b.node, Net::Unix, &dir, 2).await;
    let a = Node::with_config(Kernel::new(), transports(), config(Duration::from_secs(10)));
    a.connect_redundant(&[net_at, unix_at]).await.unwrap();
    let echo = lookup(&a, "echo").await;
    assert_eq!(via_net.connections(), 1);
    let load = load(&a, &echo);
    // Let some traffic flow, then take `net` away for good: the session
    // moves to the Unix socket.
    until(10, "traffic", || {
        link(&a).stats.payload_bytes_sent > 1 << 20
    })
    .await;
    via_net.partition();
    until(10, "failover to unix", || {
        via_unix.connections() == 1 && link(&a).stats.resumes == 1 && link(&a).connected
    })
    .await;
    let before = link(&a).stats.payload_bytes_sent;
    until(10, "traffic over unix", || {
        link(&a).stats.payload_bytes_sent > before + (1 << 20)
    })
    .await;
    // And back: `net` heals, the Unix path goes.
    via_net.heal();
    via_unix.partition();
    until(10, "failback", || {
        via_net.connections() == 2 && link(&a).stats.resumes == 2 && link(&a).connected
    })
    .await;
    let (calls, casts, bytes) = finish(load, &b).await;
    let s = link(&a).stats;
    println!(
        "failover {net:?} → unix → {net:?} under load: {calls} calls, {casts} casts, {bytes} pipe bytes, \
         each exactly once; {} packets sent again after the switches",
        s.retransmissions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_shorter_than_the_grace_heals_and_a_longer_one_fails_calls_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(1500);
    let b = server(Node::with_config(
        Kernel::new(),
        transports(),
        config(grace),
    ));
    let at = b.node.listen(&unix_addr(&dir, "b.sock")).await.unwrap();
    let relay = Relay::start(&unix_addr(&dir, "relay.sock"), &at, Faults::seeded(3))
        .await
        .unwrap();
    let a = Node::with_config(Kernel::new(), transports(), config(grace));
    a.connect(relay.address()).await.unwrap();
    let echo = lookup(&a, "echo").await;

    // Short partition: a call made during it completes after the heal.
    relay.partition();
    until(5, "the link to drop", || !link(&a).connected).await;
    let call = tokio::spawn({
        let echo = echo.clone();
        async move {
            echo.endpoint()
                .call(Bytes::from_static(b"\0\0\0\0\0\0\0\x01"))
                .await
        }
    });
    until(5, "redials refused", || relay.stats().refused >= 3).await;
    relay.heal();
    let reply = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("answered after the heal")
        .unwrap()
        .unwrap();
    assert_eq!(&reply[..], b"\0\0\0\0\0\0\0\x01");
    assert!(
        a.kernel().registry().lookup("echo").is_ok(),
        "still registered"
    );

    // A call that hangs on the server, then a partition past the grace.
    let hanging = tokio::spawn({
        let echo = echo.clone();
        async move {
            echo.endpoint()
                .call(Bytes::from_static(b"\0\0\0\0\0\0\0\x02h"))
                .await
        }
    });
    until(5, "the hanging call to arrive", || {
        b.seen.calls.lock().unwrap().contains_key(&2)
    })
    .await;
    let t = Instant::now();
    relay.partition();
    let err = tokio::time::timeout(Duration::from_secs(10), hanging)
        .await
        .expect("failed in time")
        .unwrap()
        .unwrap_err();
    let took = t.elapsed();
    println!("past the grace of {grace:?}: {err} (after {took:?})");
    assert!(matches!(err, Error::LinkNotResumed { .. }), "{err}");
    assert!(err.to_string().contains("1.5s"), "{err}");
    assert!(took >= grace, "not before the grace: {took:?}");
    until(5, "echo to leave a's registry", || {
        a.kernel().registry().lookup("echo").is_err()
    })
    .await;
    // Healed later: a new session, and echo is back.
    relay.heal();
    let _ = lookup(&a, "echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_sessions_resume_with_a_new_handshake() {
    encrypted_flaps(Net::Unix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_sessions_resume_with_a_new_handshake_over_websocket() {
    encrypted_flaps(Net::Ws).await;
}

async fn encrypted_flaps(net: Net) {
    const FLAPS: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
    let secure = |me: &NodeKey, peer: &NodeKey| {
        Node::with_security(
            Kernel::with_node(me.node_id()),
            transports(),
            config(Duration::from_secs(10)),
            SecureConfig::new(me.clone(), AllowList::from_keys([peer.public()])),
        )
        .unwrap()
    };
    let b = server(secure(&kb, &ka));
    let (relay, through) = behind_relay(&b.node, net, &dir, 4).await;
    let a = secure(&ka, &kb);
    a.connect(&through).await.unwrap();
    let echo = lookup(&a, "echo").await;
    let load = load(&a, &echo);
    flap(&a, &relay, FLAPS).await;
    let (calls, casts, bytes) = finish(load, &b).await;
    println!(
        "{net:?}: {FLAPS} flaps of an encrypted link: {calls} calls, {casts} casts, {bytes} pipe bytes, each exactly once"
    );
}

/// The serial cable simulator (`oscloud-serial-relay`): two pty slaves
/// joined as by a null-modem cable, `a` and `b`, that can be unplugged.
struct SerialLine {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    a: Address,
    b: Address,
    _dir: tempfile::TempDir,
}

impl SerialLine {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("tty-a"), dir.path().join("tty-b"));
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_oscloud-serial-relay"))
            .arg(&a)
            .arg(&b)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the serial relay");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
            .await
            .expect("relay ready in time")
            .unwrap();
        assert_eq!(ready.as_deref(), Some("ready"));
        let addr = |p: &std::path::Path| format!("serial://{}", p.display()).parse().unwrap();
        Self {
            _child: child,
            stdin,
            a: addr(&a),
            b: addr(&b),
            stdout,
            _dir: dir,
        }
    }

    async fn send(&mut self, cmd: &str) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn answer(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.stdout.next_line())
            .await
            .expect("relay answer in time")
            .unwrap()
            .expect("relay line")
    }

    /// Bytes the line carried so far, both ways.
    async fn bytes(&mut self) -> u64 {
        self.send("stats").await;
        let line = self.answer().await;
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter(|(k, _)| *k == "ab" || *k == "ba")
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_between_a_serial_line_and_tcp_loses_nothing() {
    let mixed = || {
        let mut t = transports();
        t.add(Arc::new(SerialTransport));
        t
    };
    let cfg = NodeConfig {
        // A pty answers within a millisecond.
        lossy_initial_rto: Duration::from_millis(100),
        ..config(Duration::from_secs(10))
    };
    let mut line = SerialLine::start().await;
    let b = server(Node::with_config(Kernel::new(), mixed(), cfg.clone()));
    b.node.listen(&line.a).await.unwrap();
    let tcp = b
        .node
        .listen(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let via_tcp = Relay::start(
        &"tcp://127.0.0.1:0".parse().unwrap(),
        &tcp,
        Faults::seeded(4),
    )
    .await
    .unwrap();
    let a = Node::with_config(Kernel::new(), mixed(), cfg);
    // The serial line first: the session starts on it.
    a.connect_redundant(&[line.b.clone(), via_tcp.address().clone()])
        .await
        .unwrap();
    let echo = lookup(&a, "echo").await;
    assert_eq!(via_tcp.connections(), 0, "on the serial line");
    let load = load(&a, &echo);
    until(10, "traffic on the serial line", || {
        link(&a).stats.payload_bytes_sent > 256 << 10
    })
    .await;
    let on_serial = line.bytes().await;
    let serial = link(&a);
    assert!(!serial.remote.starts_with("tcp://"), "{serial:?}");

    // Unplug a's end of the cable for 1.5 s: the session moves to TCP.
    let t = Instant::now();
    line.send("unplug b 1500").await;
    until(10, "failover to tcp", || {
        via_tcp.connections() == 1 && link(&a).stats.resumes == 1 && link(&a).connected
    })
    .await;
    let to_tcp = t.elapsed();
    // The link's names follow the session onto TCP.
    let on_tcp = link(&a);
    let port = via_tcp.address().port().unwrap();
    assert!(
        on_tcp.remote.starts_with("tcp://") && on_tcp.remote.ends_with(&format!(":{port}")),
        "{on_tcp:?}"
    );
    assert!(on_tcp.local.starts_with("tcp://"), "{on_tcp:?}");
    assert_eq!(on_tcp.id, serial.id);
    let before = link(&a).stats.payload_bytes_sent;
    until(10, "traffic over tcp", || {
        link(&a).stats.payload_bytes_sent > before + (256 << 10)
    })
    .await;
    assert_eq!(line.answer().await, "replugged");

    // The cable is back; TCP goes: the session moves back to the line.
    let serial_before = line.bytes().await;
    let t = Instant::now();
    via_tcp.partition();
    until(10, "failback to the serial line", || {
        link(&a).stats.resumes == 2 && link(&a).connected
    })
    .await;
    let to_serial = t.elapsed();
    // And back onto the line.
    let back = link(&a);
    assert_eq!((&back.local, &back.remote), (&serial.local, &serial.remote));
    let before = link(&a).stats.payload_bytes_sent;
    until(10, "traffic over the serial line again", || {
        link(&a).stats.payload_bytes_sent > before + (256 << 10)
    })
    .await;
    let serial_after = line.bytes().await;
    // (Payload is counted when queued; the line carries it a little later.)
    assert!(
        serial_after > serial_before + (64 << 10),
        "the line carried the traffic: {serial_before} → {serial_after} bytes"
    );
    assert_eq!(via_tcp.connections(), 1, "tcp not dialled again");

    let (calls, casts, bytes) = finish(load, &b).await;
    let s = link(&a).stats;
    println!(
        "failover serial → tcp → serial under load: {calls} calls, {casts} casts, {bytes} pipe bytes, \
         each exactly once; resumed on tcp {to_tcp:?} after the unplug, back on the serial line \
         {to_serial:?} after the tcp cut; {} bytes on the line before the unplug, {} after the \
         failback; side a: {} resumptions, {} packets sent again ({} fast), {} timeouts",
        on_serial,
        serial_after - serial_before,
        s.resumes,
        s.retransmissions,
        s.fast_retransmits,
        s.timeouts
    );
    assert_eq!(s.resumes, 2);
    assert_eq!(
        b.node.links().iter().filter(|l| l.connected).count(),
        1,
        "{:?}",
        b.node.links()
    );
}
