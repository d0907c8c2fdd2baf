//! USB links against the real kernel, in the hardware lab: inside one VM,
//! an `oscloud-testnode` process is a USB gadget (configfs + FunctionFS on
//! `dummy_hcd`'s device controller) and another one, the host, dials it
//! through libusb. The host kernel of the build machines has no USB gadget
//! drivers, so these tests are ignored by a plain `cargo test`; run them
//! with `scripts/test-hwlab-usb-ble.sh` (which boots the lab).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::Path;
use std::time::{Duration, Instant};

use rusb::UsbContext;

use oscloud_tests::{Fnv, TestNode, pseudo_random_frames};

const NODE: &str = env!("CARGO_BIN_EXE_oscloud-testnode");
const UDC: &str = "dummy_udc.0";
/// Not 0525:a4a0, which the kernel's `usbtest` driver would claim.
const GADGET: &str = "usbgadget://?udc=dummy_udc.0&vid=1d6b&pid=0104&name=osclab";
const HOST: &str = "usb://1d6b:0104";
const UDC_FILE: &str = "/sys/kernel/config/usb_gadget/osclab/UDC";
const MIB: usize = 1024 * 1024;
/// Everything is slow under TCG emulation: how long one answer may take.
const SLOW: Duration = Duration::from_secs(60);
const CALLS: usize = 20;

/// Poll `check` until it holds or `within` passes.
async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether no configfs gadget is bound to a device controller.
fn udc_free() -> bool {
    let Ok(gadgets) = std::fs::read_dir("/sys/kernel/config/usb_gadget") else {
        return true;
    };
    gadgets.flatten().all(|g| {
        std::fs::read_to_string(g.path().join("UDC")).map_or(true, |u| u.trim().is_empty())
    })
}

/// Wait until the gadget of a test before (its node process may still be
/// exiting) has let go of the controller: one gadget per controller.
async fn wait_for_a_free_udc() {
    assert!(
        Path::new("/sys/class/udc").join(UDC).exists(),
        "no {UDC}: not in the hardware lab (modprobe dummy_hcd)"
    );
    until(
        "the device controller to be free",
        Duration::from_secs(30),
        udc_free,
    )
    .await;
}

