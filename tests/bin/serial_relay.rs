//! A serial cable simulator for tests: two pseudo-terminal pairs whose
//! master sides it joins, so a program opening one slave talks to a program
//! opening the other, as over a null-modem cable. It can damage the line:
//! at a seeded random rate it flips a bit, drops a byte or inserts garbage.
//!
//! Usage: `oscloud-serial-relay LINK_A LINK_B [ERROR_EVERY [SEED]]`
//! creates the symlinks `LINK_A` and `LINK_B` to the two slave devices
//! (raw mode), prints `ready`, then obeys lines on stdin:
//!
//! - `stats`: print `stats flips=F drops=D inserts=I ab=N ba=M` (bytes
//!   forwarded each way);
//! - `noise N`: one damage per N bytes on average from now on (0: none);
//! - `baud N`: from now on carry at most N/10 bytes a second each way
//!   (a UART at N baud, 8N1: ten bit times a byte), delivering bytes as
//!   their line time passes, in pieces of at most 64 bytes (0: as fast as
//!   the ptys go, the default); prints `ok`;
//! - `unplug a|b MS`: remove that side's device (its slave sees a hang-up
//!   and the symlink disappears), wait MS milliseconds, then plug a new
//!   one in at the same symlink; prints `replugged`;
//! - `tamper a|b MIN`: a man in the middle: in the next encrypted frame
//!   (`0xC1` first, see `docs/PROTOCOL.md` §11) of at least MIN bytes
//!   coming from that side, flip one bit of the ciphertext and fix the
//!   frame's CRC-32, so only the AEAD tag can tell; prints `ok`, and
//!   `stats` counts it as `tampered=N`;
//! - `record a|b`: from the next frame boundary on, keep a copy of every
//!   byte coming from that side (a capture); prints `ok`;
//! - `replay a|b`: send that side's capture again, at a frame boundary,
//!   towards the other side; prints `replayed N` (bytes).
//! - end of input: remove the symlinks and exit.
//!
//! Damage applies to bytes in both directions. Bytes for a side whose
//! device nobody holds open are lost, as on a real line.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One end of the cable: a pty whose slave is reachable at `link`.
struct Side {
    link: PathBuf,
    master: Mutex<Option<Arc<PtyMaster>>>,
}

impl Side {
    fn plug(&self) -> Res<()> {
        let m = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)?;
        grantpt(&m)?;
        unlockpt(&m)?;
        let name = ptsname_r(&m)?;
        let mut t = tcgetattr(&m)?;
        cfmakeraw(&mut t);
        tcsetattr(&m, SetArg::TCSANOW, &t)?;
        let tmp = self.link.with_extension("relay-tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp)?;
        std::fs::rename(&tmp, &self.link)?;
        *self.master.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(m));
        Ok(())
    }

    fn unplug(&self) {
        let _ = std::fs::remove_file(&self.link);
        *self.master.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn current(&self) -> Option<Arc<PtyMaster>> {
        self.master
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Default)]
struct Counters {
    tampered: AtomicU64,
    flips: AtomicU64,
    drops: AtomicU64,
    inserts: AtomicU64,
    forwarded: [AtomicU64; 2],
}

/// What the man in the middle does to one direction.
#[derive(Default)]
struct Mitm {
    /// Tamper with the next encrypted frame of at least this many bytes.
    tamper: Option<usize>,
    /// The capture, while recording.
    record: Option<Vec<u8>>,
    /// Waiting for a frame boundary before recording.
    record_armed: bool,
    /// Bytes to send again at the next frame boundary.
    inject: Vec<u8>,
}

struct Relay {
    mitm: [Mutex<Mitm>; 2],
    sides: [Side; 2],
    every: AtomicU64,
    /// Line speed in baud (0: unlimited).
    baud: AtomicU64,
    counters: Counters,
    quit: AtomicBool,
}

/// Flip one ciphertext bit of `frame` (COBS-encoded, without its `0x00`
/// delimiter) if it is an intact encrypted frame of at least `min` bytes;
/// returns the re-encoded frame.
fn tamper(frame: &[u8], min: usize) -> Option<Vec<u8>> {
    const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let raw = cobs::decode_vec(frame).ok()?;
    let body_len = raw.len().checked_sub(4)?;
    let (body, crc) = raw.split_at(body_len);
    if body_len < min.max(6 + 16 + 1)
        || body[0] != 0xC1
        || CRC32.checksum(body).to_le_bytes() != crc
    {
        return None;
    }
    let mut body = body.to_vec();
    // The first byte after the 6-byte header: ciphertext.
    body[6] ^= 0x10;
    body.extend_from_slice(&CRC32.checksum(&body).to_le_bytes());
    Some(cobs::encode_vec(&body))
}

