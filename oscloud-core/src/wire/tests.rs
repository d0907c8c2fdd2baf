//! Session tests over the in-memory pair harness.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::framing::Framer;
use super::harness::{Damage, Pair};
use super::packet::{Msg, Packet};
use super::protocol_doc::assert_in_doc;
use super::*;
use crate::{Capabilities, Error, ExitReason, NodeId};

const KINDS: [FramingKind; 4] = [
    FramingKind::ReliableStream,
    FramingKind::LossyStream,
    FramingKind::Datagram { mtu: 8 },
    FramingKind::Datagram { mtu: 64 },
];

fn closed_reason(events: &[Event]) -> Option<&CloseReason> {
    events.iter().find_map(|e| match e {
        Event::Closed { reason } => Some(reason),
        _ => None,
    })
}

#[test]
fn handshake_exchanges_identities() {
    for kind in KINDS {
        let p = Pair::connected(kind);
        assert_eq!(p.a.peer().unwrap().node, NodeId::from_bytes([0xb; 16]));
        assert_eq!(p.b.peer().unwrap().node, NodeId::from_bytes([0xa; 16]));
        assert_eq!(p.a.peer().unwrap().session_id, p.b.local().session_id);
        assert_eq!(p.a.peer().unwrap().max_frame as usize, p.b.max_frame());
    }
}

#[test]
fn calls_before_connect_are_refused() {
    let mut s = Session::new(
        Config::new(FramingKind::ReliableStream),
        LocalInfo::new(NodeId::random()),
        Instant::now(),
    )
    .unwrap();
    assert_eq!(s.cast("x", Bytes::new()), Err(Error::WireNotConnected));
    assert!(matches!(
        s.open_pipe("x", "in"),
        Err(Error::WireNotConnected)
    ));
}

#[test]
fn bad_config_is_an_error() {
    let now = Instant::now();
    let local = || LocalInfo::new(NodeId::random());
    let mut c = Config::new(FramingKind::ReliableStream);
    c.max_frame = 10;
    assert!(matches!(
        Session::new(c, local(), now),
        Err(Error::WireConfig(_))
    ));
    let mut c = Config::new(FramingKind::LossyStream);
    c.idle_timeout = c.keepalive;
    assert!(matches!(
        Session::new(c, local(), now),
        Err(Error::WireConfig(_))
    ));
    let c = Config::new(FramingKind::Datagram { mtu: 3 });
    assert!(matches!(
        Session::new(c, local(), now),
        Err(Error::WireConfig(_))
    ));
}

#[test]
fn registry_and_messages() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        let info = EntryInfo {
            id: 7,
            name: "logger".into(),
            capabilities: Capabilities::new().accepts("line").into(),
            group: false,
        };
        p.a.announce(info.clone()).unwrap();
        p.a.cast("logger", Bytes::from_static(b"one")).unwrap();
        let call = p.a.call("calc", Bytes::from_static(b"1+1")).unwrap();
        let call2 = p.a.call("calc", Bytes::from_static(b"1/0")).unwrap();
        p.a.withdraw(7, ExitReason::Failed("boom".into())).unwrap();
        p.drive();
        let ev = std::mem::take(&mut p.b_events);
        assert_eq!(ev[0], Event::PeerAnnounced(Box::new(info)));
        assert_eq!(
            ev[1],
            Event::Cast {
                to: "logger".into(),
                payload: Bytes::from_static(b"one"),
                trace: None,
            }
        );
        let Event::Call {
            id,
            to,
            payload,
            trace: None,
        } = &ev[2]
        else {
            panic!("{ev:?}")
        };
        assert_eq!((to.as_str(), &payload[..]), ("calc", &b"1+1"[..]));
        let id1 = *id;
        let Event::Call { id: id2, .. } = ev[3] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            ev[4],
            Event::PeerWithdrew {
                id: 7,
                reason: ExitReason::Failed("boom".into())
            }
        );
        p.b.reply(id1, Ok(Bytes::from_static(b"2"))).unwrap();
        let err = RemoteError {
            kind: RemoteErrorKind::Failed,
            message: "division by zero".into(),
        };
        p.b.reply(id2, Err(err.clone())).unwrap();
        assert_eq!(
            p.b.reply(id2, Ok(Bytes::new())),
            Err(Error::WireUnknownCall(id2.0))
        );
        p.drive();
        assert_eq!(
            p.a_events,
            [
                Event::Reply {
                    id: call,
                    result: Ok(Bytes::from_static(b"2"))
                },
                Event::Reply {
                    id: call2,
                    result: Err(err)
                }
            ]
        );
    }
}

#[test]
fn cancelled_call_drops_late_reply() {
    let mut p = Pair::connected(FramingKind::ReliableStream);
    let id = p.a.call("s", Bytes::new()).unwrap();
    p.drive();
    let Event::Call { id: rid, .. } = p.b_events.remove(0) else {
        panic!()
    };
    assert!(p.a.cancel_call(id));
    p.b.reply(rid, Ok(Bytes::new())).unwrap();
    p.drive();
    assert!(p.a_events.is_empty());
    assert!(p.a.is_connected());
}

#[test]
fn oversized_message_is_refused_locally() {
    let mut p = Pair::connected(FramingKind::Datagram { mtu: 8 });
    let max = p.a.max_frame();
    assert!(matches!(
        p.a.cast("x", Bytes::from(vec![0; max])),
        Err(Error::WireFrameTooLarge { .. })
    ));
    // The session is still fine.
    p.a.cast("x", Bytes::from(vec![0; max / 2])).unwrap();
    p.drive();
    assert!(matches!(p.b_events[0], Event::Cast { .. }));
}

