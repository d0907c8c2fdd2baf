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
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use oscloud_tests::zenohd::Router;
use oscloud_tests::{TestNode, pipe_into_sink};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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
