//! The file source: a file's contents as a stream of frames.
//!
//! - **Port `out`.** Every pipe opened on it gets the file from the start:
//!   one frame per line (without the newline, the default) or raw chunks
//!   of at most 64 KiB. The pipe ends after the last frame (or never, with
//!   [`FileSource::repeat`]).
//! - **Arguments** (topology files): `path` (required), `mode` (`"lines"`
//!   or `"chunks"`), `interval_ms` (wait between frames, for replaying a
//!   recorded stream at its pace), `repeat` (start again at the end).
//! - **Calls**: none (every call is answered with the path).
//!
//! A file that cannot be opened ends the pipe at once (logged); the server
//! keeps running. Writing is back-pressured: the file is read no faster
//! than the pipe is drained.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use oscloud_actors::{ChildSpec, Context, PipeOutcome, Server, ServerError, ServerOptions};
use oscloud_core::{PipeEnd, PipeWriter, PortDirection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tracing::warn;

/// The port a file source writes to.
pub const OUT_PORT: &str = "out";

/// How a source cuts its input into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// One frame per line, without the line end.
    #[default]
    Lines,
    /// Raw chunks as they are read (at most 64 KiB each, and no longer
    /// than the pipe takes: see [`PipeWriter::max_frame`]).
    Chunks,
}

impl std::str::FromStr for Framing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lines" => Ok(Self::Lines),
            "chunks" => Ok(Self::Chunks),
            other => Err(format!(
                "unknown mode {other:?} (expected \"lines\" or \"chunks\")"
            )),
        }
    }
}

/// A file source (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    framing: Framing,
    interval: Option<Duration>,
    repeat: bool,
}

impl FileSource {
    /// Read `path`, line by line, as fast as the pipe takes it, once.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            framing: Framing::Lines,
            interval: None,
            repeat: false,
        }
    }

    /// Cut the file into frames this way.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Wait `interval` before each frame.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Start again from the beginning at the end of the file, forever.
    pub fn repeat(mut self, repeat: bool) -> Self {
        self.repeat = repeat;
        self
    }

    /// A supervisor child registered as `options`.
    pub fn child_spec(&self, options: impl Into<ServerOptions>) -> ChildSpec {
        let me = self.clone();
        ChildSpec::server(options, move || me.clone())
    }

    async fn stream(&self, writer: &PipeWriter) -> Result<(), String> {
        loop {
            let file = tokio::fs::File::open(&self.path)
                .await
                .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
            let mut reader = BufReader::new(file);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = match self.framing {
                    Framing::Lines => reader.read_until(b'\n', &mut buf).await,
                    Framing::Chunks => {
                        buf.resize(chunk_len(writer, CHUNK), 0);
                        let n = reader.read(&mut buf).await;
                        buf.truncate(*n.as_ref().unwrap_or(&0));
                        n
                    }
                }
                .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
                if n == 0 {
                    break;
                }
                if self.framing == Framing::Lines {
                    strip_line_end(&mut buf);
                }
                if let Some(d) = self.interval {
                    tokio::time::sleep(d).await;
                }
                match writer.send(Bytes::copy_from_slice(&buf)).await {
                    Ok(()) => {}
                    Err(e @ oscloud_core::Error::FrameTooLarge { .. }) => {
                        return Err(format!("a line of {}: {e}", self.path.display()));
                    }
                    Err(_) => return Ok(()), // nobody reads any more
                }
            }
            if !self.repeat {
                return Ok(());
            }
        }
    }
}

/// The most bytes a source reads for one chunk frame.
pub(crate) const CHUNK: usize = 64 * 1024;

/// How many bytes one chunk frame to `writer` may hold: `want`, or fewer
/// when the pipe takes shorter frames (a pipe to a node whose pipe window
/// is smaller).
pub(crate) fn chunk_len(writer: &PipeWriter, want: usize) -> usize {
    writer.max_frame().map_or(want, |max| want.min(max.max(1)))
}

/// Remove a trailing `\n` or `\r\n`.
pub(crate) fn strip_line_end(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
}

#[oscloud_actors::async_trait]
impl Server for FileSource {
    type Request = serde::de::IgnoredAny;
    type Reply = String;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        _state: &mut (),
        _req: serde::de::IgnoredAny,
    ) -> Result<String, ServerError> {
        Ok(self.path.display().to_string())
    }

    fn ports(&self) -> Vec<(String, PortDirection)> {
        vec![(OUT_PORT.to_owned(), PortDirection::Out)]
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        _state: &mut (),
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        if port != OUT_PORT {
            return Ok(PipeOutcome::NoSuchPort);
        }
        let me = self.clone();
        ctx.spawn(async move {
            let (_reader, writer) = end.split();
            if let Err(e) = me.stream(&writer).await {
                warn!("file source: {e}");
            }
        });
        Ok(PipeOutcome::Accepted)
    }
}
