//! `ls`, `call`, `tap` and `top` against a running multi-process
//! topology; `top` under a pseudo-terminal, its screen read back.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

struct Cloud {
    _dir: tempfile::TempDir,
    parent: Option<Child>,
    nodes: Vec<(String, String)>,
}

impl Cloud {
    /// The sensor-alert topology, its sensors looping, once alerts flow.
    fn start() -> Self {
        let dir = workdir();
        let text = std::fs::read_to_string(dir.path().join("sensor-alert.toml"))
            .unwrap()
            .replace("interval_ms = 2 }", "interval_ms = 5, repeat = true }");
        let cloud = Self::run(dir, &text, 3);
        wait_until(LIMIT, "alerts flow", || {
            data_sorted(&cloud._dir.path().join("alerts.jsonl")).len() >= 3
        });
        cloud
    }

    /// `oscloud run --processes` of the topology `text`, once its `count`
    /// nodes said where to inspect them.
    fn run(dir: tempfile::TempDir, text: &str, count: usize) -> Self {
        std::fs::write(dir.path().join("loop.toml"), text).unwrap();
        let mut cmd = oscloud();
        cmd.args(["run", "loop.toml", "--processes"])
            .current_dir(dir.path());
        let (parent, nodes) = spawn_processes(cmd, dir.path(), count);
        let nodes = nodes.into_iter().map(|(n, _, a)| (n, a)).collect();
        Self {
            _dir: dir,
            parent: Some(parent),
            nodes,
        }
    }

    fn addr(&self, node: &str) -> &str {
        &self.nodes.iter().find(|n| n.0 == node).unwrap().1
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if let Some(p) = self.parent.take() {
            signal(p.id(), Signal::SIGTERM);
            let _ = wait_output(p, LIMIT);
        }
    }
}

fn cli(args: &[&str]) -> String {
    let out = oscloud().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn ls_call_tap_top_against_a_multi_process_topology() {
    let cloud = Cloud::start();
    let hub = cloud.addr("hub");

    // ls: the hub's registry.
    let ls = cli(&["ls", hub]);
    let rows: Vec<Vec<&str>> = ls.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..4], ["NAME", "NODE", "STATUS", "RESTARTS"]);
    for name in ["rules", "log", "oscloud.node.hub", "oscloud.supervisor.hub"] {
        let row = rows
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name}: {ls}"));
        assert_eq!(row[1..4], ["hub", "running", "0"], "{ls}");
    }
    assert!(
        rows.iter()
            .any(|r| r[0] == "oscloud.supervisor.hub" && r[4] == "supervisor")
    );
    // Pipe ports travel in the registry entries the command's node got
    // over its link to the hub.
    for (name, ports) in [
        ("rules", "ports=in:in,out:out,stdio:both"),
        ("log", "ports=in:in"),
    ] {
        assert!(
            rows.iter().any(|r| r[0] == name && r.contains(&ports)),
            "{name} should show {ports}: {ls}"
        );
    }

    // call: JSON in, MessagePack across, JSON out. The logger answers
    // with its counters [frames, bytes, inputs].
    let reply: serde_json::Value =
        serde_json::from_str(&cli(&["call", hub, "log", "\"stats\""])).unwrap();
    assert!(reply[0].as_u64().unwrap() > 0, "{reply}");
    assert_eq!(reply[2], 1);
    // A server on another node, reached through the node that dialled it.
    let status: serde_json::Value =
        serde_json::from_str(&cli(&["call", hub, "oscloud.node.hub", "\"status\""])).unwrap();
    assert_eq!(status[0], "hub");

    // tap: watch a pipe live, from any node (the edge does not wire
    // rules.out: the command finds the node that does).
    let tapped = cli(&["tap", cloud.addr("edge"), "rules.out", "-n", "3"]);
    let lines: Vec<&str> = tapped.lines().collect();
    assert_eq!(lines.len(), 3, "{tapped}");
    assert!(
        lines.iter().all(|l| l.starts_with("ALERT sensor=")),
        "{tapped}"
    );
    let tapped = cli(&["tap", hub, "readings", "-n", "5"]);
    assert_eq!(tapped.lines().count(), 5);
    assert!(tapped.lines().all(|l| l.starts_with("sensor=")), "{tapped}");

    // top --once: plain text.
    let top = cli(&["top", hub, "--once"]);
    assert!(top.contains("oscloud top — node hub"), "{top}");
    assert!(top.contains("LINKS") && top.contains("SERVERS") && top.contains("PIPES"));
    assert!(
        top.lines().any(|l| l.trim_start().starts_with("readings")),
        "{top}"
    );
}

