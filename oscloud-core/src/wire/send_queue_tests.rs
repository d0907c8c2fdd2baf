//! Send scheduling in the session (`send_queue.rs`, `docs/PROTOCOL.md`
//! §7.1): messages overtake queued pipe data on a lossy link with a small
//! window, and no ordering the protocol promises is broken. Time is
//! simulated; the tests check order, never durations.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::harness::{Damage, Pair};
use super::*;
use crate::{Error, ExitReason};

/// Lossy framings: a serial line, CAN FD, classic CAN.
const LOSSY: [FramingKind; 3] = [
    FramingKind::LossyStream,
    FramingKind::Datagram { mtu: 64 },
    FramingKind::Datagram { mtu: 8 },
];

fn config(kind: FramingKind, window: u32, fifo: bool) -> Config {
    let mut c = Config::new(kind);
    c.send_window = window;
    c.max_frame = if kind == (FramingKind::Datagram { mtu: 8 }) {
        128
    } else {
        512
    };
    c.keepalive = Duration::from_secs(1);
    c.idle_timeout = Duration::from_secs(120);
    c.fifo_send_queue = fifo;
    c
}

fn connected(c: Config, damage: Damage, seed: u64) -> Pair {
    let mut p = Pair::with_configs(c.clone(), c, damage, seed);
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    p.a_events.clear();
    p.b_events.clear();
    p
}

/// What `b` saw of a pipe written by `a` and a call made behind it.
#[derive(Debug, Default)]
struct Seen {
    frames: Vec<Bytes>,
    /// Frames `b` had received when the call arrived.
    frames_before_call: Option<usize>,
    /// Frames `b` had received when `a` got the reply.
    frames_at_reply: Option<usize>,
    /// Frames `b` had received when the pipe closed.
    frames_at_close: Option<usize>,
}

/// `a` writes `n` frames on a pipe, one round trip of them goes out, then
/// `a` makes a call and closes the pipe; run until all arrived.
fn call_behind_pipe(kind: FramingKind, fifo: bool, n: usize) -> (Seen, Vec<Bytes>) {
    let mut p = connected(config(kind, 8, fifo), Damage::none(), 5);
    let pipe = p.a.open_pipe("sink", "in").expect("open");
    let len = p.a.max_frame() / 2;
    let frames: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; len])).collect();
    for f in &frames {
        p.a.pipe_send(pipe, f.clone())
            .expect("within the pipe window");
    }
    // The window fills with the PipeOpen and the first pipe data.
    p.transfer();
    let call = p.a.call("svc", Bytes::from_static(b"ping")).expect("call");
    p.a.close_pipe(pipe, ExitReason::Normal).expect("close");
    let mut seen = Seen::default();
    for _ in 0..100_000 {
        let moved = p.transfer();
        for ev in std::mem::take(&mut p.b_events) {
            match ev {
                Event::PipeOpened { .. } => {}
                Event::PipeData { id, bytes } => {
                    p.b.pipe_consumed(id, bytes.len()).expect("consume");
                    seen.frames.push(bytes);
                }
                Event::Call { id, .. } => {
                    seen.frames_before_call = Some(seen.frames.len());
                    p.b.reply(id, Ok(Bytes::from_static(b"pong")))
                        .expect("reply");
                }
                Event::PipeClosed { .. } => seen.frames_at_close = Some(seen.frames.len()),
                other => panic!("b: unexpected {other:?}"),
            }
        }
        for ev in std::mem::take(&mut p.a_events) {
            match ev {
                Event::Reply { id, result } => {
                    assert_eq!(id, call);
                    assert_eq!(result, Ok(Bytes::from_static(b"pong")));
                    seen.frames_at_reply = Some(seen.frames.len());
                }
                Event::PipeWritable { .. } => {}
                other => panic!("a: unexpected {other:?}"),
            }
        }
        if seen.frames_at_close.is_some() && seen.frames_at_reply.is_some() {
            break;
        }
        if !moved {
            assert!(p.step_time(), "no timer left");
        }
    }
    (seen, frames)
}

