//! Watching the registry: servers coming and going, here and on linked
//! nodes.

use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};

use oscloud_core::{ExitReason, RegistryEvent};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use crate::error::{Error, OSCLOUD_OK, guard, guard_void};
use crate::node::{OscloudNode, node_arg};

/// A server was registered.
pub const OSCLOUD_EVENT_ADDED: c_int = 1;
/// A server left the registry.
pub const OSCLOUD_EVENT_REMOVED: c_int = 2;

/// One registry change, loaned to the watch callback (valid until it
/// returns).
#[repr(C)]
#[derive(Debug)]
pub struct OscloudRegistryEvent {
    /// `OSCLOUD_EVENT_ADDED` or `OSCLOUD_EVENT_REMOVED`.
    pub kind: c_int,
    /// The server's name.
    pub name: *const c_char,
    /// Whether the server lives on this node.
    pub is_local: bool,
    /// For a removal: why (`"normal"`, a failure text, or why the link went
    /// down); an empty string for an addition.
    pub reason: *const c_char,
}

/// Called for each registry change, on the watch's own thread.
pub type OscloudWatchFn =
    Option<unsafe extern "C" fn(context: *mut c_void, event: *const OscloudRegistryEvent)>;

/// A registry watch. Owned: drop it with `oscloud_watch_drop`.
pub struct OscloudWatch {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

impl fmt::Debug for OscloudWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OscloudWatch").finish_non_exhaustive()
    }
}

impl Drop for OscloudWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && std::thread::current().id() != self.thread_id
        {
            let _ = thread.join();
        }
    }
}

struct SendCtx(*mut c_void);
// SAFETY: the C side promises `context` may be used from the watch thread.
unsafe impl Send for SendCtx {}

/// Deliver one event to the callback.
fn deliver(
    callback: unsafe extern "C" fn(*mut c_void, *const OscloudRegistryEvent),
    ctx: *mut c_void,
    local: oscloud_core::NodeId,
    ev: &RegistryEvent,
) {
    let (kind, reason) = match ev {
        RegistryEvent::Added(_) => (OSCLOUD_EVENT_ADDED, String::new()),
        RegistryEvent::Removed { reason, .. } => (
            OSCLOUD_EVENT_REMOVED,
            match reason {
                ExitReason::Normal => "normal".to_owned(),
                other => other.to_string(),
            },
        ),
    };
    let entry = ev.entry();
    let name = CString::new(entry.name().replace('\0', "?")).unwrap_or_default();
    let reason = CString::new(reason.replace('\0', "?")).unwrap_or_default();
    let event = OscloudRegistryEvent {
        kind,
        name: name.as_ptr(),
        is_local: entry.node() == local,
        reason: reason.as_ptr(),
    };
    // SAFETY: `event` and its strings outlive the call.
    unsafe { callback(ctx, &event) };
}

/// Call `callback(context, event)` for every registry change of `node`, on
/// a thread of the watch's own (named `oscloud-watch`), starting with one
/// `OSCLOUD_EVENT_ADDED` per server registered now. Stops when the watch is
/// dropped.
///
/// # Safety
/// `node` is a live node; `callback` non-NULL; `context` usable from
/// another thread; `out` valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_watch_new(
    node: *const OscloudNode,
    callback: OscloudWatchFn,
    context: *mut c_void,
    out: *mut *mut OscloudWatch,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        let callback = callback.ok_or(Error::Null("callback"))?;
        if out.is_null() {
            return Err(Error::Null("out"));
        }
        let mut watch = node.kernel.registry().watch();
        let local = node.kernel.node();
        let rt: Arc<Runtime> = node.rt.clone();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let ctx = SendCtx(context);
        let thread = std::thread::Builder::new()
            .name("oscloud-watch".into())
            .spawn(move || {
                let ctx = ctx;
                loop {
                    let next = rt.block_on(async {
                        tokio::select! {
                            ev = watch.next() => ev,
                            _ = &mut stop_rx => None,
                        }
                    });
                    let Some(ev) = next else { break };
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        deliver(callback, ctx.0, local, &ev)
                    }));
                }
                drop(watch);
                drop(rt);
            })
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let w = Box::new(OscloudWatch {
            stop: Some(stop_tx),
            thread_id: thread.thread().id(),
            thread: Some(thread),
        });
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out = Box::into_raw(w) };
        Ok(OSCLOUD_OK)
    })
}

/// Stop the watch and free it; sets `*watch` to NULL. Returns after the
/// callback has run for the last time (except when called from that
/// callback). NULL or already dropped does nothing.
///
/// # Safety
/// `watch` is NULL or points to NULL or to a watch from this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_watch_drop(watch: *mut *mut OscloudWatch) {
    guard_void(|| {
        if watch.is_null() {
            return;
        }
        // SAFETY: non-NULL per the contract.
        let raw = unsafe { std::ptr::replace(watch, std::ptr::null_mut()) };
        if !raw.is_null() {
            // SAFETY: came from `Box::into_raw` in `oscloud_watch_new`.
            drop(unsafe { Box::from_raw(raw) });
        }
    });
}
