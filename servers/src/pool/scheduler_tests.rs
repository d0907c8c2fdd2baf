#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use super::*;

fn node(n: u8) -> NodeId {
    NodeId::from_bytes([n; 16])
}

fn limits(per_worker: usize, max_attempts: u32) -> Limits {
    Limits {
        queue_limit: 100,
        max_attempts,
        per_worker,
        job_timeout: Duration::from_secs(10),
    }
}

fn job(s: &mut Scheduler, n: u8, now: Instant) -> JobId {
    s.submit("sq", Bytes::from(vec![n]), now).unwrap()
}

fn per_worker(d: &[Dispatch]) -> HashMap<EntryId, usize> {
    let mut m = HashMap::new();
    for x in d {
        *m.entry(x.worker).or_default() += 1;
    }
    m
}

#[test]
fn jobs_spread_over_the_group_by_load_and_wait_for_a_slot() {
    let now = Instant::now();
    let mut s = Scheduler::new(limits(2, 3));
    s.add_worker(EntryId(1), "sq", node(1), None);
    s.add_worker(EntryId(2), "sq/b", node(2), None);
    s.add_worker(EntryId(3), "sq/c", node(3), Some(1));
    s.add_worker(EntryId(9), "other", node(1), None);
    for n in 0..6 {
        job(&mut s, n, now);
    }
    let d = s.dispatch();
    // One round first: every worker gets a job before any gets a second.
    assert_eq!(
        per_worker(&d[..3]).len(),
        3,
        "{:?}",
        d.iter().map(|x| x.worker).collect::<Vec<_>>()
    );
    let m = per_worker(&d);
    assert_eq!(m[&EntryId(1)], 2);
    assert_eq!(m[&EntryId(2)], 2);
    assert_eq!(m[&EntryId(3)], 1, "slots from the worker's metadata");
    assert!(!m.contains_key(&EntryId(9)), "another group");
    assert_eq!(d.len(), 5);
    assert_eq!(s.queued().collect::<Vec<_>>(), [("sq", 1)]);
    assert!(s.dispatch().is_empty(), "every slot taken");
    // A slot frees: the waiting job goes there.
    let first = &d[0];
    let f = s.completed(
        first.job,
        1,
        first.worker,
        Outcome::Done(Bytes::from_static(b"r")),
    );
    assert_eq!(f.unwrap().result, Ok(Bytes::from_static(b"r")));
    let d2 = s.dispatch();
    assert_eq!(d2.len(), 1);
    assert_eq!(d2[0].worker, first.worker);
    assert_eq!(d2[0].payload, Bytes::from(vec![5]));
}

#[test]
fn a_less_loaded_node_is_preferred() {
    let now = Instant::now();
    let mut s = Scheduler::new(limits(4, 3));
    // Two workers on node 1, one on node 2.
    s.add_worker(EntryId(1), "sq/a", node(1), None);
    s.add_worker(EntryId(2), "sq/b", node(1), None);
    s.add_worker(EntryId(3), "sq/c", node(2), None);
    for n in 0..2 {
        job(&mut s, n, now);
    }
    let d = s.dispatch();
    let nodes: Vec<_> = d.iter().map(|x| x.worker).collect();
    // The second job goes to node 2, not to the other worker of node 1.
    assert!(nodes.contains(&EntryId(3)), "{nodes:?}");
}

#[test]
fn a_worker_whose_link_fails_has_its_jobs_sent_elsewhere_first_result_wins() {
    let now = Instant::now();
    let mut s = Scheduler::new(limits(1, 3));
    s.add_worker(EntryId(1), "sq/a", node(1), None);
    let a = job(&mut s, 7, now);
    let d = s.dispatch();
    assert_eq!(d[0].worker, EntryId(1));
    assert!(s.remove_worker(EntryId(1), true, "link down").is_empty());
    assert_eq!(s.counters().retried, 1);
    assert!(s.dispatch().is_empty(), "no worker left: it waits");
    s.add_worker(EntryId(2), "sq/b", node(2), None);
    let d = s.dispatch();
    assert_eq!((d[0].job, d[0].attempt, d[0].worker), (a, 2, EntryId(2)));
    // The first attempt's call fails late: ignored, the job runs on b.
    assert_eq!(
        s.completed(a, 1, EntryId(1), Outcome::Unreachable("x".into())),
        None
    );
    let f = s.completed(a, 2, EntryId(2), Outcome::Done(Bytes::from_static(b"49")));
    assert_eq!(f.unwrap().result, Ok(Bytes::from_static(b"49")));
    // Another result for it is a duplicate: dropped and counted.
    let late = s.completed(a, 1, EntryId(1), Outcome::Done(Bytes::from_static(b"49")));
    assert_eq!(late, None);
    let c = s.counters();
    assert_eq!((c.submitted, c.done, c.failed, c.duplicates), (1, 1, 0, 1));
    assert_eq!(s.pending(), 0);
}

