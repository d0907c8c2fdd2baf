//! A link's send side ([`LinkWire`]) run by a script, for its property
//! tests and its fuzz target: several callers cast and call through their
//! [`RemoteEndpoint`]s (directly into the session, or queued to the
//! driver), a model of the driver takes its commands, reads, writes and
//! sends pipe frames, and the link's writer takes writes as the script
//! says (partly, not at all, or up to a bounded line). A sans-IO peer
//! session reads the line, answers every call with its request, and
//! checks that every cast, call and pipe frame arrives exactly once and in
//! its sender's order; at the end of the script, the line is freed and
//! everything accepted must arrive, every call answered with its own
//! request. A broken rule panics.
//!
//! The model driver does with its commands what the link's driver does
//! (`driver::on_command`, `retry_blocked`), through the same [`Wire`]
//! methods; the callers' paths are the node's own.

// A checker: a broken rule is a panic, which the property test and the
// fuzzer report.
#![allow(clippy::panic)]

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use super::link_io::Outgoing;
use super::link_wire::{LinkWire, Taken};
use super::remote::{Command, RemoteEndpoint, SendQueue};
use super::stats::LinkShared;
use crate::wire::fuzzing::pump;
use crate::wire::{Config, Event, FramingKind, LocalInfo, PipeId, Session};
use crate::{Endpoint, Error, NodeId};

/// Callers of the simulated link.
pub(crate) const CALLERS: u8 = 3;

/// One step of the script.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// A caller tries a cast of `len` bytes of padding (refused while the
    /// link's queue is full). A caller still waiting for an earlier cast
    /// or call polls that instead.
    TryCast { caller: u8, len: u16 },
    /// A caller casts, waiting for room in the link's queue.
    Cast { caller: u8, len: u16 },
    /// A caller calls (and waits for the answer).
    Call { caller: u8, len: u16 },
    /// The driver's turn on its commands.
    Commands,
    /// The driver's turn on its writer.
    Write,
    /// The driver reads what the peer sent and acts on the session's
    /// events.
    Read,
    /// A local pipe writer has a frame of `len` bytes for the peer.
    Pipe { len: u16 },
    /// The peer reads up to `n` bytes off the line.
    PeerRead { n: u16 },
    /// From now on a write takes at most `limit` bytes and the line holds
    /// `room` bytes the peer has not read; `stall`: the next write takes
    /// nothing (pending).
    Line { limit: u16, room: u16, stall: bool },
}

impl Op {
    /// The script `data` spells, three bytes a step (for the fuzz target).
    pub(crate) fn script(data: &[u8]) -> Vec<Op> {
        data.chunks_exact(3)
            .map(|c| {
                let arg = u16::from_le_bytes([c[1], c[2]]);
                let caller = c[1] % CALLERS;
                let len = u16::from(c[2]) * 4;
                match c[0] % 10 {
                    0 => Op::TryCast { caller, len },
                    1 => Op::Cast { caller, len },
                    2 => Op::Call { caller, len },
                    3 => Op::Commands,
                    4 => Op::Write,
                    5 => Op::Read,
                    6 => Op::Pipe { len: arg % 1024 },
                    7 => Op::PeerRead { n: arg },
                    8 => Op::Line {
                        limit: u16::from(c[1]) * 8 + 1,
                        room: u16::from(c[2]) * 16 + 1,
                        stall: c[0] >= 128,
                    },
                    _ => Op::Write,
                }
            })
            .collect()
    }
}

/// The bytes written to the link and not yet read by the peer, and how
/// the line takes writes.
struct Line {
    bytes: Vec<u8>,
    limit: usize,
    room: usize,
    stall: bool,
    /// The writer waiting for room.
    waker: Option<Waker>,
}

