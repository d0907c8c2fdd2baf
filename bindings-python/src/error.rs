//! The crate's one error type, and how it becomes a Python exception.
//!
//! The exception classes live in Python (`oscloud/errors.py`) so that they
//! can also derive from the matching built-in exception (`Timeout` is a
//! `TimeoutError`, `EncodeError` a `TypeError`, ...).

use oscloud_core::Error as CoreError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The prefix of the failure reason of a Python server whose handler
/// raised: `raised ValueError: bad input`. Callers (Python or Rust) see it
/// in [`CoreError::ServerStopped`]'s reason; the Python side turns it back
/// into `oscloud.RemoteError` with the exception's type and message.
pub(crate) const RAISED: &str = "raised ";

/// Everything that can go wrong in the bindings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kernel error (not found, timeout, server stopped, links, ...).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A server framework error (start failed, supervisor failed).
    #[error(transparent)]
    Actors(#[from] oscloud_actors::Error),
    /// A Python value that has no MessagePack form.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// MessagePack bytes that have no Python form, or that do not decode.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// An exception raised by Python code.
    #[error(transparent)]
    Python(#[from] PyErr),
    /// The API was used in a way that cannot work (the text says how).
    #[error("{0}")]
    Usage(String),
    /// The runtime the nodes run on cannot start, or is shut down because
    /// the interpreter is exiting (the text says which).
    #[error("the oscloud runtime is not available: {0}")]
    Runtime(String),
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::Python(e) => e,
            other => Python::attach(|py| {
                to_exception(py, &other).unwrap_or_else(|e| {
                    // The errors module itself failed: report both.
                    PyRuntimeError::new_err(format!("{other} (and then: {e})"))
                })
            }),
        }
    }
}

/// Split a failure reason `raised Type: message` into its parts.
pub(crate) fn parse_raised(reason: &str) -> Option<(&str, &str)> {
    let rest = reason.strip_prefix(RAISED)?;
    Some(match rest.split_once(": ") {
        Some((ty, msg)) => (ty, msg),
        None => (rest, ""),
    })
}

/// Build the Python exception for `err`.
fn to_exception(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let attrs = PyDict::new(py);
    let class = match err {
        Error::Core(e) => core_class(e, &attrs)?,
        Error::Actors(oscloud_actors::Error::Core(e)) => core_class(e, &attrs)?,
        Error::Actors(oscloud_actors::Error::StartFailed { name, reason }) => {
            attrs.set_item("server", name)?;
            attrs.set_item("reason", reason)?;
            "StartFailed"
        }
        Error::Actors(_) | Error::Runtime(_) => "Error",
        Error::Encode(_) => "EncodeError",
        Error::Decode(_) => "DecodeError",
        Error::Usage(_) => "UsageError",
        Error::Python(e) => return Ok(e.clone_ref(py)),
    };
    let module = py.import("oscloud.errors")?;
    let exc = module.getattr(class)?.call1((err.to_string(),))?;
    for (k, v) in attrs.iter() {
        exc.setattr(k.cast::<pyo3::types::PyString>()?, v)?;
    }
    Ok(PyErr::from_value(exc))
}

/// The exception class name for a kernel error, and its attributes.
fn core_class(err: &CoreError, attrs: &Bound<'_, PyDict>) -> PyResult<&'static str> {
    Ok(match err {
        CoreError::NotFound(name) => {
            attrs.set_item("server", name)?;
            "NotFound"
        }
        CoreError::Timeout { name, after } => {
            attrs.set_item("server", name)?;
            attrs.set_item("after", after.as_secs_f64())?;
            "Timeout"
        }
        CoreError::ServerStopped { name, reason } => {
            attrs.set_item("server", name)?;
            attrs.set_item("reason", reason)?;
            match parse_raised(reason) {
                Some((ty, msg)) => {
                    attrs.set_item("remote_type", ty)?;
                    attrs.set_item("remote_message", msg)?;
                    "RemoteError"
                }
                None => "ServerStopped",
            }
        }
        CoreError::Remote { name, message } => {
            attrs.set_item("server", name)?;
            attrs.set_item("reason", message)?;
            attrs.set_item("remote_type", py_none(attrs.py()))?;
            attrs.set_item("remote_message", message)?;
            "RemoteError"
        }
        CoreError::Decode(_) => "DecodeError",
        CoreError::Encode(_) => "EncodeError",
        CoreError::NoSuchPort { name, port } => {
            attrs.set_item("server", name)?;
            attrs.set_item("port", port)?;
            "NoSuchPort"
        }
        CoreError::NameTaken { name, .. } => {
            attrs.set_item("server", name)?;
            "NameTaken"
        }
        CoreError::InvalidName { name, .. } => {
            attrs.set_item("server", name)?;
            "InvalidName"
        }
        CoreError::InvalidAddress { .. } | CoreError::UnknownScheme { .. } => "InvalidAddress",
        CoreError::PipeClosed => "PipeClosed",
        CoreError::PipeFull { .. } => "PipeFull",
        CoreError::BadSetting { .. }
        | CoreError::BadTraceparent { .. }
        | CoreError::WireConfig(_)
        | CoreError::FrameTooLarge { .. } => "UsageError",
        CoreError::LinkBusy { .. } => "LinkBusy",
        CoreError::LinkFailed { .. }
        | CoreError::ConnectionRefused { .. }
        | CoreError::Unreachable { .. }
        | CoreError::AddressInUse { .. }
        | CoreError::BadPath { .. }
        | CoreError::Io { .. } => "LinkError",
        _ => "Error",
    })
}

fn py_none(py: Python<'_>) -> Bound<'_, PyAny> {
    py.None().into_bound(py)
}
