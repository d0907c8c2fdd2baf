//! Python servers: an `oscloud_actors::Server` whose handlers are Python
//! callables, run on the node's asyncio event loop.
//!
//! The actor (on the tokio runtime) decodes each message, then, holding
//! the GIL only for that, converts it to a Python value and calls the
//! handler. If the handler returns an awaitable, it is scheduled on the
//! event loop and the actor waits for it *without* the GIL. A handler that
//! raises makes the server fail with the reason `raised Type: message`
//! (callers get it as their error), and its supervisor restarts it.
//!
//! Casts are handed over in batches: while more casts or calls wait in
//! the mailbox behind a cast, the cast is kept, and the kept ones (up to
//! [`MAX_BATCH`]) are handed to the handler in order under one hold of the
//! GIL once none waits, or before the next call or pipe is handled: to
//! `handle_cast` one by one, or, if the class defines `handle_casts`, to it
//! as one list (one Python call per batch). So a cast handler that raises
//! can fail the server while a later call is handled, and that call fails
//! with the reason.

use std::sync::Arc;

use oscloud_actors::{Context, PipeOutcome, Server, ServerError, async_trait};
use oscloud_core::PipeEnd;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use pyo3_async_runtimes::TaskLocals;
use rmpv::Value;

use crate::awaiting::{Convert, Pending, pending};
use crate::error::RAISED;
use crate::pipe::PyPipe;
use crate::value::{from_value, to_value};

/// What a Python server is made of.
#[derive(Debug)]
pub(crate) struct Spec {
    /// Its registered name.
    pub(crate) name: String,
    /// A class (instantiated on every start) or a function (the handler of
    /// both calls and casts).
    pub(crate) target: Py<PyAny>,
    /// Whether `target` is a class.
    pub(crate) is_class: bool,
    /// Whether handlers of calls and casts get the caller as a second
    /// argument.
    pub(crate) with_caller: bool,
    /// Whether handlers of calls and casts get the message's
    /// `traceparent` (or `None`) as their last argument.
    pub(crate) with_trace: bool,
    /// The event loop the handlers run on.
    pub(crate) locals: Arc<TaskLocals>,
}

/// The server; cloned by the supervisor's factory for every (re)start.
#[derive(Debug, Clone)]
pub(crate) struct PyServer(pub(crate) Arc<Spec>);

/// The most casts handed to Python under one hold of the GIL.
const MAX_BATCH: usize = 64;

/// The handlers of one incarnation (for a class: bound methods of a fresh
/// instance), and the casts taken but not yet handed over.
#[derive(Debug)]
pub(crate) struct Handlers {
    call: Option<Py<PyAny>>,
    cast: Option<CastHandler>,
    pipe: Option<Py<PyAny>>,
    pending: Vec<PendingCast>,
}

/// Where casts go.
#[derive(Debug)]
enum CastHandler {
    /// `handle_cast` (or the function): one Python call per cast.
    One(Py<PyAny>),
    /// `handle_casts`: one Python call per batch, with a list.
    Many(Py<PyAny>),
}

/// A cast taken from the mailbox, with what its handler gets besides the
/// message.
#[derive(Debug)]
struct PendingCast {
    msg: Value,
    caller: Option<Option<PyCaller>>,
    trace: Option<Option<String>>,
}

/// The failure reason for a Python exception: `raised Type: message`.
fn raised(err: PyErr) -> ServerError {
    Python::attach(|py| {
        let ty = err.get_type(py);
        let module = ty
            .module()
            .map(|m| m.to_string())
            .unwrap_or_else(|_| "builtins".to_owned());
        let name = ty
            .qualname()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "Exception".to_owned());
        let ty = if module == "builtins" {
            name
        } else {
            format!("{module}.{name}")
        };
        let msg = err
            .value(py)
            .str()
            .map(|s| s.to_string())
            .unwrap_or_default();
        tracing::debug!(exception = %ty, message = %msg, "handler raised");
        if msg.is_empty() {
            format!("{RAISED}{ty}").into()
        } else {
            format!("{RAISED}{ty}: {msg}").into()
        }
    })
}

