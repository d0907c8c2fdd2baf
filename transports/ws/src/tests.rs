#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use futures::{SinkExt, StreamExt};
use oscloud_core::transport::{LinkIo, LinkKind, StreamReader, StreamWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::*;
use crate::listener::{Security, handshake, plaintext_allowed};

type RawClient = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn halves(link: Link) -> (StreamReader, StreamWriter) {
    match link.io {
        LinkIo::Stream { reader, writer } => (reader, writer),
        LinkIo::Datagram { .. } => panic!("WebSocket links are streams"),
    }
}

async fn listen(addr: &str) -> Box<dyn Listener> {
    let t = if addr.starts_with("wss") {
        WsTransport::wss()
    } else {
        WsTransport::ws()
    };
    t.listen(&addr.parse().unwrap()).await.unwrap()
}

/// A WebSocket client that is not an oscloud node (as a browser is).
async fn raw_client(at: &Address) -> RawClient {
    let url = at.to_string();
    let url = url.split('?').next().unwrap();
    let tcp = tokio::net::TcpStream::connect(at.authority())
        .await
        .unwrap();
    tokio_tungstenite::client_async(url, tcp).await.unwrap().0
}

/// The next length-prefixed frame from a session-side reader.
async fn read_frame(reader: &mut StreamReader) -> Vec<u8> {
    within("a frame", async {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).await.unwrap();
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        reader.read_exact(&mut frame).await.unwrap();
        frame
    })
    .await
}

async fn write_frame(writer: &mut StreamWriter, frame: &[u8]) {
    writer
        .write_all(&(frame.len() as u32).to_be_bytes())
        .await
        .unwrap();
    writer.write_all(frame).await.unwrap();
    writer.flush().await.unwrap();
}

/// `f`, or a failure after 10 s.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 10 s"))
}

/// The Close the client gets next (skipping anything else).
async fn close_of(client: &mut RawClient) -> (CloseCode, String) {
    within("a Close frame", async {
        while let Some(msg) = client.next().await {
            if let Message::Close(Some(frame)) = msg.unwrap() {
                return (frame.code, frame.reason.to_string());
            }
        }
        panic!("the connection ended without a Close frame");
    })
    .await
}

/// The session-side reader ends (the link is down).
async fn ends(reader: &mut StreamReader) {
    let mut rest = Vec::new();
    let _ = within("the end of the link", reader.read_to_end(&mut rest)).await;
    assert!(
        rest.is_empty(),
        "{} bytes after the link should have ended",
        rest.len()
    );
}

#[tokio::test]
async fn frames_cross_both_ways() {
    let mut l = listen("ws://127.0.0.1:0/oscloud").await;
    let at = l.local_address();
    assert_eq!(at.path(), "/oscloud");
    let dialed = WsTransport::ws().connect(&at).await.unwrap();
    let accepted = l.accept().await.unwrap();
    assert_eq!(dialed.info.kind, LinkKind::ReliableStream);
    assert_eq!(dialed.info.remote, at.to_string());
    assert_eq!(accepted.info.remote, dialed.info.local);
    assert_eq!(accepted.info.local, at.to_string());
    let ((mut ar, mut aw), (mut br, mut bw)) = (halves(dialed), halves(accepted));
    let big = vec![7u8; 300 * 1024];
    // Frames written in one go, and one written in pieces.
    let mut both = Vec::new();
    for f in [&b"ping"[..], &big[..]] {
        both.extend_from_slice(&(f.len() as u32).to_be_bytes());
        both.extend_from_slice(f);
    }
    aw.write_all(&both).await.unwrap();
    assert_eq!(read_frame(&mut br).await, b"ping");
    assert_eq!(read_frame(&mut br).await, big);
    bw.write_all(&[0, 0]).await.unwrap();
    bw.flush().await.unwrap();
    bw.write_all(&[0, 4, b'p', b'o']).await.unwrap();
    bw.write_all(b"ng").await.unwrap();
    bw.flush().await.unwrap();
    assert_eq!(read_frame(&mut ar).await, b"pong");
    // The dialler's node ends the link: the acceptor's stream ends.
    aw.shutdown().await.unwrap();
    drop((ar, aw));
    ends(&mut br).await;
}