#[test]
fn half_closed_pipe_still_carries_the_other_way() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        let id = p.a.open_pipe("svc", "in").unwrap();
        p.a.pipe_send(id, Bytes::from_static(b"request")).unwrap();
        p.a.end_pipe(id).unwrap();
        p.a.end_pipe(id).unwrap(); // a second end is a no-op
        assert_eq!(p.a.pipe_send(id, Bytes::new()), Err(Error::PipeClosed));
        p.drive();
        let Event::PipeOpened { id: rid, .. } = p.b_events.remove(0) else {
            panic!("{:?}", p.b_events)
        };
        assert_eq!(
            p.b_events,
            [
                Event::PipeData {
                    id: rid,
                    bytes: Bytes::from_static(b"request")
                },
                Event::PipeEnded { id: rid }
            ],
            "{kind:?}"
        );
        p.b_events.clear();
        // The other direction still works after the half-close.
        p.b.pipe_send(rid, Bytes::from_static(b"answer")).unwrap();
        p.b.close_pipe(rid, ExitReason::Normal).unwrap();
        p.drive();
        assert_eq!(
            p.a_events,
            [
                Event::PipeData {
                    id,
                    bytes: Bytes::from_static(b"answer")
                },
                Event::PipeClosed {
                    id,
                    reason: ExitReason::Normal
                }
            ],
            "{kind:?}"
        );
        assert!(p.a.is_connected() && p.b.is_connected(), "{kind:?}");
    }
}

#[test]
fn pipes_carry_frames_with_credit() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        let id = p.a.open_pipe("sink", "in").unwrap();
        assert!(id.is_local());
        let window = p.a.pipe_credit(id).unwrap();
        assert_eq!(window, 64 * 1024);
        let big = Bytes::from((0..3000u32).map(|i| i as u8).collect::<Vec<_>>());
        p.a.pipe_send(id, big.clone()).unwrap();
        p.a.pipe_send(id, Bytes::new()).unwrap();
        p.drive();
        let Event::PipeOpened {
            id: rid,
            server,
            port,
        } = p.b_events.remove(0)
        else {
            panic!("{:?}", p.b_events)
        };
        assert!(!rid.is_local());
        assert_eq!((server.as_str(), port.as_str()), ("sink", "in"));
        assert_eq!(
            p.b_events,
            [
                Event::PipeData {
                    id: rid,
                    bytes: big.clone()
                },
                Event::PipeData {
                    id: rid,
                    bytes: Bytes::new()
                }
            ]
        );
        p.b_events.clear();
        // Pipes are two-way.
        p.b.pipe_send(rid, Bytes::from_static(b"back")).unwrap();
        p.drive();
        assert_eq!(
            p.a_events,
            [Event::PipeData {
                id,
                bytes: Bytes::from_static(b"back")
            }]
        );
        p.a_events.clear();
        // Exhaust credit: 3000 bytes are unconsumed.
        assert_eq!(p.a.pipe_credit(id), Some(window - 3000));
        assert!(matches!(
            p.a.pipe_send(id, Bytes::from(vec![0; window as usize])),
            Err(Error::WireWouldBlock { .. })
        ));
        p.b.pipe_consumed(rid, 3000).unwrap();
        p.drive();
        assert_eq!(p.a_events, [Event::PipeWritable { id }]);
        p.a_events.clear();
        assert_eq!(p.a.pipe_credit(id), Some(window));
        // Close, and the peer hears it; sending on it is then an error.
        p.a.close_pipe(id, ExitReason::Normal).unwrap();
        p.drive();
        assert_eq!(
            p.b_events,
            [Event::PipeClosed {
                id: rid,
                reason: ExitReason::Normal
            }]
        );
        assert_eq!(p.a.pipe_send(id, Bytes::new()), Err(Error::PipeClosed));
        assert_eq!(p.b.pipe_send(rid, Bytes::new()), Err(Error::PipeClosed));
        assert_eq!(
            p.a.pipe_send(PipeId(40), Bytes::new()),
            Err(Error::WireUnknownPipe(40))
        );
        assert!(p.a.is_connected() && p.b.is_connected(), "{kind:?}");
    }
}

#[test]
fn frame_larger_than_pipe_window_is_refused() {
    let mut p = Pair::connected(FramingKind::ReliableStream);
    let id = p.a.open_pipe("s", "p").unwrap();
    assert!(matches!(
        p.a.pipe_send(id, Bytes::from(vec![0; 64 * 1024 + 1])),
        Err(Error::WireFrameTooLarge { .. })
    ));
}

