//! `run --console`: the page and its headers, the access token, the
//! refusal of a non-loopback address, and the WebSocket relay to the
//! console node (a `call` over `ws://CONSOLE/oscloud`, through the node to
//! a server on another node). The page itself is tested in a headless
//! browser by `scripts/test-console.sh`.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

const TOPOLOGY: &str = r#"
[nodes.a]
listen = ["tcp://127.0.0.1:1"]

[nodes.b]
connect = ["tcp://127.0.0.1:1"]

[servers.upper]
node = "b"
kind = "process"
args = { program = "sh", args = ["-c", "while read -r l; do printf '%s\\n' \"$l\" | tr a-z A-Z; done"], calls = true }
"#;

/// A run with a console; stopped (SIGTERM) when dropped.
struct Run {
    _dir: tempfile::TempDir,
    child: Option<Child>,
    console: String,
}

impl Run {
    fn start(extra: &[&str]) -> Self {
        let dir = workdir();
        std::fs::write(dir.path().join("t.toml"), TOPOLOGY).unwrap();
        let err = dir.path().join("stderr.txt");
        let child = oscloud()
            .args(["run", "t.toml", "--console", "127.0.0.1:0"])
            .args(extra)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let mut console = String::new();
        wait_until(LIMIT, "the console announced", || {
            console = std::fs::read_to_string(&err)
                .unwrap()
                .lines()
                .find_map(|l| {
                    let rest = l.strip_prefix("oscloud: console at http://")?;
                    Some(rest.split('/').next()?.to_owned())
                })
                .unwrap_or_default();
            !console.is_empty()
        });
        Self {
            _dir: dir,
            child: Some(child),
            console,
        }
    }

    fn get(&self, path: &str, headers: &str) -> String {
        let mut s = TcpStream::connect(&self.console).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n",
            self.console
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            signal(c.id(), Signal::SIGTERM);
            let _ = wait_output(c, LIMIT);
        }
    }
}

#[test]
fn serves_the_page_and_relays_the_websocket_to_the_node() {
    let run = Run::start(&["--processes"]);
    let page = run.get("/", "");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("Content-Security-Policy: default-src 'none'; script-src 'self';"),
        "{page}"
    );
    assert!(page.contains(r#"<script type="module" src="/console.js">"#));
    let js = run.get("/console.js", "");
    assert!(js.contains("Content-Type: text/javascript"), "{js:.300}");
    let config = run.get("/config.json", "");
    assert!(
        config.ends_with(r#"{"node":"a","nodes":["a","b"],"ws":"/oscloud"}"#),
        "{config}"
    );
    assert!(run.get("/nope", "").starts_with("HTTP/1.1 404"));
    let hijack = run.get(
        "/oscloud",
        "Upgrade: websocket\r\nConnection: Upgrade\r\nOrigin: http://evil.example\r\n",
    );
    assert!(hijack.starts_with("HTTP/1.1 403"), "{hijack}");

    // The relay: a node of our own joins node a through the console, and
    // calls a server on node b.
    let ws = format!("ws://{}/oscloud", run.console);
    let mut reply = String::new();
    wait_until(LIMIT, "a call through the console", || {
        let out = oscloud()
            .args(["call", &ws, "upper", r#""through the console""#])
            .output()
            .unwrap();
        reply = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        out.status.success()
    });
    assert_eq!(reply, r#""THROUGH THE CONSOLE""#);
}

#[test]
fn the_access_token_is_required() {
    let run = Run::start(&["--console-token", "s3cret"]);
    assert!(run.get("/", "").starts_with("HTTP/1.1 401"));
    assert!(run.get("/?token=wrong", "").starts_with("HTTP/1.1 401"));
    let ok = run.get("/?token=s3cret", "");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("Set-Cookie: oscloud_console=s3cret; Path=/; HttpOnly; SameSite=Strict"));
    let js = run.get("/console.js", "Cookie: oscloud_console=s3cret\r\n");
    assert!(js.starts_with("HTTP/1.1 200"));
    // No token, no node: the WebSocket is refused before the relay.
    let out = oscloud()
        .args(["ls", &format!("ws://{}/oscloud", run.console)])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_console_on_another_address_is_refused() {
    let dir = workdir();
    std::fs::write(dir.path().join("t.toml"), TOPOLOGY).unwrap();
    let out = run_to_end(
        {
            let mut c = oscloud();
            c.args(["run", "t.toml", "--console", "0.0.0.0:7781"])
                .current_dir(dir.path());
            c
        },
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the console may only bind a loopback address")
            && err.contains("needs TLS and an access token"),
        "{err}"
    );
}
