//! Session resumption (`docs/PROTOCOL.md` §12) on the in-memory harness:
//! random link cuts (with the bytes in flight lost at a random point) and
//! reconnections during a stream of casts, calls and pipe frames must
//! deliver everything exactly once and in order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::harness::{Damage, Pair};
use super::*;
use crate::NodeId;
use crate::identity::{AllowList, NodeKey};

fn b_id() -> NodeId {
    NodeId::from_bytes([0xb; 16])
}

fn config(kind: FramingKind) -> Config {
    let mut c = Config::new(kind);
    c.keepalive = Duration::from_secs(1);
    c.idle_timeout = Duration::from_secs(60);
    c.resume_grace = Some(Duration::from_secs(90));
    c
}

fn drain(s: &mut Session, now: Instant) -> Vec<u8> {
    let mut v = Vec::new();
    while let Some(b) = s.poll_transmit(now) {
        v.extend_from_slice(&b);
    }
    v
}

/// What each side sent and got.
#[derive(Debug, Default)]
struct Book {
    casts_sent: u64,
    casts_got: Vec<u64>,
    calls: HashMap<CallId, u64>,
    calls_made: u64,
    replies: Vec<u64>,
    pipe: Option<PipeId>,
    pipe_sent: u64,
    pipe_got: Vec<u8>,
    pipe_expected: Vec<u8>,
    resumes: u64,
}

/// Act on every event: B answers calls and takes pipe frames, A counts
/// replies.
fn pump(p: &mut Pair, book: &mut Book) {
    for ev in std::mem::take(&mut p.b_events) {
        match ev {
            Event::Cast { payload, .. } => {
                book.casts_got
                    .push(u64::from_be_bytes(payload[..8].try_into().unwrap()));
            }
            Event::Call { id, payload, .. } => {
                p.b.reply(id, Ok(payload)).unwrap();
            }
            Event::PipeData { id, bytes } => {
                book.pipe_got.extend_from_slice(&bytes);
                p.b.pipe_consumed(id, bytes.len()).unwrap();
            }
            Event::Resumed => book.resumes += 1,
            Event::Closed { reason } => panic!("b closed: {reason}"),
            _ => {}
        }
    }
    for ev in std::mem::take(&mut p.a_events) {
        match ev {
            Event::Reply { id, result } => {
                let n = book.calls.remove(&id).expect("a reply for a pending call");
                let got = result.unwrap();
                assert_eq!(u64::from_be_bytes(got[..8].try_into().unwrap()), n);
                book.replies.push(n);
            }
            Event::Closed { reason } => panic!("a closed: {reason}"),
            _ => {}
        }
    }
}

/// Send some of everything from A.
fn work(p: &mut Pair, book: &mut Book, n: u64) {
    for _ in 0..n {
        let c = book.casts_sent;
        if p.a
            .cast("log", Bytes::copy_from_slice(&c.to_be_bytes()))
            .is_ok()
        {
            book.casts_sent += 1;
        }
        let k = book.calls_made;
        if let Ok(id) = p.a.call("echo", Bytes::copy_from_slice(&k.to_be_bytes())) {
            book.calls.insert(id, k);
            book.calls_made += 1;
        }
        if let Some(pipe) = book.pipe {
            let len = 1 + (book.pipe_sent % 700) as usize;
            let frame: Vec<u8> = (0..len)
                .map(|i| (book.pipe_sent as usize + i) as u8)
                .collect();
            if p.a.pipe_send(pipe, Bytes::from(frame.clone())).is_ok() {
                book.pipe_expected.extend_from_slice(&frame);
                book.pipe_sent += 1;
            }
        }
    }
}

