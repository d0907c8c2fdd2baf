//! The process server: any stdio program as an oscloud server, without
//! relinking it.
//!
//! - **Calls, line by line.** One long-running child serves every call: a
//!   call's request (a MessagePack string or binary) is written to the
//!   child's stdin as one line, and the next line the child writes to stdout
//!   is the reply (a MessagePack string, without the newline). A cast is a
//!   call whose reply line is read and dropped. A request containing a
//!   newline cannot be one line: it is refused as undecodable (the caller
//!   gets a decode error, the server goes on).
//! - **Pipes, raw bytes.** A pipe opened on port [`STDIO_PORT`] gets a fresh
//!   child of its own: frames from the pipe go to its stdin (closed when
//!   the opener closes its writing half), its stdout comes back as frames,
//!   and the pipe ends when the child closes stdout.
//! - **Streams on ports `in` and `out`.** The first of the two to be
//!   opened starts the server's stream child; its stdin is port `in`, its
//!   stdout port `out`. The stream ends normally when the child exits with
//!   success, exits with any code after its input ended (`grep` finding
//!   nothing exits 1), or whoever reads `out` goes away.
//! - **Supervision.** When the call child dies (or gives no reply line
//!   within [`ProcessSpec::reply_timeout`]) the server fails, and under a
//!   [`Supervisor`](oscloud_actors::Supervisor) it is restarted with a new
//!   child. A child that dies while idle is noticed at once (the server
//!   watches it), not at the next call. The stream child fails the server
//!   the same way ([`Error::Stream`], with the reason) when it cannot be
//!   started, is killed by a signal, exits with a failure while its input
//!   is still open, or reading its stdout / writing its stdin fails (other
//!   than the child having closed stdin); what it wrote before that
//!   reaches the reader of `out` first (the server waits up to a second
//!   for it to be taken), and the `out` pipe then ends when the server
//!   stops, after its registry entry has left with the failure. A child
//!   on port `stdio` belongs to its opener: its failure only ends that
//!   pipe.
//!
//! Programs whose stdout is block-buffered when it is a pipe (most C
//! programs using stdio) need line buffering to answer line by line: run
//! them through `stdbuf -oL program` (GNU coreutils).

use std::ffi::OsString;
use std::fmt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use oscloud_actors::{
    ChildSpec, Context, PipeOutcome, Server, ServerError, ServerOptions, ServerRef, async_trait,
};
use oscloud_core::{PipeEnd, PipeReader, PipeWriter, PortDirection};
use serde::de::{self, Deserializer, Visitor};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tracing::debug;

use crate::Error;
use crate::file::OUT_PORT;
use crate::sink::IN_PORT;

/// The pipe port that connects a pipe to a fresh child's stdin and stdout.
pub const STDIO_PORT: &str = "stdio";

/// What a process server does: the program, its arguments, how long a
/// reply may take. Cheap to clone; clones share one [`ProcessStats`].
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    program: OsString,
    args: Vec<OsString>,
    reply_timeout: Duration,
    calls: bool,
    lines: bool,
    stats: Arc<ProcessStats>,
}

/// Counters shared by every incarnation of a process server.
#[derive(Debug, Default)]
pub struct ProcessStats {
    starts: AtomicU64,
    pid: AtomicU32,
    stream_pid: AtomicU32,
}

impl ProcessStats {
    /// How many times the call child was started (1 + restarts).
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::SeqCst)
    }

    /// The process id of the current call child (0 before the first start).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// The process id of the latest stream child (ports `in`/`out`; 0
    /// before the first).
    pub fn stream_pid(&self) -> u32 {
        self.stream_pid.load(Ordering::SeqCst)
    }
}

