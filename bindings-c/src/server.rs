//! Servers whose casts, calls and pipes are answered by C callbacks.
//!
//! Each server has its own thread: the endpoint (called by local callers
//! and by the node's link drivers) only queues jobs, up to the server's
//! mailbox bound; the thread runs the callbacks one at a time. So a
//! callback may block, and no C code ever runs inside the async runtime.
//!
//! A server runs in *incarnations*, as a Rust server restarted by its
//! supervisor does: `on_init`, a registry entry of its own, the callbacks,
//! then `on_stop` when it fails (a callback called `oscloud_server_fail`)
//! or its supervisor stops it. Unsupervised, a failed server stays down;
//! supervised, its supervisor (`supervisor.rs`) starts the next
//! incarnation per its strategy.

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::TraceContext;
use oscloud_core::endpoint::{ServerCounters, ServerStats};
use oscloud_core::trace::current_trace;
use oscloud_core::{
    Capabilities, Endpoint, Error as CoreError, ExitReason, Kernel, PipeEnd, Registration,
};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tracing::warn;

use crate::error::{Error, OSCLOUD_OK, bytes_arg, guard, guard_void, panic_text, str_arg};
use crate::node::{OscloudNode, node_arg};
use crate::pipe::OscloudPipe;
use crate::supervisor::{Failure, OscloudSupervisor, SupCore};

/// Called for each one-way message: `data[0..len]` is loaned (valid until
/// the callback returns).
pub type OscloudCastFn =
    Option<unsafe extern "C" fn(context: *mut c_void, data: *const u8, len: usize)>;

/// Called for each request: `data[0..len]` is loaned; `reply` is *moved* to
/// the callback, which must eventually pass `&reply` to `oscloud_reply_send`,
/// `oscloud_reply_error` or `oscloud_reply_drop` — now, or later from any
/// thread.
pub type OscloudCallFn = Option<
    unsafe extern "C" fn(
        context: *mut c_void,
        data: *const u8,
        len: usize,
        reply: *mut OscloudReply,
    ),
>;

/// Called when a client opens a pipe to port `port` (loaned). To accept,
/// take the pipe (copy `*pipe` and set `*pipe = NULL`; it is then yours to
/// drop) and return 0. Any other return value refuses the pipe: the opener
/// gets `OSCLOUD_ERR_NO_SUCH_PORT`. A pipe left in `*pipe` is dropped by
/// the library.
pub type OscloudPipeFn = Option<
    unsafe extern "C" fn(
        context: *mut c_void,
        port: *const c_char,
        pipe: *mut *mut OscloudPipe,
    ) -> c_int,
>;

/// Called once, after the last other callback, when the server is dropped:
/// free `context` here.
pub type OscloudDropFn = Option<unsafe extern "C" fn(context: *mut c_void)>;

/// Called on the server's thread before each incarnation of the server
/// (before it is registered, and again on every restart): set up the
/// state in `context`. Return 0 to start; any other value means the start
/// failed (registering fails; a restart counts as failed).
pub type OscloudInitFn = Option<unsafe extern "C" fn(context: *mut c_void) -> c_int>;

/// Called on the server's thread when an incarnation ends (the server
/// failed, or its supervisor stops it, or it is dropped): release what
/// `on_init` set up. `on_drop` still comes once, after the last `on_stop`.
pub type OscloudStopFn = Option<unsafe extern "C" fn(context: *mut c_void)>;

/// The callbacks of a server. Start from `oscloud_server_callbacks_default()`
/// (every callback NULL) and set those you need. A server without
/// `on_call` answers calls with `OSCLOUD_ERR_REMOTE`; without `on_pipe` it
/// refuses pipes; without `on_cast` it ignores casts; without `on_init`
/// and `on_stop` a restart only gives it a new registry entry.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OscloudServerCallbacks {
    /// Passed to every callback as is.
    pub context: *mut c_void,
    /// One-way messages.
    pub on_cast: OscloudCastFn,
    /// Requests.
    pub on_call: OscloudCallFn,
    /// Pipes opened to the server.
    pub on_pipe: OscloudPipeFn,
    /// The server is gone.
    pub on_drop: OscloudDropFn,
    /// An incarnation starts (see `oscloud_init_fn`).
    pub on_init: OscloudInitFn,
    /// An incarnation ends (see `oscloud_stop_fn`).
    pub on_stop: OscloudStopFn,
}

