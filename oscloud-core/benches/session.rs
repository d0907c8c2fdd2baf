//! What the sans-IO session costs per call, with no I/O, no tasks and no
//! actor: two sessions joined in memory, one thread. Against a raw
//! baseline in the same run: the same 64-byte request and reply, each
//! written behind a 4-byte length into a buffer and cut out of it again
//! (what a minimal length-prefixed protocol does per message).
//!
//! `cargo bench -p oscloud-core --bench session`. This splits a node's
//! call round trip (`oscloud-examples` benches `node` and `procs`) into
//! what the protocol costs and what the async plumbing around it costs.
#![allow(clippy::print_stdout, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use oscloud_core::NodeId;
use oscloud_core::wire::{Config, Event, FramingKind, LocalInfo, Session};

const CALLS: u32 = 200_000;
const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Move everything `from` has to send into `to`.
fn transfer(from: &mut Session, to: &mut Session, buf: &mut BytesMut, now: Instant) {
    while let Some(chunk) = from.poll_transmit(now) {
        buf.extend_from_slice(&chunk);
    }
    if !buf.is_empty() {
        to.handle_input_buf(now, buf);
    }
}

/// Two sessions over a reliable stream, handshake done.
fn pair() -> (Session, Session) {
    let now = Instant::now();
    let config = Config::new(FramingKind::ReliableStream);
    let mut a = Session::new(config.clone(), LocalInfo::new(NodeId::random()), now)
        .expect("a valid config");
    let mut b =
        Session::new(config, LocalInfo::new(NodeId::random()), now).expect("a valid config");
    let (mut ab, mut ba) = (BytesMut::new(), BytesMut::new());
    let mut connected = 0;
    for _ in 0..16 {
        transfer(&mut a, &mut b, &mut ab, now);
        transfer(&mut b, &mut a, &mut ba, now);
        for s in [&mut a, &mut b] {
            while let Some(ev) = s.poll_event() {
                if matches!(ev, Event::Connected(_)) {
                    connected += 1;
                }
            }
        }
        if connected == 2 {
            return (a, b);
        }
    }
    panic!("the sessions did not connect");
}

/// `CALLS` sequential calls from `a` to a server on `b` that echoes.
fn ours() -> Duration {
    let (mut a, mut b) = pair();
    let payload = Bytes::from(vec![7u8; 64]);
    let (mut ab, mut ba) = (BytesMut::new(), BytesMut::new());
    let start = Instant::now();
    let now = start;
    for _ in 0..CALLS {
        a.call("bench", payload.clone()).expect("a call");
        transfer(&mut a, &mut b, &mut ab, now);
        while let Some(ev) = b.poll_event() {
            if let Event::Call { id, payload, .. } = ev {
                b.reply(id, Ok(payload)).expect("a reply");
            }
        }
        transfer(&mut b, &mut a, &mut ba, now);
        let mut replied = false;
        while let Some(ev) = a.poll_event() {
            replied |= matches!(ev, Event::Reply { result: Ok(_), .. });
        }
        assert!(replied, "the reply arrived");
    }
    start.elapsed()
}

/// Write `msg` behind its length into `buf`, then cut it out again.
fn raw_message(buf: &mut BytesMut, msg: &[u8]) -> Bytes {
    buf.put_u32(msg.len() as u32);
    buf.extend_from_slice(msg);
    let len = buf.get_u32() as usize;
    buf.split_to(len).freeze()
}

/// The same request and reply through a minimal length-prefixed framing.
fn raw() -> Duration {
    let payload = [7u8; 64];
    let (mut ab, mut ba) = (BytesMut::new(), BytesMut::new());
    let start = Instant::now();
    for _ in 0..CALLS {
        let request = raw_message(&mut ab, std::hint::black_box(&payload));
        let reply = raw_message(&mut ba, &request);
        assert_eq!(reply.len(), 64);
    }
    start.elapsed()
}

fn main() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        a.push(ours());
        b.push(raw());
    }
    let per_call = |d: Duration| d.as_secs_f64() * 1e9 / f64::from(CALLS);
    let (x, y) = (per_call(median(a)), per_call(median(b)));
    println!("sans-IO session, one thread, {CALLS} calls; median of {RUNS} runs");
    println!(
        "{:<36} {:>12} {:>12} {:>10}",
        "measure", "session", "raw framing", "ratio"
    );
    println!(
        "{:<36} {:>9.0} ns {:>9.0} ns {:>9.1}x",
        "call round trip (64 B), both sides",
        x,
        y,
        x / y
    );
}
