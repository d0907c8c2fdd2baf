//! Multi-hop routing between real processes over mixed transports.
//!
//! A chain: A, B and C are three `oscloud-testnode` processes; A is linked
//! to B only (Unix socket), C to B only (TCP). A sees C's servers through
//! B, calls them and pipes to them; B forwards. When B is killed (`kill
//! -9`), A sees C's servers go.
//!
//! A ring: A–B (Unix), B–C (TCP), C–D (Unix), D–A (TCP through a fault
//! relay in the test). A reaches D directly; when the relay partitions
//! A–D, A goes round through B and C, and back when it heals.
//!
//! Liveness: keepalive 100 ms, idle timeout 600 ms.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::time::{Duration, Instant};

use oscloud_core::address::Address;
use oscloud_faults::{Faults, Relay};
use oscloud_tests::{TestNode, pipe_into_sink};

const BIN: &str = env!("CARGO_BIN_EXE_oscloud-testnode");
const LIVENESS: [&str; 4] = ["--keepalive-ms", "100", "--idle-ms", "600"];
const IDLE: Duration = Duration::from_millis(600);

async fn start(name: &str, extra: &[&str]) -> TestNode {
    let mut v: Vec<&str> = LIVENESS.to_vec();
    v.extend_from_slice(extra);
    TestNode::start(Path::new(BIN), name, &v).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_over_unix_and_tcp_call_pipe_and_kill_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let b_sock = format!("unix://{}/b.sock", dir.path().display());
    let mut b = start("b", &["--listen", "tcp://127.0.0.1:0", "--listen", &b_sock]).await;
    let b_tcp = b.listening[0].clone();
    let mut a = start("a", &["--connect", &b_sock]).await;
    let mut c = start("c", &["--connect", &b_tcp]).await;

    // A sees C's servers, two hops away, and C sees A's.
    let started = Instant::now();
    let found = a.ask("wait upper-c").await;
    assert!(found.starts_with("found upper-c"), "{found}");
    assert!(c.ask("wait upper-a").await.starts_with("found upper-a"));
    println!("routes across the chain in {:?}", started.elapsed());

    // Calls from A to C, forwarded by B, both ways.
    assert_eq!(a.ask("call upper-c hello").await, "reply HELLO from c");
    assert_eq!(c.ask("call upper-a back").await, "reply BACK from a");

    // A pipe from A to C's sink, through B: 4 MiB intact.
    const N: usize = 4 * 1024 * 1024;
    assert!(a.ask("wait sink-c").await.starts_with("found"));
    let took = pipe_into_sink(&mut a, "sink-c", &mut c, "sink-c", N).await;
    println!("4 MiB A → B → C (unix, then tcp) intact in {took:?}");

    // kill -9 of B: A sees C's servers go (and C sees A's).
    assert_eq!(a.ask("watch upper-c").await, "watching upper-c");
    assert_eq!(c.ask("watch upper-a").await, "watching upper-a");
    let killed = Instant::now();
    b.kill9().await;
    let gone_a = a.expect("gone upper-c").await;
    let at_a = killed.elapsed();
    let gone_c = c.expect("gone upper-a").await;
    assert!(gone_a.contains("link down"), "{gone_a}");
    assert!(gone_c.contains("link down"), "{gone_c}");
    println!("C's servers gone from A {at_a:?} after kill -9 of B (liveness {IDLE:?})");
    assert!(at_a < 3 * IDLE, "withdrawal too slow");
    let err = a.ask("call upper-c again").await;
    assert!(err.starts_with("error"), "{err}");

    // B comes back: A and C dial it again and the routes heal.
    let restarted = Instant::now();
    let _b = start("b", &["--listen", &b_tcp, "--listen", &b_sock]).await;
    assert!(a.ask("wait upper-c").await.starts_with("found upper-c"));
    assert_eq!(a.ask("call upper-c healed").await, "reply HEALED from c");
    println!("routes healed {:?} after B restarted", restarted.elapsed());
}

/// Ask `node` for its route to `name` until the answer is `want`, for at
/// most 5 s; returns how long it took.
async fn route_becomes(node: &mut TestNode, name: &str, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        let got = node.ask(&format!("route {name}")).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "route to {name}: {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_over_unix_and_tcp_reroutes_round_a_partition_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let sock = |n: &str| format!("unix://{}/{n}.sock", dir.path().display());
    let mut c = start(
        "c",
        &["--listen", "tcp://127.0.0.1:0", "--listen", &sock("c")],
    )
    .await;
    let c_tcp = c.listening[0].clone();
    let mut d = start(
        "d",
        &["--listen", "tcp://127.0.0.1:0", "--connect", &sock("c")],
    )
    .await;
    let d_tcp: Address = d.listening[0].parse().unwrap();
    let mut b = start("b", &["--listen", &sock("b"), "--connect", &c_tcp]).await;
    let relay = Relay::start(
        &"tcp://127.0.0.1:0".parse().unwrap(),
        &d_tcp,
        Faults::seeded(1),
    )
    .await
    .unwrap();
    let relay_at = relay.address().to_string();
    let mut a = start("a", &["--connect", &sock("b"), "--connect", &relay_at]).await;

    // Every node sees every other's servers; A reaches D directly and C
    // two hops away.
    for (n, names) in [
        (&mut a, ["upper-b", "upper-c", "upper-d"]),
        (&mut b, ["upper-a", "upper-c", "upper-d"]),
        (&mut c, ["upper-a", "upper-b", "upper-d"]),
        (&mut d, ["upper-a", "upper-b", "upper-c"]),
    ] {
        for name in names {
            assert!(n.ask(&format!("wait {name}")).await.starts_with("found"));
        }
    }
    route_becomes(&mut a, "upper-d", "route upper-d hops 1 cost 1").await;
    route_becomes(&mut a, "upper-c", "route upper-c hops 2 cost 2").await;
    route_becomes(&mut c, "upper-a", "route upper-a hops 2 cost 2").await;
    assert_eq!(a.ask("call upper-d one").await, "reply ONE from d");
    assert_eq!(c.ask("call upper-a two").await, "reply TWO from a");

    // Partition A–D: A goes round through B and C (3 hops).
    relay.partition();
    let took = route_becomes(&mut a, "upper-d", "route upper-d hops 3 cost 3").await;
    println!("A re-routed to D through B and C {took:?} after the partition");
    assert_eq!(a.ask("call upper-d round").await, "reply ROUND from d");
    assert_eq!(d.ask("call upper-a round").await, "reply ROUND from a");
    // The partition holds: A's redials are refused meanwhile.
    assert!(relay.connections() == 1);

    // Heal: A dials D again and the direct route is back.
    relay.heal();
    let took = route_becomes(&mut a, "upper-d", "route upper-d hops 1 cost 1").await;
    println!("direct route back {took:?} after the heal");
    assert_eq!(relay.connections(), 2);
    assert_eq!(a.ask("call upper-d direct").await, "reply DIRECT from d");
}