#[tokio::test]
async fn one_frame_is_one_binary_message_without_a_prefix() {
    let mut l = listen("ws://127.0.0.1:0/oscloud").await;
    let mut client = raw_client(&l.local_address()).await;
    let (mut r, mut w) = halves(l.accept().await.unwrap());
    client
        .send(Message::Binary(Bytes::from_static(&[0x91, 0x05])))
        .await
        .unwrap();
    assert_eq!(read_frame(&mut r).await, [0x91, 0x05]);
    write_frame(&mut w, &[0x92, 0x02, 0x07]).await;
    write_frame(&mut w, &[0x91, 0x05]).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        match client.next().await.unwrap().unwrap() {
            Message::Binary(b) => got.push(b.to_vec()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, [vec![0x92, 0x02, 0x07], vec![0x91, 0x05]]);
}

#[tokio::test]
async fn a_text_message_gets_a_close_saying_binary_only() {
    let mut l = listen("ws://127.0.0.1:0/oscloud").await;
    let mut client = raw_client(&l.local_address()).await;
    let (mut r, _w) = halves(l.accept().await.unwrap());
    client.send(Message::text("hello")).await.unwrap();
    let (code, reason) = close_of(&mut client).await;
    assert_eq!(code, CloseCode::Unsupported);
    assert!(reason.contains("binary messages only"), "{reason}");
    ends(&mut r).await;
    // The listener goes on.
    let _again = raw_client(&l.local_address()).await;
    let _ = l.accept().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_gets_a_close_saying_too_big() {
    let mut l = listen("ws://127.0.0.1:0/oscloud?max_message=1024").await;
    let mut client = raw_client(&l.local_address()).await;
    let (mut r, _w) = halves(l.accept().await.unwrap());
    client
        .send(Message::Binary(Bytes::from(vec![1u8; 1024])))
        .await
        .unwrap();
    assert_eq!(read_frame(&mut r).await.len(), 1024);
    client
        .send(Message::Binary(Bytes::from(vec![1u8; 1025])))
        .await
        .unwrap();
    let (code, reason) = close_of(&mut client).await;
    assert_eq!(code, CloseCode::Size);
    assert!(
        reason.contains("1025") && reason.contains("1024"),
        "{reason}"
    );
    ends(&mut r).await;
}

#[tokio::test]
async fn fragments_past_the_limit_get_a_close_saying_too_big() {
    let mut l = listen("ws://127.0.0.1:0/oscloud?max_message=1024").await;
    let mut client = raw_client(&l.local_address()).await;
    let (mut r, _w) = halves(l.accept().await.unwrap());
    let fragment = |opcode, last| {
        let header = FrameHeader {
            is_final: last,
            opcode,
            ..FrameHeader::default()
        };
        Message::Frame(Frame::from_payload(header, Bytes::from(vec![2u8; 600])))
    };
    // Two fragments of 600 bytes fit no 1024-byte message.
    client
        .send(fragment(OpCode::Data(Data::Binary), false))
        .await
        .unwrap();
    client
        .send(fragment(OpCode::Data(Data::Continue), false))
        .await
        .unwrap();
    let (code, reason) = close_of(&mut client).await;
    assert_eq!(code, CloseCode::Size, "{reason}");
    ends(&mut r).await;
}

#[tokio::test]
async fn a_wrong_path_is_not_found() {
    let l = listen("ws://127.0.0.1:0/oscloud").await;
    let other = format!("ws://{}/other", l.local_address().authority());
    let err = WsTransport::ws()
        .connect(&other.parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LinkFailed { .. }), "{err}");
    assert!(err.to_string().contains("404"), "{err}");
}

#[test]
fn plaintext_is_for_loopback_unless_any() {
    let lo4: IpAddr = "127.0.0.1".parse().unwrap();
    let lo6: IpAddr = "::1".parse().unwrap();
    let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let lan: IpAddr = "192.168.1.20".parse().unwrap();
    for ip in [lo4, lo6, mapped] {
        assert!(plaintext_allowed(Plaintext::Loopback, ip), "{ip}");
    }
    assert!(!plaintext_allowed(Plaintext::Loopback, lan));
    assert!(plaintext_allowed(Plaintext::Any, lan));
}

/// A plaintext connection as if from another host (the peer address is
/// what the listener's accept reported).
async fn from_another_host(policy: Plaintext) -> (Result<Link, String>, RawClient) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at: Address = format!("ws://{}/oscloud", tcp.local_addr().unwrap())
        .parse()
        .unwrap();
    let target = Target::parse(&at, &[PARAM_PLAINTEXT]).unwrap();
    let client = tokio::spawn({
        let at = at.clone();
        async move { raw_client(&at).await }
    });
    let (conn, _) = tcp.accept().await.unwrap();
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 50000);
    let refused =
        tokio::spawn(async move { handshake(conn, peer, &Security::Plain(policy), &target).await });
    let mut client = client.await.unwrap();
    if policy == Plaintext::Loopback {
        let (code, reason) = close_of(&mut client).await;
        assert_eq!(code, CloseCode::Policy);
        assert!(reason.contains("use wss://"), "{reason}");
    }
    (refused.await.unwrap(), client)
}