/// Callbacks with every field NULL.
#[unsafe(no_mangle)]
pub extern "C" fn oscloud_server_callbacks_default() -> OscloudServerCallbacks {
    OscloudServerCallbacks {
        context: std::ptr::null_mut(),
        on_cast: None,
        on_call: None,
        on_pipe: None,
        on_drop: None,
        on_init: None,
        on_stop: None,
    }
}

/// The mailbox bound of `oscloud_server_options_default()`.
pub const OSCLOUD_DEFAULT_MAILBOX: usize = 1024;

/// How a server is registered. Start from `oscloud_server_options_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OscloudServerOptions {
    /// The most messages (casts, calls and pipe offers) that may wait for
    /// the callbacks; one more is refused at once with `OSCLOUD_ERR_BUSY`
    /// (a cast from another node is dropped). 0 means
    /// `OSCLOUD_DEFAULT_MAILBOX`.
    pub mailbox: usize,
    /// The supervisor that restarts the server when it fails (loaned: the
    /// server keeps its own reference), or NULL for none: a failed server
    /// then stays down.
    pub supervisor: *const OscloudSupervisor,
}

/// Options with a mailbox of `OSCLOUD_DEFAULT_MAILBOX` and no supervisor.
#[unsafe(no_mangle)]
pub extern "C" fn oscloud_server_options_default() -> OscloudServerOptions {
    OscloudServerOptions {
        mailbox: OSCLOUD_DEFAULT_MAILBOX,
        supervisor: std::ptr::null(),
    }
}

/// The pending answer to one call. Owned by whoever must answer: drop it
/// (or send through it) exactly once; `oscloud_reply_*` take `&reply` and
/// set it to NULL.
pub struct OscloudReply {
    name: String,
    tx: Option<oneshot::Sender<Result<Bytes, CoreError>>>,
}

impl fmt::Debug for OscloudReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OscloudReply")
            .field("name", &self.name)
            .field("answered", &self.tx.is_none())
            .finish()
    }
}

impl OscloudReply {
    pub(crate) fn answer(&mut self, result: Result<Bytes, CoreError>) {
        if let Some(tx) = self.tx.take() {
            // The caller may have given up (timeout): nothing to do then.
            let _ = tx.send(result);
        }
    }
}

impl Drop for OscloudReply {
    fn drop(&mut self) {
        let name = self.name.clone();
        self.answer(Err(CoreError::Remote {
            name,
            message: "the server dropped the call without replying".into(),
        }));
    }
}

/// One unit of work for the server thread.
/// Casts and calls carry the trace context they were made in.
enum Job {
    Cast(Bytes, Option<TraceContext>),
    Call(
        Bytes,
        Option<TraceContext>,
        oneshot::Sender<Result<Bytes, CoreError>>,
    ),
    Pipe(String, PipeEnd, oneshot::Sender<Result<(), CoreError>>),
}

/// What a supervisor asks of a server's thread. Queued behind the jobs
/// already waiting, and not counted against the mailbox bound.
pub(crate) enum Control {
    /// End the running incarnation (after the jobs queued before this),
    /// then answer.
    Stop(mpsc::Sender<()>),
    /// Start an incarnation unless one runs; answer with its number, or
    /// with why it could not start.
    Start(mpsc::Sender<Result<u64, String>>),
}

enum Msg {
    Job(Job),
    Control(Control),
}

/// A server's queue, shared by its endpoints, its handle, its thread and
/// its supervisor.
pub(crate) struct Inbox {
    name: String,
    /// `None` once the server is dropped.
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    /// Jobs queued and not yet taken by the thread.
    queued: AtomicUsize,
    limit: usize,
    /// Calls, casts, errors, latency and restarts, across incarnations
    /// (what metrics exporters read through the registry entry).
    counters: ServerCounters,
}

impl Inbox {
    fn sender(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<Msg>>> {
        self.tx.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dropped(&self) -> CoreError {
        CoreError::ServerStopped {
            name: self.name.clone(),
            reason: "the C server was dropped".into(),
        }
    }

    /// Queue a job, unless the mailbox is full.
    fn post(&self, job: Job) -> Result<(), CoreError> {
        let tx = self.sender();
        let Some(tx) = tx.as_ref() else {
            return Err(self.dropped());
        };
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(CoreError::ServerBusy {
                name: self.name.clone(),
                limit: self.limit,
            });
        }
        tx.send(Msg::Job(job)).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped()
        })
    }

    /// Queue a request of the supervisor; false once the server is gone.
    pub(crate) fn control(&self, control: Control) -> bool {
        self.sender()
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Control(control)).is_ok())
    }
}

