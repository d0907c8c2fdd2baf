//! The process server with real programs: `tr` and `cat` answer calls and
//! pipes; killing the child makes the supervisor start a new one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
        .await
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

/// Opens `in` and `out` of the stream server `name`.
async fn stream_ends(
    kernel: &Kernel,
    name: &str,
) -> (oscloud_core::PipeWriter, oscloud_core::PipeReader) {
    let s = ServerRef::new(kernel, name);
    let (out, _) = s.open_pipe("out").await.unwrap().split();
    let (_, input) = s.open_pipe("in").await.unwrap().split();
    (input, out)
}

/// The next `Removed` event for `name` in `watch`, with its reason.
async fn removed(watch: &mut oscloud_core::Watch, name: &str) -> oscloud_core::ExitReason {
    loop {
        let event = tokio::time::timeout(T, watch.next())
            .await
            .expect("a registry event in time")
            .expect("the registry is alive");
        if let oscloud_core::RegistryEvent::Removed { entry, reason } = event
            && entry.name() == name
        {
            return reason;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_stream_child_fails_the_server_with_the_reason() {
    let kernel = Kernel::new();
    let spec = ProcessSpec::new("cat").calls(false).lines(true);
    let stats = spec.stats();
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root")
            .intensity(5, Duration::from_secs(10))
            .child(spec.child_spec("cat")),
    )
    .await
    .unwrap();
    let mut watch = kernel.registry().watch();
    let (input, mut out) = stream_ends(&kernel, "cat").await;
    input.send(Bytes::from_static(b"one")).await.unwrap();
    let got = tokio::time::timeout(T, out.recv()).await.unwrap().unwrap();
    assert_eq!(&got[..], b"one");
    let first = stats.stream_pid();
    assert_ne!(first, 0);
    let killed = std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The server fails with the reason, and its out pipe ends after that.
    let reason = removed(&mut watch, "cat").await;
    assert!(
        matches!(&reason, oscloud_core::ExitReason::Failed(why)
            if why.contains("stream child") && why.contains("SIGKILL")),
        "{reason:?}"
    );
    assert!(tokio::time::timeout(T, out.recv()).await.unwrap().is_none());
    // Restarted: a new instance with a new child.
    wait_until(|| tree.stats().restarts("cat") == 1).await;
    wait_until(|| kernel.registry().lookup("cat").is_ok()).await;
    let (input, mut out) = stream_ends(&kernel, "cat").await;
    input.send(Bytes::from_static(b"two")).await.unwrap();
    let got = tokio::time::timeout(T, out.recv()).await.unwrap().unwrap();
    assert_eq!(&got[..], b"two");
    assert_ne!(stats.stream_pid(), first);
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_child_failing_with_its_input_open_fails_the_server() {
    let kernel = Kernel::new();
    // Reads one line, then exits 3 with its stdin still open.
    let spec = ProcessSpec::new("sh")
        .args(["-c", "read x; echo got $x; exit 3"])
        .calls(false)
        .lines(true);
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root")
            .intensity(5, Duration::from_secs(10))
            .child(spec.child_spec("once")),
    )
    .await
    .unwrap();
    let mut watch = kernel.registry().watch();
    let (input, mut out) = stream_ends(&kernel, "once").await;
    input.send(Bytes::from_static(b"a")).await.unwrap();
    let got = tokio::time::timeout(T, out.recv()).await.unwrap().unwrap();
    assert_eq!(&got[..], b"got a");
    let reason = removed(&mut watch, "once").await;
    assert!(
        matches!(&reason, oscloud_core::ExitReason::Failed(why)
            if why.contains("exited while its input was open") && why.contains("3")),
        "{reason:?}"
    );
    wait_until(|| tree.stats().restarts("once") == 1).await;
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_code_after_the_input_ended_is_a_normal_end() {
    let kernel = Kernel::new();
    // `grep` that finds nothing exits 1 once its input ended.
    let spec = ProcessSpec::new("grep")
        .arg("nothing-matches-this")
        .calls(false)
        .lines(true);
    let tree = Supervisor::start(
        &kernel,
        SupervisorSpec::new("root").child(spec.child_spec("grep")),
    )
    .await
    .unwrap();
    let (input, mut out) = stream_ends(&kernel, "grep").await;
    input.send(Bytes::from_static(b"hello")).await.unwrap();
    drop(input);
    assert!(tokio::time::timeout(T, out.recv()).await.unwrap().is_none());
    // Still the first instance, still registered.
    assert_eq!(tree.stats().restarts("grep"), 0);
    assert!(kernel.registry().lookup("grep").is_ok());
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_child_that_cannot_start_fails_the_server() {
    let kernel = Kernel::new();
    let spec = ProcessSpec::new("/nonexistent/program").calls(false);
    let handle = oscloud_actors::start(&kernel, "ghost", spec.server())
        .await
        .unwrap();
    let err = ServerRef::new(&kernel, "ghost")
        .open_pipe("in")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stopped"), "{err}");
    handle.wait().await;
    let reason = handle.stop_reason().unwrap_or_default();
    assert!(reason.contains("nonexistent"), "{reason}");
}
