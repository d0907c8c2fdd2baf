//! Servers: the [`Server`] trait, how one is started, and the actor that
//! runs it.
//!
//! A server is a [ractor] actor whose messages arrive as MessagePack bytes
//! through the kernel's [`Endpoint`]. The framework decodes them, calls the
//! matching handler, and encodes the reply. A [`TypedRef`](crate::TypedRef)
//! in the same process whose request (or reply) type is the server's
//! passes the value itself instead, boxed, with neither encoding nor
//! decoding (see [`Outgoing`](crate::Outgoing)).
//!
//! Failure semantics follow OTP's "let it crash":
//!
//! - an undecodable message is the *sender's* fault: a caller gets
//!   [`oscloud_core::Error::Decode`], a cast is logged and counted
//!   ([`ServerHandle::decode_errors`]), and the server keeps running;
//! - a handler returning `Err` or panicking is the *server's* fault: the
//!   server stops with that reason, its registry entry is removed with
//!   [`ExitReason::Failed`], pending callers get
//!   [`oscloud_core::Error::ServerStopped`], and its supervisor (if any)
//!   decides what happens next.
//!
//! Application-level errors belong in the `Reply` type.

use std::any::{Any, TypeId};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use oscloud_core::access::{Caller, current_caller};
use oscloud_core::endpoint::{Mailbox, ServerCounters, ServerStats};
use oscloud_core::trace::{TraceContext, current_trace, with_trace};
use oscloud_core::{
    Capabilities, Endpoint, EntryId, Error as CoreError, ExitReason, Kernel, PipeEnd,
    PortDirection, Registration,
};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::context::{Context, MonitorRef};
use crate::{Error, ServerRef};

/// The error a handler returns to make its server fail.
///
/// Any error type converts into it with `?`, and so does a string
/// (`Err("bad state".into())`).
pub type ServerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What [`Server::handle_pipe`] did with an offered pipe end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeOutcome {
    /// The server took the pipe end.
    Accepted,
    /// The server has no such port; the opener gets
    /// [`oscloud_core::Error::NoSuchPort`] and the server keeps running.
    NoSuchPort,
}

/// A monitored server left the registry (see [`Context::monitor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// The monitored name.
    pub name: String,
    /// The entry that left, or `None` when nothing was registered under the
    /// name when the monitor was set up (OTP's `noproc`).
    pub entry: Option<EntryId>,
    /// Why it left. For `noproc`, `ExitReason::Failed("noproc")`.
    pub reason: ExitReason,
    /// The monitor that fired.
    pub monitor: MonitorRef,
}

impl Down {
    /// True when the name was not registered when the monitor was set up.
    pub fn is_noproc(&self) -> bool {
        self.entry.is_none()
    }
}

