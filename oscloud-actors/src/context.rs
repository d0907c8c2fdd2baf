//! What a server's handlers get besides their state: the kernel, the
//! server's name, monitors, lookups and owned tasks.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use oscloud_core::TraceContext;
use oscloud_core::access::Caller;
use oscloud_core::{ExitReason, Kernel, RegistryEvent};
use ractor::ActorCell;
use serde::Serialize;
use tokio::task::{AbortHandle, JoinSet};

use crate::server::{Down, Origin, ReplyTx, Shared};

/// Posts a [`Down`] into a server's mailbox.
pub(crate) type PostDown = Arc<dyn Fn(Down) + Send + Sync>;
use crate::{Error, ServerRef};

/// Identifies one monitor set up with [`Context::monitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MonitorRef(u64);

/// A server's view of the world, passed to every handler.
pub struct Context {
    kernel: Kernel,
    name: String,
    myself: ActorCell,
    /// Posts a [`Down`] into this server's mailbox.
    post_down: PostDown,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    monitors: HashMap<MonitorRef, Option<AbortHandle>>,
    next_monitor: u64,
    caller: Option<Caller>,
    trace: Option<TraceContext>,
    /// Where the reply of the call being handled goes, until
    /// [`Context::defer_reply`] takes it.
    reply: Option<ReplyTx>,
}

/// Where the reply to one call goes, taken out of the handler with
/// [`Context::defer_reply`]: answer it later, from any task, with
/// [`ReplyTo::send`] (OTP's `gen_server:reply`). Dropping it unanswered
/// makes the caller's call fail with
/// [`ServerStopped`](oscloud_core::Error::ServerStopped).
pub struct ReplyTo {
    server: String,
    tx: ReplyTx,
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("server", &self.server)
            .finish()
    }
}

impl ReplyTo {
    /// Answer the call with `reply` (encoded as MessagePack, as a handler's
    /// reply is). Returns false if the caller gave up already (it timed out
    /// or its link went down); the reply is then dropped.
    pub fn send<T: Serialize + ?Sized>(self, reply: &T) -> bool {
        self.tx.send_bytes(crate::server_ref::encode_core(reply))
    }

    /// Whether the caller gave up already (nobody would read a reply).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("tasks", &self.tasks.len())
            .field("monitors", &self.monitors.len())
            .finish()
    }
}

