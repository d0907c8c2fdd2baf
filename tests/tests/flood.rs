//! A peer cannot make a node hold more memory than the node's link budget
//! (`NodeConfig::link_budget`): a raw peer in this process floods a node
//! in another process and never reads, while a well-behaved node on
//! another link keeps calling it. Each test asserts on the flooded
//! node's peak resident memory (`VmHWM`) and prints it with the memory
//! after the flooding link closed, as multiples of the budget
//! (`BENCHMARKS.md`, "Flooding peers").
//!
//! The flooded node's servers are Rust servers (`oscloud-testnode`), C
//! servers (`OSCLOUD_FLOOD_C_SERVER`: `scripts/test-c.sh` builds the
//! program and runs these tests with it) or Python servers
//! (`OSCLOUD_FLOOD_PYTHON`: `scripts/test-python.sh`). The C and Python
//! tests are ignored by a plain `cargo test`; the scripts run them with
//! `--ignored`, and without the variable they fail saying what is missing.
//! `OSCLOUD_FLOOD_SETTINGS` adds node settings to the flooded node
//! (`link_budget=4GiB` shows the tests fail without the budget).
//!
//! glibc's malloc keeps freed memory in its heaps, and serves blocks from
//! them once its mmap threshold has moved up (it does after the first
//! large buffer is freed), so the flooded node runs with
//! `MALLOC_MMAP_THRESHOLD_=65536`: every block of 64 KiB or more (receive
//! buffers, replies, the pipe frames of these floods) is then mapped on
//! its own and unmapped when freed, so what a closed link held goes back
//! to the system, and the tests check that it does. `OSCLOUD_FLOOD_MALLOC=default` runs
//! it with glibc's defaults (and checks only the peak).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oscloud_core::wire::{Config, FramingKind, Session};
use oscloud_tests::{TestNode, raw_handshake, status_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const BIN: &str = env!("CARGO_BIN_EXE_oscloud-testnode");
/// The flooded node's link budget (the default).
const BUDGET: u64 = 16 * 1024 * 1024;
/// The most the flooded node's resident memory may grow, in budgets.
const PEAK_BUDGETS: u64 = 5;
/// How far above its memory before the flood the node may stay once the
/// flooding link is closed, in KiB.
const AFTER_SLACK_KIB: u64 = 4 * 1024;

/// Whether the node runs with glibc's own malloc settings.
fn default_malloc() -> bool {
    std::env::var("OSCLOUD_FLOOD_MALLOC").is_ok_and(|v| v == "default")
}

/// A Ping packet, framed for a reliable stream.
const PING: &[u8] = &[0, 0, 0, 2, 0x91, 0x05];

/// A MessagePack string of `n` bytes: a request `upper-<node>` decodes.
fn msgpack_str(n: usize) -> Bytes {
    let mut v = vec![0xdb];
    v.extend_from_slice(&(n as u32).to_be_bytes());
    v.resize(5 + n, b'a');
    Bytes::from(v)
}

/// A raw peer's session that may send large packets and keep many calls
/// unanswered.
fn flood_config() -> Config {
    let mut c = Config::new(FramingKind::ReliableStream);
    c.max_frame = 1024 * 1024;
    c.max_pending_calls = 1 << 20;
    c.max_send_queue = 1 << 20;
    c
}

/// A raw peer linked to the node at `raw` with a session configured by
/// `config`: the session and the two halves of its socket.
async fn raw_peer(raw: &str, config: Config) -> (Session, OwnedReadHalf, OwnedWriteHalf) {
    let mut s = TcpStream::connect(raw).await.unwrap();
    let session = raw_handshake(&mut s, config).await;
    let (r, w) = s.into_split();
    (session, r, w)
}

/// Write everything `session` has to `w`; false once the node stops
/// taking bytes (the link closed).
async fn flush(session: &mut Session, w: &mut OwnedWriteHalf) -> bool {
    while let Some(out) = session.poll_transmit(Instant::now()) {
        if w.write_all(&out).await.is_err() {
            return false;
        }
    }
    true
}

/// What a flood did to the node.
struct Measured {
    base_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    sent: usize,
    calls: usize,
    worst_call: Duration,
}

impl Measured {
    /// Print the figures and check the peak against the budget.
    fn check(&self, what: &str) {
        self.report(what);
        assert!(
            (self.peak_kib - self.base_kib) * 1024 <= PEAK_BUDGETS * BUDGET,
            "{what}: the node grew by more than {PEAK_BUDGETS}× its link budget"
        );
        if !default_malloc() {
            assert!(
                self.after_kib <= self.base_kib + AFTER_SLACK_KIB,
                "{what}: the closed link's memory was not given back"
            );
        }
    }

    fn report(&self, what: &str) {
        let budget = |kib: u64| kib.saturating_sub(self.base_kib) as f64 * 1024.0 / BUDGET as f64;
        println!(
            "{what}: {} sent; node RSS {:.1} MiB before, peak {:.1} MiB (+{:.2}× budget), \
             {:.1} MiB after the link closed (+{:.2}× budget); {} calls from another link \
             served meanwhile, the slowest in {:?}",
            self.sent,
            self.base_kib as f64 / 1024.0,
            self.peak_kib as f64 / 1024.0,
            budget(self.peak_kib),
            self.after_kib as f64 / 1024.0,
            budget(self.after_kib),
            self.calls,
            self.worst_call,
        );
    }
}

/// The program hosting the flooded node's servers.
#[derive(Debug, Clone, Copy)]
enum Receiver {
    /// `oscloud-testnode`: Rust servers.
    Rust,
    /// `bindings-c/c/tests/flood_server.c`, built by `scripts/test-c.sh`,
    /// found through `OSCLOUD_FLOOD_C_SERVER`: C servers.
    C,
    /// `bindings-python/tests/flood_server.py`, run by the interpreter
    /// `OSCLOUD_FLOOD_PYTHON` names (one with `oscloud` installed, as
    /// `scripts/test-python.sh` sets it): Python servers.
    Python,
}

impl Receiver {
    /// The command starting node `n` with `settings`, listening on TCP;
    /// `None` when the program is not given.
    fn command(self, settings: &str) -> Option<tokio::process::Command> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (mut command, args) = match self {
            Self::Rust => (
                tokio::process::Command::new(BIN),
                [
                    "--name",
                    "n",
                    "--listen",
                    "tcp://127.0.0.1:0",
                    "--config",
                    settings,
                ]
                .to_vec(),
            ),
            Self::C => (
                tokio::process::Command::new(std::env::var_os("OSCLOUD_FLOOD_C_SERVER")?),
                ["n", "tcp://127.0.0.1:0", settings].to_vec(),
            ),
            Self::Python => {
                let mut c = tokio::process::Command::new(std::env::var_os("OSCLOUD_FLOOD_PYTHON")?);
                c.arg(manifest.join("../bindings-python/tests/flood_server.py"));
                (c, ["n", "tcp://127.0.0.1:0", settings].to_vec())
            }
        };
        command.args(args).env("RUST_LOG", "info");
        if !default_malloc() {
            command.env("MALLOC_MMAP_THRESHOLD_", "65536");
        }
        Some(command)
    }
}