fn lsusb(args: &[&str]) -> String {
    let out = std::process::Command::new("lsusb")
        .args(args)
        .output()
        .expect("lsusb (usbutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The "USB link down" lines a node logged so far.
fn downs(node: &mut TestNode) -> Vec<String> {
    node.stderr_now()
        .lines()
        .filter(|l| l.contains("USB link down"))
        .map(str::to_owned)
        .collect()
}

/// Pipe `n` bytes from `from` to `to`'s sink and check they all arrived,
/// in order, intact: the sink's count and running FNV-1a checksum must be
/// those of the test stream's earlier pipes into it (`before`, sizes) and
/// then this one. Returns the seconds taken.
async fn pipe_and_check(from: &mut TestNode, to: &mut TestNode, before: &[usize], n: usize) -> f64 {
    let sink = format!("sink-{}", to.name);
    let mut want = Fnv::default();
    for &size in before.iter().chain([&n]) {
        for frame in pseudo_random_frames(size) {
            want.update(&frame);
        }
    }
    let t = Instant::now();
    let sent = from.ask(&format!("pipe {sink} in {n}")).await;
    assert!(sent.starts_with(&format!("piped {n} ")), "{sent}");
    let got = to.ask(&format!("sinkwait {sink} {}", want.bytes)).await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(
        got,
        format!("sink {} {}", want.bytes, want.hash),
        "bytes or checksum differ"
    );
    secs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab (dummy_hcd, usb_f_fs): scripts/test-hwlab-usb-ble.sh"]
async fn usb_gadget_and_host_calls_pipes_unplug_replug() {
    wait_for_a_free_udc().await;
    let t0 = Instant::now();
    let node = Path::new(NODE);
    let mut dev =
        TestNode::start(node, "dev", &["--listen", GADGET, "--keepalive-ms", "500"]).await;

    // The device enumerates with its descriptors.
    until("the gadget in lsusb", Duration::from_secs(10), || {
        lsusb(&["-d", "1d6b:0104"]).contains("1d6b:0104")
    })
    .await;
    let verbose = lsusb(&["-v", "-d", "1d6b:0104"]);
    for want in [
        "oscloud node",
        "bInterfaceClass       255",
        "Transfer Type            Bulk",
    ] {
        assert!(
            verbose.contains(want),
            "lsusb -v lacks {want:?}:\n{verbose}"
        );
    }
    println!("enumerated after {:.2} s", t0.elapsed().as_secs_f64());

    let mut pc = TestNode::start(node, "pc", &["--connect", HOST, "--keepalive-ms", "500"]).await;
    pc.line_deadline = SLOW;
    assert!(
        pc.ask("wait upper-dev")
            .await
            .starts_with("found upper-dev")
    );
    assert!(dev.ask("wait upper-pc").await.starts_with("found upper-pc"));
    println!("linked after {:.2} s", t0.elapsed().as_secs_f64());
    assert_eq!(
        pc.ask("call upper-dev over usb").await,
        "reply OVER USB from dev"
    );
    assert_eq!(
        dev.ask("call upper-pc and back").await,
        "reply AND BACK from pc"
    );

    // Calls: round trips.
    let t = Instant::now();
    for i in 0..CALLS {
        let reply = pc.ask(&format!("call upper-dev n{i}")).await;
        assert_eq!(reply, format!("reply N{i} from dev"));
    }
    println!(
        "USB: {CALLS} calls host->device: {:.2} ms per call (each through the test's stdin/stdout)",
        t.elapsed().as_secs_f64() * 1000.0 / CALLS as f64
    );

    // 1 MiB each way, every byte checked.
    let up = pipe_and_check(&mut pc, &mut dev, &[], MIB).await;
    println!(
        "USB: pipe host->device 1 MiB: {up:.2} s, {:.2} MiB/s",
        1.0 / up
    );
    let down = pipe_and_check(&mut dev, &mut pc, &[], MIB).await;
    println!(
        "USB: pipe device->host 1 MiB: {down:.2} s, {:.2} MiB/s",
        1.0 / down
    );

    // Unplug: unbind the gadget from its controller, mid-transfer.
    assert_eq!(pc.ask("watch upper-dev").await, "watching upper-dev");
    pc.send("pipe sink-dev in 67108864").await;
    // Unplug once the transfer is under way: the device's sink has counted
    // 64 KiB of it (its total includes the 1 MiB piped before). Each
    // `sinkwait` polls the sink and gives up after 10 s.
    let under_way = MIB + 64 * 1024;
    let deadline = Instant::now() + SLOW;
    let progress = loop {
        let p = dev.ask(&format!("sinkwait sink-dev {under_way}")).await;
        if !p.starts_with("timeout") || Instant::now() > deadline {
            break p;
        }
    };
    assert!(
        progress.starts_with("sink "),
        "the big transfer did not get going: {progress}"
    );
    println!("unplugging with the transfer under way ({progress})");
    let (host_before, dev_before) = (downs(&mut pc), downs(&mut dev));
    let t = Instant::now();
    std::fs::write(UDC_FILE, "\n").expect("unbind the gadget");
    until(
        "both sides to log the link down",
        Duration::from_secs(30),
        || downs(&mut pc).len() > host_before.len() && downs(&mut dev).len() > dev_before.len(),
    )
    .await;
    let host_log = downs(&mut pc).pop().unwrap();
    let dev_log = downs(&mut dev).pop().unwrap();
    println!("unplugged: down in {:.2} s", t.elapsed().as_secs_f64());
    println!("  host:   {host_log}");
    println!("  device: {dev_log}");
    // Depending on timing, the host sees the device vanish, or a transfer
    // in flight fail first (EIO, on an idle machine): both say why.
    assert!(
        host_log.contains("the USB device is gone") || host_log.contains("transfer failed"),
        "{host_log}"
    );
    assert!(
        dev_log.contains("disabled") || dev_log.contains("unbound"),
        "{dev_log}"
    );
    // The big pipe ends with an error, and the peer's servers leave: two
    // lines, in either order (both must be read before the next command).
    let (mut piped, mut gone) = (None, None);
    while piped.is_none() || gone.is_none() {
        let l = pc.line().await;
        if l.starts_with("gone") {
            gone = Some(l);
        } else {
            piped = Some(l);
        }
    }
    let (piped, gone) = (piped.unwrap(), gone.unwrap());
    assert!(piped.starts_with("error"), "{piped}");
    assert!(gone.starts_with("gone upper-dev"), "{gone}");
    println!("  the pipe: {piped}");
    assert!(
        lsusb(&["-d", "1d6b:0104"]).is_empty(),
        "still enumerated after unbind"
    );

    // Re-plug: bind again; the host's dial loop links again.
    let t = Instant::now();
    std::fs::write(UDC_FILE, UDC).expect("bind the gadget again");
    let found = pc.ask("wait upper-dev").await;
    assert!(
        found.starts_with("found upper-dev"),
        "{found}\nhost's log:\n{}\ndevice's log:\n{}",
        pc.stderr_now(),
        dev.stderr_now()
    );
    println!(
        "re-plugged: linked again in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(pc.ask("call upper-dev again").await, "reply AGAIN from dev");
    assert!(dev.ask("wait upper-pc").await.starts_with("found upper-pc"));
    assert_eq!(dev.ask("call upper-pc still").await, "reply STILL from pc");
    let again = pipe_and_check(&mut dev, &mut pc, &[MIB], MIB).await;
    println!("pipe device->host 1 MiB after re-plug: {again:.2} s");

    pc.send("quit").await;
    dev.send("quit").await;
    println!("whole test {:.2} s", t0.elapsed().as_secs_f64());
}

/// The same calls and pipes between two testnodes over TCP on the guest's
/// loopback, in the same VM: the baseline the USB figures compare with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a baseline for the hardware lab's USB figures: scripts/test-hwlab-usb-ble.sh"]
async fn tcp_baseline_in_the_lab() {
    let node = Path::new(NODE);
    let mut a = TestNode::start(node, "a", &["--listen", "tcp://127.0.0.1:0"]).await;
    a.line_deadline = SLOW;
    let at = a.listening[0].clone();
    let mut b = TestNode::start(node, "b", &["--connect", &at]).await;
    b.line_deadline = SLOW;
    assert!(b.ask("wait upper-a").await.starts_with("found upper-a"));
    let t = Instant::now();
    for i in 0..CALLS {
        assert_eq!(
            b.ask(&format!("call upper-a n{i}")).await,
            format!("reply N{i} from a")
        );
    }
    println!(
        "TCP: {CALLS} calls: {:.2} ms per call (each through the test's stdin/stdout)",
        t.elapsed().as_secs_f64() * 1000.0 / CALLS as f64
    );
    let up = pipe_and_check(&mut b, &mut a, &[], MIB).await;
    println!("TCP: pipe 1 MiB: {up:.2} s, {:.2} MiB/s", 1.0 / up);
    b.send("quit").await;
    a.send("quit").await;
}

/// Both ends of the USB cable are secure nodes (Noise, `--key`, `--allow`):
/// calls and 1 MiB each way intact through the sealed session; then a host
/// whose key the device does not admit is refused, and both sides log why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab (dummy_hcd, usb_f_fs): scripts/test-hwlab-usb-ble.sh"]
async fn usb_encrypted_session_and_an_unknown_key_refused() {
    wait_for_a_free_udc().await;
    // Its own gadget name and product id, apart from the test above.
    const SECURE_GADGET: &str = "usbgadget://?udc=dummy_udc.0&vid=1d6b&pid=0105&name=oslabsec";
    const SECURE_HOST: &str = "usb://1d6b:0105";
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        let k = oscloud_core::identity::NodeKey::generate();
        let path = dir.path().join(name);
        k.save(&path).unwrap();
        (path.to_str().unwrap().to_owned(), k.public().to_string())
    };
    let (dev_key, dev_pub) = key("dev.key");
    let (pc_key, pc_pub) = key("pc.key");
    let (stranger_key, _) = key("stranger.key");
    let node = Path::new(NODE);
    let mut dev = TestNode::start(
        node,
        "dev",
        &[
            "--listen",
            SECURE_GADGET,
            "--keepalive-ms",
            "500",
            "--key",
            &dev_key,
            "--allow",
            &pc_pub,
        ],
    )
    .await;
    dev.line_deadline = SLOW;
    until("the gadget in lsusb", Duration::from_secs(10), || {
        lsusb(&["-d", "1d6b:0105"]).contains("1d6b:0105")
    })
    .await;
    let mut pc = TestNode::start(
        node,
        "pc",
        &[
            "--connect",
            SECURE_HOST,
            "--keepalive-ms",
            "500",
            "--key",
            &pc_key,
            "--allow",
            &dev_pub,
        ],
    )
    .await;
    pc.line_deadline = SLOW;
    assert!(
        pc.ask("wait upper-dev")
            .await
            .starts_with("found upper-dev")
    );
    assert!(dev.ask("wait upper-pc").await.starts_with("found upper-pc"));
    println!("secure link after {:.2} s", t0.elapsed().as_secs_f64());
    let t = Instant::now();
    for i in 0..CALLS {
        let reply = pc.ask(&format!("call upper-dev sealed{i}")).await;
        assert_eq!(reply, format!("reply SEALED{i} from dev"));
    }
    assert_eq!(
        dev.ask("call upper-pc and back").await,
        "reply AND BACK from pc"
    );
    let per_call = t.elapsed().as_secs_f64() * 1000.0 / (CALLS + 1) as f64;
    let up = pipe_and_check(&mut pc, &mut dev, &[], MIB).await;
    let down = pipe_and_check(&mut dev, &mut pc, &[], MIB).await;
    println!(
        "USB encrypted: {CALLS} calls {per_call:.2} ms per call; 1 MiB host->device {up:.2} s \
         ({:.2} MiB/s), device->host {down:.2} s ({:.2} MiB/s)",
        1.0 / up,
        1.0 / down
    );
    pc.send("quit").await;

    // A host with a key the device does not admit.
    let mut stranger = TestNode::start(
        node,
        "stranger",
        &[
            "--connect",
            SECURE_HOST,
            "--keepalive-ms",
            "500",
            "--key",
            &stranger_key,
            "--allow",
            &dev_pub,
        ],
    )
    .await;
    stranger.line_deadline = SLOW;
    let refused = dev.expect_log(&["link refused:"]).await;
    let told = stranger.expect_log(&["link refused by the peer"]).await;
    println!("  device:   {refused}");
    println!("  stranger: {told}");
    assert!(refused.contains("allow-list"), "{refused}");
    assert!(told.contains("allow-list"), "{told}");
    assert!(
        stranger.ask("wait upper-dev").await.starts_with("timeout"),
        "the stranger does not see the device's servers"
    );
    stranger.send("quit").await;
    dev.send("quit").await;
    println!("whole test {:.2} s", t0.elapsed().as_secs_f64());
}

/// A configfs gadget with the kernel's SourceSink function
/// (`usb_f_ss_lb`): its bulk OUT endpoint swallows what the host writes,
/// its bulk IN endpoint produces zeros. Removed when dropped.
struct SourceSinkGadget {
    dir: std::path::PathBuf,
}

impl SourceSinkGadget {
    fn create(vid_pid: (u16, u16)) -> Self {
        let dir = Path::new("/sys/kernel/config/usb_gadget/oslabraw").to_path_buf();
        let gadget = Self { dir: dir.clone() };
        let mkdir = |p: &str| std::fs::create_dir_all(dir.join(p)).expect(p);
        let write = |p: &str, v: &str| std::fs::write(dir.join(p), v).expect(p);
        mkdir("");
        write("idVendor", &format!("0x{:04x}", vid_pid.0));
        write("idProduct", &format!("0x{:04x}", vid_pid.1));
        mkdir("strings/0x409");
        write("strings/0x409/serialnumber", "raw");
        write("strings/0x409/manufacturer", "oscloud lab");
        write("strings/0x409/product", "raw bulk source/sink");
        mkdir("configs/c.1/strings/0x409");
        write("configs/c.1/strings/0x409/configuration", "raw");
        mkdir("functions/SourceSink.0");
        std::os::unix::fs::symlink(
            dir.join("functions/SourceSink.0"),
            dir.join("configs/c.1/SourceSink.0"),
        )
        .expect("link SourceSink into c.1");
        write("UDC", UDC);
        gadget
    }
}

impl Drop for SourceSinkGadget {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("UDC"), "\n");
        let _ = std::fs::remove_file(self.dir.join("configs/c.1/SourceSink.0"));
        for d in [
            "configs/c.1/strings/0x409",
            "configs/c.1",
            "functions/SourceSink.0",
            "strings/0x409",
            "",
        ] {
            let _ = std::fs::remove_dir(self.dir.join(d));
        }
    }
}

/// Bytes per second moved by `op` in chunks of `buf`, for at most `limit`
/// bytes or about `within`.
fn raw_rate(
    limit: usize,
    within: Duration,
    chunk: usize,
    mut op: impl FnMut() -> rusb::Result<usize>,
) -> (usize, f64) {
    let t = Instant::now();
    let mut moved = 0;
    while moved < limit && t.elapsed() < within {
        let n = op().expect("raw bulk transfer");
        assert!(n > 0 && n <= chunk, "transferred {n}");
        moved += n;
    }
    (moved, t.elapsed().as_secs_f64())
}

/// The ceiling the USB figures compare with, in the same run: raw bulk
/// transfers through libusb and `dummy_hcd` to the kernel's own
/// SourceSink gadget function, 16 KiB at a time (the transport's largest
/// transfer), no oscloud and no user-space gadget in the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hardware lab (dummy_hcd, usb_f_ss_lb): scripts/test-hwlab-usb-ble.sh"]
async fn usb_raw_bulk_ceiling() {
    wait_for_a_free_udc().await;
    const IDS: (u16, u16) = (0x1d6b, 0x0106);
    let _gadget = SourceSinkGadget::create(IDS);
    until(
        "the source/sink gadget in lsusb",
        Duration::from_secs(10),
        || lsusb(&["-d", "1d6b:0106"]).contains("1d6b:0106"),
    )
    .await;
    let (up, down) = tokio::task::spawn_blocking(|| {
        let ctx = rusb::Context::new().expect("libusb");
        let handle = ctx
            .open_device_with_vid_pid(IDS.0, IDS.1)
            .expect("open the source/sink device");
        let config = handle.device().active_config_descriptor().expect("config");
        let (mut ep_in, mut ep_out) = (None, None);
        for iface in config.interfaces().filter(|i| i.number() == 0) {
            for alt in iface.descriptors().filter(|a| a.setting_number() == 0) {
                for ep in alt.endpoint_descriptors() {
                    if ep.transfer_type() == rusb::TransferType::Bulk {
                        match ep.direction() {
                            rusb::Direction::In => ep_in = Some(ep.address()),
                            rusb::Direction::Out => ep_out = Some(ep.address()),
                        }
                    }
                }
            }
        }
        let (ep_in, ep_out) = (ep_in.expect("bulk IN"), ep_out.expect("bulk OUT"));
        handle.claim_interface(0).expect("claim interface 0");
        const CHUNK: usize = 16 * 1024;
        const LIMIT: usize = 64 * MIB;
        let within = Duration::from_secs(3);
        let timeout = Duration::from_secs(5);
        let zeros = vec![0u8; CHUNK];
        let up = raw_rate(LIMIT, within, CHUNK, || {
            handle.write_bulk(ep_out, &zeros, timeout)
        });
        let mut buf = vec![0u8; CHUNK];
        let down = raw_rate(LIMIT, within, CHUNK, || {
            handle.read_bulk(ep_in, &mut buf, timeout)
        });
        let _ = handle.release_interface(0);
        (up, down)
    })
    .await
    .unwrap();
    let rate = |(bytes, secs): (usize, f64)| bytes as f64 / MIB as f64 / secs;
    println!(
        "USB raw bulk (libusb -> dummy_hcd -> kernel SourceSink, 16 KiB transfers): \
         host->device {:.1} MiB in {:.2} s, {:.2} MiB/s; device->host {:.1} MiB in {:.2} s, {:.2} MiB/s",
        up.0 as f64 / MIB as f64,
        up.1,
        rate(up),
        down.0 as f64 / MIB as f64,
        down.1,
        rate(down)
    );
    assert!(up.0 >= MIB && down.0 >= MIB, "at least 1 MiB each way");
}
