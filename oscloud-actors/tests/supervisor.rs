//! Supervision: strategies, restart policies, intensity and escalation,
//! start/stop order.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside #[test] fns

#[path = "support/util.rs"]
mod support;

use std::time::Duration;

use oscloud_actors::{
    ChildSpec, Error, Restart, ServerRef, Strategy, Supervisor, SupervisorHandle,
    SupervisorRequest, SupervisorSpec, SupervisorStats,
};
use oscloud_core::{Kernel, Watch};
use support::*;

fn child(id: &'static str, probe: &Probe) -> ChildSpec {
    let p = probe.clone();
    ChildSpec::server(id, move || TestServer::new(id, &p))
}

async fn call(kernel: &Kernel, name: &str, req: Req) -> Rep {
    let r = ServerRef::lookup(kernel, name).unwrap().typed::<Req, Rep>();
    r.call(&req, T).await.unwrap()
}

async fn fail(kernel: &Kernel, name: &str) {
    let r = ServerRef::lookup(kernel, name).unwrap().typed::<Req, Rep>();
    assert!(r.call(&Req::Fail("boom".into()), T).await.is_err());
}

/// A three-child tree `sup` over a, b, c; returns it with a watch past the
/// snapshot.
async fn abc(kernel: &Kernel, probe: &Probe, strategy: Strategy) -> (SupervisorHandle, Watch) {
    let tree = Supervisor::start(
        kernel,
        SupervisorSpec::new("sup")
            .strategy(strategy)
            .intensity(5, Duration::from_secs(10))
            .child(child("a", probe))
            .child(child("b", probe))
            .child(child("c", probe)),
    )
    .await
    .unwrap();
    assert_eq!(probe.log(), ["start:a", "start:b", "start:c"]);
    let mut watch = kernel.registry().watch();
    skip(&mut watch, 4).await;
    // Give a and c some state to prove whether they were restarted.
    call(kernel, "a", Req::Add(1)).await;
    call(kernel, "c", Req::Add(1)).await;
    probe.clear();
    (tree, watch)
}

