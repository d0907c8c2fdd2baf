//! The pool: every worker of a group, on any node, as one pool of CPUs.
//!
//! Submit a job (bytes in) to a named **group**; the pool sends it to one
//! of the group's workers and answers with the worker's reply (bytes out).
//!
//! - **Workers** are ordinary servers, in any language, on any node of
//!   the cloud: a server registered as `G` (usually joining the registry
//!   group `G`, so many can) or under a name starting with `G/` (`G/c-1`,
//!   for bindings without groups) is a worker of group `G`. A job's bytes
//!   are the worker's call message as is, and its reply is the result: a
//!   Rust worker is any [`Server`] whose `Request` is what the submitters
//!   encode, a Python worker any `@node.server(G, group=True)` function.
//!   A worker takes [`PoolSpec::per_worker`] jobs at once (one runs,
//!   the next waits in its mailbox), or as many as its registry metadata
//!   [`SLOTS_META`] says.
//! - **Spreading by load**: a job goes to the worker of its group with the
//!   fewest jobs in flight for its slots, then on the node with the fewest
//!   jobs in flight, then the one idle longest. (Nodes do not report their
//!   CPU load; jobs in flight per worker and per node stand for it.)
//! - **Retries**: a job whose worker's node dies or whose link fails (the
//!   worker leaves the registry with a link-down reason, or its call fails
//!   so: link down or not resumed, link or node or mailbox busy, worker
//!   gone, the attempt timed out) is sent to another worker, up to
//!   [`PoolSpec::max_attempts`] times in all. A worker that takes the job
//!   and fails it (its handler's error) is the job's result:
//!   [`PoolReply::Failed`], not retried.
//! - **Exactly one result**: every job has an id; its first result is the
//!   submitter's reply, a result that comes later (from an attempt given
//!   up on whose worker still answered) is dropped and counted
//!   ([`PoolStats::duplicates`]). A job may *run* more than once when its
//!   worker was cut off mid-job; its submitter gets one result.
//! - **Bounded**: at most [`PoolSpec::queue_limit`] jobs are queued or
//!   running; one more is answered [`PoolReply::Busy`] at once. A job
//!   without a result after [`PoolSpec::job_timeout`] is answered
//!   [`PoolReply::TimedOut`] (it waits for a worker of its group that
//!   long, too).
//!
//! The pool answers calls of [`PoolRequest`] with [`PoolReply`]
//! (MessagePack: `{"Submit": [group, bin]}` and `"Stats"`; replies
//! `{"Done": bin}`, `{"Failed": text}`, `{"GaveUp": text}`,
//! `{"TimedOut": ms}`, `{"Busy": limit}`, `{"Stats": [...]}`). Many jobs are
//! in progress at once: the pool answers each when its result comes
//! ([`Context::defer_reply`]). The scheduling itself is sans-IO:
//! [`scheduler::Scheduler`].
//!
//! ```
//! use std::time::Duration;
//! use oscloud_actors::{async_trait, start, Context, Server, ServerError, ServerOptions, ServerRef};
//! use oscloud_core::Kernel;
//! use oscloud_servers::pool::{PoolReply, PoolRequest, PoolSpec};
//!
//! /// A worker of group "square": u64 in, its square out.
//! struct Square;
//!
//! #[async_trait]
//! impl Server for Square {
//!     type Request = u64;
//!     type Reply = u64;
//!     type State = ();
//!     async fn init(&self, _: &mut Context) -> Result<(), ServerError> { Ok(()) }
//!     async fn handle_call(&self, _: &mut Context, _: &mut (), n: u64) -> Result<u64, ServerError> {
//!         Ok(n * n)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_actors::Error> {
//! let kernel = Kernel::new();
//! let _pool = start(&kernel, "pool", PoolSpec::new().server()).await?;
//! for _ in 0..2 {
//!     start(&kernel, ServerOptions::new("square").group(), Square).await?;
//! }
//! let pool = ServerRef::lookup(&kernel, "pool")?.typed::<PoolRequest, PoolReply>();
//! let job = PoolRequest::submit("square", oscloud_actors::encode(&7u64)?);
//! let reply = pool.call(&job, Duration::from_secs(5)).await?;
//! let PoolReply::Done(bytes) = reply else { panic!("{reply:?}") };
//! assert_eq!(oscloud_actors::decode::<u64>(&bytes)?, 49);
//! # Ok(())
//! # }
//! ```

mod driver;
pub mod scheduler;

use std::collections::BTreeMap;
use std::time::Duration;

use oscloud_actors::{ChildSpec, Context, Server, ServerError, ServerOptions};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use scheduler::Limits;

/// The registry metadata key by which a worker says how many jobs it takes
/// at once (a number; default [`PoolSpec::per_worker`]).
pub const SLOTS_META: &str = "pool.slots";

/// A call to the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolRequest {
    /// Run `job` (the worker's call message) on a worker of `group`.
    Submit {
        /// The group.
        group: String,
        /// The job's bytes.
        job: ByteBuf,
    },
    /// The pool's [`PoolStats`].
    Stats,
}

impl PoolRequest {
    /// A submission of `job` to `group`.
    pub fn submit(group: impl Into<String>, job: impl Into<Vec<u8>>) -> Self {
        Self::Submit {
            group: group.into(),
            job: ByteBuf::from(job.into()),
        }
    }
}

