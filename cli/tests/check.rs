//! `oscloud check`: every example validates; bad files get the exact
//! error with line and column, and nothing starts.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use support::{examples, oscloud};

fn check(dir: &Path, name: &str, text: &str) -> (i32, String, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = oscloud()
        .arg("check")
        .arg(name)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn every_example_topology_validates() {
    let mut n = 0;
    for e in std::fs::read_dir(examples()).unwrap() {
        let path = e.unwrap().path();
        if path
            .extension()
            .is_some_and(|x| x == "toml" || x == "yaml" || x == "yml")
        {
            let out = oscloud().arg("check").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
            n += 1;
        }
    }
    assert!(n >= 5, "found {n} example topologies");
}

const BAD: &str = r#"[nodes.a]
listen = ["tcp://127.0.0.1:notaport"]
connect = ["serial:///dev/ttyUSB0?baud=fast", "can://vcan0"]

[servers.sensor]
kind = "fiel"
args = { path = "x" }

[servers.log]
kind = "jsonl"
args = { paht = "x.jsonl" }

[servers.p]
kind = "process"

[[pipes]]
from = "sensor.out"
to = ["lgo.in"]

[[pipes]]
from = "log.out"
to = "p.in"

[[pipes]]
from = "p.out"
to = "p.in"
"#;

#[test]
fn bad_file_lists_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = check(dir.path(), "bad.toml", BAD);
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    let expected = [
        r#"bad.toml:2:11: bad address "tcp://127.0.0.1:notaport": invalid address "tcp://127.0.0.1:notaport": bad port "notaport": expected 0 to 65535"#,
        r#"bad.toml:3:12: bad address "serial:///dev/ttyUSB0?baud=fast": invalid address "serial:///dev/ttyUSB0?baud=fast": parameter baud="fast" is not valid: invalid digit found in string"#,
        r#"bad.toml:3:47: bad address "can://vcan0": no transport for scheme "can" (this build has tcp, ws, wss, unix, serial, zenoh, mem)"#,
        r#"bad.toml:6:8: unknown server kind "fiel" (known kinds: process, pty, file, stdin, jsonl, stdout, tee, pool)"#,
        r#"bad.toml:11:10: kind "jsonl" takes no argument "paht" (it takes: path, append, timestamps)"#,
        r#"bad.toml:13:10: server "p" (kind "process") needs argument "program": the program (looked up in PATH)"#,
        r#"bad.toml:18:6: pipe end lgo.in: no server named "lgo" (dangling pipe end)"#,
        r#"bad.toml:21:8: pipe end log.out: kind "jsonl" has no output port "out" (output ports: none)"#,
        r#"bad.toml:26:6: port p.in is already used by the pipe on line 20 (list several `from` in one pipe to merge)"#,
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn duplicate_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[nodes.a]\n\n[servers.x]\nkind = \"jsonl\"\n\n[servers.x]\nkind = \"jsonl\"\n";
    let (code, _, stderr) = check(dir.path(), "dup.toml", text);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        "dup.toml:6:10: duplicate key x (each name is defined once)"
    );
}

#[test]
fn pipe_between_unlinked_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[nodes.a]
listen = ["tcp://127.0.0.1:1"]
[nodes.b]
[servers.s]
node = "a"
kind = "file"
args = { path = "r.txt" }
[servers.l]
node = "b"
kind = "jsonl"
[[pipes]]
from = "s.out"
to = "l.in"
"#;
    let (code, _, stderr) = check(dir.path(), "unlinked.toml", text);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        r#"unlinked.toml:11:1: pipe "s.out": s.out is on node "a" and the pipe is wired on node "b", but the two nodes are not linked, directly or through other nodes within max_hops (add a listen/connect pair)"#
    );
}

/// A chain a – b – c: a pipe from a's server wired on c is fine (b
/// routes between them), unless the way is longer than `max_hops`.
#[test]
fn pipe_through_a_middle_node() {
    let dir = tempfile::tempdir().unwrap();
    let text = |c_config: &str| {
        format!(
            r#"[nodes.a]
listen = ["tcp://127.0.0.1:1"]
[nodes.b]
connect = ["tcp://127.0.0.1:1"]
listen = ["tcp://127.0.0.1:2"]
[nodes.c]
connect = ["tcp://127.0.0.1:2"]
{c_config}
[servers.s]
node = "a"
kind = "file"
args = {{ path = "r.txt" }}
[servers.l]
node = "c"
kind = "jsonl"
[[pipes]]
from = "s.out"
to = "l.in"
"#
        )
    };
    let (code, _, stderr) = check(dir.path(), "chain.toml", &text(""));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = check(
        dir.path(),
        "chain1.toml",
        &text("[nodes.c.config]\nmax_hops = 1\n"),
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("within max_hops"), "{stderr}");
}