/// The link's writer: writes onto the shared [`Line`].
struct LineWriter(Arc<Mutex<Line>>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut line = lock(&self.0);
        let free = line.room.saturating_sub(line.bytes.len()).min(line.limit);
        if std::mem::take(&mut line.stall) || free == 0 {
            line.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(free - n);
            line.bytes.extend_from_slice(&buf[..take]);
            n += take;
            if n == free {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What a caller waits for.
type Waiting = Pin<Box<dyn Future<Output = Result<Option<Bytes>, Error>> + Send>>;

/// One caller: its endpoint, the sequence number of its next message,
/// and the cast or call it waits for (with that call's request).
struct Caller {
    endpoint: Arc<RemoteEndpoint>,
    next: u32,
    waiting: Option<(Waiting, Option<Bytes>)>,
}

/// A message of caller `caller`, number `seq`, with `len` bytes of
/// padding.
fn message(caller: u8, seq: u32, len: u16) -> Bytes {
    let mut m = BytesMut::with_capacity(5 + usize::from(len));
    m.extend_from_slice(&[caller]);
    m.extend_from_slice(&seq.to_be_bytes());
    m.resize(5 + usize::from(len), seq as u8);
    m.freeze()
}

/// The caller and sequence number a message carries.
fn read_message(m: &[u8]) -> (usize, u32) {
    assert!(m.len() >= 5, "a message lost its header: {m:?}");
    let seq = u32::from_be_bytes([m[1], m[2], m[3], m[4]]);
    (usize::from(m[0]), seq)
}

/// The peer: what it has received, and what it sends back.
struct Peer {
    session: Session,
    /// Per caller, the messages received (their sequence numbers must run
    /// 0, 1, 2...).
    received: Vec<u32>,
    /// Pipe frames received.
    frames: u32,
    /// Bytes for our side, not yet read by the driver.
    back: Vec<u8>,
}

impl Peer {
    fn got(&mut self, payload: &[u8]) {
        let (caller, seq) = read_message(payload);
        let expected = self.received.get(caller).copied();
        assert_eq!(
            Some(seq),
            expected,
            "caller {caller}'s message {seq} arrived when {expected:?} was next (lost, duplicated or overtaken)"
        );
        self.received[caller] += 1;
    }

    /// Read `bytes` off the line and act on them.
    fn read(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        self.session.handle_input(now, bytes);
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::Cast { payload, .. } => self.got(&payload),
                Event::Call { id, payload, .. } => {
                    self.got(&payload);
                    let replied = self.session.reply(id, Ok(payload));
                    assert!(replied.is_ok(), "the peer could not answer: {replied:?}");
                }
                Event::PipeData { id, bytes } => {
                    let (_, seq) = read_message(&bytes);
                    assert_eq!(seq, self.frames, "pipe frame out of order");
                    self.frames += 1;
                    let _ = self.session.pipe_consumed(id, bytes.len());
                }
                Event::Closed { reason } => panic!("the peer's session closed: {reason}"),
                _ => {}
            }
        }
        while let Some(out) = self.session.poll_transmit(now) {
            self.back.extend_from_slice(&out);
        }
    }
}

/// The link under test and everything around it.
struct Sim {
    wire: Arc<LinkWire>,
    line: Arc<Mutex<Line>>,
    commands: mpsc::UnboundedReceiver<Command>,
    queue: Arc<SendQueue>,
    /// Commands the session refused (the driver's `blocked`).
    blocked: VecDeque<Command>,
    callers: Vec<Caller>,
    peer: Peer,
    pipe: PipeId,
    /// Pipe frames sent so far, and the one waiting for credit.
    frames: u32,
    frame_waiting: Option<Bytes>,
}

/// A session's configuration on the simulated link: acks at once (the
/// simulation's clock is the real one), a short send queue (so that
/// senders find the session full), a long idle timeout.
fn config(max_send_queue: usize) -> Config {
    let mut c = Config::new(FramingKind::ReliableStream);
    c.max_send_queue = max_send_queue;
    c.ack_delay = Duration::ZERO;
    c.idle_timeout = Duration::from_secs(600);
    c.keepalive = Duration::from_secs(300);
    c.pipe_window = 4096;
    c
}

impl Sim {
    /// A connected link: our session's send queue holds `max_send_queue`
    /// messages, the link's queue `max_queued` bytes.
    fn new(max_send_queue: usize, max_queued: usize) -> Self {
        let now = Instant::now();
        let mut a = Session::new(
            config(max_send_queue),
            LocalInfo::new(NodeId::from_bytes([0xa; 16])),
            now,
        )
        .expect("config a");
        let mut b = Session::new(
            config(100_000),
            LocalInfo::new(NodeId::from_bytes([0xb; 16])),
            now,
        )
        .expect("config b");
        pump(&mut a, &mut b, now);
        let pipe = a.open_pipe("sink", "in").expect("pipe opened");
        pump(&mut a, &mut b, now);
        assert!(a.is_connected() && b.is_connected(), "handshake");
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}

        let shared = Arc::new(LinkShared::new(
            "sim".into(),
            "peer".into(),
            0,
            Default::default(),
        ));
        let wire = Arc::new(LinkWire::new(a, shared));
        let line = Arc::new(Mutex::new(Line {
            bytes: Vec::new(),
            limit: usize::MAX,
            room: usize::MAX,
            stall: false,
            waker: None,
        }));
        wire.put_out(Outgoing::Stream {
            writer: Box::new(LineWriter(line.clone())),
            batch: VecDeque::new(),
            bytes: 0,
            small: BytesMut::new(),
        });
        wire.lock().wakers = Some((Waker::noop().clone(), Waker::noop().clone()));
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let queue = Arc::new(SendQueue::new(max_queued));
        let callers = (0..CALLERS)
            .map(|i| Caller {
                endpoint: Arc::new(RemoteEndpoint::new(
                    Arc::from(format!("server{i}").as_str()),
                    NodeId::from_bytes([0xb; 16]),
                    commands_tx.clone(),
                    queue.clone(),
                    wire.clone(),
                )),
                next: 0,
                waiting: None,
            })
            .collect();
        Self {
            wire,
            line,
            commands,
            queue,
            blocked: VecDeque::new(),
            callers,
            peer: Peer {
                session: b,
                received: vec![0; usize::from(CALLERS)],
                frames: 0,
                back: Vec::new(),
            },
            pipe,
            frames: 0,
            frame_waiting: None,
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::TryCast { caller, len } | Op::Cast { caller, len } | Op::Call { caller, len } => {
                let c = usize::from(caller % CALLERS);
                if self.callers[c].waiting.is_some() {
                    self.poll_caller(c);
                } else {
                    self.send(c, op, len);
                }
            }
            Op::Commands => self.commands(),
            Op::Write => self.write(),
            Op::Read => self.read(),
            Op::Pipe { len } => self.pipe(len),
            Op::PeerRead { n } => self.peer_read(usize::from(n)),
            Op::Line { limit, room, stall } => {
                let mut line = lock(&self.line);
                line.limit = usize::from(limit.max(1));
                line.room = usize::from(room.max(1));
                line.stall = stall;
            }
        }
    }

    /// Caller `c` sends its next message.
    fn send(&mut self, c: usize, op: Op, len: u16) {
        let caller = &mut self.callers[c];
        let msg = message(c as u8, caller.next, len);
        let endpoint = caller.endpoint.clone();
        match op {
            Op::TryCast { .. } => match endpoint.try_cast(msg) {
                Ok(()) => caller.next += 1,
                Err(Error::LinkBusy { .. }) => {}
                Err(err) => panic!("cast failed: {err}"),
            },
            Op::Cast { .. } => {
                caller.next += 1;
                let cast = endpoint.cast(msg);
                caller.waiting = Some((Box::pin(async move { cast.await.map(|()| None) }), None));
                self.poll_caller(c);
            }
            _ => {
                caller.next += 1;
                let request = msg.clone();
                let call = async move { endpoint.call(msg).await.map(Some) };
                caller.waiting = Some((Box::pin(call), Some(request)));
                self.poll_caller(c);
            }
        }
    }

    /// Poll what caller `c` waits for; a call must be answered with its
    /// own request.
    fn poll_caller(&mut self, c: usize) {
        let Some((fut, request)) = self.callers[c].waiting.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(done) = fut.as_mut().poll(&mut cx) {
            let answer = done.unwrap_or_else(|err| panic!("caller {c}: {err}"));
            assert_eq!(&answer, request, "caller {c} got another call's reply");
            self.callers[c].waiting = None;
        }
    }

    /// The driver's commands source (not polled while the session refuses
    /// commands), as `driver::run` takes it.
    fn commands(&mut self) {
        let mut taken = 0;
        for _ in 0..64 {
            if !self.blocked.is_empty() {
                break;
            }
            let Ok(cmd) = self.commands.try_recv() else {
                break;
            };
            if let Command::Cast { msg, .. } | Command::Call { msg, .. } = &cmd {
                taken += self.queue.taken(msg.len());
            }
            self.take(cmd);
        }
        self.queue.release(taken);
    }

    /// `driver::on_command` for casts and calls.
    fn take(&mut self, cmd: Command) {
        match cmd {
            Command::Cast { to, msg, trace } => {
                let sent = self.wire.lock().take_cast(&to, &msg, trace);
                match sent {
                    Ok(()) => {}
                    Err(Error::WireWouldBlock { .. }) => {
                        self.blocked.push_back(Command::Cast { to, msg, trace })
                    }
                    Err(err) => panic!("queued cast failed: {err}"),
                }
            }
            Command::Call {
                to,
                msg,
                trace,
                reply,
            } => {
                let taken = self.wire.lock().take_call(&to, &msg, trace, reply);
                match taken {
                    Taken::Done => {}
                    Taken::Failed(_, err) => panic!("queued call failed: {err}"),
                    Taken::Blocked(reply) => self.blocked.push_back(Command::Call {
                        to,
                        msg,
                        trace,
                        reply,
                    }),
                }
            }
            other => panic!("unexpected command {other:?}"),
        }
    }

    /// `driver::retry_blocked`: in order, stopping at the first refused
    /// again.
    fn retry_blocked(&mut self) {
        for _ in 0..self.blocked.len() {
            let Some(cmd) = self.blocked.pop_front() else {
                break;
            };
            let before = self.blocked.len();
            self.take(cmd);
            if self.blocked.len() > before {
                if let Some(again) = self.blocked.pop_back() {
                    self.blocked.push_front(again);
                }
                break;
            }
        }
    }

    /// The driver's turn: take the session's output, write once.
    fn write(&mut self) {
        let mut w = self.wire.lock();
        let wire = &mut *w;
        if let Some(out) = wire.out.as_mut() {
            out.fill(&mut wire.session);
        }
        let mut cx = Context::from_waker(Waker::noop());
        let (w, written) = self.wire.write_once(w, &mut cx);
        drop(w);
        if let Some(Poll::Ready(Err(_))) = written {
            panic!("the line never fails");
        }
    }

    /// The driver reads what the peer sent and handles the session's
    /// events.
    fn read(&mut self) {
        let input = std::mem::take(&mut self.peer.back);
        let now = Instant::now();
        {
            let mut w = self.wire.lock();
            w.session.handle_input(now, &input);
            if w.session.poll_timeout().is_some_and(|t| t <= now) {
                w.session.handle_timeout(now);
            }
        }
        loop {
            let ev = self.wire.lock().session.poll_event();
            let Some(ev) = ev else { break };
            match ev {
                Event::Reply { id, result } => {
                    let waiting = self.wire.lock().calls.remove(&id);
                    let (_, reply) = waiting.expect("a reply to a call we made");
                    let _ = reply.send(result.map_err(|e| Error::Remote {
                        name: "peer".into(),
                        message: e.message,
                    }));
                }
                Event::Writable => self.retry_blocked(),
                Event::PipeWritable { .. } => self.pipe_retry(),
                Event::Closed { reason } => panic!("our session closed: {reason}"),
                _ => {}
            }
        }
    }

    /// A local pipe writer's frame, if the one before went.
    fn pipe(&mut self, len: u16) {
        if self.frame_waiting.is_none() {
            self.frame_waiting = Some(message(0, self.frames, len));
            self.frames += 1;
        }
        self.pipe_retry();
    }

    /// Send the frame waiting for credit, if there is credit now.
    fn pipe_retry(&mut self) {
        let Some(frame) = self.frame_waiting.take() else {
            return;
        };
        let sent = self.wire.lock().session.pipe_send(self.pipe, frame.clone());
        match sent {
            Ok(()) => {}
            Err(Error::WireWouldBlock { .. }) => self.frame_waiting = Some(frame),
            Err(err) => panic!("pipe frame refused: {err}"),
        }
    }

    /// The peer reads up to `n` bytes off the line.
    fn peer_read(&mut self, n: usize) {
        let bytes: Vec<u8> = {
            let mut line = lock(&self.line);
            let n = n.min(line.bytes.len());
            if let Some(waker) = line.waker.take() {
                waker.wake();
            }
            line.bytes.drain(..n).collect()
        };
        if !bytes.is_empty() {
            self.peer.read(&bytes);
        }
    }

    /// Whether nothing is left to move.
    fn settled(&self) -> bool {
        self.callers.iter().all(|c| c.waiting.is_none())
            && self.blocked.is_empty()
            && self.commands.is_empty()
            && self.frame_waiting.is_none()
            && self.peer.back.is_empty()
            && lock(&self.line).bytes.is_empty()
            && self.wire.lock().calls.is_empty()
            && self.peer.frames == self.frames
            && self
                .callers
                .iter()
                .zip(&self.peer.received)
                .all(|(c, got)| c.next == *got)
    }

    /// Free the line and run the driver, peer and callers until
    /// everything accepted arrived.
    fn finish(&mut self) {
        {
            let mut line = lock(&self.line);
            line.limit = usize::MAX;
            line.room = usize::MAX;
            line.stall = false;
        }
        for _ in 0..10_000 {
            for c in 0..self.callers.len() {
                self.poll_caller(c);
            }
            self.commands();
            self.pipe_retry();
            self.write();
            self.peer_read(usize::MAX);
            self.read();
            if self.settled() {
                assert_eq!(self.wire.lock().backlog, 0, "backlog left");
                return;
            }
        }
        let sent: Vec<u32> = self.callers.iter().map(|c| c.next).collect();
        panic!(
            "the link did not settle: sent {sent:?}, received {:?}, {} blocked, pipe frames {} of {}",
            self.peer.received,
            self.blocked.len(),
            self.peer.frames,
            self.frames
        );
    }
}

/// Run `script` on a fresh link whose session's send queue holds
/// `max_send_queue` messages and the link's queue `max_queued` bytes;
/// panics if a cast, call or pipe frame is lost, duplicated, reordered
/// within its sender, or a call gets another's reply.
pub(crate) fn run(max_send_queue: usize, max_queued: usize, script: &[Op]) {
    let mut sim = Sim::new(max_send_queue.max(1), max_queued.max(1));
    for op in script {
        sim.step(*op);
    }
    sim.finish();
}