/// Cut the link: of the bytes on their way, each direction delivers only
/// the first `keep_*` (a random point, mid-frame most likely); then A
/// dials again, B's node takes the new link with a fresh session, which
/// hands it to B's kept session. The new link is of kind `to` (a serial
/// line after TCP, say): both sessions move to it.
fn flap(p: &mut Pair, keep_a: usize, keep_b: usize, b_notices: bool, to: FramingKind) {
    let now = p.now;
    let from_a = drain(&mut p.a, now);
    let from_b = drain(&mut p.b, now);
    p.b.handle_input(now, &from_a[..keep_a.min(from_a.len())]);
    p.a.handle_input(now, &from_b[..keep_b.min(from_b.len())]);
    assert!(p.a.link_lost(now, "cut"));
    if b_notices {
        assert!(p.b.link_lost(now, "cut"));
    }
    p.a.set_link_kind(now, &config(to)).unwrap();
    assert_eq!(p.a.framing_kind(), to);
    p.a.resume(now, None).unwrap();
    let hello_a = drain(&mut p.a, now);
    let mut fresh = Session::new(config(to), LocalInfo::new(b_id()), now).unwrap();
    // The fresh session's own Hello reaches A first; A ignores it.
    let fresh_hello = drain(&mut fresh, now);
    p.a.handle_input(now, &fresh_hello);
    fresh.handle_input(now, &hello_a);
    let hello = match fresh.poll_event() {
        Some(Event::ResumeRequested {
            node,
            session,
            hello,
            ..
        }) => {
            assert_eq!(node, p.a.local().node);
            assert_eq!(session, p.b.local().session_id);
            hello
        }
        other => panic!("expected a resume request, got {other:?}"),
    };
    assert!(drain(&mut fresh, now).is_empty(), "nothing more from fresh");
    p.b.set_link_kind(now, fresh.config()).unwrap();
    p.b.resume(now, Some(hello)).unwrap();
    p.collect_events();
}

fn open_pipe(p: &mut Pair, book: &mut Book) {
    let id = p.a.open_pipe("sink", "in").unwrap();
    book.pipe = Some(id);
}

fn check(book: &Book) {
    assert_eq!(
        book.casts_got,
        (0..book.casts_sent).collect::<Vec<_>>(),
        "casts exactly once, in order"
    );
    let mut r = book.replies.clone();
    r.sort_unstable();
    assert_eq!(
        r,
        (0..book.calls_made).collect::<Vec<_>>(),
        "every call answered once"
    );
    assert!(book.calls.is_empty());
    assert_eq!(book.pipe_got, book.pipe_expected, "pipe bytes exact");
}

fn run_flaps(kind: FramingKind, seed: u64, flaps: &[(u8, usize, usize, bool)]) -> (Book, Stats) {
    run_flaps_mixed(kind, seed, flaps, false)
}

/// Like `run_flaps`; with `mixed`, every new link is of the other stream
/// kind (lossy ↔ reliable), so the sessions change framing and
/// retransmission at each resumption.
fn run_flaps_mixed(
    kind: FramingKind,
    seed: u64,
    flaps: &[(u8, usize, usize, bool)],
    mixed: bool,
) -> (Book, Stats) {
    let mut p = Pair::with_configs(config(kind), config(kind), Damage::none(), seed);
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    p.a_events.clear();
    p.b_events.clear();
    let mut book = Book::default();
    open_pipe(&mut p, &mut book);
    for &(work_n, keep_a, keep_b, b_notices) in flaps {
        work(&mut p, &mut book, u64::from(work_n % 8));
        // Move some traffic, without letting every acknowledgement through.
        p.transfer();
        pump(&mut p, &mut book);
        work(&mut p, &mut book, 1);
        let to = match (mixed, p.a.framing_kind()) {
            (false, k) => k,
            (true, FramingKind::LossyStream) => FramingKind::ReliableStream,
            (true, _) => FramingKind::LossyStream,
        };
        flap(&mut p, keep_a, keep_b, b_notices, to);
        pump(&mut p, &mut book);
    }
    // Let everything settle.
    assert!(p.run(10_000, |p| {
        pump(p, &mut book);
        book.calls.is_empty()
            && book.casts_got.len() as u64 == book.casts_sent
            && book.pipe_got.len() == book.pipe_expected.len()
    }));
    check(&book);
    assert_eq!(book.resumes, flaps.len() as u64);
    assert_eq!(p.a.stats().resumes, flaps.len() as u64);
    (book, p.a.stats())
}

