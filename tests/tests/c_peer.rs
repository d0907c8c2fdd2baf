//! The C microcontroller peer (`peers/c-micro`) as its own process on a
//! pseudo-terminal, linked to a Rust node over `serial://`: the Rust node
//! sees its servers and calls them, the C peer calls a Rust server back,
//! and line noise and garbage do not break it.
//!
//! The host program is compiled here with `cc -std=c99 -Wall -Wextra
//! -Werror -DOM_MAX_PACKET=1024`; `OSCLOUD_C_HOST=/path/to/om_host` uses a
//! prebuilt one instead, built with the same `OM_MAX_PACKET`
//! (`scripts/test-serial.sh` passes a build with AddressSanitizer and
//! UBSan).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::transport::Transports;
use oscloud_core::{
    Capabilities, Endpoint, Entry, Error, Kernel, LinkStatus, Node, NodeConfig, PipeEnd,
};
use oscloud_transport_serial::SerialTransport;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const RELAY: &str = env!("CARGO_BIN_EXE_oscloud-serial-relay");
/// The C peer's packet size in these tests (`OM_MAX_PACKET`); a prebuilt
/// host must use the same.
const C_MAX_PACKET: usize = 1024;

/// The host binary: prebuilt, or compiled now into `dir`.
fn host_binary(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("OSCLOUD_C_HOST") {
        return p.into();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/c-micro");
    let out = dir.join("om_host");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = std::process::Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"])
        // Packets above 254 bytes take several COBS blocks: cover them.
        .arg(format!("-DOM_MAX_PACKET={C_MAX_PACKET}"))
        .arg("-o")
        .arg(&out)
        .arg(src.join("host/om_host.c"))
        .arg(src.join("oscloud_micro.c"))
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "the C peer does not compile");
    out
}

/// A running C peer process.
struct CPeer {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    tty: String,
}

impl CPeer {
    async fn start(binary: &Path, device: Option<&str>) -> Self {
        let mut cmd = Command::new(binary);
        if let Some(d) = device {
            cmd.arg(d);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the C peer");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut peer = Self {
            _child: child,
            stdin,
            stdout,
            tty: String::new(),
        };
        let first = peer.expect("tty ").await;
        peer.tty = first["tty ".len()..].to_owned();
        peer
    }

    async fn send(&mut self, cmd: &str) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line starting with `prefix` (others are printed and skipped).
    async fn expect(&mut self, prefix: &str) -> String {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = self
                    .stdout
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the C peer exited");
                if std::env::var_os("OSCLOUD_TEST_VERBOSE").is_some() {
                    println!("  C peer> {line}");
                }
                if line.starts_with(prefix) {
                    return line;
                }
                println!("  (C peer: {line})");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no line {prefix:?} from the C peer in time"))
    }

    /// Ask the C peer to call `server` on the Rust node; its reply line.
    async fn call(&mut self, server: &str, text: &str) -> String {
        self.send(&format!("call {server} {text}")).await;
        let sent = self.expect("call-sent ").await;
        let id = &sent["call-sent ".len()..];
        self.expect(&format!("reply {id} ")).await
    }
}

/// A Rust server the C peer calls: answers `rust:` + the request.
#[derive(Debug)]
struct RustEcho;

#[async_trait]
impl Endpoint for RustEcho {
    fn try_cast(&self, _msg: Bytes) -> Result<(), Error> {
        Ok(())
    }

    async fn call(&self, msg: Bytes) -> Result<Bytes, Error> {
        Ok(Bytes::from([b"rust:", &msg[..]].concat()))
    }

    async fn open_pipe(&self, port: &str, _end: PipeEnd) -> Result<(), Error> {
        Err(Error::NoSuchPort {
            name: "rust-echo".into(),
            port: port.into(),
        })
    }
}

fn node() -> Node {
    let config = NodeConfig {
        keepalive: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(3),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        lossy_initial_rto: Duration::from_millis(50),
        ..NodeConfig::default()
    };
    Node::with_config(
        Kernel::new(),
        Transports::new().with(Arc::new(SerialTransport)),
        config,
    )
}

async fn lookup(node: &Node, name: &str) -> Entry {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(e) = node.kernel().registry().lookup(name) {
            return e;
        }
        assert!(Instant::now() < deadline, "{name} not announced in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn call(e: &Entry, msg: &str) -> Result<Bytes, Error> {
    tokio::time::timeout(
        Duration::from_secs(20),
        e.endpoint().call(Bytes::from(msg.to_owned())),
    )
    .await
    .expect("call answered in time")
}

fn link(node: &Node) -> LinkStatus {
    node.links().into_iter().next().expect("a link")
}

/// Calls both ways, errors, casts: the full conversation with the C peer.
async fn converse(node: &Node, c: &mut CPeer, rounds: usize, sizes: &[usize]) {
    let upper = lookup(node, "upper").await;
    let count = lookup(node, "count").await;
    assert_eq!(upper.node(), count.node());
    let t = Instant::now();
    for i in 0..rounds {
        let reply = call(&upper, &format!("hello {i}")).await.unwrap();
        assert_eq!(reply, Bytes::from(format!("HELLO {i}")));
    }
    println!("{rounds} Rust→C calls: {:?}", t.elapsed());
    let err = call(&upper, "fail").await.unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err:?}");
    count
        .endpoint()
        .cast(Bytes::from_static(b"tick"))
        .await
        .unwrap();
    assert!(c.expect("cast-received ").await.ends_with(" tick"));
    let t = Instant::now();
    for i in 0..rounds {
        let line = c.call("rust-echo", &format!("x{i}")).await;
        assert!(line.ends_with(&format!(" 0 rust:x{i}")), "{line}");
    }
    println!("{rounds} C→Rust calls: {:?}", t.elapsed());
    // A call to a name the Rust node does not have: NotFound (kind 1).
    let line = c.call("nobody", "x").await;
    assert!(line.contains(" 1 "), "{line}");
    // Payloads around and beyond one COBS block (254 bytes), both ways.
    for &len in sizes {
        let text = "q".repeat(len);
        let reply = call(&upper, &text).await.unwrap();
        assert_eq!(reply, Bytes::from("Q".repeat(len)), "{len} bytes to C");
        if len > 0 {
            let line = c.call("rust-echo", &text).await;
            assert!(
                line.ends_with(&format!(" 0 rust:{text}")),
                "{len} bytes from C"
            );
        }
    }
    assert!(sizes.iter().all(|&l| l + 40 < C_MAX_PACKET));
}

