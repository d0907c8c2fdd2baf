//! The tokio runtime every node of the process runs on, and its orderly
//! shutdown before the interpreter finalises.
//!
//! Rust threads call into Python: each awaitable the API returns is
//! completed by a runtime thread calling `loop.call_soon_threadsafe`, and
//! Python servers' handlers run on runtime threads. Once CPython (up to
//! 3.13) starts finalising, a thread that takes the GIL is ended with
//! `pthread_exit`, which unwinds through the Rust frames in the middle of
//! their Python calls: Python objects are released without the GIL and the
//! thread state is released by a thread that no longer owns it (SIGSEGV or
//! SIGABRT at exit; CPython 3.14 blocks such a thread forever instead).
//! The completion races the end of `asyncio.run`, so even a script that
//! starts a node, stops it and returns is exposed.
//!
//! So the runtime is owned here rather than by `pyo3-async-runtimes`
//! (whose runtime lives in a static and is never shut down): it starts on
//! first use, and an `atexit` hook ([`shutdown`]) shuts it down while the
//! interpreter is still whole, with the GIL released so that the runtime
//! threads finish their Python calls, and waits until every runtime thread
//! has ended. After that no Rust thread of this module exists, so none can
//! touch Python during finalisation; the API then fails with
//! [`Error::Runtime`] instead of starting a new runtime.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;
use pyo3_async_runtimes::generic::{self, ContextExt, JoinError};
use tokio::runtime::{Builder, Handle};

use crate::Error;

/// The runtime's life: started on first use, shut down once for good.
#[derive(Debug)]
enum State {
    NotStarted,
    Running(tokio::runtime::Runtime),
    /// Given up for good, for the reason given.
    Gone(&'static str),
}

static STATE: Mutex<State> = Mutex::new(State::NotStarted);

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle to the runtime, started if it is not yet; an error once it is
/// shut down (the interpreter is exiting).
fn handle() -> Result<Handle, Error> {
    let mut state = state();
    match &*state {
        State::Running(rt) => Ok(rt.handle().clone()),
        State::Gone(why) => Err(Error::Runtime((*why).into())),
        State::NotStarted => {
            let rt = Builder::new_multi_thread()
                .enable_all()
                .thread_name("oscloud-runtime")
                .build()
                .map_err(|e| Error::Runtime(format!("it cannot start: {e}")))?;
            let handle = rt.handle().clone();
            *state = State::Running(rt);
            Ok(handle)
        }
    }
}

/// Shut the runtime down and wait for its threads to end. Registered with
/// `atexit` when the module is loaded: `atexit` hooks run before CPython
/// starts finalising, while runtime threads can still take the GIL to
/// finish what they are doing. Later uses of the API raise
/// `oscloud.Error`.
#[pyfunction]
pub(crate) fn shutdown(py: Python<'_>) {
    let previous = std::mem::replace(
        &mut *state(),
        State::Gone("it is shut down: the interpreter is exiting"),
    );
    if let State::Running(rt) = previous {
        // Dropping the runtime cancels its tasks and joins its threads,
        // blocking ones included; they may need the GIL to get there.
        py.detach(move || drop(rt));
    }
}

/// Give up the runtime in a child process made by `fork`. Registered with
/// `os.register_at_fork` when the module is loaded: only the thread that
/// forked exists in the child, so the runtime cannot run there, and
/// dropping it (at exit) would wait forever for its threads. The child
/// gets `oscloud.Error` if it uses the API. (A child forked before the
/// runtime started starts its own.)
#[pyfunction]
pub(crate) fn forget_in_child() {
    let mut state = state();
    if matches!(*state, State::Running(_)) {
        let previous = std::mem::replace(
            &mut *state,
            State::Gone("this process is a fork of the one it runs in"),
        );
        std::mem::forget(previous);
    }
}

/// Run `fut` on the runtime from Python code that is not async, without
/// holding the GIL while it runs.
pub(crate) fn block_on<F>(py: Python<'_>, fut: F) -> Result<F::Output, Error>
where
    F: Future + Send,
    F::Output: Send,
{
    let handle = handle()?;
    Ok(py.detach(move || handle.block_on(fut)))
}

/// The event loop (and context) of the calling coroutine: what handlers of
/// servers started now will run on.
pub(crate) fn current_locals(py: Python<'_>) -> PyResult<TaskLocals> {
    generic::get_current_locals::<Tokio>(py)
}

/// Run `fut` on the runtime and return an asyncio future of its result,
/// on the event loop of the calling coroutine.
///
/// One task runs `fut` and completes the asyncio future from the runtime
/// thread it ends on (taking the GIL there for the conversion and one
/// `loop.call_soon_threadsafe`), with no other task or thread in between.
/// Cancelling the asyncio future drops `fut`.
pub(crate) fn future_into_py<F, T>(py: Python<'_>, fut: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    // Fail here, with a clear error, rather than return a future that
    // nothing will ever complete.
    let spawner = match Handle::try_current() {
        Ok(current) => current,
        Err(_) => handle()?,
    };
    let locals = current_locals(py)?;
    let event_loop = locals.event_loop(py);
    let py_fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel();
    py_fut.call_method1(
        pyo3::intern!(py, "add_done_callback"),
        (OnCancel(Mutex::new(Some(cancel_tx))),),
    )?;
    let target = py_fut.clone().unbind();
    let event_loop = event_loop.unbind();
    spawner.spawn(LOCALS.scope(locals, async move {
        let result = tokio::select! {
            biased;
            result = fut => result,
            // Sent when the asyncio future is cancelled: nothing to
            // complete. (Dropped unsent when it completes.)
            Ok(()) = cancel_rx => return,
        };
        Python::attach(|py| {
            let outcome = result.and_then(|v| v.into_py_any(py));
            let complete = Complete {
                target,
                outcome: Mutex::new(Some(outcome)),
            };
            if let Err(e) = event_loop.bind(py).call_method1(
                pyo3::intern!(py, "call_soon_threadsafe"),
                (Bound::new(py, complete)?,),
            ) {
                // The loop is closed: no one awaits the future any more.
                tracing::debug!(error = %e, "awaitable not completed: its event loop is closed");
            }
            Ok::<_, PyErr>(())
        })
        .unwrap_or_else(|e| tracing::debug!(error = %e, "awaitable not completed"));
    }));
    Ok(py_fut)
}

/// The done-callback of an asyncio future made by [`future_into_py`]: on
/// cancellation, drops the Rust future that would complete it.
#[pyclass(module = "oscloud._native", frozen)]
struct OnCancel(Mutex<Option<tokio::sync::oneshot::Sender<()>>>);

#[pymethods]
impl OnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut
            .call_method0(pyo3::intern!(fut.py(), "cancelled"))?
            .is_truthy()?
            && let Some(tx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            let _ = tx.send(());
        }
        Ok(())
    }
}

