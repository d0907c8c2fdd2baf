//! Supervisors: restart servers when they fail, OTP style.
//!
//! Written on ractor's `spawn_linked` + `handle_supervisor_evt` rather than
//! on the `ractor-supervisor` crate, whose restarts kill (not stop) children
//! in no particular order and then *sleep* so names can be freed, and which
//! keys children by ractor's global actor names. Here children are stopped
//! gracefully in reverse start order, events are matched by actor id, and a
//! supervisor is itself a registered server.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use oscloud_core::endpoint::ServerCounters;
use oscloud_core::{Capabilities, Error as CoreError, ExitReason, Kernel};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::{Deserialize, Serialize};

use crate::server::{
    LocalEndpoint, Payload, ServerMsg, ServerOptions, Shared, register, spawn_err, spawn_server,
};
use crate::{Error, Server, ServerRef};

/// Which children a supervisor restarts when one exits abnormally (or a
/// permanent one exits at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Restart only that child.
    OneForOne,
    /// Stop every other child (in reverse order), then restart all in order.
    OneForAll,
    /// Stop the children started after it (in reverse order), then restart
    /// it and them in order.
    RestForOne,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    /// Always, however it exited.
    Permanent,
    /// Only when it failed (not after a normal exit).
    Transient,
    /// Never; once it exits it is gone.
    Temporary,
}

/// A started child: its actor, and what its endpoint shares with it.
type Started = (ActorCell, Arc<Shared>);

type StartFn =
    Arc<dyn Fn(Kernel, ActorCell) -> BoxFuture<'static, Result<Started, Error>> + Send + Sync>;

/// How to start (and restart) one child of a supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    id: String,
    restart: Restart,
    shutdown: Duration,
    start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl ChildSpec {
    /// A server child registered as `options` says; `factory` builds a
    /// fresh server for every (re)start. The child id is the server's name
    /// (use [`id`](Self::id) to tell group members apart). Permanent, 5 s
    /// shutdown.
    pub fn server<S, F>(options: impl Into<ServerOptions>, factory: F) -> Self
    where
        S: Server,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let options = options.into();
        let id = options.name.clone();
        let factory = Arc::new(factory);
        // One set of counters for every start, so they count across
        // restarts (and count the restarts).
        let counters = Arc::new(ServerCounters::default());
        let start: StartFn = Arc::new(move |kernel: Kernel, parent: ActorCell| {
            let options = options.clone();
            let factory = factory.clone();
            let counters = counters.clone();
            Box::pin(async move {
                let handle =
                    spawn_server(&kernel, options, factory(), Some(parent), counters).await?;
                Ok((handle.actor, handle.shared))
            })
        });
        Self {
            id,
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            start,
        }
    }

    /// A nested supervisor child. Its id is the supervisor's name.
    pub fn supervisor(spec: SupervisorSpec) -> Self {
        let id = spec.name.clone();
        let start: StartFn = Arc::new(move |kernel: Kernel, parent: ActorCell| {
            let spec = spec.clone();
            Box::pin(async move {
                let handle = spawn_supervisor(&kernel, spec, Some(parent)).await?;
                Ok((handle.actor.get_cell(), handle.shared.endpoint.clone()))
            })
        });
        Self {
            id,
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(30),
            start,
        }
    }

    /// Use `id` to identify the child in counters and logs (unique within
    /// its supervisor).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Set the restart policy (default [`Restart::Permanent`]).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long a graceful stop may take before the child is killed.
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    /// The child's id.
    pub fn child_id(&self) -> &str {
        &self.id
    }
}

/// A supervisor: its name, strategy, restart intensity and children.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    name: String,
    registered: bool,
    capabilities: Capabilities,
    strategy: Strategy,
    max_restarts: u32,
    period: Duration,
    children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A one-for-one supervisor registered as `name`, allowing 3 restarts
    /// in 5 seconds, with no children yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            registered: true,
            capabilities: Capabilities::new().feature("supervisor"),
            strategy: Strategy::OneForOne,
            max_restarts: 3,
            period: Duration::from_secs(5),
            children: Vec::new(),
        }
    }

    /// Set the strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Allow at most `max_restarts` restarts within any `period`; one more
    /// and the supervisor stops its children (in reverse order) and fails.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// Add a child; children start in the order they are added.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Do not register the supervisor in the kernel registry.
    pub fn unregistered(mut self) -> Self {
        self.registered = false;
        self
    }

    /// Advertise these capabilities when registered.
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }
}

/// What a supervisor answers to a call: the only request it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorRequest {
    /// Reply with the [`SupervisorStats`].
    Stats,
}

