//! The host side: a USB device with a bulk IN/OUT endpoint pair, through
//! libusb (`rusb`, built from source).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, LinkKind, Listener, Transport};
use rusb::{Context, DeviceHandle, Direction, TransferType, UsbContext};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::HOST_SCHEME;
use crate::chan::{self, ChannelReader, INCOMING_DEPTH, TRANSFER};
use crate::settings::UsbDeviceFilter;

/// How long one transfer may wait before the thread checks whether its
/// link is still wanted. A transfer cut short keeps what it moved (libusb
/// reports it), so nothing is lost to this.
const POLL: Duration = Duration::from_millis(500);
/// How long a dial waits for the device to come back after resetting it,
/// and for its interface to be free.
const SETTLE: Duration = Duration::from_secs(3);

/// USB links from the host side (`usb://VID:PID?interface=0`).
///
/// Dialling finds the device, resets it (so that both ends start a fresh
/// stream, whatever the last link left in flight), claims the interface
/// (detaching a kernel driver if one holds it) and moves bytes over its
/// first bulk IN and bulk OUT endpoints. There is nothing to listen on: the
/// device side listens (see [`UsbGadgetTransport`](crate::UsbGadgetTransport)).
#[derive(Debug, Clone, Copy, Default)]
pub struct UsbHostTransport;

fn failed(addr: &Address, reason: impl Into<String>) -> Error {
    Error::LinkFailed {
        address: addr.to_string(),
        reason: reason.into(),
    }
}

/// The device's endpoints for one interface.
struct Endpoints {
    bulk_in: u8,
    bulk_out: u8,
}

fn find_device(
    ctx: &Context,
    addr: &Address,
    filter: &UsbDeviceFilter,
) -> Result<(DeviceHandle<Context>, Endpoints, String), Error> {
    let devices = ctx
        .devices()
        .map_err(|e| failed(addr, format!("cannot list USB devices: {e}")))?;
    let mut seen = 0;
    for device in devices.iter() {
        let Ok(desc) = device.device_descriptor() else {
            continue;
        };
        if desc.vendor_id() != filter.vid || desc.product_id() != filter.pid {
            continue;
        }
        if filter.bus.is_some_and(|b| b != device.bus_number())
            || filter.address.is_some_and(|a| a != device.address())
        {
            continue;
        }
        seen += 1;
        let handle = device.open().map_err(|e| match e {
            rusb::Error::Access => failed(
                addr,
                format!(
                    "permission denied opening /dev/bus/usb/{:03}/{:03}: run as root or add a udev rule for {:04x}:{:04x}",
                    device.bus_number(),
                    device.address(),
                    filter.vid,
                    filter.pid
                ),
            ),
            e => failed(addr, format!("cannot open the device: {e}")),
        })?;
        if let Some(want) = &filter.serial {
            let got = handle
                .read_serial_number_string_ascii(&desc)
                .unwrap_or_default();
            if &got != want {
                continue;
            }
        }
        let config = device
            .active_config_descriptor()
            .map_err(|e| failed(addr, format!("cannot read the configuration: {e}")))?;
        let mut bulk_in = None;
        let mut bulk_out = None;
        for iface in config.interfaces() {
            for setting in iface.descriptors() {
                if setting.interface_number() != filter.interface || setting.setting_number() != 0 {
                    continue;
                }
                for ep in setting.endpoint_descriptors() {
                    if ep.transfer_type() != TransferType::Bulk {
                        continue;
                    }
                    match ep.direction() {
                        Direction::In => bulk_in = bulk_in.or(Some(ep.address())),
                        Direction::Out => bulk_out = bulk_out.or(Some(ep.address())),
                    }
                }
            }
        }
        let (Some(bulk_in), Some(bulk_out)) = (bulk_in, bulk_out) else {
            return Err(failed(
                addr,
                format!(
                    "interface {} of {filter} has no bulk IN and bulk OUT endpoint",
                    filter.interface
                ),
            ));
        };
        let name = format!(
            "usb://{:04x}:{:04x}@{}.{}",
            filter.vid,
            filter.pid,
            device.bus_number(),
            device.address()
        );
        return Ok((handle, Endpoints { bulk_in, bulk_out }, name));
    }
    let reason = if seen > 0 {
        format!(
            "no USB device {filter} (a device {:04x}:{:04x} is attached, but its serial number differs)",
            filter.vid, filter.pid
        )
    } else {
        format!("no USB device {filter} is attached")
    };
    Err(Error::Unreachable {
        address: addr.to_string(),
        reason,
    })
}

