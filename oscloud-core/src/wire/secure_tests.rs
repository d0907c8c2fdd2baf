//! Secure sessions (Noise handshake, sealed frames) over the in-memory
//! harness: every link kind, damage, tampering, replay, admission, PSK.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::harness::{Damage, Pair};
use super::*;
use crate::identity::{AllowList, NodeKey};

const KINDS: [FramingKind; 4] = [
    FramingKind::ReliableStream,
    FramingKind::LossyStream,
    FramingKind::Datagram { mtu: 8 },
    FramingKind::Datagram { mtu: 64 },
];

fn config(kind: FramingKind) -> Config {
    let mut c = Config::new(kind);
    c.keepalive = Duration::from_secs(1);
    c.idle_timeout = Duration::from_secs(60);
    c
}

fn session(kind: FramingKind, sc: Option<SecureConfig>, now: Instant) -> Session {
    match sc {
        Some(sc) => {
            let local = LocalInfo::new(sc.key.node_id());
            Session::new_secure(config(kind), local, sc, now).unwrap()
        }
        None => Session::new(config(kind), LocalInfo::new(crate::NodeId::random()), now).unwrap(),
    }
}

/// Two keys, each admitting the other.
fn mutual() -> (SecureConfig, SecureConfig) {
    let ka = NodeKey::generate();
    let kb = NodeKey::generate();
    (
        SecureConfig::new(ka.clone(), AllowList::from_keys([kb.public()])),
        SecureConfig::new(kb, AllowList::from_keys([ka.public()])),
    )
}

fn pair(
    kind: FramingKind,
    a: Option<SecureConfig>,
    b: Option<SecureConfig>,
    damage: Damage,
    seed: u64,
) -> Pair {
    let now = Instant::now();
    Pair::from_sessions(
        session(kind, a, now),
        session(kind, b, now),
        now,
        damage,
        seed,
    )
}

fn closed(events: &[Event]) -> Option<&CloseReason> {
    events.iter().find_map(|e| match e {
        Event::Closed { reason } => Some(reason),
        _ => None,
    })
}

fn connected(events: &[Event]) -> Option<&PeerInfo> {
    events.iter().find_map(|e| match e {
        Event::Connected(p) => Some(&**p),
        _ => None,
    })
}

