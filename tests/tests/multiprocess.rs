//! Real processes linked by real TCP (or WebSocket) and Unix sockets.
//!
//! A, B and C are three `oscloud-testnode` processes. B listens on TCP and
//! on a Unix socket; C listens on TCP and dials B over the Unix socket; A
//! dials B and C over TCP. Liveness: keepalive 100 ms, idle timeout 600 ms.
//! Each test runs once over TCP and once with WebSocket links in its place
//! (`ws://`, as a browser's link is).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::time::{Duration, Instant};

use oscloud_tests::{TestNode, pipe_into_sink};

const BIN: &str = env!("CARGO_BIN_EXE_oscloud-testnode");
const LIVENESS: [&str; 4] = ["--keepalive-ms", "100", "--idle-ms", "600"];
const IDLE: Duration = Duration::from_millis(600);

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = LIVENESS.to_vec();
    v.extend_from_slice(extra);
    v
}

async fn start(name: &str, extra: &[&str]) -> TestNode {
    TestNode::start(Path::new(BIN), name, &args(extra)).await
}

/// Where a node listens on the network, for each link kind the tests run
/// over.
const TCP: &str = "tcp://127.0.0.1:0";
const WS: &str = "ws://127.0.0.1:0/oscloud";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_calls_pipes_kill_and_heal() {
    three_processes(TCP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_calls_pipes_kill_and_heal_over_websocket() {
    three_processes(WS).await;
}

async fn three_processes(net: &str) {
    let dir = tempfile::tempdir().unwrap();
    let b_sock = format!("unix://{}/b.sock", dir.path().display());
    let relay = ["--relay-to", "sink-c:in"];

    let mut b = start(
        "b",
        &[&["--listen", net, "--listen", &b_sock], &relay[..]].concat(),
    )
    .await;
    let b_tcp = b.listening[0].clone();
    assert!(b_tcp.starts_with(&net[..net.find(':').unwrap()]), "{b_tcp}");
    let mut c = start("c", &["--listen", net, "--connect", &b_sock]).await;
    let c_tcp = c.listening[0].clone();
    let mut a = start("a", &["--connect", &b_tcp, "--connect", &c_tcp]).await;

    // A call from A to a server in C (over TCP).
    assert!(a.ask("wait upper-c").await.starts_with("found upper-c"));
    assert_eq!(a.ask("call upper-c hello").await, "reply HELLO from c");
    // B sees C over the Unix socket.
    assert_eq!(
        b.ask("call upper-c via-unix").await,
        "reply VIA-UNIX from c"
    );

    // A pipe from A through the relay in B to the sink in C.
    const N: usize = 4 * 1024 * 1024;
    assert!(a.ask("wait relay-b").await.starts_with("found"));
    assert!(b.ask("wait sink-c").await.starts_with("found"));
    let took = pipe_into_sink(&mut a, "relay-b", &mut c, "sink-c", N).await;
    println!("{net}: 4 MiB A → B (relay) → C intact in {took:?}");

    // kill -9 of B: A and C get the down notice, with the link as reason.
    assert_eq!(a.ask("watch upper-b").await, "watching upper-b");
    assert_eq!(c.ask("watch relay-b").await, "watching relay-b");
    let killed = Instant::now();
    b.kill9().await;
    let gone_a = a.expect("gone upper-b").await;
    let at_a = killed.elapsed();
    let gone_c = c.expect("gone relay-b").await;
    let at_c = killed.elapsed();
    assert!(gone_a.contains("link down"), "{gone_a}");
    assert!(gone_c.contains("link down"), "{gone_c}");
    println!(
        "{net}: down notice after kill -9: A {at_a:?}, C {at_c:?} (liveness timeout {IDLE:?})"
    );
    assert!(at_a < 3 * IDLE && at_c < 3 * IDLE, "down notices too slow");

    // B comes back at the same addresses: A and C dial it again by
    // themselves and the registries heal.
    let restarted = Instant::now();
    let mut b = start(
        "b",
        &[&["--listen", &b_tcp, "--listen", &b_sock], &relay[..]].concat(),
    )
    .await;
    assert!(a.ask("wait upper-b").await.starts_with("found upper-b"));
    assert!(c.ask("wait relay-b").await.starts_with("found relay-b"));
    println!(
        "registries healed {:?} after B restarted",
        restarted.elapsed()
    );
    assert_eq!(a.ask("call upper-b back").await, "reply BACK from b");
    assert!(b.ask("wait upper-a").await.starts_with("found upper-a"));
    assert_eq!(b.ask("call upper-a hi").await, "reply HI from a");
}

/// A peer that stops answering without closing its sockets (SIGSTOP) is
/// declared down by the liveness timeout, and comes back when it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_peer_is_found_out_by_the_liveness_timeout() {
    frozen_peer(TCP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_peer_is_found_out_by_the_liveness_timeout_over_websocket() {
    frozen_peer(WS).await;
}

async fn frozen_peer(net: &str) {
    let mut b = start("b", &["--listen", net]).await;
    let b_tcp = b.listening[0].clone();
    let mut a = start("a", &["--connect", &b_tcp]).await;
    assert!(a.ask("wait upper-b").await.starts_with("found"));
    assert_eq!(a.ask("watch upper-b").await, "watching upper-b");
    let frozen = Instant::now();
    b.signal("STOP");
    let gone = a.expect("gone upper-b").await;
    let after = frozen.elapsed();
    b.signal("CONT");
    assert!(gone.contains("link down"), "{gone}");
    println!("{net}: frozen peer declared down after {after:?} (idle timeout {IDLE:?})");
    assert!(
        after >= IDLE / 2,
        "declared down before the timeout: {after:?}"
    );
    assert!(after < 3 * IDLE, "liveness timeout not honoured: {after:?}");
    // Once B runs again, A's dialler links it again.
    assert!(a.ask("wait upper-b").await.starts_with("found upper-b"));
    assert_eq!(a.ask("call upper-b again").await, "reply AGAIN from b");
    let _ = b.ask("wait upper-a").await;
}