/// A supervisor's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorStats {
    /// Per child, in start order: id, times restarted, whether running now.
    pub children: Vec<ChildStats>,
}

/// One child's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStats {
    /// The child id.
    pub id: String,
    /// How many times it was restarted (including as a sibling under
    /// one-for-all or rest-for-one).
    pub restarts: u64,
    /// Whether it is running now.
    pub running: bool,
}

impl SupervisorStats {
    /// Restarts of the child `id` (0 if unknown).
    pub fn restarts(&self, id: &str) -> u64 {
        self.children
            .iter()
            .find(|c| c.id == id)
            .map_or(0, |c| c.restarts)
    }

    /// Restarts of all children together.
    pub fn total_restarts(&self) -> u64 {
        self.children.iter().map(|c| c.restarts).sum()
    }
}

struct SupShared {
    stats: Mutex<SupervisorStats>,
    outcome: Mutex<Option<Result<(), String>>>,
    endpoint: Arc<Shared>,
}

impl SupShared {
    fn stats(&self) -> std::sync::MutexGuard<'_, SupervisorStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_outcome(&self, outcome: Result<(), String>) {
        let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if o.is_none() {
            *o = Some(outcome);
        }
    }
}

/// Supervision trees: see [`Supervisor::start`].
#[derive(Debug)]
pub struct Supervisor;

impl Supervisor {
    /// Start a top-level supervisor and its children (in order). Returns
    /// once every child has started; fails (after stopping those already
    /// started, in reverse) if one cannot.
    pub async fn start(kernel: &Kernel, spec: SupervisorSpec) -> Result<SupervisorHandle, Error> {
        spawn_supervisor(kernel, spec, None).await
    }
}

/// A running supervisor.
pub struct SupervisorHandle {
    name: String,
    kernel: Kernel,
    actor: ActorRef<ServerMsg<NoValue>>,
    shared: Arc<SupShared>,
}

impl fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("name", &self.name)
            .field("actor", &self.actor.get_id())
            .finish()
    }
}

impl SupervisorHandle {
    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters now (still readable after it ended).
    pub fn stats(&self) -> SupervisorStats {
        self.shared.stats().clone()
    }

    /// A reference to a server by name on the supervisor's kernel.
    pub fn lookup(&self, name: &str) -> Result<ServerRef, Error> {
        ServerRef::lookup(&self.kernel, name)
    }

    /// Stop the tree: children in reverse start order, then the supervisor.
    pub async fn stop(&self) {
        let _ = self.actor.stop_and_wait(None, None).await;
    }

    /// Wait until the tree has ended. `Ok` if it was stopped, otherwise
    /// [`Error::SupervisorFailed`] with the reason (such as intensity
    /// exceeded).
    pub async fn wait(&self) -> Result<(), Error> {
        let _ = self.actor.wait(None).await;
        let outcome = self
            .shared
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(reason)) => Err(Error::SupervisorFailed {
                name: self.name.clone(),
                reason,
            }),
            None => Err(Error::SupervisorFailed {
                name: self.name.clone(),
                reason: "killed".to_owned(),
            }),
        }
    }
}

async fn spawn_supervisor(
    kernel: &Kernel,
    spec: SupervisorSpec,
    parent: Option<ActorCell>,
) -> Result<SupervisorHandle, Error> {
    let name = spec.name.clone();
    let shared = Arc::new(SupShared {
        stats: Mutex::new(SupervisorStats {
            children: spec
                .children
                .iter()
                .map(|c| ChildStats {
                    id: c.id.clone(),
                    restarts: 0,
                    running: false,
                })
                .collect(),
        }),
        outcome: Mutex::new(None),
        endpoint: Shared::new(name.clone(), Arc::default()),
    });
    let args = SupArgs {
        kernel: kernel.clone(),
        spec,
        shared: shared.clone(),
    };
    let spawned = match parent {
        Some(parent) => Actor::spawn_linked(None, SupervisorActor, args, parent).await,
        None => Actor::spawn(None, SupervisorActor, args).await,
    };
    let (actor, _join) = spawned.map_err(|e| spawn_err(&name, e))?;
    Ok(SupervisorHandle {
        name,
        kernel: kernel.clone(),
        actor,
        shared,
    })
}

struct SupervisorActor;

struct SupArgs {
    kernel: Kernel,
    spec: SupervisorSpec,
    shared: Arc<SupShared>,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    shared: Option<Arc<Shared>>,
    /// Temporary children are gone for good once they exit.
    gone: bool,
}

