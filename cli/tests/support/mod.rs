//! Helpers for the tests that run the real `oscloud` binary.
#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) fn oscloud() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oscloud"))
}

/// The repository's example topologies.
pub(crate) fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/topologies")
}

/// A temporary directory holding a copy of the example topologies.
pub(crate) fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(examples()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    dir
}

/// Run to the end, at most `limit`.
pub(crate) fn run_to_end(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, limit)
}

/// Wait for `child` at most `limit` (killing it then and failing).
pub(crate) fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "did not end within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `cond` every 20 ms until it holds, at most `limit`.
pub(crate) fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `data` values of a JSON-lines log, sorted.
pub(crate) fn data_sorted(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut v: Vec<String> = text
        .lines()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l).unwrap();
            j["data"].as_str().unwrap().to_owned()
        })
        .collect();
    v.sort();
    v
}

/// The readings above 30 °C in the example's recorded files, as alerts.
pub(crate) fn expected_alerts(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for f in ["readings-a.txt", "readings-b.txt"] {
        for line in std::fs::read_to_string(dir.join(f)).unwrap().lines() {
            let c: f64 = line.rsplit('=').next().unwrap().parse().unwrap();
            if c > 30.0 {
                v.push(format!("ALERT {line}"));
            }
        }
    }
    v.sort();
    v
}

/// Run example topology `file` in one process (a copy in a fresh work
/// directory) to its end, at most `limit`: it must succeed and deliver
/// every alert. Returns the work directory.
pub(crate) fn run_example_in_one_process(file: &str, limit: Duration) -> tempfile::TempDir {
    let dir = workdir();
    let mut cmd = oscloud();
    cmd.args(["run", file]).current_dir(dir.path());
    let out = run_to_end(cmd, limit);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        data_sorted(&dir.path().join("alerts.jsonl")),
        expected_alerts(dir.path())
    );
    dir
}

/// The parent pid of `pid`, from /proc.
pub(crate) fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Send `sig` to `pid`.
pub(crate) fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// Whether `pid` is still a live (not zombie) process.
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rfind(')')
            .is_some_and(|i| stat[i + 2..].starts_with('Z')),
        Err(_) => false,
    }
}

/// The children of `parent` running `comm` (from /proc).
pub(crate) fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let name = stat
            .find('(')
            .zip(stat.rfind(')'))
            .map(|(a, b)| &stat[a + 1..b]);
        if name == Some(comm) && ppid(pid) == Some(parent) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// The descendants of `root` running `comm` (from /proc).
pub(crate) fn descendants_named(root: u32, comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let name = stat
            .find('(')
            .zip(stat.rfind(')'))
            .map(|(a, b)| &stat[a + 1..b]);
        if name != Some(comm) || !alive(pid) {
            continue;
        }
        let mut p = pid;
        while let Some(up) = ppid(p) {
            if up == root {
                out.push(pid);
                break;
            }
            if up <= 1 {
                break;
            }
            p = up;
        }
    }
    out
}

/// Run `oscloud run FILE --node NODE` for every node (one process each, in
/// `dir`), wait until the sensor-alert output is complete (`alerts.jsonl`
/// holds every expected alert, `readings.jsonl` all 80 readings), then stop
/// them with SIGTERM: each must exit successfully.
pub(crate) fn run_nodes_until_every_alert(dir: &Path, file: &str, nodes: &[&str], limit: Duration) {
    let children: Vec<Child> = nodes
        .iter()
        .map(|node| {
            oscloud()
                .args(["run", file, "--node", node])
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let expected = expected_alerts(dir);
    wait_until(limit, &format!("every alert of {file}"), || {
        data_sorted(&dir.join("alerts.jsonl")) == expected
    });
    wait_until(limit, "every reading logged", || {
        data_sorted(&dir.join("readings.jsonl")).len() == 80
    });
    // A node of a multi-machine topology runs until stopped: SIGTERM.
    for c in &children {
        signal(c.id(), nix::sys::signal::Signal::SIGTERM);
    }
    for c in children {
        let out = wait_output(c, limit);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The nodes a `run --processes` parent announced on its stderr (lines
/// "oscloud: node NAME runs as pid PID, inspect at ADDR"): name, pid, address.
pub(crate) fn nodes_from(stderr: &str) -> Vec<(String, u32, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("oscloud: node ")?;
            let (name, rest) = rest.split_once(" runs as pid ")?;
            let (pid, addr) = rest.split_once(", inspect at ")?;
            Some((name.to_owned(), pid.parse().ok()?, addr.to_owned()))
        })
        .collect()
}

/// Spawn `cmd` (an `oscloud run ... --processes`), its stdout dropped and
/// its stderr in `dir/stderr.txt`, and wait until it announced `count`
/// nodes (see `nodes_from`).
pub(crate) fn spawn_processes(
    mut cmd: Command,
    dir: &Path,
    count: usize,
) -> (Child, Vec<(String, u32, String)>) {
    let err = dir.join("stderr.txt");
    let parent = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut nodes = Vec::new();
    wait_until(Duration::from_secs(30), "nodes announced", || {
        nodes = nodes_from(&std::fs::read_to_string(&err).unwrap());
        nodes.len() == count
    });
    (parent, nodes)
}