#[test]
fn top_under_a_pseudo_terminal() {
    let cloud = Cloud::start();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || Stdio::from(pty.slave.as_fd().try_clone_to_owned().unwrap());
    let mut top = oscloud()
        .args(["top", cloud.addr("hub"), "--interval-ms", "100"])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    // Read the screen until two frames were drawn with live counters.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + LIMIT;
    let mut screen = Vec::new();
    loop {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            screen.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&screen);
        // Each redraw starts with "clear screen"; wait for a second one
        // that shows a rate for the pipe.
        let frames: Vec<&str> = text.split("\x1b[H\x1b[2J").collect();
        // The per-server row of `rules`: NAME KIND STATUS RESTARTS MSGS-IN
        // MSGS-OUT IN/s OUT/s IN-B/s OUT-B/s REWIRED DROPS CALLS CASTS ERRORS
        // MBOX CALL-AVG. Its input pipe
        // is wired on hub, its output pipe on ops: both count.
        let rules = |frame: &str| -> Option<Vec<String>> {
            let row = frame
                .lines()
                .find(|l| l.trim_start().starts_with("rules "))?;
            let cols: Vec<String> = row.split_whitespace().map(str::to_owned).collect();
            (cols.len() == 17).then_some(cols)
        };
        if frames.len() >= 4
            && let Some(last) = frames[frames.len() - 2]
                .lines()
                .find(|l| l.trim_start().starts_with("readings"))
            && last.contains("/s")
            && let Some(now) = rules(frames[frames.len() - 2])
            && let Some(before) = rules(frames[frames.len() - 3])
            && now[6] != "-"
            && now[6] != "0/s"
            && now[8].ends_with("/s")
            && now[8] != "0/s"
            && now[4].parse::<u64>().unwrap() > before[4].parse::<u64>().unwrap()
            && now[5].parse::<u64>().unwrap() > 0
        {
            assert!(frames[frames.len() - 2].contains("oscloud top — node hub"));
            assert_eq!(now[1], "process");
            assert_eq!(now[3], "0", "no restarts");
            break;
        }
        assert!(Instant::now() < deadline, "screen: {text}");
    }
    signal(top.id(), Signal::SIGINT);
    let deadline = Instant::now() + LIMIT;
    while top.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "top did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `oscloud run FILE --expose` in `dir`, once node `node`'s socket is
/// there: the run, the sockets' directory (kept while it lives) and that
/// node's address.
fn run_exposed(dir: &Path, file: &str, node: &str) -> (Child, tempfile::TempDir, String) {
    let sockets = tempfile::tempdir().unwrap();
    let run = oscloud()
        .args(["run", file, "--expose"])
        .arg(sockets.path())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = sockets.path().join(format!("{node}.sock"));
    wait_until(LIMIT, "the node's socket", || sock.exists());
    let addr = format!("unix://{}", sock.display());
    (run, sockets, addr)
}

#[test]
fn one_process_run_exposed_for_inspection() {
    let dir = workdir();
    let text = std::fs::read_to_string(dir.path().join("sensor-alert.toml"))
        .unwrap()
        .replace("interval_ms = 2 }", "interval_ms = 5, repeat = true }");
    std::fs::write(dir.path().join("loop.toml"), text).unwrap();
    let (run, _sockets, addr) = run_exposed(dir.path(), "loop.toml", "ops");
    let ls = cli(&["ls", &addr]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("alerts ") && l.contains(" running ")),
        "{ls}"
    );
    let tapped = cli(&["tap", &addr, "readings", "-n", "2"]);
    assert_eq!(tapped.lines().count(), 2, "{tapped}");
    signal(run.id(), Signal::SIGTERM);
    assert!(wait_output(run, LIMIT).status.success());
}

/// `examples/topologies/pool.toml` in one process: the pool on the hub
/// sees the four shell workers of group `square` on w1 and w2.
#[test]
fn the_pool_topology_gathers_its_workers() {
    let dir = workdir();
    let (run, _sockets, addr) = run_exposed(dir.path(), "pool.toml", "hub");
    wait_until(LIMIT, "four workers of group square", || {
        let out = oscloud()
            .args(["call", &addr, "pool", "\"Stats\""])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // `GroupStats` as MessagePack writes it: [workers, running, queued].
        out.status.success() && text.contains("\"square\":[4,")
    });
    signal(run.id(), Signal::SIGTERM);
    assert!(wait_output(run, LIMIT).status.success());
}