#[test]
fn a_session_moves_between_a_serial_line_and_tcp_and_back() {
    // Born on a lossy stream (COBS framing, retransmission), resumed on a
    // reliable stream (length prefix, no retransmission), and back, with
    // bytes in flight lost at each switch.
    for start in [FramingKind::LossyStream, FramingKind::ReliableStream] {
        let (book, stats) = run_flaps_mixed(
            start,
            5,
            &[
                (5, 100, 40, true),
                (3, 7, 0, false),
                (7, 1_000_000, 1_000_000, true),
                (6, 55, 300, true),
            ],
            true,
        );
        assert!(book.casts_sent > 0 && book.pipe_sent > 0);
        assert_eq!(stats.resumes, 4, "{stats:?}");
    }
    // A datagram framing that cannot carry the session's packets refuses.
    let mut p = Pair::with_configs(
        config(FramingKind::LossyStream),
        config(FramingKind::LossyStream),
        Damage::none(),
        1,
    );
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    let now = p.now;
    assert!(p.a.link_lost(now, "cut"));
    let can = config(FramingKind::Datagram { mtu: 8 });
    assert!(p.a.set_link_kind(now, &can).is_err());
    assert_eq!(p.a.framing_kind(), FramingKind::LossyStream);
}

#[test]
fn resume_after_one_cut_loses_and_duplicates_nothing() {
    let (book, stats) = run_flaps(
        FramingKind::ReliableStream,
        1,
        &[
            (5, 100, 40, true),
            (3, 0, 0, false),
            (7, 1_000_000, 1_000_000, true),
        ],
    );
    assert!(book.casts_sent > 0 && book.pipe_sent > 0);
    assert!(stats.retransmissions > 0, "{stats:?}");
    assert_eq!(stats.detaches, 3);
}

#[test]
fn a_session_without_the_feature_closes_with_its_link() {
    let mut p = Pair::connected(FramingKind::ReliableStream);
    assert!(!p.a.is_resumable());
    assert!(!p.a.link_lost(p.now, "cut"));
    assert!(matches!(p.a.poll_event(), Some(Event::Closed { .. })));
    // A resume Hello to a node that does not resume: Close code 12.
    let now = p.now;
    let mut a = Session::new(
        config(FramingKind::ReliableStream),
        LocalInfo::new(NodeId::random()),
        now,
    )
    .unwrap();
    let mut b = Session::new(
        Config::new(FramingKind::ReliableStream),
        LocalInfo::new(b_id()),
        now,
    )
    .unwrap();
    let mut q = Pair::from_sessions(a, b, now, Damage::none(), 2);
    assert!(q.run(100, |q| q.a.is_connected() && q.b.is_connected()));
    assert!(!q.a.is_resumable(), "the peer lacks the feature");
    a = q.a;
    b = q.b;
    drop(b);
    assert!(!a.link_lost(now, "cut"));
}

#[test]
fn past_the_grace_the_session_closes_with_a_reason() {
    let mut p = Pair::with_configs(
        config(FramingKind::ReliableStream),
        config(FramingKind::ReliableStream),
        Damage::none(),
        3,
    );
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    let now = p.now;
    assert!(p.a.link_lost(now, "cut"));
    assert!(p.a.is_detached());
    // Calls are still accepted while detached (they wait).
    p.a.call("echo", Bytes::from_static(b"x")).unwrap();
    assert_eq!(p.a.poll_timeout(), Some(now + Duration::from_secs(90)));
    p.a.handle_timeout(now + Duration::from_secs(89));
    assert!(p.a.is_detached());
    p.a.handle_timeout(now + Duration::from_secs(90));
    let reason = std::iter::from_fn(|| p.a.poll_event())
        .find_map(|e| match e {
            Event::Closed { reason } => Some(reason),
            _ => None,
        })
        .unwrap();
    assert!(reason.message.contains("grace"), "{reason}");
}