/// Apply the man in the middle to bytes going out (`out`), frame by frame:
/// `pending` holds a partial frame while a tamper waits.
/// `at_boundary`: whether the bytes before `out` ended a frame.
fn mitm(m: &mut Mitm, pending: &mut Vec<u8>, out: Vec<u8>, at_boundary: bool) -> Vec<u8> {
    let mut done = Vec::with_capacity(out.len());
    for b in out {
        if m.tamper.is_none() && pending.is_empty() {
            done.push(b);
        } else {
            pending.push(b);
            if b == 0 {
                let body = &pending[..pending.len() - 1];
                match m.tamper.and_then(|min| tamper(body, min)) {
                    Some(bad) => {
                        done.extend_from_slice(&bad);
                        done.push(0);
                        m.tamper = None;
                    }
                    None => done.extend_from_slice(pending),
                }
                pending.clear();
            }
        }
    }
    // Recording starts at a frame boundary.
    if m.record_armed && at_boundary {
        m.record_armed = false;
        m.record = Some(Vec::new());
    }
    for (i, &b) in done.iter().enumerate() {
        if let Some(rec) = m.record.as_mut() {
            rec.extend_from_slice(&done[i..]);
            break;
        }
        if m.record_armed && b == 0 {
            m.record_armed = false;
            m.record = Some(Vec::new());
        }
    }
    done
}

fn wait_for(fd: &PtyMaster, flags: PollFlags) -> PollFlags {
    let mut fds = [PollFd::new(fd.as_fd(), flags)];
    match poll(&mut fds, PollTimeout::from(20u8)) {
        Ok(n) if n > 0 => fds[0].revents().unwrap_or(PollFlags::empty()),
        _ => PollFlags::empty(),
    }
}

