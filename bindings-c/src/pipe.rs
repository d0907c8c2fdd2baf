//! Pipes: one end of a duplex, back-pressured stream of byte frames.

use std::ffi::{c_char, c_int};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use oscloud_core::{Error as CoreError, PipeEnd, PipeReader, PipeWriter};
use tokio::runtime::Runtime;

use crate::bytes::{OscloudBytes, put_bytes};
use crate::error::{Error, OSCLOUD_END, OSCLOUD_OK, bytes_arg, guard, guard_void, str_arg};
use crate::node::{OscloudNode, node_arg};
use crate::wait::wait;

/// One end of a pipe: frames written here come out of the other end, and
/// frames written there are read here. Owned: drop it with
/// `oscloud_pipe_drop`. One thread may read while another writes.
#[derive(Debug)]
pub struct OscloudPipe {
    reader: Mutex<PipeReader>,
    writer: Mutex<Option<PipeWriter>>,
    // Last: dropped after the pipe halves.
    rt: Arc<Runtime>,
}

impl OscloudPipe {
    /// Wrap `end`, driven by `rt`.
    pub(crate) fn new(end: PipeEnd, rt: Arc<Runtime>) -> Self {
        let (reader, writer) = end.split();
        Self {
            reader: Mutex::new(reader),
            writer: Mutex::new(Some(writer)),
            rt,
        }
    }

    /// This end's writer, unless its writing half was closed.
    fn writer(&self) -> Result<PipeWriter, CoreError> {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(CoreError::PipeClosed)
    }

    /// Run `work` on the pipe's runtime for at most `timeout_ms`.
    fn wait<T>(&self, timeout_ms: u64, work: impl Future<Output = T>) -> Result<T, CoreError> {
        wait(&self.rt, timeout_ms, "pipe", work)
    }
}

/// Borrow a pipe argument.
///
/// # Safety
/// `pipe` is NULL or a live pipe.
unsafe fn pipe_arg<'a>(pipe: *const OscloudPipe) -> Result<&'a OscloudPipe, Error> {
    // SAFETY: per the contract.
    unsafe { pipe.as_ref() }.ok_or(Error::Null("pipe"))
}

/// Open a pipe to port `port` of the server `name` (local or remote),
/// waiting at most `timeout_ms` for the server to take it. The server gets
/// the other end; `*out` gets this one.
///
/// # Safety
/// `node` is a live node; `name`, `port` NUL-terminated strings; `out`
/// valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_pipe_open(
    node: *const OscloudNode,
    name: *const c_char,
    port: *const c_char,
    timeout_ms: u64,
    out: *mut *mut OscloudPipe,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "name") }?;
        // SAFETY: per the contract.
        let port = unsafe { str_arg(port, "port") }?;
        if out.is_null() {
            return Err(Error::Null("out"));
        }
        let entry = node.kernel.registry().lookup(name)?;
        let (mine, theirs) = node.kernel.duplex();
        wait(
            &node.rt,
            timeout_ms,
            name,
            entry.endpoint().open_pipe(port, theirs),
        )??;
        let pipe = Box::new(OscloudPipe::new(mine, node.rt.clone()));
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out = Box::into_raw(pipe) };
        Ok(OSCLOUD_OK)
    })
}

/// Write one frame, waiting at most `timeout_ms` while the pipe is full
/// (back-pressure). `OSCLOUD_ERR_PIPE_CLOSED` once the other end stopped
/// reading or after `oscloud_pipe_close_write`; `OSCLOUD_ERR_INVALID` for a
/// frame longer than the pipe takes (for a pipe to another node, the
/// peer's pipe window, 256 KiB by default): it is not written, and the
/// pipe stays open.
///
/// # Safety
/// `pipe` is a live pipe; `data` valid for `len` bytes (NULL if 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_pipe_write(
    pipe: *const OscloudPipe,
    data: *const u8,
    len: usize,
    timeout_ms: u64,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let pipe = unsafe { pipe_arg(pipe) }?;
        // SAFETY: per the contract.
        let frame = Bytes::copy_from_slice(unsafe { bytes_arg(data, len) }?);
        let writer = pipe.writer()?;
        pipe.wait(timeout_ms, writer.send(frame))??;
        Ok(OSCLOUD_OK)
    })
}

/// Read the next frame into `*frame` (drop it with `oscloud_bytes_drop`),
/// waiting at most `timeout_ms`. Returns `OSCLOUD_OK` with a frame,
/// `OSCLOUD_END` at the end of the stream (the other end closed its writing
/// half and everything was read; `*frame` is left untouched), or
/// `OSCLOUD_ERR_TIMEOUT` (nothing is lost; read again).
///
/// # Safety
/// `pipe` is a live pipe; `frame` valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_pipe_read(
    pipe: *const OscloudPipe,
    frame: *mut OscloudBytes,
    timeout_ms: u64,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let pipe = unsafe { pipe_arg(pipe) }?;
        if frame.is_null() {
            return Err(Error::Null("frame"));
        }
        let mut reader = pipe.reader.lock().unwrap_or_else(PoisonError::into_inner);
        let next = pipe.wait(timeout_ms, reader.recv())?;
        match next {
            Some(bytes) => {
                // SAFETY: non-NULL and writable per the contract.
                unsafe { put_bytes(frame, &bytes) };
                Ok(OSCLOUD_OK)
            }
            None => Ok(OSCLOUD_END),
        }
    })
}

/// Wait at most `timeout_ms` until every frame written on this end was
/// taken by the pipe's reader (for a pipe to a server on another node: by
/// the link that carries it), or the reader is gone. Use it before
/// reporting a failure whose reason the last frames carry.
/// `OSCLOUD_ERR_TIMEOUT` if frames still wait (nothing is lost: they stay
/// queued), `OSCLOUD_ERR_PIPE_CLOSED` after `oscloud_pipe_close_write`.
///
/// # Safety
/// `pipe` is a live pipe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_pipe_drain(pipe: *const OscloudPipe, timeout_ms: u64) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let pipe = unsafe { pipe_arg(pipe) }?;
        let writer = pipe.writer()?;
        pipe.wait(timeout_ms, writer.drained())?;
        Ok(OSCLOUD_OK)
    })
}

/// Close this end's writing half: once its frames are read, the other end
/// reads `OSCLOUD_END`. Reading goes on. Closing twice does nothing.
///
/// # Safety
/// `pipe` is a live pipe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_pipe_close_write(pipe: *const OscloudPipe) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let pipe = unsafe { pipe_arg(pipe) }?;
        let writer = pipe
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(writer);
        Ok(OSCLOUD_OK)
    })
}

/// Close both halves and free the pipe; sets `*pipe` to NULL. NULL or an
/// already dropped pipe does nothing.
///
/// # Safety
/// `pipe` is NULL or points to NULL or to a pipe from this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_pipe_drop(pipe: *mut *mut OscloudPipe) {
    guard_void(|| {
        if pipe.is_null() {
            return;
        }
        // SAFETY: non-NULL per the contract.
        let raw = unsafe { std::ptr::replace(pipe, std::ptr::null_mut()) };
        if !raw.is_null() {
            // SAFETY: came from `Box::into_raw` in this library.
            drop(unsafe { Box::from_raw(raw) });
        }
    });
}