/// A server: behaviour only. Its mutable state is built by
/// [`init`](Self::init) and handed to every handler.
///
/// Implement it with [`async_trait`](crate::async_trait):
///
/// ```
/// use oscloud_actors::{async_trait, Context, Server, ServerError};
///
/// struct Counter;
///
/// #[async_trait]
/// impl Server for Counter {
///     type Request = u64;   // add this much
///     type Reply = u64;     // the new total
///     type State = u64;
///
///     async fn init(&self, _ctx: &mut Context) -> Result<u64, ServerError> {
///         Ok(0)
///     }
///     async fn handle_call(&self, _ctx: &mut Context, total: &mut u64, n: u64)
///         -> Result<u64, ServerError> {
///         *total += n;
///         Ok(*total)
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), oscloud_actors::Error> {
/// let handle = oscloud_actors::start(&oscloud_core::Kernel::new(), "counter", Counter).await?;
/// # handle.stop().await; Ok(()) }
/// ```
#[async_trait]
pub trait Server: Send + Sync + 'static {
    /// What clients send (casts and calls), decoded from MessagePack.
    type Request: DeserializeOwned + Send + 'static;
    /// What calls return, encoded as MessagePack.
    type Reply: Serialize + Send + 'static;
    /// The server's mutable state.
    type State: Send + 'static;

    /// Build the state. Runs before the server is registered, so nobody can
    /// reach it yet. An error (or panic) means the server does not start.
    async fn init(&self, ctx: &mut Context) -> Result<Self::State, ServerError>;

    /// Handle a one-way message. The default ignores it (so a server that
    /// only takes calls need not write it).
    async fn handle_cast(
        &self,
        ctx: &mut Context,
        state: &mut Self::State,
        req: Self::Request,
    ) -> Result<(), ServerError> {
        let _ = (ctx, state, req);
        Ok(())
    }

    /// Handle a request and produce the reply. (A server that only takes
    /// casts can use `Reply = ()`.)
    async fn handle_call(
        &self,
        ctx: &mut Context,
        state: &mut Self::State,
        req: Self::Request,
    ) -> Result<Self::Reply, ServerError>;

    /// The pipe ports [`handle_pipe`](Self::handle_pipe) takes, and which
    /// way data flows on each. They are published in the server's registry
    /// entry ([`Capabilities::ports`]), so peers on other nodes and tools
    /// such as `oscloud ls` see them (`docs/PROTOCOL.md` §5.1). The default
    /// declares none.
    fn ports(&self) -> Vec<(String, PortDirection)> {
        Vec::new()
    }

    /// Take one end of a pipe offered on `port`. The default refuses every
    /// port with [`PipeOutcome::NoSuchPort`].
    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        state: &mut Self::State,
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        let _ = (ctx, state, port, end);
        Ok(PipeOutcome::NoSuchPort)
    }

    /// A monitored server left the registry. The default ignores it.
    async fn handle_down(
        &self,
        ctx: &mut Context,
        state: &mut Self::State,
        down: Down,
    ) -> Result<(), ServerError> {
        let _ = (ctx, state, down);
        Ok(())
    }
}

/// How a server registers itself: its name, capabilities and whether it
/// joins a group.
///
/// Converts from a name: `start(&kernel, "parser", Parser)`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub(crate) name: String,
    pub(crate) capabilities: Capabilities,
    pub(crate) group: bool,
}