/// A chain a - b - c run by `oscloud run`, where node `limited` has a hop
/// limit of 1 (the others the default 8); a source on a keeps the run
/// going through a pipe into `far-a`, and c has `far-c`.
fn chain_with_a_hop_limit(limited: &str) -> Cloud {
    let dir = tempfile::tempdir().unwrap();
    let sock = |n: &str| format!("unix://{}", dir.path().join(n).display());
    let limit = |node: &str| {
        if node == limited {
            "config = { max_hops = 1 }"
        } else {
            ""
        }
    };
    let text = format!(
        r#"
[nodes.a]
listen = ["{a}"]
{la}

[nodes.b]
listen = ["{b}"]
connect = ["{a}"]
{lb}

[nodes.c]
connect = ["{b}"]
{lc}

[servers.src]
node = "a"
kind = "file"
args = {{ path = "r.txt", interval_ms = 50, repeat = true }}

[servers.far-a]
node = "a"
kind = "jsonl"
args = {{ path = "a.jsonl" }}

[[pipes]]
from = "src.out"
to = "far-a.in"

[servers.far-c]
node = "c"
kind = "jsonl"
args = {{ path = "c.jsonl" }}
"#,
        a = sock("a.sock"),
        b = sock("b.sock"),
        la = limit("a"),
        lb = limit("b"),
        lc = limit("c"),
    );
    // A source that repeats keeps the run going.
    std::fs::write(dir.path().join("r.txt"), "x\n").unwrap();
    Cloud::run(dir, &text, 3)
}

/// The hop count `ls` prints for `name` under `heading`, if it lists it.
fn hops_listed(ls: &str, heading: &str, name: &str) -> Option<String> {
    let (_, rest) = ls.split_once(heading)?;
    let row: Vec<&str> = rest
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .find(|l| l.split_whitespace().next() == Some(name))?
        .split_whitespace()
        .collect();
    Some(row[2..].join(" "))
}

#[test]
fn ls_shows_the_servers_a_node_holds_back_at_the_hop_limit() {
    // b's hop limit is 1: b reaches the servers of a and of c, but
    // announces them to no neighbour, so a and c cannot reach each
    // other's. `ls` on b says so (and the node logs it once).
    let cloud = chain_with_a_hop_limit("b");
    let heading = "not announced to neighbours (at the hop limit, max_hops = 1):";
    let mut ls = String::new();
    // Until b's routes settled (and its inspection socket is up).
    wait_until(LIMIT, "b holds back far-a and far-c", || {
        let out = oscloud().args(["ls", cloud.addr("b")]).output().unwrap();
        ls = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
            && hops_listed(&ls, heading, "far-a").is_some()
            && hops_listed(&ls, heading, "far-c").is_some()
    });
    for name in ["far-a", "far-c"] {
        assert_eq!(
            hops_listed(&ls, heading, name).as_deref(),
            Some("1 hops"),
            "{ls}"
        );
    }
    // Nothing is held back by a (its limit is the default 8).
    let ls_a = cli(&["ls", cloud.addr("a")]);
    assert!(!ls_a.contains("not announced"), "{ls_a}");
}

#[test]
fn ls_shows_the_servers_a_node_cannot_reach_for_its_lower_hop_limit() {
    // c's hop limit is 1 and b's the default: b announces a's servers to c
    // by 2-node routes, which c refuses. `ls` on c says which servers it
    // cannot reach (and the node logs it once).
    let cloud = chain_with_a_hop_limit("c");
    let heading = "not reachable (routes over the hop limit, max_hops = 1):";
    let mut ls = String::new();
    wait_until(LIMIT, "c lists far-a as out of reach", || {
        let out = oscloud().args(["ls", cloud.addr("c")]).output().unwrap();
        ls = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && hops_listed(&ls, heading, "far-a").is_some()
    });
    assert_eq!(
        hops_listed(&ls, heading, "far-a").as_deref(),
        Some("2 hops"),
        "{ls}"
    );
    // b reaches it (1 hop) and lists nothing as out of reach.
    let ls_b = cli(&["ls", cloud.addr("b")]);
    assert!(!ls_b.contains("not reachable"), "{ls_b}");
}
