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

#[pymethods]
impl PyPipe {
    /// Write one frame, waiting while the pipe is full.
    fn send<'py>(&self, py: Python<'py>, frame: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let writer = self.writer();
        let frame = Bytes::copy_from_slice(frame);
        future_into_py(py, async move {
            let writer = writer.ok_or(Error::Core(CoreError::PipeClosed))?;
            writer.send(frame).await.map_err(Error::from)?;
            Ok(())
        })
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
