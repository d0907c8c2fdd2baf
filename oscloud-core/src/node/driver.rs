//! The driver of one link: joins a wire [`Session`] to the link's bytes and
//! to the local kernel.
//!
//! The session is sans-IO; this is the thin async part. One task owns the
//! session and reacts to four things: bytes from the link (read by a reader
//! task), commands from endpoints and pipe pumps, changes in the local
//! registry, and the session's timer. Bytes to send go to a writer task
//! through a bounded queue, so a slow link pushes back on the session
//! instead of growing memory, and reading never waits for writing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::remote::{Command, RemoteEndpoint, from_remote, to_remote};
use super::stats::LinkStats;
use crate::wire::{CallId, CloseCode, CloseReason, Event, PeerInfo, PipeId, Session};
use crate::{
    Entry, EntrySpec, Error, ExitReason, Kernel, NodeId, PipeEnd, Registration, RegistryEvent,
    Watch,
};

/// Where the driver gets the link's bytes.
pub(crate) enum Incoming {
    /// Datagrams, read by a task of their own; closed when the link is gone.
    Channel(mpsc::Receiver<Bytes>),
    /// A byte stream, read by the driver itself (no task hop per chunk).
    Stream {
        reader: crate::transport::StreamReader,
        buf: bytes::BytesMut,
    },
}

/// What [`Incoming::next`] brought.
enum Input {
    /// A datagram.
    Chunk(Bytes),
    /// Stream bytes, appended to the receive buffer.
    Buffered,
    /// The link is gone.
    Closed,
}

impl Incoming {
    /// Wait for input. Cancel-safe: a cancelled call has read nothing.
    async fn next(&mut self) -> Input {
        match self {
            Incoming::Channel(rx) => rx.recv().await.map_or(Input::Closed, Input::Chunk),
            Incoming::Stream { reader, buf } => {
                use tokio::io::AsyncReadExt;
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                match reader.read_buf(buf).await {
                    Ok(0) | Err(_) => Input::Closed,
                    Ok(_) => Input::Buffered,
                }
            }
        }
    }

    /// Hand what arrived to the session: whole frames leave the receive
    /// buffer without a copy, a partial one stays for the next read.
    fn feed(&mut self, session: &mut Session, input: Input) {
        match (self, input) {
            (_, Input::Chunk(chunk)) => session.handle_input(Instant::now(), &chunk),
            (Incoming::Stream { buf, .. }, Input::Buffered) => {
                session.handle_input_buf(Instant::now(), buf)
            }
            _ => {}
        }
    }
}

/// How a link hands bytes to the driver and takes bytes from it.
pub(crate) struct LinkChannels {
    /// Chunks read from the link (one datagram per chunk on datagram links).
    pub(crate) incoming: Incoming,
    /// Chunks to write to the link; the writer task ends when it is closed.
    pub(crate) outgoing: mpsc::Sender<Bytes>,
}

/// One pipe between a local end and the peer.
struct Bridge {
    /// Frames from the peer, towards the local reader (the inbound task).
    inbound: Option<mpsc::UnboundedSender<Bytes>>,
    /// Frames the session refused for lack of credit (and those queued
    /// behind them), in order, each holding its share of the pump's budget.
    waiting: VecDeque<(Bytes, OwnedSemaphorePermit)>,
    /// The task pumping local frames to the session.
    pump: Option<AbortHandle>,
    /// The task delivering the peer's frames to the local reader.
    deliver: Option<AbortHandle>,
    /// The local writers are gone (frames may still wait for credit).
    writers_done: bool,
    /// Every local frame was handed to the session and the peer was told.
    out_done: bool,
    in_done: bool,
    /// The peer sends no more (it half-closed the pipe).
    peer_ended: bool,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        for task in [self.pump.take(), self.deliver.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// The state of one link's driver.
pub(crate) struct Driver {
    kernel: Kernel,
    session: Session,
    link: String,
    commands_tx: mpsc::UnboundedSender<Command>,
    commands: mpsc::UnboundedReceiver<Command>,
    peer: Option<PeerInfo>,
    /// The peer's servers, registered here.
    remote: HashMap<u64, Registration>,
    /// Local registry changes, once connected.
    watch: Option<Watch>,
    /// Our calls waiting for the peer's reply.
    calls: HashMap<CallId, (String, oneshot::Sender<Result<Bytes, Error>>)>,
    pipes: HashMap<PipeId, Bridge>,
    /// Commands the session refused because its send queue was full.
    blocked: VecDeque<Command>,
    /// Round-robin cursor for calls to local groups.
    rr: usize,
    stats: Arc<LinkStats>,
    connected: Option<oneshot::Sender<NodeId>>,
}

/// How a link ended.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    pub(crate) reason: String,
    /// Whether the session had completed its handshake.
    pub(crate) was_connected: bool,
}

impl Driver {
    pub(crate) fn new(
        kernel: Kernel,
        session: Session,
        link: String,
        stats: Arc<LinkStats>,
        connected: Option<oneshot::Sender<NodeId>>,
    ) -> Self {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        Self {
            kernel,
            session,
            link,
            commands_tx,
            commands,
            peer: None,
            remote: HashMap::new(),
            watch: None,
            calls: HashMap::new(),
            pipes: HashMap::new(),
            blocked: VecDeque::new(),
            rr: 0,
            stats,
            connected,
        }
    }

