//! Entry points for the fuzz targets in `fuzz/` (and the stable fuzz
//! smoke tests): each takes arbitrary bytes and must never panic, hang or
//! grow memory without bound. Not a stable API.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::packet::Packet;
use super::{
    CobsFraming, Config, FramingKind, LengthFraming, LocalInfo, SecureConfig, SegmentFraming,
    Session,
};
use crate::NodeId;
use crate::identity::{AllowList, NodeKey};

/// Decode one packet from a frame; a packet the fast path for the common
/// packets takes must be the one the full decoder reads.
pub fn packet(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    let _ = Packet::decode_frame(&frame);
    if let Some(fast) = super::fast_decode::decode(&frame) {
        assert_eq!(Packet::decode_serde(&frame).ok(), Some(fast));
    }
}

/// Decode `data` as the fields of a Route message (its head is given, so
/// the fuzzer starts inside the route decoder), and as a whole packet;
/// every Route decoded is fed to a route table, which must refuse loops,
/// malformed and over-long paths without panicking.
pub fn route(data: &[u8]) {
    use super::packet::Msg;
    use crate::node::routes::{Hop, RouteTable};
    // [3, 0, 0, [18, ...data]]: a Data packet holding an 8-element Route.
    let mut frame = vec![0x94, 0x03, 0x00, 0x00, 0x98, 0x12];
    frame.extend_from_slice(data);
    let me = NodeId::from_bytes([0; 16]);
    let mut table = RouteTable::new(me, 8);
    for bytes in [frame.as_slice(), data] {
        if let Ok(Packet::Data {
            msg: Msg::Route(entry, route),
            ..
        }) = Packet::decode_frame(&Bytes::copy_from_slice(bytes))
        {
            let peer = route.path.last().copied().unwrap_or(me);
            let id = entry.id;
            let hop = |link, cost| Hop {
                link,
                peer,
                cost,
                pipe_window: 4096,
            };
            let _ = table.learn(hop(1, 1), (*entry).clone(), route.clone(), ());
            if let Some(key) = table.bests().map(|(k, _)| *k).next() {
                let _ = table.export(&key, 2, NodeId::from_bytes([9; 16]));
            }
            let _ = table.learn(hop(2, u32::MAX), *entry, route, ());
            table.forget(1, id);
            table.forget_link(2);
        }
    }
}

/// Decode `data` as the trace element of a Call and of a Cast (their
/// heads are given, so the fuzzer starts at the element): whatever it is,
/// the message decodes, with a context only if the element is one
/// (`docs/PROTOCOL.md` §4.2).
pub fn trace(data: &[u8]) {
    use super::packet::{Msg, Trace};
    // [3, 0, 0, [33, 1, "s", bin, ...data]] and [3, 0, 0, [32, "s", bin, ...data]]
    for head in [
        &[
            0x94, 0x03, 0x00, 0x00, 0x95, 0x21, 0x01, 0xa1, b's', 0xc4, 0x00,
        ][..],
        &[0x94, 0x03, 0x00, 0x00, 0x94, 0x20, 0xa1, b's', 0xc4, 0x00][..],
    ] {
        let mut frame = head.to_vec();
        frame.extend_from_slice(data);
        if let Ok(Packet::Data {
            msg: Msg::Call { trace, .. } | Msg::Cast { trace, .. },
            ..
        }) = Packet::decode_frame(&Bytes::from(frame))
        {
            assert!(trace != Trace::None, "the element was there");
            if let Some(t) = trace.context() {
                assert_eq!(crate::TraceContext::from_bytes(&t.to_bytes()), Some(t));
            }
        }
    }
}

/// The length framing, both decoders, on `data` cut at the first byte's
/// value; every frame found is decoded as a packet.
pub fn length(data: &[u8]) {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut f = LengthFraming::new(4096);
    let mut out = Vec::new();
    if f.decode(&data[..cut], &mut out).is_ok() {
        let _ = f.decode(&data[cut..], &mut out);
    }
    let mut g = LengthFraming::new(4096);
    let mut buf = BytesMut::from(data);
    let _ = g.decode_buf(&mut buf, &mut out);
    for frame in out {
        let _ = Packet::decode_frame(&frame);
    }
}

/// The COBS + CRC framing on `data` in two pieces.
pub fn cobs(data: &[u8]) {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut f = CobsFraming::new(512);
    let mut out = Vec::new();
    f.decode(&data[..cut], &mut out);
    f.decode(&data[cut..], &mut out);
    for frame in out {
        let _ = Packet::decode_frame(&frame);
    }
}

