//! Servers whose casts, calls and pipes are answered by C callbacks.
//!
//! Each server has its own thread: the endpoint (called by local callers
//! and by the node's link drivers) only queues jobs; the thread runs the
//! callbacks one at a time. So a callback may block, and no C code ever
//! runs inside the async runtime.

use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::{JoinHandle, ThreadId};

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::{Capabilities, Endpoint, Error as CoreError, PipeEnd, Registration};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tracing::warn;

use crate::error::{Error, OSCLOUD_OK, bytes_arg, guard, guard_void, panic_text, str_arg};
use crate::node::{OscloudNode, node_arg};
use crate::pipe::OscloudPipe;

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

/// The callbacks of a server. Start from `oscloud_server_callbacks_default()`
/// (every callback NULL) and set those you need. A server without
/// `on_call` answers calls with `OSCLOUD_ERR_REMOTE`; without `on_pipe` it
/// refuses pipes; without `on_cast` it ignores casts.
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
    }
}

/// The callbacks, sent to the server thread.
struct SendCallbacks(OscloudServerCallbacks);

// SAFETY: the C side promises (see the header) that `context` may be used
// from the server's thread; the function pointers are plain code pointers.
unsafe impl Send for SendCallbacks {}

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
    fn answer(&mut self, result: Result<Bytes, CoreError>) {
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
enum Job {
    Cast(Bytes),
    Call(Bytes, oneshot::Sender<Result<Bytes, CoreError>>),
    Pipe(String, PipeEnd, oneshot::Sender<Result<(), CoreError>>),
}

/// The kernel endpoint of a C server: queues jobs for its thread.
struct CEndpoint {
    name: String,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl fmt::Debug for CEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CEndpoint")
            .field("name", &self.name)
            .finish()
    }
}

impl CEndpoint {
    fn stopped(&self) -> CoreError {
        CoreError::ServerStopped {
            name: self.name.clone(),
            reason: "the C server was dropped".into(),
        }
    }

    fn post(&self, job: Job) -> Result<(), CoreError> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        match jobs.as_ref() {
            Some(tx) => tx.send(job).map_err(|_| self.stopped()),
            None => Err(self.stopped()),
        }
    }
}

#[async_trait]
impl Endpoint for CEndpoint {
    fn cast(&self, msg: Bytes) -> Result<(), CoreError> {
        self.post(Job::Cast(msg))
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.post(Job::Call(msg, tx))?;
        rx.await.map_err(|_| self.stopped())?
    }

    async fn open_pipe(&self, port: &str, end: PipeEnd) -> Result<(), CoreError> {
        let (tx, rx) = oneshot::channel();
        self.post(Job::Pipe(port.to_owned(), end, tx))?;
        rx.await.map_err(|_| self.stopped())?
    }
}

/// A registered server answered by C callbacks. Owned: drop it with
/// `oscloud_server_drop`, which unregisters it.
pub struct OscloudServer {
    endpoint: Arc<CEndpoint>,
    registration: Option<Registration>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

impl fmt::Debug for OscloudServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OscloudServer")
            .field("name", &self.endpoint.name)
            .finish()
    }
}

impl Drop for OscloudServer {
    fn drop(&mut self) {
        // Leave the registry, then close the queue: the thread handles what
        // is queued already, calls `on_drop` and ends.
        drop(self.registration.take());
        drop(
            self.endpoint
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
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

/// Run the server's callbacks until its queue closes.
fn serve(callbacks: SendCallbacks, jobs: mpsc::Receiver<Job>, rt: Weak<Runtime>, name: &str) {
    let cb = callbacks.0;
    while let Ok(job) = jobs.recv() {
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(&cb, job, &rt, name);
        }));
        if let Err(payload) = handled {
            warn!(
                server = name,
                "panic while handling a message: {}",
                panic_text(payload.as_ref())
            );
        }
    }
    if let Some(on_drop) = cb.on_drop {
        // SAFETY: the C side registered this callback for this context.
        let _ = std::panic::catch_unwind(|| unsafe { on_drop(cb.context) });
    }
}

fn handle(cb: &OscloudServerCallbacks, job: Job, rt: &Weak<Runtime>, name: &str) {
    match job {
        Job::Cast(msg) => {
            if let Some(on_cast) = cb.on_cast {
                // SAFETY: `msg` outlives the call; the callback was
                // registered for `context`.
                unsafe { on_cast(cb.context, msg.as_ptr(), msg.len()) };
            }
        }
        Job::Call(msg, tx) => {
            let mut reply = Box::new(OscloudReply {
                name: name.to_owned(),
                tx: Some(tx),
            });
            match cb.on_call {
                Some(on_call) => {
                    let raw = Box::into_raw(reply);
                    // SAFETY: as above; `raw` is moved to the callback.
                    unsafe { on_call(cb.context, msg.as_ptr(), msg.len(), raw) };
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

/// Register a server named `name` on `node`, answered by `callbacks`, and
/// store its handle in `*out`. Its callbacks run on a thread of its own
/// (named `oscloud-srv`), one at a time, in arrival order. The server is
/// reachable from this node and every linked node until it is dropped.
/// Fails with `OSCLOUD_ERR_NAME` if the name is taken or invalid.
///
/// # Safety
/// `node` is a live node; `name` a NUL-terminated string; `callbacks`
/// valid; `callbacks->context` usable from another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_server_register(
    node: *const OscloudNode,
    name: *const c_char,
    callbacks: *const OscloudServerCallbacks,
    out: *mut *mut OscloudServer,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        // SAFETY: per the contract.
        let cb = *unsafe { callbacks.as_ref() }.ok_or(Error::Null("callbacks"))?;
        if out.is_null() {
            return Err(Error::Null("out"));
        }
        let (tx, rx) = mpsc::channel();
        let endpoint = Arc::new(CEndpoint {
            name: name.to_owned(),
            jobs: Mutex::new(Some(tx)),
        });
        let registration =
            node.kernel
                .registry()
                .register(name, Capabilities::new(), endpoint.clone())?;
        let rt = Arc::downgrade(&node.rt);
        let thread_name = name.to_owned();
        let callbacks = SendCallbacks(cb);
        let thread = std::thread::Builder::new()
            .name("oscloud-srv".into())
            .spawn(move || serve(callbacks, rx, rt, &thread_name))
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let server = Box::new(OscloudServer {
            endpoint,
            registration: Some(registration),
            thread_id: thread.thread().id(),
            thread: Some(thread),
        });
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out = Box::into_raw(server) };
        Ok(OSCLOUD_OK)
    })
}

/// Unregister the server and free it; sets `*server` to NULL. Returns after
/// the callbacks of messages already queued, then `on_drop`, have run
/// (except when called from one of the server's own callbacks: then they
/// run after that callback returns). NULL or already dropped does nothing.
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
