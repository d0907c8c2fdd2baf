//! Nodes linked through a real zenoh router (`zenohd`, installed by
//! `scripts/install-zenohd.sh` into `target/tools/bin`, or named by the
//! `ZENOHD` environment variable).
//!
//! Every test starts its own router on a free port and `oscloud-testnode`
//! processes that listen and dial with `zenoh://127.0.0.1:PORT/<cloud>/<node>`.
//! The nodes' own liveness timeout is set long (60 s), so a link that fails
//! within the tests' deadlines was failed by the transport (the peer's
//! zenoh liveliness token going), not by the session's keepalive.
//!
//! `fleet_bench` (ignored; `OSCLOUD_FLEET_N=50 cargo test -p oscloud-tests
//! --release --test zenoh -- --ignored --nocapture fleet_bench`) measures
//! the figures of BENCHMARKS.md's "zenoh fabric" section.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oscloud_core::Error;
use oscloud_core::transport::Transports;
use oscloud_tests::zenohd::{LIVENESS, Router};
use oscloud_tests::{TestNode, pipe_into_sink, status_kib};
use oscloud_transport_zenoh::ZenohTransport;

const BIN: &str = env!("CARGO_BIN_EXE_oscloud-testnode");

async fn node(name: &str, extra: &[&str]) -> TestNode {
    let mut args: Vec<&str> = LIVENESS.to_vec();
    args.extend_from_slice(extra);
    TestNode::start(Path::new(BIN), name, &args).await
}

/// Calls both ways, casts, and a pipe under credit between two processes
/// linked through the router; the dialler starts before the listener and
/// links once it appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_casts_and_a_pipe_through_a_router() {
    let router = Router::start().await;
    let b_at = router.addr("t", "b");
    let mut a = node("a", &["--connect", &b_at]).await;
    let mut b = node("b", &["--listen", &b_at]).await;
    assert_eq!(b.listening, std::slice::from_ref(&b_at));

    assert!(a.ask("wait upper-b").await.starts_with("found upper-b"));
    assert_eq!(a.ask("call upper-b hello").await, "reply HELLO from b");
    assert!(b.ask("wait upper-a").await.starts_with("found upper-a"));
    assert_eq!(b.ask("call upper-a back").await, "reply BACK from a");

    // Casts arrive, all of them (the slow server lags behind the sender).
    const CASTS: u64 = 20_000;
    assert!(a.ask("wait slow-b").await.starts_with("found"));
    assert_eq!(a.ask(&format!("casts slow-b {CASTS}")).await, "cast 20000");
    assert_eq!(
        a.ask(&format!("castwait slow-b {CASTS}")).await,
        format!("handled {CASTS}")
    );

    // A pipe of 8 MiB, its credit keeping the sender to the sink's pace.
    const N: usize = 8 * 1024 * 1024;
    assert!(a.ask("wait sink-b").await.starts_with("found"));
    let took = pipe_into_sink(&mut a, "sink-b", &mut b, "sink-b", N).await;
    println!("8 MiB through zenohd intact in {took:?}");
}

/// A node killed with SIGKILL: its peer sees the link fail (the node's own
/// liveness timeout is 60 s, so the transport noticed) and its servers
/// withdrawn; restarted under the same name, it is linked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_node_fails_the_link_and_withdraws_its_servers() {
    let router = Router::start().await;
    let b_at = router.addr("t", "b");
    let mut b = node("b", &["--listen", &b_at]).await;
    // `a` dials again while `b` is gone: a short backoff ceiling, so the
    // redial after the restart does not wait out a long backoff, and room
    // for a slow restart when the other tests load the machine.
    let mut a = node(
        "a",
        &["--connect", &b_at, "--config", "reconnect_max=500ms"],
    )
    .await;
    a.line_deadline = Duration::from_secs(60);
    assert!(a.ask("wait upper-b").await.starts_with("found upper-b"));
    assert!(a.ask("wait sink-b").await.starts_with("found sink-b"));
    assert_eq!(a.ask("watch upper-b").await, "watching upper-b");
    assert_eq!(a.ask("watch sink-b").await, "watching sink-b");

    let killed = Instant::now();
    b.kill9().await;
    // Both servers are withdrawn; in which order is not specified.
    let first = a.expect("gone ").await;
    let after = killed.elapsed();
    let second = a.expect("gone ").await;
    let mut gone = [first, second];
    gone.sort();
    assert!(gone[0].starts_with("gone sink-b"), "{gone:?}");
    assert!(gone[1].starts_with("gone upper-b"), "{gone:?}");
    assert!(gone.iter().all(|g| g.contains("link down")), "{gone:?}");
    println!("link failed and servers withdrawn {after:?} after kill -9 (node liveness 60 s)");
    assert!(
        a.ask("call upper-b anyone").await.starts_with("error"),
        "a call to a withdrawn server must fail"
    );

    let mut b = node("b", &["--listen", &b_at]).await;
    assert!(a.ask("wait upper-b").await.starts_with("found upper-b"));
    assert_eq!(a.ask("call upper-b again").await, "reply AGAIN from b");
    assert!(b.ask("wait upper-a").await.starts_with("found upper-a"));
}