/// The segment framing: the first byte picks the MTU (4–67), the rest is
/// datagrams, each prefixed by a length byte.
pub fn segment(data: &[u8]) {
    let Some((&m, mut rest)) = data.split_first() else {
        return;
    };
    let mtu = 4 + usize::from(m % 64);
    let Ok(mut f) = SegmentFraming::new(mtu, 4096, Duration::from_secs(1)) else {
        return;
    };
    let mut now = Instant::now();
    let mut out = Vec::new();
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        f.decode(now, &tail[..n], &mut out);
        rest = &tail[n..];
        now += Duration::from_millis(100);
        f.handle_timeout(now);
    }
    for frame in out {
        let _ = Packet::decode_frame(&frame);
    }
}

fn kind(b: u8) -> FramingKind {
    match b % 4 {
        0 => FramingKind::ReliableStream,
        1 => FramingKind::LossyStream,
        2 => FramingKind::Datagram { mtu: 8 },
        _ => FramingKind::Datagram { mtu: 64 },
    }
}

fn config(kind: FramingKind, resume: bool) -> Config {
    let mut c = Config::new(kind);
    c.max_frame = 4096;
    c.pipe_window = 4096;
    c.resume_grace = resume.then_some(Duration::from_secs(10));
    c
}

/// Move bytes between two sessions until quiet (bounded).
pub(crate) fn pump(a: &mut Session, b: &mut Session, now: Instant) {
    for _ in 0..64 {
        let mut moved = false;
        while let Some(x) = a.poll_transmit(now) {
            b.handle_input(now, &x);
            moved = true;
        }
        while let Some(x) = b.poll_transmit(now) {
            a.handle_input(now, &x);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// Feed `chunks` (each prefixed by a length byte) to `s`, running its
/// timers and draining it as a driver does.
fn feed(s: &mut Session, mut rest: &[u8], mut now: Instant) {
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        s.handle_input(now, &tail[..n]);
        rest = &tail[n..];
        while s.poll_transmit(now).is_some() {}
        while s.poll_event().is_some() {}
        now += Duration::from_millis(300);
        s.handle_timeout(now);
    }
}

/// A session fed arbitrary link bytes: the first byte picks the link kind
/// and whether the session is connected (to a real peer) first, and
/// whether it resumes; the rest is input, in length-prefixed pieces.
pub fn session(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let k = kind(sel);
    let resume = sel & 8 != 0;
    let now = Instant::now();
    let Ok(mut a) = Session::new(config(k, resume), LocalInfo::new(NodeId::random()), now) else {
        return;
    };
    if sel & 4 != 0 {
        let Ok(mut b) = Session::new(config(k, resume), LocalInfo::new(NodeId::random()), now)
        else {
            return;
        };
        pump(&mut a, &mut b, now);
        let _ = a.cast("x", Bytes::from_static(b"y"));
        let _ = a.open_pipe("p", "q");
        if resume && sel & 16 != 0 {
            // Detached and resuming: the input is what the new link brings.
            a.link_lost(now, "fuzz");
            let _ = a.resume(now, None);
        }
    }
    feed(&mut a, rest, now);
}

/// The secure handshake fed arbitrary bytes: either from the start (the
/// input replaces the peer entirely), or after a genuine peer Hello (the
/// input then plays the Noise messages).
pub fn secure_handshake(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let k = kind(sel);
    let now = Instant::now();
    let ka = NodeKey::from_secret([7; 32]);
    let kb = NodeKey::from_secret([9; 32]);
    let ca = SecureConfig::new(ka.clone(), AllowList::from_keys([kb.public()]));
    let Ok(mut a) = Session::new_secure(
        config(k, sel & 8 != 0),
        LocalInfo::new(ka.node_id()),
        ca,
        now,
    ) else {
        return;
    };
    if sel & 4 != 0 {
        // A genuine Hello first, from b.
        let cb = SecureConfig::new(kb.clone(), AllowList::from_keys([ka.public()]));
        let Ok(mut b) = Session::new_secure(
            config(k, sel & 8 != 0),
            LocalInfo::new(kb.node_id()),
            cb,
            now,
        ) else {
            return;
        };
        if let Some(hello) = b.poll_transmit(now) {
            a.handle_input(now, &hello);
        }
        while a.poll_transmit(now).is_some() {}
    }
    feed(&mut a, rest, now);
}

/// A link's send side driven by a script: the first two bytes size the
/// session's send queue and the link's queue, every three bytes after
/// them are a step (a caller's cast or call, a driver turn, a pipe frame,
/// the peer reading, the line's room). Every cast, call and pipe frame
/// accepted must arrive once, in its sender's order, and every call gets
/// its own reply (see `node::link_wire_sim`).
pub fn link_wire(data: &[u8]) {
    let [queue, room, rest @ ..] = data else {
        return;
    };
    let script = crate::node::link_wire_sim::Op::script(rest);
    crate::node::link_wire_sim::run(
        usize::from(queue % 16) + 1,
        usize::from(*room) * 64 + 1,
        &script,
    );
}
