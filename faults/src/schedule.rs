//! The fault schedule: which bytes (or datagrams) are damaged, decided
//! from a seed and a position only, so the same seed gives the same faults
//! for the same byte stream however the stream is cut into reads.

use std::time::Duration;

/// SplitMix64: a tiny, well-mixed PRNG whose output is fixed forever by
/// its seed (unlike library RNGs, whose algorithm may change between
/// versions).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Trials until the next success of probability `p` (geometric, ≥ 0);
    /// `u64::MAX` when `p` is 0.
    pub fn gap(&mut self, p: f64) -> u64 {
        if p <= 0.0 {
            return u64::MAX;
        }
        if p >= 1.0 {
            return 0;
        }
        let u = 1.0 - self.unit(); // (0, 1]
        let g = u.ln() / (1.0 - p).ln();
        if g.is_finite() && g < 1e18 {
            g as u64
        } else {
            u64::MAX
        }
    }
}

/// Derive the seed of one stream of a relay: connection `conn`, direction
/// `dir` (0 towards the target, 1 back).
pub(crate) fn derive(seed: u64, conn: u64, dir: u64) -> u64 {
    let mut r = Rng::new(seed ^ conn.wrapping_mul(0xA24B_AED4_963E_E407) ^ (dir << 63));
    r.next_u64()
}

/// What a relay (or a wrapped link) does to the traffic. Probabilities are
/// per byte on byte streams and per datagram on datagram links; `0.0`
/// means never. Build with [`Faults::seeded`] and the setters.
///
/// On a **reliable stream** link (TCP, Unix) oscloud's length framing has
/// no checksum: loss, duplication, reordering or corruption there make the
/// session fail the link (a "link flap"), or, for a corrupted payload
/// byte, deliver wrong data — exactly what a real TCP stream never does,
/// so use those faults on lossy links (serial framing, COBS + CRC) and
/// datagram links, and [`cuts`](crate::Relay::cut) and partitions on
/// reliable ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Seed of every random choice.
    pub seed: u64,
    /// Delay added to every chunk.
    pub latency: Duration,
    /// Extra random delay, uniform in `[0, jitter]` (delivery order is
    /// kept on streams: a chunk never overtakes the previous one).
    pub jitter: Duration,
    /// Probability that a fault drops a run of bytes (1–16) / a datagram.
    pub loss: f64,
    /// Probability that a run of bytes (1–16) / a datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a run of bytes (1–16) swaps places with the next
    /// run of the same length / a datagram is held back behind the next.
    pub reorder: f64,
    /// Probability that a byte has one bit flipped / a datagram has one
    /// byte damaged.
    pub corrupt: f64,
    /// Bytes per second each direction carries at most (`None`: no cap).
    pub bandwidth: Option<u64>,
}

impl Faults {
    /// No faults at all (a plain relay), with this seed for later changes.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            bandwidth: None,
        }
    }

    /// With this latency and jitter.
    pub fn latency(mut self, latency: Duration, jitter: Duration) -> Self {
        self.latency = latency;
        self.jitter = jitter;
        self
    }

    /// With this loss probability.
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// With this duplication probability.
    pub fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// With this reordering probability.
    pub fn reorder(mut self, p: f64) -> Self {
        self.reorder = p;
        self
    }

    /// With this corruption probability.
    pub fn corrupt(mut self, p: f64) -> Self {
        self.corrupt = p;
        self
    }

    /// With a bandwidth cap, bytes per second.
    pub fn bandwidth(mut self, bytes_per_second: u64) -> Self {
        self.bandwidth = Some(bytes_per_second.max(1));
        self
    }

    /// Whether any byte may be damaged, dropped, duplicated or moved.
    pub fn damages(&self) -> bool {
        self.loss > 0.0 || self.duplicate > 0.0 || self.reorder > 0.0 || self.corrupt > 0.0
    }
}

/// Counts of the faults applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Bytes (or datagrams) carried in.
    pub units_in: u64,
    /// Bytes (or datagrams) handed on.
    pub units_out: u64,
    /// Loss events.
    pub lost: u64,
    /// Duplication events.
    pub duplicated: u64,
    /// Reordering events.
    pub reordered: u64,
    /// Corruption events.
    pub corrupted: u64,
}

impl FaultCounts {
    pub(crate) fn add(&mut self, o: &FaultCounts) {
        self.units_in += o.units_in;
        self.units_out += o.units_out;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.corrupted += o.corrupted;
    }
}

