//! Monitors by name.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside #[test] fns

#[path = "support/util.rs"]
mod support;

use oscloud_actors::{ServerRef, start};
use oscloud_core::{ExitReason, Kernel};
use support::*;

async fn call(kernel: &Kernel, name: &str, req: Req) -> Result<Rep, oscloud_actors::Error> {
    let r = ServerRef::lookup(kernel, name)?.typed::<Req, Rep>();
    r.call(&req, T).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_carries_the_reason() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let target_probe = Probe::default();
    let _watcher = start(&kernel, "watcher", TestServer::new("watcher", &probe))
        .await
        .unwrap();
    let _target = start(&kernel, "target", TestServer::new("t", &target_probe))
        .await
        .unwrap();
    let target_id = kernel.registry().lookup("target").unwrap().id();
    let quiet = start(&kernel, "quiet", TestServer::new("q", &target_probe))
        .await
        .unwrap();
    call(&kernel, "watcher", Req::Monitor("target".into()))
        .await
        .unwrap();
    call(&kernel, "watcher", Req::Monitor("quiet".into()))
        .await
        .unwrap();

    assert!(
        call(&kernel, "target", Req::Fail("boom".into()))
            .await
            .is_err()
    );
    eventually("down delivered", || probe.downs().len() == 1).await;
    let down = probe.downs().remove(0);
    assert_eq!(down.name, "target");
    assert_eq!(down.entry, Some(target_id));
    assert_eq!(down.reason, ExitReason::Failed("boom".into()));
    assert!(!down.is_noproc());

    quiet.stop().await;
    eventually("second down", || probe.downs().len() == 2).await;
    let down = probe.downs().remove(1);
    assert_eq!(down.name, "quiet");
    assert_eq!(down.reason, ExitReason::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_an_unknown_name_is_an_immediate_noproc() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let _watcher = start(&kernel, "watcher", TestServer::new("watcher", &probe))
        .await
        .unwrap();
    call(&kernel, "watcher", Req::Monitor("ghost".into()))
        .await
        .unwrap();
    eventually("noproc delivered", || probe.downs().len() == 1).await;
    let down = probe.downs().remove(0);
    assert_eq!(down.name, "ghost");
    assert!(down.is_noproc());
    assert_eq!(down.reason, ExitReason::Failed("noproc".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demonitor_suppresses_the_down() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let other = Probe::default();
    let _watcher = start(&kernel, "watcher", TestServer::new("watcher", &probe))
        .await
        .unwrap();
    let target = start(&kernel, "target", TestServer::new("t", &other))
        .await
        .unwrap();
    call(&kernel, "watcher", Req::Monitor("target".into()))
        .await
        .unwrap();
    let r = call(&kernel, "watcher", Req::Demonitor("target".into())).await;
    assert_eq!(r.unwrap(), Rep::Bool(true));
    target.stop().await;
    // A later monitor's Down arrives; the demonitored one never does.
    call(&kernel, "watcher", Req::Monitor("ghost".into()))
        .await
        .unwrap();
    eventually("noproc delivered", || !probe.downs().is_empty()).await;
    // Round-trip through the watcher's mailbox once more before checking.
    call(&kernel, "watcher", Req::Get).await.unwrap();
    let names: Vec<_> = probe.downs().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["ghost"]);
}
