//! `oscloud run --metrics`: a real `oscloud` process serves OpenMetrics;
//! this test process links to it as a node, makes calls of a known size,
//! scrapes the endpoint with `curl` and checks the numbers against what
//! it sent, and that the text is well-formed OpenMetrics.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use oscloud_actors::ServerRef;
use oscloud_core::address::Address;
use oscloud_core::transport::MemTransport;
use oscloud_core::{Kernel, Node};
use support::*;

const LIMIT: Duration = Duration::from_secs(30);
const CALLS: u64 = 25;
const PAYLOAD: usize = 2000;

const TOPOLOGY: &str = r#"
[nodes.hub]

[servers.sensor]
node = "hub"
kind = "file"
args = { path = "readings.txt", interval_ms = 5, repeat = true }

[servers.log]
node = "hub"
kind = "jsonl"
args = { path = "log.jsonl" }

[[pipes]]
name = "readings"
from = "sensor.out"
to = "log.in"
"#;

/// A free TCP port on loopback (the test's own process chooses it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url` with curl; `None` while nothing listens there.
fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", url])
        .output()
        .expect("curl is installed");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parse the OpenMetrics text format strictly enough to catch what
/// Prometheus would reject: every sample belongs to the family declared
/// (`# TYPE`) just before it, with the suffixes its type allows; label
/// values are quoted; families are not repeated; `# EOF` ends the text.
fn parse_openmetrics(text: &str) -> Vec<Sample> {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end");
    let mut samples = Vec::new();
    let mut family: Option<(String, String)> = None;
    let mut seen = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" {
            assert_eq!(i, lines.len() - 1, "# EOF before the end");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "info", "unknown"].contains(&kind),
                "{line}"
            );
            assert!(seen.insert(name.to_owned()), "family {name} repeated");
            family = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line:?}");
        let (name_labels, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("labels end with }")),
            None => (name_labels, ""),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name {name:?}"
        );
        let mut map = BTreeMap::new();
        if !labels.is_empty() {
            for pair in labels.split("\",") {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                let v = v.strip_suffix('"').unwrap_or(v);
                assert!(map.insert(k.to_owned(), v.to_owned()).is_none(), "{line}");
            }
        }
        let (fam, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("{line}: no # TYPE"));
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(
            suffixes.iter().any(|s| name == format!("{fam}{s}")),
            "{name} is not a sample of {kind} {fam}"
        );
        samples.push((name.to_owned(), map, value));
    }
    samples
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}