fn casts(events: &[Event]) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Cast { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_and_traffic_on_every_link_kind() {
    for kind in KINDS {
        let (sa, sb) = mutual();
        let (ka, kb) = (sa.key.public(), sb.key.public());
        let mut p = pair(kind, Some(sa), Some(sb), Damage::none(), 1);
        assert!(
            p.run(1000, |p| p.a.is_connected() && p.b.is_connected()),
            "{kind:?}"
        );
        assert_eq!(connected(&p.a_events).unwrap().key, Some(kb));
        assert_eq!(connected(&p.b_events).unwrap().key, Some(ka));
        assert_eq!(p.a.peer().unwrap().node, kb.node_id());
        // Messages and a pipe frame larger than one datagram flow.
        p.a.cast("log", Bytes::from_static(b"secret hello"))
            .unwrap();
        let pipe = p.b.open_pipe("sink", "in").unwrap();
        p.b.pipe_send(pipe, Bytes::from(vec![7u8; 3000])).unwrap();
        assert!(p.run(1000, |p| {
            casts(&p.b_events).len() == 1
                && p.a_events
                    .iter()
                    .any(|e| matches!(e, Event::PipeData { bytes, .. } if bytes.len() == 3000))
        }));
        assert_eq!(
            casts(&p.b_events),
            vec![Bytes::from_static(b"secret hello")]
        );
        assert!(closed(&p.a_events).is_none() && closed(&p.b_events).is_none());
    }
}

#[test]
fn each_cipher_is_used_only_when_both_offer_it_and_carries_everything() {
    // (a offers AEGIS, b offers AEGIS, a offers AES-GCM, b offers AES-GCM)
    for (ea, eb, ga, gb) in [
        (true, true, true, true),
        (true, false, true, true),
        (false, true, true, true),
        (true, true, false, false),
        (true, false, false, true),
        (false, false, true, true),
        (false, false, true, false),
        (false, false, false, true),
        (false, false, false, false),
    ] {
        let (mut sa, mut sb) = mutual();
        (sa.offer_aegis, sb.offer_aegis) = (ea, eb);
        (sa.offer_aes_gcm, sb.offer_aes_gcm) = (ga, gb);
        let mut p = pair(
            FramingKind::ReliableStream,
            Some(sa),
            Some(sb),
            Damage::none(),
            1,
        );
        assert!(p.run(100, |p| p.a.is_connected() && p.b.is_connected()));
        let want = if !has_aes_hardware() {
            Suite::ChaChaPoly
        } else if ea && eb {
            Suite::Aegis256
        } else if ga && gb {
            Suite::AesGcm
        } else {
            Suite::ChaChaPoly
        };
        assert_eq!(p.a.cipher_suite(), Some(want), "{ea} {eb} {ga} {gb}");
        assert_eq!(p.b.cipher_suite(), Some(want));
        p.a.cast("x", Bytes::from_static(b"both ways")).unwrap();
        let pipe = p.b.open_pipe("sink", "in").unwrap();
        p.b.pipe_send(pipe, Bytes::from(vec![7u8; 60_000])).unwrap();
        assert!(p.run(1000, |p| {
            casts(&p.b_events).len() == 1
                && p.a_events
                    .iter()
                    .any(|e| matches!(e, Event::PipeData { bytes, .. } if bytes.len() == 60_000))
        }));
    }
}

#[test]
fn ciphertext_never_shows_the_plaintext() {
    let (sa, sb) = mutual();
    let mut p = pair(
        FramingKind::ReliableStream,
        Some(sa),
        Some(sb),
        Damage::none(),
        1,
    );
    assert!(p.run(100, |p| p.a.is_connected() && p.b.is_connected()));
    p.a.cast("log", Bytes::from_static(b"TOP-SECRET-PAYLOAD"))
        .unwrap();
    let now = p.now;
    let wire: Vec<u8> = std::iter::from_fn(|| p.a.poll_transmit(now))
        .flat_map(|b| b.to_vec())
        .collect();
    assert!(!wire.is_empty());
    assert!(!wire.windows(10).any(|w| w == b"TOP-SECRET"));
    assert!(!wire.windows(3).any(|w| w == b"log"));
}

#[test]
fn lossy_links_with_damage_deliver_exactly_once_in_order() {
    let damage = Damage {
        loss: 0.1,
        duplicate: 0.05,
        reorder: 0.1,
        corrupt: 0.05,
        truncate: 0.0,
    };
    for kind in [
        FramingKind::LossyStream,
        FramingKind::Datagram { mtu: 8 },
        FramingKind::Datagram { mtu: 64 },
    ] {
        // Each segment of a frame may be damaged: on 8-byte datagrams a
        // 100-byte handshake message is 17 segments, so damage less.
        let scale = if kind == (FramingKind::Datagram { mtu: 8 }) {
            0.3
        } else {
            1.0
        };
        let damage = Damage {
            loss: damage.loss * scale,
            duplicate: damage.duplicate * scale,
            reorder: damage.reorder * scale,
            corrupt: damage.corrupt * scale,
            truncate: 0.0,
        };
        for seed in 1..4 {
            let (mut sa, sb) = mutual();
            // Roll keys often, so epochs change under loss and reordering.
            sa.rekey_after_bytes = 300;
            let mut p = pair(kind, Some(sa), Some(sb), damage, seed);
            assert!(
                p.run(5000, |p| p.a.is_connected() && p.b.is_connected()),
                "{kind:?} seed {seed}: no handshake"
            );
            let want: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("m{i}"))).collect();
            let mut sent = 0;
            let ok = p.run(20_000, |p| {
                while sent < want.len() && p.a.cast("x", want[sent].clone()).is_ok() {
                    sent += 1;
                }
                casts(&p.b_events).len() >= want.len()
            });
            assert!(ok, "{kind:?} seed {seed}: {:?}", p.b.stats());
            assert_eq!(casts(&p.b_events), want, "{kind:?} seed {seed}");
            assert!(p.a.key_epoch().unwrap() > 0, "keys rolled");
            assert!(closed(&p.b_events).is_none());
        }
    }
}