/// The kernel endpoint of one incarnation of a C server: queues jobs for
/// its thread until the incarnation ends.
struct CEndpoint {
    inbox: Arc<Inbox>,
    /// Why the incarnation ended, once it has.
    ended: OnceLock<String>,
}

impl fmt::Debug for CEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CEndpoint")
            .field("name", &self.inbox.name)
            .finish()
    }
}

impl CEndpoint {
    fn stopped(&self) -> CoreError {
        match self.ended.get() {
            Some(reason) => CoreError::ServerStopped {
                name: self.inbox.name.clone(),
                reason: reason.clone(),
            },
            None => self.inbox.dropped(),
        }
    }

    fn post(&self, job: Job) -> Result<(), CoreError> {
        if self.ended.get().is_some() {
            return Err(self.stopped());
        }
        self.inbox.post(job)
    }
}

#[async_trait]
impl Endpoint for CEndpoint {
    fn try_cast(&self, msg: Bytes) -> Result<(), CoreError> {
        let r = self.post(Job::Cast(msg, current_trace()));
        match r {
            Ok(()) => self.inbox.counters.cast(),
            Err(_) => self.inbox.counters.error(),
        }
        r
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, CoreError> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let r = match self.post(Job::Call(msg, current_trace(), tx)) {
            Ok(()) => rx.await.map_err(|_| self.stopped()).and_then(|r| r),
            Err(e) => Err(e),
        };
        self.inbox.counters.call(started.elapsed(), r.is_ok());
        r
    }

    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), CoreError> {
        let (tx, rx) = oneshot::channel();
        self.post(Job::Pipe(port.to_owned(), end, tx))?;
        rx.await.map_err(|_| self.stopped())?
    }

    fn stats(&self) -> Option<ServerStats> {
        let queued = self.inbox.queued.load(Ordering::Relaxed);
        Some(self.inbox.counters.stats(queued as u64))
    }
}

/// The registry entry of the running incarnation, shared by the thread and
/// the handle (which removes it first when the server is dropped).
type Entry = Arc<Mutex<Option<Registration>>>;

/// A registered server answered by C callbacks. Owned: drop it with
/// `oscloud_server_drop`, which unregisters it.
pub struct OscloudServer {
    inbox: Arc<Inbox>,
    entry: Entry,
    supervisor: Option<(Arc<SupCore>, u64)>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

impl fmt::Debug for OscloudServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OscloudServer")
            .field("name", &self.inbox.name)
            .finish()
    }
}