struct SupState {
    kernel: Kernel,
    name: String,
    strategy: Strategy,
    max_restarts: u32,
    period: Duration,
    children: Vec<Child>,
    restarts: VecDeque<Instant>,
    shared: Arc<SupShared>,
}

impl Drop for SupState {
    fn drop(&mut self) {
        // Only reached with the entry still registered if the supervisor
        // was killed.
        self.shared
            .endpoint
            .ended(ExitReason::Failed("killed".to_owned()));
    }
}

impl SupState {
    fn set_running(&self, i: usize, running: bool, restarted: bool) {
        let mut stats = self.shared.stats();
        if let Some(c) = stats.children.get_mut(i) {
            c.running = running;
            if restarted {
                c.restarts += 1;
            }
        }
    }

    async fn start_child(&mut self, i: usize, myself: &ActorCell) -> Result<(), Error> {
        let Some(child) = self.children.get_mut(i) else {
            return Ok(());
        };
        let (cell, shared) = (child.spec.start)(self.kernel.clone(), myself.clone()).await?;
        child.cell = Some(cell);
        child.shared = Some(shared);
        Ok(())
    }

    async fn stop_child(&mut self, i: usize) {
        let Some(child) = self.children.get_mut(i) else {
            return;
        };
        if let Some(cell) = child.cell.take() {
            tracing::debug!(supervisor = %self.name, child = %child.spec.id, "stopping child");
            let shutdown = child.spec.shutdown;
            let stopped = match cell.stop_and_wait(None, Some(shutdown)).await {
                Ok(()) => true,
                Err(ractor::RactorErr::Timeout) => false,
                // The stop could not be sent: the child was already
                // stopping by itself (a sink whose inputs all ended, say).
                // That is no reason to kill it; wait for it to finish.
                Err(_) => cell.wait(Some(shutdown)).await.is_ok(),
            };
            if !stopped {
                tracing::warn!(supervisor = %self.name, child = %child.spec.id, "child did not stop in time; killing it");
                let _ = cell.kill_and_wait(None).await;
                // Its state (and so its entry) would otherwise linger.
                if let Some(shared) = &child.shared {
                    shared.ended(ExitReason::Failed(format!(
                        "killed: did not stop within {:?}",
                        child.spec.shutdown
                    )));
                }
            }
        }
        self.set_running(i, false, false);
    }

    /// Stop every child from the last down to `from`.
    async fn stop_from(&mut self, from: usize) {
        for i in (from..self.children.len()).rev() {
            self.stop_child(i).await;
        }
    }

    /// Record one restart; Err when the intensity is exceeded.
    fn note_restart(&mut self) -> Result<(), String> {
        let now = Instant::now();
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.period)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() > self.max_restarts as usize {
            return Err(format!(
                "restart intensity exceeded: more than {} restarts in {:?}",
                self.max_restarts, self.period
            ));
        }
        Ok(())
    }

    /// Give up: stop the children in reverse, leave the registry as
    /// failed, and return the error that makes ractor fail this actor.
    async fn meltdown(&mut self, reason: String) -> ActorProcessingErr {
        tracing::error!(supervisor = %self.name, %reason, "supervisor gives up");
        self.stop_from(0).await;
        self.shared.set_outcome(Err(reason.clone()));
        self.shared
            .endpoint
            .ended(ExitReason::Failed(reason.clone()));
        reason.into()
    }

    /// (Re)start child `i`, retrying while its start fails and the
    /// intensity allows.
    async fn restart_child(&mut self, i: usize, myself: &ActorCell) -> Result<(), String> {
        loop {
            match self.start_child(i, myself).await {
                Ok(()) => {
                    self.set_running(i, true, true);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(supervisor = %self.name, error = %e, "restart failed");
                    self.note_restart()?;
                }
            }
        }
    }

    fn handle_call(&self, bytes: &[u8]) -> Result<Bytes, CoreError> {
        let _: SupervisorRequest =
            rmp_serde::from_slice(bytes).map_err(|e| CoreError::Decode(e.to_string()))?;
        let stats = self.shared.stats().clone();
        rmp_serde::to_vec(&stats)
            .map(Bytes::from)
            .map_err(|e| CoreError::Encode(e.to_string()))
    }
}

/// The supervisor's request "type" for values: none can be made, so
/// every request comes as bytes.
pub(crate) enum NoValue {}

