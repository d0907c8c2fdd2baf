//! Bad bytes from a peer close that peer's link with a clear logged reason;
//! the node and its other links keep working.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::time::{Duration, Instant};

use oscloud_core::wire::{Config, FramingKind};
use oscloud_tests::{TestNode, raw_handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_oscloud-testnode");

/// The Hello of docs/PROTOCOL.md §3.1 with version 2 instead of 1.
const HELLO_V2: &[u8] = &[
    0x9a, 0x01, 0xce, 0x4f, 0x53, 0x43, 0x4c, 0x02, 0xc4, 0x10, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
    0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0x00, 0xcf, 0x01, 0x02, 0x03, 0x04,
    0x05, 0x06, 0x07, 0x08, 0xc0, 0xce, 0x00, 0x01, 0x00, 0x00, 0x40, 0xce, 0x00, 0x01, 0x00, 0x00,
];

/// `[3, seq 1, ack 0, [49 PipeData, pipe 1234, last, bin "x"]]`: data for a
/// pipe nobody opened.
const UNKNOWN_PIPE_DATA: &[u8] = &[
    0x94, 0x03, 0x01, 0x00, 0x94, 0x31, 0xcd, 0x04, 0xd2, 0xc3, 0xc4, 0x01, 0x78,
];

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut v = (packet.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(packet);
    v
}

/// Read until the node closes the connection; fails after 5 s.
async fn closed_by_node(mut s: TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the node did not close the bad link");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_that_link() {
    let bin = Path::new(BIN);
    let mut n = TestNode::start(bin, "n", &["--listen", "tcp://127.0.0.1:0"]).await;
    let at = n.listening[0].clone();
    let port = at.rsplit(':').next().unwrap().to_owned();
    let raw = format!("127.0.0.1:{port}");
    // A well-behaved peer, to check the node stays healthy.
    let mut p = TestNode::start(bin, "p", &["--connect", &at]).await;
    assert!(p.ask("wait upper-n").await.starts_with("found"));

    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "garbage (an HTTP request)",
            b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec(),
            &["WARN", "closing the link", "exceeds the limit"],
        ),
        (
            "oversized frame",
            vec![0x00, 0x10, 0x00, 0x01, 0x00],
            &["WARN", "closing the link", "1048577 bytes exceeds"],
        ),
        (
            "wrong protocol version",
            framed(HELLO_V2),
            &["WARN", "closing the link", "unsupported protocol version 2"],
        ),
        (
            "unknown pipe after a proper handshake",
            framed(UNKNOWN_PIPE_DATA),
            &["WARN", "closing the link", "never opened"],
        ),
    ];
    for (what, bytes, log) in cases {
        let mut s = TcpStream::connect(&raw).await.unwrap();
        if what.contains("handshake") {
            raw_handshake(&mut s, Config::new(FramingKind::ReliableStream)).await;
        }
        s.write_all(&bytes).await.unwrap();
        let took = closed_by_node(s).await;
        let line = n.expect_log(log).await;
        println!("{what}: closed after {took:?}; node logged: {line}");
        // The node and its other link are fine.
        assert_eq!(
            p.ask(&format!("call upper-n after {}", what.len())).await,
            format!("reply AFTER {} from n", what.len())
        );
    }
    assert_eq!(
        n.ask("call upper-p still-here").await,
        "reply STILL-HERE from p"
    );
}