impl ProcessSpec {
    /// Run `program` (looked up in `PATH`), with no arguments and a 5 s
    /// reply timeout.
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            reply_timeout: Duration::from_secs(5),
            calls: true,
            lines: false,
            stats: Arc::default(),
        }
    }

    /// Add one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Add arguments.
    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Fail the server (so its supervisor restarts the child) when a call's
    /// reply line takes longer than `timeout`.
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Whether the server keeps a long-running child for calls (the
    /// default). Without it, calls fail with [`Error::NoCalls`] and the
    /// server is only a stream filter (ports `stdio`, `in`, `out`): a
    /// program that ends by itself (`seq 1 10`) is then not restarted
    /// in a loop.
    pub fn calls(mut self, on: bool) -> Self {
        self.calls = on;
        self
    }

    /// Line framing for the streams (ports `stdio`, `in`, `out`): each
    /// frame written gets a newline if it has none, and the child's
    /// output comes back one line per frame (without the newline) instead
    /// of in chunks as they are read. Off by default.
    pub fn lines(mut self, on: bool) -> Self {
        self.lines = on;
        self
    }

    /// The counters every incarnation shares.
    pub fn stats(&self) -> Arc<ProcessStats> {
        self.stats.clone()
    }

    /// A server running this spec (one incarnation).
    pub fn server(&self) -> ProcessServer {
        ProcessServer { spec: self.clone() }
    }

    /// A supervisor child registered as `options`: a fresh child process
    /// on every (re)start.
    pub fn child_spec(&self, options: impl Into<ServerOptions>) -> ChildSpec {
        let spec = self.clone();
        ChildSpec::server(options, move || spec.server())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: Ctrl-C in a terminal reaches the
            // node, which stops its servers, rather than killing the
            // children under them (which would look like a crash).
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    fn spawn(&self) -> Result<(Child, ChildStdin, ChildStdout), Error> {
        let mut child = self.command().spawn().map_err(|e| Error::Spawn {
            program: self.program.to_string_lossy().into_owned(),
            reason: e.to_string(),
        })?;
        match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => Ok((child, stdin, stdout)),
            _ => Err(Error::Spawn {
                program: self.program.to_string_lossy().into_owned(),
                reason: "no stdin/stdout pipes".into(),
            }),
        }
    }
}

/// A request to a process server: one line, or (MessagePack nil) "check
/// that the child is alive", which the server sends itself when its child
/// exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessRequest {
    /// One line for the child's stdin (no newline inside).
    Line(Vec<u8>),
    /// Fail if the child has exited.
    Check,
}

impl<'de> serde::Deserialize<'de> for ProcessRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ProcessRequest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or binary without a newline, or nil")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                self.visit_bytes(v.as_bytes())
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                if v.contains(&b'\n') {
                    return Err(E::custom("a request line cannot contain a newline"));
                }
                Ok(ProcessRequest::Line(v.to_vec()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ProcessRequest::Check)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ProcessRequest::Check)
            }
        }
        d.deserialize_any(V)
    }
}

/// One incarnation of a process server (see the [module docs](self)).
#[derive(Debug)]
pub struct ProcessServer {
    spec: ProcessSpec,
}

/// The running state: the call child's pipes and its exit notice.
#[derive(Debug)]
pub struct ProcessState {
    call: Option<CallChild>,
    stream_in: Option<PipeWriter>,
    stream_out: Option<PipeReader>,
    stream_started: bool,
    stream_failed: Arc<Mutex<Option<String>>>,
}

impl ProcessState {
    fn call_child(&mut self) -> Result<&mut CallChild, ServerError> {
        self.call.as_mut().ok_or_else(|| Error::NoCalls.into())
    }

    /// Fail if the call child exited or the stream child failed.
    fn check(&self) -> Result<(), ServerError> {
        if let Some(why) = self
            .stream_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(Error::Stream(why).into());
        }
        match &self.call {
            Some(c) => c.check(),
            None => Ok(()),
        }
    }
}

/// The long-running child that answers calls.
#[derive(Debug)]
struct CallChild {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    exited: watch::Receiver<Option<String>>,
    line: Vec<u8>,
}