impl ServerOptions {
    /// Register under `name`, with no capabilities, alone.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            capabilities: Capabilities::new(),
            group: false,
        }
    }

    /// Advertise these capabilities.
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Join (or found) the group `name` instead of taking the name alone:
    /// lookups then spread over the members round-robin.
    pub fn group(mut self) -> Self {
        self.group = true;
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl From<&str> for ServerOptions {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for ServerOptions {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// A pipe end offered on a port, and where to say whether it was taken.
pub(crate) type PipeOffer = (
    String,
    PipeEnd,
    oneshot::Sender<Result<(), CoreError>>,
    Option<Caller>,
);

/// Where a cast or call comes from: the remote node it came from
/// (`None`: local) and the trace it belongs to, as they were when it was
/// posted. Boxed when there is either, so that a local message outside
/// any trace stays small in the mailbox.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin(Option<Box<(Option<Caller>, Option<TraceContext>)>>);

impl Origin {
    fn current() -> Self {
        Self::new(current_caller(), current_trace())
    }

    pub(crate) fn new(caller: Option<Caller>, trace: Option<TraceContext>) -> Self {
        match (caller, trace) {
            (None, None) => Self(None),
            both => Self(Some(Box::new(both))),
        }
    }

    pub(crate) fn caller(&self) -> Option<Caller> {
        self.0.as_ref().and_then(|o| o.0)
    }

    pub(crate) fn trace(&self) -> Option<TraceContext> {
        self.0.as_ref().and_then(|o| o.1)
    }
}

/// A request or a reply: MessagePack bytes, or the value itself, between
/// a typed reference and a server in this process that agree on its type.
/// A request's value travels in the mailbox message itself; a reply's is
/// boxed (`T` is `Box<dyn Any + Send>`).
pub(crate) enum Payload<T = Box<dyn Any + Send>> {
    Bytes(Bytes),
    Value(T),
}

impl<T: DeserializeOwned> Payload<T> {
    /// The value in this payload, decoded if it is bytes.
    pub(crate) fn into_typed(self) -> Result<T, CoreError> {
        match self {
            Payload::Bytes(bytes) => {
                rmp_serde::from_slice(&bytes).map_err(|e| CoreError::Decode(e.to_string()))
            }
            Payload::Value(value) => Ok(value),
        }
    }
}

impl Payload {
    /// The value of type `T` in this payload, decoded if it is bytes.
    pub(crate) fn into_value<T: DeserializeOwned + 'static>(self) -> Result<T, CoreError> {
        match self {
            Payload::Bytes(bytes) => {
                rmp_serde::from_slice(&bytes).map_err(|e| CoreError::Decode(e.to_string()))
            }
            Payload::Value(value) => value.downcast::<T>().map(|v| *v).map_err(|_| {
                CoreError::Decode(format!("not a value of {}", std::any::type_name::<T>()))
            }),
        }
    }
}

/// Where the reply to one call goes, and whether the caller takes it as
/// a value (a typed reference in this process whose reply type is the
/// server's) or as bytes.
pub(crate) struct ReplyTx {
    tx: oneshot::Sender<Result<Payload, CoreError>>,
    value: bool,
}

impl ReplyTx {
    /// Answer with bytes, or with an error.
    pub(crate) fn send_bytes(self, reply: Result<Bytes, CoreError>) -> bool {
        self.tx.send(reply.map(Payload::Bytes)).is_ok()
    }

    /// Answer with `reply`: moved if the caller takes values, encoded
    /// otherwise.
    fn send_reply<T: Serialize + Send + 'static>(self, reply: T) -> bool {
        if self.value {
            self.tx.send(Ok(Payload::Value(Box::new(reply)))).is_ok()
        } else {
            self.send_bytes(crate::server_ref::encode_core(&reply))
        }
    }

    /// Whether the caller gave up already.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What goes into a server's (or supervisor's) mailbox; `T` is the
/// server's request type.
pub(crate) enum ServerMsg<T> {
    Cast(Payload<T>, Origin),
    /// Casts handed over together (`Endpoint::try_cast_batch`), handled
    /// in order as if each had come alone.
    Casts(Vec<Bytes>, Origin),
    Call(Payload<T>, Origin, ReplyTx),
    // Rare and large: boxed so the common messages stay small.
    Pipe(Box<PipeOffer>),
    Down(Box<Down>),
}

/// What the endpoint, the handle and the actor share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) stop_reason: OnceLock<String>,
    pub(crate) decode_errors: AtomicU64,
    /// Calls, casts, latency, mailbox depth, restarts (kept across the
    /// restarts of a supervised server).
    pub(crate) counters: Arc<ServerCounters>,
    /// Messages in this run's mailbox.
    pub(crate) mailbox: Mailbox,
    /// Held here rather than in the actor state so that whoever sees the
    /// actor end (the actor itself, or a supervisor that had to kill it)
    /// can remove the entry at once.
    registration: Mutex<Option<Registration>>,
}

impl Shared {
    pub(crate) fn new(name: String, counters: Arc<ServerCounters>) -> Arc<Self> {
        Arc::new(Self {
            name,
            stop_reason: OnceLock::new(),
            decode_errors: AtomicU64::new(0),
            counters,
            mailbox: Mailbox::default(),
            registration: Mutex::new(None),
        })
    }

    pub(crate) fn set_registration(&self, registration: Registration) {
        *self.registration.lock().unwrap_or_else(|e| e.into_inner()) = Some(registration);
    }

    /// Record why the server ended and leave the registry (once).
    pub(crate) fn ended(&self, reason: ExitReason) {
        let text = match &reason {
            ExitReason::Normal => "normal exit".to_owned(),
            ExitReason::Failed(why) | ExitReason::LinkDown(why) => why.clone(),
        };
        let _ = self.stop_reason.set(text);
        let registration = self
            .registration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(registration) = registration {
            registration.unregister(reason);
        }
    }

    /// The server's counters, with this run's mailbox.
    pub(crate) fn stats(&self) -> ServerStats {
        self.counters.stats(self.mailbox.depth())
    }

    pub(crate) fn stopped(&self) -> CoreError {
        CoreError::ServerStopped {
            name: self.name.clone(),
            reason: self
                .stop_reason
                .get()
                .cloned()
                .unwrap_or_else(|| "stopped".to_owned()),
        }
    }
}

/// The kernel endpoint of a local server: posts into its ractor mailbox.
/// `T` is the server's request type.
pub(crate) struct LocalEndpoint<T> {
    pub(crate) actor: ActorRef<ServerMsg<T>>,
    pub(crate) shared: Arc<Shared>,
    /// The server's reply type (`None`: it replies with bytes only).
    pub(crate) reply: Option<TypeId>,
}

impl<T: Send + 'static> LocalEndpoint<T> {
    /// The local server behind `entry`, if it is one of ours and takes
    /// requests of type `T`.
    pub(crate) fn of(entry: &oscloud_core::Entry) -> Option<&LocalEndpoint<T>> {
        entry.endpoint().as_any()?.downcast_ref()
    }

    /// Whether the server's replies are of type `R`.
    pub(crate) fn replies<R: 'static>(&self) -> bool {
        self.reply == Some(TypeId::of::<R>())
    }

    /// Post a cast; if the server has stopped, the payload comes back
    /// with the error.
    pub(crate) fn post_cast(&self, msg: Payload<T>) -> Result<(), (CoreError, Option<Payload<T>>)> {
        let counters = &self.shared.counters;
        self.shared.mailbox.put();
        match self.actor.cast(ServerMsg::Cast(msg, Origin::current())) {
            Ok(()) => {
                counters.cast();
                Ok(())
            }
            Err(e) => {
                self.shared.mailbox.taken();
                counters.error();
                let back = match e {
                    ractor::MessagingErr::SendErr(ServerMsg::Cast(msg, _)) => Some(msg),
                    _ => None,
                };
                Err((self.shared.stopped(), back))
            }
        }
    }

    /// Post a call and wait for its reply, as a value if `value` (and the
    /// server replies with one) or as bytes; its latency is counted from
    /// `started`.
    pub(crate) async fn post_call(
        &self,
        msg: Payload<T>,
        value: bool,
        started: Instant,
    ) -> Result<Payload, CoreError> {
        let counters = &self.shared.counters;
        let (tx, rx) = oneshot::channel();
        self.shared.mailbox.put();
        let posted = self.actor.cast(ServerMsg::Call(
            msg,
            Origin::current(),
            ReplyTx { tx, value },
        ));
        let r = match posted {
            Ok(()) => rx.await.map_err(|_| self.shared.stopped()).and_then(|r| r),
            Err(_) => {
                self.shared.mailbox.taken();
                Err(self.shared.stopped())
            }
        };
        counters.call(started.elapsed(), r.is_ok());
        r
    }
}

