//! The zenoh directory (`?directory=1` on a zenoh listen address): nodes
//! that dial no one find each other's servers through liveliness tokens
//! in a real zenoh router (`zenohd`, see `oscloud_tests::zenohd`), link on
//! demand, and hold only what they use.
//!
//! `directory_bench` (ignored; `OSCLOUD_FLEET_N=50 cargo test -p
//! oscloud-tests --release --test zenoh_directory -- --ignored --nocapture`)
//! measures the figures of BENCHMARKS.md's "zenoh fabric" section.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::time::{Duration, Instant};

use oscloud_tests::zenohd::{LIVENESS, Router};
use oscloud_tests::{TestNode, status_kib};

const BIN: &str = env!("CARGO_BIN_EXE_oscloud-testnode");
const CLOUD: &str = "dir";

/// Node `f<i>` listening through `router` with the directory, dialling no one.
async fn dir_node(router: &Router, i: usize) -> TestNode {
    dir_node_with(router, i, "").await
}

/// [`dir_node`] with more address parameters (`&directory_idle=1s`).
async fn dir_node_with(router: &Router, i: usize, params: &str) -> TestNode {
    let at = format!(
        "{}?directory=1{params}",
        router.addr(CLOUD, &format!("f{i}"))
    );
    let mut args: Vec<&str> = LIVENESS.to_vec();
    args.extend_from_slice(&["--listen", &at]);
    TestNode::start(Path::new(BIN), &format!("f{i}"), &args).await
}

/// The registry entries `node` holds now.
async fn entries(node: &mut TestNode) -> usize {
    let answer = node.ask("entries").await;
    answer
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: {answer}", node.name))
}

/// `from` calls `upper-f<j>` by name.
async fn call(from: &mut TestNode, j: usize) {
    assert_eq!(
        from.ask(&format!("call upper-f{j} hi")).await,
        format!("reply HI from f{j}"),
        "{} calling f{j}",
        from.name
    );
}