impl Drop for OscloudServer {
    fn drop(&mut self) {
        // Leave the supervisor and the registry, then close the queue: the
        // thread handles what is queued already, calls `on_stop` and
        // `on_drop`, and ends.
        if let Some((sup, id)) = self.supervisor.take() {
            sup.remove(id);
        }
        drop(
            self.entry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        drop(self.inbox.sender().take());
        if let Some(thread) = self.thread.take() {
            if std::thread::current().id() == self.thread_id {
                // Dropped from one of its own callbacks: the thread ends by
                // itself once that callback returns.
                return;
            }
            let _ = thread.join();
        }
    }
}

thread_local! {
    /// On a server's thread during `on_cast`, `on_call` or `on_pipe`: the
    /// failure reported by `oscloud_server_fail`, if any.
    static FAILURE: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
    /// Whether this thread is a server's.
    static SERVER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread runs a server's callbacks.
pub(crate) fn on_server_thread() -> bool {
    SERVER_THREAD.with(std::cell::Cell::get)
}

/// A server's thread: its callbacks, and the incarnation running.
struct Life {
    cb: OscloudServerCallbacks,
    kernel: Kernel,
    rt: Weak<Runtime>,
    inbox: Arc<Inbox>,
    entry: Entry,
    supervisor: Option<(Arc<SupCore>, u64)>,
    /// The number of the latest incarnation (1 for the first).
    incarnation: u64,
    running: Option<Arc<CEndpoint>>,
    /// Why the last incarnation ended.
    last_end: String,
}

// SAFETY: the C side promises (see the header) that `context` may be used
// from the server's thread; the function pointers are plain code pointers.
unsafe impl Send for Life {}

impl Life {
    fn name(&self) -> &str {
        &self.inbox.name
    }

    /// Start an incarnation: `on_init`, then a registry entry.
    fn start(&mut self) -> Result<(), Error> {
        if let Some(on_init) = self.cb.on_init {
            let ctx = self.cb.context;
            // SAFETY: the C side registered this callback for this context.
            let rc = std::panic::catch_unwind(|| unsafe { on_init(ctx) }).unwrap_or(-1);
            if rc != 0 {
                return Err(Error::ServerInit(rc));
            }
        }
        let endpoint = Arc::new(CEndpoint {
            inbox: self.inbox.clone(),
            ended: OnceLock::new(),
        });
        match self
            .kernel
            .registry()
            .register(self.name(), Capabilities::new(), endpoint.clone())
        {
            Ok(reg) => {
                *self.entry.lock().unwrap_or_else(PoisonError::into_inner) = Some(reg);
                self.incarnation += 1;
                self.inbox.counters.started();
                self.running = Some(endpoint);
                Ok(())
            }
            Err(err) => {
                self.on_stop();
                Err(err.into())
            }
        }
    }

    fn on_stop(&self) {
        if let Some(on_stop) = self.cb.on_stop {
            let ctx = self.cb.context;
            // SAFETY: the C side registered this callback for this context.
            let _ = std::panic::catch_unwind(|| unsafe { on_stop(ctx) });
        }
    }

    /// End the running incarnation, if any: its entry leaves the registry
    /// with `reason`, then `on_stop`.
    fn stop(&mut self, reason: ExitReason) {
        let Some(endpoint) = self.running.take() else {
            return;
        };
        self.last_end = match &reason {
            ExitReason::Normal => "stopped".to_owned(),
            ExitReason::Failed(why) | ExitReason::LinkDown(why) => why.clone(),
        };
        let _ = endpoint.ended.set(self.last_end.clone());
        let entry = self
            .entry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(entry) = entry {
            entry.unregister(reason);
        }
        self.on_stop();
    }

    /// A callback reported failure: stop, and tell the supervisor.
    fn fail(&mut self, reason: String) {
        warn!(server = %self.name(), %reason, "C server failed");
        self.stop(ExitReason::Failed(reason.clone()));
        if let Some((sup, child)) = &self.supervisor {
            sup.report(Failure {
                child: *child,
                incarnation: self.incarnation,
                reason,
            });
        }
    }

    /// A job while no incarnation runs: refused as by a stopped server.
    fn refuse(&self, job: Job) {
        let stopped = || CoreError::ServerStopped {
            name: self.name().to_owned(),
            reason: self.last_end.clone(),
        };
        match job {
            Job::Cast(..) => {}
            Job::Call(_, _, tx) => {
                let _ = tx.send(Err(stopped()));
            }
            Job::Pipe(_, _, tx) => {
                let _ = tx.send(Err(stopped()));
            }
        }
    }

    /// Run the callback for `job`; the failure it reported, if any.
    fn run(&self, job: Job) -> Option<String> {
        FAILURE.with(|f| *f.borrow_mut() = Some(None));
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(&self.cb, job, &self.rt, self.name());
        }));
        if let Err(payload) = handled {
            warn!(
                server = %self.name(),
                "panic while handling a message: {}",
                panic_text(payload.as_ref())
            );
        }
        FAILURE.with(|f| f.borrow_mut().take()).flatten()
    }

    fn on_message(&mut self, msg: Msg) {
        match msg {
            Msg::Job(job) => {
                self.inbox.queued.fetch_sub(1, Ordering::AcqRel);
                if self.running.is_none() {
                    self.refuse(job);
                } else if let Some(reason) = self.run(job) {
                    self.fail(reason);
                }
            }
            Msg::Control(Control::Stop(done)) => {
                self.stop(ExitReason::Normal);
                let _ = done.send(());
            }
            Msg::Control(Control::Start(done)) => {
                let started = match self.running {
                    Some(_) => Ok(()),
                    None => self.start().map_err(|e| e.to_string()),
                };
                let _ = done.send(started.map(|()| self.incarnation));
            }
        }
    }
}