impl<T> fmt::Debug for LocalEndpoint<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalEndpoint")
            .field("name", &self.shared.name)
            .field("actor", &self.actor.get_id())
            .finish()
    }
}

#[async_trait]
impl<T: Send + 'static> Endpoint for LocalEndpoint<T> {
    fn try_cast(&self, msg: Bytes) -> Result<(), CoreError> {
        self.post_cast(Payload::Bytes(msg)).map_err(|(e, _)| e)
    }

    fn try_cast_batch(&self, msgs: Vec<Bytes>) -> Result<(), CoreError> {
        let n = msgs.len() as u64;
        let counters = &self.shared.counters;
        self.shared.mailbox.put_many(n);
        let r = self
            .actor
            .cast(ServerMsg::Casts(msgs, Origin::current()))
            .map_err(|_| self.shared.stopped());
        match r {
            Ok(()) => counters.casts(n),
            Err(_) => {
                self.shared.mailbox.taken_many(n);
                for _ in 0..n {
                    counters.error();
                }
            }
        }
        r
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, CoreError> {
        match self
            .post_call(Payload::Bytes(msg), false, Instant::now())
            .await?
        {
            Payload::Bytes(reply) => Ok(reply),
            // A server answers a bytes caller with bytes.
            Payload::Value(_) => Err(CoreError::Encode("a reply as a value".to_owned())),
        }
    }

    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), CoreError> {
        let (tx, rx) = oneshot::channel();
        self.actor
            .cast(ServerMsg::Pipe(Box::new((
                port.to_owned(),
                end,
                tx,
                current_caller(),
            ))))
            .map_err(|_| self.shared.stopped())?;
        rx.await.map_err(|_| self.shared.stopped())?
    }

    fn stats(&self) -> Option<ServerStats> {
        Some(self.shared.stats())
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// Register `endpoint` as described by `opts`.
pub(crate) fn register(
    kernel: &Kernel,
    opts: &ServerOptions,
    endpoint: Arc<dyn Endpoint>,
) -> Result<Registration, CoreError> {
    let registry = kernel.registry();
    if opts.group {
        registry.join_group(opts.name.clone(), opts.capabilities.clone(), endpoint)
    } else {
        registry.register(opts.name.clone(), opts.capabilities.clone(), endpoint)
    }
}

/// Run a handler future, turning a panic into an error.
async fn guarded<T>(fut: impl Future<Output = Result<T, ServerError>>) -> Result<T, ServerError> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            Err(format!("panicked: {what}").into())
        }
    }
}

