//! The terminal sink: the bytes of its input, as they are, on standard
//! output (or in a file).
//!
//! - **Port `in`.** Raw frames, written one after the other, each followed
//!   by a newline when [`StdoutSink::newline`] is on (the default for
//!   line-framed streams; a PTY's output wants it off). Once every input
//!   has ended the sink flushes and stops normally.
//! - **Arguments** (topology files): `path` (default `"-"`, standard
//!   output), `append`, `newline` (default true).
//! - **Calls**: any request gets the [`SinkStats`].

use oscloud_actors::{ChildSpec, Context, PipeOutcome, Server, ServerError, ServerOptions};
use oscloud_core::PipeEnd;
use tracing::warn;

use crate::sink::{CHECK, IN_PORT, SinkState, SinkStats, Target};

/// A terminal (raw bytes) sink (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct StdoutSink {
    target: Target,
    newline: bool,
}

impl StdoutSink {
    /// Write to `target`, a newline after each frame.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            newline: true,
        }
    }

    /// Whether a newline follows each frame.
    pub fn newline(mut self, on: bool) -> Self {
        self.newline = on;
        self
    }

    /// A supervisor child registered as `options`.
    pub fn child_spec(&self, options: impl Into<ServerOptions>) -> ChildSpec {
        let me = self.clone();
        ChildSpec::server(options, move || me.clone())
    }
}

#[oscloud_actors::async_trait]
impl Server for StdoutSink {
    type Request = String;
    type Reply = SinkStats;
    type State = SinkState;

    async fn init(&self, _ctx: &mut Context) -> Result<SinkState, ServerError> {
        Ok(SinkState::open(&self.target).await?)
    }

    async fn handle_cast(
        &self,
        ctx: &mut Context,
        state: &mut SinkState,
        req: String,
    ) -> Result<(), ServerError> {
        if req == CHECK && state.done() {
            ctx.stop();
        }
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        state: &mut SinkState,
        _req: String,
    ) -> Result<SinkStats, ServerError> {
        Ok(state.stats())
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        state: &mut SinkState,
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        if port != IN_PORT {
            return Ok(PipeOutcome::NoSuchPort);
        }
        let newline = self.newline;
        state.input(ctx, move |out| async move {
            let (mut reader, _writer) = end.split();
            while let Some(frame) = reader.recv().await {
                let r = if newline {
                    let mut v = Vec::with_capacity(frame.len() + 1);
                    v.extend_from_slice(&frame);
                    v.push(b'\n');
                    out.write(&v).await
                } else {
                    out.write(&frame).await
                };
                if let Err(e) = r {
                    warn!("stdout sink: {e}");
                    break;
                }
            }
        });
        Ok(PipeOutcome::Accepted)
    }
}