#[test]
fn rekeying_on_a_reliable_stream() {
    let (mut sa, mut sb) = mutual();
    sa.rekey_after_bytes = 100;
    sb.rekey_after = Duration::from_secs(2);
    let mut p = pair(
        FramingKind::ReliableStream,
        Some(sa),
        Some(sb),
        Damage::none(),
        1,
    );
    assert!(p.run(100, |p| p.a.is_connected() && p.b.is_connected()));
    for i in 0..50 {
        p.a.cast("x", Bytes::from(format!("message {i}"))).unwrap();
        p.drive();
    }
    assert_eq!(casts(&p.b_events).len(), 50);
    assert!(p.a.key_epoch().unwrap() >= 5, "{:?}", p.a.key_epoch());
    // Time-based: b rolls after 2 s of simulated time.
    p.now += Duration::from_secs(3);
    p.b.cast("y", Bytes::from_static(b"late")).unwrap();
    p.drive();
    assert_eq!(p.b.key_epoch(), Some(1));
    assert_eq!(casts(&p.a_events), vec![Bytes::from_static(b"late")]);
}

#[test]
fn unknown_key_is_refused_on_both_sides() {
    for kind in KINDS {
        let (sa, mut sb) = mutual();
        sb.allow = AllowList::from_keys([NodeKey::generate().public()]);
        let mut p = pair(kind, Some(sa), Some(sb), Damage::none(), 1);
        assert!(p.run(1000, |p| closed(&p.a_events).is_some()
            && closed(&p.b_events).is_some()));
        assert!(connected(&p.b_events).is_none(), "{kind:?}");
        let rb = closed(&p.b_events).unwrap();
        assert_eq!(rb.code, CloseCode::Unauthorized);
        assert!(rb.message.contains("not on the allow-list"), "{rb}");
        let ra = closed(&p.a_events).unwrap();
        assert_eq!(ra.code, CloseCode::Unauthorized);
        assert!(
            ra.remote && ra.message.contains("allow-list"),
            "{kind:?}: {ra}"
        );
    }
}

#[test]
fn open_mode_admits_anyone() {
    let (sa, mut sb) = mutual();
    sb.allow = AllowList::open();
    let mut p = pair(
        FramingKind::ReliableStream,
        Some(sa),
        Some(sb),
        Damage::none(),
        1,
    );
    assert!(p.run(100, |p| p.a.is_connected() && p.b.is_connected()));
}

#[test]
fn psk_must_match() {
    for kind in [
        FramingKind::ReliableStream,
        FramingKind::Datagram { mtu: 8 },
    ] {
        // Same PSK: fine.
        let (sa, sb) = mutual();
        let mut p = pair(
            kind,
            Some(sa.with_psk([1; 32])),
            Some(sb.with_psk([1; 32])),
            Damage::none(),
            1,
        );
        assert!(p.run(1000, |p| p.a.is_connected() && p.b.is_connected()));
        // Wrong PSK: refused, never connected.
        let (sa, sb) = mutual();
        let mut p = pair(
            kind,
            Some(sa.with_psk([1; 32])),
            Some(sb.with_psk([2; 32])),
            Damage::none(),
            1,
        );
        assert!(p.run(1000, |p| closed(&p.a_events).is_some()
            && closed(&p.b_events).is_some()));
        assert!(connected(&p.a_events).is_none() && connected(&p.b_events).is_none());
        for r in [closed(&p.a_events).unwrap(), closed(&p.b_events).unwrap()] {
            assert_eq!(r.code, CloseCode::Unauthorized, "{r}");
            assert!(r.message.contains("pre-shared key"), "{r}");
        }
        // PSK on one side only: refused at the Hello.
        let (sa, sb) = mutual();
        let mut p = pair(
            kind,
            Some(sa.with_psk([1; 32])),
            Some(sb),
            Damage::none(),
            1,
        );
        assert!(p.run(1000, |p| closed(&p.a_events).is_some()));
        assert_eq!(closed(&p.a_events).unwrap().code, CloseCode::Unauthorized);
    }
}