/// [`guarded`], in the scope of the message's trace if it has one;
/// outside any trace the handler runs as it is (no task-local scope).
async fn guarded_in<T>(
    trace: Option<TraceContext>,
    fut: impl Future<Output = Result<T, ServerError>>,
) -> Result<T, ServerError> {
    match trace {
        None => guarded(fut).await,
        trace => guarded(with_trace(trace, fut)).await,
    }
}

/// Handle one cast: decode it (an undecodable one is counted and
/// dropped) and run the server's handler; a failing handler fails the
/// server.
async fn cast<S: Server>(
    server: &S,
    st: &mut Running<S>,
    msg: Payload<S::Request>,
    origin: &Origin,
) -> Result<(), ActorProcessingErr> {
    let Ok(req) = st.decode(msg) else {
        st.shared.counters.error();
        return Ok(());
    };
    let trace = origin.trace();
    st.ctx.set_origin(origin);
    let handled = server.handle_cast(&mut st.ctx, &mut st.state, req);
    let r = guarded_in(trace, handled).await;
    r.map_err(|e| {
        st.shared.counters.error();
        st.fail(e)
    })
}

pub(crate) struct ServerActor<S>(pub(crate) S);

pub(crate) struct ServerArgs {
    kernel: Kernel,
    opts: ServerOptions,
    shared: Arc<Shared>,
}

pub(crate) struct Running<S: Server> {
    ctx: Context,
    state: S::State,
    shared: Arc<Shared>,
}

impl<S: Server> Drop for Running<S> {
    fn drop(&mut self) {
        // Only reached with the entry still registered if the actor was
        // killed (failure and normal stop unregister first).
        self.shared.ended(ExitReason::Failed("killed".to_owned()));
    }
}

impl<S: Server> Running<S> {
    /// The server failed: record why, leave the registry, let ractor stop it.
    fn fail(&mut self, err: ServerError) -> ActorProcessingErr {
        let reason = err.to_string();
        tracing::warn!(server = %self.shared.name, %reason, "server failed");
        // Leave the registry first, then let go of the owned tasks: whoever
        // sees one of the server's pipes end can then already tell that it
        // failed.
        self.shared.ended(ExitReason::Failed(reason));
        self.ctx.shutdown();
        err
    }

