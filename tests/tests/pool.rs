//! The pool (`oscloud_servers::pool`) over real worker processes on real
//! TCP sockets.
//!
//! The test process runs a node with the pool server; each worker is an
//! `oscloud-testnode --pool-worker work` process linked to it, serving
//! `work/<name>`: `(n, rounds)` → `pool_work(n, rounds)`. One worker in
//! five is killed with SIGKILL mid-run: every job must still get exactly
//! one correct result (its jobs are sent to other workers). The same run
//! with retries disabled must lose jobs, which shows the test can tell.
//!
//! `pool_scaling_bench` (ignored; not a CI test) measures jobs/s from 1 to
//! 8 worker processes:
//! `cargo test -p oscloud-tests --release --test pool -- --ignored --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oscloud_actors::{ServerHandle, ServerRef, TypedRef, decode, encode, start};
use oscloud_core::transport::Transports;
use oscloud_core::{Kernel, Node};
use oscloud_servers::pool::{PoolReply, PoolRequest, PoolSpec, PoolStats};
use oscloud_tests::{TestNode, pool_work};
use oscloud_transport_tcp::TcpTransport;

const BIN: &str = env!("CARGO_BIN_EXE_oscloud-testnode");
const GROUP: &str = "work";
const CALL: Duration = Duration::from_secs(30);

/// The pool's node (this process) and its workers (processes).
struct Cloud {
    kernel: Kernel,
    _node: Node,
    _pool: ServerHandle,
    pool: TypedRef<PoolRequest, PoolReply>,
    workers: Vec<TestNode>,
}

