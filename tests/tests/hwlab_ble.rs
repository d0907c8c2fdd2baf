//! BLE links against the real kernel and BlueZ, in the hardware lab: two
//! virtual LE controllers (`btvirt -L -l2`, on `hci_vhci`) that see each
//! other, a system D-Bus and `bluetoothd`; one `oscloud-testnode` is a GATT
//! peripheral on hci0, another the central on hci1. Ignored by a plain
//! `cargo test` (the build machines have no Bluetooth); run with
//! `scripts/test-hwlab-usb-ble.sh`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oscloud_tests::{Fnv, TestNode, pseudo_random_frames};

const NODE: &str = env!("CARGO_BIN_EXE_oscloud-testnode");
const SLOW: Duration = Duration::from_secs(90);

/// A background process, killed (by its pid) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(cmd: &str, args: &[&str]) -> Daemon {
    Daemon(
        Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd}: {e}")),
    )
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// btvirt's two controllers, the system bus and bluetoothd.
async fn bluetooth() -> Vec<Daemon> {
    assert!(
        Path::new("/dev/vhci").exists(),
        "no /dev/vhci: not in the hardware lab (modprobe hci_vhci)"
    );
    // btvirt is slow to start under emulation: when it misses the first
    // controller's setup window, the kernel registers that controller with
    // no address and bluetoothd never sees it. Start it again until both
    // controllers have an address.
    let _ = run("btvirt", &["--help"]);
    let mut daemons = Vec::new();
    for attempt in 1..=4 {
        let btvirt = daemon("btvirt", &["-L", "-l2"]);
        until("two controllers", Duration::from_secs(30), || {
            Path::new("/sys/class/bluetooth/hci1").exists()
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let config = run("hciconfig", &[]);
        if !config.contains("00:00:00:00:00:00") {
            println!("btvirt: two controllers on attempt {attempt}");
            daemons.push(btvirt);
            break;
        }
        assert!(
            attempt < 4,
            "btvirt never set both controllers up:\n{config}"
        );
        drop(btvirt);
        until("the controllers to go", Duration::from_secs(30), || {
            !Path::new("/sys/class/bluetooth/hci0").exists()
        })
        .await;
    }
    std::fs::create_dir_all("/run/dbus").unwrap();
    daemons.push(daemon(
        "dbus-daemon",
        &["--system", "--nofork", "--nopidfile"],
    ));
    until("the system bus", Duration::from_secs(20), || {
        Path::new("/run/dbus/system_bus_socket").exists()
    })
    .await;
    let bluetoothd = ["/usr/libexec/bluetooth/bluetoothd", "/usr/sbin/bluetoothd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bluetoothd (package bluez)");
    daemons.push(daemon(bluetoothd, &["-n"]));
    until(
        "bluetoothd to list both controllers",
        Duration::from_secs(30),
        || run("bluetoothctl", &["list"]).matches("Controller").count() >= 2,
    )
    .await;
    for index in ["0", "1"] {
        run("btmgmt", &["--index", index, "power", "on"]);
    }
    daemons
}

/// Ask `node` until it answers other than `timeout ...` (its own waits
/// give up after 10 s), for four minutes at most.
async fn ask_until(node: &mut TestNode, cmd: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let got = node.ask(cmd).await;
        if !got.starts_with("timeout") || Instant::now() > deadline {
            return got;
        }
        println!("  ({cmd}: {got})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab (hci_vhci, btvirt, bluetoothd): scripts/test-hwlab-usb-ble.sh"]
async fn ble_peripheral_and_central_calls_and_pipe() {
    let t0 = Instant::now();
    let _bt = bluetooth().await;
    println!("bluetooth up after {:.2} s", t0.elapsed().as_secs_f64());
    let node = Path::new(NODE);
    let mut dev = TestNode::start(
        node,
        "dev",
        &[
            "--listen",
            "bleperipheral://?adapter=hci0&mtu=244&name=osclab",
        ],
    )
    .await;
    dev.line_deadline = SLOW;
    let mut pc = TestNode::start(
        node,
        "pc",
        &["--connect", "ble://?adapter=hci1&mtu=244&scan_ms=30000"],
    )
    .await;
    pc.line_deadline = SLOW;
    let found = ask_until(&mut pc, "wait upper-dev").await;
    assert!(
        found.starts_with("found upper-dev"),
        "{found}\ncentral:\n{}\nperipheral:\n{}",
        pc.stderr_now(),
        dev.stderr_now()
    );
    println!("linked after {:.2} s", t0.elapsed().as_secs_f64());
    assert_eq!(
        pc.ask("call upper-dev over ble").await,
        "reply OVER BLE from dev"
    );
    assert!(
        ask_until(&mut dev, "wait upper-pc")
            .await
            .starts_with("found upper-pc")
    );
    assert_eq!(
        dev.ask("call upper-pc and back").await,
        "reply AND BACK from pc"
    );
    let t = Instant::now();
    for i in 0..10 {
        assert_eq!(
            pc.ask(&format!("call upper-dev n{i}")).await,
            format!("reply N{i} from dev")
        );
    }
    println!(
        "BLE: 10 calls: {:.1} ms per call",
        t.elapsed().as_secs_f64() * 100.0
    );
    let n = 1024;
    let mut want = Fnv::default();
    for f in pseudo_random_frames(n) {
        want.update(&f);
    }
    let t = Instant::now();
    let sent = pc.ask(&format!("pipe sink-dev in {n}")).await;
    assert!(sent.starts_with(&format!("piped {n} ")), "{sent}");
    let got = ask_until(&mut dev, &format!("sinkwait sink-dev {n}")).await;
    assert_eq!(
        got,
        format!("sink {} {}", want.bytes, want.hash),
        "\ncentral:\n{}\nperipheral:\n{}",
        pc.stderr_now(),
        dev.stderr_now()
    );
    let secs = t.elapsed().as_secs_f64();
    println!(
        "BLE: pipe 1 KiB central->peripheral: {secs:.2} s, {:.2} KiB/s",
        1.0 / secs
    );
    pc.send("quit").await;
    dev.send("quit").await;
    println!("whole test {:.2} s", t0.elapsed().as_secs_f64());
}
