//! What the one-process benches share: CPU time from `getrusage`, a run's
//! wall and CPU time, medians with their spread, and the round count.
//! (`oscloud-actors`'s messaging bench includes this file too.)
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::{Duration, Instant};

/// CPU time (user + system) this process has used so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Wall and CPU time of one run.
#[derive(Clone, Copy)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
}

/// Run `run` and say what it cost.
pub async fn timed(run: impl Future<Output = ()>) -> Cost {
    let (t, c) = (Instant::now(), cpu_time());
    run.await;
    Cost {
        wall: t.elapsed(),
        cpu: cpu_time() - c,
    }
}

/// Median and min–max of `v` (not empty).
pub fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Rounds: `OSCLOUD_BENCH_RUNS`, default 5.
pub fn rounds() -> usize {
    std::env::var("OSCLOUD_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}
