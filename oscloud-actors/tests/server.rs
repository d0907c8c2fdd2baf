//! Servers and references: cast/call, typed/raw, timeouts, errors, pipes,
//! groups.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside #[test] fns

#[path = "support/util.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use oscloud_actors::{
    ChildSpec, Error, ServerHandle, ServerOptions, ServerRef, Supervisor, SupervisorSpec, TypedRef,
    decode, encode, start,
};
use oscloud_core::{Capabilities, Error as CoreError, Kernel};
use support::*;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cast_call_typed_and_raw() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let caps = Capabilities::new().accepts("req");
    let h = start(
        &kernel,
        ServerOptions::new("counter").capabilities(caps.clone()),
        TestServer::new("c", &probe),
    )
    .await
    .unwrap();
    let entry = kernel.registry().lookup("counter").unwrap();
    assert_eq!(entry.capabilities(), &caps);

    let typed = ServerRef::lookup(&kernel, "counter")
        .unwrap()
        .typed::<Req, Rep>();
    typed.cast(&Req::Add(2)).await.unwrap();
    typed.cast(&Req::Add(3)).await.unwrap();
    assert_eq!(typed.call(&Req::Get, T).await.unwrap(), Rep::Count(5));

    // The raw form carries MessagePack bytes.
    let raw = h.server_ref();
    raw.cast(encode(&Req::Add(10)).unwrap()).await.unwrap();
    let reply = raw.call(encode(&Req::Get).unwrap(), T).await.unwrap();
    assert_eq!(decode::<Rep>(&reply).unwrap(), Rep::Count(15));

    // Starting a second server under the same name fails.
    let err = start(&kernel, "counter", TestServer::new("c2", &probe))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StartFailed { .. }), "{err:?}");

    h.stop().await;
    assert!(kernel.registry().lookup("counter").is_err());
    let err = core(typed.call(&Req::Get, T).await.unwrap_err());
    assert_eq!(err, CoreError::NotFound("counter".into()));
}

