//! Pipes: one end of a duplex, back-pressured pipe of byte frames.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use oscloud_core::{Error as CoreError, PipeEnd, PipeReader, PipeWriter};
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::Error;
use crate::runtime::future_into_py;

/// One end of a duplex pipe (`oscloud.Pipe`).
#[pyclass(name = "Pipe", module = "oscloud._native", frozen)]
#[derive(Debug)]
pub(crate) struct PyPipe {
    reader: Arc<tokio::sync::Mutex<PipeReader>>,
    writer: Arc<Mutex<Option<PipeWriter>>>,
}

impl PyPipe {
    pub(crate) fn new(end: PipeEnd) -> Self {
        let (reader, writer) = end.split();
        Self {
            reader: Arc::new(tokio::sync::Mutex::new(reader)),
            writer: Arc::new(Mutex::new(Some(writer))),
        }
    }

    fn writer(&self) -> Option<PipeWriter> {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn recv(reader: Arc<tokio::sync::Mutex<PipeReader>>) -> Option<Bytes> {
    reader.lock().await.recv().await
}

fn to_py(frame: Option<Bytes>) -> PyResult<Option<Py<PyBytes>>> {
    Ok(frame.map(|f| Python::attach(|py| PyBytes::new(py, &f).unbind())))
}

impl PyPipe {
    /// Write `frames` in order while the pipe has room; the rest, from the
    /// first that found it full, by an awaitable that waits for room for
    /// each. `None` when every one is written.
    fn send_all<'py>(
        &self,
        py: Python<'py>,
        frames: Vec<Bytes>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let writer = self.writer().ok_or(Error::Core(CoreError::PipeClosed))?;
        let mut rest = frames.into_iter();
        while let Some(frame) = rest.next() {
            match writer.try_send(frame) {
                Ok(()) => {}
                Err((frame, CoreError::PipeFull { .. })) => {
                    return future_into_py(py, async move {
                        for frame in std::iter::once(frame).chain(rest) {
                            writer.send(frame).await.map_err(Error::from)?;
                        }
                        Ok(())
                    })
                    .map(Some);
                }
                Err((_, e)) => return Err(Error::from(e).into()),
            }
        }
        Ok(None)
    }
}

#[pymethods]
impl PyPipe {
    /// Write one frame. Written at once when the pipe has room: returns
    /// `None`, nothing to await. Only a full pipe returns an awaitable,
    /// which completes once the frame is written.
    fn send<'py>(&self, py: Python<'py>, frame: &[u8]) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.send_all(py, vec![Bytes::copy_from_slice(frame)])
    }

    /// Write one frame without waiting: raises `PipeFull` at once (the
    /// frame not written) when the pipe is full.
    fn try_send(&self, frame: &[u8]) -> PyResult<()> {
        let writer = self.writer().ok_or(Error::Core(CoreError::PipeClosed))?;
        writer
            .try_send(Bytes::copy_from_slice(frame))
            .map_err(|(_, e)| Error::from(e))?;
        Ok(())
    }

    /// Write every frame of `frames` (bytes-like objects) in order, like
    /// `send` for each: `None` when all are written now, else an awaitable
    /// that writes the rest as room comes.
    fn send_many<'py>(
        &self,
        py: Python<'py>,
        frames: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let all = frames
            .try_iter()?
            .map(|f| Ok(Bytes::copy_from_slice(f?.extract::<&[u8]>()?)))
            .collect::<PyResult<Vec<_>>>()?;
        self.send_all(py, all)
    }

    /// The frames buffered now, at most `limit` (at least one is taken):
    /// an empty list if there are none (or another read is waiting),
    /// `None` at the end of the stream.
    #[pyo3(signature = (limit = 64))]
    fn take<'py>(&self, py: Python<'py>, limit: usize) -> Option<Vec<Bound<'py, PyBytes>>> {
        let Ok(mut reader) = self.reader.try_lock() else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        while out.len() < limit.max(1) {
            match reader.try_recv() {
                Ok(Some(frame)) => out.push(PyBytes::new(py, &frame)),
                Ok(None) => break,
                Err(()) if out.is_empty() => return None,
                Err(()) => break,
            }
        }
        Some(out)
    }

    /// Wait until every frame written on this end was taken by the pipe's
    /// reader (for a pipe to another node: by the link that carries it),
    /// or the reader is gone.
    fn drained<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let writer = self.writer();
        future_into_py(py, async move {
            let writer = writer.ok_or(Error::Core(CoreError::PipeClosed))?;
            writer.drained().await;
            Ok(())
        })
    }

    /// Read the next frame; `None` at the end of the stream.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.reader.clone();
        future_into_py(py, async move { to_py(recv(reader).await) })
    }

    /// End this side's stream: the other end reads `None` once it has read
    /// what was sent. Reading goes on.
    fn close(&self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.reader.clone();
        future_into_py(py, async move {
            match recv(reader).await {
                Some(frame) => Ok(Python::attach(|py| PyBytes::new(py, &frame).unbind())),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }

    fn __repr__(&self) -> String {
        let open = self.writer().is_some();
        format!("<oscloud.Pipe writing={open}>")
    }
}
