//! The tee: a stream passes through, and a copy of every frame is
//! appended to a file.
//!
//! - **Port `in`.** The stream (one opener).
//! - **Port `out`.** The same frames, unchanged (one opener). Until it is
//!   opened, frames wait (back-pressure reaches `in`).
//! - Each frame is written to the file followed by a newline when
//!   [`TeeServer::newline`] is on (the default).
//! - When `in` ends, `out` ends, and the tee stops normally.
//! - **Arguments** (topology files): `path` (required; `"-"` is standard
//!   output), `append`, `newline`.
//! - **Calls**: any request gets the [`SinkStats`] of the copy.
//!
//! (A topology file can also fan a stream out with a pipe that has
//! several `to`: the tee is for keeping a copy on the way.)

use oscloud_actors::{ChildSpec, Context, PipeOutcome, Server, ServerError, ServerOptions};
use oscloud_core::plumbing::connect;
use oscloud_core::{PipeEnd, PipeReader, PipeWriter, PortDirection};
use tracing::{debug, warn};

use crate::file::OUT_PORT;
use crate::sink::{CHECK, IN_PORT, SinkState, SinkStats, Target};

/// A tee (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct TeeServer {
    target: Target,
    newline: bool,
}

impl TeeServer {
    /// Copy every frame to `target`, a newline after each.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            newline: true,
        }
    }

    /// Whether a newline follows each copied frame.
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

/// The running state of a tee.
#[derive(Debug)]
pub struct TeeState {
    sink: SinkState,
    through_w: Option<PipeWriter>,
    through_r: Option<PipeReader>,
}

#[oscloud_actors::async_trait]
impl Server for TeeServer {
    type Request = String;
    type Reply = SinkStats;
    type State = TeeState;

    async fn init(&self, ctx: &mut Context) -> Result<TeeState, ServerError> {
        let (w, r) = ctx.kernel().pipe();
        Ok(TeeState {
            sink: SinkState::open(&self.target).await?,
            through_w: Some(w),
            through_r: Some(r),
        })
    }

    async fn handle_cast(
        &self,
        ctx: &mut Context,
        state: &mut TeeState,
        req: String,
    ) -> Result<(), ServerError> {
        if req == CHECK && state.sink.done() {
            ctx.stop();
        }
        Ok(())
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        state: &mut TeeState,
        _req: String,
    ) -> Result<SinkStats, ServerError> {
        Ok(state.sink.stats())
    }

    fn ports(&self) -> Vec<(String, PortDirection)> {
        vec![
            (IN_PORT.to_owned(), PortDirection::In),
            (OUT_PORT.to_owned(), PortDirection::Out),
        ]
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        state: &mut TeeState,
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        match port.as_str() {
            IN_PORT => {
                let Some(through) = state.through_w.take() else {
                    warn!("tee: port in is already open");
                    return Ok(PipeOutcome::Accepted);
                };
                let newline = self.newline;
                state.sink.input(ctx, move |out| async move {
                    let (mut reader, _writer) = end.split();
                    while let Some(frame) = reader.recv().await {
                        let mut copy = frame.to_vec();
                        if newline {
                            copy.push(b'\n');
                        }
                        if let Err(e) = out.write(&copy).await {
                            warn!("tee: {e}");
                        }
                        if let Err(e) = through.send(frame).await {
                            debug!("tee: the stream ends: {e}");
                            break;
                        }
                    }
                });
                Ok(PipeOutcome::Accepted)
            }
            OUT_PORT => {
                if let Some(r) = state.through_r.take() {
                    let (_reader, writer) = end.split();
                    let _ = connect(r, writer);
                } else {
                    warn!("tee: port out is already open");
                }
                Ok(PipeOutcome::Accepted)
            }
            _ => Ok(PipeOutcome::NoSuchPort),
        }
    }
}