impl Cloud {
    async fn start(spec: PoolSpec, workers: usize) -> Self {
        let kernel = Kernel::new();
        let node = Node::new(
            kernel.clone(),
            Transports::new().with(Arc::new(TcpTransport)),
        );
        let at = node
            .listen(&"tcp://127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
            .to_string();
        let handle = start(&kernel, "pool", spec.server()).await.unwrap();
        let pool = ServerRef::new(&kernel, "pool").typed();
        let mut procs = Vec::new();
        for i in 0..workers {
            let name = format!("w{i}");
            procs.push(
                TestNode::start(
                    Path::new(BIN),
                    &name,
                    &["--connect", &at, "--pool-worker", GROUP],
                )
                .await,
            );
        }
        let cloud = Self {
            kernel,
            _node: node,
            _pool: handle,
            pool,
            workers: procs,
        };
        cloud.wait_workers(workers).await;
        cloud
    }

    /// Wait (with a deadline) until `n` workers are registered.
    async fn wait_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = self
                .kernel
                .registry()
                .entries()
                .iter()
                .filter(|e| e.name().starts_with("work/"))
                .count();
            if now == n {
                return;
            }
            assert!(Instant::now() < deadline, "{now} of {n} workers registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stats(&self) -> PoolStats {
        match self.pool.call(&PoolRequest::Stats, CALL).await.unwrap() {
            PoolReply::Stats(s) => s,
            other => panic!("{other:?}"),
        }
    }

    /// Submit `jobs` jobs at once; once `kill_after` have answered, kill
    /// worker 0 with SIGKILL. Returns every job's reply, in order.
    async fn run(&mut self, jobs: u64, rounds: u32, kill_after: Option<usize>) -> Vec<PoolReply> {
        let answered = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..jobs)
            .map(|n| {
                let pool = self.pool.clone();
                let answered = answered.clone();
                tokio::spawn(async move {
                    let job = PoolRequest::submit(GROUP, encode(&(n, rounds)).unwrap());
                    let reply = pool.call(&job, CALL).await.unwrap();
                    answered.fetch_add(1, Ordering::SeqCst);
                    reply
                })
            })
            .collect();
        if let Some(after) = kill_after {
            let deadline = Instant::now() + Duration::from_secs(30);
            while answered.load(Ordering::SeqCst) < after {
                assert!(Instant::now() < deadline, "no progress");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            self.workers[0].kill9().await;
        }
        let mut replies = Vec::new();
        for t in tasks {
            replies.push(t.await.unwrap());
        }
        replies
    }
}

/// How the replies of a run compare with the expected results.
#[derive(Debug, Default)]
struct Tally {
    correct: usize,
    wrong: usize,
    lost: Vec<String>,
}

fn tally(replies: &[PoolReply], rounds: u32) -> Tally {
    let mut t = Tally::default();
    for (n, r) in replies.iter().enumerate() {
        match r {
            PoolReply::Done(bytes) => {
                if decode::<u64>(bytes).unwrap() == pool_work(n as u64, rounds) {
                    t.correct += 1;
                } else {
                    t.wrong += 1;
                }
            }
            other => t.lost.push(format!("job {n}: {other:?}")),
        }
    }
    t
}

const JOBS: u64 = 1000;
const ROUNDS: u32 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_over_five_workers_one_killed_none_lost_none_twice() {
    let mut cloud = Cloud::start(PoolSpec::new(), 5).await;
    let began = Instant::now();
    let replies = cloud.run(JOBS, ROUNDS, Some(200)).await;
    let took = began.elapsed();
    let t = tally(&replies, ROUNDS);
    let stats = cloud.stats().await;
    println!(
        "{JOBS} jobs over 5 workers, 1 killed -9 after 200 results: {took:?}; \
         {} correct, {} retried, {} duplicate results dropped",
        t.correct, stats.retried, stats.duplicates
    );
    assert!(t.lost.is_empty(), "lost: {:?}", t.lost);
    assert_eq!((t.correct, t.wrong), (JOBS as usize, 0));
    // One reply per job, so a duplicate cannot reach a submitter; the
    // pool's counters agree: every job done once, none failed.
    assert_eq!((stats.submitted, stats.done, stats.failed), (JOBS, JOBS, 0));
    assert_eq!(stats.pending, 0);
    assert!(stats.retried >= 1, "the killed worker had jobs in flight");
    assert_eq!(stats.groups.get(GROUP).map(|g| g.workers), Some(4));
}

/// The same run with retries disabled loses the jobs the killed worker had
/// in flight: the test above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_killed_worker_loses_its_jobs() {
    let mut cloud = Cloud::start(PoolSpec::new().max_attempts(1), 5).await;
    let replies = cloud.run(JOBS, ROUNDS, Some(200)).await;
    let t = tally(&replies, ROUNDS);
    println!("without retries: {} lost: {:?}", t.lost.len(), t.lost);
    assert!(!t.lost.is_empty(), "the killed worker's jobs were lost");
    assert!(t.lost.iter().all(|l| l.contains("GaveUp")), "{:?}", t.lost);
    assert_eq!(t.wrong, 0);
}

/// Not a CI test: jobs/s of a fixed CPU-bound job from 1 to 8 worker
/// processes, and each as a share of ideal linear scaling (w × the rate
/// of one worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, see the module docs"]
async fn pool_scaling_bench() {
    let rounds: u32 = std::env::var("POOL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let jobs: u64 = std::env::var("POOL_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    // The cost of one job, run here.
    let began = Instant::now();
    for n in 0..20 {
        std::hint::black_box(pool_work(n, rounds));
    }
    let job = began.elapsed() / 20;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("job: {rounds} rounds, {job:?} on one core; {jobs} jobs per run; {cores} cores");
    let mut one = 0.0;
    for w in 1..=8usize {
        let mut cloud = Cloud::start(PoolSpec::new(), w).await;
        let began = Instant::now();
        let replies = cloud.run(jobs, rounds, None).await;
        let rate = jobs as f64 / began.elapsed().as_secs_f64();
        assert_eq!(tally(&replies, rounds).correct, jobs as usize);
        if w == 1 {
            one = rate;
        }
        // With fewer cores than workers, the cores bound it.
        let bound = w.min(cores.max(1)) as f64;
        println!(
            "workers {w}: {rate:.0} jobs/s, {:.2} of linear, {:.2} of {} core(s)",
            rate / (one * w as f64),
            rate / (one * bound),
            bound
        );
    }
}