/// Move bytes from side `from` to the other side until told to quit.
fn forward(relay: Arc<Relay>, from: usize, seed: u64) {
    let to = 1 - from;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(8192);
    let mut pending = Vec::new();
    // Whether the last byte sent on was a frame delimiter.
    let mut at_boundary = true;
    // When the (paced) line has carried everything written so far.
    let mut line_free = Instant::now();
    while !relay.quit.load(Ordering::Relaxed) {
        let inject = {
            let mut m = relay.mitm[from].lock().unwrap_or_else(|e| e.into_inner());
            if at_boundary {
                std::mem::take(&mut m.inject)
            } else {
                Vec::new()
            }
        };
        if !inject.is_empty() {
            write_all(&relay, to, &inject);
        }
        let Some(src) = relay.sides[from].current() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let ready = wait_for(&src, PollFlags::POLLIN);
        if !ready.contains(PollFlags::POLLIN) {
            if ready.contains(PollFlags::POLLHUP) {
                // Nobody holds the slave open yet.
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        let n = match (&*src).read(&mut buf) {
            Ok(n) => n,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        drop(src);
        out.clear();
        let every = relay.every.load(Ordering::Relaxed);
        for &b in &buf[..n] {
            if every > 0 && rng.random_range(0..every) == 0 {
                match rng.random_range(0..3u8) {
                    0 => {
                        relay.counters.flips.fetch_add(1, Ordering::Relaxed);
                        out.push(b ^ (1 << rng.random_range(0..8u8)));
                    }
                    1 => {
                        relay.counters.drops.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        relay.counters.inserts.fetch_add(1, Ordering::Relaxed);
                        for _ in 0..rng.random_range(1..=3u8) {
                            out.push(rng.random());
                        }
                        out.push(b);
                    }
                }
            } else {
                out.push(b);
            }
        }
        relay.counters.forwarded[from].fetch_add(n as u64, Ordering::Relaxed);
        let out = {
            let mut m = relay.mitm[from].lock().unwrap_or_else(|e| e.into_inner());
            let had = m.tamper.is_some();
            let done = mitm(&mut m, &mut pending, std::mem::take(&mut out), at_boundary);
            if had && m.tamper.is_none() {
                relay.counters.tampered.fetch_add(1, Ordering::Relaxed);
            }
            done
        };
        if let Some(&last) = out.last() {
            at_boundary = last == 0;
        }
        let baud = relay.baud.load(Ordering::Relaxed);
        if baud == 0 {
            write_all(&relay, to, &out);
            continue;
        }
        // A slow line: each piece arrives once its bits were on the wire.
        for piece in out.chunks(64) {
            let bits = piece.len() as f64 * 10.0;
            line_free = line_free.max(Instant::now()) + Duration::from_secs_f64(bits / baud as f64);
            std::thread::sleep(line_free.saturating_duration_since(Instant::now()));
            write_all(&relay, to, piece);
        }
    }
}

/// Write `out` to side `to`, as far as someone reads it.
fn write_all(relay: &Relay, to: usize, out: &[u8]) {
    let mut rest = out;
    while !rest.is_empty() && !relay.quit.load(Ordering::Relaxed) {
        let Some(dst) = relay.sides[to].current() else {
            break; // unplugged: lost
        };
        match (&*dst).write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let ready = wait_for(&dst, PollFlags::POLLOUT);
                if ready.contains(PollFlags::POLLHUP) && !ready.contains(PollFlags::POLLOUT) {
                    break; // nobody reads that side: lost
                }
            }
            Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => break,
            Err(_) => break,
        }
    }
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: oscloud-serial-relay LINK_A LINK_B [ERROR_EVERY [SEED]]".into());
    }
    let every: u64 = args.get(2).map_or(Ok(0), |s| s.parse())?;
    let seed: u64 = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let side = |p: &str| Side {
        link: Path::new(p).to_owned(),
        master: Mutex::new(None),
    };
    let relay = Arc::new(Relay {
        mitm: [Mutex::default(), Mutex::default()],
        sides: [side(&args[0]), side(&args[1])],
        every: AtomicU64::new(every),
        baud: AtomicU64::new(0),
        counters: Counters::default(),
        quit: AtomicBool::new(false),
    });
    relay.sides[0].plug()?;
    relay.sides[1].plug()?;
    let threads: Vec<_> = (0..2)
        .map(|from| {
            let r = relay.clone();
            std::thread::spawn(move || {
                forward(r, from, seed.wrapping_mul(2).wrapping_add(from as u64))
            })
        })
        .collect();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stats"] => {
                let c = &relay.counters;
                writeln!(
                    stdout,
                    "stats flips={} drops={} inserts={} tampered={} ab={} ba={}",
                    c.flips.load(Ordering::Relaxed),
                    c.drops.load(Ordering::Relaxed),
                    c.inserts.load(Ordering::Relaxed),
                    c.tampered.load(Ordering::Relaxed),
                    c.forwarded[0].load(Ordering::Relaxed),
                    c.forwarded[1].load(Ordering::Relaxed),
                )?;
            }
            ["noise", n] => {
                relay.every.store(n.parse()?, Ordering::Relaxed);
                writeln!(stdout, "ok")?;
            }
            ["baud", n] => {
                relay.baud.store(n.parse()?, Ordering::Relaxed);
                writeln!(stdout, "ok")?;
            }
            ["unplug", which, ms] => {
                let s = &relay.sides[usize::from(*which == "b")];
                s.unplug();
                std::thread::sleep(Duration::from_millis(ms.parse()?));
                s.plug()?;
                writeln!(stdout, "replugged")?;
            }
            ["tamper", which, min] => {
                relay.mitm[usize::from(*which == "b")]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .tamper = Some(min.parse()?);
                writeln!(stdout, "ok")?;
            }
            ["record", which] => {
                let mut m = relay.mitm[usize::from(*which == "b")]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                m.record = None;
                m.record_armed = true;
                writeln!(stdout, "ok")?;
            }
            ["replay", which] => {
                let mut m = relay.mitm[usize::from(*which == "b")]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let capture = m.record.take().unwrap_or_default();
                m.record_armed = false;
                // A leading delimiter: the receiver starts a fresh frame.
                m.inject = std::iter::once(0).chain(capture.iter().copied()).collect();
                writeln!(stdout, "replayed {}", capture.len())?;
            }
            _ => writeln!(stdout, "error: unknown command {line:?}")?,
        }
        stdout.flush()?;
    }
    relay.quit.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    relay.sides[0].unplug();
    relay.sides[1].unplug();
    Ok(())
}