#[test]
fn a_late_result_from_an_abandoned_attempt_wins_if_it_comes_first() {
    let now = Instant::now();
    let mut s = Scheduler::new(limits(1, 3));
    s.add_worker(EntryId(1), "sq/a", node(1), None);
    s.add_worker(EntryId(2), "sq/b", node(2), None);
    let a = job(&mut s, 1, now);
    let d = s.dispatch();
    let w = d[0].worker;
    s.remove_worker(w, true, "link down");
    let d2 = s.dispatch();
    assert_ne!(d2[0].worker, w);
    let f = s.completed(a, 1, w, Outcome::Done(Bytes::from_static(b"old")));
    assert_eq!(f.unwrap().result, Ok(Bytes::from_static(b"old")));
    assert_eq!(
        s.completed(
            a,
            2,
            d2[0].worker,
            Outcome::Done(Bytes::from_static(b"new"))
        ),
        None
    );
    assert_eq!(s.counters().duplicates, 1);
}

#[test]
fn a_handler_error_is_the_result_and_is_not_retried() {
    let now = Instant::now();
    let mut s = Scheduler::new(limits(1, 3));
    s.add_worker(EntryId(1), "sq", node(1), None);
    s.add_worker(EntryId(2), "sq", node(2), None);
    let a = job(&mut s, 1, now);
    let d = s.dispatch();
    let f = s.completed(
        a,
        1,
        d[0].worker,
        Outcome::Failed("raised ValueError".into()),
    );
    assert_eq!(
        f.unwrap().result,
        Err(JobError::Failed("raised ValueError".into()))
    );
    assert!(s.dispatch().is_empty());
    assert_eq!(s.counters().retried, 0);
    // A worker that leaves normally (not a link failure) keeps its job
    // until its call answers.
    let b = job(&mut s, 2, now);
    let d = s.dispatch();
    s.remove_worker(d[0].worker, false, "normal exit");
    assert!(s.dispatch().is_empty());
    let f = s.completed(b, 1, d[0].worker, Outcome::Unreachable("stopped".into()));
    assert_eq!(f, None, "retried");
    assert_eq!(s.dispatch().len(), 1);
}

#[test]
fn unreachable_workers_are_retried_until_attempts_run_out() {
    let now = Instant::now();
    for max in [1, 3] {
        let mut s = Scheduler::new(limits(1, max));
        s.add_worker(EntryId(1), "sq", node(1), None);
        let a = job(&mut s, 1, now);
        let mut finished = None;
        for attempt in 1..=max {
            let d = s.dispatch();
            assert_eq!((d.len(), d[0].attempt), (1, attempt));
            finished = s.completed(a, attempt, EntryId(1), Outcome::Unreachable("busy".into()));
        }
        assert_eq!(
            finished.unwrap().result,
            Err(JobError::GaveUp {
                attempts: max,
                error: "busy".into()
            })
        );
        assert_eq!(s.counters().retried, u64::from(max - 1));
        assert!(s.dispatch().is_empty());
    }
    // A link failure with no attempt left finishes the job at once.
    let mut s = Scheduler::new(limits(1, 1));
    s.add_worker(EntryId(1), "sq", node(1), None);
    let a = job(&mut s, 1, now);
    assert_eq!(s.dispatch().len(), 1);
    let f = s.remove_worker(EntryId(1), true, "link down: reset");
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].job, &f[0].result),
        (
            a,
            &Err(JobError::GaveUp {
                attempts: 1,
                error: "link down: reset".into()
            })
        )
    );
}

#[test]
fn submissions_beyond_the_queue_limit_are_refused() {
    let now = Instant::now();
    let mut s = Scheduler::new(Limits {
        queue_limit: 3,
        ..limits(1, 3)
    });
    for n in 0..3 {
        job(&mut s, n, now);
    }
    assert_eq!(s.submit("sq", Bytes::new(), now), Err(Busy { limit: 3 }));
    assert_eq!(s.counters().refused, 1);
    // Finishing one makes room.
    s.add_worker(EntryId(1), "sq", node(1), None);
    let d = s.dispatch();
    s.completed(d[0].job, 1, EntryId(1), Outcome::Done(Bytes::new()));
    assert!(s.submit("sq", Bytes::new(), now).is_ok());
}

#[test]
fn jobs_time_out_queued_or_running() {
    let now = Instant::now();
    let mut s = Scheduler::new(limits(1, 3));
    let queued = job(&mut s, 1, now);
    s.add_worker(EntryId(1), "other", node(1), None);
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(10)));
    assert!(s.expire(now + Duration::from_secs(9)).is_empty());
    let f = s.expire(now + Duration::from_secs(10));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].job, queued);
    assert_eq!(
        f[0].result,
        Err(JobError::TimedOut(Duration::from_secs(10)))
    );
    assert_eq!((s.pending(), s.queued().count()), (0, 0));
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn group_names() {
    assert_eq!(group_of("square"), "square");
    assert_eq!(group_of("square/c-1"), "square");
    assert_eq!(group_of("a/b/c"), "a");
}