impl Actor for SupervisorActor {
    type Msg = ServerMsg<NoValue>;
    type State = SupState;
    type Arguments = SupArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ServerMsg<NoValue>>,
        args: SupArgs,
    ) -> Result<SupState, ActorProcessingErr> {
        let SupArgs {
            kernel,
            spec,
            shared,
        } = args;
        if spec.registered {
            let endpoint = Arc::new(LocalEndpoint {
                actor: myself.clone(),
                shared: shared.endpoint.clone(),
                reply: None,
            });
            let opts = ServerOptions::new(spec.name.clone()).capabilities(spec.capabilities);
            shared
                .endpoint
                .set_registration(register(&kernel, &opts, endpoint)?);
        }
        let mut st = SupState {
            kernel,
            name: spec.name,
            strategy: spec.strategy,
            max_restarts: spec.max_restarts,
            period: spec.period,
            children: spec
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    cell: None,
                    shared: None,
                    gone: false,
                })
                .collect(),
            restarts: VecDeque::new(),
            shared,
        };
        let me = myself.get_cell();
        for i in 0..st.children.len() {
            if let Err(e) = st.start_child(i, &me).await {
                st.stop_from(0).await;
                let reason = e.to_string();
                st.shared.endpoint.ended(ExitReason::Failed(reason.clone()));
                return Err(reason.into());
            }
            st.set_running(i, true, false);
        }
        tracing::debug!(supervisor = %st.name, children = st.children.len(), "supervisor started");
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ServerMsg<NoValue>>,
        msg: ServerMsg<NoValue>,
        st: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        match &msg {
            ServerMsg::Cast(..) | ServerMsg::Call(..) => st.shared.endpoint.mailbox.taken(),
            ServerMsg::Casts(batch, _) => st.shared.endpoint.mailbox.taken_many(batch.len() as u64),
            ServerMsg::Pipe(_) | ServerMsg::Down(_) => {}
        }
        match msg {
            ServerMsg::Call(msg, _, reply) => {
                let reply_bytes = match msg {
                    Payload::Bytes(bytes) => st.handle_call(&bytes),
                    Payload::Value(never) => match never {},
                };
                let _ = reply.send_bytes(reply_bytes);
            }
            ServerMsg::Pipe(pipe) => {
                let (port, _end, reply, _) = *pipe;
                let _ = reply.send(Err(CoreError::NoSuchPort {
                    name: st.name.clone(),
                    port,
                }));
            }
            ServerMsg::Cast(..) | ServerMsg::Casts(..) | ServerMsg::Down(_) => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ServerMsg<NoValue>>,
        evt: SupervisionEvent,
        st: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            // A killed child did not exit normally (OTP's `killed`).
            SupervisionEvent::ActorTerminated(cell, _, reason) => match reason.as_deref() {
                Some(r @ ("killed" | "actor_task_cancelled")) => (cell, Some(r.to_owned())),
                _ => (cell, None),
            },
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        // Match by actor id: events from children we stopped ourselves (or
        // from earlier incarnations) find no slot and are ignored.
        let Some(i) = st
            .children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|c| c.get_id() == cell.get_id()))
        else {
            return Ok(());
        };
        let Some(child) = st.children.get_mut(i) else {
            return Ok(());
        };
        child.cell = None;
        let id = child.spec.id.clone();
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => failure.is_some(),
            Restart::Temporary => false,
        };
        if child.spec.restart == Restart::Temporary {
            child.gone = true;
        }
        st.set_running(i, false, false);
        match &failure {
            Some(why) => tracing::warn!(supervisor = %st.name, child = %id, %why, "child failed"),
            None => tracing::debug!(supervisor = %st.name, child = %id, "child exited normally"),
        }
        if !restart {
            return Ok(());
        }
        if let Err(reason) = st.note_restart() {
            let reason = format!("{reason} (last: child {id:?})");
            return Err(st.meltdown(reason).await);
        }
        let me = myself.get_cell();
        let restart_set: Vec<usize> = match st.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => {
                st.stop_from(0).await;
                (0..st.children.len()).collect()
            }
            Strategy::RestForOne => {
                st.stop_from(i + 1).await;
                (i..st.children.len()).collect()
            }
        };
        for j in restart_set {
            let Some(c) = st.children.get_mut(j) else {
                continue;
            };
            // A temporary sibling stopped by the strategy is gone for good.
            if j != i && c.spec.restart == Restart::Temporary {
                c.gone = true;
            }
            if c.gone {
                continue;
            }
            let child_id = c.spec.id.clone();
            if let Err(reason) = st.restart_child(j, &me).await {
                let reason = format!("{reason} (restarting child {child_id:?})");
                return Err(st.meltdown(reason).await);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ServerMsg<NoValue>>,
        st: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        st.stop_from(0).await;
        st.shared.set_outcome(Ok(()));
        st.shared.endpoint.ended(ExitReason::Normal);
        tracing::debug!(supervisor = %st.name, "supervisor stopped");
        Ok(())
    }
}