#[test]
fn plaintext_and_secure_peers_refuse_each_other() {
    let (sa, _) = mutual();
    let mut p = pair(
        FramingKind::ReliableStream,
        Some(sa),
        None,
        Damage::none(),
        1,
    );
    assert!(p.run(100, |p| closed(&p.a_events).is_some()
        && closed(&p.b_events).is_some()));
    assert!(connected(&p.a_events).is_none());
    assert_eq!(closed(&p.a_events).unwrap().code, CloseCode::Unauthorized);
    let rb = closed(&p.b_events).unwrap();
    assert_eq!(rb.code, CloseCode::Unauthorized);
    // The plaintext side may have reported Connected on the Hello, but it
    // gets nothing more than a Close.
    assert!(casts(&p.b_events).is_empty());
}

#[test]
fn node_id_must_derive_from_the_key() {
    let (sa, _) = mutual();
    let err = Session::new_secure(
        config(FramingKind::ReliableStream),
        LocalInfo::new(crate::NodeId::random()),
        sa,
        Instant::now(),
    )
    .unwrap_err();
    assert!(matches!(err, crate::Error::WireConfig(_)));
}

/// Connected pair on a reliable stream; the link is then driven by hand.
fn reliable_pair() -> Pair {
    let (sa, sb) = mutual();
    let mut p = pair(
        FramingKind::ReliableStream,
        Some(sa),
        Some(sb),
        Damage::none(),
        1,
    );
    assert!(p.run(100, |p| p.a.is_connected() && p.b.is_connected()));
    p.a_events.clear();
    p.b_events.clear();
    p
}

fn take_out(s: &mut Session, now: Instant) -> Vec<u8> {
    std::iter::from_fn(|| s.poll_transmit(now))
        .flat_map(|b| b.to_vec())
        .collect()
}