/// Find, reset and claim the device (blocking).
fn open(
    addr: &Address,
    filter: &UsbDeviceFilter,
) -> Result<(Arc<DeviceHandle<Context>>, Endpoints, String), Error> {
    // A fresh context lists the devices as they are now (no hotplug
    // thread needed to see a device that came back).
    let ctx = Context::new().map_err(|e| failed(addr, format!("cannot start libusb: {e}")))?;
    let (handle, _, _) = find_device(&ctx, addr, filter)?;
    match handle.reset() {
        Ok(()) => {}
        // The device came back as a new one: find it again below.
        Err(rusb::Error::NotFound | rusb::Error::NoDevice) => {}
        Err(e) => return Err(failed(addr, format!("cannot reset the device: {e}"))),
    }
    drop(handle);
    let deadline = Instant::now() + SETTLE;
    loop {
        let attempt = find_device(&ctx, addr, filter).and_then(|(handle, eps, name)| {
            // Not supported everywhere; where it is not, there is no
            // kernel driver to detach either.
            let _ = handle.set_auto_detach_kernel_driver(true);
            handle
                .claim_interface(filter.interface)
                .map_err(|e| match e {
                    rusb::Error::Busy => failed(
                        addr,
                        format!(
                            "interface {} of {filter} is claimed by another program",
                            filter.interface
                        ),
                    ),
                    e => failed(
                        addr,
                        format!("cannot claim interface {}: {e}", filter.interface),
                    ),
                })?;
            Ok((Arc::new(handle), eps, name))
        });
        match attempt {
            Ok(found) => return Ok(found),
            Err(e) if Instant::now() >= deadline => return Err(e),
            // Re-enumerating after the reset, or an older link of ours
            // still lets go of the interface.
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Why a transfer error ends the link.
fn reason(e: rusb::Error, what: &str) -> String {
    match e {
        rusb::Error::NoDevice => {
            "the USB device is gone (unplugged, reset, or its gadget unbound)".into()
        }
        rusb::Error::Pipe => format!("the device stalled its {what} endpoint"),
        e => format!("USB {what} transfer failed: {e}"),
    }
}

/// Marks the link's half as dropped, so its thread stops.
#[derive(Debug)]
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The read half: the channel from the reading thread.
#[derive(Debug)]
struct HostReader {
    inner: ChannelReader,
    _dropped: Dropped,
}

impl tokio::io::AsyncRead for HostReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

fn read_thread(
    handle: Arc<DeviceHandle<Context>>,
    ep: u8,
    tx: mpsc::Sender<chan::Incoming>,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; TRANSFER];
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if down.load(Ordering::Relaxed) {
            let _ = tx.blocking_send(Err("the USB link's writer failed".into()));
            return;
        }
        match handle.read_bulk(ep, &mut buf, POLL) {
            Ok(0) => {}
            Ok(n) => {
                if tx
                    .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    return;
                }
            }
            Err(rusb::Error::Timeout | rusb::Error::Interrupted) => {}
            Err(e) => {
                let why = reason(e, "IN");
                info!("USB link down: {why}");
                down.store(true, Ordering::Relaxed);
                let _ = tx.blocking_send(Err(why));
                return;
            }
        }
    }
}

fn write_thread(
    rt: Handle,
    handle: Arc<DeviceHandle<Context>>,
    ep: u8,
    mut from_link: DuplexStream,
    down: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; TRANSFER];
    loop {
        if down.load(Ordering::Relaxed) {
            return;
        }
        let n = match rt
            .block_on(async { tokio::time::timeout(POLL, from_link.read(&mut buf)).await })
        {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => {
                // The link is gone: let the reader go too.
                down.store(true, Ordering::Relaxed);
                return;
            }
            Ok(Ok(n)) => n,
        };
        let mut at = 0;
        while at < n {
            if down.load(Ordering::Relaxed) {
                return;
            }
            let len = chan::next_transfer(n - at);
            match handle.write_bulk(ep, &buf[at..at + len], POLL) {
                Ok(k) => at += k,
                Err(rusb::Error::Timeout | rusb::Error::Interrupted) => {}
                Err(e) => {
                    info!("USB link down: {}", reason(e, "OUT"));
                    down.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl Transport for UsbHostTransport {
    fn scheme(&self) -> &'static str {
        HOST_SCHEME
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        let filter = UsbDeviceFilter::from_address(addr)?;
        let a = addr.clone();
        let (handle, eps, remote) = tokio::task::spawn_blocking(move || open(&a, &filter))
            .await
            .map_err(|e| failed(addr, format!("the USB task failed: {e}")))??;
        debug!(%addr, %remote, "USB device claimed");
        let rt = Handle::current();
        let (tx, rx) = mpsc::channel(INCOMING_DEPTH);
        let (writer, from_link) = tokio::io::duplex(2 * TRANSFER);
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        {
            let (handle, stop, down) = (handle.clone(), stop.clone(), down.clone());
            thread::Builder::new()
                .name("usb-host-in".into())
                .spawn(move || read_thread(handle, eps.bulk_in, tx, stop, down))
                .map_err(|e| failed(addr, format!("cannot start a thread: {e}")))?;
        }
        thread::Builder::new()
            .name("usb-host-out".into())
            .spawn(move || write_thread(rt, handle, eps.bulk_out, from_link, down))
            .map_err(|e| failed(addr, format!("cannot start a thread: {e}")))?;
        let reader = HostReader {
            inner: ChannelReader::new(rx),
            _dropped: Dropped(stop),
        };
        Ok(Link::stream(
            LinkKind::ReliableStream,
            format!("usb host for {remote}"),
            remote,
            reader,
            writer,
        ))
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        Err(Error::InvalidAddress {
            input: addr.to_string(),
            reason: "the USB host side dials its device (connect); the device side listens on usbgadget://".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that is not there (no such ids anywhere) is unreachable, or
    /// libusb itself says it cannot work here (no /dev/bus/usb): either
    /// way an error that says so, never a hang.
    #[tokio::test]
    async fn a_missing_device_is_reported() {
        let err = UsbHostTransport
            .connect(&"usb://?vid=f0f0&pid=0f0f".parse().unwrap())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no USB device f0f0:0f0f is attached") || text.contains("libusb"),
            "{text}"
        );
        let err = UsbHostTransport
            .listen(&"usb://1d6b:0104".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("dials its device"), "{err}");
    }
}
