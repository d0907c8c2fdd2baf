//! The crate's one error type.

/// Everything that can go wrong when starting, reaching or supervising a
/// server.
///
/// Delivery errors (not found, timeout, server stopped, decode and encode
/// failures) are the kernel's, wrapped in [`Error::Core`]: they mean the same
/// thing whether the server is local or on another node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A kernel error: [`NotFound`](oscloud_core::Error::NotFound),
    /// [`Timeout`](oscloud_core::Error::Timeout),
    /// [`ServerStopped`](oscloud_core::Error::ServerStopped),
    /// [`Decode`](oscloud_core::Error::Decode),
    /// [`Encode`](oscloud_core::Error::Encode), registry errors, ...
    #[error(transparent)]
    Core(#[from] oscloud_core::Error),
    /// A server (or supervisor) could not start: its `init` failed or
    /// panicked, its name could not be registered, or one of its children
    /// could not start.
    #[error("server {name:?} failed to start: {reason}")]
    StartFailed {
        /// The server's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A supervision tree ended abnormally (for example its restart
    /// intensity was exceeded).
    #[error("supervisor {name:?} failed: {reason}")]
    SupervisorFailed {
        /// The supervisor's name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// The kernel error inside, if this is one.
    pub fn as_core(&self) -> Option<&oscloud_core::Error> {
        match self {
            Error::Core(e) => Some(e),
            _ => None,
        }
    }
}

/// Shorthand for results whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