const KINDS: usize = 4;
const LOSS: usize = 0;
const DUP: usize = 1;
const REORDER: usize = 2;
const CORRUPT: usize = 3;

/// The fault engine of one byte stream direction: a pure function of the
/// seed and the byte offsets. Feed it the stream in any pieces; what it
/// outputs, concatenated, is the same.
#[derive(Debug, Clone)]
pub struct StreamFaults {
    probs: [f64; KINDS],
    rngs: [Rng; KINDS],
    /// Offset of the next event of each kind.
    next: [u64; KINDS],
    offset: u64,
    /// A reordering in progress: bytes collected and the run length.
    swap: Option<(Vec<u8>, usize)>,
    /// A run being dropped or duplicated: (kind, bytes left).
    run: Option<(usize, usize)>,
    /// Bytes of the duplicated run so far.
    dup_buf: Vec<u8>,
    counts: FaultCounts,
}

impl StreamFaults {
    /// The engine for `faults`, started from `seed` (see
    /// [`Relay`](crate::Relay) for how a relay derives one per direction).
    pub fn new(faults: &Faults, seed: u64) -> Self {
        let probs = [
            faults.loss,
            faults.duplicate,
            faults.reorder,
            faults.corrupt,
        ];
        let mut rngs: [Rng; KINDS] = std::array::from_fn(|k| {
            let mut r = Rng::new(seed ^ (k as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
            r.next_u64();
            r
        });
        let next = std::array::from_fn(|k| rngs[k].gap(probs[k]));
        Self {
            probs,
            rngs,
            next,
            offset: 0,
            swap: None,
            run: None,
            dup_buf: Vec::new(),
            counts: FaultCounts::default(),
        }
    }

    /// What was applied so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    fn run_len(&mut self, kind: usize) -> usize {
        1 + self.rngs[kind].below(16) as usize
    }

    fn schedule(&mut self, kind: usize) {
        let g = self.rngs[kind].gap(self.probs[kind]);
        self.next[kind] = self.offset.saturating_add(1).saturating_add(g);
    }

    /// Apply the faults to `input` (the next bytes of the stream),
    /// appending the result to `out`.
    pub fn apply(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.counts.units_in += input.len() as u64;
        let start = out.len();
        for &byte in input {
            let mut b = byte;
            // Events due at this offset start here.
            if self.next[CORRUPT] == self.offset {
                let bit = self.rngs[CORRUPT].below(8);
                b ^= 1 << bit;
                self.counts.corrupted += 1;
                self.schedule(CORRUPT);
            }
            if self.run.is_none() && self.swap.is_none() {
                if self.next[LOSS] <= self.offset {
                    let n = self.run_len(LOSS);
                    self.run = Some((LOSS, n));
                    self.counts.lost += 1;
                    self.schedule(LOSS);
                } else if self.next[DUP] <= self.offset {
                    let n = self.run_len(DUP);
                    self.run = Some((DUP, n));
                    self.dup_buf.clear();
                    self.counts.duplicated += 1;
                    self.schedule(DUP);
                } else if self.next[REORDER] <= self.offset {
                    let n = self.run_len(REORDER);
                    self.swap = Some((Vec::with_capacity(2 * n), n));
                    self.counts.reordered += 1;
                    self.schedule(REORDER);
                }
            }
            self.offset += 1;
            if let Some((kind, left)) = self.run.as_mut() {
                if *kind == DUP {
                    self.dup_buf.push(b);
                    out.push(b);
                } // LOSS: nothing goes out
                *left -= 1;
                if *left == 0 {
                    if *kind == DUP {
                        out.extend_from_slice(&self.dup_buf);
                    }
                    self.run = None;
                }
                continue;
            }
            if let Some((buf, n)) = self.swap.as_mut() {
                buf.push(b);
                if buf.len() == 2 * *n {
                    let n = *n;
                    out.extend_from_slice(&buf[n..]);
                    out.extend_from_slice(&buf[..n]);
                    self.swap = None;
                }
                continue;
            }
            out.push(b);
        }
        self.counts.units_out += (out.len() - start) as u64;
    }

    /// Release bytes held for a reordering that the stream did not finish
    /// (it went quiet): they go out in their original order.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some((buf, _)) = self.swap.take() {
            self.counts.units_out += buf.len() as u64;
            out.extend_from_slice(&buf);
        }
    }

    /// Whether bytes are held back (see [`flush`](Self::flush)).
    pub fn holding(&self) -> bool {
        self.swap.as_ref().is_some_and(|(b, _)| !b.is_empty())
    }
}

