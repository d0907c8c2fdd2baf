//! The pool's I/O: one task that feeds the [`Scheduler`] submissions,
//! registry changes, attempt outcomes and the clock, makes the calls it
//! asks for and answers the submitters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oscloud_actors::{Context, ReplyTo};
use oscloud_core::{Entry, EntryId, Error as CoreError, ExitReason, Kernel, RegistryEvent};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::scheduler::{Finished, JobError, JobId, Outcome, Scheduler, group_of};
use super::{GroupStats, PoolReply, PoolSpec, PoolStats, SLOTS_META};

/// What the pool server hands its driver.
#[derive(Debug)]
pub(super) enum Command {
    /// Run `job` on a worker of `group`; answer `reply`.
    Submit {
        group: String,
        job: Bytes,
        reply: ReplyTo,
    },
    /// Answer [`PoolStats`].
    Stats(ReplyTo),
}

/// An attempt in flight: which job, which attempt, which worker.
type AttemptOf = (JobId, u32, EntryId);

pub(super) struct Driver {
    kernel: Kernel,
    /// The pool's own group (its name's): never a worker of itself.
    own_group: String,
    sched: Scheduler,
    attempt_timeout: Duration,
    workers: HashMap<EntryId, Entry>,
    waiting: HashMap<JobId, ReplyTo>,
    calls: JoinSet<Outcome>,
    in_flight: HashMap<tokio::task::Id, AttemptOf>,
}