#[tokio::test]
async fn plaintext_from_another_host_is_closed_with_the_reason() {
    let (refused, _client) = from_another_host(Plaintext::Loopback).await;
    assert!(refused.unwrap_err().contains("plaintext=any"));
    let (taken, _client) = from_another_host(Plaintext::Any).await;
    assert_eq!(taken.unwrap().info.remote, "ws://192.0.2.7:50000");
}

/// A CA, and a certificate it signed for localhost and 127.0.0.1, as PEM
/// files in `dir`: (ca, cert, key).
fn pki(dir: &Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[tokio::test]
async fn wss_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let mut l = listen(&format!("wss://127.0.0.1:0/oscloud?cert={cert}&key={key}")).await;
    let port = l.local_address().port().unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let at: Address = format!("wss://{host}:{port}/oscloud?ca={ca}")
            .parse()
            .unwrap();
        let dialed = WsTransport::wss().connect(&at).await.unwrap();
        assert_eq!(dialed.info.remote, format!("wss://{host}:{port}/oscloud"));
        let (mut r, mut w) = halves(l.accept().await.unwrap());
        let (mut dr, mut dw) = halves(dialed);
        write_frame(&mut dw, b"sealed").await;
        assert_eq!(read_frame(&mut r).await, b"sealed");
        write_frame(&mut w, b"back").await;
        assert_eq!(read_frame(&mut dr).await, b"back");
    }
    // Without the CA, the web roots do not vouch for this certificate.
    let at: Address = format!("wss://127.0.0.1:{port}/oscloud").parse().unwrap();
    let err = WsTransport::wss().connect(&at).await.unwrap_err();
    assert!(matches!(err, Error::LinkFailed { .. }), "{err}");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    // A plaintext client at a wss listener gets nowhere, and the listener
    // goes on.
    let plain: Address = format!("ws://127.0.0.1:{port}/oscloud").parse().unwrap();
    assert!(WsTransport::ws().connect(&plain).await.is_err());
    let at: Address = format!("wss://localhost:{port}/oscloud?ca={ca}")
        .parse()
        .unwrap();
    let _ok = WsTransport::wss().connect(&at).await.unwrap();
    let _ = l.accept().await.unwrap();
}