#[test]
fn misc_problems() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[nodes.a]
[nodes.b]
[servers.s]
kind = "file"
args = { path = 3 }
[servers.t]
node = "c"
kind = "jsonl"
restart = "sometimes"
[servers."u.v"]
node = "a"
kind = "jsonl"
"#;
    let (code, _, stderr) = check(dir.path(), "misc.toml", text);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            r#"misc.toml:3:10: server "s" needs `node = "..."`: the topology has several nodes"#,
            r#"misc.toml:7:8: server "t" is placed on unknown node "c" (nodes: a, b)"#,
            r#"misc.toml:10:10: server name "u.v" cannot contain '.' (pipe ends are written SERVER.PORT)"#,
        ]
    );
}

#[test]
fn node_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[nodes.a]
config = { resume_grace = "30s", idle_timeout = 1.5, pipe_window = "64KiB" }
[nodes.b]
config = { idle_timeout = "soon", speed = 3, keepalive = true }
"#;
    let (code, _, stderr) = check(dir.path(), "settings.toml", text);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            r#"settings.toml:2:49: invalid node setting "keepalive": 2s is not shorter than idle_timeout (1.5s): a quiet link would be closed before its peer's next ping"#,
            r#"settings.toml:4:27: invalid node setting "idle_timeout": "soon" is not a duration (like 250ms, 1.5s, 2m)"#,
            r#"settings.toml:4:43: invalid node setting "speed": unknown setting (known: keepalive, idle_timeout, reconnect_min, reconnect_max, pipe_window, max_frame, lossy_max_frame, lossy_send_window, lossy_initial_rto, max_queued, link_budget, max_serving, resume_grace, max_hops)"#,
            r#"settings.toml:4:58: setting "keepalive" wants a number or a string like "250ms", not a boolean"#,
        ]
    );
    let good = "[nodes.a]\n[nodes.a.config]\nresume_grace = 30\nkeepalive = \"250ms\"\n";
    let (code, _, stderr) = check(dir.path(), "good.toml", good);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn syntax_error_and_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = check(
        dir.path(),
        "syntax.toml",
        "[nodes.a]\nlisten = [\"tcp://x:1\"\n",
    );
    assert_eq!(code, 2);
    assert!(stderr.starts_with("syntax.toml:2:"), "{stderr}");
    let (code, _, stderr) = check(
        dir.path(),
        "field.toml",
        "[nodes.a]\nlisten = []\nspeed = 3\n",
    );
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("field.toml:3:1: unknown field `speed`"),
        "{stderr}"
    );
}

#[test]
fn nothing_starts_when_the_file_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), BAD).unwrap();
    let out = oscloud()
        .args(["run", "bad.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("bad.toml:2:11: bad address"));
    assert!(!dir.path().join("x.jsonl").exists());
}

#[test]
fn help_reads_well() {
    let out = oscloud().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["check", "run", "ls", "call", "tap", "top", "graph", "kinds"] {
        assert!(
            text.contains(&format!("  {cmd} ")),
            "{cmd} missing in:\n{text}"
        );
    }
    let out = oscloud().arg("kinds").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "process", "pty", "file", "stdin", "jsonl", "stdout", "tee", "pool",
    ] {
        assert!(text.contains(&format!("{kind}: ")), "{kind}");
    }
}

const BAD_YAML: &str = r#"nodes:
  a:
    listen: ["tcp://127.0.0.1:notaport"]
    connect: ["serial:///dev/ttyUSB0?baud=115200&peer=a"]
servers:
  sensor:
    kind: fiel
    args: { path: x }
  log:
    kind: jsonl
    args:
      paht: x.jsonl
pipes:
  - from: sensor.out
    to: [lgo.in]
"#;

