//! What the integration tests of the C API share.

use std::ffi::c_void;

use oscloud::{OscloudReply, oscloud_reply_send};

/// A server's `on_call` that answers every call with its request.
pub(crate) unsafe extern "C" fn echo(
    _ctx: *mut c_void,
    data: *const u8,
    len: usize,
    reply: *mut OscloudReply,
) {
    let mut reply = reply;
    unsafe { oscloud_reply_send(&mut reply, data, len) };
}