/// One pipe whose reader never consumes does not stall another.
#[test]
fn slow_pipe_does_not_stall_another() {
    for kind in [FramingKind::ReliableStream, FramingKind::LossyStream] {
        let mut p = Pair::connected(kind);
        let slow = p.a.open_pipe("s", "slow").unwrap();
        let fast = p.a.open_pipe("s", "fast").unwrap();
        let frame = Bytes::from(vec![7u8; 16 * 1024]);
        // Fill the slow pipe until it blocks.
        let mut sent_slow = 0;
        while p.a.pipe_send(slow, frame.clone()).is_ok() {
            sent_slow += 1;
        }
        assert_eq!(sent_slow, 4);
        p.drive();
        let mut ids = Vec::new();
        for e in p.b_events.drain(..) {
            if let Event::PipeOpened { id, .. } = e {
                ids.push(id);
            }
        }
        let fast_r = ids[1];
        // Push 20 windows' worth through the fast pipe while the slow one
        // stays full and unread.
        let mut got = 0usize;
        let mut sent = 0usize;
        let total = 20 * 64 * 1024;
        for _ in 0..10_000 {
            while sent < total && p.a.pipe_send(fast, frame.clone()).is_ok() {
                sent += frame.len();
            }
            p.drive();
            for e in std::mem::take(&mut p.b_events) {
                if let Event::PipeData { id, bytes } = e {
                    assert_eq!(id, fast_r, "slow pipe data must already be delivered");
                    got += bytes.len();
                    p.b.pipe_consumed(id, bytes.len()).unwrap();
                }
            }
            if got == total {
                break;
            }
        }
        assert_eq!(got, total, "{kind:?}");
        assert_eq!(p.a.pipe_credit(slow), Some(0));
    }
}

#[test]
fn send_queue_is_bounded_and_reports_writable() {
    let mut c = Config::new(FramingKind::LossyStream);
    c.max_send_queue = 4;
    c.send_window = 2;
    let mut p = Pair::with_configs(c.clone(), c, Damage::none(), 3);
    assert!(p.run(100, |p| p.a.is_connected() && p.b.is_connected()));
    p.a_events.clear();
    for _ in 0..4 {
        p.a.cast("x", Bytes::new()).unwrap();
    }
    assert!(matches!(
        p.a.cast("x", Bytes::new()),
        Err(Error::WireWouldBlock { .. })
    ));
    p.drive();
    assert!(p.a_events.contains(&Event::Writable));
    p.a.cast("x", Bytes::new()).unwrap();
}

#[test]
fn pending_calls_are_bounded() {
    let mut c = Config::new(FramingKind::ReliableStream);
    c.max_pending_calls = 2;
    let mut p = Pair::with_configs(c.clone(), c, Damage::none(), 3);
    assert!(p.run(100, |p| p.a.is_connected() && p.b.is_connected()));
    p.a.call("x", Bytes::new()).unwrap();
    p.a.call("x", Bytes::new()).unwrap();
    assert!(matches!(
        p.a.call("x", Bytes::new()),
        Err(Error::WireLimit { .. })
    ));
}

#[test]
fn keepalive_keeps_an_idle_session_up() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        let t0 = p.now;
        // Ten idle timeouts of nothing but timers.
        assert!(!p.run(2_000, |p| p.now > t0 + Duration::from_secs(600)
            && !p.a.is_connected()));
        assert!(p.now > t0 + Duration::from_secs(600), "{kind:?}");
        assert!(p.a.is_connected() && p.b.is_connected(), "{kind:?}");
        assert!(p.a.stats().frames_sent > 100);
    }
}

#[test]
fn silent_peer_times_out() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        p.b_to_a = false;
        let t0 = p.now;
        assert!(p.run(10_000, |p| !p.a.is_connected()));
        let r = closed_reason(&p.a_events).unwrap();
        assert_eq!(r.code, CloseCode::IdleTimeout);
        assert!(r.message.contains("idle timeout"), "{r}");
        assert!(p.now - t0 >= Duration::from_secs(60));
        assert_eq!(p.a.poll_timeout(), None);
        assert!(matches!(
            p.a.cast("x", Bytes::new()),
            Err(Error::WireClosed { .. })
        ));
    }
}

#[test]
fn handshake_times_out_without_peer() {
    let mut p = Pair::new(FramingKind::LossyStream, Damage::none(), 1);
    p.a_to_b = false;
    p.b_to_a = false;
    assert!(p.run(10_000, |p| p.a.close_reason().is_some()));
    assert!(p.a.close_reason().unwrap().message.contains("handshake"));
}

#[test]
fn close_is_reported_on_both_sides() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        p.a.close("bye");
        p.drive();
        let ra = closed_reason(&p.a_events).unwrap();
        assert_eq!((ra.code, ra.remote), (CloseCode::Normal, false));
        let rb = closed_reason(&p.b_events).unwrap();
        assert_eq!(
            (rb.code, rb.remote, rb.message.as_str()),
            (CloseCode::Normal, true, "bye")
        );
        assert!(p.a.poll_transmit(p.now).is_none());
    }
}

// ----- bad input -----

/// Frame `packet` for `kind` as a peer would.
fn framed(kind: FramingKind, packet: &Packet) -> Vec<Bytes> {
    let mut f = Framer::new(kind, 64 * 1024, Duration::from_secs(1)).unwrap();
    let mut out = VecDeque::new();
    f.encode(&packet.encode().unwrap(), &mut out).unwrap();
    out.into()
}

fn expect_closed(s: &mut Session, code: CloseCode) -> CloseReason {
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    let r = closed_reason(&events)
        .unwrap_or_else(|| panic!("no Closed in {events:?}"))
        .clone();
    assert_eq!(r.code, code, "{r}");
    assert!(!r.remote);
    // A Close packet goes out to tell the peer.
    let mut out = Vec::new();
    while let Some(b) = s.poll_transmit(Instant::now()) {
        out.push(b);
    }
    assert!(!out.is_empty());
    r
}

