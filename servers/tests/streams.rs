//! The stream servers from Rust: file → tee → JSON-lines logger, a PTY,
//! and a process whose output floods a pipe nobody reads (memory stays
//! bounded).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use oscloud_actors::{ServerRef, Supervisor, SupervisorSpec};
use oscloud_core::Kernel;
use oscloud_core::plumbing::connect;
use oscloud_servers::file::FileSource;
use oscloud_servers::jsonl::{JsonlSink, frame_to_json};
use oscloud_servers::process::ProcessSpec;
use oscloud_servers::pty::PtySpec;
use oscloud_servers::sink::Target;
use oscloud_servers::tee::TeeServer;

const T: Duration = Duration::from_secs(10);

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met within {T:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_tee_jsonl_and_the_logger_stops_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "one\ntwo\r\nthree\n").unwrap();
    let copy = dir.path().join("copy.txt");
    let log = dir.path().join("log.jsonl");
    let kernel = Kernel::new();
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root")
            .child(FileSource::new(&input).child_spec("src"))
            .child(
                TeeServer::new(Target::File {
                    path: copy.clone(),
                    append: false,
                })
                .child_spec("tee")
                .restart(oscloud_actors::Restart::Transient),
            )
            .child(
                JsonlSink::new(Target::parse(log.to_str().unwrap()))
                    .child_spec("log")
                    .restart(oscloud_actors::Restart::Transient),
            ),
    )
    .await
    .unwrap();
    let open = |name: &str, port: &str| {
        let r = ServerRef::new(&kernel, name);
        let port = port.to_owned();
        async move { r.open_pipe(&port).await.unwrap() }
    };
    let (src, _) = open("src", "out").await.split();
    let (_, tee_in) = open("tee", "in").await.split();
    let (tee_out, _) = open("tee", "out").await.split();
    let (_, log_in) = open("log", "in").await.split();
    let a = connect(src, tee_in);
    let b = connect(tee_out, log_in);
    assert_eq!(a.finished().await.unwrap(), 3);
    assert_eq!(b.finished().await.unwrap(), 3);
    // Both sinks stop by themselves once their input ended.
    wait_until(|| tree.stats().children.iter().filter(|c| !c.running).count() == 2).await;
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "one\ntwo\nthree\n");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "{\"data\":\"one\",\"n\":1}\n{\"data\":\"two\",\"n\":2}\n{\"data\":\"three\",\"n\":3}\n"
    );
    tree.stop().await;
}

#[test]
fn frames_as_json() {
    assert_eq!(frame_to_json(b"t=21.5"), serde_json::json!("t=21.5"));
    let packed = oscloud_actors::encode(&(1u8, "x")).unwrap();
    assert_eq!(frame_to_json(&packed), serde_json::json!([1, "x"]));
    assert_eq!(frame_to_json(&[0xc1, 0]), serde_json::json!([0xc1, 0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_runs_the_program_under_a_terminal() {
    let kernel = Kernel::new();
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root").child(
            PtySpec::new("sh")
                .args(["-c", "tty; read line; echo got $line"])
                .child_spec("term")
                .restart(oscloud_actors::Restart::Transient),
        ),
    )
    .await
    .unwrap();
    let term = ServerRef::new(&kernel, "term");
    let (mut out, _) = term.open_pipe("out").await.unwrap().split();
    let (_, keys) = term.open_pipe("in").await.unwrap().split();
    keys.send(Bytes::from_static(b"ping\n")).await.unwrap();
    let mut screen = Vec::new();
    tokio::time::timeout(T, async {
        while let Some(chunk) = out.recv().await {
            screen.extend_from_slice(&chunk);
        }
    })
    .await
    .unwrap();
    let screen = String::from_utf8_lossy(&screen);
    assert!(screen.contains("/dev/pts/"), "{screen}");
    assert!(screen.contains("got ping"), "{screen}");
    // The program exited with 0: the server stopped normally, not restarted.
    wait_until(|| !tree.stats().children[0].running).await;
    assert_eq!(tree.stats().total_restarts(), 0);
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_opener_of_a_pty_screen_takes_it_over() {
    let kernel = Kernel::new();
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root").child(PtySpec::new("cat").child_spec("term")),
    )
    .await
    .unwrap();
    let term = ServerRef::new(&kernel, "term");
    let (_, keys) = term.open_pipe("in").await.unwrap().split();
    let read_until = |mut out: oscloud_core::PipeReader, want: &'static str| async move {
        let mut screen = Vec::new();
        tokio::time::timeout(T, async {
            while !String::from_utf8_lossy(&screen).contains(want) {
                screen.extend_from_slice(&out.recv().await.expect("screen open"));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {want:?} in {:?}", String::from_utf8_lossy(&screen)));
        out
    };
    let (first, _) = term.open_pipe("out").await.unwrap().split();
    keys.send(Bytes::from_static(b"one\n")).await.unwrap();
    let mut first = read_until(first, "one").await;
    // A second viewer: the first one's screen ends, the second gets what
    // is typed from now on.
    let (second, _) = term.open_pipe("out").await.unwrap().split();
    tokio::time::timeout(T, async { while first.recv().await.is_some() {} })
        .await
        .expect("the first screen ends");
    keys.send(Bytes::from_static(b"two\n")).await.unwrap();
    read_until(second, "two").await;
    tree.stop().await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_child_is_back_pressured() {
    let kernel = Kernel::new();
    // `yes` writes as fast as it can, forever.
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root").child(ProcessSpec::new("yes").calls(false).child_spec("flood")),
    )
    .await
    .unwrap();
    let (mut out, _) = ServerRef::new(&kernel, "flood")
        .open_pipe("out")
        .await
        .unwrap()
        .split();
    // Read a little so the stream is surely flowing, then stop reading.
    let first = out.recv().await.unwrap();
    assert!(first.starts_with(b"y\n"));
    let before = rss_kib();
    // Nobody reads for a while: the pipe fills (256 KiB), the child
    // blocks on its stdout, memory does not grow.
    let mut samples = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        samples.push(out.buffered());
    }
    let after = rss_kib();
    assert!(
        samples.iter().all(|b| *b <= out.capacity()),
        "buffered: {samples:?}"
    );
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // It flows again as soon as the reader reads: 8 MiB through.
    let mut total = 0usize;
    while total < 8 << 20 {
        total += out.recv().await.unwrap().len();
    }
    tree.stop().await;
}
