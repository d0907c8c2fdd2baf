//! The seed topology "serial sensor → rules engine → alert"
//! (`examples/topologies/sensor-alert-serial.toml`) over a real serial
//! link: edge and hub run as two `oscloud run --node` processes whose
//! serial ports are two pseudo-terminals joined back to back (a null-modem
//! cable); ops is a third process on TCP. Bridge mode
//! (`examples/topologies/sensor-alert-zenoh.toml`): the same cable, and ops
//! reaches the board through the bridge node and a real `zenohd`
//! (`scripts/install-zenohd.sh`, or `ZENOHD=/path/to/zenohd`).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// One end of the cable: a raw pty whose slave is reachable at `link`.
/// A slave descriptor stays open so the master never sees a hang-up while
/// the node opens and closes the port.
struct End {
    master: Arc<PtyMaster>,
    _slave: std::fs::File,
    link: PathBuf,
}

fn end(link: &Path) -> End {
    let m = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
    grantpt(&m).unwrap();
    unlockpt(&m).unwrap();
    let name = ptsname_r(&m).unwrap();
    let mut t = tcgetattr(m.as_fd()).unwrap();
    cfmakeraw(&mut t);
    tcsetattr(m.as_fd(), SetArg::TCSANOW, &t).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .unwrap();
    std::os::unix::fs::symlink(&name, link).unwrap();
    End {
        master: Arc::new(m),
        _slave: slave,
        link: link.to_owned(),
    }
}

/// Copy everything one master reads to the other (one direction of the
/// cable), until the test process ends.
fn forward(from: Arc<PtyMaster>, to: Arc<PtyMaster>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match (&*from).read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if (&*to).write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

#[test]
fn sensor_rules_alert_over_a_serial_link_between_two_processes() {
    let dir = workdir();
    let a = end(&dir.path().join("tty-edge"));
    let b = end(&dir.path().join("tty-hub"));
    forward(a.master.clone(), b.master.clone());
    forward(b.master.clone(), a.master.clone());
    let text = std::fs::read_to_string(dir.path().join("sensor-alert-serial.toml"))
        .unwrap()
        .replace("/dev/ttyUSB0", &a.link.display().to_string())
        .replace("/dev/ttyACM0", &b.link.display().to_string());
    assert!(text.contains("tty-edge?baud=115200") && text.contains("tty-hub?baud"));
    std::fs::write(dir.path().join("serial.toml"), text).unwrap();

    run_nodes_until_every_alert(dir.path(), "serial.toml", &["edge", "hub", "ops"], LIMIT);
}

/// A zenohd on a free loopback port (killed when dropped).
struct Zenohd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Zenohd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn zenohd() -> Zenohd {
    let binary = std::env::var_os("ZENOHD").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/zenohd"),
        PathBuf::from,
    );
    assert!(
        binary.exists(),
        "zenohd not found at {}: run scripts/install-zenohd.sh (or set ZENOHD)",
        binary.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(binary)
        .args(["--listen", &format!("tcp/127.0.0.1:{port}")])
        .arg("--no-multicast-scouting")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let router = Zenohd { child, port };
    wait_until(LIMIT, "zenohd listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    router
}

#[test]
fn bridge_mode_the_board_reached_through_zenohd() {
    let dir = workdir();
    let router = zenohd();
    let a = end(&dir.path().join("tty-edge"));
    let b = end(&dir.path().join("tty-bridge"));
    forward(a.master.clone(), b.master.clone());
    forward(b.master.clone(), a.master.clone());
    let text = std::fs::read_to_string(dir.path().join("sensor-alert-zenoh.toml"))
        .unwrap()
        .replace("/dev/ttyUSB0", &a.link.display().to_string())
        .replace("/dev/ttyACM0", &b.link.display().to_string())
        .replace("router.example:7447", &format!("127.0.0.1:{}", router.port))
        .replace("# zenoh_tap = ", "zenoh_tap = ");
    assert!(text.contains("tty-edge?baud=115200") && text.contains("tty-bridge?baud"));
    assert_eq!(text.matches("zenoh://127.0.0.1:").count(), 3);
    std::fs::write(dir.path().join("bridge.toml"), text).unwrap();

    // A plain zenoh subscriber (no oscloud code) taps the readings pipe.
    use zenoh::Wait;
    let mut config = zenoh::Config::default();
    for (key, value) in [
        ("mode", r#""client""#.to_owned()),
        ("scouting/multicast/enabled", "false".to_owned()),
        (
            "connect/endpoints",
            format!(r#"["tcp/127.0.0.1:{}"]"#, router.port),
        ),
    ] {
        config.insert_json5(key, &value).unwrap();
    }
    let session = zenoh::open(config).wait().unwrap();
    let samples = session
        .declare_subscriber("oscloud/lab/pipe/**")
        .wait()
        .unwrap();
    // A round trip through the router: it has the subscription now.
    let _ = session.liveliness().get("oscloud/**").wait();

    run_nodes_until_every_alert(dir.path(), "bridge.toml", &["edge", "bridge", "ops"], LIMIT);

    let mut tapped = Vec::new();
    loop {
        let sample = samples
            .recv_timeout(LIMIT)
            .unwrap()
            .expect("the tap's samples in time");
        assert_eq!(sample.key_expr().as_str(), "oscloud/lab/pipe/ops/readings");
        if sample.kind() == zenoh::sample::SampleKind::Delete {
            break;
        }
        tapped.push(String::from_utf8(sample.payload().to_bytes().into_owned()).unwrap());
    }
    tapped.sort();
    assert_eq!(tapped, data_sorted(&dir.path().join("readings.jsonl")));
    assert_eq!(tapped.len(), 80);
}

#[test]
fn the_zenoh_bridge_example_runs_in_one_process() {
    run_example_in_one_process("sensor-alert-zenoh.toml", LIMIT);
}

#[test]
fn the_serial_example_runs_in_one_process_with_the_cable_in_memory() {
    run_example_in_one_process("sensor-alert-serial.toml", LIMIT);
}