/// The server's thread: the first incarnation (reported on `first`), then
/// messages until the server is dropped.
fn serve(mut life: Life, jobs: mpsc::Receiver<Msg>, first: mpsc::Sender<Result<(), Error>>) {
    SERVER_THREAD.with(|t| t.set(true));
    let started = life.start();
    let ok = started.is_ok();
    let _ = first.send(started);
    if !ok {
        return; // the server never existed: no `on_drop`
    }
    while let Ok(msg) = jobs.recv() {
        life.on_message(msg);
    }
    life.stop(ExitReason::Normal);
    if let Some(on_drop) = life.cb.on_drop {
        let ctx = life.cb.context;
        // SAFETY: the C side registered this callback for this context.
        let _ = std::panic::catch_unwind(|| unsafe { on_drop(ctx) });
    }
}

fn handle(cb: &OscloudServerCallbacks, job: Job, rt: &Weak<Runtime>, name: &str) {
    match job {
        Job::Cast(msg, trace) => {
            if let Some(on_cast) = cb.on_cast {
                // SAFETY: `msg` outlives the call; the callback was
                // registered for `context`.
                crate::trace::with(trace, || unsafe {
                    on_cast(cb.context, msg.as_ptr(), msg.len())
                });
            }
        }
        Job::Call(msg, trace, tx) => {
            let mut reply = Box::new(OscloudReply {
                name: name.to_owned(),
                tx: Some(tx),
            });
            match cb.on_call {
                Some(on_call) => {
                    let raw = Box::into_raw(reply);
                    // SAFETY: as above; `raw` is moved to the callback.
                    crate::trace::with(trace, || unsafe {
                        on_call(cb.context, msg.as_ptr(), msg.len(), raw)
                    });
                }
                None => reply.answer(Err(CoreError::Remote {
                    name: name.to_owned(),
                    message: "the server takes no calls".into(),
                })),
            }
        }
        Job::Pipe(port, end, tx) => {
            let no_port = || CoreError::NoSuchPort {
                name: name.to_owned(),
                port: port.clone(),
            };
            let (Some(on_pipe), Some(rt), Ok(c_port)) =
                (cb.on_pipe, rt.upgrade(), CString::new(port.clone()))
            else {
                let _ = tx.send(Err(no_port()));
                return;
            };
            let mut raw = Box::into_raw(Box::new(OscloudPipe::new(end, rt)));
            // SAFETY: `c_port` and `raw` outlive the call; the callback
            // takes `raw` by setting it to NULL.
            let rc = unsafe { on_pipe(cb.context, c_port.as_ptr(), &mut raw) };
            if !raw.is_null() {
                // SAFETY: not taken by the callback: still ours.
                drop(unsafe { Box::from_raw(raw) });
            }
            let _ = tx.send(if rc == 0 { Ok(()) } else { Err(no_port()) });
        }
    }
}

/// Register a server named `name` on `node`, answered by `callbacks`, with
/// the default options (a mailbox of `OSCLOUD_DEFAULT_MAILBOX`, no
/// supervisor); see `oscloud_server_register_with`.
///
/// # Safety
/// As for `oscloud_server_register_with`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_server_register(
    node: *const OscloudNode,
    name: *const c_char,
    callbacks: *const OscloudServerCallbacks,
    out: *mut *mut OscloudServer,
) -> c_int {
    // SAFETY: per the contract.
    unsafe { oscloud_server_register_with(node, name, callbacks, std::ptr::null(), out) }
}