/// The router killed with SIGKILL and restarted on the same port: the
/// links fail, the nodes dial again once it is back, the sessions resume,
/// and nothing cast before, during or after is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_restart_resumes_the_sessions_with_nothing_lost() {
    let mut router = Router::start().await;
    let b_at = router.addr("t", "b");
    // A grace long enough to cover the router's absence.
    let grace = ["--config", "resume_grace=30s"];
    let mut b = node("b", &[&["--listen", &b_at][..], &grace].concat()).await;
    let mut a = node("a", &[&["--connect", &b_at][..], &grace].concat()).await;
    assert!(a.ask("wait slow-b").await.starts_with("found slow-b"));
    assert_eq!(a.ask("casts slow-b 5000").await, "cast 5000");

    let down = Instant::now();
    router.kill9().await;
    // Casts while the router is away are held for the resumed session.
    assert_eq!(a.ask("casts slow-b 5000").await, "cast 5000");
    let router = Router::start_on(router.port).await;
    // Calls fail while the session is still away (the zenoh client's
    // reconnection takes a few seconds): ask again until one is answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = a.ask("castwait slow-b 10000").await;
        if answer.starts_with("handled") {
            assert_eq!(answer, "handled 10000", "casts lost or doubled");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "casts lost across the router restart: {answer}"
        );
    }
    println!(
        "router back and every cast delivered {:?} after the kill",
        down.elapsed()
    );
    assert_eq!(a.ask("call upper-b after").await, "reply AFTER from b");
    assert_eq!(b.ask("call upper-a after").await, "reply AFTER from a");
    drop(router);
}

/// In one process: a second listener under a name taken is refused, and
/// dialling a name nobody listens as is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_taken_once_and_unknown_names_are_refused() {
    let router = Router::start().await;
    let transports = Transports::new().with(Arc::new(ZenohTransport::new()));
    let at = router.addr("t", "x").parse().unwrap();
    let _listener = transports.listen(&at).await.unwrap();
    let other = Transports::new().with(Arc::new(ZenohTransport::new()));
    match other.listen(&at).await {
        Err(Error::AddressInUse { .. }) => {}
        r => panic!("a second listener as t/x: {:?}", r.map(|_| ())),
    }
    let nobody = router.addr("t", "nobody").parse().unwrap();
    match other.connect(&nobody).await {
        Err(Error::ConnectionRefused { .. }) => {}
        r => panic!("dialling t/nobody: {:?}", r.map(|l| l.info)),
    }
    // The same name in another cloud is another node.
    let _elsewhere = other
        .listen(&router.addr("u", "x").parse().unwrap())
        .await
        .unwrap();
}

/// `n` nodes through one router, each dialling every node before it (a
/// full mesh of links), named `f0`, `f1`, ...
async fn fleet(router: &Router, n: usize, dials: impl Fn(usize) -> Vec<usize>) -> Vec<TestNode> {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        nodes.push(fleet_node(router, i, &dials(i)).await);
    }
    nodes
}

async fn fleet_node(router: &Router, i: usize, dials: &[usize]) -> TestNode {
    let me = router.addr("fleet", &format!("f{i}"));
    let mut args = vec!["--listen".to_owned(), me];
    for j in dials {
        args.push("--connect".into());
        args.push(router.addr("fleet", &format!("f{j}")));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node(&format!("f{i}"), &args).await
}

/// Every node in `alive` finds every other's server and calls it.
async fn all_call_all(nodes: &mut [Option<TestNode>]) {
    let alive: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].is_some()).collect();
    for &i in &alive {
        let from = nodes[i].as_mut().unwrap();
        for &j in &alive {
            if i != j {
                let found = from.ask(&format!("wait upper-f{j}")).await;
                assert!(found.starts_with("found"), "f{i}: {found}");
                assert_eq!(
                    from.ask(&format!("call upper-f{j} hi")).await,
                    format!("reply HI from f{j}"),
                    "f{i} calling f{j}"
                );
            }
        }
    }
}