impl CallChild {
    fn check(&self) -> Result<(), ServerError> {
        match self.exited.borrow().as_ref() {
            Some(status) => Err(Error::Exited(status.clone()).into()),
            None => Ok(()),
        }
    }

    /// Write `line` and read the reply line.
    async fn exchange(&mut self, line: &[u8], timeout: Duration) -> Result<String, ServerError> {
        self.check()?;
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line);
        out.push(b'\n');
        self.stdin.write_all(&out).await?;
        self.stdin.flush().await?;
        self.line.clear();
        let read = tokio::time::timeout(timeout, self.stdout.read_until(b'\n', &mut self.line))
            .await
            .map_err(|_| Error::NoReply(timeout))??;
        if read == 0 {
            return Err(Error::Exited("stdout closed".into()).into());
        }
        let mut reply = self.line.as_slice();
        if let Some(r) = reply.strip_suffix(b"\n") {
            reply = r;
        }
        if let Some(r) = reply.strip_suffix(b"\r") {
            reply = r;
        }
        Ok(String::from_utf8_lossy(reply).into_owned())
    }
}

#[async_trait]
impl Server for ProcessServer {
    type Request = ProcessRequest;
    type Reply = String;
    type State = ProcessState;

    async fn init(&self, ctx: &mut Context) -> Result<ProcessState, ServerError> {
        let call = if self.spec.calls {
            Some(self.start_call_child(ctx)?)
        } else {
            None
        };
        Ok(ProcessState {
            call,
            stream_in: None,
            stream_out: None,
            stream_started: false,
            stream_failed: Arc::default(),
        })
    }

    async fn handle_cast(
        &self,
        _ctx: &mut Context,
        state: &mut ProcessState,
        req: ProcessRequest,
    ) -> Result<(), ServerError> {
        match req {
            ProcessRequest::Check => state.check(),
            ProcessRequest::Line(line) => state
                .call_child()?
                .exchange(&line, self.spec.reply_timeout)
                .await
                .map(drop),
        }
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        state: &mut ProcessState,
        req: ProcessRequest,
    ) -> Result<String, ServerError> {
        match req {
            ProcessRequest::Check => state.check().map(|()| String::new()),
            ProcessRequest::Line(line) => {
                state
                    .call_child()?
                    .exchange(&line, self.spec.reply_timeout)
                    .await
            }
        }
    }