fn fresh(kind: FramingKind) -> Session {
    let mut s = Session::new(
        Config::new(kind),
        LocalInfo::new(NodeId::random()),
        Instant::now(),
    )
    .unwrap();
    while s.poll_transmit(Instant::now()).is_some() {}
    s
}

#[test]
fn wrong_version_and_bad_magic_close() {
    for kind in KINDS {
        let mut s = fresh(kind);
        for chunk in framed(
            kind,
            &Packet::ForeignHello {
                magic: MAGIC,
                version: 2,
            },
        ) {
            s.handle_input(Instant::now(), &chunk);
        }
        let r = expect_closed(&mut s, CloseCode::Version);
        assert!(r.message.contains("version 2"), "{r}");

        let mut s = fresh(kind);
        for chunk in framed(
            kind,
            &Packet::ForeignHello {
                magic: 0x4854_5450,
                version: 1,
            },
        ) {
            s.handle_input(Instant::now(), &chunk);
        }
        let r = expect_closed(&mut s, CloseCode::BadMagic);
        assert!(r.message.contains("magic"), "{r}");
    }
}

#[test]
fn garbage_on_reliable_stream_closes() {
    let mut s = fresh(FramingKind::ReliableStream);
    s.handle_input(Instant::now(), b"\x00\x00\x00\x03xyz");
    let r = expect_closed(&mut s, CloseCode::Decode);
    assert!(r.message.contains("undecodable"), "{r}");
    // Calls now fail with the reason.
    let err = s.cast("x", Bytes::new()).unwrap_err();
    assert!(err.to_string().contains("undecodable"), "{err}");
}

#[test]
fn oversized_frame_closes() {
    let mut s = fresh(FramingKind::ReliableStream);
    s.handle_input(Instant::now(), b"GET / HTTP/1.1\r\n");
    let r = expect_closed(&mut s, CloseCode::FrameTooLarge);
    assert!(r.message.contains("exceeds"), "{r}");
}

#[test]
fn garbage_on_lossy_links_is_dropped_and_counted() {
    for kind in &KINDS[1..] {
        let mut s = fresh(*kind);
        for d in [
            &b"\x01\x02\x03\x00"[..],
            b"\x05\x80\x01\x02\x03",
            b"\x00\x00\xff\xff\xff\xff",
        ] {
            s.handle_input(Instant::now(), d);
        }
        assert!(s.poll_event().is_none(), "{kind:?}");
        let st = s.stats();
        assert!(
            st.crc_failures + st.framing_failures >= 2,
            "{kind:?} {st:?}"
        );
    }
}

/// Feed `packet` to `s` as the peer would frame it for `kind`.
fn inject(s: &mut Session, kind: FramingKind, packet: &Packet) {
    for chunk in framed(kind, packet) {
        s.handle_input(Instant::now(), &chunk);
    }
}

fn entry(id: u64) -> EntryInfo {
    EntryInfo {
        id,
        name: "logger".into(),
        capabilities: Capabilities::new().into(),
        group: false,
    }
}

/// An Announce for an entry id the peer announced before and did not
/// withdraw closes the session with code 1 (PROTOCOL.md §4.1); after a
/// Withdraw the id may be announced again.
#[test]
fn announce_of_a_live_entry_id_closes() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        let msgs = [
            Msg::Announce(Box::new(entry(5))),
            Msg::Withdraw {
                id: 5,
                reason: ExitReason::Normal,
            },
            Msg::Announce(Box::new(entry(5))),
        ];
        for (seq, msg) in (1..).zip(msgs) {
            let packet = Packet::Data { seq, ack: 0, msg };
            inject(&mut p.a, kind, &packet);
        }
        let events: Vec<Event> = std::iter::from_fn(|| p.a.poll_event()).collect();
        assert_eq!(events.len(), 3, "{kind:?} {events:?}");
        assert!(p.a.is_connected(), "{kind:?}");
        let again = Packet::Data {
            seq: 4,
            ack: 0,
            msg: Msg::Announce(Box::new(entry(5))),
        };
        inject(&mut p.a, kind, &again);
        let r = expect_closed(&mut p.a, CloseCode::Protocol);
        assert!(r.message.contains("entry 5 announced twice"), "{r}");
    }
}

/// A Withdraw of an entry id the peer never announced (or withdrew
/// already) is ignored and counted in `dropped` (PROTOCOL.md §4.1).
#[test]
fn withdraw_of_an_unknown_entry_id_is_dropped() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        let dropped = p.a.stats().dropped;
        let packet = Packet::Data {
            seq: 1,
            ack: 0,
            msg: Msg::Withdraw {
                id: 9,
                reason: ExitReason::Normal,
            },
        };
        inject(&mut p.a, kind, &packet);
        let events: Vec<Event> = std::iter::from_fn(|| p.a.poll_event()).collect();
        assert_eq!(events, [], "{kind:?}");
        assert!(p.a.is_connected(), "{kind:?}");
        assert_eq!(p.a.stats().dropped, dropped + 1, "{kind:?}");
    }
}

