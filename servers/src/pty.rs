//! The PTY server: a program under a pseudo-terminal, so that it behaves
//! as it does in a terminal (line editing, prompts, colours, `isatty`).
//!
//! - **Port `in`.** Bytes typed into the terminal (the keyboard side).
//!   When the pipe ends, Ctrl-D is typed (end of input for a shell or
//!   `cat` reading the terminal at the start of a line).
//! - **Port `out`.** What the program writes to the terminal (output
//!   waits until it is opened). A later opener takes the screen over: the
//!   earlier one's pipe ends (a reloaded web console attaches again). It
//!   ends when the program exits.
//! - The program starts with the server, in a session of its own with the
//!   terminal as its controlling terminal. When it exits the server stops
//!   (normally if it exited with status 0, as a failure otherwise, so a
//!   supervisor can restart it).
//! - **Arguments** (topology files): `program` (required), `args`,
//!   `rows`, `cols` (default 24 × 80).
//! - **Calls**: any request gets the program's process id.
//!
//! Unix only.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::pty::{Winsize, openpty};
use oscloud_actors::{
    ChildSpec, Context, PipeOutcome, Server, ServerError, ServerOptions, ServerRef,
};
use oscloud_core::{PipeEnd, PipeWriter, PortDirection};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use crate::Error;
use crate::file::OUT_PORT;
use crate::sink::IN_PORT;

/// The byte typed when port `in` ends: Ctrl-D (the terminal's VEOF).
pub const EOF_KEY: u8 = 0x04;

/// A program under a pseudo-terminal (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct PtySpec {
    program: OsString,
    args: Vec<OsString>,
    rows: u16,
    cols: u16,
}

impl PtySpec {
    /// Run `program` (looked up in `PATH`) on a 24 × 80 terminal.
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            rows: 24,
            cols: 80,
        }
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

    /// The terminal's size.
    pub fn size(mut self, rows: u16, cols: u16) -> Self {
        self.rows = rows;
        self.cols = cols;
        self
    }

    /// A supervisor child registered as `options`: a new terminal and
    /// program on every (re)start.
    pub fn child_spec(&self, options: impl Into<ServerOptions>) -> ChildSpec {
        let me = self.clone();
        ChildSpec::server(options, move || PtyServer { spec: me.clone() })
    }

    /// One incarnation.
    pub fn server(&self) -> PtyServer {
        PtyServer { spec: self.clone() }
    }
}

/// One incarnation of a PTY server.
#[derive(Debug)]
pub struct PtyServer {
    spec: PtySpec,
}

/// The running state: the terminal's master side and the program.
#[derive(Debug)]
pub struct PtyState {
    master: Arc<AsyncFd<OwnedFd>>,
    out: mpsc::UnboundedSender<PipeWriter>,
    exited: watch::Receiver<Option<(bool, String)>>,
    pid: u32,
}

fn spawn_err(spec: &PtySpec, e: impl std::fmt::Display) -> Error {
    Error::Spawn {
        program: spec.program.to_string_lossy().into_owned(),
        reason: e.to_string(),
    }
}