impl Context {
    pub(crate) fn new(
        kernel: Kernel,
        name: String,
        myself: ActorCell,
        post_down: PostDown,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            kernel,
            name,
            myself,
            post_down,
            shared,
            tasks: JoinSet::new(),
            monitors: HashMap::new(),
            next_monitor: 0,
            caller: None,
            trace: None,
            reply: None,
        }
    }

    pub(crate) fn set_reply(&mut self, reply: Option<ReplyTx>) {
        self.reply = reply;
    }

    pub(crate) fn take_reply(&mut self) -> Option<ReplyTx> {
        self.reply.take()
    }

    /// Take the reply of the call being handled, to answer it later with
    /// [`ReplyTo::send`] (from a task, once some other work is done): the
    /// server goes on with its next message meanwhile, and what
    /// [`Server::handle_call`](crate::Server::handle_call) returns is
    /// dropped. `None` outside `handle_call`, or when taken already.
    pub fn defer_reply(&mut self) -> Option<ReplyTo> {
        self.reply.take().map(|tx| ReplyTo {
            server: self.name.clone(),
            tx,
        })
    }

    /// The kernel the server runs on.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The node the message being handled came from, when it came over a
    /// link: its node id and, on encrypted links, its verified public key
    /// (`None` for local callers, and in `init`/`handle_down`). Use it for
    /// per-caller decisions beyond the node's access policy.
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// The trace the cast or call being handled belongs to (its caller's
    /// [`current_trace`](oscloud_core::trace::current_trace) when it was
    /// made, carried over links in the message, `docs/PROTOCOL.md` §4.2),
    /// or `None`: the caller was in no trace (and in `init`, `handle_pipe`
    /// and `handle_down`). The handler runs inside it, so the calls and
    /// casts it makes carry it on; a task that answers later
    /// ([`defer_reply`](Self::defer_reply)) and calls further passes it
    /// with [`with_trace`](oscloud_core::trace::with_trace). With a trace
    /// hook (OpenTelemetry) the parent is the span in which the receiving
    /// node delivered the message.
    pub fn trace(&self) -> Option<TraceContext> {
        self.trace
    }

    pub(crate) fn set_origin(&mut self, origin: &Origin) {
        self.caller = origin.caller();
        self.trace = origin.trace();
    }

    /// The server's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many casts and calls wait in the server's mailbox behind the
    /// message being handled. More than zero means another cast or call
    /// will be handled after this one (unless the server stops first): a handler may
    /// put work off until then, to do several messages' work at once.
    pub fn queued(&self) -> u64 {
        self.shared.mailbox.depth()
    }

    /// A reference to another server by name (fails with
    /// [`oscloud_core::Error::NotFound`] if nothing is registered under it).
    pub fn lookup(&self, name: &str) -> Result<ServerRef, Error> {
        ServerRef::lookup(&self.kernel, name)
    }

    /// Stop this server normally once the current handler returns (its
    /// registry entry leaves with [`ExitReason::Normal`]; a supervisor
    /// restarts it only if it is `Permanent`).
    pub fn stop(&self) {
        self.myself.stop(None);
    }

    /// Run `task` owned by the server: it is aborted when the server stops.
    pub fn spawn<F>(&mut self, task: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        while self.tasks.try_join_next().is_some() {}
        self.tasks.spawn(task)
    }

    /// Monitor the server registered as `name`: when its entry leaves the
    /// registry, [`Server::handle_down`](crate::Server::handle_down)
    /// receives a [`Down`] with the reason. A monitor fires once.
    ///
    /// If nothing is registered under `name` now, the `Down` comes at once
    /// with `entry: None` (see [`Down::is_noproc`]). For a group, the
    /// monitor covers the members registered now and fires when the first
    /// of them leaves.
    ///
    /// It works through the registry's watch, so it works the same for
    /// servers on other nodes.
    pub fn monitor(&mut self, name: &str) -> MonitorRef {
        let monitor = MonitorRef(self.next_monitor);
        self.next_monitor += 1;
        let registry = self.kernel.registry().clone();
        // Watch first, then look: a removal after `watch()` is in the stream.
        let mut watch = registry.watch();
        let present: HashSet<_> = registry.lookup_all(name).iter().map(|e| e.id()).collect();
        let post_down = self.post_down.clone();
        let name = name.to_owned();
        if present.is_empty() {
            self.monitors.insert(monitor, None);
            post_down(Down {
                name,
                entry: None,
                reason: ExitReason::Failed("noproc".to_owned()),
                monitor,
            });
            return monitor;
        }
        let task = self.spawn(async move {
            while let Some(event) = watch.next().await {
                if let RegistryEvent::Removed { entry, reason } = event
                    && present.contains(&entry.id())
                {
                    post_down(Down {
                        name,
                        entry: Some(entry.id()),
                        reason,
                        monitor,
                    });
                    return;
                }
            }
        });
        self.monitors.insert(monitor, Some(task));
        monitor
    }

    /// Stop a monitor: its `Down` will not be delivered (even if it already
    /// fired). Returns false if the monitor had already fired or was unknown.
    pub fn demonitor(&mut self, monitor: MonitorRef) -> bool {
        match self.monitors.remove(&monitor) {
            Some(task) => {
                if let Some(task) = task {
                    task.abort();
                }
                true
            }
            None => false,
        }
    }

    /// Consume a fired monitor; false if it was demonitored.
    pub(crate) fn take_monitor(&mut self, monitor: MonitorRef) -> bool {
        self.monitors.remove(&monitor).is_some()
    }

    /// Abort every owned task.
    pub(crate) fn shutdown(&mut self) {
        self.tasks.abort_all();
        self.monitors.clear();
    }
}