async fn restarts(tree: &SupervisorHandle, expect: [u64; 3]) {
    eventually("restart counters", || {
        let s = tree.stats();
        [s.restarts("a"), s.restarts("b"), s.restarts("c")] == expect
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let (tree, mut watch) = abc(&kernel, &probe, Strategy::OneForOne).await;
    fail(&kernel, "b").await;
    assert_eq!(next_events(&mut watch, 2).await, ["-b:failed", "+b"]);
    assert_eq!(probe.log(), ["start:b"]);
    assert_eq!(call(&kernel, "a", Req::Get).await, Rep::Count(1));
    assert_eq!(call(&kernel, "c", Req::Get).await, Rep::Count(1));
    restarts(&tree, [0, 1, 0]).await;
    assert_eq!(tree.stats().total_restarts(), 1);
    tree.stop().await;
    assert_eq!(
        next_events(&mut watch, 4).await,
        ["-c:normal", "-b:normal", "-a:normal", "-sup:normal"]
    );
    tree.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_everyone_in_order() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let (tree, mut watch) = abc(&kernel, &probe, Strategy::OneForAll).await;
    fail(&kernel, "b").await;
    assert_eq!(
        next_events(&mut watch, 6).await,
        ["-b:failed", "-c:normal", "-a:normal", "+a", "+b", "+c"]
    );
    assert_eq!(probe.log(), ["start:a", "start:b", "start:c"]);
    assert_eq!(call(&kernel, "a", Req::Get).await, Rep::Count(0));
    assert_eq!(call(&kernel, "c", Req::Get).await, Rep::Count(0));
    restarts(&tree, [1, 1, 1]).await;
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_failed_child_and_later_ones() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let (tree, mut watch) = abc(&kernel, &probe, Strategy::RestForOne).await;
    fail(&kernel, "b").await;
    assert_eq!(
        next_events(&mut watch, 4).await,
        ["-b:failed", "-c:normal", "+b", "+c"]
    );
    assert_eq!(probe.log(), ["start:b", "start:c"]);
    assert_eq!(call(&kernel, "a", Req::Get).await, Rep::Count(1));
    assert_eq!(call(&kernel, "c", Req::Get).await, Rep::Count(0));
    restarts(&tree, [0, 1, 1]).await;

    // Failing the first child restarts all three.
    fail(&kernel, "a").await;
    assert_eq!(
        next_events(&mut watch, 6).await,
        ["-a:failed", "-c:normal", "-b:normal", "+a", "+b", "+c"]
    );
    restarts(&tree, [1, 2, 2]).await;
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("sup")
            .intensity(10, Duration::from_secs(10))
            .child(child("p", &probe).restart(Restart::Permanent))
            .child(child("t", &probe).restart(Restart::Transient))
            .child(child("tmp", &probe).restart(Restart::Temporary)),
    )
    .await
    .unwrap();
    let mut watch = kernel.registry().watch();
    skip(&mut watch, 4).await;

    // Permanent: restarted even after a normal exit.
    assert_eq!(call(&kernel, "p", Req::Stop).await, Rep::Done);
    assert_eq!(next_events(&mut watch, 2).await, ["-p:normal", "+p"]);
    // Transient: restarted after a failure, not after a normal exit.
    fail(&kernel, "t").await;
    assert_eq!(next_events(&mut watch, 2).await, ["-t:failed", "+t"]);
    assert_eq!(call(&kernel, "t", Req::Stop).await, Rep::Done);
    assert_eq!(next_events(&mut watch, 1).await, ["-t:normal"]);
    // Temporary: never restarted.
    fail(&kernel, "tmp").await;
    assert_eq!(next_events(&mut watch, 1).await, ["-tmp:failed"]);
    // Events are ordered: had t or tmp come back, we would see it before p.
    fail(&kernel, "p").await;
    assert_eq!(next_events(&mut watch, 2).await, ["-p:failed", "+p"]);

    // (The supervisor learns of exits a little after the registry does.)
    eventually("counters settle", || {
        let stats = tree.stats();
        let running: Vec<_> = stats.children.iter().map(|c| c.running).collect();
        stats.restarts("p") == 2 && running == [true, false, false]
    })
    .await;
    let stats = tree.stats();
    assert_eq!(stats.restarts("t"), 1);
    assert_eq!(stats.restarts("tmp"), 0);
    tree.stop().await;
    assert_eq!(
        next_events(&mut watch, 2).await,
        ["-p:normal", "-sup:normal"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_escalates_to_the_parent() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let inner = SupervisorSpec::new("inner")
        .intensity(1, Duration::from_secs(60))
        .child(child("w", &probe));
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root")
            .intensity(5, Duration::from_secs(60))
            .child(ChildSpec::supervisor(inner))
            .child(child("other", &probe)),
    )
    .await
    .unwrap();
    assert_eq!(probe.log(), ["start:w", "start:other"]);
    let mut watch = kernel.registry().watch();
    skip(&mut watch, 4).await;
    call(&kernel, "other", Req::Add(1)).await;

    fail(&kernel, "w").await;
    assert_eq!(next_events(&mut watch, 2).await, ["-w:failed", "+w"]);
    // The second failure exceeds inner's intensity: it gives up, and root
    // restarts it (fresh, with a fresh w).
    fail(&kernel, "w").await;
    assert_eq!(
        next_events(&mut watch, 4).await,
        ["-w:failed", "-inner:failed", "+inner", "+w"]
    );
    eventually("inner restart counted", || {
        tree.stats().restarts("inner") == 1
    })
    .await;
    assert_eq!(tree.stats().restarts("other"), 0);
    assert_eq!(call(&kernel, "other", Req::Get).await, Rep::Count(1));

    // The nested supervisor is a server too: ask it for its counters.
    let inner_ref = ServerRef::lookup(&kernel, "inner")
        .unwrap()
        .typed::<SupervisorRequest, SupervisorStats>();
    let stats = inner_ref.call(&SupervisorRequest::Stats, T).await.unwrap();
    assert_eq!(stats.restarts("w"), 0);
    assert_eq!(stats.children.len(), 1);

    tree.stop().await;
    assert_eq!(
        next_events(&mut watch, 4).await,
        [
            "-other:normal",
            "-w:normal",
            "-inner:normal",
            "-root:normal"
        ]
    );
    tree.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_level_meltdown_stops_children_in_reverse_and_ends_the_tree() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("top")
            .intensity(0, Duration::from_secs(60))
            .child(child("a", &probe))
            .child(child("b", &probe))
            .child(child("c", &probe)),
    )
    .await
    .unwrap();
    let mut watch = kernel.registry().watch();
    skip(&mut watch, 4).await;
    fail(&kernel, "b").await;
    assert_eq!(
        next_events(&mut watch, 4).await,
        ["-b:failed", "-c:normal", "-a:normal", "-top:failed"]
    );
    let err = tree.wait().await.unwrap_err();
    assert!(
        matches!(&err, Error::SupervisorFailed { name, reason } if name == "top" && reason.contains("intensity")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_cannot_start_fails_the_start_and_stops_the_others() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let p = probe.clone();
    let mut watch = kernel.registry().watch();
    let err = Supervisor::start(
        &kernel,
        SupervisorSpec::new("sup")
            .child(child("a", &probe))
            .child(ChildSpec::server("bad", move || TestServer {
                fail_init: true,
                ..TestServer::new("bad", &p)
            })),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::StartFailed { reason, .. } if reason.contains("refuses")),
        "{err:?}"
    );
    assert_eq!(
        next_events(&mut watch, 4).await,
        ["+sup", "+a", "-a:normal", "-sup:failed"]
    );
    assert_eq!(probe.log(), ["start:a", "start:bad"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_restarts_count_toward_intensity() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let kernel = Kernel::new();
    let probe = Probe::default();
    let starts = Arc::new(AtomicU32::new(0));
    let (p, s) = (probe.clone(), starts.clone());
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("sup")
            .intensity(3, Duration::from_secs(60))
            .child(ChildSpec::server("w", move || TestServer {
                // Only the first incarnation starts.
                fail_init: s.fetch_add(1, Ordering::SeqCst) > 0,
                ..TestServer::new("w", &p)
            })),
    )
    .await
    .unwrap();
    fail(&kernel, "w").await;
    let err = tree.wait().await.unwrap_err();
    assert!(matches!(err, Error::SupervisorFailed { .. }), "{err:?}");
    // The first start, then one restart per allowed restart plus the one
    // that exceeded the intensity.
    assert_eq!(starts.load(Ordering::SeqCst), 4);
    assert!(kernel.registry().entries().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_child_is_killed_after_its_shutdown_timeout() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("sup")
            .child(child("a", &probe))
            .child(child("stuck", &probe).shutdown(Duration::from_millis(50))),
    )
    .await
    .unwrap();
    let mut watch = kernel.registry().watch();
    skip(&mut watch, 3).await;
    let r = ServerRef::lookup(&kernel, "stuck")
        .unwrap()
        .typed::<Req, Rep>();
    r.cast(&Req::Slow).await.unwrap(); // never released
    // Make sure the Slow message is being handled before stopping.
    let err = r
        .call(&Req::Get, Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(matches!(core(err), oscloud_core::Error::Timeout { .. }));
    tree.stop().await;
    assert_eq!(
        next_events(&mut watch, 3).await,
        ["-stuck:failed", "-a:normal", "-sup:normal"]
    );
    tree.wait().await.unwrap();
}

/// The counters a server's registry entry keeps (for metrics exporters).
fn counted(kernel: &Kernel, name: &str) -> oscloud_core::endpoint::ServerStats {
    let entry = kernel.registry().lookup(name).unwrap();
    entry.endpoint().stats().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_counters_go_on_across_restarts_and_count_them() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let (tree, mut watch) = abc(&kernel, &probe, Strategy::OneForOne).await;
    let before = counted(&kernel, "b");
    fail(&kernel, "b").await;
    assert_eq!(next_events(&mut watch, 2).await, ["-b:failed", "+b"]);
    assert_eq!(call(&kernel, "b", Req::Get).await, Rep::Count(0));
    let after = counted(&kernel, "b");
    assert_eq!(after.calls, before.calls + 2, "{after:?}");
    assert_eq!(after.errors, before.errors + 1);
    assert_eq!((after.restarts, after.mailbox), (1, 0));
    assert_eq!(after.latency_buckets.iter().sum::<u64>(), after.calls);
    assert_eq!(counted(&kernel, "a").restarts, 0);
    tree.stop().await;
}
