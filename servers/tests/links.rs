//! The chunk sources across a link: a file source and a process server
//! on one node, read from another whose pipe window is small. Its own
//! test binary, so that no other test's memory or processes run beside it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use oscloud_actors::{ServerRef, Supervisor, SupervisorSpec};
use oscloud_core::Kernel;
use oscloud_servers::file::FileSource;
use oscloud_servers::process::ProcessSpec;

const T: Duration = Duration::from_secs(10);

/// Chunk sources fit their frames to the pipe: a file source and a process
/// server's stdio on one node, read from a node whose pipe window (the
/// longest frame it takes) is 4 KiB, arrive whole in frames of at most
/// 4 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_sources_fit_frames_to_a_small_pipe_window() {
    use std::sync::Arc;

    use oscloud_core::transport::{MemTransport, Transports};
    use oscloud_core::{Node, NodeConfig, RegistryEvent};
    use oscloud_servers::file::Framing;

    const WINDOW: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data.bin");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();

    let mem = MemTransport::new();
    let transports = || {
        let mut t = Transports::new();
        t.add(Arc::new(mem.clone()));
        t
    };
    let far = Kernel::new();
    let near = Kernel::new();
    let tree = Supervisor::start(
        &far,
        SupervisorSpec::new("root")
            .child(
                FileSource::new(&input)
                    .framing(Framing::Chunks)
                    .child_spec("src"),
            )
            .child(
                ProcessSpec::new("cat")
                    .arg(&input)
                    .calls(false)
                    .child_spec("cat"),
            ),
    )
    .await
    .unwrap();
    let far_node = Node::new(far.clone(), transports());
    let config = NodeConfig {
        pipe_window: WINDOW as u32,
        ..NodeConfig::default()
    };
    let near_node = Node::with_config(near.clone(), transports(), config);
    let mut watch = near.registry().watch();
    let at = far_node
        .listen(&"mem://chunk-far".parse().unwrap())
        .await
        .unwrap();
    near_node.connect(&at).await.unwrap();
    let mut seen = 0;
    tokio::time::timeout(T, async {
        while seen < 2 {
            if let Some(RegistryEvent::Added(e)) = watch.next().await
                && (e.name() == "src" || e.name() == "cat")
            {
                seen += 1;
            }
        }
    })
    .await
    .expect("the far servers did not show up");

    for (server, port) in [("src", "out"), ("cat", "stdio")] {
        let (mut rx, _tx) = ServerRef::new(&near, server)
            .open_pipe(port)
            .await
            .unwrap()
            .split();
        let mut got = Vec::new();
        let mut longest = 0;
        while let Some(f) = tokio::time::timeout(T, rx.recv()).await.unwrap() {
            longest = longest.max(f.len());
            got.extend_from_slice(&f);
        }
        assert!(got == data, "{server}: {} bytes arrived changed", got.len());
        assert!(longest <= WINDOW, "{server}: a frame of {longest} bytes");
    }
    tree.stop().await;
}
