//! Messaging cost: oscloud servers (`TypedRef`, MessagePack through the
//! kernel endpoint) against raw ractor (`ActorRef::cast` / `call!`, no
//! serialization), in the same process.
//!
//! Run with `cargo bench -p oscloud-actors --bench messaging`.
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oscloud_actors::{Context, Server, ServerError, ServerRef, TypedRef, async_trait, start};
use oscloud_core::Kernel;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

const CASTS: u64 = 1_000_000;
const CALLS: u64 = 100_000;
const RUNS: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    sensor: u32,
    value: f64,
}

// ----- ours -----

struct Sink(Arc<AtomicU64>);

#[async_trait]
impl Server for Sink {
    type Request = Reading;
    type Reply = u64;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }
    async fn handle_cast(
        &self,
        _: &mut Context,
        _: &mut (),
        r: Reading,
    ) -> Result<(), ServerError> {
        std::hint::black_box(r);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn handle_call(
        &self,
        _: &mut Context,
        _: &mut (),
        r: Reading,
    ) -> Result<u64, ServerError> {
        std::hint::black_box(r);
        Ok(self.0.fetch_add(1, Ordering::Relaxed))
    }
}

// ----- raw ractor -----

enum RawMsg {
    Cast(Reading),
    Call(Reading, RpcReplyPort<u64>),
}

struct RawSink(Arc<AtomicU64>);

impl Actor for RawSink {
    type Msg = RawMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<RawMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<RawMsg>,
        msg: RawMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RawMsg::Cast(r) => {
                std::hint::black_box(r);
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            RawMsg::Call(r, reply) => {
                std::hint::black_box(r);
                let _ = reply.send(self.0.fetch_add(1, Ordering::Relaxed));
            }
        }
        Ok(())
    }
}

fn reading(i: u64) -> Reading {
    Reading {
        sensor: (i % 64) as u32,
        value: i as f64 * 0.5,
    }
}

async fn wait_count(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Relaxed) < target {
        tokio::task::yield_now().await;
    }
}

async fn ours_casts(r: &TypedRef<Reading, u64>, counter: &AtomicU64) -> Duration {
    let base = counter.load(Ordering::Relaxed);
    let t = Instant::now();
    for i in 0..CASTS {
        r.cast(&reading(i)).await.unwrap();
    }
    wait_count(counter, base + CASTS).await;
    t.elapsed()
}

async fn raw_casts(a: &ActorRef<RawMsg>, counter: &AtomicU64) -> Duration {
    let base = counter.load(Ordering::Relaxed);
    let t = Instant::now();
    for i in 0..CASTS {
        a.cast(RawMsg::Cast(reading(i))).unwrap();
    }
    wait_count(counter, base + CASTS).await;
    t.elapsed()
}

async fn ours_calls(r: &TypedRef<Reading, u64>) -> Duration {
    let t = Instant::now();
    for i in 0..CALLS {
        std::hint::black_box(r.call(&reading(i), TIMEOUT).await.unwrap());
    }
    t.elapsed()
}

async fn raw_calls(a: &ActorRef<RawMsg>) -> Duration {
    let t = Instant::now();
    for i in 0..CALLS {
        let n = ractor::call_t!(a, RawMsg::Call, TIMEOUT.as_millis() as u64, reading(i)).unwrap();
        std::hint::black_box(n);
    }
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kernel = Kernel::new();
        let ours_count = Arc::new(AtomicU64::new(0));
        let _server = start(&kernel, "sink", Sink(ours_count.clone()))
            .await
            .unwrap();
        let ours = ServerRef::lookup(&kernel, "sink")
            .unwrap()
            .typed::<Reading, u64>();
        let raw_count = Arc::new(AtomicU64::new(0));
        let (raw, _join) = Actor::spawn(None, RawSink(raw_count.clone()), ())
            .await
            .unwrap();

        let (mut oc, mut rc, mut ol, mut rl) = (vec![], vec![], vec![], vec![]);
        for _ in 0..RUNS {
            oc.push(ours_casts(&ours, &ours_count).await);
            rc.push(raw_casts(&raw, &raw_count).await);
            ol.push(ours_calls(&ours).await);
            rl.push(raw_calls(&raw).await);
        }
        let (oc, rc, ol, rl) = (median(oc), median(rc), median(ol), median(rl));
        let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
        println!("median of {RUNS} runs; 2 tokio workers");
        println!(
            "{:<32} {:>14} {:>14} {:>12}",
            "benchmark", "oscloud", "raw ractor", "time ours/raw"
        );
        println!(
            "{:<32} {:>10.0} /s {:>10.0} /s {:>11.2}x",
            format!("cast throughput ({CASTS} casts)"),
            rate(CASTS, oc),
            rate(CASTS, rc),
            oc.as_secs_f64() / rc.as_secs_f64()
        );
        println!(
            "{:<32} {:>10.0} /s {:>10.0} /s {:>11.2}x",
            format!("call round-trip ({CALLS} calls)"),
            rate(CALLS, ol),
            rate(CALLS, rl),
            ol.as_secs_f64() / rl.as_secs_f64()
        );
        println!(
            "{:<32} {:>11.0} ns {:>11.0} ns",
            "call latency",
            ol.as_nanos() as f64 / CALLS as f64,
            rl.as_nanos() as f64 / CALLS as f64
        );
        raw.stop(None);
    });
}
