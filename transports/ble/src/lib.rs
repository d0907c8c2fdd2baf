//! # oscloud-transport-ble: Bluetooth Low Energy links for oscloud nodes
//!
//! Both roles of a BLE connection:
//!
//! - **Central** ([`BleCentralTransport`], `ble://?service=UUID` or
//!   `ble://[AA:BB:CC:DD:EE:FF]`): scans for the peripheral, connects,
//!   subscribes to its notify characteristic, through [`btleplug`] (BlueZ
//!   on Linux, CoreBluetooth on macOS, WinRT on Windows).
//! - **Peripheral** ([`BlePeripheralTransport`],
//!   `bleperipheral://?adapter=hci0&service=UUID`): a Linux board offers a
//!   GATT service and advertises it, through BlueZ ([`bluer`]); needs
//!   `bluetoothd` on the system bus.
//!
//! libdbus is built from source (`libdbus-sys/vendored`): no system
//! library is needed to build, only a running `bluetoothd` to run.
//!
//! ## The GATT service
//!
//! One primary service ([`DEFAULT_SERVICE`] unless `service=` says) with two
//! characteristics: [`TO_PERIPHERAL`], which the central writes without
//! response, and [`FROM_PERIPHERAL`], on which the peripheral notifies.
//! Each write and each notification is one datagram.
//!
//! ## Datagram links
//!
//! A BLE link is a
//! [`Datagram`](oscloud_core::transport::LinkKind::Datagram) link of `mtu`
//! bytes: writes without response and notifications are not acknowledged
//! by the application and a full queue may drop them, so the wire
//! protocol segments each packet into datagrams (2 bytes of header each),
//! checks a CRC and retransmits what is lost. Both ends must use the same
//! `mtu`, at most the connection's ATT MTU less 3. The default, 20, fits
//! the smallest ATT MTU (23) every stack supports; BlueZ to BlueZ usually
//! negotiates 517, so `mtu=244` or more is safe there and much faster.
//!
//! | key | where | meaning | default |
//! |-----|-------|---------|---------|
//! | `service` | both | the service UUID | [`DEFAULT_SERVICE`] |
//! | `mtu` | both | datagram bytes, 4 to 514 | `20` |
//! | `adapter` | both | the local adapter (`hci0`...) | the first / BlueZ's default |
//! | host, `address` | `ble://` | only this device | any advertising the service |
//! | `scan_ms` | `ble://` | how long a dial scans (restarting the scan every 3 s) | `10000` |
//! | `name` | `bleperipheral://` | the advertised name | `oscloud` |
//!
//! A device address goes in brackets (`ble://[AA:BB:CC:DD:EE:FF]`) or in
//! `address=`, because the address parser would read the last `:FF` as a
//! port. A bad value or an unknown key is an
//! [`InvalidAddress`](oscloud_core::Error::InvalidAddress) error naming the
//! key.
//!
//! ## Disconnects
//!
//! When the central disconnects or unsubscribes, or the peripheral goes
//! away, the link ends on both sides with the reason logged (`BLE link
//! down: ...`); the central's node dials again with backoff (scanning
//! anew), and the peripheral yields a new link when a central subscribes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use oscloud_core::transport::Transports;
//! use oscloud_core::{Kernel, Node};
//! use oscloud_transport_ble::{BleCentralTransport, BlePeripheralTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! // On the board (peripheral):
//! let board = Node::new(Kernel::new(), Transports::new().with(Arc::new(BlePeripheralTransport)));
//! board.listen(&"bleperipheral://?adapter=hci0&mtu=244".parse()?).await?;
//! // On the PC (central):
//! let pc = Node::new(Kernel::new(), Transports::new().with(Arc::new(BleCentralTransport)));
//! let peer = pc.connect(&"ble://?mtu=244".parse()?).await?;
//! println!("linked to {peer}");
//! # Ok(())
//! # }
//! ```
//!
//! Addresses are checked without any radio:
//!
//! ```
//! use oscloud_transport_ble::{CentralSettings, DEFAULT_SERVICE};
//!
//! let c = CentralSettings::from_address(&"ble://[aa:bb:cc:dd:ee:ff]?mtu=244".parse()?)?;
//! assert_eq!(c.address.as_deref(), Some("AA:BB:CC:DD:EE:FF"));
//! assert_eq!((c.service, c.mtu), (DEFAULT_SERVICE, 244));
//! let err = CentralSettings::from_address(&"ble://?mtu=1000".parse()?).unwrap_err();
//! assert!(err.to_string().contains("mtu"));
//! # Ok::<(), oscloud_core::Error>(())
//! ```
#![doc(test(attr(deny(warnings))))]

mod central;
mod chan;
#[cfg(target_os = "linux")]
mod notifying;
#[cfg(target_os = "linux")]
mod peripheral;
mod settings;

pub use central::BleCentralTransport;
#[cfg(target_os = "linux")]
pub use peripheral::BlePeripheralTransport;
pub use settings::{
    CENTRAL_PARAMS, CentralSettings, DEFAULT_MTU, DEFAULT_SCAN, DEFAULT_SERVICE, FROM_PERIPHERAL,
    MAX_MTU, PERIPHERAL_PARAMS, PeripheralSettings, TO_PERIPHERAL,
};

/// The URI scheme of the central side.
pub const CENTRAL_SCHEME: &str = "ble";
/// The URI scheme of the peripheral side.
pub const PERIPHERAL_SCHEME: &str = "bleperipheral";
