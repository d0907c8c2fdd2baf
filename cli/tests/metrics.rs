//! `oscloud run --metrics`: a real `oscloud` process serves OpenMetrics;
//! this test process links to it as a node, makes calls of a known size,
//! scrapes the endpoint with `curl` and checks the numbers against what
//! it sent, and that the text is well-formed OpenMetrics. Two bare wire
//! sessions end with known close codes (one closes, one makes the hub
//! close), and a pipe into a program that never reads stalls.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use oscloud_actors::ServerRef;
use oscloud_core::address::Address;
use oscloud_core::transport::MemTransport;
use oscloud_core::wire::{CloseCode, Config, FramingKind, LocalInfo, Session};
use oscloud_core::{Kernel, Node, NodeId};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;
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

[servers.blob]
node = "hub"
kind = "file"
args = { path = "blob.txt", mode = "chunks", repeat = true }

[servers.sink]
node = "hub"
kind = "process"
args = { program = "sleep", args = ["120"], lines = false }

[[pipes]]
name = "stuck"
from = "blob.out"
to = "sink.in"
"#;

/// A wire session without a node, to the hub's Unix socket: the test
/// chooses what it sends (how it closes).
struct Bare {
    session: Session,
    sock: UnixStream,
}

impl Bare {
    /// Linked (handshake done) to the hub at `path`.
    fn connect(path: &std::path::Path) -> Self {
        let sock = UnixStream::connect(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let session = Session::new(
            Config::new(FramingKind::ReliableStream),
            LocalInfo::new(NodeId::random()),
            Instant::now(),
        )
        .unwrap();
        let mut bare = Self { session, sock };
        bare.run_until("the handshake", |s| s.is_connected());
        bare
    }

    /// The peer label the hub gives this session.
    fn peer(&self) -> String {
        self.session.local().node.short()
    }

    /// Stop writing and read until the hub ends the link. A peer that
    /// drops its socket right after its Close may find the hub writing
    /// to it, and then the hub sees a broken link, not the Close.
    fn wait_for_the_hub_to_end_the_link(mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
        let deadline = Instant::now() + LIMIT;
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
            assert!(
                Instant::now() < deadline,
                "the hub did not end the link within {LIMIT:?}"
            );
        }
    }

    /// Write what the session has to send, read what comes, until `done`.
    fn run_until(&mut self, what: &str, done: impl Fn(&Session) -> bool) {
        let deadline = Instant::now() + LIMIT;
        let mut buf = [0u8; 64 * 1024];
        loop {
            while let Some(bytes) = self.session.poll_transmit(Instant::now()) {
                // The hub may have closed the socket already.
                let _ = self.sock.write_all(&bytes);
            }
            while self.session.poll_event().is_some() {}
            if done(&self.session) {
                return;
            }
            assert!(Instant::now() < deadline, "no {what} within {LIMIT:?}");
            match self.sock.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => self.session.handle_input(Instant::now(), &buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("{what}: {e}"),
            }
            self.session.handle_timeout(Instant::now());
        }
    }
}

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
    std::fs::write(dir.path().join("blob.txt"), vec![b'b'; 64 * 1024]).unwrap();
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

    // One bare session closes (Normal); another sends a packet that does
    // not decode, so the hub closes it (with the code it tells it).
    let socket = sockets.join("hub.sock");
    let mut closer = Bare::connect(&socket);
    closer.session.close("done");
    closer.run_until("the Close written", |_| true);
    let closer_peer = closer.peer();
    closer.wait_for_the_hub_to_end_the_link();
    let mut garbler = Bare::connect(&socket);
    // A 1-byte frame (length prefix, `docs/PROTOCOL.md` §2.1): 0xc1 is
    // never valid MessagePack.
    garbler.sock.write_all(&[0, 0, 0, 1, 0xc1]).unwrap();
    garbler.run_until("the hub's Close", |s| s.close_reason().is_some());
    let reason = garbler.session.close_reason().unwrap().clone();
    assert!(reason.remote, "{reason}");
    assert_eq!(reason.code, CloseCode::Decode, "{reason}");
    let garbler_peer = garbler.peer();
    drop(garbler);

    // Scrape once the hub saw both closes, the probe's first answer and
    // the stuck pipe's first stall.
    let hub = ("node", "hub");
    let mut text = String::new();
    wait_until(LIMIT, "closes, round trips and stalls counted", || {
        text = curl(&url).unwrap();
        let samples = parse_openmetrics(&text);
        let got = |name: &str, labels: &[(&str, &str)]| {
            samples.iter().any(|(n, l, v)| {
                n == name
                    && *v >= 1.0
                    && labels
                        .iter()
                        .all(|(k, x)| l.get(*k).map(String::as_str) == Some(*x))
            })
        };
        got(
            "oscloud_node_link_closes_total",
            &[hub, ("code", "Decode"), ("direction", "sent")],
        ) && got(
            "oscloud_node_link_closes_total",
            &[hub, ("code", "Normal"), ("direction", "received")],
        ) && got(
            "oscloud_link_round_trip_seconds_count",
            &[hub, ("peer", me.as_str()), ("source", "probe")],
        ) && got(
            "oscloud_pipe_credit_stalls_total",
            &[hub, ("pipe", "stuck")],
        )
    });
    let samples = parse_openmetrics(&text);
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
    // Each close once, under its peer and code, though both links are
    // gone; nothing else closed.
    let closes = |name: &str, peer: &str, code: &str| {
        value(&samples, name, &[hub, ("peer", peer), ("code", code)])
    };
    assert_eq!(
        closes("oscloud_link_closes_received_total", &closer_peer, "Normal"),
        1.0,
        "{text}"
    );
    assert_eq!(
        closes("oscloud_link_closes_sent_total", &garbler_peer, "Decode"),
        1.0
    );
    assert_eq!(
        closes("oscloud_link_closes_sent_total", &closer_peer, "Normal"),
        0.0
    );
    let total = |direction: &str| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == "oscloud_node_link_closes_total"
                    && l.get("direction").map(String::as_str) == Some(direction)
            })
            .map(|s| s.2)
            .sum()
    };
    assert_eq!((total("sent"), total("received")), (1.0, 1.0), "{text}");
    // Every code of PROTOCOL.md §5.4 and `Other`, in each direction.
    let codes = samples
        .iter()
        .filter(|s| s.0 == "oscloud_node_link_closes_total")
        .count();
    assert_eq!(codes, 2 * 14);
    // The probe's round trips to this process, in the histogram; none
    // measured by the session on a reliable stream.
    let rtt = |source: &str, sample: &str| {
        value(
            &samples,
            &format!("oscloud_link_round_trip_seconds_{sample}"),
            &[hub, peer, ("source", source)],
        )
    };
    assert!(rtt("probe", "count") >= 1.0);
    assert!(rtt("probe", "sum") > 0.0);
    assert_eq!(rtt("session", "count"), 0.0);
    // Nothing waits to be sent to this process once its calls returned.
    assert_eq!(
        value(&samples, "oscloud_link_send_queue_bytes", &[hub, peer]),
        0.0
    );
    // The pipe into a program that never reads stalls; the logger keeps
    // up with its 200 frames a second.
    assert!(
        value(
            &samples,
            "oscloud_pipe_credit_stalls_total",
            &[hub, ("pipe", "stuck")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &samples,
            "oscloud_pipe_credit_stalls_total",
            &[hub, ("pipe", "readings")]
        ),
        0.0
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