/// A HelloAck naming another session is ignored and counted in `dropped`
/// (PROTOCOL.md §3.2), before and after the peer's Hello.
#[test]
fn hello_ack_for_another_session_is_dropped() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        let dropped = p.a.stats().dropped;
        let foreign = p.a.local().session_id ^ 1;
        inject(
            &mut p.a,
            kind,
            &Packet::HelloAck {
                session_id: foreign,
            },
        );
        assert!(p.a.is_connected(), "{kind:?}");
        assert_eq!(p.a.stats().dropped, dropped + 1, "{kind:?}");
        assert_eq!(p.a.poll_event(), None, "{kind:?}");

        let mut fresh = fresh(kind);
        let foreign = fresh.local().session_id ^ 1;
        inject(
            &mut fresh,
            kind,
            &Packet::HelloAck {
                session_id: foreign,
            },
        );
        assert_eq!(fresh.stats().dropped, 1, "{kind:?}");
        assert_eq!(fresh.poll_event(), None, "{kind:?}");
    }
}

/// A Handshake packet at a side without a node key closes the session
/// with code 10, as the peer's Hello with the Noise bit does (PROTOCOL.md
/// §11), before and after the peer's Hello.
#[test]
fn handshake_at_a_plaintext_side_closes_unauthorized() {
    let handshake = Packet::Handshake {
        msg: Bytes::from_static(b"noise"),
    };
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        inject(&mut p.a, kind, &handshake);
        let r = expect_closed(&mut p.a, CloseCode::Unauthorized);
        assert!(r.message.contains("has no key"), "{r}");

        let mut fresh = fresh(kind);
        inject(&mut fresh, kind, &handshake);
        let r = expect_closed(&mut fresh, CloseCode::Unauthorized);
        assert!(r.message.contains("has no key"), "{r}");
    }
}

#[test]
fn trace_contexts_reach_the_receiver_and_bad_ones_are_ignored() {
    let t: crate::TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        p.a.cast_traced("log", Bytes::from_static(b"c"), Some(t))
            .unwrap();
        let id =
            p.a.call_traced("calc", Bytes::from_static(b"q"), Some(t))
                .unwrap();
        p.drive();
        let ev = std::mem::take(&mut p.b_events);
        assert!(ev.contains(&Event::Cast {
            to: "log".into(),
            payload: Bytes::from_static(b"c"),
            trace: Some(t),
        }));
        let Some(&Event::Call { id: got, trace, .. }) =
            ev.iter().find(|e| matches!(e, Event::Call { .. }))
        else {
            panic!("{ev:?}")
        };
        assert_eq!(trace, Some(t));
        p.b.reply(got, Ok(Bytes::new())).unwrap();
        p.drive();
        assert!(
            p.a_events
                .iter()
                .any(|e| matches!(e, Event::Reply { id: r, .. } if *r == id))
        );
        // A trace element that is not a context (24 bytes): the call is
        // delivered without one and counted as dropped; the session stays.
        // (Sent as b's first Data packet, on a fresh pair.)
        let mut p = Pair::connected(kind);
        let dropped = p.a.stats().dropped;
        let mut bad = hex_bytes("9403 01 00 95 21 01 a4 63 61 6c 63 c4 01 71 c4 18");
        bad.extend([7; 24]);
        let mut f = Framer::new(kind, 64 * 1024, Duration::from_secs(1)).unwrap();
        let mut out = VecDeque::new();
        f.encode(&bad, &mut out).unwrap();
        for chunk in out {
            p.a.handle_input(p.now, &chunk);
        }
        let events: Vec<Event> = std::iter::from_fn(|| p.a.poll_event()).collect();
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::Call { to, trace: None, .. } if to == "calc"
            )),
            "{kind:?}: {events:?}"
        );
        assert!(closed_reason(&events).is_none(), "{events:?}");
        assert_eq!(p.a.stats().dropped, dropped + 1);
    }
}

fn hex_bytes(h: &str) -> Vec<u8> {
    let h = h.replace(' ', "");
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn unknown_pipe_closes() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        // Drain b's acks so its seq state is clean, then inject a packet
        // as b would send it: data for pipe 8 of a, never opened.
        let packet = Packet::Data {
            seq: 1,
            ack: 0,
            msg: Msg::PipeData {
                pipe: 8,
                last: true,
                data: Bytes::from_static(b"x"),
            },
        };
        for chunk in framed(kind, &packet) {
            p.a.handle_input(p.now, &chunk);
        }
        let r = expect_closed(&mut p.a, CloseCode::UnknownPipe);
        assert!(r.message.contains("never opened"), "{r}");
    }
}

#[test]
fn flow_control_violation_closes() {
    let mut p = Pair::connected(FramingKind::ReliableStream);
    let id = p.b.open_pipe("s", "p").unwrap();
    p.drive();
    // Pretend to be b and send more than the window on that pipe.
    let big = Bytes::from(vec![0u8; 40 * 1024]);
    for seq in 2..=3 {
        let packet = Packet::Data {
            seq,
            ack: 0,
            msg: Msg::PipeData {
                pipe: id.0,
                last: true,
                data: big.clone(),
            },
        };
        for chunk in framed(FramingKind::ReliableStream, &packet) {
            p.a.handle_input(p.now, &chunk);
        }
    }
    p.a_events.extend(std::iter::from_fn(|| p.a.poll_event()));
    let r = closed_reason(&p.a_events).unwrap();
    assert_eq!(r.code, CloseCode::FlowControl);
}

