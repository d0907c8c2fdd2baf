//! The device side: this Linux machine as a USB peripheral, through a
//! configfs gadget with one FunctionFS function (`usb_f_fs`).
//!
//! The gadget has one configuration with one vendor-specific interface and
//! two bulk endpoints: `ep1` IN (to the host) and `ep2` OUT (from the host).
//! Endpoint 0 reports the function's life: ENABLE when the host configures
//! the device (plugged in, or reset by a dialling host), DISABLE when it
//! goes away (unplugged, reset) and UNBIND when the gadget leaves its
//! device controller. Each ENABLE starts a new link; DISABLE and UNBIND end
//! it, with that reason.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, LinkKind, Listener, Transport};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::GADGET_SCHEME;
use crate::chan::{self, ChannelReader, INCOMING_DEPTH, TRANSFER};
use crate::settings::GadgetSettings;

/// Where configfs is mounted.
const CONFIGFS: &str = "/sys/kernel/config";
/// Where the device controllers are listed.
const UDC_CLASS: &str = "/sys/class/udc";

/// USB links from the device side (`usbgadget://?udc=...`): Linux only.
///
/// [`listen`](Transport::listen) creates the gadget in configfs, mounts its
/// FunctionFS, writes the descriptors and binds the gadget to the device
/// controller; the listener yields a link each time a host configures the
/// device. Dropping the listener unbinds and removes the gadget. Needs
/// root, configfs, and the `libcomposite` and `usb_f_fs` modules.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsbGadgetTransport;

fn failed(addr: &Address, reason: impl Into<String>) -> Error {
    Error::LinkFailed {
        address: addr.to_string(),
        reason: reason.into(),
    }
}

/// FunctionFS constants (linux/usb/functionfs.h, linux/usb/ch9.h).
mod ffs {
    pub(super) const DESCRIPTORS_MAGIC_V2: u32 = 3;
    pub(super) const STRINGS_MAGIC: u32 = 2;
    pub(super) const HAS_FS_DESC: u32 = 1;
    pub(super) const HAS_HS_DESC: u32 = 2;
    pub(super) const HAS_SS_DESC: u32 = 4;
    pub(super) const EVENT_SIZE: usize = 12;
    pub(super) const BIND: u8 = 0;
    pub(super) const UNBIND: u8 = 1;
    pub(super) const ENABLE: u8 = 2;
    pub(super) const DISABLE: u8 = 3;
    pub(super) const SETUP: u8 = 4;
    pub(super) const SUSPEND: u8 = 5;
    pub(super) const RESUME: u8 = 6;
}

/// The FunctionFS descriptor blob: one vendor-specific interface with a bulk
/// IN and a bulk OUT endpoint, at full, high and super speed.
pub(crate) fn descriptors() -> Vec<u8> {
    fn interface(out: &mut Vec<u8>) {
        // bLength, INTERFACE, number, alt, 2 endpoints, vendor class, 0, 0, iInterface 1
        out.extend_from_slice(&[9, 4, 0, 0, 2, 0xff, 0, 0, 1]);
    }
    fn endpoint(out: &mut Vec<u8>, address: u8, max_packet: u16) {
        let [lo, hi] = max_packet.to_le_bytes();
        // bLength, ENDPOINT, address, bulk, wMaxPacketSize, bInterval
        out.extend_from_slice(&[7, 5, address, 2, lo, hi, 0]);
    }
    fn ss_companion(out: &mut Vec<u8>) {
        // bLength, SS_ENDPOINT_COMP, bMaxBurst, bmAttributes, wBytesPerInterval
        out.extend_from_slice(&[6, 0x30, 0, 0, 0, 0]);
    }
    let mut body = Vec::new();
    for (max_packet, ss) in [(64u16, false), (512, false), (1024, true)] {
        interface(&mut body);
        endpoint(&mut body, 0x81, max_packet);
        if ss {
            ss_companion(&mut body);
        }
        endpoint(&mut body, 0x02, max_packet);
        if ss {
            ss_companion(&mut body);
        }
    }
    let counts: [u32; 3] = [3, 3, 5];
    let len = 12 + 4 * counts.len() + body.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&ffs::DESCRIPTORS_MAGIC_V2.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&(ffs::HAS_FS_DESC | ffs::HAS_HS_DESC | ffs::HAS_SS_DESC).to_le_bytes());
    for c in counts {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.extend_from_slice(&body);
    out
}

