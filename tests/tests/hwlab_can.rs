//! CAN links against a real Linux kernel: these tests need the hardware lab
//! (`tests/hwlab/run`), which boots Debian's kernel with `vcan`, `vxcan` and
//! `can_raw`. They are `#[ignore]`d in a plain `cargo test` (the build
//! machines' kernel has no CAN); `scripts/test-hwlab.sh` runs them in the lab
//! with `--ignored`. Each test creates the interfaces it uses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::identity::{AllowList, NodeKey};
use oscloud_core::transport::Transports;
use oscloud_core::wire::SecureConfig;
use oscloud_core::{
    Capabilities, Endpoint, Entry, Error, Kernel, LinkStatus, Node, NodeConfig, PipeEnd,
    Registration,
};
use oscloud_tests::{Echo, Fnv, TestNode, kib_s, show_link};
use oscloud_transport_can::CanTransport;
use socketcan::{CanFrame, EmbeddedFrame, Id, StandardId};

const TESTNODE: &str = env!("CARGO_BIN_EXE_oscloud-testnode");

// ----- interfaces -----

fn ip(args: &str) -> std::process::Output {
    std::process::Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip")
}

/// A fresh, up vcan interface (removed first if a test before left it).
fn vcan(name: &str) {
    let _ = ip(&format!("link del {name}"));
    let out = ip(&format!("link add {name} type vcan"));
    assert!(
        out.status.success(),
        "ip link add {name} type vcan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // CANFD_MTU: FD frames allowed.
    assert!(ip(&format!("link set {name} mtu 72")).status.success());
    assert!(ip(&format!("link set {name} up")).status.success());
}

/// A fresh vxcan pair `a <-> b`, both up.
fn vxcan(a: &str, b: &str) {
    let _ = ip(&format!("link del {a}"));
    let out = ip(&format!("link add {a} type vxcan peer name {b}"));
    assert!(
        out.status.success(),
        "ip link add {a} type vxcan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ip(&format!("link set {a} up")).status.success());
    assert!(ip(&format!("link set {b} up")).status.success());
}

// ----- nodes -----

/// Like [`Echo`], counting the calls it answers and the bytes its
/// `collect` pipes have received so far.
#[derive(Debug, Default)]
struct CountingEcho {
    calls: AtomicU64,
    received: Arc<AtomicU64>,
}

#[async_trait]
impl Endpoint for CountingEcho {
    fn try_cast(&self, _msg: Bytes) -> Result<(), Error> {
        Ok(())
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(msg)
    }

    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), Error> {
        if port != "collect" {
            return Err(Error::NoSuchPort {
                name: "echo".into(),
                port: port.into(),
            });
        }
        let received = self.received.clone();
        tokio::spawn(async move {
            let (mut r, w) = end.split();
            let mut fnv = Fnv::default();
            while let Some(f) = r.recv().await {
                received.fetch_add(f.len() as u64, Ordering::Relaxed);
                fnv.update(&f);
            }
            let mut answer = fnv.bytes.to_be_bytes().to_vec();
            answer.extend(fnv.hash.to_be_bytes());
            let _ = w.send(Bytes::from(answer)).await;
        });
        Ok(())
    }
}

/// What this process's nodes logged (tracing, captured once for the
/// whole test binary), to check that a fault was seen and reported.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        struct W(Arc<Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || W(b.clone()))
            .try_init();
        buf
    })
    .clone()
}

fn log_lines(containing: &str) -> Vec<String> {
    let buf = logs();
    let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(containing))
        .map(str::to_owned)
        .collect()
}

/// Under emulation a window of classic frames (8 packets of 764 bytes,
/// ~1 000 frames) can take longer than the default 1 s first timeout to
/// go through: 2 s avoids re-sending packets still on their way. On a
/// real 500 kbit/s bus the same window takes about 0.25 s.
fn config() -> NodeConfig {
    NodeConfig {
        keepalive: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(10),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        lossy_initial_rto: Duration::from_secs(2),
        ..NodeConfig::default()
    }
}

fn transports() -> Transports {
    Transports::new().with(Arc::new(CanTransport))
}

