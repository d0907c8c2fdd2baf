//! BLE links against the real kernel and BlueZ, in the hardware lab: two
//! virtual LE controllers (`btvirt -L -l2`, on `hci_vhci`) that see each
//! other, a system D-Bus and `bluetoothd`. The peripheral node uses hci0,
//! the central hci1. Ignored by a plain `cargo test` (the build machines
//! have no Bluetooth); run with `scripts/test-hwlab-usb-ble.sh`.
//!
//! Each test starts its own controllers and bluetoothd (the system bus is
//! started once) and its own nodes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use oscloud_core::identity::{AllowList, NodeKey};
use oscloud_core::transport::Transports;
use oscloud_core::wire::SecureConfig;
use oscloud_core::{
    Capabilities, Entry, Error, Kernel, LinkStatus, Node, NodeConfig, Registration,
};
use oscloud_tests::{Echo, kib_s, show_link};
use oscloud_transport_ble::{BleCentralTransport, BlePeripheralTransport, DEFAULT_SERVICE};

/// The peripheral's listening address (hci0).
const PERIPHERAL: &str = "bleperipheral://?adapter=hci0&mtu=244&name=osclab";
/// The central's address (hci1).
const CENTRAL: &str = "ble://?adapter=hci1&mtu=244&scan_ms=20000";

// ----- the Bluetooth set-up -----

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

