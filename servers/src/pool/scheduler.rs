//! The pool's scheduling, sans-IO: a state machine fed submissions,
//! workers joining and leaving, attempt outcomes and the clock, that
//! answers which job to send to which worker and which jobs are finished.
//! The pool server wraps it with the registry and the calls.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oscloud_core::{EntryId, NodeId};

/// One job, from submission to its one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// The bounds of a [`Scheduler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most jobs accepted and not finished yet (queued or running);
    /// one more is refused with [`Busy`].
    pub queue_limit: usize,
    /// The most times a job is sent to a worker: 1 means it is never
    /// retried.
    pub max_attempts: u32,
    /// The most jobs in flight on one worker, unless the worker says
    /// otherwise (registry metadata [`SLOTS_META`](super::SLOTS_META)).
    pub per_worker: usize,
    /// The longest a job may take from submission to its result.
    pub job_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queue_limit: 10_000,
            max_attempts: 3,
            per_worker: 2,
            job_timeout: Duration::from_secs(60),
        }
    }
}

/// A submission refused: `limit` jobs are queued or running already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// [`Limits::queue_limit`].
    pub limit: usize,
}

/// What one attempt (a call to a worker) gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The worker's reply: the job's result.
    Done(Bytes),
    /// The worker took the job and answered with an error (it could not
    /// decode it, or refused it): the job's result, not retried.
    Failed(String),
    /// The worker failed (its handler's error) and stopped, with this
    /// reason. A server fails once, for the job it was handling: for the
    /// first such outcome of a worker this is the job's result, not
    /// retried; the jobs that waited in its mailbox get the same error,
    /// and are retried.
    Crashed(String),
    /// The worker could not be reached or did not answer (its node died,
    /// its link failed, it was busy or gone, or the attempt timed out): the
    /// job is sent again while attempts are left.
    Unreachable(String),
}

/// Why a job has no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// The worker's handler failed it (see [`Outcome::Failed`]).
    Failed(String),
    /// Every attempt found its worker unreachable; the last error.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: String,
    },
    /// No result within [`Limits::job_timeout`].
    TimedOut(Duration),
}

/// A job's one result, for its submitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The job.
    pub job: JobId,
    /// Its result.
    pub result: Result<Bytes, JobError>,
}

/// An attempt to start: call `worker` with `payload`, then report the
/// outcome with [`Scheduler::completed`] (with this `job` and `attempt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The job.
    pub job: JobId,
    /// Which attempt this is (from 1).
    pub attempt: u32,
    /// The worker to call.
    pub worker: EntryId,
    /// The job's bytes: the call's message.
    pub payload: Bytes,
}

/// The pool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Jobs accepted.
    pub submitted: u64,
    /// Jobs finished with a result.
    pub done: u64,
    /// Jobs finished with an error (failed, gave up, timed out).
    pub failed: u64,
    /// Attempts sent again after their worker was unreachable.
    pub retried: u64,
    /// Results that came for a job already finished: dropped.
    pub duplicates: u64,
    /// Submissions refused with [`Busy`].
    pub refused: u64,
}

#[derive(Debug)]
struct Job {
    group: String,
    payload: Bytes,
    /// Attempts started so far.
    attempts: u32,
    /// The attempt running now, on which worker; `None` while queued.
    running: Option<(EntryId, u32)>,
    deadline: Instant,
}

#[derive(Debug)]
struct Worker {
    group: String,
    node: NodeId,
    slots: usize,
    in_flight: HashSet<(JobId, u32)>,
    /// When it was last given a job (the scheduler's tick), for fairness.
    last_used: u64,
    /// It left the registry; kept until its attempts in flight are
    /// accounted for.
    gone: bool,
    /// One of its attempts failed (a handler error). A server fails once:
    /// the same failure reported for its other attempts is theirs only
    /// because they waited in its mailbox, so those are retried.
    failed: bool,
}

/// The pool's state: jobs by group, workers, counters.
#[derive(Debug)]
pub struct Scheduler {
    limits: Limits,
    next_job: u64,
    jobs: HashMap<JobId, Job>,
    queues: HashMap<String, VecDeque<JobId>>,
    deadlines: BTreeSet<(Instant, JobId)>,
    workers: HashMap<EntryId, Worker>,
    /// Attempts in flight per node, over every worker of the node.
    node_load: HashMap<NodeId, usize>,
    tick: u64,
    counters: Counters,
}

