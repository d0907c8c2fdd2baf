//! Trace context (`docs/PROTOCOL.md` §4.2): which distributed trace the
//! calls and casts of a thread belong to.
//!
//! Each thread has a current trace context: calls and casts made from it
//! carry it. A server's thread has, during `on_cast` and `on_call`, the
//! context of the message it handles (so calls made from the callback
//! pass it on); a client sets one with `oscloud_trace_set`.

use std::cell::Cell;
use std::ffi::{c_char, c_int};

use oscloud_core::TraceContext;

use crate::error::{Error, OSCLOUD_ERR_NOT_FOUND, OSCLOUD_OK, guard, str_arg};

/// Bytes of a version-00 `traceparent` and its NUL.
pub const OSCLOUD_TRACEPARENT_LEN: usize = 56;

thread_local! {
    static TRACE: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// This thread's trace context.
pub(crate) fn current() -> Option<TraceContext> {
    TRACE.with(Cell::get)
}

/// Run `f` with `trace` as this thread's context, then put back the one
/// before.
pub(crate) fn with<R>(trace: Option<TraceContext>, f: impl FnOnce() -> R) -> R {
    let before = TRACE.with(|t| t.replace(trace));
    let r = f();
    TRACE.with(|t| t.set(before));
    r
}

/// Set this thread's trace context: the calls and casts it makes from now
/// on carry it. `traceparent` is a W3C `traceparent` header
/// (`00-<32 hex>-<16 hex>-<2 hex>`), or NULL to make them carry none.
/// Errors: `OSCLOUD_ERR_INVALID` (not a traceparent; the context is left
/// as it was).
///
/// # Safety
/// `traceparent` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_trace_set(traceparent: *const c_char) -> c_int {
    guard(|| {
        let trace = if traceparent.is_null() {
            None
        } else {
            // SAFETY: per the contract.
            let text = unsafe { str_arg(traceparent, "traceparent") }?;
            Some(
                text.parse::<TraceContext>()
                    .map_err(|e| Error::Invalid(e.to_string()))?,
            )
        };
        TRACE.with(|t| t.set(trace));
        Ok(OSCLOUD_OK)
    })
}

/// Write this thread's trace context as a `traceparent` header, with its
/// NUL, into `buf` (`len` bytes; `OSCLOUD_TRACEPARENT_LEN` suffice). In a
/// server's `on_call` or `on_cast`: the context of the message being
/// handled. `OSCLOUD_ERR_NOT_FOUND` when there is none (the message came
/// without one); `OSCLOUD_ERR_INVALID` when `len` is too small.
///
/// # Safety
/// `buf` is valid for writes of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_trace_get(buf: *mut c_char, len: usize) -> c_int {
    guard(|| {
        if buf.is_null() {
            return Err(Error::Null("buf"));
        }
        let Some(trace) = current() else {
            return Ok(OSCLOUD_ERR_NOT_FOUND);
        };
        let text = trace.traceparent();
        if len < text.len() + 1 {
            return Err(Error::Invalid(format!(
                "a traceparent takes {} bytes with its NUL, the buffer has {len}",
                text.len() + 1
            )));
        }
        // SAFETY: `buf` is valid for `len` bytes, and `len` is enough.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, text.len());
            *buf.add(text.len()) = 0;
        }
        Ok(OSCLOUD_OK)
    })
}