/// The pool's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolReply {
    /// The job's result: the worker's reply.
    Done(ByteBuf),
    /// The worker failed the job (its handler's error). Not retried.
    Failed(String),
    /// Every attempt found its worker unreachable; the last error.
    GaveUp(String),
    /// No result within the job timeout (in milliseconds).
    TimedOut(u64),
    /// The pool holds as many jobs as it takes (the queue limit): this one
    /// was refused. Retry later, or slow down.
    Busy(u64),
    /// The answer to [`PoolRequest::Stats`].
    Stats(PoolStats),
}

/// What the pool holds and has done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Jobs accepted.
    pub submitted: u64,
    /// Jobs answered with a result.
    pub done: u64,
    /// Jobs answered with an error (failed, gave up, timed out).
    pub failed: u64,
    /// Attempts sent again after their worker was unreachable.
    pub retried: u64,
    /// Results that came for a job already answered: dropped.
    pub duplicates: u64,
    /// Submissions refused as busy.
    pub refused: u64,
    /// Jobs queued or running now.
    pub pending: u64,
    /// Per group: workers now, jobs running on them, jobs waiting.
    pub groups: BTreeMap<String, GroupStats>,
}

/// One group in [`PoolStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStats {
    /// Workers registered now.
    pub workers: u64,
    /// Jobs running on them.
    pub running: u64,
    /// Jobs waiting for a free worker.
    pub queued: u64,
}

/// How a pool is set up. [`PoolSpec::server`] makes the server,
/// [`PoolSpec::child_spec`] a supervisor child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The most jobs queued or running (default 10 000); one more is
    /// answered [`PoolReply::Busy`].
    pub queue_limit: usize,
    /// The most times a job is sent to a worker (default 3; 1 never
    /// retries).
    pub max_attempts: u32,
    /// Jobs in flight per worker unless its [`SLOTS_META`] says otherwise
    /// (default 2: one runs while the next travels).
    pub per_worker: usize,
    /// The longest one attempt may take before it counts as unreachable
    /// and the job is sent elsewhere (default 30 s).
    pub attempt_timeout: Duration,
    /// The longest a job may take from submission to its result (default
    /// 60 s), waiting for a worker included.
    pub job_timeout: Duration,
}

impl Default for PoolSpec {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            queue_limit: l.queue_limit,
            max_attempts: l.max_attempts,
            per_worker: l.per_worker,
            attempt_timeout: Duration::from_secs(30),
            job_timeout: l.job_timeout,
        }
    }
}

impl PoolSpec {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set [`queue_limit`](Self::queue_limit).
    pub fn queue_limit(mut self, n: usize) -> Self {
        self.queue_limit = n.max(1);
        self
    }

    /// Set [`max_attempts`](Self::max_attempts) (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Set [`per_worker`](Self::per_worker) (at least 1).
    pub fn per_worker(mut self, n: usize) -> Self {
        self.per_worker = n.max(1);
        self
    }

    /// Set [`attempt_timeout`](Self::attempt_timeout).
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = d;
        self
    }

    /// Set [`job_timeout`](Self::job_timeout).
    pub fn job_timeout(mut self, d: Duration) -> Self {
        self.job_timeout = d;
        self
    }

    fn limits(&self) -> Limits {
        Limits {
            queue_limit: self.queue_limit,
            max_attempts: self.max_attempts,
            per_worker: self.per_worker,
            job_timeout: self.job_timeout,
        }
    }

    /// The pool server.
    pub fn server(&self) -> PoolServer {
        PoolServer(self.clone())
    }

    /// A supervisor child registered as `options`.
    pub fn child_spec(&self, options: impl Into<ServerOptions>) -> ChildSpec {
        let me = self.clone();
        ChildSpec::server(options, move || me.server())
    }
}

/// The pool server (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct PoolServer(PoolSpec);

/// The running pool: the way to its driver task.
#[derive(Debug)]
pub struct PoolState(mpsc::UnboundedSender<driver::Command>);

#[oscloud_actors::async_trait]
impl Server for PoolServer {
    type Request = PoolRequest;
    type Reply = PoolReply;
    type State = PoolState;

    async fn init(&self, ctx: &mut Context) -> Result<PoolState, ServerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = driver::Driver::new(ctx, &self.0);
        ctx.spawn(driver.run(rx));
        Ok(PoolState(tx))
    }

    async fn handle_call(
        &self,
        ctx: &mut Context,
        state: &mut PoolState,
        req: PoolRequest,
    ) -> Result<PoolReply, ServerError> {
        let Some(reply) = ctx.defer_reply() else {
            return Err("the pool's reply was taken already".into());
        };
        let cmd = match req {
            PoolRequest::Submit { group, job } => driver::Command::Submit {
                group,
                job: job.into_vec().into(),
                reply,
            },
            PoolRequest::Stats => driver::Command::Stats(reply),
        };
        state
            .0
            .send(cmd)
            .map_err(|_| "the pool's driver task ended")?;
        // Not sent: the driver answers through the deferred reply.
        Ok(PoolReply::TimedOut(0))
    }
}