fn node() -> Node {
    Node::with_config(Kernel::new(), transports(), config())
}

/// Node `a` listening on `listen` with an `echo` server named `name`,
/// node `b` dialled in on `connect` and seeing it.
async fn linked(
    a: Node,
    b: Node,
    name: &str,
    listen: &str,
    connect: &str,
) -> (Node, Node, Registration, Entry) {
    let reg = a
        .kernel()
        .registry()
        .register(name, Capabilities::new(), Arc::new(Echo))
        .unwrap();
    a.listen(&listen.parse().unwrap()).await.unwrap();
    let peer = tokio::time::timeout(
        Duration::from_secs(30),
        b.connect(&connect.parse().unwrap()),
    )
    .await
    .expect("handshake in time")
    .unwrap();
    assert_eq!(peer, a.kernel().node());
    let echo = lookup(&b, name).await;
    (a, b, reg, echo)
}

async fn lookup(node: &Node, name: &str) -> Entry {
    oscloud_tests::lookup(node, name, Duration::from_secs(30)).await
}

async fn calls(echo: &Entry, n: usize) -> Duration {
    oscloud_tests::echo_calls(echo, n, Duration::from_secs(30)).await
}

/// Send `n` bytes through a pipe to `collect`; check count and checksum.
async fn transfer(node: &Node, echo: &Entry, n: usize) -> Duration {
    oscloud_tests::collect_transfer(node, echo, n, Duration::from_secs(240)).await
}

fn link(node: &Node) -> LinkStatus {
    let links = node.links();
    assert!(!links.is_empty(), "no link");
    links.into_iter().last().unwrap()
}

// ----- raw traffic -----

/// Writes frames on `iface` until stopped: random identifiers from `ids`,
/// random lengths and bytes. Returns how many it wrote.
struct Noise {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Noise {
    fn start(iface: &str, ids: Vec<u16>, every: Duration) -> Self {
        let socket = socketcan::tokio::CanSocket::open(iface).expect("noise socket");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            while !s.load(Ordering::Relaxed) {
                let id = ids[(next() % ids.len() as u64) as usize];
                let len = (next() % 9) as usize;
                let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let frame =
                    CanFrame::new(Id::Standard(StandardId::new(id).unwrap()), &data).unwrap();
                if socket.write_frame(frame).await.is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(every).await;
            }
        });
        Self { stop, sent, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.sent.load(Ordering::Relaxed)
    }
}