/// Register a server named `name` on `node`, answered by `callbacks`, as
/// `options` say (NULL: the defaults), and store its handle in `*out`. Its
/// callbacks run on a thread of its own (named `oscloud-srv`), one at a
/// time, in arrival order; `on_init` runs there first, and a non-zero
/// result fails the registration (`OSCLOUD_ERR_OTHER`). The server is
/// reachable from this node and every linked node until it is dropped,
/// or until it fails (a callback calls `oscloud_server_fail`): then its
/// entry leaves the registry, the messages waiting are refused
/// (`OSCLOUD_ERR_SERVER_STOPPED`), `on_stop` runs, and its supervisor, if
/// it has one, starts it again (`on_init`, a new entry) per its strategy.
/// Fails with `OSCLOUD_ERR_NAME` if the name is taken or invalid, and
/// with `OSCLOUD_ERR_SERVER_STOPPED` if the supervisor gave up already.
///
/// # Safety
/// `node` is a live node; `name` a NUL-terminated string; `callbacks`
/// valid; `callbacks->context` usable from another thread; `options` NULL
/// or valid, its `supervisor` NULL or a live supervisor.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_server_register_with(
    node: *const OscloudNode,
    name: *const c_char,
    callbacks: *const OscloudServerCallbacks,
    options: *const OscloudServerOptions,
    out: *mut *mut OscloudServer,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        // SAFETY: per the contract.
        let cb = *unsafe { callbacks.as_ref() }.ok_or(Error::Null("callbacks"))?;
        // SAFETY: per the contract.
        let options = unsafe { options.as_ref() }
            .copied()
            .unwrap_or_else(|| oscloud_server_options_default());
        if out.is_null() {
            return Err(Error::Null("out"));
        }
        // SAFETY: per the contract.
        let sup = unsafe { options.supervisor.as_ref() }.map(OscloudSupervisor::core);
        let (tx, rx) = mpsc::channel();
        let inbox = Arc::new(Inbox {
            name: name.to_owned(),
            tx: Mutex::new(Some(tx)),
            queued: AtomicUsize::new(0),
            counters: ServerCounters::default(),
            limit: match options.mailbox {
                0 => OSCLOUD_DEFAULT_MAILBOX,
                n => n,
            },
        });
        // A child from the start, so that a failure of its first
        // incarnation finds it.
        let supervisor = match sup {
            Some(sup) => {
                let id = sup.add(inbox.clone())?;
                Some((sup, id))
            }
            None => None,
        };
        let entry = Entry::default();
        let life = Life {
            cb,
            kernel: node.kernel.clone(),
            rt: Arc::downgrade(&node.rt),
            inbox: inbox.clone(),
            entry: entry.clone(),
            supervisor: supervisor.clone(),
            incarnation: 0,
            running: None,
            last_end: String::new(),
        };
        let (first_tx, first_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("oscloud-srv".into())
            .spawn(move || serve(life, rx, first_tx));
        let leave = || {
            if let Some((sup, id)) = &supervisor {
                sup.remove(*id);
            }
        };
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => {
                leave();
                return Err(Error::Runtime(e.to_string()));
            }
        };
        let started = first_rx
            .recv()
            .unwrap_or_else(|_| Err(Error::Runtime("the server thread ended".into())));
        if let Err(err) = started {
            leave();
            let _ = thread.join();
            return Err(err);
        }
        let server = Box::new(OscloudServer {
            inbox,
            entry,
            supervisor,
            thread_id: thread.thread().id(),
            thread: Some(thread),
        });
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out = Box::into_raw(server) };
        Ok(OSCLOUD_OK)
    })
}

/// Report, from inside `on_cast`, `on_call` or `on_pipe`, that the server
/// failed with `reason`. Once the callback returns, the server stops: its
/// entry leaves the registry (watchers see `reason`), the messages
/// waiting are refused, `on_stop` runs, and its supervisor, if any,
/// restarts it per its strategy. Fails with `OSCLOUD_ERR_INVALID` when
/// called anywhere else.
///
/// # Safety
/// `reason` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_server_fail(reason: *const c_char) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let reason = unsafe { str_arg(reason, "reason") }?.to_owned();
        FAILURE.with(|f| match f.borrow_mut().as_mut() {
            Some(slot) => {
                *slot = Some(reason);
                Ok(OSCLOUD_OK)
            }
            None => Err(Error::Invalid(
                "oscloud_server_fail is called from a server's on_cast, on_call or on_pipe".into(),
            )),
        })
    })
}

/// Unregister the server and free it; sets `*server` to NULL. Returns after
/// the callbacks of messages already queued, then `on_stop` and `on_drop`,
/// have run (except when called from one of the server's own callbacks:
/// then they run after that callback returns). NULL or already dropped
/// does nothing.
///
/// # Safety
/// `server` is NULL or points to NULL or to a server from this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_server_drop(server: *mut *mut OscloudServer) {
    guard_void(|| {
        if server.is_null() {
            return;
        }
        // SAFETY: non-NULL per the contract.
        let raw = unsafe { std::ptr::replace(server, std::ptr::null_mut()) };
        if !raw.is_null() {
            // SAFETY: came from `Box::into_raw` in `oscloud_server_register`.
            drop(unsafe { Box::from_raw(raw) });
        }
    });
}

/// Take the reply handle out of `*reply`, setting it to NULL.
///
/// # Safety
/// `reply` is NULL or points to NULL or to a reply from this library.
unsafe fn take_reply(reply: *mut *mut OscloudReply) -> Result<Box<OscloudReply>, Error> {
    if reply.is_null() {
        return Err(Error::Null("reply"));
    }
    // SAFETY: non-NULL per the contract.
    let raw = unsafe { std::ptr::replace(reply, std::ptr::null_mut()) };
    if raw.is_null() {
        return Err(Error::Null("*reply"));
    }
    // SAFETY: came from `Box::into_raw` in `handle`.
    Ok(unsafe { Box::from_raw(raw) })
}