#[test]
fn metrics_endpoint_counts_what_another_process_sent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("topology.toml"), TOPOLOGY).unwrap();
    std::fs::write(dir.path().join("readings.txt"), "t=1\nt=2\nt=3\n").unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let sockets = dir.path().join("sockets");
    std::fs::create_dir(&sockets).unwrap();
    let child = oscloud()
        .args(["run", "topology.toml", "--expose"])
        .arg(&sockets)
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stop = scopeguard(move || signal(pid, Signal::SIGTERM));
    wait_until(LIMIT, "the metrics endpoint answers", || {
        curl(&url).is_some()
    });

    // This process is a node too: it links to the hub and calls its
    // logger, which answers any string with its counters.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kernel = Kernel::new();
    let node = Node::new(
        kernel.clone(),
        oscloud_cli::runtime::transports(&MemTransport::new()),
    );
    let addr: Address = format!("unix://{}", sockets.join("hub.sock").display())
        .parse()
        .unwrap();
    let request = "x".repeat(PAYLOAD);
    rt.block_on(async {
        node.connect(&addr).await.unwrap();
        let deadline = std::time::Instant::now() + LIMIT;
        let log = loop {
            if let Ok(r) = ServerRef::lookup(&kernel, "log") {
                break r.typed::<String, serde::de::IgnoredAny>();
            }
            assert!(std::time::Instant::now() < deadline, "no logger");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for _ in 0..CALLS {
            log.call(&request, Duration::from_secs(5)).await.unwrap();
        }
    });
    let me = kernel.node().short();
    let sent = node.links()[0].stats;

    let text = curl(&url).unwrap();
    let samples = parse_openmetrics(&text);
    let hub = ("node", "hub");
    let server = ("server", "log");
    // Every call this process made, and nothing else (nobody else calls
    // the logger).
    assert_eq!(
        value(&samples, "oscloud_server_calls_total", &[hub, server]),
        CALLS as f64,
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            "oscloud_server_call_duration_seconds_count",
            &[hub, server]
        ),
        CALLS as f64
    );
    assert_eq!(
        value(
            &samples,
            "oscloud_server_call_duration_seconds_bucket",
            &[hub, server, ("le", "+Inf")]
        ),
        CALLS as f64
    );
    assert!(
        value(
            &samples,
            "oscloud_server_call_duration_seconds_sum",
            &[hub, server]
        ) > 0.0
    );
    assert_eq!(
        value(&samples, "oscloud_server_errors_total", &[hub, server]),
        0.0
    );
    assert_eq!(
        value(&samples, "oscloud_server_mailbox_messages", &[hub, server]),
        0.0
    );
    // The link to this process, labelled with its node id: at least the
    // payload it sent, and (it sends nothing unasked) what it counted.
    let peer = ("peer", me.as_str());
    let payload = (CALLS as usize * PAYLOAD) as f64;
    let got = value(
        &samples,
        "oscloud_link_payload_bytes_received_total",
        &[hub, peer],
    );
    assert!(got >= payload, "{got} < {payload}");
    let got = value(&samples, "oscloud_link_bytes_received_total", &[hub, peer]);
    assert!(
        got >= payload && got >= sent.bytes_sent as f64 * 0.9,
        "{got}"
    );
    assert!(value(&samples, "oscloud_link_frames_received_total", &[hub, peer]) >= CALLS as f64);
    assert_eq!(value(&samples, "oscloud_link_up", &[hub, peer]), 1.0);
    assert!(
        value(
            &samples,
            "oscloud_registry_entries",
            &[hub, ("scope", "local")]
        ) >= 4.0
    );
    // The pipe wired on the hub moves frames.
    assert!(
        value(
            &samples,
            "oscloud_pipe_frames_total",
            &[hub, ("pipe", "readings")]
        ) > 0.0
    );
    assert_eq!(
        value(&samples, "oscloud_server_restarts_total", &[hub, server]),
        0.0
    );
    // The logger takes its input by pipe, not by cast.
    assert_eq!(
        value(&samples, "oscloud_server_casts_total", &[hub, server]),
        0.0
    );

    // The reference lists every family served, and the dashboard uses
    // only names that are served.
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let reference = std::fs::read_to_string(docs.join("METRICS.md")).unwrap();
    let served: BTreeSet<&str> = samples.iter().map(|s| s.0.as_str()).collect();
    for name in &served {
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum"))
            .or_else(|| name.strip_suffix("_count"))
            .filter(|f| f.ends_with("_seconds"))
            .unwrap_or(name);
        assert!(
            reference.contains(&format!("`{family}`")),
            "{family} is not in docs/METRICS.md"
        );
    }
    let dashboard = std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("oscloud_") {
            assert!(
                served.contains(word),
                "the dashboard uses {word}, not served"
            );
        }
    }

    // `top` reads the same counters.
    let top = oscloud()
        .args([
            "top",
            &format!("unix://{}", sockets.join("hub.sock").display()),
            "--once",
        ])
        .output()
        .unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    let row: Vec<&str> = top
        .lines()
        .find(|l| l.trim_start().starts_with("log "))
        .unwrap_or_else(|| panic!("{top}"))
        .split_whitespace()
        .collect();
    // NAME KIND STATUS ... CALLS CASTS ERRORS MBOX CALL-AVG.
    assert_eq!(row[12], CALLS.to_string(), "{top}");
    assert_eq!(row[14], "0", "{top}");

    node.shutdown();
    drop(stop);
    let _ = wait_output(child, LIMIT);
}

/// Runs `f` when dropped (so the child is stopped when an assertion
/// fails).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