#[test]
fn refused_resumption_is_close_code_12() {
    let now = Instant::now();
    let mut fresh = Session::new(
        config(FramingKind::ReliableStream),
        LocalInfo::new(b_id()),
        now,
    )
    .unwrap();
    let mut p = Pair::with_configs(
        config(FramingKind::ReliableStream),
        config(FramingKind::ReliableStream),
        Damage::none(),
        4,
    );
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    let t = p.now;
    assert!(p.a.link_lost(t, "cut"));
    p.a.resume(t, None).unwrap();
    fresh.handle_input(t, &drain(&mut p.a, t));
    assert!(matches!(
        fresh.poll_event(),
        Some(Event::ResumeRequested { .. })
    ));
    fresh.refuse_resume("no such session");
    let out = drain(&mut fresh, t);
    p.a.handle_input(t, &out);
    let reason = std::iter::from_fn(|| p.a.poll_event())
        .find_map(|e| match e {
            Event::Closed { reason } => Some(reason),
            _ => None,
        })
        .unwrap();
    assert_eq!(reason.code, CloseCode::NoSession);
}

fn secure_session(sc: &SecureConfig, now: Instant) -> Session {
    Session::new_secure(
        config(FramingKind::ReliableStream),
        LocalInfo::new(sc.key.node_id()),
        sc.clone(),
        now,
    )
    .unwrap()
}

