//! The stdin source: this process's standard input as a stream of frames.
//!
//! - **Port `out`.** The first pipe opened on it gets standard input, one
//!   frame per line (the default) or raw chunks; the pipe ends at end of
//!   input. Standard input can be read only once: a later opener's pipe
//!   ends at once.
//! - **Arguments** (topology files): `mode` (`"lines"` or `"chunks"`).
//! - **Calls**: none.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use oscloud_actors::{ChildSpec, Context, PipeOutcome, Server, ServerError, ServerOptions};
use oscloud_core::{PipeEnd, PortDirection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tracing::warn;

use crate::file::{CHUNK, Framing, OUT_PORT, chunk_len, strip_line_end};

/// A stdin source (see the [module docs](self)). Clones (and restarts)
/// share the "already taken" flag.
#[derive(Debug, Clone, Default)]
pub struct StdinSource {
    framing: Framing,
    taken: Arc<AtomicBool>,
}

impl StdinSource {
    /// Standard input, line by line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cut the input into frames this way.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// A supervisor child registered as `options`.
    pub fn child_spec(&self, options: impl Into<ServerOptions>) -> ChildSpec {
        let me = self.clone();
        ChildSpec::server(options, move || me.clone())
    }
}

#[oscloud_actors::async_trait]
impl Server for StdinSource {
    type Request = serde::de::IgnoredAny;
    type Reply = ();
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        _state: &mut (),
        _req: serde::de::IgnoredAny,
    ) -> Result<(), ServerError> {
        Ok(())
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
        if self.taken.swap(true, Ordering::SeqCst) {
            warn!("stdin source: standard input is already taken");
            return Ok(PipeOutcome::Accepted); // the end is dropped: the pipe ends
        }
        let framing = self.framing;
        ctx.spawn(async move {
            let (_reader, writer) = end.split();
            let mut input = BufReader::new(tokio::io::stdin());
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = match framing {
                    Framing::Lines => input.read_until(b'\n', &mut buf).await,
                    Framing::Chunks => {
                        buf.resize(chunk_len(&writer, CHUNK), 0);
                        let n = input.read(&mut buf).await;
                        buf.truncate(*n.as_ref().unwrap_or(&0));
                        n
                    }
                };
                match n {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        warn!("stdin source: {e}");
                        break;
                    }
                }
                if framing == Framing::Lines {
                    strip_line_end(&mut buf);
                }
                if let Err(e) = writer.send(Bytes::copy_from_slice(&buf)).await {
                    if matches!(e, oscloud_core::Error::FrameTooLarge { .. }) {
                        warn!("stdin source: a line: {e}");
                    }
                    break;
                }
            }
        });
        Ok(PipeOutcome::Accepted)
    }
}
