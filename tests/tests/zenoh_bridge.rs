//! Bridge mode: a board cluster reached through zenoh. A board node sits
//! behind a serial line (a real pseudo-terminal pair joined by
//! `oscloud-serial-relay`, as a null-modem cable); the bridge node holds
//! the other end of the cable and listens through a real `zenohd`; a node
//! elsewhere dials the bridge through the router and calls the board's
//! servers by name, pipes into them and takes a pipe from them.
//!
//! The same topology as `examples/topologies/zenoh-bridge.toml`:
//!
//! ```text
//! board ══serial══ bridge ──zenoh://── zenohd ──zenoh://── far
//! ```
//!
//! A pipe tap: a plain zenoh subscriber (the `zenoh` crate, no oscloud
//! code) sees exactly the frames written into a tapped pipe, one sample
//! each, under `oscloud/<cloud>/pipe/<node>/<pipe>`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use oscloud_core::Kernel;
use oscloud_core::plumbing::{Branch, split};
use oscloud_tests::zenohd::Router;
use oscloud_tests::{TestNode, pipe_into_sink, pseudo_random_frames};
use oscloud_transport_zenoh::ZenohTransport;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zenoh::sample::SampleKind;

const BIN: &str = env!("CARGO_BIN_EXE_oscloud-testnode");
const RELAY: &str = env!("CARGO_BIN_EXE_oscloud-serial-relay");

/// The cable: the relay process and the paths of its two ends.
struct Cable {
    _relay: Child,
    board_end: String,
    bridge_end: String,
    _dir: tempfile::TempDir,
}

impl Cable {
    /// A clean line (no noise), as fast as the ptys go.
    async fn plug() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("tty-board"), dir.path().join("tty-bridge"));
        let mut relay = Command::new(RELAY)
            .arg(&a)
            .arg(&b)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the relay");
        let mut out = BufReader::new(relay.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), out.next_line())
            .await
            .expect("relay ready in time")
            .unwrap();
        assert_eq!(ready.as_deref(), Some("ready"));
        Self {
            _relay: relay,
            board_end: format!("serial://{}?baud=115200", a.display()),
            bridge_end: format!("serial://{}?baud=115200", b.display()),
            _dir: dir,
        }
    }
}

/// The far node calls the board's server, pipes into its sink and takes
/// a pipe from it, all across serial → bridge → zenohd → far; the board
/// sees the far node's servers the other way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_elsewhere_reaches_a_board_through_the_bridge() {
    let router = Router::start().await;
    let cable = Cable::plug().await;
    let bridge_at = router.addr("lab", "bridge");
    let bin = Path::new(BIN);
    let mut board = TestNode::start(bin, "board", &["--listen", &cable.board_end]).await;
    let mut bridge = TestNode::start(
        bin,
        "bridge",
        &["--connect", &cable.bridge_end, "--listen", &bridge_at],
    )
    .await;
    let mut far = TestNode::start(bin, "far", &["--connect", &bridge_at]).await;

    // By name, two hops away: the board's server through the bridge.
    assert!(
        far.ask("wait upper-board")
            .await
            .starts_with("found upper-board")
    );
    assert_eq!(
        far.ask("call upper-board hello").await,
        "reply HELLO from board"
    );
    let route = far.ask("route upper-board").await;
    assert!(route.starts_with("route upper-board hops 2 "), "{route}");
    // And the other way: the board calls the node elsewhere.
    assert!(
        board
            .ask("wait upper-far")
            .await
            .starts_with("found upper-far")
    );
    assert_eq!(
        board.ask("call upper-far back").await,
        "reply BACK from far"
    );
    assert!(bridge.ask("wait upper-far").await.starts_with("found"));

    // Pipes both ways, frames up to 16 KiB, intact: the far node's frames
    // fit what the serial hop takes (the route carries the smallest pipe
    // window on the way).
    const N: usize = 512 * 1024;
    assert!(far.ask("wait sink-board").await.starts_with("found"));
    let took = pipe_into_sink(&mut far, "sink-board", &mut board, "sink-board", N).await;
    println!("far → board, 512 KiB intact in {took:?}");
    let took = pipe_into_sink(&mut board, "sink-far", &mut far, "sink-far", N).await;
    println!("board → far, 512 KiB intact in {took:?}");
}

/// A plain zenoh session, a client of `router`.
async fn plain_zenoh(router: &Router) -> zenoh::Session {
    let mut config = zenoh::Config::default();
    for (key, value) in [
        ("mode", r#""client""#.to_owned()),
        ("scouting/multicast/enabled", "false".to_owned()),
        ("connect/endpoints", format!("[{:?}]", router.endpoint())),
    ] {
        config.insert_json5(key, &value).unwrap();
    }
    zenoh::open(config).await.unwrap()
}

/// Frames written into a pipe split between its reader and a tap: the
/// reader gets them all, and a plain zenoh subscriber on
/// `oscloud/lab/pipe/*/*` sees exactly the same frames, in order, numbered
/// from 0, then a Delete sample at end of stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_zenoh_subscriber_sees_exactly_the_frames_of_a_tapped_pipe() {
    let router = Router::start().await;
    let watcher = plain_zenoh(&router).await;
    let samples = watcher
        .declare_subscriber("oscloud/lab/pipe/*/*")
        .await
        .unwrap();
    // A round trip through the router on the same session: the router has
    // the subscription before the tap publishes.
    let _ = watcher
        .liveliness()
        .get("oscloud/lab/**")
        .await
        .unwrap()
        .recv_async()
        .await;

    let kernel = Kernel::new();
    let zenoh = ZenohTransport::new();
    let (src_w, src_r) = kernel.pipe();
    let (out_w, mut out_r) = kernel.pipe();
    let (tap_w, tap_r) = kernel.pipe();
    let at = router.addr("lab", "bridge").parse().unwrap();
    let tap = zenoh.tap(&at, "readings", tap_r).await.unwrap();
    assert_eq!(tap.key(), "oscloud/lab/pipe/bridge/readings");
    let fanout = split(src_r, vec![Branch::block(out_w), Branch::block(tap_w)]);

    const N: usize = 256 * 1024;
    let written: Vec<Bytes> = pseudo_random_frames(N).collect();
    let writer = {
        let frames = written.clone();
        tokio::spawn(async move {
            for f in frames {
                src_w.send(f).await.unwrap();
            }
        })
    };
    let mut read = Vec::new();
    while let Some(f) = out_r.recv().await {
        read.push(f);
    }
    writer.await.unwrap();
    assert_eq!(read, written, "the pipe's own reader");
    fanout.finished().await.unwrap();
    assert_eq!(tap.finished().await.unwrap(), written.len() as u64);

    let mut seen = Vec::new();
    let sample_wait = Duration::from_secs(10);
    loop {
        let sample = tokio::time::timeout(sample_wait, samples.recv_async())
            .await
            .expect("the tap's samples in time")
            .unwrap();
        assert_eq!(
            sample.key_expr().as_str(),
            "oscloud/lab/pipe/bridge/readings"
        );
        if sample.kind() == SampleKind::Delete {
            break;
        }
        let number = sample.attachment().unwrap().to_bytes();
        assert_eq!(
            u64::from_be_bytes(number.as_ref().try_into().unwrap()),
            seen.len() as u64
        );
        seen.push(Bytes::from(sample.payload().to_bytes().into_owned()));
    }
    assert_eq!(seen.len(), written.len());
    assert_eq!(seen, written, "the subscriber's frames");
    println!(
        "{} frames ({N} bytes) seen by a plain zenoh subscriber",
        seen.len()
    );
}