/// Call `handler` with the arguments `args` builds, and wait for its
/// result made into `R` by `convert` (awaited on the event loop, and
/// converted there, if it is awaitable).
async fn invoke<R, F>(
    locals: &TaskLocals,
    handler: &Py<PyAny>,
    args: F,
    convert: Convert<R>,
) -> PyResult<R>
where
    R: Send + 'static,
    F: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
{
    Python::attach(|py| pending(locals, handler.bind(py).call1(args(py)?)?, convert))?
        .wait()
        .await
}

/// What a result is made into when nothing is made of it.
fn ignore(_: &Bound<'_, PyAny>) {}

/// Who sent the message being handled (`oscloud.Caller`): given to
/// handlers of servers registered with `with_caller=True`; `None` for a
/// caller on the same node.
#[pyclass(name = "Caller", module = "oscloud._native", frozen, get_all)]
#[derive(Debug, Clone)]
pub(crate) struct PyCaller {
    /// The calling node's id (32 hex digits; verified on encrypted links).
    node: String,
    /// The calling node's public key (64 hex digits), verified by the
    /// handshake; `None` on plaintext links.
    key: Option<String>,
}

#[pymethods]
impl PyCaller {
    fn __repr__(&self) -> String {
        format!("<oscloud.Caller {}>", &self.node[..8.min(self.node.len())])
    }
}

/// The handler's arguments: the message, then the caller and the
/// message's `traceparent` if asked for.
fn message_args<'py>(
    py: Python<'py>,
    msg: &Value,
    caller: Option<Option<PyCaller>>,
    trace: Option<Option<String>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let mut args = vec![from_value(py, msg)?];
    if let Some(c) = caller {
        args.push(match c {
            Some(c) => Bound::new(py, c)?.into_any(),
            None => py.None().into_bound(py),
        });
    }
    if let Some(t) = trace {
        args.push(t.into_pyobject(py)?.into_any());
    }
    PyTuple::new(py, args)
}

/// One cast's item in the list `handle_casts` gets: the message alone, or
/// the tuple of `handle_cast`'s arguments when the server asked for the
/// caller or the `traceparent`.
fn batch_item<'py>(py: Python<'py>, cast: PendingCast) -> PyResult<Bound<'py, PyAny>> {
    if cast.caller.is_none() && cast.trace.is_none() {
        return Ok(from_value(py, &cast.msg)?);
    }
    Ok(message_args(py, &cast.msg, cast.caller, cast.trace)?.into_any())
}

impl PyServer {
    /// The caller to hand over, if the server asked for it.
    fn caller(&self, ctx: &Context) -> Option<Option<PyCaller>> {
        self.0.with_caller.then(|| {
            ctx.caller().map(|c| PyCaller {
                node: c.node.to_string(),
                key: c.key.map(|k| k.to_string()),
            })
        })
    }

    /// The message's `traceparent` to hand over, if the server asked for
    /// it.
    fn trace(&self, ctx: &Context) -> Option<Option<String>> {
        self.0
            .with_trace
            .then(|| ctx.trace().map(|t| t.traceparent()))
    }