// ----- fuzz: nothing panics -----

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    #[test]
    fn fuzz_entry_points(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        // What the cargo-fuzz targets in fuzz/ run, as a stable smoke test.
        super::fuzzing::packet(&data);
        super::fuzzing::length(&data);
        super::fuzzing::cobs(&data);
        super::fuzzing::segment(&data);
        super::fuzzing::session(&data);
        super::fuzzing::secure_handshake(&data);
        super::fuzzing::route(&data);
        super::fuzzing::trace(&data);
        super::fuzzing::link_wire(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn fuzz_decoders(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Packet::decode(&data);
        let now = Instant::now();
        for kind in KINDS {
            let mut f = Framer::new(kind, 1024, Duration::from_secs(1)).unwrap();
            let mut out = Vec::new();
            let _ = f.decode(now, &data, &mut out);
            for frame in out {
                let _ = Packet::decode(&frame);
            }
        }
    }

    #[test]
    fn fuzz_handle_input(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..8),
        kind in 0usize..4,
    ) {
        let kind = KINDS[kind];
        let mut p = Pair::connected(kind);
        let now = p.now;
        for c in &chunks {
            p.a.handle_input(now, c);
            while p.a.poll_transmit(now).is_some() {}
            while p.a.poll_event().is_some() {}
            p.a.handle_timeout(now + Duration::from_secs(1));
        }
    }

    #[test]
    fn fuzz_valid_frames_with_random_packets(
        seq in 0u64..4, ack in 0u64..4, ty in 0u8..60, a in any::<u64>(), b in any::<bool>(),
        kind in 0usize..4,
    ) {
        // Structurally valid packets with random fields after the handshake.
        let kind = KINDS[kind];
        let mut p = Pair::connected(kind);
        let raw = super::packet::to_vec(&(3u8, seq, ack, (ty, a, b, Bytes::from_static(b"x")))).unwrap();
        let mut f = Framer::new(kind, 64 * 1024, Duration::from_secs(1)).unwrap();
        let mut out = VecDeque::new();
        f.encode(&raw, &mut out).unwrap();
        for c in out {
            p.a.handle_input(p.now, &c);
        }
        p.drive();
    }
}

// ----- two sessions over a damaged link: exactly once, in order -----

/// What one side sends and what the other must see.
#[derive(Debug, Default)]
struct Workload {
    casts: Vec<Bytes>,
    calls: Vec<Bytes>,
    frames: Vec<Bytes>,
}

fn workload(seed: u64, n: usize, max_frame: usize) -> Workload {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut blob = |tag: u8, i: usize, max: usize| {
        let len = rng.random_range(0..=max);
        let mut v = vec![tag, i as u8];
        v.extend((0..len).map(|_| rng.random::<u8>()));
        Bytes::from(v)
    };
    Workload {
        casts: (0..n).map(|i| blob(1, i, 40)).collect(),
        calls: (0..n / 2).map(|i| blob(2, i, 40)).collect(),
        frames: (0..n).map(|i| blob(3, i, max_frame)).collect(),
    }
}

/// Per-side progress of the workload.
#[derive(Debug, Default)]
struct Side {
    cast_i: usize,
    call_i: usize,
    frame_i: usize,
    pipe: Option<PipeId>,
    calls: Vec<(CallId, Bytes)>,
    got_casts: Vec<Bytes>,
    got_replies: Vec<(CallId, Bytes)>,
    got_frames: Vec<Bytes>,
}

fn feed(s: &mut Session, w: &Workload, side: &mut Side) {
    while side.cast_i < w.casts.len() && s.cast("t", w.casts[side.cast_i].clone()).is_ok() {
        side.cast_i += 1;
    }
    while side.call_i < w.calls.len() {
        match s.call("t", w.calls[side.call_i].clone()) {
            Ok(id) => side.calls.push((id, w.calls[side.call_i].clone())),
            Err(_) => break,
        }
        side.call_i += 1;
    }
    if side.pipe.is_none() {
        side.pipe = s.open_pipe("t", "p").ok();
    }
    if let Some(pipe) = side.pipe {
        while side.frame_i < w.frames.len()
            && s.pipe_send(pipe, w.frames[side.frame_i].clone()).is_ok()
        {
            side.frame_i += 1;
        }
    }
}

fn react(s: &mut Session, events: Vec<Event>, side: &mut Side) {
    for e in events {
        match e {
            Event::Cast { payload, .. } => side.got_casts.push(payload),
            Event::Call { id, payload, .. } => {
                // Echo reversed.
                let mut v = payload.to_vec();
                v.reverse();
                s.reply(id, Ok(Bytes::from(v))).unwrap();
            }
            Event::Reply { id, result } => side.got_replies.push((id, result.unwrap())),
            Event::PipeData { id, bytes } => {
                s.pipe_consumed(id, bytes.len()).unwrap();
                side.got_frames.push(bytes);
            }
            Event::Closed { reason } => panic!("session closed: {reason}"),
            _ => {}
        }
    }
}