/// Start node `n` (its servers hosted by `receiver`, listening on TCP,
/// with `settings` and those of `OSCLOUD_FLOOD_SETTINGS`) and a
/// well-behaved node `p` linked to it. Panics, naming the variable, if
/// `receiver`'s program is not given.
async fn nodes(receiver: Receiver, settings: &str) -> (TestNode, TestNode, String) {
    let extra = std::env::var("OSCLOUD_FLOOD_SETTINGS").unwrap_or_default();
    let settings = format!("keepalive=300ms, idle_timeout=2s, {settings}, {extra}");
    let Some(command) = receiver.command(&settings) else {
        panic!(
            "no {receiver:?} flood server given: set OSCLOUD_FLOOD_C_SERVER or \
             OSCLOUD_FLOOD_PYTHON (scripts/test-c.sh and scripts/test-python.sh do)"
        );
    };
    let n = TestNode::start_command(command, "n").await;
    let at = n.listening[0].clone();
    let mut p = TestNode::start(Path::new(BIN), "p", &["--connect", &at]).await;
    assert!(p.ask("wait upper-n").await.starts_with("found"));
    // Warm up both links' buffers before the baseline is taken.
    for i in 0..20 {
        assert_eq!(
            p.ask(&format!("call upper-n warm{i}")).await,
            format!("reply WARM{i} from n")
        );
    }
    let raw = at.trim_start_matches("tcp://").to_owned();
    (n, p, raw)
}

