//! Nodes: a kernel, its transports, and the runtime that drives them.

use std::ffi::{c_char, c_int};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use oscloud_core::address::Address;
use oscloud_core::transport::{MemTransport, Transports};
use oscloud_core::{Error as CoreError, Kernel, NodeConfig, RegistryEvent};
use oscloud_transport_tcp::TcpTransport;
use oscloud_transport_unix::UnixTransport;
use oscloud_transport_ws::WsTransport;
use oscloud_transport_zenoh::ZenohTransport;
use tokio::runtime::Runtime;

use crate::error::{Error, OSCLOUD_OK, guard, guard_void, str_arg};
use crate::wait::wait;

/// How to make a node. Start from `oscloud_node_options_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OscloudNodeOptions {
    /// Enable `tcp://host:port` links (default true).
    pub enable_tcp: bool,
    /// Enable `unix:///path` links (default true).
    pub enable_unix: bool,
    /// Enable `mem://name` links between nodes of this process (default
    /// true).
    pub enable_mem: bool,
    /// Enable `ws://host:port/path` and `wss://host:port/path` (WebSocket)
    /// links (default true).
    pub enable_ws: bool,
    /// Enable `zenoh://router:port/<cloud>/<node>` links through zenoh
    /// routers (default true).
    pub enable_zenoh: bool,
    /// Threads of the node's runtime (default 2; 0 means the default).
    pub worker_threads: u32,
    /// Node settings as text, `key=value` items separated by commas,
    /// semicolons or newlines, e.g. `"resume_grace=30s, idle_timeout=1.5s"`
    /// (the keys are the fields of Rust's `NodeConfig`: keepalive,
    /// idle_timeout, reconnect_min, reconnect_max, pipe_window, max_frame,
    /// lossy_max_frame, lossy_send_window, lossy_initial_rto, max_queued,
    /// link_budget, max_serving, resume_grace, max_hops). NULL (the
    /// default) keeps every default. Read only
    /// during `oscloud_node_new`. An unknown key, a bad value, or a
    /// keepalive not shorter than the idle timeout makes it fail with
    /// `OSCLOUD_ERR_INVALID`, naming the setting.
    pub config: *const c_char,
}

/// The default node options: every transport, 2 runtime threads.
#[unsafe(no_mangle)]
pub extern "C" fn oscloud_node_options_default() -> OscloudNodeOptions {
    OscloudNodeOptions {
        enable_tcp: true,
        enable_unix: true,
        enable_mem: true,
        enable_ws: true,
        enable_zenoh: true,
        worker_threads: 2,
        config: std::ptr::null(),
    }
}

/// A node: an oscloud kernel with its registry, linked to other nodes by
/// transports. Owned: drop it with `oscloud_node_drop`. Thread-safe: every
/// function taking a `const oscloud_node_t *` may be called from any
/// thread at once.
#[derive(Debug)]
pub struct OscloudNode {
    // Fields drop in this order: the node and kernel before the runtime.
    pub(crate) node: oscloud_core::Node,
    pub(crate) kernel: Kernel,
    pub(crate) rt: Arc<Runtime>,
}

impl Drop for OscloudNode {
    fn drop(&mut self) {
        self.node.shutdown();
    }
}

/// The one in-process `mem://` transport shared by every node of this
/// process, so that `mem://` links join them.
fn mem_transport() -> MemTransport {
    static MEM: OnceLock<MemTransport> = OnceLock::new();
    MEM.get_or_init(MemTransport::new).clone()
}

/// Borrow a node argument.
///
/// # Safety
/// `node` is NULL or a live node from `oscloud_node_new`.
pub(crate) unsafe fn node_arg<'a>(node: *const OscloudNode) -> Result<&'a OscloudNode, Error> {
    // SAFETY: per the contract.
    unsafe { node.as_ref() }.ok_or(Error::Null("node"))
}

/// Parse an address argument.
pub(crate) fn parse_address(uri: &str) -> Result<Address, Error> {
    Ok(uri.parse::<Address>()?)
}

/// Make a node (`options` may be NULL for the defaults) and store it in
/// `*out`.
///
/// # Safety
/// `options` is NULL or valid (its `config` NULL or a NUL-terminated
/// string); `out` is valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_new(
    options: *const OscloudNodeOptions,
    out: *mut *mut OscloudNode,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(Error::Null("out"));
        }
        // SAFETY: NULL or valid per the contract.
        let opts = unsafe { options.as_ref() }
            .copied()
            .unwrap_or_else(|| oscloud_node_options_default());
        let mut config = NodeConfig::default();
        if !opts.config.is_null() {
            // SAFETY: non-NULL, a NUL-terminated string per the contract.
            config.apply(unsafe { str_arg(opts.config, "options.config") }?)?;
        }
        config.validate()?;
        let threads = if opts.worker_threads == 0 {
            2
        } else {
            opts.worker_threads as usize
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("oscloud-rt")
            // A C program dies of SIGPIPE by default: a write to a socket
            // whose peer is gone must fail with EPIPE instead, so the
            // library's own threads block the signal.
            .on_thread_start(block_sigpipe)
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let mut transports = Transports::new();
        if opts.enable_tcp {
            transports.add(Arc::new(TcpTransport));
        }
        if opts.enable_unix {
            transports.add(Arc::new(UnixTransport));
        }
        if opts.enable_ws {
            transports.add(Arc::new(WsTransport::ws()));
            transports.add(Arc::new(WsTransport::wss()));
        }
        if opts.enable_zenoh {
            transports.add(Arc::new(ZenohTransport::new()));
        }
        if opts.enable_mem {
            transports.add(Arc::new(mem_transport()));
        }
        let kernel = Kernel::new();
        let node = {
            let _enter = rt.enter();
            oscloud_core::Node::with_config(kernel.clone(), transports, config)
        };
        let boxed = Box::new(OscloudNode {
            rt: Arc::new(rt),
            node,
            kernel,
        });
        // SAFETY: `out` is non-NULL and writable.
        unsafe { *out = Box::into_raw(boxed) };
        Ok(OSCLOUD_OK)
    })
}