/// Poll `check` every 50 ms until it holds; false after `within`.
fn poll(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The controllers' addresses as `hciconfig` shows them, by name.
fn addresses() -> Vec<(String, String)> {
    let text = run("hciconfig", &[]);
    let mut out = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some((n, _)) = line.split_once(':')
            && n.starts_with("hci")
        {
            name = Some(n.to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("BD Address: ")
            && let Some(n) = name.take()
        {
            out.push((n, rest.split_whitespace().next().unwrap_or("").to_owned()));
        }
    }
    out.sort();
    out
}

fn both_configured() -> bool {
    let a = addresses();
    a.len() == 2 && a.iter().all(|(_, addr)| addr != "00:00:00:00:00:00")
}

/// Load what btvirt's first controller would otherwise wait for under
/// emulation: btvirt's code and libc (read over 9p on first use) and the
/// kernel crypto modules that its AF_ALG sockets and bluetoothd autoload.
/// btvirt creates both controllers before its main loop answers any HCI
/// command; the kernel sends the first one HCI_Reset at once and gives up
/// after 2 s (`hci0: Opcode 0x0c03 failed: -110`), leaving hci0
/// unconfigured with address 00:00:00:00:00:00, invisible to bluetoothd.
fn warm_up() {
    let btvirt = run("sh", &["-c", "command -v btvirt"]);
    let btvirt = btvirt.trim();
    assert!(!btvirt.is_empty(), "btvirt (package bluez-test-tools)");
    let libs = run("ldd", &[btvirt]);
    for f in std::iter::once(btvirt).chain(libs.split_whitespace().filter(|w| w.starts_with('/'))) {
        let _ = std::fs::read(f);
    }
    run(
        "modprobe",
        &[
            "-a",
            "af_alg",
            "algif_hash",
            "algif_skcipher",
            "cmac",
            "ecb",
            "ecdh_generic",
        ],
    );
}

/// The system bus, started once per test binary (and left running).
fn system_bus() {
    static BUS: OnceLock<Daemon> = OnceLock::new();
    BUS.get_or_init(|| {
        std::fs::create_dir_all("/run/dbus").unwrap();
        let bus = daemon("dbus-daemon", &["--system", "--nofork", "--nopidfile"]);
        assert!(
            poll(Duration::from_secs(20), || Path::new(
                "/run/dbus/system_bus_socket"
            )
            .exists()),
            "no system bus"
        );
        bus
    });
}

/// btvirt's two controllers and bluetoothd, fresh for each test and
/// stopped (controllers gone) when dropped. A peripheral that advertises
/// on a controller where another advertisement was registered and
/// withdrawn before (a previous test's listener), or that was powered off
/// and on, was not found by the central's scans for minutes; fresh
/// controllers and a fresh bluetoothd (with its cache cleared) are.
struct Lab(Vec<Daemon>);

impl Lab {
    async fn start() -> Lab {
        tokio::task::spawn_blocking(|| Lab(start_bluetooth()))
            .await
            .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        while let Some(d) = self.0.pop() {
            drop(d);
        }
        let gone = poll(Duration::from_secs(30), || {
            !Path::new("/sys/class/bluetooth/hci0").exists()
        });
        if !gone {
            println!("btvirt's controllers did not go in 30 s");
        }
    }
}

fn start_bluetooth() -> Vec<Daemon> {
    let t0 = Instant::now();
    assert!(
        Path::new("/dev/vhci").exists(),
        "no /dev/vhci: not in the hardware lab (modprobe hci_vhci)"
    );
    static WARM: OnceLock<()> = OnceLock::new();
    WARM.get_or_init(warm_up);
    let mut daemons = Vec::new();
    for attempt in 1..=4 {
        let t = Instant::now();
        let mut btvirt = Command::new("btvirt")
            .args(["-L", "-l2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start btvirt");
        assert!(
            poll(Duration::from_secs(30), || Path::new(
                "/sys/class/bluetooth/hci1"
            )
            .exists()),
            "btvirt made no second controller in 30 s"
        );
        // Configured within ~1 s when the first controller's Reset was
        // answered; a failed Reset is final (2 s timeout).
        if poll(Duration::from_secs(4), both_configured) {
            println!(
                "btvirt: both controllers configured on attempt {attempt} in {:.2} s: {:?}",
                t.elapsed().as_secs_f64(),
                addresses()
            );
            daemons.push(Daemon(btvirt));
            break;
        }
        let config = run("hciconfig", &[]);
        println!(
            "btvirt attempt {attempt}: a controller stayed unconfigured ({:?}); again",
            addresses()
        );
        assert!(
            attempt < 4,
            "btvirt never set both controllers up:\n{config}"
        );
        let _ = btvirt.kill();
        let _ = btvirt.wait();
        assert!(
            poll(Duration::from_secs(30), || !Path::new(
                "/sys/class/bluetooth/hci0"
            )
            .exists()),
            "btvirt's controllers did not go"
        );
    }
    system_bus();
    // bluetoothd's cache of remote devices from a previous lab.
    if let Ok(dir) = std::fs::read_dir("/var/lib/bluetooth") {
        for e in dir.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let bluetoothd = ["/usr/libexec/bluetooth/bluetoothd", "/usr/sbin/bluetoothd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bluetoothd (package bluez)");
    // OSCLOUD_BLE_BLUETOOTHD_LOG=FILE: bluetoothd's debug log goes there
    // (see `bluetoothd_log`).
    match std::env::var("OSCLOUD_BLE_BLUETOOTHD_LOG") {
        Ok(file) => {
            let log = std::fs::File::create(&file).unwrap();
            daemons.push(Daemon(
                Command::new(bluetoothd)
                    .args(["-n", "-d"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            ));
        }
        Err(_) => daemons.push(daemon(bluetoothd, &["-n"])),
    }
    assert!(
        poll(Duration::from_secs(30), || run("bluetoothctl", &["list"])
            .matches("Controller")
            .count()
            >= 2),
        "bluetoothd did not list both controllers: {}",
        run("bluetoothctl", &["list"])
    );
    for index in ["0", "1"] {
        run("btmgmt", &["--index", index, "power", "on"]);
    }
    println!("bluetooth up in {:.2} s", t0.elapsed().as_secs_f64());
    daemons
}

/// Power one controller off or on through the kernel's management
/// interface (as `bluetoothd` would for `bluetoothctl power off`).
fn power(index: &str, on: bool) {
    let out = run(
        "btmgmt",
        &["--index", index, "power", if on { "on" } else { "off" }],
    );
    println!(
        "  btmgmt --index {index} power {}: {}",
        if on { "on" } else { "off" },
        out.trim()
    );
}

/// The LE connections the kernel has (`hcitool con`), one line each.
fn connections() -> Vec<String> {
    run("hcitool", &["con"])
        .lines()
        .filter(|l| l.contains(" LE "))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// End every BLE connection left from before and wait until the kernel has
/// none. A central node that shuts down asks BlueZ to disconnect from a
/// task that may not run any more (the test's runtime ends with the test),
/// and BlueZ keeps a connection it was asked to make: the peripheral, still
/// connected, does not advertise, and the next central's scans find
/// nothing until BlueZ drops the idle connection (minutes).
fn disconnect_all() {
    let left = connections();
    if left.is_empty() {
        return;
    }
    println!("  ending connections left over: {left:?}");
    let lab = addresses();
    for (hci, _) in &lab {
        for (_, addr) in &lab {
            let path = format!("/org/bluez/{hci}/dev_{}", addr.replace(':', "_"));
            let _ = Command::new("dbus-send")
                .args([
                    "--system",
                    "--print-reply",
                    "--dest=org.bluez",
                    &path,
                    "org.bluez.Device1.Disconnect",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    assert!(
        poll(Duration::from_secs(20), || connections().is_empty()),
        "connections still up: {:?}",
        connections()
    );
}

/// End the connections left by a refused central.
async fn disconnect() {
    tokio::task::spawn_blocking(disconnect_all).await.unwrap();
}

// ----- logs -----

/// Everything the nodes log (info and above), for the refusal checks.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let w = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_ansi(false)
            .with_writer(move || w.clone())
            .try_init();
        logs
    })
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// ----- panics -----

/// Every panic outside this file so far (message and place), recorded by
/// a panic hook the first call installs (the default hook still prints;
/// a failed check of a test is its own report). A library must not
/// install a hook; a test binary may.
fn panics() -> &'static Mutex<Vec<String>> {
    static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info
                .location()
                .is_some_and(|l| l.file().ends_with("hwlab_ble.rs"));
            if !ours && let Some(p) = PANICS.get() {
                p.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(info.to_string());
            }
            previous(info);
        }));
        Mutex::new(Vec::new())
    })
}

/// No task panicked (a panic in a detached task, such as bluez-async's
/// removal of a D-Bus match when a notification stream is dropped, shows
/// nowhere else).
fn no_panics(when: &str) {
    let seen = std::mem::take(&mut *panics().lock().unwrap());
    assert!(seen.is_empty(), "panics {when}: {seen:#?}");
}

// ----- nodes -----

/// Under emulation one BLE datagram costs a D-Bus round trip or signal
/// on each side (tens of ms): a window of 8 packets of 2 KiB (~70
/// datagrams of 244 bytes) can take over a second, so a 3 s first timeout
/// avoids re-sending packets still on their way.
fn config(resume_grace: Duration) -> NodeConfig {
    NodeConfig {
        keepalive: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(15),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        lossy_initial_rto: Duration::from_secs(3),
        resume_grace,
        ..NodeConfig::default()
    }
}

fn transports() -> Transports {
    Transports::new()
        .with(Arc::new(BleCentralTransport))
        .with(Arc::new(BlePeripheralTransport))
}

fn echo(node: &Node, name: &str) -> Registration {
    node.kernel()
        .registry()
        .register(name, Capabilities::new(), Arc::new(Echo))
        .unwrap()
}

/// Dial the peripheral from `central` until a handshake completes (a
/// dial scans for up to 20 s), for two minutes at most.
async fn dial(central: &Node) -> Result<oscloud_core::NodeId, Error> {
    let t = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match central.connect(&CENTRAL.parse().unwrap()).await {
            Ok(peer) => {
                println!(
                    "  linked on dial {attempt} after {:.2} s",
                    t.elapsed().as_secs_f64()
                );
                return Ok(peer);
            }
            Err(e) if t.elapsed() < Duration::from_secs(120) && retry(&e) => {
                println!("  dial {attempt}: {e}; again");
                if attempt == 1 {
                    let info = tokio::task::spawn_blocking(|| {
                        format!(
                            "{}{}{:?}",
                            run("btmgmt", &["--index", "0", "info"]),
                            run("btmgmt", &["--index", "0", "advinfo"]),
                            connections()
                        )
                    })
                    .await
                    .unwrap();
                    println!("  hci0 now:\n{info}");
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a failed dial is worth another: the peripheral not found or
/// the connection not made, but not a refused handshake.
fn retry(e: &Error) -> bool {
    let text = e.to_string();
    !(text.contains("refused") || text.contains("allow-list"))
}

async fn lookup(node: &Node, name: &str) -> Entry {
    oscloud_tests::lookup(node, name, Duration::from_secs(60)).await
}

fn link(node: &Node) -> LinkStatus {
    let links = node.links();
    assert!(!links.is_empty(), "no link");
    links.into_iter().last().unwrap()
}

async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----- tests -----

/// Calls both ways and 64 KiB (or `OSCLOUD_BLE_PIPE_BYTES`) through a pipe
/// each way, every byte checked (count and checksum); `bluetoothctl` on the central's adapter
/// sees the peripheral connected, with our service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab (hci_vhci, btvirt, bluetoothd): scripts/test-hwlab-usb-ble.sh"]
async fn calls_and_64_kib_pipes_both_ways() {
    logs();
    no_panics("before the test");
    let t0 = Instant::now();
    let _lab = Lab::start().await;
    // With a resume grace, as a BLE deployment would run: a link that
    // ends in the middle of a pipe resumes on the next one.
    let grace = Duration::from_secs(60);
    let dev = Node::with_config(Kernel::new(), transports(), config(grace));
    let pc = Node::with_config(Kernel::new(), transports(), config(grace));
    let _r1 = echo(&dev, "echo-dev");
    let _r2 = echo(&pc, "echo-pc");
    dev.listen(&PERIPHERAL.parse().unwrap()).await.unwrap();
    let peer = dial(&pc).await.unwrap();
    assert_eq!(peer, dev.kernel().node());
    println!("linked {:.2} s into the test", t0.elapsed().as_secs_f64());
    let on_dev = lookup(&pc, "echo-dev").await;
    let on_pc = lookup(&dev, "echo-pc").await;
    let took = oscloud_tests::echo_calls(&on_dev, 20, Duration::from_secs(30)).await;
    println!(
        "BLE: 20 calls central->peripheral: {:.1} ms per call",
        took.as_secs_f64() * 50.0
    );
    let took = oscloud_tests::echo_calls(&on_pc, 20, Duration::from_secs(30)).await;
    println!(
        "BLE: 20 calls peripheral->central: {:.1} ms per call",
        took.as_secs_f64() * 50.0
    );
    // 64 KiB in CI; `OSCLOUD_BLE_PIPE_BYTES` sets another size for a run
    // by hand (1 MiB takes many minutes under emulation), with 2 s per KiB
    // (at least 360 s) allowed for each direction.
    let n: usize = std::env::var("OSCLOUD_BLE_PIPE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 * 1024);
    let within = Duration::from_secs((n as u64 / 1024 * 2).max(360));
    // OSCLOUD_BLE_DOWN_ONLY=1 leaves the central -> peripheral pipe out.
    if std::env::var("OSCLOUD_BLE_DOWN_ONLY").is_err() {
        let up = oscloud_tests::collect_transfer(&pc, &on_dev, n, within).await;
        println!(
            "BLE: {} KiB pipe central->peripheral: {:.2} s, {:.1} KiB/s",
            n / 1024,
            up.as_secs_f64(),
            kib_s(n, up)
        );
    }
    let down = oscloud_tests::collect_transfer(&dev, &on_pc, n, within).await;
    println!(
        "BLE: {} KiB pipe peripheral->central: {:.2} s, {:.1} KiB/s",
        n / 1024,
        down.as_secs_f64(),
        kib_s(n, down)
    );
    show_link("central", &link(&pc));
    show_link("peripheral", &link(&dev));
    bluetoothd_log();
    assert_eq!(link(&pc).stats.crc_failures, 0);

    // Interop: BlueZ's own client, on the central's adapter, shows the
    // peripheral with its name and our service.
    let hci0 = addresses()[0].1.clone();
    let hci1 = addresses()[1].1.clone();
    let info = bluetoothctl(
        &[&format!("select {hci1}"), &format!("info {hci0}")],
        &DEFAULT_SERVICE.to_string(),
    );
    println!("bluetoothctl info {hci0} (on {hci1}):\n{info}");
    assert!(info.contains(&DEFAULT_SERVICE.to_string()), "{info}");
    assert!(info.contains("Connected: yes"), "{info}");
    pc.shutdown();
    dev.shutdown();
    no_panics("in the test");
    println!("whole test {:.2} s", t0.elapsed().as_secs_f64());
}

/// With `OSCLOUD_BLE_BLUETOOTHD_LOG=FILE` (bluetoothd then runs with `-d`
/// and logs there): how often each bluetoothd function logged, and the
/// lines of those that logged fewer than 40 times (what is left once the
/// per-notification and per-write lines are left out: connections, CCC
/// writes, StartNotify and StopNotify).
fn bluetoothd_log() {
    let Ok(file) = std::env::var("OSCLOUD_BLE_BLUETOOTHD_LOG") else {
        return;
    };
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    println!("== bluetoothd log: {} lines", text.lines().count());
    let key = |l: &str| {
        l.split_whitespace()
            .find(|w| w.ends_with("()"))
            .unwrap_or("")
            .to_owned()
    };
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for l in text.lines() {
        *counts.entry(key(l)).or_default() += 1;
    }
    for (k, c) in &counts {
        println!("bluetoothd: {c:7} {k}");
    }
    for l in text.lines().filter(|l| counts[&key(l)] < 40) {
        println!("bluetoothd| {l}");
    }
}

/// Run `bluetoothctl` with `commands` on its input until its output has
/// `want` (or 30 s pass); its output.
fn bluetoothctl(commands: &[&str], want: &str) -> String {
    let mut child = Command::new("bluetoothctl")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bluetoothctl");
    let mut stdin = child.stdin.take().unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    // bluetoothctl reads commands once it has the adapters; a command
    // sent before is dropped: send them until the answer shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.lock().unwrap().contains(want) && Instant::now() < deadline {
        for c in commands {
            let _ = writeln!(stdin, "{c}");
        }
        let _ = stdin.flush();
        poll(Duration::from_secs(2), || {
            out.lock().unwrap().contains(want)
        });
    }
    let _ = writeln!(stdin, "quit");
    drop(stdin);
    if !poll(Duration::from_secs(5), || {
        child.try_wait().ok().flatten().is_some()
    }) {
        let _ = child.kill();
    }
    let _ = child.wait();
    let _ = reader.join();
    let text = out.lock().unwrap().clone();
    // Strip the prompt's colour codes.
    let mut clean = String::new();
    let mut esc = false;
    for ch in text.chars() {
        match (esc, ch) {
            (false, '\u{1b}') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, '\u{1}' | '\u{2}' | '\r') => {}
            (false, c) => clean.push(c),
        }
    }
    clean
}

/// The central's controller is powered off in the middle of a 64 KiB
/// pipe and on again: both sides see the link go down, the central dials
/// again, the session resumes (`resume_grace`), and the pipe's bytes all
/// arrive once, in order (count and checksum).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab (hci_vhci, btvirt, bluetoothd): scripts/test-hwlab-usb-ble.sh"]
async fn power_off_mid_transfer_resumes_losing_nothing() {
    logs();
    no_panics("before the test");
    let t0 = Instant::now();
    let _lab = Lab::start().await;
    let grace = Duration::from_secs(120);
    let dev = Node::with_config(Kernel::new(), transports(), config(grace));
    let pc = Node::with_config(Kernel::new(), transports(), config(grace));
    let _r = echo(&dev, "echo-dev");
    dev.listen(&PERIPHERAL.parse().unwrap()).await.unwrap();
    dial(&pc).await.unwrap();
    let on_dev = lookup(&pc, "echo-dev").await;
    let n = 64 * 1024;
    let transfer = {
        let (pc, on_dev) = (pc.clone(), on_dev.clone());
        tokio::spawn(async move {
            oscloud_tests::collect_transfer(&pc, &on_dev, n, Duration::from_secs(300)).await
        })
    };
    until(
        "a quarter of the pipe on its way",
        Duration::from_secs(120),
        || link(&dev).stats.payload_bytes_received >= (n / 4) as u64,
    )
    .await;
    let got = link(&dev).stats.payload_bytes_received;
    println!("  {got} payload bytes received: powering hci1 off");
    let down = Instant::now();
    tokio::task::spawn_blocking(|| power("1", false))
        .await
        .unwrap();
    until(
        "both sides to see the link down",
        Duration::from_secs(60),
        || !link(&pc).connected && !link(&dev).connected,
    )
    .await;
    println!(
        "  link down on both sides after {:.2} s",
        down.elapsed().as_secs_f64()
    );
    assert!(
        !transfer.is_finished(),
        "the pipe finished while the link was down"
    );
    tokio::task::spawn_blocking(|| power("1", true))
        .await
        .unwrap();
    let up = Instant::now();
    until("the session to resume", Duration::from_secs(180), || {
        let l = link(&pc);
        l.connected && l.stats.resumes >= 1
    })
    .await;
    println!(
        "  resumed {:.2} s after power on",
        up.elapsed().as_secs_f64()
    );
    let took = tokio::time::timeout(Duration::from_secs(300), transfer)
        .await
        .expect("the pipe finished after the resume")
        .unwrap();
    println!(
        "BLE: 64 KiB pipe across a power cycle: {:.2} s, intact",
        took.as_secs_f64()
    );
    show_link("central", &link(&pc));
    show_link("peripheral", &link(&dev));
    // Calls still work on the resumed session.
    oscloud_tests::echo_calls(&on_dev, 5, Duration::from_secs(30)).await;
    assert!(logs().text().contains("BLE link down"), "a link-down line");
    pc.shutdown();
    dev.shutdown();
    no_panics("in the test");
    println!("whole test {:.2} s", t0.elapsed().as_secs_f64());
}

/// A sealed, authenticated session (Noise) over BLE: calls and a pipe
/// intact; a central whose key the peripheral does not admit is refused,
/// with a log line on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab (hci_vhci, btvirt, bluetoothd): scripts/test-hwlab-usb-ble.sh"]
async fn encrypted_session_and_a_refused_stranger() {
    let logs = logs();
    no_panics("before the test");
    let t0 = Instant::now();
    let _lab = Lab::start().await;
    let (kd, kp) = (NodeKey::generate(), NodeKey::generate());
    let secure = |me: &NodeKey, peer: &NodeKey| {
        Node::with_security(
            Kernel::with_node(me.node_id()),
            transports(),
            config(Duration::ZERO),
            SecureConfig::new(me.clone(), AllowList::from_keys([peer.public()])),
        )
        .unwrap()
    };
    let dev = secure(&kd, &kp);
    let _r = echo(&dev, "echo-dev");
    dev.listen(&PERIPHERAL.parse().unwrap()).await.unwrap();

    // A stranger first: refused, with a line on each side.
    let stranger = secure(&NodeKey::generate(), &kd);
    let before = logs.text().len();
    let res = dial(&stranger).await;
    println!("  the stranger's dial: {res:?}");
    assert!(res.is_err(), "a stranger is not admitted");
    until("both refusal lines", Duration::from_secs(30), || {
        let t = logs.text();
        let t = &t[before..];
        t.contains("link refused: key") && t.contains("link refused by the peer")
    })
    .await;
    for l in logs.text()[before..]
        .lines()
        .filter(|l| l.contains("link refused"))
    {
        println!("  log: {l}");
    }
    stranger.shutdown();
    drop(stranger);
    disconnect().await;

    let pc = secure(&kp, &kd);
    assert_eq!(dial(&pc).await.unwrap(), kd.node_id());
    let on_dev = lookup(&pc, "echo-dev").await;
    let took = oscloud_tests::echo_calls(&on_dev, 20, Duration::from_secs(30)).await;
    let n = 16 * 1024;
    let piped = oscloud_tests::collect_transfer(&pc, &on_dev, n, Duration::from_secs(360)).await;
    println!(
        "BLE encrypted: 20 calls {:.1} ms per call, 16 KiB pipe {:.2} s ({:.1} KiB/s)",
        took.as_secs_f64() * 50.0,
        piped.as_secs_f64(),
        kib_s(n, piped)
    );
    let l = link(&pc);
    assert!(l.connected && l.peer == Some(kd.node_id()));
    assert_eq!(l.stats.auth_failures, 0);
    pc.shutdown();
    dev.shutdown();
    no_panics("in the test");
    println!("whole test {:.2} s", t0.elapsed().as_secs_f64());
}

/// Ask the peripheral's GATT application to stop its notification session,
/// as BlueZ does with `StopNotify` (the call goes to every D-Bus client
/// until the one that has the object answers). The path comes from the
/// peripheral's `BLE peripheral advertising ... gatt=ApplicationHandle {
/// PATH }` log line.
fn stop_notify(logs: &str) {
    let start = logs
        .rfind("/org/bluez/bluer/gatt/app/")
        .expect("the GATT application's path in the log");
    let app: String = logs[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '/' || *c == '_')
        .collect();
    let path = format!("{app}/service0/char1");
    let names = run(
        "dbus-send",
        &[
            "--system",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.ListNames",
        ],
    );
    for name in names.split('"').filter(|w| w.starts_with(":1.")) {
        let ok = Command::new("dbus-send")
            .args([
                "--system",
                "--print-reply",
                &format!("--dest={name}"),
                &path,
                "org.bluez.GattCharacteristic1.StopNotify",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            println!("  StopNotify on {path} at {name}");
            return;
        }
    }
    panic!("no D-Bus client took StopNotify on {path}");
}

/// The peripheral's notification session stops in the middle of a pipe
/// while the connection stays up (BlueZ's `StopNotify`): the central,
/// which cannot see that, still has its link down within seconds (the
/// peripheral disconnects it), far below its idle timeout, dials again,
/// the session resumes and the pipe arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab (hci_vhci, btvirt, bluetoothd): scripts/test-hwlab-usb-ble.sh"]
async fn a_stopped_notification_session_ends_the_link_on_both_sides() {
    let logs = logs();
    no_panics("before the test");
    let t0 = Instant::now();
    let _lab = Lab::start().await;
    // An idle timeout no wait in this test reaches: only the peripheral's
    // disconnect can end the central's link in time.
    let config = NodeConfig {
        idle_timeout: Duration::from_secs(300),
        ..config(Duration::from_secs(300))
    };
    let dev = Node::with_config(Kernel::new(), transports(), config.clone());
    let pc = Node::with_config(Kernel::new(), transports(), config);
    let _r = echo(&pc, "echo-pc");
    dev.listen(&PERIPHERAL.parse().unwrap()).await.unwrap();
    dial(&pc).await.unwrap();
    let on_pc = lookup(&dev, "echo-pc").await;
    let n = 64 * 1024;
    let transfer = {
        let (dev, on_pc) = (dev.clone(), on_pc.clone());
        tokio::spawn(async move {
            oscloud_tests::collect_transfer(&dev, &on_pc, n, Duration::from_secs(280)).await
        })
    };
    until(
        "a quarter of the pipe on its way",
        Duration::from_secs(120),
        || link(&pc).stats.payload_bytes_received >= (n / 4) as u64,
    )
    .await;
    let text = logs.text();
    tokio::task::spawn_blocking(move || stop_notify(&text))
        .await
        .unwrap();
    let stopped = Instant::now();
    until(
        "the central's link down (60 s, the idle timeout is 300 s)",
        Duration::from_secs(60),
        || {
            let l = link(&pc);
            !l.connected || l.stats.resumes >= 1
        },
    )
    .await;
    println!(
        "  central's link down {:.2} s after StopNotify",
        stopped.elapsed().as_secs_f64()
    );
    until("the session to resume", Duration::from_secs(180), || {
        let l = link(&pc);
        l.connected && l.stats.resumes >= 1
    })
    .await;
    println!(
        "  resumed {:.2} s after StopNotify",
        stopped.elapsed().as_secs_f64()
    );
    let took = tokio::time::timeout(Duration::from_secs(290), transfer)
        .await
        .expect("the pipe finished after the resume")
        .unwrap();
    println!(
        "BLE: 64 KiB pipe peripheral->central across a stopped notification session: {:.2} s, intact",
        took.as_secs_f64()
    );
    show_link("central", &link(&pc));
    show_link("peripheral", &link(&dev));
    assert!(
        logs.text().contains("disconnected the central"),
        "the peripheral's disconnect line"
    );
    pc.shutdown();
    dev.shutdown();
    no_panics("in the test");
    println!("whole test {:.2} s", t0.elapsed().as_secs_f64());
}