/// Run `flood` (a raw peer writing to the node) while `p` calls the node
/// over its own link; then wait for the node to close the flooding link
/// and for its memory to settle.
async fn measure<F>(n: &TestNode, p: &mut TestNode, mut s: OwnedReadHalf, flood: F) -> Measured
where
    F: Future<Output = usize> + Send + 'static,
{
    let pid = n.pid();
    let base_kib = status_kib(pid, "VmRSS").unwrap();
    let flooding = tokio::spawn(flood);
    // The well-behaved client is served throughout.
    let mut calls = 0;
    let mut worst_call = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !flooding.is_finished() {
        assert!(Instant::now() < deadline, "the flood never ended");
        let started = Instant::now();
        assert_eq!(
            p.ask(&format!("call upper-n during{calls}")).await,
            format!("reply DURING{calls} from n"),
            "a call on another link was not served during the flood"
        );
        worst_call = worst_call.max(started.elapsed());
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = flooding.await.unwrap();
    // The node closes the flooding link (the peer never read, or it ended
    // its writes): the socket reaches its end.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node kept the flooding link open");
    let peak_kib = status_kib(pid, "VmHWM").unwrap();
    // Memory settles once the link's buffers are dropped.
    let settle = Instant::now() + Duration::from_secs(5);
    let mut after_kib = status_kib(pid, "VmRSS").unwrap();
    while Instant::now() < settle && after_kib > base_kib + AFTER_SLACK_KIB / 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after_kib = status_kib(pid, "VmRSS").unwrap();
    }
    Measured {
        base_kib,
        peak_kib,
        after_kib,
        sent,
        calls,
        worst_call,
    }
}

/// 2 000 calls of 512 KiB to the echoing server `upper-n`, from a peer
/// that never reads the replies.
async fn calls_flood(receiver: Receiver) {
    let (n, mut p, raw) = nodes(receiver, "").await;
    let (mut session, r, mut w) = raw_peer(&raw, flood_config()).await;
    let flood = async move {
        let payload = msgpack_str(512 * 1024);
        let mut sent = 0;
        for _ in 0..2000 {
            session.call("upper-n", payload.clone()).unwrap();
            if !flush(&mut session, &mut w).await {
                break;
            }
            sent += 1;
        }
        sent
    };
    let m = measure(&n, &mut p, r, flood).await;
    m.check(&format!("calls flood ({receiver:?} server)"));
}

/// Up to 100 000 casts of 2 KiB to `slow-n`, a server that handles
/// 10 000 a second, for 4 s at most; then the peer ends its side of the
/// link. Every cast the node read is handled.
async fn casts_flood(receiver: Receiver) {
    let (n, mut p, raw) = nodes(receiver, "").await;
    let (mut session, r, mut w) = raw_peer(&raw, flood_config()).await;
    let flood = async move {
        let payload = msgpack_str(2048);
        let until = Instant::now() + Duration::from_secs(4);
        let mut sent = 0;
        while sent < 100_000 && Instant::now() < until {
            session.cast("slow-n", payload.clone()).unwrap();
            if !flush(&mut session, &mut w).await {
                break;
            }
            sent += 1;
        }
        let _ = w.shutdown().await;
        sent
    };
    let m = measure(&n, &mut p, r, flood).await;
    m.check(&format!("casts flood ({receiver:?} server)"));
    // Nothing the node read was lost: the server handles every cast.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = p.ask("call slow-n count").await;
        let handled: usize = got
            .strip_prefix("reply ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected answer {got:?}"));
        if handled >= m.sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {handled} of {} casts handled",
            m.sent
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_its_replies_is_held_to_the_budget() {
    calls_flood(Receiver::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the C flood server: run by scripts/test-c.sh"]
async fn a_c_server_flooded_with_calls_never_read_is_held_to_the_budget() {
    calls_flood(Receiver::C).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python flood server: run by scripts/test-python.sh"]
async fn a_python_server_flooded_with_calls_never_read_is_held_to_the_budget() {
    calls_flood(Receiver::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_to_a_slow_server_are_held_back_not_queued() {
    casts_flood(Receiver::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the C flood server: run by scripts/test-c.sh"]
async fn casts_to_a_slow_c_server_are_held_back_not_queued() {
    casts_flood(Receiver::C).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python flood server: run by scripts/test-python.sh"]
async fn casts_to_a_slow_python_server_are_held_back_not_queued() {
    casts_flood(Receiver::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_whose_reader_never_grants_credit_are_held_to_the_budget() {
    // A longer idle timeout: the node gives up on the peer later, so the
    // servers' writes have time to pile up if nothing holds them back.
    let (n, mut p, raw) = nodes(Receiver::Rust, "idle_timeout=6s").await;
    // A window as large as the protocol allows: the node may send that
    // much on each pipe before the peer grants more, and it never does.
    let mut config = flood_config();
    config.pipe_window = u32::MAX;
    let (mut session, r, mut w) = raw_peer(&raw, config).await;
    let flood = async move {
        // Eight pipes to a server that writes into them without end.
        for _ in 0..8 {
            session.open_pipe("sink-n", "source").unwrap();
        }
        flush(&mut session, &mut w).await;
        // Ping (`docs/PROTOCOL.md` §3.5) so that the node hears from the
        // peer, until the node gives up on it and writes fail; never read.
        let until = Instant::now() + Duration::from_secs(30);
        while w.write_all(PING).await.is_ok() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        8
    };
    let m = measure(&n, &mut p, r, flood).await;
    m.check("pipes flood");
}
