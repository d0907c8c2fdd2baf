//! The process server with real programs: `tr` and `cat` answer calls and
//! pipes; killing the child makes the supervisor start a new one.

use std::time::{Duration, Instant};

use bytes::Bytes;
use oscloud_actors::{ServerRef, Supervisor, SupervisorSpec};
use oscloud_core::{Error as CoreError, Kernel};
use oscloud_servers::process::{ProcessSpec, STDIO_PORT};

const T: Duration = Duration::from_secs(5);

async fn call(kernel: &Kernel, name: &str, text: &str) -> Result<String, oscloud_actors::Error> {
    ServerRef::new(kernel, name)
        .typed::<String, String>()
        .call(&text.to_owned(), T)
        .await
}

/// Poll `cond` every 10 ms for at most 5 s.
async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_in_lines_out_and_restart_after_kill() {
    let kernel = Kernel::new();
    let spec = ProcessSpec::new("stdbuf").args(["-oL", "tr", "a-z", "A-Z"]);
    let stats = spec.stats();
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root")
            .intensity(5, Duration::from_secs(10))
            .child(spec.child_spec("upper")),
    )
    .await
    .unwrap();

    assert_eq!(call(&kernel, "upper", "hello").await.unwrap(), "HELLO");
    assert_eq!(
        call(&kernel, "upper", "second line").await.unwrap(),
        "SECOND LINE"
    );
    // Binary requests work too; a cast is a call whose reply is dropped.
    let raw = ServerRef::new(&kernel, "upper");
    raw.cast(oscloud_actors::encode(&serde_bytes::Bytes::new(b"cast")).unwrap())
        .unwrap();
    assert_eq!(
        call(&kernel, "upper", "after cast").await.unwrap(),
        "AFTER CAST"
    );
    // A request with a newline is refused; the server goes on.
    let err = call(&kernel, "upper", "two\nlines").await.unwrap_err();
    assert!(matches!(err.as_core(), Some(CoreError::Decode(_))), "{err}");
    assert_eq!(call(&kernel, "upper", "still").await.unwrap(), "STILL");
    assert_eq!(stats.starts(), 1);

    // Kill the child while idle: the server notices, fails, and is
    // restarted with a new child.
    let first = stats.pid();
    let killed = std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until(|| stats.starts() == 2).await;
    assert_ne!(stats.pid(), first);
    wait_until(|| kernel.registry().lookup("upper").is_ok()).await;
    assert_eq!(call(&kernel, "upper", "back").await.unwrap(), "BACK");
    assert_eq!(tree.stats().restarts("upper"), 1);

    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_line_fails_the_server() {
    let kernel = Kernel::new();
    // `sleep` reads nothing and prints nothing.
    let spec = ProcessSpec::new("sleep")
        .arg("30")
        .reply_timeout(Duration::from_millis(200));
    let stats = spec.stats();
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root").child(spec.child_spec("mute")),
    )
    .await
    .unwrap();
    let err = call(&kernel, "mute", "anyone?").await.unwrap_err();
    assert!(
        matches!(err.as_core(), Some(CoreError::ServerStopped { reason, .. }) if reason.contains("no reply line")),
        "{err}"
    );
    wait_until(|| stats.starts() == 2).await;
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_is_a_raw_byte_stream_to_a_fresh_child() {
    let kernel = Kernel::new();
    let spec = ProcessSpec::new("cat");
    let stats = spec.stats();
    let handle = oscloud_actors::start(&kernel, "cat", spec.server())
        .await
        .unwrap();
    let server = ServerRef::new(&kernel, "cat");

    let end = server.open_pipe(STDIO_PORT).await.unwrap();
    end.send(Bytes::from_static(b"raw ")).await.unwrap();
    end.send(Bytes::from_static(b"bytes\x00\xff"))
        .await
        .unwrap();
    let (mut reader, writer) = end.split();
    drop(writer); // EOF for cat
    let mut got = Vec::new();
    while let Some(chunk) = tokio::time::timeout(T, reader.recv()).await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"raw bytes\x00\xff");
    // The pipe had its own child; the call child was started once.
    assert_eq!(stats.starts(), 1);

    let err = server.open_pipe("nope").await.unwrap_err();
    assert!(
        matches!(err.as_core(), Some(CoreError::NoSuchPort { .. })),
        "{err}"
    );
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_does_not_start() {
    let kernel = Kernel::new();
    let spec = ProcessSpec::new("/nonexistent/program");
    let err = oscloud_actors::start(&kernel, "ghost", spec.server())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nonexistent"), "{err}");
}