impl Driver {
    pub(super) fn new(ctx: &Context, spec: &PoolSpec) -> Self {
        Self {
            kernel: ctx.kernel().clone(),
            own_group: group_of(ctx.name()).to_owned(),
            sched: Scheduler::new(spec.limits()),
            attempt_timeout: spec.attempt_timeout,
            workers: HashMap::new(),
            waiting: HashMap::new(),
            calls: JoinSet::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Run until the pool server stops (it aborts this task) or drops its
    /// end of `commands`.
    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut watch = self.kernel.registry().watch();
        loop {
            self.start_attempts();
            let deadline = self.sched.next_deadline();
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                event = watch.next() => match event {
                    Some(event) => self.registry(event),
                    None => return,
                },
                Some(done) = self.calls.join_next_with_id(), if !self.calls.is_empty() => {
                    let (id, outcome) = match done {
                        Ok((id, outcome)) => (id, outcome),
                        Err(e) => (e.id(), Outcome::Unreachable(format!("attempt task: {e}"))),
                    };
                    if let Some((job, attempt, worker)) = self.in_flight.remove(&id)
                        && let Some(f) = self.sched.completed(job, attempt, worker, outcome)
                    {
                        self.answer(f);
                    }
                }
                () = timer => {
                    for f in self.sched.expire(Instant::now()) {
                        self.answer(f);
                    }
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { group, job, reply } => {
                match self.sched.submit(&group, job, Instant::now()) {
                    Ok(id) => {
                        self.waiting.insert(id, reply);
                    }
                    Err(busy) => {
                        reply.send(&PoolReply::Busy(busy.limit as u64));
                    }
                }
            }
            Command::Stats(reply) => {
                reply.send(&PoolReply::Stats(self.stats()));
            }
        }
    }

    fn registry(&mut self, event: RegistryEvent) {
        match event {
            RegistryEvent::Added(entry) => {
                if group_of(entry.name()) == self.own_group {
                    return;
                }
                let slots = entry
                    .capabilities()
                    .metadata
                    .get(SLOTS_META)
                    .and_then(|s| s.parse().ok());
                self.sched
                    .add_worker(entry.id(), entry.name(), entry.node(), slots);
                self.workers.insert(entry.id(), entry);
            }
            RegistryEvent::Removed { entry, reason } => {
                if self.workers.remove(&entry.id()).is_some() {
                    let link_down = matches!(reason, ExitReason::LinkDown(_));
                    let why = reason.to_string();
                    for f in self.sched.remove_worker(entry.id(), link_down, &why) {
                        self.answer(f);
                    }
                }
            }
        }
    }

    fn start_attempts(&mut self) {
        for d in self.sched.dispatch() {
            let endpoint = self.workers.get(&d.worker).map(|e| e.endpoint().clone());
            let timeout = self.attempt_timeout;
            let handle = self.calls.spawn(async move {
                let Some(endpoint) = endpoint else {
                    return Outcome::Unreachable("the worker left".to_owned());
                };
                match tokio::time::timeout(timeout, endpoint.call(d.payload)).await {
                    Ok(result) => classify(result),
                    Err(_) => Outcome::Unreachable(format!("no answer within {timeout:?}")),
                }
            });
            self.in_flight
                .insert(handle.id(), (d.job, d.attempt, d.worker));
        }
    }

    fn answer(&mut self, f: Finished) {
        let Some(reply) = self.waiting.remove(&f.job) else {
            return;
        };
        let out = match f.result {
            Ok(bytes) => PoolReply::Done(bytes.to_vec().into()),
            Err(JobError::Failed(why)) => PoolReply::Failed(why),
            Err(JobError::GaveUp { attempts, error }) => {
                PoolReply::GaveUp(format!("{attempts} attempts, the last: {error}"))
            }
            Err(JobError::TimedOut(after)) => {
                PoolReply::TimedOut(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
            }
        };
        reply.send(&out);
    }

    fn stats(&self) -> PoolStats {
        let c = self.sched.counters();
        let mut groups: std::collections::BTreeMap<String, GroupStats> = Default::default();
        for (group, running) in self.sched.workers() {
            let g = groups.entry(group.to_owned()).or_default();
            g.workers += 1;
            g.running += running as u64;
        }
        for (group, queued) in self.sched.queued() {
            groups.entry(group.to_owned()).or_default().queued = queued as u64;
        }
        // Every registered server is a potential worker; list the groups
        // that have jobs, several members, or a member registered as one
        // (in a registry group, or named `G/...`).
        let declared: std::collections::HashSet<&str> = self
            .workers
            .values()
            .filter(|e| e.is_group_member() || e.name().contains('/'))
            .map(|e| group_of(e.name()))
            .collect();
        groups.retain(|name, g| {
            g.running > 0 || g.queued > 0 || g.workers > 1 || declared.contains(name.as_str())
        });
        PoolStats {
            submitted: c.submitted,
            done: c.done,
            failed: c.failed,
            retried: c.retried,
            duplicates: c.duplicates,
            refused: c.refused,
            pending: self.sched.pending() as u64,
            groups,
        }
    }
}

/// What a worker's call gave, for the scheduler: its reply, an error it
/// answered with, its failure, or a sign that it was not reached (the
/// kinds worth another worker).
pub(crate) fn classify(result: Result<Bytes, CoreError>) -> Outcome {
    match result {
        Ok(bytes) => Outcome::Done(bytes),
        Err(CoreError::ServerStopped { reason, .. }) => {
            // Refused from its mailbox as it stopped, or cut off: not run.
            if reason.starts_with("link down") || reason == "normal exit" || reason == "killed" {
                Outcome::Unreachable(reason)
            } else {
                Outcome::Crashed(reason)
            }
        }
        Err(
            e @ (CoreError::LinkNotResumed { .. }
            | CoreError::LinkBusy { .. }
            | CoreError::NodeBusy { .. }
            | CoreError::ServerBusy { .. }
            | CoreError::NotFound(_)
            | CoreError::Timeout { .. }
            | CoreError::WireClosed { .. }
            | CoreError::LinkFailed { .. }),
        ) => Outcome::Unreachable(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_worth_another_worker_are_told_from_the_job_failing() {
        let stopped = |reason: &str| CoreError::ServerStopped {
            name: "sq".into(),
            reason: reason.into(),
        };
        let unreachable = |e| matches!(classify(Err(e)), Outcome::Unreachable(_));
        assert!(unreachable(stopped("link down: connection reset")));
        assert!(unreachable(stopped("normal exit")));
        assert!(unreachable(CoreError::NotFound("sq".into())));
        assert!(unreachable(CoreError::NodeBusy {
            name: "sq".into(),
            reason: "x".into()
        }));
        assert_eq!(
            classify(Err(stopped("raised ValueError: bad"))),
            Outcome::Crashed("raised ValueError: bad".into())
        );
        assert!(matches!(
            classify(Err(CoreError::Decode("x".into()))),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            classify(Err(CoreError::Remote {
                name: "sq".into(),
                message: "no".into()
            })),
            Outcome::Failed(_)
        ));
        assert_eq!(
            classify(Ok(Bytes::from_static(b"r"))),
            Outcome::Done(Bytes::from_static(b"r"))
        );
    }
}