    fn decode(&self, msg: Payload<S::Request>) -> Result<S::Request, CoreError> {
        msg.into_typed().map_err(|e| {
            self.shared.decode_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(server = %self.shared.name, error = %e, "undecodable message");
            CoreError::Decode(e.to_string())
        })
    }
}

impl<S: Server> Actor for ServerActor<S> {
    type Msg = ServerMsg<S::Request>;
    type State = Running<S>;
    type Arguments = ServerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ServerMsg<S::Request>>,
        args: ServerArgs,
    ) -> Result<Running<S>, ActorProcessingErr> {
        let ServerArgs {
            kernel,
            mut opts,
            shared,
        } = args;
        opts.capabilities.ports.extend(self.0.ports());
        let down_to = myself.clone();
        let post_down = Arc::new(move |down: Down| {
            let _ = down_to.cast(ServerMsg::Down(Box::new(down)));
        });
        let mut ctx = Context::new(
            kernel.clone(),
            opts.name.clone(),
            myself.get_cell(),
            post_down,
            shared.clone(),
        );
        let state = guarded(self.0.init(&mut ctx)).await?;
        let endpoint = Arc::new(LocalEndpoint {
            actor: myself,
            shared: shared.clone(),
            reply: Some(TypeId::of::<S::Reply>()),
        });
        shared.set_registration(register(&kernel, &opts, endpoint)?);
        tracing::debug!(server = %opts.name, "server started");
        Ok(Running { ctx, state, shared })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ServerMsg<S::Request>>,
        msg: ServerMsg<S::Request>,
        st: &mut Running<S>,
    ) -> Result<(), ActorProcessingErr> {
        let server = &self.0;
        if matches!(msg, ServerMsg::Cast(..) | ServerMsg::Call(..)) {
            st.shared.mailbox.taken();
        }
        match msg {
            ServerMsg::Cast(msg, origin) => cast(server, st, msg, &origin).await,
            ServerMsg::Casts(batch, origin) => {
                for bytes in batch {
                    st.shared.mailbox.taken();
                    // A failed handler stops the server: the rest of the
                    // batch goes with its mailbox.
                    cast(server, st, Payload::Bytes(bytes), &origin).await?;
                }
                Ok(())
            }
            ServerMsg::Call(msg, origin, reply) => {
                let req = match st.decode(msg) {
                    Ok(req) => req,
                    Err(e) => {
                        let _ = reply.send_bytes(Err(e));
                        return Ok(());
                    }
                };
                let trace = origin.trace();
                st.ctx.set_origin(&origin);
                st.ctx.set_reply(Some(reply));
                let handled = server.handle_call(&mut st.ctx, &mut st.state, req);
                let r = guarded_in(trace, handled).await;
                // `None`: the handler deferred the reply (Context::defer_reply).
                let reply = st.ctx.take_reply();
                match r {
                    Ok(rep) => {
                        if let Some(reply) = reply {
                            let _ = reply.send_reply(rep);
                        }
                        Ok(())
                    }
                    // `reply` is dropped after `fail` recorded the reason.
                    Err(e) => Err(st.fail(e)),
                }
            }
            ServerMsg::Pipe(pipe) => {
                let (port, end, reply, caller) = *pipe;
                st.ctx.set_origin(&Origin::new(caller, None));
                let r = guarded(server.handle_pipe(&mut st.ctx, &mut st.state, port.clone(), end))
                    .await;
                match r {
                    Ok(PipeOutcome::Accepted) => {
                        let _ = reply.send(Ok(()));
                        Ok(())
                    }
                    Ok(PipeOutcome::NoSuchPort) => {
                        let _ = reply.send(Err(CoreError::NoSuchPort {
                            name: st.shared.name.clone(),
                            port,
                        }));
                        Ok(())
                    }
                    Err(e) => Err(st.fail(e)),
                }
            }
            ServerMsg::Down(down) => {
                let down = *down;
                st.ctx.set_origin(&Origin::default());
                if !st.ctx.take_monitor(down.monitor) {
                    return Ok(()); // demonitored meanwhile
                }
                let r = guarded(server.handle_down(&mut st.ctx, &mut st.state, down)).await;
                r.map_err(|e| st.fail(e))
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ServerMsg<S::Request>>,
        st: &mut Running<S>,
    ) -> Result<(), ActorProcessingErr> {
        st.ctx.shutdown();
        st.shared.ended(ExitReason::Normal);
        tracing::debug!(server = %st.shared.name, "server stopped");
        Ok(())
    }
}

pub(crate) fn spawn_err(name: &str, e: SpawnErr) -> Error {
    let reason = match e {
        SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    };
    Error::StartFailed {
        name: name.to_owned(),
        reason,
    }
}

/// Start `server`, linked to `parent` if given.
pub(crate) async fn spawn_server<S: Server>(
    kernel: &Kernel,
    opts: ServerOptions,
    server: S,
    parent: Option<ActorCell>,
    counters: Arc<ServerCounters>,
) -> Result<ServerHandle, Error> {
    let name = opts.name.clone();
    let shared = Shared::new(name.clone(), counters);
    let args = ServerArgs {
        kernel: kernel.clone(),
        opts,
        shared: shared.clone(),
    };
    let actor = ServerActor(server);
    let spawned = match parent {
        Some(parent) => Actor::spawn_linked(None, actor, args, parent).await,
        None => Actor::spawn(None, actor, args).await,
    };
    let (actor, _join) = spawned.map_err(|e| spawn_err(&name, e))?;
    shared.counters.started();
    Ok(ServerHandle {
        kernel: kernel.clone(),
        actor: actor.get_cell(),
        shared,
    })
}

/// Start `server` on `kernel`, unsupervised, registered as `options` says.
///
/// Returns once [`Server::init`] succeeded and the server is registered;
/// fails with [`Error::StartFailed`] otherwise (including when the name is
/// taken). To have it restarted when it fails, start it under a
/// [`Supervisor`](crate::Supervisor) instead.
pub async fn start<S: Server>(
    kernel: &Kernel,
    options: impl Into<ServerOptions>,
    server: S,
) -> Result<ServerHandle, Error> {
    spawn_server(kernel, options.into(), server, None, Arc::default()).await
}

/// A running server started with [`start`]. Dropping the handle does not
/// stop the server.
pub struct ServerHandle {
    kernel: Kernel,
    pub(crate) actor: ActorCell,
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("name", &self.shared.name)
            .field("actor", &self.actor.get_id())
            .finish()
    }
}

impl ServerHandle {
    /// The server's registered name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A reference to the server by name (see [`ServerRef`]).
    pub fn server_ref(&self) -> ServerRef {
        ServerRef::new(&self.kernel, &self.shared.name)
    }

    /// How many undecodable messages the server received and dropped.
    pub fn decode_errors(&self) -> u64 {
        self.shared.decode_errors.load(Ordering::Relaxed)
    }

    /// The server's counters now (calls, casts, errors, latency, mailbox
    /// depth), as metrics exporters read them through the registry.
    pub fn stats(&self) -> ServerStats {
        self.shared.stats()
    }

    /// Why the server stopped, once it has (`"normal exit"` or the failure).
    pub fn stop_reason(&self) -> Option<String> {
        self.shared.stop_reason.get().cloned()
    }

    /// Stop the server after the message it is handling, and wait until it
    /// has left the registry.
    pub async fn stop(&self) {
        let _ = self.actor.stop_and_wait(None, None).await;
    }

    /// Wait until the server has stopped, for whatever reason.
    pub async fn wait(&self) {
        let _ = self.actor.wait(None).await;
    }
}