#[allow(unsafe_code)]
fn controlling_terminal(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls async-signal-safe functions (setsid, ioctl).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is a valid open descriptor that stays open and
    // the same until it is dropped, which the `AsyncFd` owning it does.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Read what the program writes, into the `out` pipe once it is open;
/// a newer `out` pipe replaces the current one (which then ends), and a
/// reader that goes away is waited for again.
async fn pump_out(master: Arc<AsyncFd<OwnedFd>>, mut out: mpsc::UnboundedReceiver<PipeWriter>) {
    let Some(mut writer) = out.recv().await else {
        return;
    };
    let mut buf = vec![0u8; crate::file::chunk_len(&writer, 16 * 1024)];
    loop {
        let mut guard = tokio::select! {
            biased;
            newer = out.recv() => match newer {
                Some(w) => {
                    writer = w;
                    continue;
                }
                None => return,
            },
            ready = master.readable() => match ready {
                Ok(guard) => guard,
                Err(_) => break,
            },
        };
        match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(Into::into)) {
            Ok(Ok(0)) | Ok(Err(_)) => break, // EIO once the program is gone
            Ok(Ok(n)) => {
                if writer
                    .send(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
                {
                    // The reader went away: wait for the next one.
                    match out.recv().await {
                        Some(w) => writer = w,
                        None => return,
                    }
                }
            }
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(Into::into)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

#[oscloud_actors::async_trait]
impl Server for PtyServer {
    type Request = serde::de::IgnoredAny;
    type Reply = u32;
    type State = PtyState;

    async fn init(&self, ctx: &mut Context) -> Result<PtyState, ServerError> {
        let spec = &self.spec;
        let size = Winsize {
            ws_row: spec.rows,
            ws_col: spec.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).map_err(|e| spawn_err(spec, e))?;
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::from(pty.slave.try_clone()?))
            .stdout(Stdio::from(pty.slave.try_clone()?))
            .stderr(Stdio::from(pty.slave))
            .kill_on_drop(true);
        controlling_terminal(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| spawn_err(spec, e))?;
        drop(cmd); // closes our copies of the slave side
        let pid = child.id().unwrap_or(0);
        let flags = fcntl(&pty.master, FcntlArg::F_GETFL)?;
        fcntl(
            &pty.master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )?;
        let master = Arc::new(register(pty.master)?);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (pumped_tx, pumped) = oneshot::channel::<()>();
        let pump_master = master.clone();
        ctx.spawn(async move {
            pump_out(pump_master, out_rx).await;
            let _ = pumped_tx.send(());
        });
        let (exited_tx, exited) = watch::channel(None);
        let me = ServerRef::new(ctx.kernel(), ctx.name());
        ctx.spawn(async move {
            let (ok, status) = match child.wait().await {
                Ok(s) => (s.success(), s.to_string()),
                Err(e) => (false, format!("cannot wait for it: {e}")),
            };
            debug!(%status, "pty program exited");
            // Let the last output through before the server stops (if
            // nobody ever opened `out`, there is nothing to wait for).
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), pumped).await;
            let _ = exited_tx.send(Some((ok, status)));
            if let Ok(check) = oscloud_actors::encode(&()) {
                let _ = me.cast(check).await;
            }
        });
        Ok(PtyState {
            master,
            out: out_tx,
            exited,
            pid,
        })
    }

    async fn handle_cast(
        &self,
        ctx: &mut Context,
        state: &mut PtyState,
        _req: serde::de::IgnoredAny,
    ) -> Result<(), ServerError> {
        let exited = state.exited.borrow().clone();
        match exited {
            Some((true, _)) => {
                ctx.stop();
                Ok(())
            }
            Some((false, status)) => Err(Error::Exited(status).into()),
            None => Ok(()),
        }
    }

    async fn handle_call(
        &self,
        _ctx: &mut Context,
        state: &mut PtyState,
        _req: serde::de::IgnoredAny,
    ) -> Result<u32, ServerError> {
        Ok(state.pid)
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
        state: &mut PtyState,
        port: String,
        end: PipeEnd,
    ) -> Result<PipeOutcome, ServerError> {
        match port.as_str() {
            IN_PORT => {
                let master = state.master.clone();
                ctx.spawn(async move {
                    let (mut reader, _writer) = end.split();
                    while let Some(frame) = reader.recv().await {
                        if write_all(&master, &frame).await.is_err() {
                            return;
                        }
                    }
                    // End of input is typed as Ctrl-D, as at a keyboard.
                    let _ = write_all(&master, &[EOF_KEY]).await;
                });
                Ok(PipeOutcome::Accepted)
            }
            OUT_PORT => {
                let (_reader, writer) = end.split();
                let _ = state.out.send(writer);
                Ok(PipeOutcome::Accepted)
            }
            _ => Ok(PipeOutcome::NoSuchPort),
        }
    }
}