    fn ports(&self) -> Vec<(String, PortDirection)> {
        vec![
            (STDIO_PORT.to_owned(), PortDirection::Both),
            (IN_PORT.to_owned(), PortDirection::In),
            (OUT_PORT.to_owned(), PortDirection::Out),
        ]
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        state: &mut ProcessState,
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        match port.as_str() {
            STDIO_PORT => {
                // A failure to start this child is the opener's problem,
                // not the server's: its pipe just ends.
                let Ok(child) = self.spec.spawn() else {
                    return Ok(PipeOutcome::Accepted);
                };
                let (reader, writer) = end.split();
                let lines = self.spec.lines;
                ctx.spawn(async move {
                    let (end, _writer) = run_stream(child, reader, writer, lines).await;
                    if let StreamEnd::Failed(why) = end {
                        debug!(%why, "process server: stdio stream child failed");
                    }
                });
                Ok(PipeOutcome::Accepted)
            }
            IN_PORT | OUT_PORT => {
                if !state.stream_started {
                    state.stream_started = true;
                    // The server's own stream child: failing to start it,
                    // or its failing later, fails the server.
                    let child = self.spec.spawn()?;
                    self.spec
                        .stats
                        .stream_pid
                        .store(child.0.id().unwrap_or(0), Ordering::SeqCst);
                    let (in_w, in_r) = ctx.kernel().pipe();
                    let (out_w, out_r) = ctx.kernel().pipe();
                    let failed = state.stream_failed.clone();
                    let me = ServerRef::new(ctx.kernel(), ctx.name());
                    let lines = self.spec.lines;
                    ctx.spawn(async move {
                        let (end, writer) = run_stream(child, in_r, out_w, lines).await;
                        if let StreamEnd::Failed(why) = end {
                            // What the child wrote before it failed (often
                            // why) goes to the reader of port `out` before
                            // the server stops and lets go of its ends; for
                            // a while at most, as nobody may be reading.
                            let _ = tokio::time::timeout(OUTPUT_FLUSH, writer.drained()).await;
                            *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                            if let Ok(check) = oscloud_actors::encode(&()) {
                                let _ = me.cast(check).await;
                            }
                            // Its output pipe ends when the server stops
                            // (after its registry entry left with the
                            // failure), not before.
                            let _keep = writer;
                            std::future::pending::<()>().await;
                        }
                    });
                    state.stream_in = Some(in_w);
                    state.stream_out = Some(out_r);
                }
                let (reader, writer) = end.split();
                // Owned by the server: when it stops, the opener's ends
                // are let go of at once.
                if port == IN_PORT {
                    match state.stream_in.take() {
                        Some(w) => drop(ctx.spawn(forward(reader, w))),
                        None => debug!("process server: port in is already open"),
                    }
                } else {
                    match state.stream_out.take() {
                        Some(r) => drop(ctx.spawn(forward(r, writer))),
                        None => debug!("process server: port out is already open"),
                    }
                }
                Ok(PipeOutcome::Accepted)
            }
            _ => Ok(PipeOutcome::NoSuchPort),
        }
    }
}

impl ProcessServer {
    fn start_call_child(&self, ctx: &mut Context) -> Result<CallChild, ServerError> {
        let (mut child, stdin, stdout) = self.spec.spawn()?;
        self.spec.stats.starts.fetch_add(1, Ordering::SeqCst);
        self.spec
            .stats
            .pid
            .store(child.id().unwrap_or(0), Ordering::SeqCst);
        let (exited_tx, exited) = watch::channel(None);
        let me = ServerRef::new(ctx.kernel(), ctx.name());
        // Owns the child: aborted (and the child killed) when the server
        // stops; tells the server when the child dies on its own.
        ctx.spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("cannot wait for it: {e}"),
            };
            debug!(%status, "process server child exited");
            let _ = exited_tx.send(Some(status));
            if let Ok(check) = oscloud_actors::encode(&()) {
                let _ = me.cast(check).await;
            }
        });
        Ok(CallChild {
            stdin,
            stdout: BufReader::new(stdout),
            exited,
            line: Vec::new(),
        })
    }
}

/// Move frames from `from` to `to` until either side ends.
/// How long a failed stream child's last output may take to reach the
/// reader of port `out` before the server fails.
const OUTPUT_FLUSH: Duration = Duration::from_secs(1);

async fn forward(mut from: PipeReader, to: PipeWriter) {
    while let Some(frame) = from.recv().await {
        if let Err(e) = to.send(frame).await {
            debug!("forwarding ends: {e}");
            break;
        }
    }
}

/// How a stream child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamEnd {
    /// It closed its stdout after its input ended, or exited with success,
    /// or whoever read its output went away: the stream is over.
    Done,
    /// It was killed by a signal, exited with a failure while its input
    /// was still open, or its stdin/stdout failed: the server must fail.
    Failed(String),
}

/// Why feeding a child's stdin stopped.
enum Feed {
    /// The pipe ended: the child got EOF.
    InputEnded,
    /// Writing failed.
    WriteError(std::io::Error),
}

/// Why reading a child's stdout stopped.
enum Drain {
    /// It closed its stdout.
    Eof,
    /// Reading failed.
    ReadError(std::io::Error),
    /// Nobody reads the output any more.
    DownstreamGone,
    /// A line is longer than the output pipe takes.
    TooLong(oscloud_core::Error),
}