#[test]
fn a_call_overtakes_queued_pipe_data_on_a_small_window() {
    for kind in LOSSY {
        let n = 40;
        let (seen, frames) = call_behind_pipe(kind, false, n);
        // Only what was in flight (the window of 8, the PipeOpen among
        // them) went before the call: the call took the next free slot.
        let before = seen.frames_before_call.expect("the call arrived");
        assert!(before <= 8, "{kind:?}: {before} frames before the call");
        // The reply came back while the pipe was still running.
        let at_reply = seen.frames_at_reply.expect("the reply arrived");
        assert!(at_reply < n, "{kind:?}: reply after {at_reply} frames");
        // The pipe lost nothing, kept its order, and closed after its data.
        assert_eq!(seen.frames, frames, "{kind:?}");
        assert_eq!(seen.frames_at_close, Some(n), "{kind:?}");
    }
}

#[test]
fn with_one_fifo_queue_the_call_waits_for_all_pipe_data() {
    // The test-only knob: the behaviour before the two queues, which the
    // test above would catch.
    for kind in LOSSY {
        let n = 40;
        let (seen, frames) = call_behind_pipe(kind, true, n);
        assert_eq!(seen.frames_before_call, Some(n), "{kind:?}");
        assert_eq!(seen.frames, frames, "{kind:?}");
        assert_eq!(seen.frames_at_close, Some(n), "{kind:?}");
    }
}

#[test]
fn pipe_data_keeps_flowing_under_a_flood_of_casts() {
    // Casts are queued as fast as the queue takes them; the pipe still
    // gets at least one packet in MESSAGE_BURST + 1.
    let mut c = config(FramingKind::LossyStream, 8, false);
    c.max_send_queue = 16;
    let mut p = connected(c, Damage::none(), 9);
    let pipe = p.a.open_pipe("sink", "in").expect("open");
    let n = 20;
    for i in 0..n {
        p.a.pipe_send(pipe, Bytes::from(vec![i as u8; 100]))
            .expect("send");
    }
    p.a.end_pipe(pipe).expect("end");
    let (mut casts, mut frames) = (0usize, 0usize);
    let mut casts_at_end = None;
    for _ in 0..100_000 {
        while p.a.cast("flood", Bytes::from_static(b"x")).is_ok() {}
        let moved = p.transfer();
        for ev in std::mem::take(&mut p.b_events) {
            match ev {
                Event::Cast { .. } => casts += 1,
                Event::PipeData { id, bytes } => {
                    p.b.pipe_consumed(id, bytes.len()).expect("consume");
                    frames += 1;
                }
                Event::PipeEnded { .. } => casts_at_end = Some(casts),
                _ => {}
            }
        }
        p.a_events.clear();
        if casts_at_end.is_some() {
            break;
        }
        if !moved {
            assert!(p.step_time(), "no timer left");
        }
    }
    let casts_at_end = casts_at_end.expect("the pipe ended");
    assert_eq!(frames, n);
    // The PipeOpen and the 21 pipe packets (20 frames and the PipeEnd)
    // each followed at most MESSAGE_BURST casts.
    let bound = (n + 2) * MESSAGE_BURST as usize;
    assert!(casts_at_end <= bound, "{casts_at_end} casts went first");
}

/// One step of a random workload from `a` to `b`.
#[derive(Debug, Clone)]
enum Op {
    Cast,
    Call,
    Open,
    Send { pipe: usize, len: usize },
    End { pipe: usize },
    Close { pipe: usize },
    Run { steps: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Cast),
        2 => Just(Op::Call),
        1 => Just(Op::Open),
        6 => (0..4usize, 0..300usize).prop_map(|(pipe, len)| Op::Send { pipe, len }),
        1 => (0..4usize).prop_map(|pipe| Op::End { pipe }),
        1 => (0..4usize).prop_map(|pipe| Op::Close { pipe }),
        2 => (1..4u8).prop_map(|steps| Op::Run { steps }),
    ]
}