    /// Hand every pending cast to the cast handler, in order: to
    /// `handle_casts` as one list (an awaitable it returns is awaited), or
    /// to `handle_cast` as many as return plainly under one hold of the
    /// GIL, one that returns an awaitable awaited (without the GIL) before
    /// the next.
    async fn flush(&self, handlers: &mut Handlers) -> Result<(), ServerError> {
        let Some(cast) = &handlers.cast else {
            handlers.pending.clear();
            return Ok(());
        };
        if handlers.pending.is_empty() {
            return Ok(());
        }
        let mut casts = std::mem::take(&mut handlers.pending).into_iter();
        let handler = match cast {
            CastHandler::One(handler) => handler,
            CastHandler::Many(handler) => {
                invoke(
                    &self.0.locals,
                    handler,
                    |py| {
                        let batch = casts
                            .map(|cast| batch_item(py, cast))
                            .collect::<PyResult<Vec<_>>>()?;
                        PyTuple::new(py, [PyList::new(py, batch)?])
                    },
                    ignore,
                )
                .await
                .map_err(raised)?;
                return Ok(());
            }
        };
        loop {
            let awaiting = Python::attach(|py| {
                for cast in casts.by_ref() {
                    let args = message_args(py, &cast.msg, cast.caller, cast.trace)?;
                    let result = handler.bind(py).call1(args)?;
                    if let waiting @ Pending::Waiting(_) = pending(&self.0.locals, result, ignore)?
                    {
                        return Ok(Some(waiting));
                    }
                }
                Ok::<_, PyErr>(None)
            })
            .map_err(raised)?;
            match awaiting {
                Some(waiting) => waiting.wait().await.map_err(raised)?,
                None => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl Server for PyServer {
    type Request = Value;
    type Reply = Value;
    type State = Handlers;

    async fn init(&self, _ctx: &mut Context) -> Result<Handlers, ServerError> {
        Python::attach(|py| {
            let target = self.0.target.bind(py);
            if !self.0.is_class {
                return Ok(Handlers {
                    call: Some(target.clone().unbind()),
                    cast: Some(CastHandler::One(target.clone().unbind())),
                    pipe: None,
                    pending: Vec::new(),
                });
            }
            let instance = target.call0()?;
            let method = |name: &str| -> PyResult<Option<Py<PyAny>>> {
                if instance.hasattr(name)? {
                    Ok(Some(instance.getattr(name)?.unbind()))
                } else {
                    Ok(None)
                }
            };
            let cast = match method("handle_casts")? {
                Some(many) => Some(CastHandler::Many(many)),
                None => method("handle_cast")?.map(CastHandler::One),
            };
            Ok(Handlers {
                call: method("handle_call")?,
                cast,
                pipe: method("handle_pipe")?,
                pending: Vec::new(),
            })
        })
        .map_err(raised)
    }

    async fn handle_cast(
        &self,
        ctx: &mut Context,
        handlers: &mut Handlers,
        msg: Value,
    ) -> Result<(), ServerError> {
        if handlers.cast.is_none() {
            tracing::debug!(server = %self.0.name, "cast dropped: no handle_cast(s)");
            return Ok(());
        }
        handlers.pending.push(PendingCast {
            msg,
            caller: self.caller(ctx),
            trace: self.trace(ctx),
        });
        // More casts or calls wait behind this one: hand this one over
        // with them, under one hold of the GIL (a call hands over what is
        // pending before it is handled).
        if ctx.queued() > 0 && handlers.pending.len() < MAX_BATCH {
            return Ok(());
        }
        self.flush(handlers).await
    }

    async fn handle_call(
        &self,
        ctx: &mut Context,
        handlers: &mut Handlers,
        msg: Value,
    ) -> Result<Value, ServerError> {
        self.flush(handlers).await?;
        let Some(handler) = &handlers.call else {
            return Err(format!(
                "{RAISED}NotImplementedError: server {:?} has no handle_call",
                self.0.name
            )
            .into());
        };
        let (caller, trace) = (self.caller(ctx), self.trace(ctx));
        let reply = invoke(
            &self.0.locals,
            handler,
            |py| message_args(py, &msg, caller, trace),
            |reply| to_value(reply).map_err(|e| e.to_string()),
        )
        .await
        .map_err(raised)?;
        reply.map_err(|e| format!("{RAISED}oscloud.errors.EncodeError: {e}").into())
    }

    async fn handle_pipe(
        &self,
        _ctx: &mut Context,
        handlers: &mut Handlers,
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        self.flush(handlers).await?;
        let Some(handler) = &handlers.pipe else {
            return Ok(PipeOutcome::NoSuchPort);
        };
        let pipe = PyPipe::new(end);
        let accepted = invoke(
            &self.0.locals,
            handler,
            move |py| {
                // Handed over as the package's `oscloud.Pipe` wrapper.
                let native = Bound::new(py, pipe)?;
                let pipe = py.import("oscloud")?.getattr("Pipe")?.call1((native,))?;
                PyTuple::new(py, [port.into_pyobject(py)?.into_any(), pipe])
            },
            |accepted| accepted.is_truthy(),
        )
        .await
        .and_then(|accepted| accepted)
        .map_err(raised)?;
        Ok(if accepted {
            PipeOutcome::Accepted
        } else {
            PipeOutcome::NoSuchPort
        })
    }
}
