//! A deterministic in-memory pair of sessions with simulated time and a
//! damaging link (test only).
//!
//! Time only moves when the harness jumps it to the next deadline, and all
//! damage comes from a seeded RNG, so every run is reproducible.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Config, Event, FramingKind, LocalInfo, Session};
use crate::NodeId;

/// Probabilities (0..1) of damage applied to each link chunk.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Damage {
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    pub(crate) reorder: f64,
    pub(crate) corrupt: f64,
    pub(crate) truncate: f64,
}

impl Damage {
    pub(crate) fn none() -> Self {
        Self::default()
    }
}

/// Two sessions, `a` and `b`, joined by a simulated link.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) a: Session,
    pub(crate) b: Session,
    pub(crate) now: Instant,
    pub(crate) damage: Damage,
    pub(crate) rng: StdRng,
    /// Events seen by `a` / `b`, in order, not yet taken.
    pub(crate) a_events: Vec<Event>,
    pub(crate) b_events: Vec<Event>,
    /// When false, nothing from `b` reaches `a` (a cut link).
    pub(crate) b_to_a: bool,
    pub(crate) a_to_b: bool,
    /// Chunks from `a` (numbered from 0 in the order sent) that are lost.
    pub(crate) lose_from_a: Vec<u64>,
    /// Chunks `a` has sent so far.
    pub(crate) sent_from_a: u64,
    /// One-way delay of every chunk, each way (zero: delivered at once).
    pub(crate) delay: Duration,
    /// Line rate each way in bytes per second (0: unlimited): a chunk
    /// takes its length over the rate on the line, after the chunks sent
    /// before it (a serial line's queue).
    pub(crate) bytes_per_sec: u64,
    /// Chunks on their way (delay or rate set): arrival time, towards `b`
    /// (else towards `a`), the bytes. In arrival order per direction.
    in_transit: VecDeque<(Instant, bool, Bytes)>,
    /// When each direction's line is free again (towards `b`, towards `a`).
    line_free: [Option<Instant>; 2],
    stream: bool,
}

fn damage(rng: &mut StdRng, d: Damage, chunks: Vec<Bytes>) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = Vec::with_capacity(chunks.len());
    for c in chunks {
        if rng.random_bool(d.loss) {
            continue;
        }
        let mut c = c.to_vec();
        if !c.is_empty() && rng.random_bool(d.corrupt) {
            let i = rng.random_range(0..c.len());
            c[i] ^= 1 << rng.random_range(0..8);
        }
        if !c.is_empty() && rng.random_bool(d.truncate) {
            let n = rng.random_range(0..c.len());
            c.truncate(n);
        }
        let c = Bytes::from(c);
        if rng.random_bool(d.duplicate) {
            out.push(c.clone());
        }
        out.push(c);
        if out.len() >= 2 && rng.random_bool(d.reorder) {
            let n = out.len();
            out.swap(n - 1, n - 2);
        }
    }
    out
}

impl Pair {
    /// A pair on `framing` with default config (tuned timers), not driven.
    pub(crate) fn new(framing: FramingKind, damage: Damage, seed: u64) -> Self {
        let mut config = Config::new(framing);
        config.keepalive = std::time::Duration::from_secs(1);
        config.idle_timeout = std::time::Duration::from_secs(60);
        Self::with_configs(config.clone(), config, damage, seed)
    }

    pub(crate) fn with_configs(ca: Config, cb: Config, damage: Damage, seed: u64) -> Self {
        let now = Instant::now();
        let a =
            Session::new(ca, LocalInfo::new(NodeId::from_bytes([0xa; 16])), now).expect("config a");
        let b =
            Session::new(cb, LocalInfo::new(NodeId::from_bytes([0xb; 16])), now).expect("config b");
        Self::from_sessions(a, b, now, damage, seed)
    }

    /// A pair of sessions made by the caller (started at `now`).
    pub(crate) fn from_sessions(
        a: Session,
        b: Session,
        now: Instant,
        damage: Damage,
        seed: u64,
    ) -> Self {
        let stream = !matches!(a.framing_kind(), FramingKind::Datagram { .. });
        Self {
            a,
            b,
            now,
            damage,
            rng: StdRng::seed_from_u64(seed),
            a_events: Vec::new(),
            b_events: Vec::new(),
            b_to_a: true,
            a_to_b: true,
            lose_from_a: Vec::new(),
            sent_from_a: 0,
            delay: Duration::ZERO,
            bytes_per_sec: 0,
            in_transit: VecDeque::new(),
            line_free: [None, None],
            stream,
        }
    }

    /// A pair on an undamaged link, handshake done and events drained.
    pub(crate) fn connected(framing: FramingKind) -> Self {
        let mut p = Self::new(framing, Damage::none(), 1);
        assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
        assert!(matches!(p.a_events.remove(0), Event::Connected(_)));
        assert!(matches!(p.b_events.remove(0), Event::Connected(_)));
        p
    }