    /// Run until the session closes or the link goes away.
    pub(crate) async fn run(mut self, mut io: LinkChannels) -> Ended {
        let mut pending_out: Option<Bytes> = None;
        let ended = loop {
            // Hand the session's output to the writer while it has room.
            loop {
                if pending_out.is_none() {
                    pending_out = self.session.poll_transmit(Instant::now());
                }
                let Some(chunk) = pending_out.take() else {
                    break;
                };
                match io.outgoing.try_send(chunk) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(chunk)) => {
                        pending_out = Some(chunk);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        break;
                    }
                }
            }
            if let Some(reason) = self.dispatch_events() {
                // A broken protocol is worth a warning on this side (the
                // peer logs its own view); a clean close or a timeout is not.
                if !reason.remote
                    && !matches!(reason.code, CloseCode::Normal | CloseCode::IdleTimeout)
                {
                    warn!(link = %self.link, "closing the link: {reason}");
                }
                // Let the writer send the Close packet.
                while let Some(chunk) = self.session.poll_transmit(Instant::now()) {
                    if io.outgoing.send(chunk).await.is_err() {
                        break;
                    }
                }
                break Ended {
                    reason: reason.to_string(),
                    was_connected: self.peer.is_some(),
                };
            }
            let deadline = self.session.poll_timeout();
            let want_write = pending_out.is_some();
            tokio::select! {
                input = io.incoming.next() => match input {
                    Input::Closed => {
                        break Ended {
                            reason: "the link closed".into(),
                            was_connected: self.peer.is_some(),
                        }
                    }
                    input => io.incoming.feed(&mut self.session, input),
                },
                permit = io.outgoing.reserve(), if want_write => match permit {
                    Ok(permit) => {
                        if let Some(chunk) = pending_out.take() {
                            permit.send(chunk);
                        }
                    }
                    Err(_) => {
                        break Ended {
                            reason: "the link's writer failed".into(),
                            was_connected: self.peer.is_some(),
                        }
                    }
                },
                // While the session refuses messages, new commands wait in
                // their channel (in order) rather than piling up here.
                Some(cmd) = self.commands.recv(), if self.blocked.is_empty() => {
                    self.on_command(cmd)
                }
                Some(ev) = next_event(&mut self.watch), if self.watch.is_some() => {
                    self.on_local_change(ev)
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.session.handle_timeout(Instant::now())
                }
            }
        };
        self.shut_down(&ended.reason);
        ended
    }

    /// Act on every event the session has; returns the close reason once
    /// the session is over.
    fn dispatch_events(&mut self) -> Option<CloseReason> {
        while let Some(ev) = self.session.poll_event() {
            if let Event::Closed { reason } = ev {
                return Some(reason);
            }
            self.on_event(ev);
        }
        self.stats.update(&self.session.stats());
        None
    }

    fn peer_node(&self) -> NodeId {
        self.peer.as_ref().map_or(self.kernel.node(), |p| p.node)
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Connected(peer) => {
                info!(link = %self.link, peer = %peer.node.short(), "linked");
                if let Some(tx) = self.connected.take() {
                    let _ = tx.send(peer.node);
                }
                self.peer = Some(peer);
                // The watch starts with every local entry: announce them.
                self.watch = Some(self.kernel.registry().watch());
            }
            Event::PeerAnnounced(info) => {
                let spec = EntrySpec {
                    name: info.name.clone(),
                    node: self.peer_node(),
                    capabilities: info.capabilities,
                    group: info.group,
                    endpoint: Arc::new(RemoteEndpoint {
                        name: info.name.clone(),
                        node: self.peer_node(),
                        commands: self.commands_tx.clone(),
                    }),
                };
                match self.kernel.registry().insert(spec) {
                    Ok(reg) => {
                        self.remote.insert(info.id, reg);
                    }
                    Err(err) => warn!(
                        link = %self.link,
                        name = %info.name,
                        "the peer's server is not visible here: {err}"
                    ),
                }
            }
            Event::PeerWithdrew { id, reason } => {
                if let Some(reg) = self.remote.remove(&id) {
                    reg.unregister(reason);
                }
            }
            Event::Cast { to, payload } => match self.local_entry(&to) {
                Ok(entry) => {
                    if let Err(err) = entry.endpoint().cast(payload) {
                        debug!(link = %self.link, "cast from peer to {to:?} failed: {err}");
                    }
                }
                Err(err) => debug!(link = %self.link, "cast from peer dropped: {err}"),
            },
            Event::Call { id, to, payload } => match self.local_entry(&to) {
                Ok(entry) => {
                    let commands = self.commands_tx.clone();
                    tokio::spawn(async move {
                        let result = entry.endpoint().call(payload).await;
                        let _ = commands.send(Command::Reply {
                            id,
                            result: result.map_err(|e| to_remote(&e)),
                        });
                    });
                }
                Err(err) => self.send_reply(id, Err(to_remote(&err))),
            },
            Event::Reply { id, result } => {
                if let Some((to, reply)) = self.calls.remove(&id) {
                    let _ = reply.send(result.map_err(|e| from_remote(&to, e)));
                }
            }
            Event::PipeOpened { id, server, port } => self.on_pipe_opened(id, server, port),
            Event::PipeData { id, bytes } => {
                let sent = self
                    .pipes
                    .get(&id)
                    .and_then(|b| b.inbound.as_ref())
                    .map(|tx| tx.send(bytes));
                if !matches!(sent, Some(Ok(()))) {
                    debug!(link = %self.link, %id, "data for a pipe whose reader is gone");
                }
            }
            Event::PipeWritable { id } => self.pipe_flush(id),
            Event::PipeEnded { id } => {
                // The peer writes no more: the local reader gets what is
                // buffered, then end of stream.
                if let Some(b) = self.pipes.get_mut(&id) {
                    b.inbound.take();
                    b.peer_ended = true;
                }
                self.maybe_close_pipe(id);
            }
            Event::PipeClosed { id, reason } => {
                debug!(link = %self.link, %id, %reason, "pipe closed by peer");
                // Dropping the bridge ends the inbound task after it drained
                // (the local reader sees end of stream) and stops the pump.
                if let Some(mut bridge) = self.pipes.remove(&id) {
                    bridge.deliver.take(); // let it drain, do not abort it
                }
            }
            Event::Writable => self.retry_blocked(),
            Event::Closed { .. } => {}
        }
    }

    /// The session has room again: replay refused commands in order, and
    /// stop at the first one refused again (it stays first in line).
    fn retry_blocked(&mut self) {
        for _ in 0..self.blocked.len() {
            let Some(cmd) = self.blocked.pop_front() else {
                break;
            };
            let before = self.blocked.len();
            self.on_command(cmd);
            if self.blocked.len() > before {
                if let Some(again) = self.blocked.pop_back() {
                    self.blocked.push_front(again);
                }
                break;
            }
        }
    }

    /// A local server for a message the peer sent: never one on another
    /// node (no forwarding), round-robin over local group members.
    fn local_entry(&mut self, name: &str) -> Result<Entry, Error> {
        let local = self.kernel.node();
        let members: Vec<Entry> = self
            .kernel
            .registry()
            .lookup_all(name)
            .into_iter()
            .filter(|e| e.node() == local)
            .collect();
        if members.is_empty() {
            return Err(Error::NotFound(name.to_owned()));
        }
        self.rr = self.rr.wrapping_add(1);
        Ok(members[self.rr % members.len()].clone())
    }

    fn on_local_change(&mut self, ev: RegistryEvent) {
        let local = self.kernel.node();
        let result = match &ev {
            RegistryEvent::Added(e) if e.node() == local => {
                self.session.announce(crate::wire::EntryInfo {
                    id: e.id().0,
                    name: e.name().to_owned(),
                    capabilities: e.capabilities().clone(),
                    group: e.is_group_member(),
                })
            }
            RegistryEvent::Removed { entry, reason } if entry.node() == local => {
                self.session.withdraw(entry.id().0, reason.clone())
            }
            _ => Ok(()),
        };
        if let Err(err) = result {
            warn!(link = %self.link, "registry sync failed: {err}");
        }
    }

    fn send_reply(&mut self, id: CallId, result: Result<Bytes, crate::wire::RemoteError>) {
        match self.session.reply(id, result.clone()) {
            Ok(()) => {}
            Err(Error::WireWouldBlock { .. }) => {
                self.blocked.push_back(Command::Reply { id, result })
            }
            Err(err) => debug!(link = %self.link, "reply not sent: {err}"),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Cast { to, msg } => match self.session.cast(&to, msg.clone()) {
                Ok(()) => {}
                Err(Error::WireWouldBlock { .. }) => {
                    self.blocked.push_back(Command::Cast { to, msg })
                }
                Err(err) => debug!(link = %self.link, "cast to {to:?} not sent: {err}"),
            },
            Command::Call { to, msg, reply } => {
                if reply.is_closed() {
                    return; // the caller gave up already
                }
                self.sweep_abandoned_calls();
                match self.session.call(&to, msg.clone()) {
                    Ok(id) => {
                        self.calls.insert(id, (to, reply));
                    }
                    Err(Error::WireWouldBlock { .. }) => {
                        self.blocked.push_back(Command::Call { to, msg, reply })
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::OpenPipe {
                server,
                port,
                end,
                reply,
            } => match self.session.open_pipe(&server, &port) {
                Ok(id) => {
                    self.bridge(id, end);
                    let _ = reply.send(Ok(()));
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            },
            Command::Reply { id, result } => self.send_reply(id, result),
            Command::PipeSend {
                pipe,
                frame,
                budget,
            } => {
                if let Some(b) = self.pipes.get_mut(&pipe) {
                    b.waiting.push_back((frame, budget));
                    self.pipe_flush(pipe);
                }
            }
            Command::PipeConsumed { pipe, n } => {
                let _ = self.session.pipe_consumed(pipe, n);
            }
            Command::PipeOutDone { pipe } => {
                // Local writers are done: tell the peer (half-close), keep
                // reading what it still sends.
                // (once the frames still waiting for credit are sent).
                if let Some(b) = self.pipes.get_mut(&pipe) {
                    b.writers_done = true;
                }
                self.pipe_flush(pipe);
            }
            Command::PipeInDone { pipe } => {
                if let Some(b) = self.pipes.get_mut(&pipe) {
                    b.in_done = true;
                }
                self.maybe_close_pipe(pipe);
            }
            Command::PipeAttached { pipe, result } => {
                if let Err(err) = result {
                    debug!(link = %self.link, %pipe, "pipe refused: {err}");
                    self.pipes.remove(&pipe);
                    let _ = self
                        .session
                        .close_pipe(pipe, ExitReason::Failed(err.to_string()));
                }
            }
        }
    }

    /// Forget calls whose caller gave up (timed out or was cancelled), so
    /// they do not hold the session's pending-call slots.
    fn sweep_abandoned_calls(&mut self) {
        if self.calls.len() < 64 {
            return;
        }
        let abandoned: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, (_, reply))| reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            self.calls.remove(&id);
            self.session.cancel_call(id);
        }
    }

    /// Hand a pipe's waiting frames to the session, in order, until it
    /// refuses one for lack of credit ([`Event::PipeWritable`] follows).
    /// Once all are sent and the local writers are done, end the pipe.
    fn pipe_flush(&mut self, pipe: PipeId) {
        loop {
            let Some(bridge) = self.pipes.get_mut(&pipe) else {
                return;
            };
            let Some((frame, budget)) = bridge.waiting.pop_front() else {
                if bridge.writers_done && !bridge.out_done {
                    bridge.out_done = true;
                    let _ = self.session.end_pipe(pipe);
                    self.maybe_close_pipe(pipe);
                }
                return;
            };
            match self.session.pipe_send(pipe, frame.clone()) {
                Ok(()) => drop(budget),
                Err(Error::WireWouldBlock { .. }) => {
                    if let Some(b) = self.pipes.get_mut(&pipe) {
                        b.waiting.push_front((frame, budget));
                    }
                    return;
                }
                Err(err) => {
                    // Dropping the bridge stops the pump; the pipe is closed.
                    warn!(link = %self.link, %pipe, "pipe frame not sent, closing the pipe: {err}");
                    self.pipes.remove(&pipe);
                    let _ = self
                        .session
                        .close_pipe(pipe, ExitReason::Failed(err.to_string()));
                    return;
                }
            }
        }
    }

    /// Close a pipe once neither side has anything more to say: the local
    /// writers are done, and the local reader is gone or the peer ended.
    fn maybe_close_pipe(&mut self, pipe: PipeId) {
        if self
            .pipes
            .get(&pipe)
            .is_some_and(|b| b.out_done && (b.in_done || b.peer_ended))
            && let Some(mut bridge) = self.pipes.remove(&pipe)
        {
            // Let the delivery task drain to the local reader; do not abort.
            bridge.deliver.take();
            let _ = self.session.close_pipe(pipe, ExitReason::Normal);
        }
    }

    fn on_pipe_opened(&mut self, id: PipeId, server: String, port: String) {
        let entry = match self.local_entry(&server) {
            Ok(entry) => entry,
            Err(err) => {
                let _ = self
                    .session
                    .close_pipe(id, ExitReason::Failed(err.to_string()));
                return;
            }
        };
        let (mine, theirs) = self.kernel.duplex();
        self.bridge(id, mine);
        let commands = self.commands_tx.clone();
        tokio::spawn(async move {
            let result = entry.endpoint().open_pipe(&port, theirs).await;
            let _ = commands.send(Command::PipeAttached { pipe: id, result });
        });
    }

    /// Join the local pipe end `end` to the session's pipe `id`.
    fn bridge(&mut self, id: PipeId, end: PipeEnd) {
        let (mut reader, writer) = end.split();
        let commands = self.commands_tx.clone();
        // Outbound: local frames → session. The pump runs ahead of the
        // session by at most one window of bytes (the peer's credit is the
        // back-pressure beyond that), so frames reach the driver in batches.
        let window = self
            .peer
            .as_ref()
            .map_or(64 * 1024, |p| p.pipe_window as usize)
            .clamp(1, Semaphore::MAX_PERMITS);
        let budget = Arc::new(Semaphore::new(window));
        let pump = tokio::spawn({
            let commands = commands.clone();
            async move {
                while let Some(frame) = reader.recv().await {
                    // A frame larger than the window takes all of it (the
                    // session then refuses it with a clear error).
                    let need = u32::try_from(frame.len().clamp(1, window)).unwrap_or(u32::MAX);
                    let Ok(budget) = budget.clone().acquire_many_owned(need).await else {
                        return;
                    };
                    if commands
                        .send(Command::PipeSend {
                            pipe: id,
                            frame,
                            budget,
                        })
                        .is_err()
                    {
                        return; // the link is gone
                    }
                }
                // Every frame was handed over before this, in order.
                let _ = commands.send(Command::PipeOutDone { pipe: id });
            }
        });
        // Inbound: the peer's frames → the local reader; credit goes back
        // as the local reader takes them.
        let (inbound, mut frames) = mpsc::unbounded_channel::<Bytes>();
        let deliver = tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = frames.recv() => match frame {
                        Some(frame) => {
                            let n = frame.len();
                            if writer.send(frame).await.is_err() {
                                break;
                            }
                            let _ = commands.send(Command::PipeConsumed { pipe: id, n });
                        }
                        None => return, // the peer closed: dropping `writer` is EOF
                    },
                    () = writer.closed() => break,
                }
            }
            let _ = commands.send(Command::PipeInDone { pipe: id });
        });
        self.pipes.insert(
            id,
            Bridge {
                inbound: Some(inbound),
                waiting: VecDeque::new(),
                pump: Some(pump.abort_handle()),
                deliver: Some(deliver.abort_handle()),
                writers_done: false,
                out_done: false,
                in_done: false,
                peer_ended: false,
            },
        );
    }

    /// The link is over: the peer's servers leave the registry, our calls
    /// fail, pipes close.
    fn shut_down(&mut self, reason: &str) {
        info!(link = %self.link, "link down: {reason}");
        for (_, reg) in self.remote.drain() {
            reg.unregister(ExitReason::LinkDown(reason.to_owned()));
        }
        for (_, (to, reply)) in self.calls.drain() {
            let _ = reply.send(Err(Error::ServerStopped {
                name: to,
                reason: format!("link down: {reason}"),
            }));
        }
        for cmd in self.blocked.drain(..) {
            if let Command::Call { to, reply, .. } = cmd {
                let _ = reply.send(Err(Error::ServerStopped {
                    name: to,
                    reason: format!("link down: {reason}"),
                }));
            }
        }
        self.pipes.clear();
        self.commands.close();
        self.stats.update(&self.session.stats());
    }
}

impl Drop for Driver {
    /// A driver dropped before it finished (the node shut down) still takes
    /// the peer's servers out of the registry as "link down" and fails the
    /// calls waiting on it.
    fn drop(&mut self) {
        if !self.remote.is_empty() || !self.calls.is_empty() {
            self.shut_down("this node shut down");
        }
    }
}

async fn next_event(watch: &mut Option<Watch>) -> Option<RegistryEvent> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