#[test]
fn secure_sessions_resume_only_with_a_new_handshake_by_the_same_key() {
    let ka = NodeKey::generate();
    let kb = NodeKey::generate();
    let kc = NodeKey::generate();
    let sa = SecureConfig::new(ka.clone(), AllowList::from_keys([kb.public()]));
    let sb = SecureConfig::new(kb, AllowList::from_keys([ka.public(), kc.public()]));
    let now = Instant::now();
    let mut p = Pair::from_sessions(
        secure_session(&sa, now),
        secure_session(&sb, now),
        now,
        Damage::none(),
        5,
    );
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    assert!(p.a.is_resumable());
    p.a.cast("log", Bytes::from_static(b"before")).unwrap();
    p.drive();
    let t = p.now;
    // Cut; A resumes through a fresh session on B's side.
    assert!(p.a.link_lost(t, "cut"));
    p.a.cast("log", Bytes::from_static(b"during")).unwrap();
    p.a.resume(t, None).unwrap();
    let mut fresh = secure_session(&sb, t);
    let _ = drain(&mut fresh, t);
    fresh.handle_input(t, &drain(&mut p.a, t));
    let Some(Event::ResumeRequested { hello, .. }) = fresh.poll_event() else {
        panic!("no resume request");
    };
    p.b.resume(t, Some(hello)).unwrap();
    p.a_events.clear();
    p.b_events.clear();
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    let casts: Vec<Bytes> = p
        .b_events
        .iter()
        .filter_map(|e| match e {
            Event::Cast { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(casts, vec![Bytes::from_static(b"during")]);
    assert_eq!(p.b.stats().resumes, 1);
    assert_eq!(p.a.key_epoch(), Some(0), "new keys");

    // An impostor replays A's resume Hello on a link of its own: B starts
    // a new handshake that only A's key can finish, so B does not resume,
    // goes back to waiting after its idle timeout, and A resumes later.
    let t = p.now;
    assert!(p.a.link_lost(t, "cut"));
    p.a.resume(t, None).unwrap();
    let replayed = Bytes::from(drain(&mut p.a, t)[4..].to_vec());
    p.b.resume(t, Some(replayed)).unwrap();
    let _to_impostor = drain(&mut p.b, t);
    let later = t + Duration::from_secs(61);
    p.b.handle_timeout(later);
    let events: Vec<Event> = std::iter::from_fn(|| p.b.poll_event()).collect();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Resumed)),
        "{events:?}"
    );
    assert!(p.b.is_detached(), "B waits again: {events:?}");
    // The real A, on yet another link.
    p.now = later;
    assert!(p.a.link_lost(later, "cut"));
    p.a.resume(later, None).unwrap();
    let mut fresh = secure_session(&sb, later);
    let _ = drain(&mut fresh, later);
    fresh.handle_input(later, &drain(&mut p.a, later));
    let Some(Event::ResumeRequested { hello, .. }) = fresh.poll_event() else {
        panic!("no resume request");
    };
    p.b.resume(later, Some(hello)).unwrap();
    p.a_events.clear();
    p.b_events.clear();
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    assert_eq!(p.b.stats().resumes, 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Random cuts (each losing the bytes in flight from a random point,
    /// noticed by one or both sides) during casts, calls and pipe frames:
    /// exact delivery.
    #[test]
    fn random_cuts_deliver_everything_exactly_once(
        seed in 0u64..1000,
        flaps in proptest::collection::vec((any::<u8>(), 0usize..3000, 0usize..3000, any::<bool>()), 1..12),
        lossy in any::<bool>(),
        mixed in any::<bool>(),
    ) {
        let kind = if lossy { FramingKind::LossyStream } else { FramingKind::ReliableStream };
        run_flaps_mixed(kind, seed, &flaps, mixed);
    }
}

#[test]
fn queued_calls_still_overtake_queued_pipe_data_after_a_resumption() {
    // A lossy link with a window of 4: the PipeOpen and three frames are in
    // flight when the link is cut (and lost); a call and the pipe's close
    // were queued behind 27 more frames. After the resumption the numbered
    // packets go again first, in order, then the call, then the rest of
    // the pipe and its close (`docs/PROTOCOL.md` §7.1).
    let kind = FramingKind::LossyStream;
    let mut c = config(kind);
    c.send_window = 4;
    let mut p = Pair::with_configs(c.clone(), c, Damage::none(), 3);
    assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
    p.a_events.clear();
    p.b_events.clear();
    let pipe = p.a.open_pipe("sink", "in").unwrap();
    let frames: Vec<Bytes> = (0..30u8).map(|i| Bytes::from(vec![i; 300])).collect();
    for f in &frames {
        p.a.pipe_send(pipe, f.clone()).unwrap();
    }
    let now = p.now;
    let in_flight = drain(&mut p.a, now);
    assert!(!in_flight.is_empty());
    let call = p.a.call("echo", Bytes::from_static(b"hi")).unwrap();
    p.a.close_pipe(pipe, crate::ExitReason::Normal).unwrap();
    flap(&mut p, 0, 0, true, kind);
    let (mut got, mut before_call, mut closed_at, mut replied) = (Vec::new(), None, None, false);
    assert!(p.run(10_000, |p| {
        for ev in std::mem::take(&mut p.b_events) {
            match ev {
                Event::PipeData { id, bytes } => {
                    p.b.pipe_consumed(id, bytes.len()).unwrap();
                    got.push(bytes);
                }
                Event::Call { id, payload, .. } => {
                    before_call = Some(got.len());
                    p.b.reply(id, Ok(payload)).unwrap();
                }
                Event::PipeClosed { .. } => closed_at = Some(got.len()),
                _ => {}
            }
        }
        for ev in std::mem::take(&mut p.a_events) {
            if let Event::Reply { id, result } = ev {
                assert_eq!((id, result), (call, Ok(Bytes::from_static(b"hi"))));
                replied = true;
            }
        }
        replied && closed_at.is_some()
    }));
    assert_eq!(
        before_call,
        Some(3),
        "only the frames numbered before the cut"
    );
    assert_eq!(got, frames, "every frame once, in order");
    assert_eq!(closed_at, Some(frames.len()), "the close behind the data");
}