fn exchange(kind: FramingKind, damage: Damage, seed: u64, n: usize) {
    let mut config = Config::new(kind);
    config.keepalive = Duration::from_secs(1);
    config.idle_timeout = Duration::from_secs(120);
    config.send_window = 16;
    config.pipe_window = 4096;
    if let FramingKind::Datagram { mtu: 8 } = kind {
        config.max_frame = 128;
    }
    let mut p = Pair::with_configs(config.clone(), config, damage, seed);
    let wa = workload(seed, n, 3000);
    let wb = workload(seed ^ 0xff, n, 3000);
    let (mut sa, mut sb) = (Side::default(), Side::default());
    let done = p.run(200_000, |p| {
        if p.a.is_connected() && p.b.is_connected() {
            feed(&mut p.a, &wa, &mut sa);
            feed(&mut p.b, &wb, &mut sb);
        }
        let ea = std::mem::take(&mut p.a_events);
        let eb = std::mem::take(&mut p.b_events);
        react(&mut p.a, ea, &mut sa);
        react(&mut p.b, eb, &mut sb);
        sa.got_casts.len() == n
            && sb.got_casts.len() == n
            && sa.got_frames.len() == n
            && sb.got_frames.len() == n
            && sa.got_replies.len() == n / 2
            && sb.got_replies.len() == n / 2
    });
    let st = (p.a.stats(), p.b.stats());
    assert!(
        done,
        "{kind:?} {damage:?}: incomplete: a got {} casts {} frames {} replies, b got {} casts {} frames {} replies; stats {st:?}",
        sa.got_casts.len(),
        sa.got_frames.len(),
        sa.got_replies.len(),
        sb.got_casts.len(),
        sb.got_frames.len(),
        sb.got_replies.len()
    );
    if damage.loss > 0.05 {
        assert!(st.0.retransmissions + st.1.retransmissions > 0, "{st:?}");
    }
    for s in [st.0, st.1] {
        assert!(s.bytes_sent > s.payload_bytes_sent);
        assert!(s.frames_received > 0 && s.frames_sent > 0);
    }
    assert_eq!(st.0.payload_bytes_sent, st.1.payload_bytes_received);
    assert_eq!(st.1.payload_bytes_sent, st.0.payload_bytes_received);
    for (got, w) in [(&sa, &wb), (&sb, &wa)] {
        assert_eq!(got.got_casts, w.casts);
        assert_eq!(got.got_frames, w.frames);
    }
    for side in [&sa, &sb] {
        let expect: Vec<(CallId, Bytes)> = side
            .calls
            .iter()
            .map(|(id, b)| {
                let mut v = b.to_vec();
                v.reverse();
                (*id, Bytes::from(v))
            })
            .collect();
        assert_eq!(side.got_replies, expect);
    }
}

#[test]
fn exchange_reliable_stream_undamaged() {
    for seed in 0..4 {
        exchange(FramingKind::ReliableStream, Damage::none(), seed, 30);
    }
}

#[test]
fn exchange_lossy_kinds_undamaged() {
    for kind in &KINDS[1..] {
        exchange(*kind, Damage::none(), 9, 20);
    }
}