/// A pipe `a` opened, as `a` wrote it.
#[derive(Debug)]
struct Sent {
    id: PipeId,
    frames: Vec<Bytes>,
    ended: bool,
    closed: bool,
}

/// A pipe as `b` received it.
#[derive(Debug, Default)]
struct Got {
    frames: Vec<Bytes>,
    ended_at: Option<usize>,
    closed_at: Option<usize>,
}

#[derive(Debug, Default)]
struct Model {
    casts: Vec<Bytes>,
    calls: Vec<(CallId, Bytes)>,
    pipes: Vec<Sent>,
    refused: bool,
    got_casts: Vec<Bytes>,
    got_replies: Vec<(CallId, Bytes)>,
    /// Calls `b` has to answer whose replies its full send queue refused
    /// so far, in order (as a node's driver keeps them).
    replies_due: VecDeque<(CallId, Bytes)>,
    got_pipes: HashMap<PipeId, Got>,
    writable: bool,
    counter: u32,
}

impl Model {
    fn blob(&mut self, tag: u8, len: usize) -> Bytes {
        self.counter += 1;
        let mut v = vec![tag];
        v.extend_from_slice(&self.counter.to_be_bytes());
        v.resize(len.max(5), tag);
        Bytes::from(v)
    }

    fn refused(&mut self, e: &Error, what: &str) {
        assert!(matches!(e, Error::WireWouldBlock { .. }), "{what}: {e:?}");
        self.refused = true;
    }

    fn apply(&mut self, p: &mut Pair, op: &Op) {
        match *op {
            Op::Cast => {
                let b = self.blob(1, 8);
                match p.a.cast("c", b.clone()) {
                    Ok(()) => self.casts.push(b),
                    Err(e) => self.refused(&e, "cast"),
                }
            }
            Op::Call => {
                let b = self.blob(2, 8);
                match p.a.call("s", b.clone()) {
                    Ok(id) => self.calls.push((id, b)),
                    Err(e) => self.refused(&e, "call"),
                }
            }
            Op::Open => match p.a.open_pipe("s", "p") {
                Ok(id) => self.pipes.push(Sent {
                    id,
                    frames: Vec::new(),
                    ended: false,
                    closed: false,
                }),
                Err(e) => self.refused(&e, "open"),
            },
            Op::Send { pipe, len } => {
                let b = self.blob(3, len);
                if let Some(s) = self.live(pipe) {
                    match p.a.pipe_send(s.id, b.clone()) {
                        Ok(()) => s.frames.push(b),
                        Err(Error::WireWouldBlock { .. }) => {} // credit
                        Err(e) => panic!("pipe_send: {e:?}"),
                    }
                }
            }
            Op::End { pipe } => {
                if let Some(s) = self.live(pipe) {
                    p.a.end_pipe(s.id).expect("end");
                    s.ended = true;
                }
            }
            Op::Close { pipe } => {
                if let Some(s) = self.pipes.get_mut(pipe) {
                    if !s.closed {
                        p.a.close_pipe(s.id, ExitReason::Normal).expect("close");
                    }
                    s.closed = true;
                }
            }
            Op::Run { steps } => {
                for _ in 0..steps {
                    self.step(p);
                }
            }
        }
    }

    /// A pipe `a` may still write on.
    fn live(&mut self, i: usize) -> Option<&mut Sent> {
        self.pipes.get_mut(i).filter(|s| !s.ended && !s.closed)
    }

