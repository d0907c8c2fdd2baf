//! A supervised `process` server whose child is killed mid-stream is
//! restarted, and the pipes from and to its ports are wired to the new
//! instance: lines sent after the restart come out at the other end.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

const TOPO: &str = r#"
[nodes.main]

[servers.input]
kind = "stdin"

[servers.relay]
kind = "process"
args = { program = "cat" }

[servers.sink]
kind = "stdout"
args = { path = "out.txt" }

[[pipes]]
from = "input.out"
to = "relay.in"

[[pipes]]
from = "relay.out"
to = "sink.in"
"#;

fn out_lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("out.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The same on two nodes: `relay` on its own node, so one pipe end of it
/// is wired on the other node, across a link.
const TOPO_TWO_NODES: &str = r#"
[nodes.main]
listen = ["tcp://127.0.0.1:47431"]

[nodes.side]
connect = ["tcp://127.0.0.1:47431"]

[servers.input]
node = "main"
kind = "stdin"

[servers.relay]
node = "side"
kind = "process"
args = { program = "cat" }

[servers.sink]
node = "main"
kind = "stdout"
args = { path = "out.txt" }

[[pipes]]
from = "input.out"
to = "relay.in"

[[pipes]]
from = "relay.out"
to = "sink.in"
"#;

#[test]
fn pipes_are_wired_again_after_a_process_server_restart() {
    restart_mid_stream(TOPO, false);
}

#[test]
fn pipes_across_processes_are_wired_again_after_a_restart() {
    restart_mid_stream(TOPO_TWO_NODES, true);
}

fn restart_mid_stream(topo: &str, processes: bool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), topo).unwrap();
    let expose = dir.path().join("sockets");
    std::fs::create_dir(&expose).unwrap();
    let mut cmd = oscloud();
    cmd.args(["run", "relay.toml"]);
    if processes {
        cmd.arg("--processes");
    } else {
        cmd.arg("--expose").arg(&expose);
    }
    let err = dir.path().join("stderr.txt");
    let mut child = cmd
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"before 1\nbefore 2\n").unwrap();
    stdin.flush().unwrap();
    wait_until(LIMIT, "lines through cat", || {
        out_lines(dir.path()).len() == 2
    });
    let cats = descendants_named(child.id(), "cat");
    assert_eq!(cats.len(), 1, "{cats:?}");
    let first = cats[0];

    // SIGKILL the child mid-stream: the server fails, is restarted with a
    // new `cat`, and both pipes are wired to it again.
    let killed = std::time::Instant::now();
    signal(first, Signal::SIGKILL);
    wait_until(LIMIT, "a new cat", || {
        let now = descendants_named(child.id(), "cat");
        now.len() == 1 && now[0] != first
    });
    stdin.write_all(b"after 1\nafter 2\n").unwrap();
    stdin.flush().unwrap();
    wait_until(LIMIT, "lines through the new cat", || {
        out_lines(dir.path()).len() == 4
    });
    assert_eq!(
        out_lines(dir.path()),
        ["before 1", "before 2", "after 1", "after 2"]
    );
    eprintln!(
        "SIGKILL to lines through the new instance: {:?}",
        killed.elapsed()
    );

    // The restart and the rewiring are visible from outside.
    let sock = if processes {
        let text = std::fs::read_to_string(&err).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("oscloud: node side runs as pid"))
            .unwrap();
        line.rsplit_once("inspect at ").unwrap().1.to_owned()
    } else {
        format!("unix://{}", expose.join("main.sock").display())
    };
    let ls = oscloud().args(["ls", &sock]).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    let relay = ls.lines().find(|l| l.starts_with("relay ")).unwrap();
    assert!(relay.split_whitespace().any(|w| w == "1"), "{ls}");
    let top = oscloud().args(["top", &sock, "--once"]).output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    let row = top
        .lines()
        .find(|l| l.trim_start().starts_with("relay "))
        .unwrap();
    // relay: 1 restart, 4 lines in, 4 out, 2 rewired ends.
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[3], "1", "restarts: {top}");
    assert!(row.contains(" 4 ") && row.contains(" 2 "), "{top}");

    // End of input: the stream ends normally, and so does the run.
    drop(stdin);
    let out = wait_output(child, LIMIT);
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("SIGKILL"), "the reason is logged: {stderr}");
}