fn damage_strategy(scale: f64) -> impl Strategy<Value = Damage> {
    (
        0.0..0.2f64,
        0.0..0.1f64,
        0.0..0.2f64,
        0.0..0.1f64,
        0.0..0.05f64,
    )
        .prop_map(
            move |(loss, duplicate, reorder, corrupt, truncate)| Damage {
                loss: loss * scale,
                duplicate: duplicate * scale,
                reorder: reorder * scale,
                corrupt: corrupt * scale,
                truncate: truncate * scale,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn exchange_lossy_stream(damage in damage_strategy(1.0), seed in any::<u64>()) {
        exchange(FramingKind::LossyStream, damage, seed, 12);
    }

    #[test]
    fn exchange_can_fd(damage in damage_strategy(0.5), seed in any::<u64>()) {
        exchange(FramingKind::Datagram { mtu: 64 }, damage, seed, 12);
    }

    #[test]
    fn exchange_can_classic(damage in damage_strategy(0.2), seed in any::<u64>()) {
        exchange(FramingKind::Datagram { mtu: 8 }, damage, seed, 6);
    }
}

#[test]
fn long_close_message_still_reaches_a_small_frame_peer() {
    let mut c = Config::new(FramingKind::Datagram { mtu: 8 });
    c.max_frame = 128;
    let mut p = Pair::with_configs(c.clone(), c, Damage::none(), 5);
    assert!(p.run(100, |p| p.a.is_connected() && p.b.is_connected()));
    let long = "é".repeat(300);
    p.a.close(&long);
    p.drive();
    let r = closed_reason(&p.b_events).unwrap();
    assert!(
        r.remote && r.message.len() <= 96 && r.message.starts_with('é'),
        "{r}"
    );
}

#[test]
fn oversized_auth_is_a_config_error() {
    let mut c = Config::new(FramingKind::Datagram { mtu: 8 });
    c.max_frame = 128;
    let mut local = LocalInfo::new(NodeId::random());
    local.auth = Some(Bytes::from(vec![0; 200]));
    assert!(matches!(
        Session::new(c, local, Instant::now()),
        Err(Error::WireConfig(_))
    ));
}

/// The examples of docs/PROTOCOL.md §2 and §10, which must appear in it
/// byte for byte.
#[test]
fn protocol_doc_examples() {
    let ping = framed(FramingKind::ReliableStream, &Packet::Ping);
    assert_eq!(&ping[0][..], b"\x00\x00\x00\x02\x91\x05");
    assert_in_doc(&ping[0]);
    let cast = Packet::Data {
        seq: 1,
        ack: 0,
        msg: Msg::Cast {
            to: "log".into(),
            payload: Bytes::from_static(b"\xa2hi"),
            trace: Default::default(),
        },
    };
    let b = framed(FramingKind::ReliableStream, &cast);
    assert_eq!(&b[0][..4], b"\x00\x00\x00\x0f");
    assert_in_doc(&b[0]);
    let ack = framed(FramingKind::ReliableStream, &Packet::Ack { ack: 1 });
    assert_eq!(&ack[0][..], b"\x00\x00\x00\x03\x92\x04\x01");
    assert_in_doc(&ack[0]);
    // A Hello with a large session id is 48 bytes.
    let mut s = Session::new(
        Config::new(FramingKind::ReliableStream),
        LocalInfo {
            node: NodeId::from_bytes([0xa; 16]),
            features: 0,
            session_id: u64::MAX,
            auth: None,
        },
        Instant::now(),
    )
    .unwrap();
    let hello = s.poll_transmit(Instant::now()).unwrap();
    assert_eq!(&hello[..4], b"\x00\x00\x00\x30");
    assert_in_doc(&hello[..4]);
    assert_eq!(hello.len(), 4 + 48);
}

/// A PipeCredit of zero bytes is legal and changes nothing (PROTOCOL.md
/// §8): the session stays open and the pipe keeps its credit.
#[test]
fn zero_pipe_credit_is_accepted() {
    for kind in KINDS {
        let mut p = Pair::connected(kind);
        let id = p.a.open_pipe("s", "p").unwrap();
        p.drive();
        // As b would send it: credit for a's pipe (odd from b's side).
        let packet = Packet::Data {
            seq: 1,
            ack: 0,
            msg: Msg::PipeCredit {
                pipe: id.0 ^ 1,
                bytes: 0,
            },
        };
        for chunk in framed(kind, &packet) {
            p.a.handle_input(p.now, &chunk);
        }
        let events: Vec<Event> = std::iter::from_fn(|| p.a.poll_event()).collect();
        assert!(closed_reason(&events).is_none(), "{kind:?}: {events:?}");
        p.a.pipe_send(id, Bytes::from_static(b"still writable"))
            .unwrap();
    }
}

/// Wire efficiency (payload bytes / link bytes sent) for 1 KiB pipe frames
/// on an undamaged link; printed with `--nocapture`.
#[test]
fn wire_efficiency_figures() {
    for (kind, min) in [
        (FramingKind::ReliableStream, 0.95),
        (FramingKind::LossyStream, 0.93),
        (FramingKind::Datagram { mtu: 64 }, 0.85),
        (FramingKind::Datagram { mtu: 8 }, 0.65),
    ] {
        let mut p = Pair::connected(kind);
        let id = p.a.open_pipe("s", "p").unwrap();
        let frame = Bytes::from(vec![0x5a; 1024]);
        let before = p.a.stats();
        let mut got = 0;
        for _ in 0..100 {
            p.a.pipe_send(id, frame.clone()).unwrap();
            p.drive();
            for e in std::mem::take(&mut p.b_events) {
                if let Event::PipeData { id, bytes } = e {
                    got += bytes.len();
                    p.b.pipe_consumed(id, bytes.len()).unwrap();
                }
            }
        }
        assert_eq!(got, 100 * 1024);
        let st = p.a.stats();
        let ratio = got as f64 / (st.bytes_sent - before.bytes_sent) as f64;
        println!("{kind:?}: payload/wire = {ratio:.3}");
        assert!(ratio > min, "{kind:?}: {ratio}");
    }
}

/// A peer that restarts its side of a connectionless line (a new Hello,
/// same node, new session id): the open session ends without a Close,
/// which would reach the peer's new session and end it too; on a reliable
/// stream that Hello is a protocol violation and gets a Close (code 1).
#[test]
fn a_new_session_over_an_open_one_ends_it_quietly_only_on_lossy_links() {
    for framing in KINDS {
        let mut p = Pair::connected(framing);
        let now = p.now;
        let mut restarted = Session::new(
            Config::new(framing),
            LocalInfo::new(NodeId::from_bytes([0xb; 16])),
            now,
        )
        .unwrap();
        let mut hello = Vec::new();
        while let Some(chunk) = restarted.poll_transmit(now) {
            hello.push(chunk);
        }
        assert!(!hello.is_empty());
        for chunk in &hello {
            p.a.handle_input(now, chunk);
        }
        let mut events = Vec::new();
        while let Some(e) = p.a.poll_event() {
            events.push(e);
        }
        let reason = closed_reason(&events)
            .cloned()
            .unwrap_or_else(|| panic!("{framing:?}: not closed"));
        let sent = p.a.poll_transmit(now);
        if framing.is_lossy() {
            assert!(
                reason.remote && reason.code == CloseCode::Normal,
                "{framing:?}: {reason}"
            );
            assert!(sent.is_none(), "{framing:?}: no Close on a lossy link");
        } else {
            assert!(
                !reason.remote && reason.code == CloseCode::Protocol,
                "{reason}"
            );
            assert!(sent.is_some(), "a Close on a reliable stream");
        }
    }
}

#[test]
fn stats_counters_list_every_field_by_name_in_order() {
    // Distinct values, so a counter read from the wrong field shows. A
    // counter added to `Stats` but not to the list fails to compile (the
    // list destructures and builds `Stats` whole); this checks the names
    // against the fields `Debug` prints, in their order.
    let values: [u64; Stats::COUNTERS] = std::array::from_fn(|i| i as u64 + 1);
    let s = Stats::from_counters(values);
    let counters = s.counters();
    assert_eq!(counters.map(|(_, v)| v), values);
    let fields: Vec<String> = counters.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    assert_eq!(
        format!("{s:?}"),
        format!("Stats {{ {} }}", fields.join(", "))
    );
    assert_eq!((counters[0].0, s.frames_sent), ("frames_sent", 1));
    assert_eq!((counters[21].0, s.rto_us), ("rto_us", 22));
}
