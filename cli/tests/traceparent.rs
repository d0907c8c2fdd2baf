//! `oscloud call` and `oscloud cast` with `--traceparent`: a server on a
//! node of this process, reached over a Unix socket, sees the trace the
//! command was given; a malformed value is refused before anything is
//! sent.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oscloud_actors::{Context, Server, ServerError, async_trait};
use oscloud_core::address::Address;
use oscloud_core::transport::MemTransport;
use oscloud_core::{Kernel, Node};
use support::*;

const LIMIT: Duration = Duration::from_secs(30);
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CAST_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// Answers every call with the trace it was handled in (`null`: none);
/// keeps the trace of every cast.
struct Traced(Arc<Mutex<Vec<Option<String>>>>);

#[async_trait]
impl Server for Traced {
    type Request = String;
    type Reply = Option<String>;
    type State = ();

    async fn init(&self, _ctx: &mut Context) -> Result<(), ServerError> {
        Ok(())
    }

    async fn handle_cast(
        &self,
        ctx: &mut Context,
        _state: &mut (),
        _req: String,
    ) -> Result<(), ServerError> {
        let trace = ctx.trace().map(|t| t.to_string());
        self.0.lock().unwrap().push(trace);
        Ok(())
    }

    async fn handle_call(
        &self,
        ctx: &mut Context,
        _state: &mut (),
        _req: String,
    ) -> Result<Option<String>, ServerError> {
        Ok(ctx.trace().map(|t| t.to_string()))
    }
}

#[test]
fn call_and_cast_carry_the_given_traceparent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let casts = Arc::new(Mutex::new(Vec::new()));
    let (node, _server, addr) = rt.block_on(async {
        let kernel = Kernel::new();
        let node = Node::new(
            kernel.clone(),
            oscloud_cli::runtime::transports(&MemTransport::new()),
        );
        let at: Address = format!("unix://{}", dir.path().join("n.sock").display())
            .parse()
            .unwrap();
        let addr = node.listen(&at).await.unwrap();
        let server = oscloud_actors::start(&kernel, "traced", Traced(casts.clone()))
            .await
            .unwrap();
        (node, server, addr.to_string())
    });
    let run = |args: &[&str]| {
        let out = run_to_end(
            {
                let mut cmd = oscloud();
                cmd.args(args);
                cmd
            },
            LIMIT,
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };

    // A call with --traceparent is handled in that trace; without, in none.
    let (ok, out, err) = run(&["call", &addr, "traced", "\"hi\"", "--traceparent", TRACE]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("\"{TRACE}\""));
    let (ok, out, err) = run(&["call", &addr, "traced", "\"hi\""]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "null");

    // A cast likewise (the server keeps what it saw).
    let (ok, _, err) = run(&[
        "cast",
        &addr,
        "traced",
        "\"hi\"",
        "--traceparent",
        CAST_TRACE,
    ]);
    assert!(ok, "{err}");
    wait_until(LIMIT, "the cast arrives", || {
        !casts.lock().unwrap().is_empty()
    });
    assert_eq!(*casts.lock().unwrap(), [Some(CAST_TRACE.to_owned())]);

    // A bad value: a clear error, nothing sent.
    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ] {
        for cmd in ["call", "cast"] {
            let (ok, _, err) = run(&[cmd, &addr, "traced", "\"hi\"", "--traceparent", bad]);
            assert!(!ok, "{cmd} with {bad} succeeded");
            assert!(
                err.contains("--traceparent") && err.contains("traceparent"),
                "{cmd} with {bad}: {err}"
            );
        }
    }
    assert_eq!(casts.lock().unwrap().len(), 1);
    node.shutdown();
}
