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
                    let rest = l.strip_prefix("oscloud: console at ")?;
                    let rest = rest
                        .strip_prefix("http://")
                        .or_else(|| rest.strip_prefix("https://"))?;
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
        config.ends_with(
            r#"{"identity":null,"node":"a","nodes":["a","b"],"readOnly":false,"ws":"/oscloud"}"#
        ),
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
fn a_read_only_console_gets_an_identity_for_the_page() {
    // --processes: the console node, a child process, takes the identity
    // as read-only (a hidden option) and runs.
    let run = Run::start(&["--processes", "--console-read-only"]);
    let config = run.get("/config.json", "");
    let body = config.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["readOnly"], true, "{config}");
    let id = json["identity"].as_str().unwrap_or_default();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{config}"
    );
    // Another node (another id) still calls through the relay.
    let ws = format!("ws://{}/oscloud", run.console);
    wait_until(LIMIT, "a call through the console", || {
        oscloud()
            .args(["call", &ws, "upper", r#""x""#])
            .output()
            .unwrap()
            .status
            .success()
    });
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

/// A CA, and a certificate it signed for 127.0.0.1, as PEM files in `dir`:
/// (ca, cert, key).
fn pki(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[test]
fn over_tls_the_page_and_the_node_are_reached_with_wss() {
    let keys = workdir();
    let (ca, cert, key) = pki(keys.path());
    let run = Run::start(&["--console-tls-cert", &cert, "--console-tls-key", &key]);
    // Plain HTTP gets no page: the console speaks TLS.
    let mut s = TcpStream::connect(&run.console).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    write!(s, "GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    // wss:// through the console's TLS, relayed to the node.
    let ws = format!("wss://{}/oscloud?ca={ca}", run.console);
    let mut reply = String::new();
    wait_until(LIMIT, "a call through the console over TLS", || {
        let out = oscloud()
            .args(["call", &ws, "upper", r#""over tls""#])
            .output()
            .unwrap();
        reply = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        out.status.success()
    });
    assert_eq!(reply, r#""OVER TLS""#);
}

#[test]
fn another_address_is_taken_with_tls_and_a_token() {
    let keys = workdir();
    let (_ca, cert, key) = pki(keys.path());
    let dir = workdir();
    std::fs::write(dir.path().join("t.toml"), TOPOLOGY).unwrap();
    let err = dir.path().join("stderr.txt");
    let child = oscloud()
        .args(["run", "t.toml", "--console", "0.0.0.0:0"])
        .args(["--console-tls-cert", &cert, "--console-tls-key", &key])
        .env("OSCLOUD_CONSOLE_TOKEN", "s3cret")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    wait_until(LIMIT, "the console announced", || {
        std::fs::read_to_string(&err)
            .unwrap()
            .contains("oscloud: console at https://0.0.0.0:")
    });
    signal(child.id(), Signal::SIGTERM);
    let _ = wait_output(child, LIMIT);
}

#[test]
fn a_console_on_another_address_is_refused() {
    let dir = workdir();
    std::fs::write(dir.path().join("t.toml"), TOPOLOGY).unwrap();
    let refused = |token: Option<&str>| {
        let mut c = oscloud();
        c.args(["run", "t.toml", "--console", "0.0.0.0:7781"])
            .env_remove("OSCLOUD_CONSOLE_TOKEN")
            .current_dir(dir.path());
        if let Some(t) = token {
            c.args(["--console-token", t]);
        }
        let out = run_to_end(c, LIMIT);
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(None);
    assert!(
        err.contains("the console binds 0.0.0.0:7781, not a loopback address: that needs TLS and an access token, and TLS (--console-tls-cert, --console-tls-key) and an access token (--console-token) is missing"),
        "{err}"
    );
    let err = refused(Some("s3cret"));
    assert!(
        err.contains("and TLS (--console-tls-cert, --console-tls-key) is missing"),
        "{err}"
    );
}