#[test]
fn yaml_gets_the_same_checks_with_yaml_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = check(dir.path(), "bad.yaml", BAD_YAML);
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    let expected = [
        r#"bad.yaml:3:14: bad address "tcp://127.0.0.1:notaport": invalid address "tcp://127.0.0.1:notaport": bad port "notaport": expected 0 to 65535"#,
        r#"bad.yaml:4:15: peer="a" must name another node (nodes: a)"#,
        r#"bad.yaml:7:11: unknown server kind "fiel" (known kinds: process, pty, file, stdin, jsonl, stdout, tee, pool)"#,
        r#"bad.yaml:12:7: kind "jsonl" takes no argument "paht" (it takes: path, append, timestamps)"#,
        r#"bad.yaml:15:9: pipe end lgo.in: no server named "lgo" (dangling pipe end)"#,
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);

    // Duplicate names, YAML syntax, types: each with its line.
    let text = "nodes:\n  a: {}\nservers:\n  x:\n    kind: jsonl\n  x:\n    kind: jsonl\n";
    let (code, _, stderr) = check(dir.path(), "dup.yml", text);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        r#"dup.yml:6:3: duplicate key "x" (each name is defined once)"#
    );
    let (code, _, stderr) = check(dir.path(), "syntax.yaml", "nodes:\n  a:\n    listen: [x\n");
    assert_eq!(code, 2);
    assert!(stderr.starts_with("syntax.yaml:4:1: "), "{stderr}");
    let (code, _, stderr) = check(
        dir.path(),
        "type.yaml",
        "nodes:\n  a:\n    max_restarts: lots\n",
    );
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        r#"type.yaml:3:19: invalid type: string "lots", expected u32"#
    );
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in
/// `dir`: (cert, key).
fn cert_and_key(dir: &Path) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ("cert.pem".into(), "key.pem".into())
}

#[test]
fn wss_certificate_and_key_files_are_read_and_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_and_key(dir.path());
    std::fs::write(dir.path().join("garbage.pem"), "not a PEM file\n").unwrap();
    let topo = |listen: &str, connect: &str| {
        format!("[nodes.a]\nlisten = [\"{listen}\"]\n\n[nodes.b]\nconnect = [\"{connect}\"]\n")
    };
    // Good files, and a dialler with the certificate as its CA: valid.
    let good = topo(
        &format!("wss://127.0.0.1:7443/o?cert={cert}&key={key}"),
        &format!("wss://127.0.0.1:7443/o?ca={cert}"),
    );
    let (code, stdout, stderr) = check(dir.path(), "good.toml", &good);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");

    for (listen, connect, problem) in [
        (
            "wss://127.0.0.1:7443/o?cert=cert.pem".to_owned(),
            "wss://127.0.0.1:7443/o".to_owned(),
            "a wss listener needs cert=<PEM chain>&key=<PEM key>; key is missing",
        ),
        (
            "wss://127.0.0.1:7443/o?cert=missing.pem&key=key.pem".to_owned(),
            "wss://127.0.0.1:7443/o".to_owned(),
            "TLS certificate missing.pem: ",
        ),
        (
            "wss://127.0.0.1:7443/o?cert=garbage.pem&key=key.pem".to_owned(),
            "wss://127.0.0.1:7443/o".to_owned(),
            "TLS certificate garbage.pem: no PEM certificate in it",
        ),
        (
            "wss://127.0.0.1:7443/o?cert=cert.pem&key=garbage.pem".to_owned(),
            "wss://127.0.0.1:7443/o".to_owned(),
            "TLS private key garbage.pem: ",
        ),
        (
            // A key that is not the certificate's.
            format!("wss://127.0.0.1:7443/o?cert={cert}&key={}", {
                let other = tempfile::tempdir_in(dir.path()).unwrap();
                let (_, k) = cert_and_key(other.path());
                let moved = dir.path().join("other-key.pem");
                std::fs::rename(other.path().join(k), &moved).unwrap();
                "other-key.pem"
            }),
            "wss://127.0.0.1:7443/o".to_owned(),
            "TLS certificate cert.pem: ",
        ),
        (
            format!("wss://127.0.0.1:7443/o?cert={cert}&key={key}"),
            "wss://127.0.0.1:7443/o?ca=garbage.pem".to_owned(),
            "CA certificate garbage.pem: no PEM certificate in it",
        ),
    ] {
        let (code, stdout, stderr) = check(dir.path(), "bad.toml", &topo(&listen, &connect));
        assert_eq!(code, 2, "{listen} / {connect}: {stdout}{stderr}");
        let line = if connect.contains("ca=") { 5 } else { 2 };
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{listen} / {connect}: {stderr}");
        assert!(
            lines[0].starts_with(&format!("bad.toml:{line}:")) && lines[0].contains(problem),
            "{listen} / {connect}: {stderr}"
        );
    }
}