/// The nodes publishing `name` in the directory, asked of the router by a
/// plain zenoh client (the documented key layout).
async fn published(router: &Router, name: &str) -> Vec<String> {
    let mut config = zenoh::Config::default();
    config.insert_json5("mode", r#""client""#).unwrap();
    config
        .insert_json5("scouting/multicast/enabled", "false")
        .unwrap();
    config
        .insert_json5(
            "connect/endpoints",
            &format!(r#"["tcp/127.0.0.1:{}"]"#, router.port),
        )
        .unwrap();
    let session = zenoh::open(config).await.unwrap();
    let replies = session
        .liveliness()
        .get(format!("oscloud/{CLOUD}/srv/{name}/*"))
        .await
        .unwrap();
    let mut nodes = Vec::new();
    while let Ok(reply) = replies.recv_async().await {
        if let Ok(sample) = reply.result() {
            nodes.push(
                sample
                    .key_expr()
                    .as_str()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    session.close().await.unwrap();
    nodes.sort();
    nodes
}

/// Poll until `name` is published by exactly `nodes` (with a deadline).
async fn until_published(router: &Router, name: &str, nodes: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = published(router, name).await;
        if now == nodes {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} published by {now:?}, not {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Five nodes, none dialling another: every node calls every other's
/// server by name; a node holds its own servers and those of the nodes it
/// linked to, nothing forwarded over directory links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_dial_no_one_call_each_other_by_name() {
    const N: usize = 5;
    let router = Router::start().await;
    let mut nodes = Vec::new();
    for i in 0..N {
        nodes.push(dir_node(&router, i).await);
    }
    let own = entries(&mut nodes[2]).await;
    until_published(&router, "upper-f1", &["f1"]).await;

    // f0 links to f1 on demand: each holds the other's servers, f2 nothing
    // more than its own.
    call(&mut nodes[0], 1).await;
    assert_eq!(entries(&mut nodes[0]).await, 2 * own);
    assert_eq!(entries(&mut nodes[2]).await, own);
    // f1 links to f2: f2 gets f1's servers, not f0's (what f1 learned
    // over a directory link is forwarded to no one).
    call(&mut nodes[1], 2).await;
    assert_eq!(entries(&mut nodes[2]).await, 2 * own);
    assert_eq!(
        nodes[2].ask("call upper-f0 direct").await,
        "reply DIRECT from f0",
        "f2 finds f0 by itself"
    );
    assert_eq!(
        nodes[2].ask("route upper-f0").await,
        "route upper-f0 hops 1 cost 1"
    );

    let started = Instant::now();
    for (i, node) in nodes.iter_mut().enumerate() {
        for j in (0..N).filter(|&j| j != i) {
            call(node, j).await;
        }
    }
    println!(
        "{N} nodes, all {} pairs called in {:?}",
        N * (N - 1),
        started.elapsed()
    );
    for node in &mut nodes {
        assert_eq!(entries(node).await, N * own, "{}", node.name);
    }
}

/// A server that stops leaves the directory and the lookups of the nodes
/// that used it; a node killed with SIGKILL has its tokens withdrawn and
/// its servers gone from its peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_servers_and_killed_nodes_leave_the_directory() {
    let router = Router::start().await;
    let mut a = dir_node(&router, 0).await;
    let mut b = dir_node(&router, 1).await;
    let mut c = dir_node(&router, 2).await;

    assert_eq!(b.ask("register extra-f1").await, "registered extra-f1");
    // Published a moment after it is registered.
    until_published(&router, "extra-f1", &["f1"]).await;
    assert_eq!(a.ask("call extra-f1 echo").await, "reply echo");
    assert_eq!(a.ask("watch extra-f1").await, "watching extra-f1");
    assert_eq!(b.ask("unregister extra-f1").await, "unregistered extra-f1");
    assert!(a.expect("gone extra-f1").await.contains("normal"));
    until_published(&router, "extra-f1", &[]).await;
    // Neither the node that used it nor one that never did finds it.
    for node in [&mut a, &mut c] {
        let answer = node.ask("call extra-f1 echo").await;
        assert!(
            answer.contains("no server named"),
            "{}: {answer}",
            node.name
        );
    }

    // A server registered later is found by a node already linked and by
    // a fresh one.
    assert_eq!(b.ask("register late-f1").await, "registered late-f1");
    until_published(&router, "late-f1", &["f1"]).await;
    assert_eq!(c.ask("call late-f1 x").await, "reply x");

    // kill -9 of c: its tokens go, and a (which linked to c) sees its
    // servers withdrawn by the transport (node liveness is 60 s).
    call(&mut a, 2).await;
    assert_eq!(a.ask("watch upper-f2").await, "watching upper-f2");
    assert_eq!(published(&router, "upper-f2").await, ["f2"]);
    c.kill9().await;
    assert!(a.expect("gone upper-f2").await.contains("link down"));
    until_published(&router, "upper-f2", &[]).await;
    let answer = b.ask("call upper-f2 anyone").await;
    assert!(answer.starts_with("error"), "{answer}");

    // Back under its name: found again, by a node whose link to it died.
    let _c = dir_node(&router, 2).await;
    until_published(&router, "upper-f2", &["f2"]).await;
    call(&mut a, 2).await;
}

/// The links `node` has now.
async fn links(node: &mut TestNode) -> usize {
    let answer = node.ask("entries").await;
    answer
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: {answer}", node.name))
}

/// Poll until `node` has `n` links (with a deadline).
async fn until_links(node: &mut TestNode, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = links(node).await;
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {now} links, not {n}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A link dialled on demand is closed once nothing used it for
/// `directory_idle`, on both sides, with the servers it brought; the next
/// call dials again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_directory_links_close_and_the_next_call_dials_again() {
    let router = Router::start().await;
    let mut a = dir_node_with(&router, 0, "&directory_idle=300ms").await;
    let mut b = dir_node(&router, 1).await;
    let own = entries(&mut b).await;
    until_published(&router, "upper-f1", &["f1"]).await;

    call(&mut a, 1).await;
    assert_eq!(entries(&mut a).await, 2 * own);
    until_links(&mut a, 0).await;
    until_links(&mut b, 0).await;
    assert_eq!(
        entries(&mut a).await,
        own,
        "f1's servers left with the link"
    );
    assert_eq!(
        entries(&mut b).await,
        own,
        "f0's servers left with the link"
    );

    // Called again: linked again, and closed again once idle.
    call(&mut a, 1).await;
    call(&mut b, 0).await;
    until_links(&mut a, 0).await;
    until_links(&mut b, 0).await;

    // b dialled with the default idle time (60 s): its link to a stays.
    call(&mut b, 0).await;
    assert_eq!(links(&mut b).await, 1);
    assert_eq!(links(&mut a).await, 1);
}

/// A directory watch reports the servers other nodes publish and
/// withdraw, nodes this one never linked to included, without linking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_watch_sees_servers_come_and_go_elsewhere() {
    let router = Router::start().await;
    let mut a = dir_node(&router, 0).await;
    let mut b = dir_node(&router, 1).await;
    let own = entries(&mut a).await;

    assert_eq!(a.ask("dwatch late-f1").await, "dwatching late-f1");
    assert_eq!(b.ask("register late-f1").await, "registered late-f1");
    assert_eq!(a.expect("published late-f1").await, "published late-f1 f1");
    assert_eq!(b.ask("unregister late-f1").await, "unregistered late-f1");
    assert_eq!(a.expect("withdrawn late-f1").await, "withdrawn late-f1 f1");
    assert_eq!(entries(&mut a).await, own, "watching links to no one");
    assert_eq!(links(&mut a).await, 0);

    // Every name: what is published already, then a node that comes and
    // one killed with SIGKILL.
    // What is published already may come before the answer.
    a.send("dwatch *").await;
    assert_eq!(
        a.expect("published upper-f1").await,
        "published upper-f1 f1"
    );
    let mut c = dir_node(&router, 2).await;
    assert_eq!(
        a.expect("published upper-f2").await,
        "published upper-f2 f2"
    );
    c.kill9().await;
    assert_eq!(
        a.expect("withdrawn upper-f2").await,
        "withdrawn upper-f2 f2"
    );
}

/// A server the access policy hides from every peer is not published
/// (nor found); published once the policy lets a peer see it, withdrawn
/// when it hides it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_the_policy_hides_are_not_published() {
    let router = Router::start().await;
    let mut a = dir_node(&router, 0).await;
    let mut b = dir_node(&router, 1).await;
    assert_eq!(b.ask("policy hidden-f1 all none").await, "policy set");
    assert_eq!(b.ask("register hidden-f1").await, "registered hidden-f1");
    assert_eq!(b.ask("register shown-f1").await, "registered shown-f1");
    // Published in order: shown-f1 came after hidden-f1 would have.
    until_published(&router, "shown-f1", &["f1"]).await;
    assert_eq!(published(&router, "hidden-f1").await, Vec::<String>::new());
    let answer = a.ask("call hidden-f1 x").await;
    assert!(answer.contains("no server named"), "{answer}");

    assert_eq!(b.ask("policy").await, "policy set");
    until_published(&router, "hidden-f1", &["f1"]).await;
    assert_eq!(a.ask("call hidden-f1 x").await, "reply x");

    assert_eq!(b.ask("policy hidden-f1 all none").await, "policy set");
    until_published(&router, "hidden-f1", &[]).await;
    assert_eq!(published(&router, "shown-f1").await, ["f1"]);
}

/// Registry entries, links and RSS per node, and how long a new server
/// takes to be callable from a node that never saw it, for
/// `OSCLOUD_FLEET_N` nodes (default 50) through the directory; not run in
/// CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand with OSCLOUD_FLEET_N"]
async fn directory_bench() {
    let n: usize = std::env::var("OSCLOUD_FLEET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let router = Router::start().await;
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        nodes.push(dir_node(&router, i).await);
    }
    until_published(
        &router,
        &format!("upper-f{}", n - 1),
        &[&format!("f{}", n - 1)],
    )
    .await;
    println!("{n} nodes up and published in {:?}", started.elapsed());
    // Every node calls three others (a working set that does not grow
    // with the cloud).
    for (i, node) in nodes.iter_mut().enumerate() {
        for k in 1..=3 {
            call(node, (i + k * 7) % n).await;
        }
    }
    let mut counts = Vec::new();
    for node in &mut nodes {
        counts.push(node.ask("entries").await);
    }
    let held: Vec<usize> = counts
        .iter()
        .map(|c| c.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    println!(
        "registry entries per node: mean {:.1}, max {} (n = {n}); e.g. {}",
        held.iter().sum::<usize>() as f64 / n as f64,
        held.iter().max().unwrap(),
        counts[0]
    );
    let rss: Vec<u64> = nodes
        .iter()
        .filter_map(|node| status_kib(node.pid(), "VmRSS"))
        .collect();
    println!(
        "RSS per node: mean {:.1} MiB, max {:.1} MiB (n = {n})",
        rss.iter().sum::<u64>() as f64 / rss.len() as f64 / 1024.0,
        *rss.iter().max().unwrap() as f64 / 1024.0
    );
    println!(
        "zenohd RSS {:.1} MiB",
        status_kib(router.pid().unwrap_or(0), "VmRSS").unwrap_or(0) as f64 / 1024.0
    );

    // A new server on one node, called from a node that never linked to
    // it: time from registered to the first reply.
    let mut times = Vec::new();
    for round in 0..5 {
        let (owner, caller) = (round * 11 % n, (round * 11 + n / 2) % n);
        let name = format!("late{round}-f{owner}");
        assert_eq!(
            nodes[owner].ask(&format!("register {name}")).await,
            format!("registered {name}")
        );
        let t = Instant::now();
        loop {
            let answer = nodes[caller].ask(&format!("call {name} x")).await;
            if answer == "reply x" {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "{answer}");
        }
        times.push(t.elapsed());
    }
    println!("a new server callable from a fresh node after {times:?}");
}