/// The fault engine of a datagram direction: decisions by datagram index.
#[derive(Debug, Clone)]
pub struct DatagramFaults {
    probs: [f64; KINDS],
    rng: Rng,
    held: Option<Vec<u8>>,
    counts: FaultCounts,
}

impl DatagramFaults {
    /// The engine for `faults`, started from `seed`.
    pub fn new(faults: &Faults, seed: u64) -> Self {
        Self {
            probs: [
                faults.loss,
                faults.duplicate,
                faults.reorder,
                faults.corrupt,
            ],
            rng: Rng::new(seed),
            held: None,
            counts: FaultCounts::default(),
        }
    }

    /// What was applied so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    /// Apply the faults to one datagram; what goes out (0, 1, 2 or 3
    /// datagrams, in order) is appended to `out`.
    pub fn apply(&mut self, datagram: &[u8], out: &mut Vec<Vec<u8>>) {
        self.counts.units_in += 1;
        // Always draw every choice, so one decision never shifts the others.
        let rolls: [f64; KINDS] = std::array::from_fn(|_| self.rng.unit());
        let pos = self.rng.next_u64();
        let before = out.len();
        if rolls[LOSS] < self.probs[LOSS] {
            self.counts.lost += 1;
        } else {
            let mut d = datagram.to_vec();
            if rolls[CORRUPT] < self.probs[CORRUPT] && !d.is_empty() {
                let i = (pos % d.len() as u64) as usize;
                d[i] ^= 1 << (pos >> 61);
                self.counts.corrupted += 1;
            }
            let copies = if rolls[DUP] < self.probs[DUP] {
                self.counts.duplicated += 1;
                2
            } else {
                1
            };
            if rolls[REORDER] < self.probs[REORDER] && self.held.is_none() {
                self.counts.reordered += 1;
                self.held = Some(d);
                return;
            }
            for _ in 0..copies {
                out.push(d.clone());
            }
        }
        if let Some(h) = self.held.take() {
            out.push(h);
        }
        self.counts.units_out += (out.len() - before) as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn noisy() -> Faults {
        Faults::seeded(7)
            .loss(0.01)
            .duplicate(0.01)
            .reorder(0.01)
            .corrupt(0.01)
    }

    #[test]
    fn same_seed_same_output_whatever_the_chunking() {
        let input: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let whole = {
            let mut f = StreamFaults::new(&noisy(), 99);
            let mut out = Vec::new();
            f.apply(&input, &mut out);
            f.flush(&mut out);
            (out, f.counts())
        };
        let mut rng = Rng::new(5);
        let mut f = StreamFaults::new(&noisy(), 99);
        let mut out = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let n = (1 + rng.below(700) as usize).min(input.len() - at);
            f.apply(&input[at..at + n], &mut out);
            at += n;
        }
        f.flush(&mut out);
        assert_eq!(out, whole.0);
        assert_eq!(f.counts(), whole.1);
        let c = whole.1;
        assert!(c.lost > 300 && c.duplicated > 300 && c.reordered > 300 && c.corrupted > 300);
        assert_ne!(whole.0, input);
        // Another seed: another schedule.
        let mut g = StreamFaults::new(&noisy(), 100);
        let mut other = Vec::new();
        g.apply(&input, &mut other);
        assert_ne!(other, whole.0);
    }

    #[test]
    fn no_faults_is_the_identity() {
        let mut f = StreamFaults::new(&Faults::seeded(1), 1);
        let mut out = Vec::new();
        f.apply(b"hello world", &mut out);
        assert_eq!(out, b"hello world");
        let mut d = DatagramFaults::new(&Faults::seeded(1), 1);
        let mut outs = Vec::new();
        d.apply(b"x", &mut outs);
        assert_eq!(outs, vec![b"x".to_vec()]);
    }

    #[test]
    fn datagram_faults_are_deterministic() {
        let run = |seed| {
            let mut d = DatagramFaults::new(&noisy().loss(0.1).reorder(0.1), seed);
            let mut outs = Vec::new();
            for i in 0..2000u32 {
                d.apply(&i.to_be_bytes(), &mut outs);
            }
            (outs, d.counts())
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3).0, run(4).0);
        let c = run(3).1;
        assert!(c.lost > 100 && c.reordered > 100);
    }

    #[test]
    fn gap_mean_matches_probability() {
        let mut r = Rng::new(11);
        let n = 20_000;
        let total: u64 = (0..n).map(|_| r.gap(0.01)).sum();
        let mean = total as f64 / n as f64;
        assert!((mean - 99.0).abs() < 5.0, "mean gap {mean}");
    }
}