fn feed(s: &mut Session, now: Instant, bytes: &[u8]) -> Vec<Event> {
    s.handle_input(now, bytes);
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn a_flipped_ciphertext_bit_closes_a_reliable_link() {
    // Flip each byte position of the sealed frame in turn (past the
    // 4-byte length prefix): never delivered, always closed.
    let mut p = reliable_pair();
    p.a.cast("log", Bytes::from_static(b"pay me 100")).unwrap();
    let now = p.now;
    let clean = take_out(&mut p.a, now);
    for i in 4..clean.len() {
        let (sa, sb) = mutual();
        let mut q = pair(
            FramingKind::ReliableStream,
            Some(sa),
            Some(sb),
            Damage::none(),
            1,
        );
        assert!(q.run(100, |q| q.a.is_connected() && q.b.is_connected()));
        q.b_events.clear();
        q.a.cast("log", Bytes::from_static(b"pay me 100")).unwrap();
        let now = q.now;
        let mut wire = take_out(&mut q.a, now);
        wire[i] ^= 0x10;
        let events = feed(&mut q.b, now, &wire);
        assert!(
            casts(&events).is_empty(),
            "byte {i}: tampered data delivered"
        );
        let r = closed(&events).unwrap_or_else(|| panic!("byte {i}: not closed"));
        assert!(
            matches!(r.code, CloseCode::Crypto | CloseCode::Decode),
            "byte {i}: {r}"
        );
        assert!(q.b.stats().auth_failures + q.b.stats().replays <= 1);
    }
}

#[test]
fn a_replayed_frame_is_refused() {
    // Reliable stream: a repeated frame closes the link.
    let mut p = reliable_pair();
    p.a.cast("log", Bytes::from_static(b"once")).unwrap();
    let now = p.now;
    let wire = take_out(&mut p.a, now);
    assert_eq!(casts(&feed(&mut p.b, now, &wire)).len(), 1);
    let events = feed(&mut p.b, now, &wire);
    assert!(casts(&events).is_empty());
    assert_eq!(closed(&events).unwrap().code, CloseCode::Crypto);
    assert_eq!(p.b.stats().replays, 1);

    // Datagrams: a replayed frame is dropped and counted, the link stays.
    let (sa, sb) = mutual();
    let mut p = pair(
        FramingKind::Datagram { mtu: 64 },
        Some(sa),
        Some(sb),
        Damage::none(),
        1,
    );
    assert!(p.run(100, |p| p.a.is_connected() && p.b.is_connected()));
    p.b_events.clear();
    p.a.cast("log", Bytes::from_static(b"once")).unwrap();
    let now = p.now;
    let grams: Vec<Bytes> = std::iter::from_fn(|| p.a.poll_transmit(now)).collect();
    for g in grams.iter().chain(grams.iter()) {
        p.b.handle_input(now, g);
    }
    let events: Vec<Event> = std::iter::from_fn(|| p.b.poll_event()).collect();
    assert_eq!(casts(&events).len(), 1);
    assert!(closed(&events).is_none());
    assert!(p.b.stats().replays >= 1);
}

#[test]
fn a_replayed_session_is_refused() {
    // Record everything a sent to b in a whole session, then play it to
    // fresh sessions of b (same keys): never connected, never delivered.
    for round in 0..8 {
        let (sa, sb) = mutual();
        let now = Instant::now();
        let mut a = session(FramingKind::ReliableStream, Some(sa), now);
        let mut b = session(FramingKind::ReliableStream, Some(sb.clone()), now);
        let mut capture = Vec::new();
        let mut sent = false;
        for _ in 0..20 {
            if a.is_connected() && !sent {
                a.cast("log", Bytes::from_static(b"transfer 100")).unwrap();
                sent = true;
            }
            let x = take_out(&mut a, now);
            capture.extend_from_slice(&x);
            b.handle_input(now, &x);
            let y = take_out(&mut b, now);
            a.handle_input(now, &y);
        }
        let got: Vec<Event> = std::iter::from_fn(|| b.poll_event()).collect();
        assert_eq!(
            casts(&got).len(),
            1,
            "round {round}: the original session works"
        );

        let mut b2 = session(FramingKind::ReliableStream, Some(sb), now);
        let events = feed(&mut b2, now, &capture);
        assert!(
            connected(&events).is_none(),
            "round {round}: replay connected"
        );
        assert!(casts(&events).is_empty(), "round {round}: replay delivered");
        let r = closed(&events).unwrap_or_else(|| panic!("round {round}: not closed"));
        assert!(
            matches!(r.code, CloseCode::Unauthorized | CloseCode::Crypto),
            "round {round}: {r}"
        );
    }
}

#[test]
fn injected_cleartext_is_refused_after_the_handshake() {
    let mut p = reliable_pair();
    // A plaintext Cast in a Data packet, framed with a length prefix.
    let packet = super::packet::Packet::Data {
        seq: 1,
        ack: 0,
        msg: super::packet::Msg::Cast {
            to: "log".into(),
            payload: Bytes::from_static(b"forged"),
            trace: Default::default(),
        },
    }
    .encode()
    .unwrap();
    let mut wire = (packet.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&packet);
    let now = p.now;
    let events = feed(&mut p.b, now, &wire);
    assert!(casts(&events).is_empty());
    assert_eq!(closed(&events).unwrap().code, CloseCode::Crypto);
}
