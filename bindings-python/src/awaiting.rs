//! A handler's result, or the awaitable it returned run on the node's
//! event loop (`oscloud._awaiting`), converted where it becomes known.
//!
//! A server's handler is called on a runtime thread holding the GIL. If it
//! returns an awaitable (an `async def` handler's coroutine), one
//! `loop.call_soon_threadsafe` hands it to `oscloud._awaiting.start`, which
//! runs it as a task of the loop; the task's last step calls a [`Done`]
//! with the outcome, which converts it there (with the GIL the loop's
//! thread already holds: the reply's MessagePack value, say) and sends it
//! to the server waiting without the GIL. So the server's thread does not
//! take the GIL again to read the result.

use std::sync::Mutex;

use pyo3::exceptions::asyncio::CancelledError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3_async_runtimes::TaskLocals;
use tokio::sync::oneshot;

/// What to make of a handler's result (on the thread where it is known).
pub(crate) type Convert<R> = fn(&Bound<'_, PyAny>) -> R;

type Finish = Box<dyn for<'py> FnOnce(PyResult<Bound<'py, PyAny>>) + Send>;

/// The callable the awaitable's task calls once with `(result, None)` or
/// `(None, exception)`.
#[pyclass(module = "oscloud._native", frozen)]
pub(crate) struct Done(Mutex<Option<Finish>>);

#[pymethods]
impl Done {
    #[pyo3(signature = (result, error))]
    fn __call__(&self, result: Bound<'_, PyAny>, error: Option<Bound<'_, PyAny>>) {
        let finish = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(finish) = finish {
            finish(match error {
                Some(e) => Err(PyErr::from_value(e)),
                None => Ok(result),
            });
        }
    }
}

/// A handler's outcome: ready, or to come from the event loop.
pub(crate) enum Pending<R> {
    Ready(R),
    Waiting(oneshot::Receiver<PyResult<R>>),
}

impl<R> Pending<R> {
    /// The outcome, once the awaitable (if any) is done; `CancelledError`
    /// if the loop dropped its task unfinished (the loop was closed).
    pub(crate) async fn wait(self) -> PyResult<R> {
        match self {
            Pending::Ready(r) => Ok(r),
            Pending::Waiting(rx) => rx.await.unwrap_or_else(|_| {
                Err(CancelledError::new_err(
                    "the event loop dropped the handler's task before it finished",
                ))
            }),
        }
    }
}

/// `oscloud._awaiting.start`, imported once.
fn start_fn(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static START: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    START.import(py, "oscloud._awaiting", "start")
}

/// `result` converted now, or, if it is awaitable, run on the event loop
/// of `locals` and converted by the step that finishes it.
pub(crate) fn pending<R: Send + 'static>(
    locals: &TaskLocals,
    result: Bound<'_, PyAny>,
    convert: Convert<R>,
) -> PyResult<Pending<R>> {
    let py = result.py();
    // `None` first: most handlers of casts return it, and asking it for
    // `__await__` costs an AttributeError.
    if result.is_none() || !result.hasattr(pyo3::intern!(py, "__await__"))? {
        return Ok(Pending::Ready(convert(&result)));
    }
    let (tx, rx) = oneshot::channel();
    let done = Done(Mutex::new(Some(Box::new(move |outcome| {
        // The server may have given up waiting (it was stopped).
        let _ = tx.send(outcome.map(|r| convert(&r)));
    }))));
    let event_loop = locals.event_loop(py);
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item(pyo3::intern!(py, "context"), locals.context(py))?;
    event_loop.call_method(
        pyo3::intern!(py, "call_soon_threadsafe"),
        (start_fn(py)?, &event_loop, result, Bound::new(py, done)?),
        Some(&kwargs),
    )?;
    Ok(Pending::Waiting(rx))
}