/// Shut the node down (its links close, its listeners stop) and free it;
/// sets `*node` to NULL. NULL or an already dropped node does nothing.
/// Servers, pipes and watches made on it stay valid (drop them too);
/// the node's runtime ends when the last of them is dropped.
///
/// # Safety
/// `node` is NULL or points to NULL or to a node from `oscloud_node_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_drop(node: *mut *mut OscloudNode) {
    guard_void(|| {
        if node.is_null() {
            return;
        }
        // SAFETY: non-NULL per the contract; swap out the handle first so a
        // second drop sees NULL.
        let raw = unsafe { std::ptr::replace(node, std::ptr::null_mut()) };
        if !raw.is_null() {
            // SAFETY: came from `Box::into_raw` in `oscloud_node_new`.
            drop(unsafe { Box::from_raw(raw) });
        }
    });
}

/// Write this node's id (32 hex digits and a NUL) into `buf` of `cap`
/// bytes (at least 33).
///
/// # Safety
/// `node` is a live node; `buf` is valid for `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_id(
    node: *const OscloudNode,
    buf: *mut c_char,
    cap: usize,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        unsafe { write_str(buf, cap, &node.kernel.node().to_string()) }?;
        Ok(OSCLOUD_OK)
    })
}

/// Copy `s` and a NUL into `buf` of `cap` bytes.
///
/// # Safety
/// `buf` is NULL or valid for `cap` bytes.
pub(crate) unsafe fn write_str(buf: *mut c_char, cap: usize, s: &str) -> Result<(), Error> {
    if buf.is_null() {
        return Err(Error::Null("buf"));
    }
    if s.len() >= cap {
        return Err(Error::Invalid(format!(
            "buffer of {cap} bytes is too small for {} bytes and a NUL",
            s.len()
        )));
    }
    // SAFETY: `buf` holds at least `s.len() + 1` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
    }
    Ok(())
}

/// Accept links at `uri` (e.g. `tcp://127.0.0.1:0`, `unix:///tmp/a.sock`,
/// `mem://name`) until the node is dropped. If `bound` is not NULL, the
/// address actually bound (with the port chosen for port 0) is written
/// into it (`bound_cap` bytes, NUL included).
///
/// # Safety
/// `node` is a live node; `uri` a NUL-terminated string; `bound` NULL or
/// valid for `bound_cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_listen(
    node: *const OscloudNode,
    uri: *const c_char,
    bound: *mut c_char,
    bound_cap: usize,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        let addr = parse_address(unsafe { str_arg(uri, "uri") }?)?;
        let at = node.rt.block_on(node.node.listen(&addr))?;
        if !bound.is_null() {
            // SAFETY: per the contract.
            unsafe { write_str(bound, bound_cap, &at.to_string()) }?;
        }
        Ok(OSCLOUD_OK)
    })
}

/// Link to the node listening at `uri`, retrying while the connection is
/// refused (the peer is not up yet) for at most `timeout_ms`. Once linked,
/// the link is kept up (dialled again with backoff after a drop) until the
/// node is dropped, and the peer's servers appear in this node's registry.
///
/// # Safety
/// `node` is a live node; `uri` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_connect(
    node: *const OscloudNode,
    uri: *const c_char,
    timeout_ms: u64,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        let addr = parse_address(unsafe { str_arg(uri, "uri") }?)?;
        let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
        node.rt.block_on(async {
            loop {
                match node.node.connect(&addr).await {
                    Err(CoreError::ConnectionRefused { .. } | CoreError::BadPath { .. })
                        if std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => return other.map(|_| OSCLOUD_OK).map_err(Error::from),
                }
            }
        })
    })
}

/// Wait at most `timeout_ms` until a server named `name` is in this node's
/// registry (local, or announced by a linked node). `OSCLOUD_ERR_TIMEOUT`
/// otherwise.
///
/// # Safety
/// `node` is a live node; `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_wait_for(
    node: *const OscloudNode,
    name: *const c_char,
    timeout_ms: u64,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        wait(&node.rt, timeout_ms, name, async {
            let mut watch = node.kernel.registry().watch();
            while let Some(ev) = watch.next().await {
                if matches!(&ev, RegistryEvent::Added(e) if e.name() == name) {
                    return;
                }
            }
        })?;
        Ok(OSCLOUD_OK)
    })
}

/// Block SIGPIPE in the calling thread (a runtime thread): a write to a
/// closed socket then returns `EPIPE` to the link, which goes down, instead
/// of the signal killing the host program. The host's own threads and its
/// signal handling are untouched.
fn block_sigpipe() {
    // SAFETY: the set is initialised by sigemptyset before use, and
    // pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