    /// Put chunks on the line: delivered at once on an ideal link, else
    /// queued until their arrival time.
    fn send(&mut self, from_a: bool, mut chunks: Vec<Bytes>) {
        if self.delay.is_zero() && self.bytes_per_sec == 0 {
            return self.deliver(from_a, chunks);
        }
        self.lose(from_a, &mut chunks);
        let dir = usize::from(!from_a);
        for c in damage(&mut self.rng, self.damage, chunks) {
            let start = self.line_free[dir].map_or(self.now, |t| t.max(self.now));
            let on_line = if self.bytes_per_sec == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(c.len() as f64 / self.bytes_per_sec as f64)
            };
            self.line_free[dir] = Some(start + on_line);
            self.in_transit
                .push_back((start + on_line + self.delay, from_a, c));
        }
    }

    /// Hand over the chunks on their way that have arrived by now; true
    /// if any did.
    fn arrive(&mut self) -> bool {
        let now = self.now;
        let (due, later): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.in_transit)
            .into_iter()
            .partition(|(t, _, _)| *t <= now);
        self.in_transit = later;
        let moved = !due.is_empty();
        for (_, from_a, c) in due {
            self.hand_over(from_a, vec![c]);
        }
        moved
    }

    /// When the next chunk on its way arrives.
    fn next_arrival(&self) -> Option<Instant> {
        self.in_transit.iter().map(|(t, _, _)| *t).min()
    }

    /// Drop the chunks from A that the test asked to lose (counted over
    /// every chunk A sent).
    fn lose(&mut self, from_a: bool, chunks: &mut Vec<Bytes>) {
        if from_a {
            let first = self.sent_from_a;
            self.sent_from_a += chunks.len() as u64;
            let mut n = first;
            chunks.retain(|_| {
                n += 1;
                !self.lose_from_a.contains(&(n - 1))
            });
        }
    }

    fn deliver(&mut self, from_a: bool, mut chunks: Vec<Bytes>) {
        self.lose(from_a, &mut chunks);
        let chunks = damage(&mut self.rng, self.damage, chunks);
        self.hand_over(from_a, chunks);
    }

    /// Feed chunks to the receiving session.
    fn hand_over(&mut self, from_a: bool, chunks: Vec<Bytes>) {
        let now = self.now;
        let to = if from_a { &mut self.b } else { &mut self.a };
        if self.stream {
            // A byte stream: re-split into random partial reads.
            let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let mut rest = &all[..];
            while !rest.is_empty() {
                let n = self.rng.random_range(1..=rest.len().min(64));
                let (x, r) = rest.split_at(n);
                to.handle_input(now, x);
                rest = r;
            }
        } else {
            for c in chunks {
                to.handle_input(now, &c);
            }
        }
    }

    /// Move bytes both ways once; true if any moved.
    pub(crate) fn transfer(&mut self) -> bool {
        let now = self.now;
        let from_a: Vec<Bytes> = std::iter::from_fn(|| self.a.poll_transmit(now)).collect();
        let from_b: Vec<Bytes> = std::iter::from_fn(|| self.b.poll_transmit(now)).collect();
        let mut moved = !from_a.is_empty() || !from_b.is_empty();
        if self.a_to_b {
            self.send(true, from_a);
        }
        if self.b_to_a {
            self.send(false, from_b);
        }
        moved |= self.arrive();
        self.collect();
        moved
    }

    /// Take the sessions' pending events into `a_events` / `b_events`.
    pub(crate) fn collect_events(&mut self) {
        self.collect();
    }

    fn collect(&mut self) {
        self.a_events
            .extend(std::iter::from_fn(|| self.a.poll_event()));
        self.b_events
            .extend(std::iter::from_fn(|| self.b.poll_event()));
    }

    /// Transfer until the link is quiet (bounded).
    pub(crate) fn drive(&mut self) {
        for _ in 0..10_000 {
            if !self.transfer() {
                return;
            }
        }
    }

    /// Jump time to the next deadline and run the timers; false if neither
    /// side has one.
    pub(crate) fn step_time(&mut self) -> bool {
        let t = [
            self.a.poll_timeout(),
            self.b.poll_timeout(),
            self.next_arrival(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(t) = t else {
            return false;
        };
        self.now = self.now.max(t);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.collect();
        true
    }

    /// Drive, check `done` (which may also act on events and call the
    /// sessions), advance time; up to `max_steps` times.
    pub(crate) fn run(
        &mut self,
        max_steps: usize,
        mut done: impl FnMut(&mut Pair) -> bool,
    ) -> bool {
        for _ in 0..max_steps {
            self.drive();
            if done(self) {
                return true;
            }
            if !self.step_time() {
                self.drive();
                return done(self);
            }
        }
        false
    }
}