/// Feed `reader` to a child's stdin and its stdout to `writer`, until it
/// closes stdout; then say how it ended. The writer is handed back (not
/// dropped) so that a failed stream's pipe ends only when the server does.
async fn run_stream(
    (mut child, stdin, mut stdout): (Child, ChildStdin, ChildStdout),
    mut reader: PipeReader,
    writer: PipeWriter,
    lines: bool,
) -> (StreamEnd, PipeWriter) {
    let feed = async move {
        let mut stdin = stdin;
        while let Some(frame) = reader.recv().await {
            if let Err(e) = stdin.write_all(&frame).await {
                return Feed::WriteError(e);
            }
            if lines
                && !frame.ends_with(b"\n")
                && let Err(e) = stdin.write_all(b"\n").await
            {
                return Feed::WriteError(e);
            }
        }
        drop(stdin); // EOF for the child
        Feed::InputEnded
    };
    let drain = async {
        if lines {
            let mut stdout = BufReader::new(&mut stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdout.read_until(b'\n', &mut line).await {
                    Ok(0) => return Drain::Eof,
                    Err(e) => return Drain::ReadError(e),
                    Ok(_) => {
                        crate::file::strip_line_end(&mut line);
                        match writer.send(Bytes::copy_from_slice(&line)).await {
                            Ok(()) => {}
                            Err(e @ oscloud_core::Error::FrameTooLarge { .. }) => {
                                return Drain::TooLong(e);
                            }
                            Err(_) => return Drain::DownstreamGone,
                        }
                    }
                }
            }
        }
        let mut buf = vec![0u8; crate::file::chunk_len(&writer, crate::file::CHUNK)];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) => return Drain::Eof,
                Err(e) => return Drain::ReadError(e),
                Ok(n) => {
                    if writer
                        .send(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        return Drain::DownstreamGone;
                    }
                }
            }
        }
    };
    let mut feed = Box::pin(feed);
    let mut drain = Box::pin(drain);
    // When the child closes stdout it is done: stop feeding it.
    let (drained, fed) = tokio::select! {
        d = &mut drain => (d, None),
        f = &mut feed => (drain.as_mut().await, Some(f)),
    };
    drop(feed); // its stdin, if still open
    drop(drain);
    if matches!(drained, Drain::DownstreamGone | Drain::TooLong(_)) {
        let _ = child.start_kill();
    }
    let status = child.wait().await;
    let end = stream_end(&drained, fed.as_ref(), status);
    (end, writer)
}

/// Judge how a stream child ended (see [`StreamEnd`]).
fn stream_end(
    drained: &Drain,
    fed: Option<&Feed>,
    status: std::io::Result<std::process::ExitStatus>,
) -> StreamEnd {
    use std::os::unix::process::ExitStatusExt as _;
    let status = match status {
        Ok(s) => s,
        Err(e) => return StreamEnd::Failed(format!("cannot wait for the child process: {e}")),
    };
    match drained {
        Drain::DownstreamGone => return StreamEnd::Done,
        Drain::ReadError(e) => return StreamEnd::Failed(format!("reading its stdout: {e}")),
        Drain::TooLong(e) => return StreamEnd::Failed(format!("a line of its stdout: {e}")),
        Drain::Eof => {}
    }
    if let Some(Feed::WriteError(e)) = fed
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return StreamEnd::Failed(format!("writing to its stdin: {e}"));
    }
    if status.success() {
        return StreamEnd::Done;
    }
    if status.signal().is_some() {
        return StreamEnd::Failed(format!("the child process was killed ({status})"));
    }
    if matches!(fed, Some(Feed::InputEnded)) {
        // Exit codes after the input ended are answers (`grep` found
        // nothing), not failures.
        debug!(%status, "stream child exited after its input ended");
        return StreamEnd::Done;
    }
    StreamEnd::Failed(format!(
        "the child process exited while its input was open ({status})"
    ))
}