/// A tiny deterministic generator (xorshift), so the run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Random runs: workers join, fail (link down), answer in any order,
/// some results come late from abandoned attempts. Every job gets exactly
/// one result, and every result is its own job's.
#[test]
fn every_job_finishes_exactly_once_whatever_the_order() {
    for seed in 1..40u64 {
        let now = Instant::now();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut s = Scheduler::new(Limits {
            queue_limit: 1000,
            max_attempts: 100,
            per_worker: 2,
            job_timeout: Duration::from_secs(100),
        });
        let mut next_worker = 0u64;
        let mut live: Vec<EntryId> = Vec::new();
        let mut flying: Vec<(Dispatch, bool)> = Vec::new(); // (attempt, worker gone)
        let mut results: HashMap<JobId, u32> = HashMap::new();
        let mut payloads: HashMap<JobId, Bytes> = HashMap::new();
        let jobs = 200;
        for n in 0..jobs {
            let p = Bytes::from(format!("{n}"));
            let id = s.submit("sq", p.clone(), now).unwrap();
            payloads.insert(id, p);
        }
        let mut steps = 0;
        while results.len() < jobs && steps < 100_000 {
            steps += 1;
            match rng.below(10) {
                0 if live.len() < 5 => {
                    next_worker += 1;
                    let id = EntryId(next_worker);
                    s.add_worker(id, "sq", node((next_worker % 3) as u8), None);
                    live.push(id);
                }
                1 if live.len() > 1 && rng.below(4) == 0 => {
                    let w = live.swap_remove(rng.below(live.len() as u64) as usize);
                    for f in s.remove_worker(w, true, "link down") {
                        *results.entry(f.job).or_default() += 1;
                    }
                    for f in flying.iter_mut().filter(|(d, _)| d.worker == w) {
                        f.1 = true;
                    }
                }
                _ if !flying.is_empty() => {
                    let (d, gone) = flying.swap_remove(rng.below(flying.len() as u64) as usize);
                    // A gone worker's call mostly fails, sometimes its
                    // result still arrives.
                    let outcome = if gone && rng.below(3) > 0 {
                        Outcome::Unreachable("link down".into())
                    } else {
                        Outcome::Done(d.payload.clone())
                    };
                    if let Some(f) = s.completed(d.job, d.attempt, d.worker, outcome) {
                        *results.entry(f.job).or_default() += 1;
                        assert_eq!(f.result.as_ref(), Ok(&payloads[&f.job]));
                    }
                }
                _ => {}
            }
            if live.is_empty() {
                next_worker += 1;
                s.add_worker(EntryId(next_worker), "sq", node(0), None);
                live.push(EntryId(next_worker));
            }
            flying.extend(s.dispatch().into_iter().map(|d| (d, false)));
        }
        assert_eq!(results.len(), jobs, "seed {seed}: every job finished");
        assert!(results.values().all(|&n| n == 1), "seed {seed}");
        let c = s.counters();
        assert_eq!((c.done, c.failed), (jobs as u64, 0), "seed {seed}");
        assert_eq!(s.pending(), 0);
    }
}

#[test]
fn a_crashed_worker_fails_one_job_and_the_jobs_behind_it_are_retried() {
    let now = Instant::now();
    let mut s = Scheduler::new(limits(3, 3));
    s.add_worker(EntryId(1), "sq", node(1), None);
    let jobs: Vec<JobId> = (0..3).map(|n| job(&mut s, n, now)).collect();
    assert_eq!(s.dispatch().len(), 3);
    s.remove_worker(EntryId(1), false, "failed: raised ValueError");
    let why = || Outcome::Crashed("raised ValueError".into());
    let f = s.completed(jobs[0], 1, EntryId(1), why()).unwrap();
    assert_eq!(f.result, Err(JobError::Failed("raised ValueError".into())));
    assert_eq!(s.completed(jobs[1], 1, EntryId(1), why()), None);
    assert_eq!(s.completed(jobs[2], 1, EntryId(1), why()), None);
    assert_eq!(s.counters().retried, 2);
    // Its restart (a new entry) runs them.
    s.add_worker(EntryId(2), "sq", node(1), None);
    let d = s.dispatch();
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|x| x.attempt == 2 && x.worker == EntryId(2)));
}

#[test]
fn a_worker_that_failed_gets_no_more_jobs() {
    let now = Instant::now();
    let mut s = Scheduler::new(limits(1, 3));
    s.add_worker(EntryId(1), "sq", node(1), None);
    let a = job(&mut s, 0, now);
    let b = job(&mut s, 1, now);
    let d = s.dispatch();
    assert_eq!(d[0].job, a);
    let f = s.completed(a, 1, EntryId(1), Outcome::Crashed("raised".into()));
    assert!(f.is_some());
    // Its Removed event has not come yet: still, nothing is sent to it.
    assert!(s.dispatch().is_empty());
    s.add_worker(EntryId(2), "sq", node(1), None);
    let d = s.dispatch();
    assert_eq!((d[0].job, d[0].worker), (b, EntryId(2)));
}
