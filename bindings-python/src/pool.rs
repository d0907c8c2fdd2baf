//! The pool server (`oscloud_servers::pool`) hosted by a Python node
//! (`oscloud._native._start_pool`, wrapped by `oscloud.Pool.start`).

use std::sync::Arc;
use std::time::Duration;

use oscloud_actors::{Strategy, Supervisor, SupervisorSpec};
use oscloud_servers::pool::PoolSpec;
use pyo3::prelude::*;

use crate::Error;
use crate::node::PyNode;
use crate::runtime;

/// Start the pool server `name` on `node`'s kernel, under a supervisor
/// that `node.stop()` stops. Timeouts are in seconds.
#[pyfunction]
#[allow(clippy::too_many_arguments)] // keyword arguments from Python
pub(crate) fn _start_pool(
    py: Python<'_>,
    node: &PyNode,
    name: String,
    queue_limit: usize,
    max_attempts: u32,
    per_worker: usize,
    attempt_timeout: f64,
    job_timeout: f64,
) -> PyResult<()> {
    let seconds = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| Error::Usage(format!("{what} must be a non-negative number of seconds")))
    };
    let spec = PoolSpec::new()
        .queue_limit(queue_limit)
        .max_attempts(max_attempts)
        .per_worker(per_worker)
        .attempt_timeout(seconds(attempt_timeout, "attempt_timeout")?)
        .job_timeout(seconds(job_timeout, "job_timeout")?);
    let kernel = node.kernel().clone();
    let tree = SupervisorSpec::new(format!("pool-supervisor:{name}"))
        .unregistered()
        .strategy(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(5))
        .child(spec.child_spec(name));
    let started = runtime::block_on(py, Supervisor::start(&kernel, tree))?;
    node.keep(Arc::new(started.map_err(Error::from)?));
    Ok(())
}
