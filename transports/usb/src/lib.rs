//! # oscloud-transport-usb: USB links for oscloud nodes
//!
//! Both ends of a USB cable:
//!
//! - **Host side** ([`UsbHostTransport`], `usb://VID:PID?interface=0`): a PC
//!   dials a device that has a bulk IN and a bulk OUT endpoint on the given
//!   interface, through libusb ([`rusb`], built from source: no system
//!   library needed). Runs wherever libusb does (Linux, macOS, Windows).
//! - **Device side** ([`UsbGadgetTransport`], `usbgadget://?udc=...`): a Linux
//!   board with a USB device (OTG) port, such as a Raspberry Pi Zero, becomes
//!   a USB peripheral through a configfs gadget with one FunctionFS function.
//!   Linux only; needs root, configfs and the `libcomposite` and `usb_f_fs`
//!   modules.
//!
//! ## Addresses
//!
//! `usb://1d6b:0104?interface=0&serial=...&bus=1&address=4` or
//! `usb://0525:a4a1` (ids of 1 to 4 hex digits, optionally with `0x`):
//!
//! | key | meaning | default |
//! |-----|---------|---------|
//! | host, `vid` | vendor id | required |
//! | `:PID`, `pid` | product id | required |
//! | `interface` | the interface with the bulk pair | `0` |
//! | `serial` | only the device with this serial number | any |
//! | `bus`, `address` | only the device at this bus / address | any |
//!
//! Each id is given once, in the authority or as a parameter
//! (`usb://0525?pid=a4a1` is the same device as `usb://0525:a4a1`). A bad
//! id is an [`InvalidAddress`](oscloud_core::Error::InvalidAddress) error
//! that says which and why (`vendor id="zz" is not valid: expected 1 to 4
//! hex digits, e.g. 1d6b`; `usb://0525:a4g1` fails to parse with `bad port
//! "a4g1": expected 0 to 65535 (or, for a USB product id, 1 to 4 hex
//! digits, e.g. usb://0525:a4a1)`).
//!
//! `usbgadget://?udc=dummy_udc.0&vid=1d6b&pid=0104&name=oscloud`:
//!
//! | key | meaning | default |
//! |-----|---------|---------|
//! | `udc` | the device controller, from `/sys/class/udc` | the first one |
//! | `vid`, `pid` | the ids the device shows | `1d6b`, `0104` |
//! | `name` | configfs gadget and FunctionFS instance name | `oscloud` |
//! | `serial`, `product`, `manufacturer` | the device's strings | name, `oscloud node`, `oscloud` |
//!
//! A bad value or an unknown key is an
//! [`InvalidAddress`](oscloud_core::Error::InvalidAddress) error naming the
//! key. The host side only dials and the device side only listens: the
//! other operation is an error that says so.
//!
//! ## A reliable stream
//!
//! A USB link is a
//! [`ReliableStream`](oscloud_core::transport::LinkKind::ReliableStream),
//! framed by length like TCP: bulk transfers are checked by CRC and retried
//! by the hardware, and arrive in order, so there is nothing for the wire
//! session to add. What a byte stream needs from USB is a clean start: a
//! dialling host resets the device, which makes the device side drop its
//! previous link and everything either side still had in flight, and start
//! a new one; so an old session's bytes never reach a new one.
//!
//! Each side moves at most 16 KiB per transfer and reads 16 KiB at a time;
//! a shorter transfer never has a length that is a multiple of the
//! max-packet size (it would not end the reader's transfer), so neither
//! side needs zero-length packets.
//!
//! ## Unplug and re-plug
//!
//! An unplugged cable, a device that resets, or a gadget unbound from its
//! controller ends the link at once, on both sides, with the reason logged
//! (`USB link down: the USB device is gone (unplugged, reset, or its gadget
//! unbound)` on the host; `USB link down: the USB host disabled the device
//! ...` or `... unbound from its device controller` on the device). The
//! host node's dial loop then dials again with backoff (the device is
//! [`Unreachable`](oscloud_core::Error::Unreachable) meanwhile); the gadget
//! listener yields a new link when the host enables the device again.
//!
//! ```no_run
//! use std::sync::Arc;
//! use oscloud_core::transport::Transports;
//! use oscloud_core::{Kernel, Node};
//! use oscloud_transport_usb::{UsbGadgetTransport, UsbHostTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! // On the board (device side):
//! let board = Node::new(Kernel::new(), Transports::new().with(Arc::new(UsbGadgetTransport)));
//! board.listen(&"usbgadget://?vid=1d6b&pid=0104".parse()?).await?;
//! // On the PC (host side):
//! let pc = Node::new(Kernel::new(), Transports::new().with(Arc::new(UsbHostTransport)));
//! let peer = pc.connect(&"usb://1d6b:0104".parse()?).await?;
//! println!("linked to {peer}");
//! # Ok(())
//! # }
//! ```
//!
//! Addresses are checked without any device:
//!
//! ```
//! use oscloud_transport_usb::{GadgetSettings, UsbDeviceFilter};
//!
//! let f = UsbDeviceFilter::from_address(&"usb://1d6b:0104?interface=0".parse()?)?;
//! assert_eq!((f.vid, f.pid, f.interface), (0x1d6b, 0x0104, 0));
//! let f = UsbDeviceFilter::from_address(&"usb://0525:a4a1".parse()?)?;
//! assert_eq!((f.vid, f.pid), (0x0525, 0xa4a1));
//! let g = GadgetSettings::from_address(&"usbgadget://?udc=dummy_udc.0&pid=a4a1".parse()?)?;
//! assert_eq!((g.vid, g.pid), (0x1d6b, 0xa4a1));
//! let err = UsbDeviceFilter::from_address(&"usb://1d6b:0104?interface=x".parse()?).unwrap_err();
//! assert!(err.to_string().contains("interface"));
//! # Ok::<(), oscloud_core::Error>(())
//! ```
#![doc(test(attr(deny(warnings))))]

mod chan;
#[cfg(target_os = "linux")]
mod gadget;
mod host;
mod settings;

#[cfg(target_os = "linux")]
pub use gadget::UsbGadgetTransport;
pub use host::UsbHostTransport;
pub use settings::{
    DEFAULT_PID, DEFAULT_VID, GADGET_PARAMS, GadgetSettings, HOST_PARAMS, UsbDeviceFilter,
};

/// The URI scheme of the host side.
pub const HOST_SCHEME: &str = "usb";
/// The URI scheme of the device side.
pub const GADGET_SCHEME: &str = "usbgadget";