/// The FunctionFS strings blob: the interface name, in US English.
pub(crate) fn strings(interface: &str) -> Vec<u8> {
    let len = 16 + 2 + interface.len() + 1;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&ffs::STRINGS_MAGIC.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // strings per language
    out.extend_from_slice(&1u32.to_le_bytes()); // languages
    out.extend_from_slice(&0x0409u16.to_le_bytes());
    out.extend_from_slice(interface.as_bytes());
    out.push(0);
    out
}

/// What endpoint 0 has said so far.
#[derive(Debug, Default)]
struct State {
    /// Bumped by every ENABLE: the link of that generation is current.
    generation: u64,
    /// Whether the host has the function enabled now.
    enabled: bool,
    /// Where the OUT endpoint's bytes go: the current link's reader.
    sink: Option<mpsc::Sender<chan::Incoming>>,
    /// The listener is gone.
    closed: bool,
}

/// One gadget, shared by its listener and its threads.
#[derive(Debug)]
struct Gadget {
    settings: GadgetSettings,
    dir: PathBuf,
    mount: PathBuf,
    udc: String,
    /// The IN and OUT endpoint files (`None` once closed).
    ep_in: Option<File>,
    ep_out: Option<File>,
    state: Mutex<State>,
    changed: Condvar,
}

impl Drop for Gadget {
    fn drop(&mut self) {
        // Every thread is gone: close the endpoints, then the rest can go.
        self.ep_in.take();
        self.ep_out.take();
        remove_gadget(&self.dir, &self.settings.name, &self.mount);
    }
}

impl Gadget {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leave the device controller: the host sees an unplug.
    fn unbind(&self) {
        let _ = fs::write(self.dir.join("UDC"), "\n");
    }
}

fn write_attr(addr: &Address, path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value)
        .map_err(|e| failed(addr, format!("cannot write {}: {e}", path.display())))
}

fn mkdir(addr: &Address, path: &Path, hint: &str) -> Result<(), Error> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(failed(
            addr,
            format!("cannot create {}: {e}{hint}", path.display()),
        )),
    }
}

/// Remove what configfs and the mount hold of a gadget, as far as possible.
fn remove_gadget(dir: &Path, name: &str, mount: &Path) {
    let _ = fs::write(dir.join("UDC"), "\n");
    let _ = rustix::mount::unmount(mount, rustix::mount::UnmountFlags::DETACH);
    let _ = fs::remove_dir(mount);
    let _ = fs::remove_file(dir.join(format!("configs/c.1/ffs.{name}")));
    for d in [
        "configs/c.1/strings/0x409".to_owned(),
        "configs/c.1".to_owned(),
        format!("functions/ffs.{name}"),
        "strings/0x409".to_owned(),
    ] {
        let _ = fs::remove_dir(dir.join(d));
    }
    let _ = fs::remove_dir(dir);
}

/// The device controller to bind to.
fn pick_udc(addr: &Address, settings: &GadgetSettings) -> Result<String, Error> {
    let names: Vec<String> = fs::read_dir(UDC_CLASS)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    match &settings.udc {
        Some(u) if names.contains(u) => Ok(u.clone()),
        Some(u) => Err(Error::Unreachable {
            address: addr.to_string(),
            reason: format!(
                "no USB device controller {u:?} in {UDC_CLASS} (there: {})",
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ),
        }),
        None => names.into_iter().min().ok_or_else(|| Error::Unreachable {
            address: addr.to_string(),
            reason: format!(
                "no USB device controller in {UDC_CLASS}: this machine has no USB device port (for tests: modprobe dummy_hcd)"
            ),
        }),
    }
}

