//! How a C call waits: on the node's runtime, for at most the caller's
//! timeout.

use std::time::Duration;

use oscloud_core::Error as CoreError;
use tokio::runtime::Runtime;

/// Run `work` on `rt` for at most `timeout_ms`; past it, a timeout error
/// naming `what` (a server, or "pipe").
pub(crate) fn wait<T>(
    rt: &Runtime,
    timeout_ms: u64,
    what: &str,
    work: impl Future<Output = T>,
) -> Result<T, CoreError> {
    let after = Duration::from_millis(timeout_ms);
    rt.block_on(async { tokio::time::timeout(after, work).await })
        .map_err(|_| CoreError::Timeout {
            name: what.to_owned(),
            after,
        })
}
