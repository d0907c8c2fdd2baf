//! # oscloud-python: script oscloud servers in Python
//!
//! This crate is the native part (`oscloud._native`) of the `oscloud`
//! Python package, built with [maturin](https://www.maturin.rs) into an
//! abi3 wheel for CPython 3.9 and newer. The Python package
//! (`bindings-python/python/oscloud`) wraps it with the decorator API,
//! the exception classes and the type stubs; see its README for the API.
//!
//! ```python
//! import asyncio, oscloud
//!
//! async def main() -> None:
//!     node = await oscloud.Node.start(listen=["tcp://127.0.0.1:7000"])
//!
//!     @node.server("upper", accepts=["text"])
//!     async def upper(text: str) -> str:
//!         return text.upper()
//!
//!     ref = await node.lookup("upper")
//!     assert await ref.call("hello", timeout=1.0) == "HELLO"
//!     await node.stop()
//!
//! asyncio.run(main())
//! ```
//!
//! How it works:
//!
//! - everything Rust runs on one tokio runtime, owned by this module and
//!   shut down by an `atexit` hook before the interpreter finalises, so no
//!   Rust thread touches Python during finalisation; every awaitable the
//!   API returns is a Rust future turned into an asyncio future
//!   (`pyo3-async-runtimes`), so the event loop is never blocked and the
//!   GIL is not held while Rust waits;
//! - a Python server is an [`oscloud_actors::Server`] whose handlers call
//!   the Python callables; coroutines are scheduled on the event loop the
//!   node was started from, and each server runs under its own
//!   [`oscloud_actors::Supervisor`] (one-for-one, restart intensity as
//!   given), so a server that keeps raising is restarted, then given up;
//! - messages are MessagePack with the same mapping as `rmp-serde`, so a
//!   Python server and a Rust server exchange the same bytes (see
//!   `value.rs`).
//!
//! The crate is not published on crates.io (`publish = false`): it is only
//! useful loaded into Python, and is tested by the pytest suite that
//! `scripts/test-python.sh` runs.
#![doc(test(attr(deny(warnings))))]

mod awaiting;
mod error;
mod node;
mod pipe;
mod pool;
mod runtime;
mod rust_server;
mod server;
mod value;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

pub use error::Error;

/// Encode a Python value as MessagePack bytes, exactly as a call would.
#[pyfunction]
fn encode<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &value::encode_py(value)?))
}

/// Decode MessagePack bytes into a Python value, exactly as a server would.
#[pyfunction]
fn decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    Ok(value::decode_py(py, data)?)
}

/// The native module `oscloud._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<node::PyNode>()?;
    m.add_class::<node::PyServerRef>()?;
    m.add_class::<node::PyServerHandle>()?;
    m.add_class::<node::PyEntry>()?;
    m.add_class::<node::PyEvent>()?;
    m.add_class::<node::PyWatch>()?;
    m.add_class::<node::PyLink>()?;
    m.add_class::<node::PyLinkClose>()?;
    m.add_class::<node::PyRttHistogram>()?;
    m.add_class::<node::PyRoute>()?;
    m.add_class::<server::PyCaller>()?;
    m.add_class::<pipe::PyPipe>()?;
    m.add_function(wrap_pyfunction!(node::keygen, m)?)?;
    m.add_function(wrap_pyfunction!(node::node_settings, m)?)?;
    m.add_function(wrap_pyfunction!(rust_server::_rust_echo, m)?)?;
    m.add_function(wrap_pyfunction!(pool::_start_pool, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add("RAISED_PREFIX", error::RAISED)?;
    // Shut the runtime down before the interpreter finalises (see
    // `runtime.rs`); hooks registered later, by code using this module,
    // run before this one. A child made by fork has no runtime threads: it
    // gives the runtime up.
    let py = m.py();
    py.import("atexit")?
        .call_method1("register", (wrap_pyfunction!(runtime::shutdown, m)?,))?;
    let os = py.import("os")?;
    // POSIX only.
    if os.hasattr("register_at_fork")? {
        let hooks = PyDict::new(py);
        hooks.set_item(
            "after_in_child",
            wrap_pyfunction!(runtime::forget_in_child, m)?,
        )?;
        os.call_method("register_at_fork", (), Some(&hooks))?;
    }
    Ok(())
}