/// The group a worker registered as `name` belongs to: the name up to its
/// first `/` (`square` and `square/c-1` both work for `square`).
pub fn group_of(name: &str) -> &str {
    name.split('/').next().unwrap_or(name)
}

impl Scheduler {
    /// An empty pool.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            next_job: 0,
            jobs: HashMap::new(),
            queues: HashMap::new(),
            deadlines: BTreeSet::new(),
            workers: HashMap::new(),
            node_load: HashMap::new(),
            tick: 0,
            counters: Counters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Jobs accepted and not finished.
    pub fn pending(&self) -> usize {
        self.jobs.len()
    }

    /// Jobs waiting for a worker, per group (groups with none omitted).
    pub fn queued(&self) -> impl Iterator<Item = (&str, usize)> {
        self.queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(g, q)| (g.as_str(), q.len()))
    }

    /// Every worker: its group and the attempts it runs now.
    pub fn workers(&self) -> impl Iterator<Item = (&str, usize)> {
        self.workers
            .values()
            .filter(|w| !w.gone)
            .map(|w| (w.group.as_str(), w.in_flight.len()))
    }

    /// Accept a job for `group`, or refuse it when the pool is full.
    pub fn submit(&mut self, group: &str, payload: Bytes, now: Instant) -> Result<JobId, Busy> {
        if self.jobs.len() >= self.limits.queue_limit {
            self.counters.refused += 1;
            return Err(Busy {
                limit: self.limits.queue_limit,
            });
        }
        let id = JobId(self.next_job);
        self.next_job += 1;
        let deadline = now + self.limits.job_timeout;
        self.jobs.insert(
            id,
            Job {
                group: group.to_owned(),
                payload,
                attempts: 0,
                running: None,
                deadline,
            },
        );
        self.deadlines.insert((deadline, id));
        self.queues
            .entry(group.to_owned())
            .or_default()
            .push_back(id);
        self.counters.submitted += 1;
        Ok(id)
    }

    /// A worker joined: the server `id` registered as `name` on `node`,
    /// taking at most `slots` jobs at once (`None`: [`Limits::per_worker`]).
    pub fn add_worker(&mut self, id: EntryId, name: &str, node: NodeId, slots: Option<usize>) {
        self.workers.insert(
            id,
            Worker {
                group: group_of(name).to_owned(),
                node,
                slots: slots.unwrap_or(self.limits.per_worker).max(1),
                in_flight: HashSet::new(),
                last_used: 0,
                gone: false,
                failed: false,
            },
        );
    }

    /// A worker left the registry. When its link went down (`link_down`),
    /// its node is gone or cut off: the jobs it runs are sent elsewhere at
    /// once (a result that still comes from it later wins if it comes
    /// first), and those out of attempts are finished. Otherwise the
    /// outcomes of its calls tell.
    pub fn remove_worker(&mut self, id: EntryId, link_down: bool, why: &str) -> Vec<Finished> {
        let Some(worker) = self.workers.get_mut(&id) else {
            return Vec::new();
        };
        if worker.gone {
            return Vec::new();
        }
        worker.gone = true;
        let (node, n) = (worker.node, worker.in_flight.len());
        let running: Vec<(JobId, u32)> = worker.in_flight.iter().copied().collect();
        if n == 0 {
            self.workers.remove(&id);
        }
        self.unload(node, n);
        if !link_down {
            return Vec::new();
        }
        let mut finished = Vec::new();
        for (job, attempt) in running {
            if self.jobs.get(&job).and_then(|j| j.running) == Some((id, attempt)) {
                finished.extend(self.retry(job, why));
            }
        }
        finished
    }

    fn unload(&mut self, node: NodeId, n: usize) {
        if let Some(load) = self.node_load.get_mut(&node) {
            *load = load.saturating_sub(n);
            if *load == 0 {
                self.node_load.remove(&node);
            }
        }
    }

    /// The attempt now running for `job` is lost: queue the job again
    /// (first in its group's queue) if attempts are left.
    fn retry(&mut self, job: JobId, why: &str) -> Option<Finished> {
        let j = self.jobs.get_mut(&job)?;
        j.running = None;
        if j.attempts >= self.limits.max_attempts {
            let error = JobError::GaveUp {
                attempts: j.attempts,
                error: why.to_owned(),
            };
            return Some(self.finish(job, Err(error)));
        }
        self.counters.retried += 1;
        self.queues
            .entry(j.group.clone())
            .or_default()
            .push_front(job);
        None
    }

    fn finish(&mut self, job: JobId, result: Result<Bytes, JobError>) -> Finished {
        if let Some(j) = self.jobs.remove(&job) {
            self.deadlines.remove(&(j.deadline, job));
            if j.running.is_none()
                && let Some(q) = self.queues.get_mut(&j.group)
            {
                q.retain(|&x| x != job);
            }
        }
        match result {
            Ok(_) => self.counters.done += 1,
            Err(_) => self.counters.failed += 1,
        }
        Finished { job, result }
    }

    /// The attempts to start now: each queued job goes to the least
    /// loaded worker of its group that has a free slot (fewest jobs in
    /// flight for its slots, then the least loaded node, then the one
    /// idle longest).
    pub fn dispatch(&mut self) -> Vec<Dispatch> {
        let mut out = Vec::new();
        let groups: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(g, _)| g.clone())
            .collect();
        for group in groups {
            while let Some(worker) = self.pick(&group) {
                let Some(job) = self.queues.get_mut(&group).and_then(VecDeque::pop_front) else {
                    break;
                };
                let Some(j) = self.jobs.get_mut(&job) else {
                    continue;
                };
                j.attempts += 1;
                j.running = Some((worker, j.attempts));
                let d = Dispatch {
                    job,
                    attempt: j.attempts,
                    worker,
                    payload: j.payload.clone(),
                };
                self.tick += 1;
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.in_flight.insert((job, d.attempt));
                    w.last_used = self.tick;
                    *self.node_load.entry(w.node).or_default() += 1;
                }
                out.push(d);
            }
        }
        out
    }

    fn pick(&self, group: &str) -> Option<EntryId> {
        self.workers
            .iter()
            .filter(|(_, w)| {
                // A worker that failed is stopping: its restart (a new
                // entry) takes jobs.
                !w.gone && !w.failed && w.group == group && w.in_flight.len() < w.slots
            })
            .min_by_key(|(id, w)| {
                (
                    // in_flight / slots, compared without division
                    w.in_flight.len() * 1_000_000 / w.slots,
                    self.node_load.get(&w.node).copied().unwrap_or(0),
                    w.last_used,
                    **id,
                )
            })
            .map(|(id, _)| *id)
    }

    /// Attempt `attempt` of `job`, sent to `worker`, gave `outcome`.
    /// Returns the job's result when this finishes it. A result for a job
    /// already finished is a duplicate: dropped and counted.
    pub fn completed(
        &mut self,
        job: JobId,
        attempt: u32,
        worker: EntryId,
        outcome: Outcome,
    ) -> Option<Finished> {
        let mut outcome = outcome;
        if let Some(w) = self.workers.get_mut(&worker)
            && w.in_flight.remove(&(job, attempt))
        {
            if let Outcome::Crashed(why) = &outcome {
                outcome = if w.failed {
                    Outcome::Unreachable(why.clone())
                } else {
                    Outcome::Failed(why.clone())
                };
                w.failed = true;
            }
            let (node, gone, idle) = (w.node, w.gone, w.in_flight.is_empty());
            if !gone {
                self.unload(node, 1);
            } else if idle {
                self.workers.remove(&worker);
            }
        }
        let Some(j) = self.jobs.get(&job) else {
            if matches!(outcome, Outcome::Done(_)) {
                self.counters.duplicates += 1;
            }
            return None;
        };
        let current = j.running == Some((worker, attempt));
        match outcome {
            // First result wins, even from an attempt given up on.
            Outcome::Done(bytes) => Some(self.finish(job, Ok(bytes))),
            Outcome::Failed(why) | Outcome::Crashed(why) if current => {
                Some(self.finish(job, Err(JobError::Failed(why))))
            }
            Outcome::Unreachable(why) if current => self.retry(job, &why),
            // An attempt given up on already: the job runs elsewhere.
            Outcome::Failed(_) | Outcome::Crashed(_) | Outcome::Unreachable(_) => None,
        }
    }

    /// When the next job times out, if any is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Finish every job whose deadline passed by `now`, with
    /// [`JobError::TimedOut`].
    pub fn expire(&mut self, now: Instant) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Some(&(at, job)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let error = JobError::TimedOut(self.limits.job_timeout);
            out.push(self.finish(job, Err(error)));
        }
        out
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
