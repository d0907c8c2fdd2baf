//! Error codes, the thread-local last error, and the guard that keeps
//! panics on the Rust side of the boundary.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use oscloud_core::Error as CoreError;

/// Success.
pub const OSCLOUD_OK: c_int = 0;
/// A pipe reached its end: every writer of the other end is done and every
/// frame was read. Not an error.
pub const OSCLOUD_END: c_int = 1;
/// A required pointer argument was `NULL`.
pub const OSCLOUD_ERR_NULL: c_int = -1;
/// An argument is invalid (not UTF-8, buffer too small, bad option).
pub const OSCLOUD_ERR_INVALID: c_int = -2;
/// An address (URI) could not be parsed or has no transport.
pub const OSCLOUD_ERR_BAD_ADDRESS: c_int = -3;
/// A link could not be made (refused, unreachable, address in use, I/O).
pub const OSCLOUD_ERR_LINK: c_int = -4;
/// No server is registered under that name (or, for
/// `oscloud_node_close_link`, the node has no link with that id).
pub const OSCLOUD_ERR_NOT_FOUND: c_int = -5;
/// The operation did not complete in time.
pub const OSCLOUD_ERR_TIMEOUT: c_int = -6;
/// The server stopped (or its link went down) before answering.
pub const OSCLOUD_ERR_SERVER_STOPPED: c_int = -7;
/// The server answered the call with an error (or dropped it unanswered).
pub const OSCLOUD_ERR_REMOTE: c_int = -8;
/// The server name is taken or invalid.
pub const OSCLOUD_ERR_NAME: c_int = -9;
/// The server has no pipe port of that name.
pub const OSCLOUD_ERR_NO_SUCH_PORT: c_int = -10;
/// The pipe is closed: the other end stopped reading, or this end's
/// writing half was closed.
pub const OSCLOUD_ERR_PIPE_CLOSED: c_int = -11;
/// A payload could not be decoded (MessagePack helpers).
pub const OSCLOUD_ERR_DECODE: c_int = -12;
/// A Rust panic was caught at the boundary; the library is still usable.
pub const OSCLOUD_ERR_PANIC: c_int = -13;
/// Busy: the message was not taken, nothing was done. Either the server's
/// mailbox is full, or the node serving the call is at the limit it sets
/// for the link the call came over (its `link_budget` of request bytes,
/// or its `max_serving` calls at once). Retry later, or slow down.
pub const OSCLOUD_ERR_BUSY: c_int = -14;
/// Any other failure; see `oscloud_last_error()`.
pub const OSCLOUD_ERR_OTHER: c_int = -99;

/// What can go wrong in a C API call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A required pointer was NULL.
    #[error("argument `{0}` is NULL")]
    Null(&'static str),
    /// A string argument is not UTF-8.
    #[error("argument `{0}` is not valid UTF-8")]
    Utf8(&'static str),
    /// Another invalid argument.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A kernel, node or transport error.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The async runtime could not be started.
    #[error("cannot start the node's runtime: {0}")]
    Runtime(String),
    /// A payload is not what a helper expected.
    #[error("cannot decode payload: {0}")]
    Decode(String),
    /// A panic was caught.
    #[error("panic in liboscloud: {0}")]
    Panic(String),
    /// No link has this id.
    #[error("the node has no link {0}")]
    NoSuchLink(u64),
    /// A server's `on_init` callback refused to start.
    #[error("the server's on_init returned {0}")]
    ServerInit(c_int),
    /// The supervisor gave up (restart intensity exceeded).
    #[error("the supervisor gave up: {0}")]
    SupervisorFailed(String),
}

impl Error {
    /// The C error code.
    pub(crate) fn code(&self) -> c_int {
        match self {
            Error::Null(_) => OSCLOUD_ERR_NULL,
            Error::Utf8(_) | Error::Invalid(_) => OSCLOUD_ERR_INVALID,
            Error::Runtime(_) | Error::ServerInit(_) => OSCLOUD_ERR_OTHER,
            Error::SupervisorFailed(_) => OSCLOUD_ERR_SERVER_STOPPED,
            Error::Decode(_) => OSCLOUD_ERR_DECODE,
            Error::Panic(_) => OSCLOUD_ERR_PANIC,
            Error::NoSuchLink(_) => OSCLOUD_ERR_NOT_FOUND,
            Error::Core(e) => match e {
                CoreError::InvalidAddress { .. } | CoreError::UnknownScheme { .. } => {
                    OSCLOUD_ERR_BAD_ADDRESS
                }
                CoreError::ConnectionRefused { .. }
                | CoreError::Unreachable { .. }
                | CoreError::AddressInUse { .. }
                | CoreError::BadPath { .. }
                | CoreError::Io { .. }
                | CoreError::LinkFailed { .. }
                | CoreError::LinkBusy { .. } => OSCLOUD_ERR_LINK,
                CoreError::NotFound(_) => OSCLOUD_ERR_NOT_FOUND,
                CoreError::Timeout { .. } => OSCLOUD_ERR_TIMEOUT,
                CoreError::ServerStopped { .. } => OSCLOUD_ERR_SERVER_STOPPED,
                CoreError::ServerBusy { .. } | CoreError::NodeBusy { .. } => OSCLOUD_ERR_BUSY,
                CoreError::Remote { .. } => OSCLOUD_ERR_REMOTE,
                CoreError::NameTaken { .. } | CoreError::InvalidName { .. } => OSCLOUD_ERR_NAME,
                CoreError::NoSuchPort { .. } => OSCLOUD_ERR_NO_SUCH_PORT,
                CoreError::PipeClosed => OSCLOUD_ERR_PIPE_CLOSED,
                CoreError::Decode(_) => OSCLOUD_ERR_DECODE,
                CoreError::BadSetting { .. }
                | CoreError::WireConfig(_)
                | CoreError::FrameTooLarge { .. } => OSCLOUD_ERR_INVALID,
                _ => OSCLOUD_ERR_OTHER,
            },
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Record `message` as this thread's last error.
pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "?")).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
}

/// The text of a caught panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

/// Run `f` for an entry point: its error becomes a code and this thread's
/// last error, and a panic becomes [`OSCLOUD_ERR_PANIC`].
pub(crate) fn guard(f: impl FnOnce() -> Result<c_int, Error>) -> c_int {
    let err = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(code)) => return code,
        Ok(Err(e)) => e,
        Err(payload) => Error::Panic(panic_text(payload.as_ref())),
    };
    set_last_error(&err.to_string());
    err.code()
}

