//! Messaging cost in one process: oscloud servers (`TypedRef` through the
//! kernel endpoint) against raw ractor (`ActorRef::cast` / `call!`), the
//! same struct either way.
//!
//! `cargo bench -p oscloud-actors --bench messaging`. oscloud and raw
//! ractor run interleaved in rounds (A B, B A, ...; `OSCLOUD_BENCH_RUNS`
//! rounds, default 5); each round's oscloud figure is divided by the same
//! round's raw figure, and the table gives the median ratio and its
//! min–max. Beside the time: CPU time (user + system, `getrusage` of the
//! process: both sides are in it) per message, and its ratio taken the
//! same way. Once on tokio's default multi-thread runtime (a worker per
//! core, as `#[tokio::main]` builds it) and once with one worker. The
//! client loops run in a task on a worker, as a server's code would.
//!
//! `OSCLOUD_BENCH_SIDE=ours|raw` runs one side only, in place of both
//! (for a profile; the ratios are then 1); `OSCLOUD_BENCH=casts`,
//! `calls` or `calls-ref` (or several, comma-separated) runs only those
//! rows.
//!
//! Rows: casts by value (`cast(req)`), calls by value (`call(req, ..)`)
//! and calls by reference (`call(&req, ..)`, encoded as MessagePack).
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs, unsafe_code)]

#[path = "../../oscloud-core/benches/common/mod.rs"]
mod common;

use common::{Cost, rounds, spread, timed};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oscloud_actors::{Context, Server, ServerError, ServerRef, TypedRef, async_trait, start};
use oscloud_core::Kernel;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

const CASTS: u64 = 500_000;
const CALLS: u64 = 100_000;
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

#[derive(Clone)]
struct Targets {
    ours: TypedRef<Reading, u64>,
    ours_count: Arc<AtomicU64>,
    raw: ActorRef<RawMsg>,
    raw_count: Arc<AtomicU64>,
}

#[derive(Clone, Copy)]
enum Measure {
    Casts,
    CallsByValue,
    CallsByRef,
}

impl Measure {
    fn label(self) -> &'static str {
        match self {
            Measure::Casts => "casts",
            Measure::CallsByValue => "calls",
            Measure::CallsByRef => "calls, &req (encoded)",
        }
    }

    /// Its name for `OSCLOUD_BENCH`.
    fn key(self) -> &'static str {
        match self {
            Measure::Casts => "casts",
            Measure::CallsByValue => "calls",
            Measure::CallsByRef => "calls-ref",
        }
    }

    fn count(self) -> u64 {
        match self {
            Measure::Casts => CASTS,
            _ => CALLS,
        }
    }

    async fn ours(self, t: &Targets) -> Cost {
        if side() == Some("raw") {
            return self.raw_side(t).await;
        }
        self.ours_side(t).await
    }

    async fn raw(self, t: &Targets) -> Cost {
        if side() == Some("ours") {
            return self.ours_side(t).await;
        }
        self.raw_side(t).await
    }

    async fn ours_side(self, t: &Targets) -> Cost {
        let n = self.count();
        match self {
            Measure::Casts => {
                let base = t.ours_count.load(Ordering::Relaxed);
                timed(async {
                    for i in 0..n {
                        t.ours.cast(reading(i)).await.unwrap();
                    }
                    wait_count(&t.ours_count, base + n).await;
                })
                .await
            }
            Measure::CallsByValue => {
                timed(async {
                    for i in 0..n {
                        std::hint::black_box(t.ours.call(reading(i), TIMEOUT).await.unwrap());
                    }
                })
                .await
            }
            Measure::CallsByRef => {
                timed(async {
                    for i in 0..n {
                        std::hint::black_box(t.ours.call(&reading(i), TIMEOUT).await.unwrap());
                    }
                })
                .await
            }
        }
    }

    async fn raw_side(self, t: &Targets) -> Cost {
        let n = self.count();
        match self {
            Measure::Casts => {
                let base = t.raw_count.load(Ordering::Relaxed);
                timed(async {
                    for i in 0..n {
                        t.raw.cast(RawMsg::Cast(reading(i))).unwrap();
                    }
                    wait_count(&t.raw_count, base + n).await;
                })
                .await
            }
            Measure::CallsByValue | Measure::CallsByRef => {
                timed(async {
                    for i in 0..n {
                        let got = ractor::call!(t.raw, RawMsg::Call, reading(i)).unwrap();
                        std::hint::black_box(got);
                    }
                })
                .await
            }
        }
    }
}