/// Answer a call with `data[0..len]` (copied), from any thread, and free
/// the reply handle (sets `*reply` to NULL). If the caller gave up already
/// (timed out) the answer is discarded and this still returns `OSCLOUD_OK`.
///
/// # Safety
/// `reply` points to a reply handle from `on_call`; `data` valid for `len`
/// bytes (NULL if 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_reply_send(
    reply: *mut *mut OscloudReply,
    data: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let bytes = Bytes::copy_from_slice(unsafe { bytes_arg(data, len) }?);
        // SAFETY: per the contract.
        let mut r = unsafe { take_reply(reply) }?;
        r.answer(Ok(bytes));
        Ok(OSCLOUD_OK)
    })
}

/// Answer a call with an error: the caller gets `OSCLOUD_ERR_REMOTE` and
/// `message` in its last error. Frees the reply handle (sets `*reply` to
/// NULL).
///
/// # Safety
/// `reply` points to a reply handle from `on_call`; `message` is a
/// NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_reply_error(
    reply: *mut *mut OscloudReply,
    message: *const c_char,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let message = unsafe { str_arg(message, "message") }?.to_owned();
        // SAFETY: per the contract.
        let mut r = unsafe { take_reply(reply) }?;
        let name = r.name.clone();
        r.answer(Err(CoreError::Remote { name, message }));
        Ok(OSCLOUD_OK)
    })
}

/// Give up on a call without answering: the caller gets
/// `OSCLOUD_ERR_REMOTE`. Sets `*reply` to NULL; NULL or an already
/// answered handle does nothing.
///
/// # Safety
/// `reply` is NULL or points to NULL or to a reply handle from `on_call`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_reply_drop(reply: *mut *mut OscloudReply) {
    guard_void(|| {
        if reply.is_null() {
            return;
        }
        // SAFETY: per the contract.
        if let Ok(r) = unsafe { take_reply(reply) } {
            drop(r);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::ptr;

    use super::*;
    use crate::client::{oscloud_call, oscloud_cast};
    use crate::node::{oscloud_node_drop, oscloud_node_new};

    unsafe extern "C" fn echo(
        _ctx: *mut c_void,
        data: *const u8,
        len: usize,
        reply: *mut OscloudReply,
    ) {
        let mut reply = reply;
        unsafe { oscloud_reply_send(&mut reply, data, len) };
    }

    /// A C server's registry entry keeps the counters metrics exporters
    /// read, as a Rust or Python server's does.
    #[test]
    fn a_c_server_counts_calls_and_casts_in_its_entry() {
        let mut node = ptr::null_mut();
        assert_eq!(
            unsafe { oscloud_node_new(ptr::null(), &mut node) },
            OSCLOUD_OK
        );
        let mut cb = oscloud_server_callbacks_default();
        cb.on_call = Some(echo);
        let mut server = ptr::null_mut();
        assert_eq!(
            unsafe { oscloud_server_register(node, c"echo".as_ptr(), &cb, &mut server) },
            OSCLOUD_OK
        );
        for _ in 0..3 {
            let rc = unsafe {
                oscloud_call(
                    node,
                    c"echo".as_ptr(),
                    b"x".as_ptr(),
                    1,
                    5000,
                    ptr::null_mut(),
                )
            };
            assert_eq!(rc, OSCLOUD_OK);
        }
        for _ in 0..2 {
            let rc = unsafe { oscloud_cast(node, c"echo".as_ptr(), b"y".as_ptr(), 1) };
            assert_eq!(rc, OSCLOUD_OK);
        }
        // SAFETY: the node is alive until dropped below.
        let entry = unsafe { &*node }.kernel.registry().lookup("echo").unwrap();
        let stats = entry.endpoint().stats().unwrap();
        assert_eq!((stats.calls, stats.casts, stats.errors), (3, 2, 0));
        assert_eq!(stats.latency_buckets.iter().sum::<u64>(), 3);
        assert_eq!(stats.restarts, 0);
        unsafe { oscloud_server_drop(&mut server) };
        unsafe { oscloud_node_drop(&mut node) };
    }
}