/// Run `f` for an entry point that cannot report errors (a `_drop`): a
/// panic is swallowed and recorded as the last error.
pub(crate) fn guard_void(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        set_last_error(&format!(
            "panic in liboscloud: {}",
            panic_text(payload.as_ref())
        ));
    }
}

/// Borrow a C string argument as UTF-8.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string valid for the call.
pub(crate) unsafe fn str_arg<'a>(s: *const c_char, what: &'static str) -> Result<&'a str, Error> {
    if s.is_null() {
        return Err(Error::Null(what));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| Error::Utf8(what))
}

/// Borrow a byte buffer argument; `NULL` with length 0 is the empty buffer.
///
/// # Safety
/// `data` is NULL or valid for `len` bytes for the call.
pub(crate) unsafe fn bytes_arg<'a>(data: *const u8, len: usize) -> Result<&'a [u8], Error> {
    if data.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Error::Null("data"))
        };
    }
    // SAFETY: non-NULL and valid for `len` bytes per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// This thread's message for the last failed call (an empty string if none
/// failed yet). The pointer stays valid until the next failing call on this
/// thread; copy the text to keep it.
#[unsafe(no_mangle)]
pub extern "C" fn oscloud_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ptr())
        .unwrap_or(c"(thread is exiting)".as_ptr())
}

/// A static description of an error code (never NULL).
#[unsafe(no_mangle)]
pub extern "C" fn oscloud_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        OSCLOUD_OK => c"ok",
        OSCLOUD_END => c"end of stream",
        OSCLOUD_ERR_NULL => c"a required argument is NULL",
        OSCLOUD_ERR_INVALID => c"invalid argument",
        OSCLOUD_ERR_BAD_ADDRESS => c"bad address",
        OSCLOUD_ERR_LINK => c"link failed",
        OSCLOUD_ERR_NOT_FOUND => c"no such server (or link)",
        OSCLOUD_ERR_TIMEOUT => c"timed out",
        OSCLOUD_ERR_SERVER_STOPPED => c"server stopped",
        OSCLOUD_ERR_REMOTE => c"server answered with an error",
        OSCLOUD_ERR_NAME => c"name taken or invalid",
        OSCLOUD_ERR_NO_SUCH_PORT => c"no such pipe port",
        OSCLOUD_ERR_PIPE_CLOSED => c"pipe closed",
        OSCLOUD_ERR_DECODE => c"cannot decode payload",
        OSCLOUD_ERR_PANIC => c"panic caught in liboscloud",
        OSCLOUD_ERR_BUSY => {
            c"busy: the server's mailbox is full or its node is at the link's limit; retry later"
        }
        _ => c"other error",
    };
    s.as_ptr()
}

/// Provoke a Rust panic inside the library, for tests of the boundary: it
/// is caught and this returns `OSCLOUD_ERR_PANIC`, with the panic message
/// as the last error. The library stays usable.
#[unsafe(no_mangle)]
pub extern "C" fn oscloud_debug_panic() -> c_int {
    guard(|| {
        #[allow(clippy::panic)]
        {
            panic!("oscloud_debug_panic was called");
        }
    })
}