/// Payload sizes around and beyond one COBS block (254 bytes): the packet
/// is the payload plus 10 to 20 bytes, plus a 4-byte CRC.
const SIZES: &[usize] = &[
    0, 1, 200, 229, 230, 231, 232, 233, 234, 235, 240, 250, 254, 500, 900,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_peer_on_a_pty_serves_and_calls_back() {
    let dir = tempfile::tempdir().unwrap();
    let bin = host_binary(dir.path());
    let mut c = CPeer::start(&bin, None).await;
    let rust = node();
    let _reg = rust
        .kernel()
        .registry()
        .register("rust-echo", Capabilities::new(), Arc::new(RustEcho))
        .unwrap();
    let at = format!("serial://{}?baud=115200", c.tty);
    tokio::time::timeout(Duration::from_secs(15), rust.connect(&at.parse().unwrap()))
        .await
        .expect("handshake with the C peer in time")
        .unwrap();
    c.expect("linked").await;
    converse(&rust, &mut c, 50, SIZES).await;

    // A call with a trace context (its optional last element): the Rust
    // node answers it as any other.
    c.send("tcall rust-echo 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 traced")
        .await;
    let sent = c.expect("call-sent ").await;
    let line = c
        .expect(&format!("reply {} ", &sent["call-sent ".len()..]))
        .await;
    assert!(line.ends_with(" 0 rust:traced"), "{line}");

    // Garbage from the C side's line: the Rust node drops it, the link
    // stays up and works.
    c.send("garbage 20000").await;
    c.expect("garbage-sent").await;
    let upper = lookup(&rust, "upper").await;
    assert_eq!(call(&upper, "after").await.unwrap(), "AFTER");
    let l = link(&rust);
    println!("Rust side: {:?}", l.stats);
    assert!(l.stats.crc_failures + l.stats.framing_failures > 0);
    c.send("stats").await;
    println!("C side: {}", c.expect("stats ").await);

    // The host program restarts while the device runs on: a new node opens
    // the port and links at once (the device joins the new session).
    rust.shutdown();
    let t = Instant::now();
    let second = node();
    let _reg2 = second
        .kernel()
        .registry()
        .register("rust-echo", Capabilities::new(), Arc::new(RustEcho))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The old link may still hold the port (exclusive) for a moment.
        match second.connect(&at.parse().unwrap()).await {
            Ok(_) => break,
            Err(err) => {
                assert!(Instant::now() < deadline, "no link after a restart: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    c.expect("linked").await;
    println!("a restarted host linked again in {:?}", t.elapsed());
    converse(&second, &mut c, 5, &[0, 300]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_peer_over_a_noisy_line() {
    let dir = tempfile::tempdir().unwrap();
    let bin = host_binary(dir.path());
    // The relay joins the C peer's device and the Rust node's device and
    // damages one byte in 300 on average, both ways
    // (`OSCLOUD_C_NOISE_EVERY` changes the rate).
    let a = dir.path().join("tty-c");
    let b = dir.path().join("tty-rust");
    let mut relay = Command::new(RELAY)
        .arg(&a)
        .arg(&b)
        .arg(std::env::var("OSCLOUD_C_NOISE_EVERY").unwrap_or_else(|_| "300".into()))
        .arg("11")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut relay_out = BufReader::new(relay.stdout.take().unwrap()).lines();
    assert_eq!(
        relay_out.next_line().await.unwrap().as_deref(),
        Some("ready")
    );
    let mut relay_in = relay.stdin.take().unwrap();
    let mut c = CPeer::start(&bin, Some(&a.display().to_string())).await;
    let rust = node();
    let _reg = rust
        .kernel()
        .registry()
        .register("rust-echo", Capabilities::new(), Arc::new(RustEcho))
        .unwrap();
    let at = format!("serial://{}", b.display());
    // Noise can hit the handshake too; should the first attempt fail
    // (`connect` then reports the error and stops), dial again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rust.connect(&at.parse().unwrap()))
            .await
        {
            Ok(Ok(_)) => break,
            other => {
                assert!(Instant::now() < deadline, "no handshake: {other:?}");
            }
        }
    }
    // Small payloads only: at this noise level most long frames are hit.
    converse(&rust, &mut c, 30, &[0, 1, 100]).await;
    relay_in.write_all(b"stats\n").await.unwrap();
    let damage = relay_out.next_line().await.unwrap().unwrap();
    println!("relay: {damage}");
    println!("Rust side: {:?}", link(&rust).stats);
    c.send("stats").await;
    println!("C side: {}", c.expect("stats ").await);
}