    /// Move bytes (or time) once and react to the events.
    fn step(&mut self, p: &mut Pair) {
        if !p.transfer() {
            assert!(p.step_time(), "no timer left");
        }
        for ev in std::mem::take(&mut p.b_events) {
            match ev {
                Event::Cast { payload, .. } => self.got_casts.push(payload),
                Event::Call { id, payload, .. } => self.replies_due.push_back((id, payload)),
                Event::Writable => {}
                Event::PipeOpened { id, .. } => {
                    assert!(self.got_pipes.insert(id, Got::default()).is_none());
                }
                Event::PipeData { id, bytes } => {
                    p.b.pipe_consumed(id, bytes.len()).expect("consume");
                    let g = self.got_pipes.get_mut(&id).expect("data after open");
                    assert!(
                        g.ended_at.is_none() && g.closed_at.is_none(),
                        "data after end"
                    );
                    g.frames.push(bytes);
                }
                Event::PipeEnded { id } => {
                    let g = self.got_pipes.get_mut(&id).expect("end after open");
                    g.ended_at = Some(g.frames.len());
                }
                Event::PipeClosed { id, .. } => {
                    let g = self.got_pipes.get_mut(&id).expect("close after open");
                    g.closed_at = Some(g.frames.len());
                }
                other => panic!("b: unexpected {other:?}"),
            }
        }
        // Answer in order, as far as `b`'s send queue takes the replies.
        while let Some((id, payload)) = self.replies_due.front() {
            match p.b.reply(*id, Ok(payload.clone())) {
                Ok(()) => {
                    self.replies_due.pop_front();
                }
                Err(Error::WireWouldBlock { .. }) => break,
                Err(e) => panic!("reply: {e:?}"),
            }
        }
        for ev in std::mem::take(&mut p.a_events) {
            match ev {
                Event::Reply { id, result } => {
                    self.got_replies.push((id, result.expect("echo")));
                }
                Event::Writable => self.writable = true,
                Event::PipeWritable { .. } => {}
                other => panic!("a: unexpected {other:?}"),
            }
        }
    }

    fn complete(&self) -> bool {
        self.got_casts.len() == self.casts.len()
            && self.got_replies.len() == self.calls.len()
            && self.got_pipes.len() == self.pipes.len()
            && self.pipes.iter().all(|s| {
                let g = &self.got_pipes[&PipeId(s.id.0 ^ 1)];
                g.frames.len() == s.frames.len()
                    && (!s.ended || g.ended_at.is_some())
                    && (!s.closed || g.closed_at.is_some())
            })
    }

    fn check(&self) {
        // Casts from one sender in order, calls answered in order.
        assert_eq!(self.got_casts, self.casts);
        assert_eq!(self.got_replies, self.calls);
        for s in &self.pipes {
            let g = &self.got_pipes[&PipeId(s.id.0 ^ 1)];
            // Per pipe: every frame, in order; the end and close after them.
            assert_eq!(g.frames, s.frames, "pipe {:?}", s.id);
            let n = Some(s.frames.len());
            assert_eq!(g.ended_at, if s.ended { n } else { None }, "{:?}", s.id);
            assert_eq!(g.closed_at, if s.closed { n } else { None }, "{:?}", s.id);
        }
        // A refused message is followed by Writable once the queue drains.
        assert!(
            !self.refused || self.writable,
            "no Writable after a refusal"
        );
    }
}

fn damage() -> impl Strategy<Value = Damage> {
    (0.0..0.1f64, 0.0..0.05f64, 0.0..0.1f64, 0.0..0.05f64).prop_map(
        |(loss, duplicate, reorder, corrupt)| Damage {
            loss,
            duplicate,
            reorder,
            corrupt,
            truncate: 0.0,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// Random interleavings of casts, calls, pipe writes, ends and closes
    /// over a damaged lossy link with a small window and a small send
    /// queue: nothing lost, casts and replies in order, each pipe in order
    /// with its end and close behind its data.
    #[test]
    fn random_interleavings_keep_every_order(
        kind in 0..LOSSY.len(),
        window in 1..9u32,
        damage in damage(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let kind = LOSSY[kind];
        let mut c = config(kind, window, false);
        c.max_send_queue = 6;
        c.pipe_window = 1024;
        let mut p = connected(c, damage, seed);
        let mut m = Model::default();
        for op in &ops {
            m.apply(&mut p, op);
        }
        let mut steps = 0;
        while !m.complete() {
            steps += 1;
            prop_assert!(steps < 20_000, "incomplete: {m:?}");
            m.step(&mut p);
        }
        // Let the last Writable and acknowledgements through.
        p.drive();
        m.step(&mut p);
        m.check();
    }
}