/// Sets an asyncio future's result or exception on its loop's thread,
/// unless it was cancelled meanwhile.
#[pyclass(module = "oscloud._native", frozen)]
struct Complete {
    target: Py<PyAny>,
    outcome: Mutex<Option<PyResult<Py<PyAny>>>>,
}

#[pymethods]
impl Complete {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let target = self.target.bind(py);
        if target
            .call_method0(pyo3::intern!(py, "cancelled"))?
            .is_truthy()?
        {
            return Ok(());
        }
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match outcome {
            Some(Ok(value)) => {
                target.call_method1(pyo3::intern!(py, "set_result"), (value,))?;
            }
            Some(Err(e)) => {
                target.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),))?;
            }
            None => {}
        }
        Ok(())
    }
}

tokio::task_local! {
    /// The event loop of the coroutine that started the current task.
    static LOCALS: TaskLocals;
}

/// The runtime as `pyo3-async-runtimes` sees it.
struct Tokio;

/// How a task spawned through [`Tokio`] ended badly.
#[derive(Debug)]
enum TaskError {
    /// It panicked or was cancelled.
    Join(tokio::task::JoinError),
    /// It was never started: the runtime is shut down.
    NotStarted,
}

impl JoinError for TaskError {
    fn is_panic(&self) -> bool {
        matches!(self, TaskError::Join(e) if e.is_panic())
    }

    fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self {
            TaskError::Join(e) if e.is_panic() => e.into_panic(),
            other => Box::new(format!("{other:?}")),
        }
    }
}

/// A task spawned through [`Tokio`]; ends at once with
/// [`TaskError::NotStarted`] if the runtime was shut down.
struct Spawned(Option<tokio::task::JoinHandle<()>>);

impl Future for Spawned {
    type Output = Result<(), TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Some(task) => Pin::new(task).poll(cx).map_err(TaskError::Join),
            None => Poll::Ready(Err(TaskError::NotStarted)),
        }
    }
}

/// Where [`Tokio`] spawns: the runtime of the calling task if there is one
/// (without taking the state's lock, so that a fork never catches a
/// runtime thread holding it), else the runtime, if it is not shut down.
fn spawner() -> Option<Handle> {
    Handle::try_current().ok().or_else(|| handle().ok())
}

impl generic::Runtime for Tokio {
    type JoinError = TaskError;
    type JoinHandle = Spawned;

    fn spawn<F>(fut: F) -> Spawned
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Spawned(spawner().map(|h| h.spawn(fut)))
    }

    fn spawn_blocking<F>(f: F) -> Spawned
    where
        F: FnOnce() + Send + 'static,
    {
        Spawned(spawner().map(|h| h.spawn_blocking(f)))
    }
}

impl ContextExt for Tokio {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        Box::pin(LOCALS.scope(locals, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        LOCALS.try_with(TaskLocals::clone).ok()
    }
}