/// The test server started as "slow", the gate its `Slow` requests wait
/// for, and a typed reference to it.
async fn start_slow(kernel: &Kernel) -> (ServerHandle, Arc<Notify>, TypedRef<Req, Rep>) {
    let probe = Probe::default();
    let server = TestServer::new("slow", &probe);
    let gate = server.gate.clone();
    let h = start(kernel, "slow", server).await.unwrap();
    let r = ServerRef::lookup(kernel, "slow")
        .unwrap()
        .typed::<Req, Rep>();
    (h, gate, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_times_out_and_server_stays_usable() {
    let kernel = Kernel::new();
    let (_h, gate, r) = start_slow(&kernel).await;
    let err = core(
        r.call(&Req::Slow, Duration::from_millis(50))
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(&err, CoreError::Timeout { name, after } if name == "slow" && *after == Duration::from_millis(50)),
        "{err:?}"
    );
    gate.notify_one();
    assert_eq!(r.call(&Req::Add(1), T).await.unwrap(), Rep::Count(1));
}

/// A call times out at its own deadline whatever the deadlines of the
/// calls before it on the same thread (whose timer it reuses): one much
/// later (the timer is moved earlier) and one already passed (the timer
/// fired).
#[tokio::test]
async fn call_times_out_on_time_after_calls_with_other_deadlines() {
    const LONG: Duration = Duration::from_secs(60);
    const SHORT: Duration = Duration::from_millis(50);
    let kernel = Kernel::new();
    let (_h, gate, r) = start_slow(&kernel).await;
    let timed_out = async |r: &TypedRef<Req, Rep>| {
        let began = std::time::Instant::now();
        // Far below LONG: a call that waited for an earlier call's
        // deadline would fail this guard.
        let err = tokio::time::timeout(Duration::from_secs(10), r.call(&Req::Slow, SHORT))
            .await
            .expect("the call outlived its own deadline")
            .unwrap_err();
        assert!(
            matches!(core(err), CoreError::Timeout { after, .. } if after == SHORT),
            "not a timeout"
        );
        assert!(began.elapsed() >= SHORT, "timed out early");
    };
    for _ in 0..2 {
        // A call with a later deadline first, then one timing out.
        for _ in 0..2 {
            let got = r.call(&Req::Add(1), LONG).await.unwrap();
            assert!(matches!(got, Rep::Count(_)), "{got:?}");
        }
        timed_out(&r).await;
        // Then one right after the timer fired.
        gate.notify_one();
        timed_out(&r).await;
        gate.notify_one();
    }
}

/// Calls on one thread in one runtime after another (the first one shut
/// down) work: a timer is only reused in the runtime it belongs to.
#[test]
fn calls_in_a_runtime_after_another_on_the_same_thread() {
    for round in 0..2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kernel = Kernel::new();
            let probe = Probe::default();
            let _h = start(&kernel, "c", TestServer::new("c", &probe))
                .await
                .unwrap();
            let r = ServerRef::lookup(&kernel, "c").unwrap().typed::<Req, Rep>();
            assert_eq!(
                r.call(&Req::Add(2), T).await.unwrap(),
                Rep::Count(2),
                "round {round}"
            );
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found() {
    let kernel = Kernel::new();
    let err = core(ServerRef::lookup(&kernel, "nobody").unwrap_err());
    assert_eq!(err, CoreError::NotFound("nobody".into()));
    let r = ServerRef::new(&kernel, "nobody");
    assert_eq!(
        core(r.cast(Bytes::from_static(b"x")).await.unwrap_err()),
        CoreError::NotFound("nobody".into())
    );
    assert!(matches!(
        core(r.call(Bytes::new(), T).await.unwrap_err()),
        CoreError::NotFound(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_do_not_stop_the_server() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let h = start(&kernel, "s", TestServer::new("s", &probe))
        .await
        .unwrap();
    let raw = h.server_ref();
    raw.cast(Bytes::from_static(b"\xc1garbage")).await.unwrap();
    let err = core(raw.call(Bytes::from_static(b"\xc1"), T).await.unwrap_err());
    assert!(matches!(err, CoreError::Decode(_)), "{err:?}");
    // A well-formed message of the wrong type is a decode error too.
    let err = core(raw.call(encode(&"hello").unwrap(), T).await.unwrap_err());
    assert!(matches!(err, CoreError::Decode(_)), "{err:?}");
    let typed = raw.clone().typed::<Req, Rep>();
    assert_eq!(typed.call(&Req::Add(4), T).await.unwrap(), Rep::Count(4));
    assert_eq!(h.decode_errors(), 3);
    // A reply of an unexpected type is the caller's decode error.
    let wrong = raw.typed::<Req, String>();
    assert!(matches!(
        core(wrong.call(&Req::Get, T).await.unwrap_err()),
        CoreError::Decode(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_error_stops_unsupervised_server() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let h = start(&kernel, "s", TestServer::new("s", &probe))
        .await
        .unwrap();
    let mut watch = kernel.registry().watch();
    skip(&mut watch, 1).await;
    let r = h.server_ref().typed::<Req, Rep>();
    let err = core(r.call(&Req::Fail("boom".into()), T).await.unwrap_err());
    assert_eq!(
        err,
        CoreError::ServerStopped {
            name: "s".into(),
            reason: "boom".into()
        }
    );
    h.wait().await;
    assert_eq!(h.stop_reason().as_deref(), Some("boom"));
    assert_eq!(next_events(&mut watch, 1).await, ["-s:failed"]);
    assert!(kernel.registry().lookup("s").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_server_is_restarted_and_refs_follow() {
    for (req, why) in [(Req::Fail("boom".into()), "boom"), (Req::Panic, "panicked")] {
        let kernel = Kernel::new();
        let probe = Probe::default();
        let p = probe.clone();
        let tree = Supervisor::start(
            &kernel,
            SupervisorSpec::new("sup")
                .child(ChildSpec::server("w", move || TestServer::new("w", &p))),
        )
        .await
        .unwrap();
        let mut watch = kernel.registry().watch();
        skip(&mut watch, 2).await;
        let r = ServerRef::lookup(&kernel, "w").unwrap().typed::<Req, Rep>();
        r.cast(&Req::Add(7)).await.unwrap();
        assert_eq!(r.call(&Req::Get, T).await.unwrap(), Rep::Count(7));

        let err = core(r.call(&req, T).await.unwrap_err());
        assert!(
            matches!(&err, CoreError::ServerStopped { name, reason } if name == "w" && reason.contains(why)),
            "{err:?}"
        );
        assert_eq!(next_events(&mut watch, 2).await, ["-w:failed", "+w"]);
        eventually("restart counted", || tree.stats().restarts("w") == 1).await;
        assert_eq!(probe.log(), ["start:w", "start:w"]);

        // The same refs reach the fresh server (state is fresh too), for
        // casts (cached entry re-resolved) and calls alike, borrowed
        // (encoded) or owned (moved).
        r.cast(&Req::Add(1)).await.unwrap();
        assert_eq!(r.call(&Req::Get, T).await.unwrap(), Rep::Count(1));
        r.cast(Req::Add(1)).await.unwrap();
        assert_eq!(r.call(Req::Get, T).await.unwrap(), Rep::Count(2));
        tree.stop().await;
        tree.wait().await.unwrap();
    }
}

/// A reference keeps the entry it resolved for its calls while the
/// registry does not change; once the name leaves or comes back, its next
/// call (by value or encoded, from any clone) sees that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_the_name_when_its_server_stops_and_another_takes_it() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let a = start(&kernel, "s", TestServer::new("a", &probe))
        .await
        .unwrap();
    let r = ServerRef::lookup(&kernel, "s").unwrap().typed::<Req, Rep>();
    let clone = r.clone();
    assert_eq!(r.call(Req::Add(2), T).await.unwrap(), Rep::Count(2));
    // Another name coming and going leaves the calls with the same server.
    let other = start(&kernel, "other", TestServer::new("o", &probe))
        .await
        .unwrap();
    other.stop().await;
    assert_eq!(clone.call(Req::Add(1), T).await.unwrap(), Rep::Count(3));

    a.stop().await;
    for by_value in [true, false] {
        let err = match by_value {
            true => r.call(Req::Get, T).await,
            false => clone.call(&Req::Get, T).await,
        };
        assert_eq!(core(err.unwrap_err()), CoreError::NotFound("s".into()));
    }

    let b = start(&kernel, "s", TestServer::new("b", &probe))
        .await
        .unwrap();
    assert_eq!(r.call(Req::Who, T).await.unwrap(), Rep::Who("b".into()));
    assert_eq!(clone.call(Req::Add(5), T).await.unwrap(), Rep::Count(5));
    assert_eq!(r.call(&Req::Get, T).await.unwrap(), Rep::Count(5));
    // A timeout too long to be a deadline: no timer, the reply all the same.
    let forever = Duration::MAX;
    assert_eq!(r.call(Req::Get, forever).await.unwrap(), Rep::Count(5));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let _h = start(&kernel, "s", TestServer::new("s", &probe))
        .await
        .unwrap();
    let r = ServerRef::lookup(&kernel, "s").unwrap();
    let mut end = r.open_pipe("echo").await.unwrap();
    end.send(Bytes::from_static(b"ping")).await.unwrap();
    assert_eq!(end.recv().await, Some(Bytes::from_static(b"ping")));
    let err = core(r.open_pipe("nope").await.unwrap_err());
    assert_eq!(
        err,
        CoreError::NoSuchPort {
            name: "s".into(),
            port: "nope".into()
        }
    );
    // The refusal did not hurt the server.
    let typed = r.typed::<Req, Rep>();
    assert_eq!(typed.call(&Req::Get, T).await.unwrap(), Rep::Count(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_calls_are_round_robin() {
    let kernel = Kernel::new();
    let probe = Probe::default();
    let mut spec = SupervisorSpec::new("pool-sup");
    for i in 0..3 {
        let p = probe.clone();
        let id = format!("w{i}");
        spec = spec.child(
            ChildSpec::server(ServerOptions::new("pool").group(), move || {
                TestServer::new(&id, &p)
            })
            .id(format!("w{i}")),
        );
    }
    let tree = Supervisor::start(&kernel, spec).await.unwrap();
    assert_eq!(kernel.registry().lookup_all("pool").len(), 3);
    let r = ServerRef::lookup(&kernel, "pool")
        .unwrap()
        .typed::<Req, Rep>();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..9 {
        let Rep::Who(who) = r.call(&Req::Who, T).await.unwrap() else {
            panic!("unexpected reply")
        };
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            ("w0".to_owned(), 3),
            ("w1".to_owned(), 3),
            ("w2".to_owned(), 3)
        ]
    );
    // Casts spread too.
    for _ in 0..6 {
        r.cast(&Req::Add(1)).await.unwrap();
    }
    let mut counts = Vec::new();
    for _ in 0..3 {
        let Rep::Count(n) = r.call(&Req::Get, T).await.unwrap() else {
            panic!("unexpected reply")
        };
        counts.push(n);
    }
    assert_eq!(counts, [2, 2, 2]);
    tree.stop().await;
}

/// A server that answers `n` after a delay of `n` ms, from a task, so
/// calls overlap; `0` answers at once from the handler.
struct Deferring;

#[oscloud_actors::async_trait]
impl oscloud_actors::Server for Deferring {
    type Request = u64;
    type Reply = u64;
    type State = ();

    async fn init(
        &self,
        _ctx: &mut oscloud_actors::Context,
    ) -> Result<(), oscloud_actors::ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        ctx: &mut oscloud_actors::Context,
        _: &mut (),
        n: u64,
    ) -> Result<u64, oscloud_actors::ServerError> {
        if n == 0 {
            return Ok(0);
        }
        let reply = ctx.defer_reply().unwrap();
        assert!(ctx.defer_reply().is_none(), "taken once");
        if n == u64::MAX {
            drop(reply); // never answered
            return Ok(1);
        }
        ctx.spawn(async move {
            tokio::time::sleep(Duration::from_millis(n)).await;
            reply.send(&n);
        });
        Ok(u64::MAX) // dropped: the reply was deferred
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_replies_let_calls_overlap() {
    let kernel = Kernel::new();
    let h = start(&kernel, "deferring", Deferring).await.unwrap();
    let r = h.server_ref().typed::<u64, u64>();
    // The slow call is answered after the fast one: the server was free.
    let slow = r.call(&300, T);
    let fast = async {
        let v = r.call(&5, T).await.unwrap();
        (v, std::time::Instant::now())
    };
    let (slow, (fast, fast_at)) = tokio::join!(slow, fast);
    assert_eq!((slow.unwrap(), fast), (300, 5));
    assert!(fast_at.elapsed() > Duration::from_millis(100));
    assert_eq!(r.call(&0, T).await.unwrap(), 0);
    // A reply dropped unanswered fails the call; the server runs on.
    let err = core(r.call(&u64::MAX, T).await.unwrap_err());
    assert!(matches!(err, CoreError::ServerStopped { .. }), "{err:?}");
    assert_eq!(r.call(&0, T).await.unwrap(), 0);
    h.stop().await;
}

/// Answers the `traceparent` of the call it handles ("" outside a trace),
/// or, with `calls_on`, what that server answers when called while
/// handling it.
struct TraceEcho {
    calls_on: Option<&'static str>,
}

#[oscloud_actors::async_trait]
impl oscloud_actors::Server for TraceEcho {
    type Request = ();
    type Reply = String;
    type State = ();
    async fn init(
        &self,
        _: &mut oscloud_actors::Context,
    ) -> Result<(), oscloud_actors::ServerError> {
        Ok(())
    }
    async fn handle_call(
        &self,
        ctx: &mut oscloud_actors::Context,
        _: &mut (),
        _: (),
    ) -> Result<String, oscloud_actors::ServerError> {
        match self.calls_on {
            Some(name) => {
                let next = ctx.lookup(name)?.typed::<(), String>();
                Ok(next.call(&(), T).await?)
            }
            None => Ok(ctx.trace().map(|t| t.traceparent()).unwrap_or_default()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sees_the_callers_trace_and_passes_it_on() {
    use oscloud_core::trace::with_trace;
    let kernel = Kernel::new();
    let echo = start(&kernel, "trace-echo", TraceEcho { calls_on: None })
        .await
        .unwrap();
    let on = start(
        &kernel,
        "calls-on",
        TraceEcho {
            calls_on: Some("trace-echo"),
        },
    )
    .await
    .unwrap();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let t: oscloud_core::TraceContext = tp.parse().unwrap();
    let calls_on = ServerRef::lookup(&kernel, "calls-on")
        .unwrap()
        .typed::<(), String>();
    assert_eq!(with_trace(t, calls_on.call(&(), T)).await.unwrap(), tp);
    // Outside any trace, the next call (to the same servers) has none.
    assert_eq!(calls_on.call(&(), T).await.unwrap(), "");
    on.stop().await;
    echo.stop().await;
}

/// A value that cannot be encoded (but decodes): only a request or reply
/// that is moved, never encoded, gets through.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct Unencodable(u64);

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("not encodable"))
    }
}

struct Adder;

#[oscloud_actors::async_trait]
impl oscloud_actors::Server for Adder {
    type Request = Unencodable;
    type Reply = Unencodable;
    type State = u64;

    async fn init(
        &self,
        _: &mut oscloud_actors::Context,
    ) -> Result<u64, oscloud_actors::ServerError> {
        Ok(0)
    }
    async fn handle_cast(
        &self,
        _: &mut oscloud_actors::Context,
        total: &mut u64,
        Unencodable(n): Unencodable,
    ) -> Result<(), oscloud_actors::ServerError> {
        *total += n;
        Ok(())
    }
    async fn handle_call(
        &self,
        _: &mut oscloud_actors::Context,
        total: &mut u64,
        Unencodable(n): Unencodable,
    ) -> Result<Unencodable, oscloud_actors::ServerError> {
        *total += n;
        Ok(Unencodable(*total))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_requests_and_replies_in_one_process_are_moved_not_encoded() {
    let kernel = Kernel::new();
    let h = start(&kernel, "adder", Adder).await.unwrap();
    let r = ServerRef::lookup(&kernel, "adder")
        .unwrap()
        .typed::<Unencodable, Unencodable>();
    r.cast(Unencodable(2)).await.unwrap();
    r.try_cast(Unencodable(3)).unwrap();
    assert_eq!(r.call(Unencodable(4), T).await.unwrap(), Unencodable(9));
    assert_eq!(h.stats().casts, 2);
    assert_eq!(h.stats().calls, 1);

    // Borrowed requests are encoded, as they would be for a remote server.
    let err = core(r.cast(&Unencodable(1)).await.unwrap_err());
    assert!(matches!(err, CoreError::Encode(_)), "{err:?}");
    let err = core(r.call(&Unencodable(1), T).await.unwrap_err());
    assert!(matches!(err, CoreError::Encode(_)), "{err:?}");
    // A bytes caller gets the reply encoded: here, it cannot be.
    let err = core(
        h.server_ref()
            .call(encode(&1u64).unwrap(), T)
            .await
            .unwrap_err(),
    );
    assert!(matches!(err, CoreError::Encode(_)), "{err:?}");
    // A typed reference with another request type goes by bytes too.
    let other = h.server_ref().typed::<u64, u64>();
    other.cast(4u64).await.unwrap();
    assert_eq!(r.call(Unencodable(0), T).await.unwrap(), Unencodable(14));
    assert_eq!(h.decode_errors(), 0);
    h.stop().await;
}

/// Keeps the numbers it is cast, in the order it handles them; a call
/// returns them (`u64::MAX` fails the server).
struct Ledger;

#[oscloud_actors::async_trait]
impl oscloud_actors::Server for Ledger {
    type Request = u64;
    type Reply = Vec<u64>;
    type State = Vec<u64>;

    async fn init(
        &self,
        _: &mut oscloud_actors::Context,
    ) -> Result<Vec<u64>, oscloud_actors::ServerError> {
        Ok(Vec::new())
    }

    async fn handle_cast(
        &self,
        _: &mut oscloud_actors::Context,
        seen: &mut Vec<u64>,
        n: u64,
    ) -> Result<(), oscloud_actors::ServerError> {
        if n == u64::MAX {
            return Err("asked to fail".into());
        }
        seen.push(n);
        Ok(())
    }

    async fn handle_call(
        &self,
        _: &mut oscloud_actors::Context,
        seen: &mut Vec<u64>,
        _: u64,
    ) -> Result<Vec<u64>, oscloud_actors::ServerError> {
        Ok(seen.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_casts_is_handled_in_order_and_counted_as_casts() {
    let kernel = Kernel::new();
    let h = start(&kernel, "ledger", Ledger).await.unwrap();
    let endpoint = kernel
        .registry()
        .lookup("ledger")
        .unwrap()
        .endpoint()
        .clone();
    let mut batch: Vec<Bytes> = (0..100u64).map(|n| encode(&n).unwrap()).collect();
    // An undecodable cast in the batch is dropped alone.
    batch.insert(50, Bytes::from_static(b"\xc1"));
    endpoint.try_cast_batch(batch).unwrap();
    endpoint.try_cast(encode(&100u64).unwrap()).unwrap();
    let seen: Vec<u64> = decode(&endpoint.call(encode(&0u64).unwrap()).await.unwrap()).unwrap();
    assert_eq!(seen, (0..=100).collect::<Vec<_>>());
    assert_eq!(h.decode_errors(), 1);
    let stats = h.stats();
    assert_eq!((stats.casts, stats.calls, stats.mailbox), (102, 1, 0));
    // A failing cast stops the server; the casts after it in the batch
    // go with it, and a batch for a stopped server is refused.
    endpoint
        .try_cast_batch(vec![encode(&u64::MAX).unwrap(), encode(&7u64).unwrap()])
        .unwrap();
    h.wait().await;
    assert_eq!(h.stop_reason().as_deref(), Some("asked to fail"));
    let err = endpoint
        .try_cast_batch(vec![encode(&8u64).unwrap()])
        .unwrap_err();
    assert!(matches!(err, CoreError::ServerStopped { .. }), "{err:?}");
}
