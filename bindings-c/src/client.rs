//! Reaching servers by name: lookup, cast, call. The same for a server on
//! this node and on a linked node.

use std::ffi::{c_char, c_int};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use oscloud_core::trace::{with_trace, with_trace_sync};
use oscloud_core::{Endpoint, Error as CoreError};

use crate::bytes::{OscloudBytes, put_bytes};
use crate::error::{OSCLOUD_OK, bytes_arg, guard, str_arg};
use crate::node::{OscloudNode, node_arg};
use crate::wait::wait;

/// Look `name` up in the node's registry: `OSCLOUD_OK` if a server is
/// registered under it (here or on a linked node), `OSCLOUD_ERR_NOT_FOUND`
/// otherwise. If `is_local` is not NULL it is set to whether the server
/// lives on this node.
///
/// # Safety
/// `node` is a live node; `name` a NUL-terminated string; `is_local` NULL
/// or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_lookup(
    node: *const OscloudNode,
    name: *const c_char,
    is_local: *mut bool,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        let entry = node.kernel.registry().lookup(name)?;
        if !is_local.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { *is_local = entry.node() == node.kernel.node() };
        }
        Ok(OSCLOUD_OK)
    })
}

/// Send the one-way message `data[0..len]` to the server `name`. Returns
/// once it is queued for the server (not handled); while the link to the
/// server's node holds as many bytes of messages as it may, blocks until
/// it has room (see `oscloud_try_cast` to fail at once instead).
///
/// # Safety
/// `node` is a live node; `name` a NUL-terminated string; `data` valid for
/// `len` bytes (NULL if `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_cast(
    node: *const OscloudNode,
    name: *const c_char,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: per the contract.
    unsafe {
        cast_with(node, name, data, len, |node, endpoint, msg| {
            let mut sending = {
                let _enter = node.rt.enter();
                endpoint.cast(msg)
            };
            // Ready at once unless the link is full: only then is there
            // anything to block on.
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(&mut sending).poll(&mut cx) {
                Poll::Ready(sent) => sent,
                Poll::Pending => node.rt.block_on(sending),
            }
        })
    }
}

/// Send the one-way message `data[0..len]` to the server `name` without
/// waiting: when the link to the server's node is full, fails at once with
/// `OSCLOUD_ERR_LINK` and the message is not sent (for callers that prefer
/// dropping messages to waiting).
///
/// # Safety
/// `node` is a live node; `name` a NUL-terminated string; `data` valid for
/// `len` bytes (NULL if `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_try_cast(
    node: *const OscloudNode,
    name: *const c_char,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: per the contract.
    unsafe {
        cast_with(node, name, data, len, |node, endpoint, msg| {
            let _enter = node.rt.enter();
            endpoint.try_cast(msg)
        })
    }
}

/// The arguments of `oscloud_cast` and `oscloud_try_cast`, checked, given
/// to `send` with the server's endpoint.
///
/// # Safety
/// As for `oscloud_cast`.
unsafe fn cast_with(
    node: *const OscloudNode,
    name: *const c_char,
    data: *const u8,
    len: usize,
    send: impl FnOnce(&OscloudNode, &dyn Endpoint, Bytes) -> Result<(), CoreError>,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        // SAFETY: per the contract.
        let msg = Bytes::copy_from_slice(unsafe { bytes_arg(data, len) }?);
        let entry = node.kernel.registry().lookup(name)?;
        with_trace_sync(crate::trace::current(), || {
            send(node, entry.endpoint().as_ref(), msg)
        })?;
        Ok(OSCLOUD_OK)
    })
}

/// Send the request `data[0..len]` to the server `name` and wait at most
/// `timeout_ms` for the reply, which is stored in `*reply` (may be NULL to
/// discard it; otherwise drop it with `oscloud_bytes_drop`).
///
/// Errors: `OSCLOUD_ERR_NOT_FOUND`, `OSCLOUD_ERR_TIMEOUT` (the server may
/// still handle the request), `OSCLOUD_ERR_SERVER_STOPPED`,
/// `OSCLOUD_ERR_REMOTE` (the server answered with an error).
///
/// # Safety
/// `node` is a live node; `name` a NUL-terminated string; `data` valid for
/// `len` bytes (NULL if `len` is 0); `reply` NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_call(
    node: *const OscloudNode,
    name: *const c_char,
    data: *const u8,
    len: usize,
    timeout_ms: u64,
    reply: *mut OscloudBytes,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        // SAFETY: per the contract.
        let msg = Bytes::copy_from_slice(unsafe { bytes_arg(data, len) }?);
        let entry = node.kernel.registry().lookup(name)?;
        let call = with_trace(crate::trace::current(), entry.endpoint().call(msg));
        let answer = wait(&node.rt, timeout_ms, name, call)??;
        // SAFETY: per the contract.
        unsafe { put_bytes(reply, &answer) };
        Ok(OSCLOUD_OK)
    })
}