fn median_f(v: &[f64]) -> f64 {
    spread(v.to_vec()).0
}

/// `OSCLOUD_BENCH_SIDE`, if set.
fn side() -> Option<&'static str> {
    static SIDE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SIDE.get_or_init(|| std::env::var("OSCLOUD_BENCH_SIDE").ok())
        .as_deref()
}

fn bench(runtime: &str, rt: tokio::runtime::Runtime, rounds: usize) {
    let rows = rt.block_on(async move {
        tokio::spawn(async move {
            let kernel = Kernel::new();
            let ours_count = Arc::new(AtomicU64::new(0));
            let server = start(&kernel, "sink", Sink(ours_count.clone()))
                .await
                .unwrap();
            let ours = ServerRef::lookup(&kernel, "sink")
                .unwrap()
                .typed::<Reading, u64>();
            let raw_count = Arc::new(AtomicU64::new(0));
            let (raw, _join) = Actor::spawn(None, RawSink(raw_count.clone()), ())
                .await
                .unwrap();
            let t = Targets {
                ours,
                ours_count,
                raw: raw.clone(),
                raw_count,
            };
            let mut rows = Vec::new();
            let only = std::env::var("OSCLOUD_BENCH").unwrap_or_default();
            for m in [Measure::Casts, Measure::CallsByValue, Measure::CallsByRef] {
                if !only.is_empty() && !only.split(',').any(|k| k == m.key()) {
                    continue;
                }
                let (mut ours, mut raws) = (Vec::new(), Vec::new());
                for round in 0..rounds {
                    if round % 2 == 0 {
                        ours.push(m.ours(&t).await);
                        raws.push(m.raw(&t).await);
                    } else {
                        raws.push(m.raw(&t).await);
                        ours.push(m.ours(&t).await);
                    }
                }
                rows.push((m, ours, raws));
            }
            raw.stop(None);
            server.stop().await;
            rows
        })
        .await
        .unwrap()
    });
    for (m, ours, raws) in rows {
        let n = m.count() as f64;
        let per = |c: &[Cost], f: fn(&Cost) -> Duration| {
            median_f(
                &c.iter()
                    .map(|c| f(c).as_nanos() as f64 / n)
                    .collect::<Vec<_>>(),
            )
        };
        let ratio = |f: fn(&Cost) -> Duration| {
            spread(
                ours.iter()
                    .zip(&raws)
                    .map(|(o, r)| f(o).as_secs_f64() / f(r).as_secs_f64())
                    .collect(),
            )
        };
        let (tr, tmin, tmax) = ratio(|c| c.wall);
        let (cr, cmin, cmax) = ratio(|c| c.cpu);
        println!(
            "{:<10} {:<22} {:>8.0} {:>8.0} {:>6.2}x ({:.2}-{:.2}) {:>8.0} {:>8.0} {:>6.2}x ({:.2}-{:.2})",
            runtime,
            m.label(),
            per(&ours, |c| c.wall),
            per(&raws, |c| c.wall),
            tr,
            tmin,
            tmax,
            per(&ours, |c| c.cpu),
            per(&raws, |c| c.cpu),
            cr,
            cmin,
            cmax,
        );
    }
}

fn main() {
    let rounds = rounds();
    println!(
        "{rounds} interleaved rounds; {CASTS} casts, {CALLS} calls per run; ns per message (medians)"
    );
    println!(
        "{:<10} {:<22} {:>8} {:>8} {:>20} {:>8} {:>8} {:>20}",
        "runtime", "measure", "ours", "raw", "time ours/raw", "CPU ours", "CPU raw", "CPU ours/raw"
    );
    let default = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    bench("default", default, rounds);
    let one = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    bench("1 worker", one, rounds);
}