/// Create, describe and bind the gadget (blocking).
fn create(addr: &Address, settings: GadgetSettings) -> Result<(Arc<Gadget>, File), Error> {
    // No controller, nothing to do: say so before touching configfs.
    let udc = pick_udc(addr, &settings)?;
    let gadgets = Path::new(CONFIGFS).join("usb_gadget");
    if !gadgets.is_dir() {
        // configfs may just not be mounted yet.
        let _ = rustix::mount::mount(
            "none",
            CONFIGFS,
            "configfs",
            rustix::mount::MountFlags::empty(),
            None::<&std::ffi::CStr>,
        );
        if !gadgets.is_dir() {
            return Err(Error::Unreachable {
                address: addr.to_string(),
                reason: format!(
                    "{} does not exist: mount configfs and load libcomposite (modprobe libcomposite usb_f_fs)",
                    gadgets.display()
                ),
            });
        }
    }
    let name = settings.name.clone();
    let dir = gadgets.join(&name);
    let mount = std::env::temp_dir().join(format!("oscloud-ffs-{name}"));
    if dir.exists() {
        let bound = fs::read_to_string(dir.join("UDC")).unwrap_or_default();
        if !bound.trim().is_empty() {
            return Err(Error::AddressInUse {
                address: addr.to_string(),
            });
        }
        // Left over by a process that died: start afresh.
        remove_gadget(&dir, &name, &mount);
    }
    let result = (|| {
        mkdir(addr, &dir, " (are you root?)")?;
        write_attr(
            addr,
            &dir.join("idVendor"),
            &format!("0x{:04x}", settings.vid),
        )?;
        write_attr(
            addr,
            &dir.join("idProduct"),
            &format!("0x{:04x}", settings.pid),
        )?;
        write_attr(addr, &dir.join("bcdDevice"), "0x0100")?;
        write_attr(addr, &dir.join("bcdUSB"), "0x0200")?;
        let strings_dir = dir.join("strings/0x409");
        mkdir(addr, &strings_dir, "")?;
        write_attr(addr, &strings_dir.join("serialnumber"), &settings.serial)?;
        write_attr(
            addr,
            &strings_dir.join("manufacturer"),
            &settings.manufacturer,
        )?;
        write_attr(addr, &strings_dir.join("product"), &settings.product)?;
        let config = dir.join("configs/c.1");
        mkdir(addr, &config, "")?;
        mkdir(addr, &config.join("strings/0x409"), "")?;
        write_attr(addr, &config.join("strings/0x409/configuration"), "oscloud")?;
        write_attr(addr, &config.join("MaxPower"), "100")?;
        let function = dir.join(format!("functions/ffs.{name}"));
        mkdir(addr, &function, " (is usb_f_fs loaded? modprobe usb_f_fs)")?;
        let link = config.join(format!("ffs.{name}"));
        if !link.exists() {
            std::os::unix::fs::symlink(&function, &link)
                .map_err(|e| failed(addr, format!("cannot link the function into c.1: {e}")))?;
        }
        mkdir(addr, &mount, "")?;
        rustix::mount::mount(
            name.as_str(),
            &mount,
            "functionfs",
            rustix::mount::MountFlags::empty(),
            None::<&std::ffi::CStr>,
        )
        .map_err(|e| failed(addr, format!("cannot mount functionfs {name:?}: {e}")))?;
        let mut ep0 = OpenOptions::new()
            .read(true)
            .write(true)
            .open(mount.join("ep0"))
            .map_err(|e| failed(addr, format!("cannot open ep0: {e}")))?;
        ep0.write_all(&descriptors())
            .map_err(|e| failed(addr, format!("FunctionFS refused the descriptors: {e}")))?;
        ep0.write_all(&strings(&settings.product))
            .map_err(|e| failed(addr, format!("FunctionFS refused the strings: {e}")))?;
        let ep_in = OpenOptions::new()
            .write(true)
            .open(mount.join("ep1"))
            .map_err(|e| failed(addr, format!("cannot open ep1: {e}")))?;
        let ep_out = OpenOptions::new()
            .read(true)
            .open(mount.join("ep2"))
            .map_err(|e| failed(addr, format!("cannot open ep2: {e}")))?;
        Ok((ep0, ep_in, ep_out))
    })();
    let (ep0, ep_in, ep_out) = match result {
        Ok(files) => files,
        Err(e) => {
            remove_gadget(&dir, &name, &mount);
            return Err(e);
        }
    };
    let gadget = Arc::new(Gadget {
        settings,
        dir,
        mount,
        udc,
        ep_in: Some(ep_in),
        ep_out: Some(ep_out),
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    });
    Ok((gadget, ep0))
}

/// A new link for the listener: its generation and its incoming bytes.
type NewLink = (u64, mpsc::Receiver<chan::Incoming>);

/// Follow endpoint 0's events until the gadget is gone.
fn ep0_thread(gadget: Arc<Gadget>, mut ep0: File, links: mpsc::UnboundedSender<NewLink>) {
    follow_ep0(&gadget, &mut ep0, &links);
    // Close ep0 before letting go of the gadget, whose last owner removes it.
    drop(ep0);
    drop(gadget);
}

