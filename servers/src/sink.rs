//! What the sinks share: where they write, how they count, and stopping
//! once every input has ended.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use std::borrow::Cow;

use oscloud_actors::{
    ChildSpec, Context, PipeOutcome, Server, ServerError, ServerOptions, ServerRef,
};
use oscloud_core::{PipeEnd, PortDirection};
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use tracing::warn;

/// The port a sink reads from.
pub const IN_PORT: &str = "in";

/// Where a sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This process's standard output.
    Stdout,
    /// A file, created (or truncated, or appended to).
    File {
        /// The file.
        path: PathBuf,
        /// Append instead of truncating.
        append: bool,
    },
}

impl Target {
    /// `"-"` is standard output, anything else a file (truncated).
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            Self::Stdout
        } else {
            Self::File {
                path: PathBuf::from(s),
                append: false,
            }
        }
    }

    pub(crate) async fn open(&self) -> std::io::Result<Box<dyn AsyncWrite + Send + Unpin>> {
        Ok(match self {
            Target::Stdout => Box::new(tokio::io::stdout()),
            Target::File { path, append } => {
                let mut o = tokio::fs::OpenOptions::new();
                o.create(true).write(true);
                if *append {
                    o.append(true);
                } else {
                    o.truncate(true);
                }
                Box::new(o.open(path).await?)
            }
        })
    }
}

/// A sink's counters, the reply to any call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SinkStats {
    /// Frames written.
    pub frames: u64,
    /// Bytes written (after formatting).
    pub bytes: u64,
    /// Inputs open now.
    pub inputs: usize,
}

/// The running state of a sink.
pub struct SinkState {
    pub(crate) out: Arc<Mutex<Box<dyn AsyncWrite + Send + Unpin>>>,
    pub(crate) frames: Arc<AtomicU64>,
    pub(crate) bytes: Arc<AtomicU64>,
    pub(crate) open: Arc<AtomicUsize>,
    pub(crate) opened: u64,
}

impl std::fmt::Debug for SinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkState")
            .field("stats", &self.stats())
            .finish()
    }
}

impl SinkState {
    pub(crate) async fn open(target: &Target) -> std::io::Result<Self> {
        Ok(Self {
            out: Arc::new(Mutex::new(target.open().await?)),
            frames: Arc::default(),
            bytes: Arc::default(),
            open: Arc::default(),
            opened: 0,
        })
    }

    pub(crate) fn stats(&self) -> SinkStats {
        SinkStats {
            frames: self.frames.load(Ordering::SeqCst),
            bytes: self.bytes.load(Ordering::SeqCst),
            inputs: self.open.load(Ordering::SeqCst),
        }
    }

    /// Start one input: `task` gets the shared output and counters; when it
    /// ends the output is flushed and the server told to check whether it
    /// is done.
    pub(crate) fn input<F, Fut>(&mut self, ctx: &mut Context, task: F)
    where
        F: FnOnce(Writer) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.opened += 1;
        self.open.fetch_add(1, Ordering::SeqCst);
        let writer = Writer {
            out: self.out.clone(),
            frames: self.frames.clone(),
            bytes: self.bytes.clone(),
        };
        let open = self.open.clone();
        let out = self.out.clone();
        let me = ServerRef::new(ctx.kernel(), ctx.name());
        ctx.spawn(async move {
            task(writer).await;
            let _ = out.lock().await.flush().await;
            open.fetch_sub(1, Ordering::SeqCst);
            if let Ok(check) = oscloud_actors::encode(CHECK) {
                let _ = me.cast(check).await;
            }
        });
    }

    /// Whether every input opened so far has ended (and there was one).
    pub(crate) fn done(&self) -> bool {
        self.opened > 0 && self.open.load(Ordering::SeqCst) == 0
    }
}

/// The cast a sink sends itself when an input ends.
pub(crate) const CHECK: &str = "\u{0}check";

/// A handle for one input task: writes go to the shared output.
pub(crate) struct Writer {
    out: Arc<Mutex<Box<dyn AsyncWrite + Send + Unpin>>>,
    frames: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Writer {
    pub(crate) async fn write(&self, data: &[u8]) -> std::io::Result<()> {
        let mut out = self.out.lock().await;
        out.write_all(data).await?;
        out.flush().await?;
        self.frames.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

/// What tells one sink from another: where it writes and what bytes each
/// frame becomes. [`Formatted`] makes a sink server of it.
pub(crate) trait Format: std::fmt::Debug + Clone + Send + Sync + 'static {
    /// Its name in log lines.
    const WHAT: &'static str;
    /// Where it writes.
    fn target(&self) -> &Target;
    /// The bytes written for frame number `n` (from 1) of its input.
    fn format<'a>(&self, n: u64, frame: &'a [u8]) -> Cow<'a, [u8]>;

    /// A supervisor child registered as `options`.
    fn sink_child_spec(&self, options: impl Into<ServerOptions>) -> ChildSpec {
        let me = self.clone();
        ChildSpec::server(options, move || Formatted(me.clone()))
    }
}

/// The sink server of a [`Format`]: port `in` (several pipes may be
/// opened on it), writes every frame as formatted, answers any call with
/// its [`SinkStats`], stops normally once every input has ended.
#[derive(Debug, Clone)]
pub(crate) struct Formatted<F>(pub(crate) F);

#[oscloud_actors::async_trait]
impl<F: Format> Server for Formatted<F> {
    type Request = String;
    type Reply = SinkStats;
    type State = SinkState;

    async fn init(&self, _ctx: &mut Context) -> Result<SinkState, ServerError> {
        Ok(SinkState::open(self.0.target()).await?)
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

    fn ports(&self) -> Vec<(String, PortDirection)> {
        vec![(IN_PORT.to_owned(), PortDirection::In)]
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
        let format = self.0.clone();
        let frames = state.frames.clone();
        state.input(ctx, move |out| async move {
            let (mut reader, _writer) = end.split();
            while let Some(frame) = reader.recv().await {
                let n = frames.load(Ordering::SeqCst) + 1;
                if let Err(e) = out.write(&format.format(n, &frame)).await {
                    warn!("{}: {e}", F::WHAT);
                    break;
                }
            }
        });
        Ok(PipeOutcome::Accepted)
    }
}
