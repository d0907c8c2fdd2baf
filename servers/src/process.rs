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
//! - **Supervision.** When the call child dies (or gives no reply line
//!   within [`ProcessSpec::reply_timeout`]) the server fails, and under a
//!   [`Supervisor`](oscloud_actors::Supervisor) it is restarted with a new
//!   child. A child that dies while idle is noticed at once (the server
//!   watches it), not at the next call.
//!
//! Programs whose stdout is block-buffered when it is a pipe (most C
//! programs using stdio) need line buffering to answer line by line: run
//! them through `stdbuf -oL program` (GNU coreutils).

use std::ffi::OsString;
use std::fmt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use oscloud_actors::{
    ChildSpec, Context, PipeOutcome, Server, ServerError, ServerOptions, ServerRef, async_trait,
};
use oscloud_core::PipeEnd;
use serde::de::{self, Deserializer, Visitor};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tracing::debug;

use crate::Error;

/// The pipe port that connects a pipe to a fresh child's stdin and stdout.
pub const STDIO_PORT: &str = "stdio";

/// What a process server does: the program, its arguments, how long a
/// reply may take. Cheap to clone; clones share one [`ProcessStats`].
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    program: OsString,
    args: Vec<OsString>,
    reply_timeout: Duration,
    stats: Arc<ProcessStats>,
}

/// Counters shared by every incarnation of a process server.
#[derive(Debug, Default)]
pub struct ProcessStats {
    starts: AtomicU64,
    pid: AtomicU32,
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
}

impl ProcessSpec {
    /// Run `program` (looked up in `PATH`), with no arguments and a 5 s
    /// reply timeout.
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            reply_timeout: Duration::from_secs(5),
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
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    exited: watch::Receiver<Option<String>>,
    line: Vec<u8>,
}

impl ProcessState {
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
                let _ = me.cast(check);
            }
        });
        Ok(ProcessState {
            stdin,
            stdout: BufReader::new(stdout),
            exited,
            line: Vec::new(),
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
            ProcessRequest::Line(line) => state.exchange(&line, self.spec.reply_timeout).await,
        }
    }

    async fn handle_pipe(
        &self,
        ctx: &mut Context,
        _state: &mut ProcessState,
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        if port != STDIO_PORT {
            return Ok(PipeOutcome::NoSuchPort);
        }
        // A failure to start this child is the opener's problem, not the
        // server's: its pipe just ends.
        let Ok((mut child, mut stdin, mut stdout)) = self.spec.spawn() else {
            return Ok(PipeOutcome::Accepted);
        };
        let (mut reader, writer) = end.split();
        ctx.spawn(async move {
            let feed = async {
                while let Some(frame) = reader.recv().await {
                    if stdin.write_all(&frame).await.is_err() {
                        break;
                    }
                }
                drop(stdin); // EOF for the child
            };
            let drain = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stdout.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if writer
                                .send(Bytes::copy_from_slice(&buf[..n]))
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                }
                drop(writer); // end of stream for the opener
            };
            tokio::pin!(feed, drain);
            // When the child closes stdout it is done: stop feeding it.
            tokio::select! {
                () = &mut drain => {}
                () = &mut feed => drain.await,
            }
            let _ = child.wait().await;
        });
        Ok(PipeOutcome::Accepted)
    }
}
