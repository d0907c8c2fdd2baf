//! `oscloud run` with the example topologies: in one process, as one OS
//! process per node (checked through /proc), and one node per process over
//! TCP (and WebSocket); the same output every time; signals stop everything.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn one_process_runs_to_completion() {
    let dir = run_example_in_one_process("sensor-alert.toml", LIMIT);
    assert_eq!(data_sorted(&dir.path().join("readings.jsonl")).len(), 80);
}

#[test]
fn the_yaml_twin_gives_the_same_output_as_the_toml_file() {
    let dir = workdir();
    let mut cmd = oscloud();
    cmd.args(["run", "sensor-alert.yaml"])
        .current_dir(dir.path());
    let out = run_to_end(cmd, LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(data_sorted(&dir.path().join("readings.jsonl")).len(), 80);
    assert_eq!(
        data_sorted(&dir.path().join("alerts.jsonl")),
        expected_alerts(dir.path())
    );
}

#[test]
fn processes_give_the_same_output_as_one_process() {
    let one = workdir();
    let mut cmd = oscloud();
    cmd.args(["run", "sensor-alert.toml"])
        .current_dir(one.path());
    assert!(run_to_end(cmd, LIMIT).status.success());

    let many = workdir();
    let mut cmd = oscloud();
    cmd.args(["run", "sensor-alert.toml", "--processes"])
        .current_dir(many.path());
    let out = run_to_end(cmd, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches(" runs as pid ").count(), 3, "{stderr}");
    for f in ["readings.jsonl", "alerts.jsonl"] {
        let a = data_sorted(&one.path().join(f));
        assert!(!a.is_empty());
        assert_eq!(a, data_sorted(&many.path().join(f)), "{f}");
    }
}

/// The looping variant of the example: runs until stopped.
fn looping(dir: &std::path::Path) {
    let text = std::fs::read_to_string(dir.join("sensor-alert.toml"))
        .unwrap()
        .replace("interval_ms = 2 }", "interval_ms = 5, repeat = true }");
    std::fs::write(dir.join("loop.toml"), text).unwrap();
}

#[test]
fn processes_are_real_os_processes_and_sigint_stops_them_all() {
    let dir = workdir();
    looping(dir.path());
    let mut cmd = oscloud();
    cmd.args(["run", "loop.toml", "--processes"])
        .current_dir(dir.path());
    let (parent, nodes) = spawn_processes(cmd, dir.path(), 3);
    // One OS process per node, children of the parent, each running its node.
    let mut pids: Vec<u32> = nodes.iter().map(|n| n.1).collect();
    pids.dedup();
    assert_eq!(pids.len(), 3);
    for (name, pid, _) in &nodes {
        assert_eq!(ppid(*pid), Some(parent.id()), "node {name}");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert!(
            args.windows(2).any(|w| w[0] == "--node" && w[1] == *name),
            "{args:?}"
        );
    }
    // Data flows across the three processes.
    wait_until(LIMIT, "alerts arrive", || {
        data_sorted(&dir.path().join("alerts.jsonl")).len() >= 5
    });
    signal(parent.id(), Signal::SIGINT);
    let status = wait_output(parent, LIMIT).status;
    assert!(status.success(), "{status}");
    for (name, pid, _) in &nodes {
        assert!(!alive(*pid), "node {name} (pid {pid}) still runs");
    }
}

#[test]
fn one_node_per_process_over_tcp() {
    let dir = workdir();
    run_nodes_until_every_alert(
        dir.path(),
        "sensor-alert.toml",
        &["ops", "hub", "edge"],
        LIMIT,
    );
}

/// The same run with ops linked to hub over WebSocket: hub serves ws next
/// to tcp (other ports than the TCP test's, which may run alongside).
#[test]
fn one_node_per_process_with_a_websocket_link() {
    let dir = workdir();
    let file = dir.path().join("sensor-alert.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text
        .replace(
            "[nodes.hub]\nlisten = [\"tcp://127.0.0.1:47402\"]",
            "[nodes.hub]\nlisten = [\"tcp://127.0.0.1:47412\", \"ws://127.0.0.1:47413/oscloud\"]",
        )
        .replace(
            "[nodes.ops]\nconnect = [\"tcp://127.0.0.1:47402\"]",
            "[nodes.ops]\nconnect = [\"ws://127.0.0.1:47413/oscloud\"]",
        )
        .replace("47401", "47411");
    assert_eq!(edited.matches("ws://").count(), 2, "the example changed");
    std::fs::write(&file, edited).unwrap();
    run_nodes_until_every_alert(
        dir.path(),
        "sensor-alert.toml",
        &["ops", "hub", "edge"],
        LIMIT,
    );
}

#[test]
fn local_dev_keyboard_pty_terminal_and_log() {
    let dir = workdir();
    let mut child = oscloud()
        .args(["run", "local-dev.toml"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echo hello $((6*7))\ntty\n").unwrap();
    } // end of input: Ctrl-D to the shell, which exits: the run ends
    let out = wait_output(child, LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("hello 42"), "{screen}");
    assert!(
        screen.contains("/dev/pts/"),
        "the shell runs under a PTY: {screen}"
    );
    let log = std::fs::read_to_string(dir.path().join("session.jsonl")).unwrap();
    let all: String = log
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["ts"].as_u64().is_some());
            v["data"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(all.contains("hello 42"), "{all}");
}

#[test]
fn graph_dot_and_svg() {
    let out = oscloud()
        .args(["graph"])
        .arg(examples().join("sensor-alert.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.starts_with("digraph oscloud {"));
    assert!(dot.contains("subgraph cluster_0"));
    assert!(dot.contains("\"sensor-a\" -> pipe_0"), "{dot}");
    assert!(dot.contains("pipe_0 -> \"log\""), "{dot}");
    assert!(dot.contains("\"rules\" -> \"alerts\""), "{dot}");
    if std::process::Command::new("dot").arg("-V").output().is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("g.svg");
        let out = oscloud()
            .args(["graph"])
            .arg(examples().join("sensor-alert.toml"))
            .arg("--svg")
            .arg(&svg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    }
}

#[test]
fn ctrl_c_in_a_terminal_reaches_every_process_and_the_run_still_ends_cleanly() {
    use std::os::unix::process::CommandExt;
    let dir = workdir();
    looping(dir.path());
    // Its own process group, as a shell job: Ctrl-C signals the whole group.
    let mut cmd = oscloud();
    cmd.args(["run", "loop.toml", "--processes"])
        .current_dir(dir.path())
        .process_group(0);
    let (parent, nodes) = spawn_processes(cmd, dir.path(), 3);
    wait_until(LIMIT, "alerts arrive", || {
        !data_sorted(&dir.path().join("alerts.jsonl")).is_empty()
    });
    // The rules engine runs as an `awk` under the hub node.
    let hub = nodes.iter().find(|n| n.0 == "hub").unwrap().1;
    let awks = children_named(hub, "awk");
    assert_eq!(awks.len(), 1, "{awks:?}");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(parent.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let status = wait_output(parent, LIMIT).status;
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("failed"), "{stderr}");
    for (name, pid, _) in &nodes {
        assert!(!alive(*pid), "node {name} (pid {pid}) still runs");
    }
    // The node stopped its servers' programs too.
    wait_until(LIMIT, "awk stopped", || !alive(awks[0]));
}

#[test]
fn sigint_stops_a_one_process_run_and_its_programs() {
    let dir = workdir();
    looping(dir.path());
    let run = oscloud()
        .args(["run", "loop.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(LIMIT, "alerts arrive", || {
        !data_sorted(&dir.path().join("alerts.jsonl")).is_empty()
    });
    let awks = children_named(run.id(), "awk");
    assert_eq!(awks.len(), 1, "{awks:?}");
    signal(run.id(), Signal::SIGINT);
    let out = wait_output(run, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("failed"), "{stderr}");
    wait_until(LIMIT, "awk stopped", || !alive(awks[0]));
}

#[test]
fn processes_without_pipes_run_until_stopped() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("idle.toml"),
        r#"
[nodes.a]
[nodes.b]

[servers.log]
node = "b"
kind = "jsonl"
args = { path = "log.jsonl" }
"#,
    )
    .unwrap();
    let mut cmd = oscloud();
    cmd.args(["run", "idle.toml", "--processes"])
        .current_dir(dir.path());
    let (mut parent, nodes) = spawn_processes(cmd, dir.path(), 2);
    // Every node is up once it answers; a node that took itself for done
    // would have written its done file (beside its socket) by then.
    for (name, _, addr) in &nodes {
        wait_until(LIMIT, &format!("node {name} answers"), || {
            assert!(
                parent.try_wait().unwrap().is_none(),
                "the run ended by itself"
            );
            oscloud()
                .args(["ls", addr])
                .stderr(Stdio::null())
                .output()
                .unwrap()
                .status
                .success()
        });
        let done =
            std::path::Path::new(addr.strip_prefix("unix://").unwrap()).with_extension("done");
        assert!(!done.exists(), "node {name} says it is done");
    }
    assert!(
        parent.try_wait().unwrap().is_none(),
        "the run ended by itself"
    );
    signal(parent.id(), Signal::SIGTERM);
    let status = wait_output(parent, LIMIT).status;
    assert!(status.success(), "{status}");
    for (name, pid, _) in &nodes {
        assert!(!alive(*pid), "node {name} (pid {pid}) still runs");
    }
}

#[test]
fn every_example_runs_to_completion_in_one_process() {
    let dir = workdir();
    let mut n = 0;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        let Some(ext) = path.extension().and_then(|x| x.to_str()) else {
            continue;
        };
        if !["toml", "yaml", "yml"].contains(&ext) {
            continue;
        }
        // Without pipes a topology is a service: it runs until stopped
        // (cli/README.md, "The end"; pool.toml is tested in inspect.rs).
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.contains("[[pipes]]") && !text.contains("\npipes:") {
            continue;
        }
        for f in ["readings.jsonl", "alerts.jsonl", "session.jsonl"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let mut cmd = oscloud();
        // local-dev reads the keyboard: end of input ends the shell.
        cmd.arg("run")
            .arg(&path)
            .current_dir(dir.path())
            .stdin(Stdio::null());
        let out = run_to_end(cmd, LIMIT);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 5, "{n} examples");
}
