//! Owned byte buffers handed to C, and small MessagePack helpers.

use std::ffi::{c_char, c_int};

use crate::error::{Error, OSCLOUD_OK, bytes_arg, guard, guard_void, str_arg};

/// An owned byte buffer filled by the library (a call's reply, a pipe
/// frame, an encoded message). Release it with `oscloud_bytes_drop`.
/// An empty buffer is `{NULL, 0}`.
#[repr(C)]
#[derive(Debug)]
pub struct OscloudBytes {
    /// The bytes (NULL when `len` is 0).
    pub data: *mut u8,
    /// How many bytes.
    pub len: usize,
}

impl OscloudBytes {
    /// An owned buffer holding a copy of `bytes`.
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            return Self::empty();
        }
        let boxed: Box<[u8]> = bytes.into();
        let len = boxed.len();
        Self {
            data: Box::into_raw(boxed).cast::<u8>(),
            len,
        }
    }

    fn empty() -> Self {
        Self {
            data: std::ptr::null_mut(),
            len: 0,
        }
    }
}

/// Store `bytes` into the out-parameter `out` if it is not NULL.
///
/// # Safety
/// `out` is NULL or valid for writes.
pub(crate) unsafe fn put_bytes(out: *mut OscloudBytes, bytes: &[u8]) {
    if !out.is_null() {
        // SAFETY: non-NULL and writable per the caller's contract.
        unsafe { out.write(OscloudBytes::from_slice(bytes)) };
    }
}

/// An empty buffer (`{NULL, 0}`), ready to be filled.
#[unsafe(no_mangle)]
pub extern "C" fn oscloud_bytes_default() -> OscloudBytes {
    OscloudBytes::empty()
}

/// Free a buffer the library filled and reset it to `{NULL, 0}`. Dropping
/// an empty or already dropped buffer, or passing NULL, does nothing.
///
/// # Safety
/// `bytes` is NULL or points to a buffer filled by this library (or reset
/// by `oscloud_bytes_default`), not freed by other means.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_bytes_drop(bytes: *mut OscloudBytes) {
    guard_void(|| {
        if bytes.is_null() {
            return;
        }
        // SAFETY: non-NULL per the contract.
        let b = unsafe { &mut *bytes };
        if !b.data.is_null() {
            // SAFETY: `data`/`len` came from `Box<[u8]>::into_raw` in
            // `from_slice` and were not freed yet (we reset them below).
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(b.data, b.len)) });
        }
        *b = OscloudBytes::empty();
    });
}

/// Encode the UTF-8 string `text` as a MessagePack string into `out` (the
/// payload a Rust server with `Request = String` expects). Drop `out` with
/// `oscloud_bytes_drop`.
///
/// # Safety
/// `text` is a NUL-terminated string; `out` is valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_msgpack_encode_str(
    text: *const c_char,
    out: *mut OscloudBytes,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let text = unsafe { str_arg(text, "text") }?;
        if out.is_null() {
            return Err(Error::Null("out"));
        }
        let encoded = rmp_serde::to_vec(text).map_err(|e| Error::Invalid(e.to_string()))?;
        // SAFETY: `out` is non-NULL and writable per the contract.
        unsafe { put_bytes(out, &encoded) };
        Ok(OSCLOUD_OK)
    })
}

/// Read a MessagePack string (or binary) payload: on success `*text` points
/// *into* `data` (a loaned view, not NUL-terminated) and `*text_len` is its
/// length. Fails with `OSCLOUD_ERR_DECODE` if the payload is anything else
/// or has bytes after the value.
///
/// # Safety
/// `data` is valid for `len` bytes; `text` and `text_len` are valid for
/// writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_msgpack_decode_str(
    data: *const u8,
    len: usize,
    text: *mut *const c_char,
    text_len: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let buf = unsafe { bytes_arg(data, len) }?;
        if text.is_null() || text_len.is_null() {
            return Err(Error::Null("text"));
        }
        let (start, n) = msgpack_str_span(buf).ok_or_else(|| {
            Error::Decode("expected one MessagePack string or binary value".into())
        })?;
        // SAFETY: both out-pointers are non-NULL and writable.
        unsafe {
            *text = buf[start..].as_ptr().cast::<c_char>();
            *text_len = n;
        }
        Ok(OSCLOUD_OK)
    })
}

/// Where the payload of a lone MessagePack str/bin value is: (start, len).
fn msgpack_str_span(buf: &[u8]) -> Option<(usize, usize)> {
    let (&tag, rest) = buf.split_first()?;
    let be = |n: usize| -> Option<usize> {
        let b = rest.get(..n)?;
        Some(b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
    };
    let (header, len) = match tag {
        0xa0..=0xbf => (1usize, usize::from(tag & 0x1f)),
        0xd9 | 0xc4 => (2, be(1)?),
        0xda | 0xc5 => (3, be(2)?),
        0xdb | 0xc6 => (5, be(4)?),
        _ => return None,
    };
    (buf.len() == header.checked_add(len)?).then_some((header, len))
}

#[cfg(test)]
mod tests {
    use super::msgpack_str_span;

    #[test]
    fn spans() {
        let v = rmp_serde::to_vec("hello").unwrap();
        assert_eq!(msgpack_str_span(&v), Some((1, 5)));
        let long = "x".repeat(300);
        let v = rmp_serde::to_vec(&long).unwrap();
        assert_eq!(msgpack_str_span(&v), Some((3, 300)));
        assert_eq!(msgpack_str_span(&[0xa5, b'a']), None);
        assert_eq!(msgpack_str_span(&[0x01]), None);
        assert_eq!(msgpack_str_span(&[]), None);
    }
}