fn follow_ep0(gadget: &Gadget, ep0: &mut File, links: &mpsc::UnboundedSender<NewLink>) {
    let mut buf = [0u8; 4 * ffs::EVENT_SIZE];
    loop {
        let n = match ep0.read(&mut buf) {
            Ok(n) => n,
            // A stalled setup request, or a signal: go on.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(51 /* EL2HLT */) | Some(4 /* EINTR */)
                ) =>
            {
                continue;
            }
            Err(e) => {
                if !gadget.state().closed {
                    warn!("USB gadget: reading ep0 failed: {e}");
                }
                end_link(gadget, "the USB gadget's control endpoint failed");
                return;
            }
        };
        for event in buf[..n].chunks_exact(ffs::EVENT_SIZE) {
            match event[8] {
                ffs::BIND => debug!("USB gadget bound"),
                ffs::ENABLE => {
                    let (tx, rx) = mpsc::channel(INCOMING_DEPTH);
                    let generation = {
                        let mut s = gadget.state();
                        if let Some(old) = s.sink.take() {
                            let _ = old.try_send(Err("the USB host reset the device".into()));
                        }
                        s.generation += 1;
                        s.enabled = true;
                        s.sink = Some(tx);
                        s.generation
                    };
                    gadget.changed.notify_all();
                    debug!(generation, "USB function enabled by the host");
                    let _ = links.send((generation, rx));
                }
                ffs::DISABLE => {
                    end_link(
                        gadget,
                        "the USB host disabled the device (unplugged, reset, or gadget unbound)",
                    );
                }
                ffs::UNBIND => {
                    end_link(
                        gadget,
                        "the USB gadget was unbound from its device controller",
                    );
                    if gadget.state().closed {
                        return;
                    }
                }
                ffs::SETUP => {
                    // No control requests of our own: stall them. An IN
                    // request is stalled by reading ep0 (the next read),
                    // an OUT one by writing it.
                    if event[0] & 0x80 == 0 {
                        let _ = ep0.write(&[]);
                    }
                }
                ffs::SUSPEND | ffs::RESUME => {}
                other => debug!(other, "unknown FunctionFS event"),
            }
        }
    }
}

/// The current link is over, for `why`.
fn end_link(gadget: &Gadget, why: &str) {
    let had = {
        let mut s = gadget.state();
        s.enabled = false;
        s.sink.take()
    };
    if let Some(sink) = had {
        info!("USB link down: {why}");
        let _ = sink.try_send(Err(why.to_owned()));
    }
    gadget.changed.notify_all();
}

