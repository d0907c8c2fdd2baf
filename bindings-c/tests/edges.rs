//! Edge cases of the C API, driven from Rust through its C symbols: a node
//! dropped before its server, a server dropped from its own
//! callback, replies answered after the caller gave up.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oscloud::*;

mod common;
use common::echo;

fn call(node: *const OscloudNode, name: &std::ffi::CStr, timeout_ms: u64) -> i32 {
    unsafe {
        oscloud_call(
            node,
            name.as_ptr(),
            b"x".as_ptr(),
            1,
            timeout_ms,
            ptr::null_mut(),
        )
    }
}

#[test]
fn node_dropped_before_its_server() {
    let mut node = ptr::null_mut();
    assert_eq!(
        unsafe { oscloud_node_new(ptr::null(), &mut node) },
        OSCLOUD_OK
    );
    let mut cb = oscloud_server_callbacks_default();
    cb.on_call = Some(echo);
    let mut server = ptr::null_mut();
    assert_eq!(
        unsafe { oscloud_server_register(node, c"echo".as_ptr(), &cb, &mut server) },
        OSCLOUD_OK
    );
    assert_eq!(call(node, c"echo", 1000), OSCLOUD_OK);
    unsafe { oscloud_node_drop(&mut node) };
    // The server handle stays valid and drops cleanly without its node.
    unsafe { oscloud_server_drop(&mut server) };
    assert!(server.is_null());
}

static SELF_DROP: AtomicPtr<OscloudServer> = AtomicPtr::new(ptr::null_mut());
static DROPPED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn drop_myself(_ctx: *mut c_void, _data: *const u8, _len: usize) {
    let mut me = SELF_DROP.swap(ptr::null_mut(), Ordering::SeqCst);
    // From the server's own thread: must not wait for itself.
    unsafe { oscloud_server_drop(&mut me) };
}

unsafe extern "C" fn on_drop(_ctx: *mut c_void) {
    DROPPED.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn server_dropped_from_its_own_callback() {
    let mut node = ptr::null_mut();
    assert_eq!(
        unsafe { oscloud_node_new(ptr::null(), &mut node) },
        OSCLOUD_OK
    );
    let mut cb = oscloud_server_callbacks_default();
    cb.on_cast = Some(drop_myself);
    cb.on_drop = Some(on_drop);
    let mut server = ptr::null_mut();
    assert_eq!(
        unsafe { oscloud_server_register(node, c"selfish".as_ptr(), &cb, &mut server) },
        OSCLOUD_OK
    );
    SELF_DROP.store(server, Ordering::SeqCst);
    assert_eq!(
        unsafe { oscloud_cast(node, c"selfish".as_ptr(), ptr::null(), 0) },
        OSCLOUD_OK
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while DROPPED.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "on_drop did not run");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        unsafe { oscloud_lookup(node, c"selfish".as_ptr(), ptr::null_mut()) },
        OSCLOUD_ERR_NOT_FOUND
    );
    unsafe { oscloud_node_drop(&mut node) };
}

static HELD: AtomicPtr<OscloudReply> = AtomicPtr::new(ptr::null_mut());

unsafe extern "C" fn hold(
    _ctx: *mut c_void,
    _data: *const u8,
    _len: usize,
    reply: *mut OscloudReply,
) {
    HELD.store(reply, Ordering::SeqCst);
}

#[test]
fn a_late_reply_to_a_caller_that_gave_up_is_fine() {
    let mut node = ptr::null_mut();
    assert_eq!(
        unsafe { oscloud_node_new(ptr::null(), &mut node) },
        OSCLOUD_OK
    );
    let mut cb = oscloud_server_callbacks_default();
    cb.on_call = Some(hold);
    let mut server = ptr::null_mut();
    assert_eq!(
        unsafe { oscloud_server_register(node, c"slow".as_ptr(), &cb, &mut server) },
        OSCLOUD_OK
    );
    assert_eq!(call(node, c"slow", 50), OSCLOUD_ERR_TIMEOUT);
    let mut reply = HELD.swap(ptr::null_mut(), Ordering::SeqCst);
    assert!(!reply.is_null());
    assert_eq!(
        unsafe { oscloud_reply_send(&mut reply, b"late".as_ptr(), 4) },
        OSCLOUD_OK
    );
    assert!(reply.is_null());
    unsafe { oscloud_server_drop(&mut server) };
    unsafe { oscloud_node_drop(&mut node) };
}