/// Forwards frames both ways between two interfaces, dropping every
/// `drop_every`th frame (counted over both directions).
struct LossyRelay {
    dropped: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LossyRelay {
    fn start(a: &str, b: &str, drop_every: u64) -> Self {
        let sa = Arc::new(socketcan::tokio::CanSocket::open(a).expect("relay socket a"));
        let sb = Arc::new(socketcan::tokio::CanSocket::open(b).expect("relay socket b"));
        let count = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let forwarded = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (from, to) in [(sa.clone(), sb.clone()), (sb, sa)] {
            let (count, dropped, forwarded) = (count.clone(), dropped.clone(), forwarded.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok(frame) = from.read_frame().await {
                    if count.fetch_add(1, Ordering::Relaxed) % drop_every == drop_every - 1 {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if to.write_frame(frame).await.is_ok() {
                        forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Self {
            dropped,
            forwarded,
            tasks,
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.forwarded.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

// ----- tests -----

/// Raw frames on vcan as fast as one socket writes and another reads:
/// the ceiling our payload rate is compared with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn raw_vcan_frame_rate() {
    vcan("vcraw");
    let tx = socketcan::tokio::CanSocket::open("vcraw").unwrap();
    let rx = socketcan::tokio::CanSocket::open("vcraw").unwrap();
    let n = 10_000u32;
    let reader = tokio::spawn(async move {
        let mut got = 0u32;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(2), rx.read_frame()).await {
                Ok(Ok(_)) => got += 1,
                _ => break,
            }
        }
        got
    });
    let t = Instant::now();
    let id = Id::Standard(StandardId::new(0x42).unwrap());
    for i in 0..n {
        let frame = CanFrame::new(id, &i.to_le_bytes()).unwrap();
        while tx.write_frame(frame).await.is_err() {
            tokio::task::yield_now().await;
        }
    }
    let got = reader.await.unwrap();
    let took = t.elapsed();
    println!(
        "raw vcan: {got}/{n} frames in {took:?}: {:.0} frames/s, {:.1} KiB/s of 8-byte payloads",
        got as f64 / took.as_secs_f64(),
        got as f64 * 8.0 / 1024.0 / took.as_secs_f64()
    );
    assert!(got > n / 2, "most frames arrive");
}

/// Two nodes on `iface` (ids 0x100/0x101) while every other identifier
/// is busy: 50 calls and an `n`-byte pipe, every byte checked.
async fn calls_and_pipe_with_other_traffic(iface: &str, fd: bool, n: usize) {
    vcan(iface);
    let (a, b, _reg, echo) = linked(
        node(),
        node(),
        "echo",
        &format!("can://{iface}?tx=0x100&rx=0x101&fd={fd}"),
        &format!("can://{iface}?tx=0x101&rx=0x100&fd={fd}"),
    )
    .await;
    // Other traffic: every identifier but ours, all the time.
    let others: Vec<u16> = (0..0x7FF).filter(|i| *i != 0x100 && *i != 0x101).collect();
    let noise = Noise::start(iface, others, Duration::from_millis(1));
    let kind = if fd {
        "CAN FD, 64-byte frames"
    } else {
        "classic CAN, 8-byte frames"
    };
    let n_calls = 50;
    let took = calls(&echo, n_calls).await;
    println!(
        "{n_calls} calls over vcan ({kind}): {took:?}, {:.1} calls/s",
        n_calls as f64 / took.as_secs_f64()
    );
    let took = transfer(&b, &echo, n).await;
    println!(
        "{} KiB pipe over vcan ({kind}): {took:?}, {:.1} KiB/s",
        n / 1024,
        kib_s(n, took)
    );
    let noise_frames = noise.stop().await;
    println!("  other traffic: {noise_frames} frames on other identifiers");
    let (la, lb) = (link(&a), link(&b));
    show_link("a", &la);
    show_link("b", &lb);
    assert!(la.connected && lb.connected);
    assert!(noise_frames > 100, "the bus was busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn calls_and_a_1_mib_pipe_over_vcan0_with_other_traffic() {
    // CAN FD for the 1 MiB: 63 bytes a frame instead of 8 (classic CAN
    // below, with less data: under emulation it moves ~2 KiB/s).
    calls_and_pipe_with_other_traffic("vcan0", true, 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn classic_can_calls_and_pipe_with_other_traffic() {
    calls_and_pipe_with_other_traffic("vcclassic", false, 32 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn can_fd_pipe_and_extended_ids() {
    vcan("vcanfd");
    let (a, b, _reg, echo) = linked(
        node(),
        node(),
        "echo",
        "can://vcanfd?tx=0x18DA00F1&rx=0x18DAF100&fd=true",
        "can://vcanfd?tx=0x18DAF100&rx=0x18DA00F1&fd=true",
    )
    .await;
    calls(&echo, 10).await;
    let n = 64 * 1024;
    let took = transfer(&b, &echo, n).await;
    println!(
        "64 KiB pipe over vcan (CAN FD, extended ids): {took:?}, {:.1} KiB/s",
        kib_s(n, took)
    );
    let (la, lb) = (link(&a), link(&b));
    show_link("a", &la);
    show_link("b", &lb);
}

/// Garbage on our own identifiers: random frames the segment decoder must
/// drop (CRC, framing), costing retransmissions but never wrong data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn garbage_on_our_identifiers_costs_retransmissions_not_data() {
    vcan("vcgarb");
    let (a, b, _reg, echo) = linked(
        node(),
        node(),
        "echo",
        "can://vcgarb?tx=0x200&rx=0x201",
        "can://vcgarb?tx=0x201&rx=0x200",
    )
    .await;
    let noise = Noise::start("vcgarb", vec![0x200, 0x201], Duration::from_millis(2));
    calls(&echo, 20).await;
    let n = 16 * 1024;
    let took = transfer(&b, &echo, n).await;
    let garbage = noise.stop().await;
    println!(
        "16 KiB pipe with {garbage} garbage frames on the link's own identifiers: {took:?}, {:.1} KiB/s",
        kib_s(n, took)
    );
    let (la, lb) = (link(&a), link(&b));
    show_link("a", &la);
    show_link("b", &lb);
    let failures = la.stats.framing_failures
        + lb.stats.framing_failures
        + la.stats.crc_failures
        + lb.stats.crc_failures;
    assert!(garbage > 50, "garbage was sent");
    assert!(failures > 0, "the garbage was seen and dropped");
    assert!(la.connected && lb.connected);
}

/// A relay between two vxcan pairs drops every 100th frame: session frames
/// lose a segment and are retransmitted. Short packets (256 bytes, 43
/// frames) so that most get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn lost_frames_are_retransmitted() {
    vxcan("vxa0", "vxa1");
    vxcan("vxb0", "vxb1");
    let relay = LossyRelay::start("vxa1", "vxb1", 100);
    let lossy = || {
        Node::with_config(
            Kernel::new(),
            transports(),
            NodeConfig {
                lossy_max_frame: 256,
                lossy_initial_rto: Duration::from_secs(1),
                ..config()
            },
        )
    };
    let (a, b, _reg, echo) = linked(
        lossy(),
        lossy(),
        "echo",
        "can://vxa0?tx=0x300&rx=0x301",
        "can://vxb0?tx=0x301&rx=0x300",
    )
    .await;
    calls(&echo, 20).await;
    let n = 16 * 1024;
    let took = transfer(&b, &echo, n).await;
    let (forwarded, dropped) = relay.counts();
    println!(
        "16 KiB pipe through a relay dropping 1 frame in 100 ({dropped} dropped, {forwarded} forwarded): {took:?}, {:.1} KiB/s",
        kib_s(n, took)
    );
    let (la, lb) = (link(&a), link(&b));
    show_link("a", &la);
    show_link("b", &lb);
    assert!(dropped > 10, "{dropped} dropped");
    assert!(la.stats.retransmissions + lb.stats.retransmissions > 0);
    assert!(la.connected && lb.connected);
}

/// Two node pairs on one bus, told apart by identifiers, transfer at the
/// same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn two_node_pairs_share_one_bus() {
    vcan("vcshare");
    let (_a1, b1, _r1, echo1) = linked(
        node(),
        node(),
        "echo-one",
        "can://vcshare?tx=0x110&rx=0x111",
        "can://vcshare?tx=0x111&rx=0x110",
    )
    .await;
    let (_a2, b2, _r2, echo2) = linked(
        node(),
        node(),
        "echo-two",
        "can://vcshare?tx=0x1ABCDE0&rx=0x1ABCDE1",
        "can://vcshare?tx=0x1ABCDE1&rx=0x1ABCDE0",
    )
    .await;
    // Each pair sees only its own peer.
    assert!(b1.kernel().registry().lookup("echo-two").is_err());
    assert!(b2.kernel().registry().lookup("echo-one").is_err());
    let n = 16 * 1024;
    let t = Instant::now();
    let (t1, t2) = tokio::join!(transfer(&b1, &echo1, n), transfer(&b2, &echo2, n));
    println!(
        "two pairs on one vcan, 16 KiB each at once: {t1:?} and {t2:?} ({:.1} KiB/s together)",
        kib_s(2 * n, t.elapsed())
    );
    assert_eq!(link(&b1).stats.crc_failures, 0);
}

/// A sealed, authenticated session (Noise) over CAN frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn encrypted_session_over_can() {
    vcan("vcsec");
    let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
    let secure = |me: &NodeKey, peer: &NodeKey| {
        Node::with_security(
            Kernel::with_node(me.node_id()),
            transports(),
            config(),
            SecureConfig::new(me.clone(), AllowList::from_keys([peer.public()])),
        )
        .unwrap()
    };
    let (a, b, _reg, echo) = linked(
        secure(&ka, &kb),
        secure(&kb, &ka),
        "echo",
        "can://vcsec?tx=0x120&rx=0x121&fd=true",
        "can://vcsec?tx=0x121&rx=0x120&fd=true",
    )
    .await;
    let took = calls(&echo, 20).await;
    let n = 64 * 1024;
    let piped = transfer(&b, &echo, n).await;
    println!(
        "encrypted over vcan (CAN FD): 20 calls {took:?}, 64 KiB pipe {piped:?} ({:.1} KiB/s)",
        kib_s(n, piped)
    );
    assert!(link(&a).connected && link(&b).connected);
    // A node whose key `a` does not admit is refused on a second pair.
    a.listen(&"can://vcsec?tx=0x130&rx=0x131&fd=true".parse().unwrap())
        .await
        .unwrap();
    let stranger = NodeKey::generate();
    let c = secure(&stranger, &ka);
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        c.connect(&"can://vcsec?tx=0x131&rx=0x130&fd=true".parse().unwrap()),
    )
    .await;
    assert!(!matches!(res, Ok(Ok(_))), "a stranger is not admitted");
    println!("  a stranger's handshake: {res:?}");
}

/// Two processes (`oscloud-testnode`) over vcan; `candump` sees our frames
/// well-formed on the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn two_processes_and_candump() {
    vcan("vcproc");
    let dump = tokio::process::Command::new("candump")
        .args(["-n", "20", "-L", "vcproc,140:7FF"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("candump (can-utils)");
    let mut a = TestNode::start(
        TESTNODE.as_ref(),
        "a",
        &[
            "--listen",
            "can://vcproc?tx=0x140&rx=0x141",
            "--idle-ms",
            "20000",
            "--keepalive-ms",
            "1000",
        ],
    )
    .await;
    let mut b = TestNode::start(
        TESTNODE.as_ref(),
        "b",
        &[
            "--connect",
            "can://vcproc?tx=0x141&rx=0x140",
            "--idle-ms",
            "20000",
            "--keepalive-ms",
            "1000",
        ],
    )
    .await;
    assert_eq!(b.ask("wait upper-a").await.split(' ').next(), Some("found"));
    let t = Instant::now();
    for i in 0..20 {
        assert_eq!(
            b.ask(&format!("call upper-a hi{i}")).await,
            format!("reply HI{i} from a")
        );
    }
    println!(
        "20 calls between two processes over vcan: {:?}",
        t.elapsed()
    );
    let n = 4 * 1024;
    let t = Instant::now();
    let piped = b.ask(&format!("pipe sink-a in {n}")).await;
    // Each sinkwait gives up after 10 s; under emulation the pipe may
    // need longer.
    let mut sunk = String::new();
    for _ in 0..6 {
        sunk = a.ask(&format!("sinkwait sink-a {n}")).await;
        if !sunk.starts_with("timeout") {
            break;
        }
    }
    println!(
        "4 KiB pipe between two processes over vcan: {:?}",
        t.elapsed()
    );
    if sunk.starts_with("timeout") {
        println!("a's log:\n{}\nb's log:\n{}", a.stderr_now(), b.stderr_now());
    }
    assert_eq!(
        piped.strip_prefix("piped "),
        sunk.strip_prefix("sink "),
        "{piped} / {sunk}"
    );
    let out = tokio::time::timeout(Duration::from_secs(10), dump.wait_with_output())
        .await
        .expect("candump saw 20 frames")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    for l in lines {
        // (1700000000.000000) vcproc 140#0280...: our id, 2..8 data bytes.
        let frame = l.split_whitespace().nth(2).unwrap();
        let (id, data) = frame.split_once('#').unwrap();
        assert_eq!(id, "140", "{l}");
        assert!(
            data.len() >= 6 && data.len() <= 16 && data.len() % 2 == 0,
            "{l}"
        );
    }
    println!("candump: 20 frames with id 0x140, 3 to 8 bytes each");
}

/// Listening needs the interface: a clear error when it is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn missing_interface_is_reported() {
    let err = node()
        .listen(&"can://nosuch0?tx=1&rx=2".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no CAN interface \"nosuch0\""),
        "{err}"
    );
}

/// Poll `check` until it holds or `within` passes.
async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ip link set IFACE down`, then, after `outage`, `up` again: the fault
/// being tested (the outage is its length, not a wait for anything).
async fn bounce(iface: &str, outage: Duration) {
    let down = ip(&format!("link set {iface} down"));
    assert!(down.status.success(), "ip link set {iface} down");
    tokio::time::sleep(outage).await;
    let up = ip(&format!("link set {iface} up"));
    assert!(up.status.success(), "ip link set {iface} up");
}

/// The outages of [`down_up_mid_transfer`].
struct Outages {
    /// Where in the pipe (bytes received) and how long, each.
    at: Vec<(u64, Duration)>,
    /// The pipe's size.
    n: usize,
    /// Both nodes' configuration.
    config: NodeConfig,
    /// Whether the links outlive the outages (so that each logs the
    /// interface up again), rather than being replaced.
    ridden_out: bool,
}

impl Outages {
    /// Three outages, of 0, 1 and 3 s, at a quarter, half and three
    /// quarters of a 1 MiB pipe: shorter than the idle timeout, so the
    /// link rides them out.
    fn short() -> Self {
        let n = 1024 * 1024;
        Self {
            at: [(1, 0), (2, 1000), (3, 3000)]
                .into_iter()
                .map(|(q, ms)| (q * n as u64 / 4, Duration::from_millis(ms)))
                .collect(),
            n,
            config: config(),
            ridden_out: true,
        }
    }
}

/// A pipe and calls, meanwhile the interface `bounce_iface` goes down and
/// up as `outages` say. Every byte arrives once and in order (count and
/// checksum), every call is answered exactly once (the server counts
/// them), the link is up at the end, and the nodes logged each outage.
async fn down_up_mid_transfer(
    listen: &str,
    connect: &str,
    bounce_iface: &str,
    what: &str,
    outages: Outages,
) -> (Node, Node) {
    let _ = logs();
    let server = Arc::new(CountingEcho::default());
    let received = server.received.clone();
    let node = || Node::with_config(Kernel::new(), transports(), outages.config.clone());
    let (a, b) = (node(), node());
    let _reg = a
        .kernel()
        .registry()
        .register("echo", Capabilities::new(), server.clone())
        .unwrap();
    a.listen(&listen.parse().unwrap()).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        b.connect(&connect.parse().unwrap()),
    )
    .await
    .expect("handshake in time")
    .unwrap();
    let echo = lookup(&b, "echo").await;
    let downs_before = log_lines("CAN interface down").len();
    let ups_before = log_lines("CAN interface up again").len();

    let n = outages.n;
    let count = outages.at.len();
    let ridden_out = outages.ridden_out;
    let t = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Calls all the while, one after the other, each checked.
    let caller = {
        let (echo, stop) = (echo.clone(), stop.clone());
        tokio::spawn(async move {
            let mut made = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let msg = Bytes::from(format!("call {made} during the outages"));
                let reply = tokio::time::timeout(
                    Duration::from_secs(90),
                    echo.endpoint().call(msg.clone()),
                )
                .await
                .expect("call answered in time")
                .expect("call succeeds");
                assert_eq!(reply, msg);
                made += 1;
            }
            made
        })
    };
    let bouncer = {
        let (iface, received) = (bounce_iface.to_owned(), received.clone());
        tokio::spawn(async move {
            let mut at = Vec::new();
            for (mark, outage) in outages.at {
                until("pipe progress", Duration::from_secs(240), || {
                    received.load(Ordering::Relaxed) >= mark
                })
                .await;
                at.push((received.load(Ordering::Relaxed), t.elapsed(), outage));
                bounce(&iface, outage).await;
            }
            at
        })
    };
    let piped = transfer(&b, &echo, n).await;
    stop.store(true, Ordering::Relaxed);
    let made = caller.await.unwrap();
    let bounced = bouncer.await.unwrap();
    let answered = server.calls.load(Ordering::Relaxed);
    println!(
        "{what}: {} KiB intact in {piped:?} ({:.1} KiB/s) with {bounce_iface} down and up \
         {count} times (at bytes/time/outage {bounced:?}); {made} calls made, {answered} answered",
        n / 1024,
        kib_s(n, piped)
    );
    let (la, lb) = (link(&a), link(&b));
    show_link("a", &la);
    show_link("b", &lb);
    assert_eq!(bounced.len(), count, "every outage mid-transfer");
    assert!(made > 0, "calls were made");
    assert_eq!(made, answered, "every call answered exactly once");
    assert!(la.connected && lb.connected, "the link is up at the end");
    let downs = log_lines("CAN interface down");
    let ups = log_lines("CAN interface up again");
    println!(
        "  logged: {} down, {} up again",
        downs.len() - downs_before,
        ups.len() - ups_before
    );
    if let Some(l) = downs.last() {
        println!("  {l}");
    }
    // Each outage is seen (at least by the node on the bounced
    // interface), and so is its end by a link that outlives it.
    assert!(
        downs.len() >= downs_before + count,
        "every outage seen and logged"
    );
    if ridden_out {
        assert!(ups.len() >= ups_before + count, "every recovery logged");
    }
    (a, b)
}

/// `ip link set vcan down; ip link set vcan up` mid-transfer: both nodes
/// on the bus see the interface go down, the link waits, the session
/// retransmits what was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn vcan_down_and_up_mid_transfer_loses_nothing() {
    vcan("vcflap");
    down_up_mid_transfer(
        "can://vcflap?tx=0x150&rx=0x151&fd=true",
        "can://vcflap?tx=0x151&rx=0x150&fd=true",
        "vcflap",
        "vcan down/up",
        Outages::short(),
    )
    .await;
}

/// The same on a vxcan pair, one end of the cable going down and up: the
/// node on that end sees it, the other one's frames are lost meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn vxcan_down_and_up_mid_transfer_loses_nothing() {
    // vxcan carries CAN FD frames by default (its MTU is CANFD_MTU).
    vxcan("vxflap0", "vxflap1");
    down_up_mid_transfer(
        "can://vxflap0?tx=0x160&rx=0x161&fd=true",
        "can://vxflap1?tx=0x161&rx=0x160&fd=true",
        "vxflap0",
        "vxcan down/up",
        Outages::short(),
    )
    .await;
}

/// An outage longer than the idle timeout ends the link; with
/// `NodeConfig::resume_grace` on both nodes the session waits, the dialler
/// dials again, the listener hears it on a new socket, and the session
/// resumes on the new link (`docs/PROTOCOL.md` §12): nothing lost or
/// duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab: scripts/test-hwlab.sh"]
async fn vcan_down_longer_than_the_idle_timeout_resumes_the_session() {
    vcan("vcresume");
    let _ = logs();
    let lost_before = log_lines("the session waits up to").len();
    let resumed_before = log_lines("link resumed: nothing lost").len();
    let n = 256 * 1024;
    let outages = Outages {
        at: vec![(n as u64 / 2, Duration::from_secs(8))],
        n,
        config: NodeConfig {
            keepalive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            resume_grace: Duration::from_secs(120),
            ..config()
        },
        ridden_out: false,
    };
    let _nodes = down_up_mid_transfer(
        "can://vcresume?tx=0x170&rx=0x171&fd=true",
        "can://vcresume?tx=0x171&rx=0x170&fd=true",
        "vcresume",
        "vcan down 8 s, idle timeout 3 s, resumed",
        outages,
    )
    .await;
    let lost = log_lines("the session waits up to");
    let resumed = log_lines("link resumed: nothing lost");
    println!(
        "  logged: {} links lost with the session kept, {} resumed",
        lost.len() - lost_before,
        resumed.len() - resumed_before
    );
    for l in lost[lost_before..].iter().chain(&resumed[resumed_before..]) {
        println!("  {l}");
    }
    assert!(lost.len() > lost_before, "the outage ended the link");
    assert!(resumed.len() > resumed_before, "the session resumed");
}