/// Read the OUT endpoint for as long as the gadget lives, handing the bytes
/// to whichever link is current when they arrive.
fn out_thread(gadget: Arc<Gadget>) {
    let mut buf = vec![0u8; TRANSFER];
    loop {
        {
            let mut s = gadget.state();
            while !s.enabled && !s.closed {
                s = gadget.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.closed {
                return;
            }
        }
        let Some(mut ep_out) = gadget.ep_out.as_ref() else {
            return;
        };
        match ep_out.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                let sink = gadget.state().sink.clone();
                if let Some(sink) = sink {
                    // A full channel waits for the link; a gone one drops
                    // bytes nobody can use any more.
                    let _ = sink.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])));
                }
            }
            Err(e) => {
                // Disabled under the read (ESHUTDOWN): wait for endpoint 0
                // to say so, or for the next enable.
                let s = gadget.state();
                if s.closed {
                    return;
                }
                debug!("USB gadget: OUT endpoint: {e}");
                let _ = gadget
                    .changed
                    .wait_timeout(s, Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

/// Write one link's bytes to the IN endpoint, until the link or its
/// generation ends.
fn in_thread(rt: Handle, gadget: Arc<Gadget>, generation: u64, mut from_link: DuplexStream) {
    let mut buf = vec![0u8; TRANSFER];
    let current = |g: &Gadget| {
        let s = g.state();
        s.generation == generation && s.enabled && !s.closed
    };
    loop {
        let n = match rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(500), from_link.read(&mut buf)).await
        }) {
            Err(_) if current(&gadget) => continue,
            Err(_) | Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        let mut at = 0;
        while at < n {
            if !current(&gadget) {
                return;
            }
            let len = chan::next_transfer(n - at);
            let Some(mut ep_in) = gadget.ep_in.as_ref() else {
                return;
            };
            match ep_in.write(&buf[at..at + len]) {
                Ok(k) => at += k,
                Err(e) => {
                    debug!("USB gadget: IN endpoint: {e}");
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl Transport for UsbGadgetTransport {
    fn scheme(&self) -> &'static str {
        GADGET_SCHEME
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        GadgetSettings::from_address(addr)?;
        Err(Error::InvalidAddress {
            input: addr.to_string(),
            reason: "a USB gadget waits for its host: listen on usbgadget:// and dial it from the host with usb://VID:PID".into(),
        })
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        let settings = GadgetSettings::from_address(addr)?;
        let a = addr.clone();
        let (gadget, ep0) = tokio::task::spawn_blocking(move || create(&a, settings))
            .await
            .map_err(|e| failed(addr, format!("the USB task failed: {e}")))??;
        let (links_tx, links) = mpsc::unbounded_channel();
        let start = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map(|_| ())
                .map_err(|e| failed(addr, format!("cannot start a thread: {e}")))
        };
        let g = gadget.clone();
        let started = start(
            "usb-gadget-ep0",
            Box::new(move || ep0_thread(g, ep0, links_tx)),
        )
        .and_then(|()| {
            let g = gadget.clone();
            start("usb-gadget-out", Box::new(move || out_thread(g)))
        })
        .and_then(|()| {
            write_attr(addr, &gadget.dir.join("UDC"), &gadget.udc).map_err(|e| {
                failed(
                    addr,
                    format!(
                        "cannot bind the gadget to {}: {e} (is another gadget bound to it?)",
                        gadget.udc
                    ),
                )
            })
        });
        let listener = GadgetLinks {
            gadget,
            links,
            address: addr.clone(),
        };
        started?;
        info!(%addr, udc = %listener.gadget.udc, "USB gadget bound");
        Ok(Box::new(listener))
    }
}

/// The links of one gadget: one per time a host enables it.
struct GadgetLinks {
    gadget: Arc<Gadget>,
    links: mpsc::UnboundedReceiver<NewLink>,
    address: Address,
}

impl Drop for GadgetLinks {
    fn drop(&mut self) {
        self.gadget.state().closed = true;
        self.gadget.changed.notify_all();
        self.gadget.unbind();
        remove_gadget(
            &self.gadget.dir,
            &self.gadget.settings.name,
            &self.gadget.mount,
        );
    }
}

#[async_trait]
impl Listener for GadgetLinks {
    async fn accept(&mut self) -> Result<Link, Error> {
        loop {
            let Some((generation, rx)) = self.links.recv().await else {
                return Err(failed(
                    &self.address,
                    "the USB gadget's control endpoint is closed",
                ));
            };
            // Skip links whose host went away before we got to them.
            if self.gadget.state().generation != generation {
                continue;
            }
            let (writer, from_link) = tokio::io::duplex(2 * TRANSFER);
            let (rt, g) = (Handle::current(), self.gadget.clone());
            thread::Builder::new()
                .name("usb-gadget-in".into())
                .spawn(move || in_thread(rt, g, generation, from_link))
                .map_err(|e| failed(&self.address, format!("cannot start a thread: {e}")))?;
            let local = format!(
                "usbgadget://{}@{} ({:04x}:{:04x})",
                self.gadget.settings.name,
                self.gadget.udc,
                self.gadget.settings.vid,
                self.gadget.settings.pid
            );
            return Ok(Link::stream(
                LinkKind::ReliableStream,
                local,
                "usb host",
                ChannelReader::new(rx),
                writer,
            ));
        }
    }

    fn local_address(&self) -> Address {
        self.address.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a USB device controller (the build machines),
    /// listening fails at once and says why; dialling is refused.
    #[tokio::test]
    async fn without_a_controller_the_error_says_why() {
        let has_udc = fs::read_dir(UDC_CLASS).is_ok_and(|mut d| d.next().is_some());
        if !has_udc {
            let err = UsbGadgetTransport
                .listen(&"usbgadget://?name=osctest".parse().unwrap())
                .await
                .err()
                .unwrap();
            assert!(matches!(err, Error::Unreachable { .. }), "{err}");
            assert!(
                err.to_string().contains("no USB device controller"),
                "{err}"
            );
        }
        let err = UsbGadgetTransport
            .listen(&"usbgadget://?udc=no_such_udc.7".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("no_such_udc.7"), "{err}");
        let err = UsbGadgetTransport
            .connect(&"usbgadget://".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("waits for its host"), "{err}");
    }

    #[test]
    fn descriptor_blob_is_well_formed() {
        let d = descriptors();
        let word = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        assert_eq!(word(0), 3);
        assert_eq!(word(4) as usize, d.len());
        assert_eq!(word(8), 7);
        assert_eq!((word(12), word(16), word(20)), (3, 3, 5));
        // Walk the descriptors by their bLength: 3 + 3 + 5 of them.
        let mut at = 24;
        let mut count = 0;
        while at < d.len() {
            assert!(d[at] >= 2, "descriptor at {at}");
            at += d[at] as usize;
            count += 1;
        }
        assert_eq!((at, count), (d.len(), 11));
    }

    #[test]
    fn strings_blob_is_well_formed() {
        let s = strings("oscloud node");
        assert_eq!(
            u32::from_le_bytes([s[4], s[5], s[6], s[7]]) as usize,
            s.len()
        );
        assert_eq!(&s[16..18], &[0x09, 0x04]);
        assert_eq!(s.last(), Some(&0));
    }
}