/// Ten node processes through one router, fully meshed: every node calls
/// every other; two are killed with SIGKILL, every survivor sees their
/// servers withdrawn and the survivors keep calling each other; the two
/// come back and the registries converge again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_ten_survives_a_kill9_round() {
    const N: usize = 10;
    const KILLED: [usize; 2] = [3, 7];
    let router = Router::start().await;
    let started = Instant::now();
    let mut nodes: Vec<Option<TestNode>> = fleet(&router, N, |i| (0..i).collect())
        .await
        .into_iter()
        .map(Some)
        .collect();
    all_call_all(&mut nodes).await;
    println!(
        "{N} nodes up, all {} pairs called, in {:?}",
        N * (N - 1),
        started.elapsed()
    );

    for node in nodes.iter_mut().flatten() {
        for k in KILLED {
            if node.name != format!("f{k}") {
                assert_eq!(
                    node.ask(&format!("watch upper-f{k}")).await,
                    format!("watching upper-f{k}")
                );
            }
        }
    }
    let killed = Instant::now();
    for k in KILLED {
        nodes[k].take().unwrap().kill9().await;
    }
    for node in nodes.iter_mut().flatten() {
        // Both notices, in either order.
        let mut missing: Vec<String> = KILLED.iter().map(|k| format!("gone upper-f{k} ")).collect();
        while !missing.is_empty() {
            let gone = node.expect("gone upper-f").await;
            assert!(gone.contains("link down"), "{}: {gone}", node.name);
            missing.retain(|m| !gone.starts_with(m.as_str()));
        }
    }
    println!(
        "every survivor saw both killed nodes withdrawn {:?} after the kill",
        killed.elapsed()
    );
    all_call_all(&mut nodes).await;

    // The killed come back under their names: every node is linked to
    // them again (the later nodes were dialling them all along).
    for k in KILLED {
        nodes[k] = Some(fleet_node(&router, k, &(0..k).collect::<Vec<_>>()).await);
    }
    all_call_all(&mut nodes).await;
    println!(
        "registries converged again {:?} after the kill",
        killed.elapsed()
    );
}

/// Wait until `node` has `name`, asking again for up to two minutes (a
/// large fleet on a small machine takes a while to settle).
async fn wait_long(node: &mut TestNode, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = node.ask(&format!("wait {name}")).await;
        if answer.starts_with("found") {
            return;
        }
        if Instant::now() >= deadline {
            let log = node.stderr_now();
            panic!("{}: {answer}; stderr:\n{log}", node.name);
        }
    }
}

/// The figures of BENCHMARKS.md's "zenoh fabric" section, for
/// `OSCLOUD_FLEET_N` nodes (default 50); not run in CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand with OSCLOUD_FLEET_N"]
async fn fleet_bench() {
    let n: usize = std::env::var("OSCLOUD_FLEET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let router = Router::start().await;

    // Call round trips: two nodes through the router against a direct TCP
    // link, 2000 sequential calls each, after 200 to warm up.
    let rtt = |line: String| -> f64 {
        let us: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        us / 2000.0
    };
    let b_at = router.addr("rtt", "b");
    let b = node("b", &["--listen", &b_at, "--listen", "tcp://127.0.0.1:0"]).await;
    let b_tcp = b.listening[1].clone();
    let mut z = node("z", &["--connect", &b_at]).await;
    let mut t = node("t", &["--connect", &b_tcp]).await;
    let mut figures = Vec::new();
    for (via, caller) in [("zenoh", &mut z), ("tcp", &mut t)] {
        assert!(caller.ask("wait upper-b").await.starts_with("found"));
        let _ = caller.ask("calls upper-b 200").await;
        figures.push((via, rtt(caller.ask("calls upper-b 2000").await)));
    }
    println!(
        "call RTT: through zenohd {:.0} µs, direct TCP {:.0} µs, ratio {:.2}",
        figures[0].1,
        figures[1].1,
        figures[0].1 / figures[1].1
    );
    drop((b, z, t));

    // The fleet: a star, every node linked to f0 through the router (two
    // hops from any node to any other).
    let dials = |i: usize| -> Vec<usize> { if i == 0 { vec![] } else { vec![0] } };
    let started = Instant::now();
    let mut nodes = fleet(&router, n, dials).await;
    for node in &mut nodes {
        wait_long(node, &format!("upper-f{}", n - 1)).await;
    }
    println!(
        "{n} nodes up and the last one seen by all in {:?}",
        started.elapsed()
    );
    // Settle: every node sees every other's servers.
    for node in &mut nodes {
        for j in [0, n / 2, n - 1] {
            wait_long(node, &format!("sink-f{j}")).await;
        }
    }

    // A new server: one more node joins; how long from its being ready
    // until every node has its server.
    let mut newcomer = fleet_node(&router, n, &dials(n)).await;
    let joined = Instant::now();
    for node in &mut nodes {
        node.send(&format!("wait upper-f{n}")).await;
    }
    for node in &mut nodes {
        assert!(
            node.expect("found upper-f")
                .await
                .starts_with(&format!("found upper-f{n}"))
        );
    }
    println!(
        "a new node's server visible on all {n} nodes {:?} after it was ready",
        joined.elapsed()
    );
    let rss: Vec<u64> = nodes
        .iter()
        .filter_map(|node| status_kib(node.pid(), "VmRSS"))
        .collect();
    let mean = rss.iter().sum::<u64>() as f64 / rss.len() as f64 / 1024.0;
    let max = *rss.iter().max().unwrap() as f64 / 1024.0;
    println!("RSS per node: mean {mean:.1} MiB, max {max:.1} MiB (n = {n})");
    let (hub, leaf) = (
        nodes[0].ask("entries").await,
        nodes[n - 1].ask("entries").await,
    );
    println!("registry: hub {hub}; a leaf {leaf} (n = {n})");
    if let Some(r) = status_kib(router.pid().unwrap(), "VmRSS") {
        println!("zenohd RSS {:.1} MiB", r as f64 / 1024.0);
    }
    let _ = newcomer.ask("wait upper-f0").await;
}