#[tokio::test]
async fn bad_addresses_and_files_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, _key) = pki(dir.path());
    let missing = dir.path().join("missing.pem").display().to_string();
    for (transport, addr, says) in [
        (
            WsTransport::ws(),
            "ws://127.0.0.1/x".to_owned(),
            "needs a port",
        ),
        (WsTransport::ws(), "ws://:1/x".to_owned(), "needs a host"),
        (
            WsTransport::ws(),
            "ws://127.0.0.1:0/x?bogus=1".to_owned(),
            "unknown parameter \"bogus\"",
        ),
        (
            WsTransport::ws(),
            "ws://127.0.0.1:0/x?plaintext=all".to_owned(),
            "expected loopback or any",
        ),
        (
            WsTransport::ws(),
            "ws://127.0.0.1:0/x?max_message=10".to_owned(),
            "between 128",
        ),
        (
            WsTransport::wss(),
            "wss://127.0.0.1:0/x".to_owned(),
            "cert is missing",
        ),
        (
            WsTransport::wss(),
            format!("wss://127.0.0.1:0/x?cert={cert}"),
            "key is missing",
        ),
        (
            WsTransport::wss(),
            format!("wss://127.0.0.1:0/x?cert={missing}&key={missing}"),
            "TLS certificate",
        ),
        (
            WsTransport::wss(),
            format!("wss://127.0.0.1:0/x?cert={cert}&key={cert}"),
            "TLS private key",
        ),
        (
            WsTransport::wss(),
            "wss://127.0.0.1:0/x?plaintext=any".to_owned(),
            "unknown parameter",
        ),
    ] {
        let err = transport
            .listen(&addr.parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains(says), "{addr}: {err}");
    }
    let err = WsTransport::wss()
        .connect(&format!("wss://127.0.0.1:1/x?ca={missing}").parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadKeyFile { .. }), "{err}");
}

#[tokio::test]
async fn a_dropped_listener_frees_its_port() {
    let l = listen("ws://127.0.0.1:0/").await;
    let at = l.local_address();
    drop(l);
    // Its task stops at its next turn on the runtime.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match WsTransport::ws().connect(&at).await {
            Err(Error::ConnectionRefused { .. }) => break,
            other => assert!(std::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::task::yield_now().await;
    }
}

#[test]
fn close_reasons_are_cut_to_fit_a_control_frame() {
    let long = "é".repeat(100);
    let frame = link::close_frame(CloseCode::Policy, &long);
    assert!(frame.reason.len() <= 123);
    assert!(long.starts_with(frame.reason.as_str()));
}

/// A client frame: FIN, `opcode`, masked with `mask`.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[test]
fn fuzz_entry_point_takes_well_formed_and_broken_input() {
    let mut good = client_frame(2, &[0x91, 0x05], [1, 2, 3, 4]);
    good.extend(client_frame(9, b"ping", [5, 6, 7, 8]));
    good.extend(client_frame(2, &[7; 3000], [9, 9, 9, 9]));
    good.extend(client_frame(1, b"text", [0, 0, 0, 0]));
    // Two binary messages pass, the ping is skipped, the text ends it.
    assert_eq!(fuzzing::incoming(&good), 2);
    assert_eq!(
        fuzzing::incoming(&client_frame(2, &[7; 5000], [1, 1, 1, 1])),
        0
    );
    assert_eq!(fuzzing::incoming(&good[..good.len() / 2]), 1);
    assert_eq!(fuzzing::incoming(&[]), 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, .. Default::default() })]

    #[test]
    fn fuzz_entry_point_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        // What the cargo-fuzz target in fuzz/ runs, as a stable smoke test.
        let _ = fuzzing::incoming(&data);
        // And behind a valid first frame, so the input reaches further.
        let mut framed = client_frame(2, &data[..data.len().min(100)], [3, 1, 4, 1]);
        framed.extend_from_slice(&data);
        let _ = fuzzing::incoming(&framed);
    }
}

#[test]
fn a_peer_that_vanishes_is_an_end_not_a_complaint() {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    let gone = WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake);
    assert_eq!(link::judge(Some(Err(gone))), link::Verdict::End);
    let broken = WsError::Protocol(ProtocolError::NonZeroReservedBits);
    assert!(matches!(
        link::judge(Some(Err(broken))),
        link::Verdict::Close(CloseCode::Protocol, _)
    ));
    assert_eq!(link::judge(None), link::Verdict::End);
}
