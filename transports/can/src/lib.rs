//! # oscloud-transport-can: CAN bus links for oscloud nodes
//!
//! Two nodes on one CAN bus link over Linux SocketCAN raw sockets (a real
//! controller such as `can0`, or a virtual `vcan0` / `vxcan` pair).
//!
//! Addresses: `can://IFACE?tx=ID&rx=ID[&fd=BOOL][&bitrate=N]`
//!
//! | key | values | default |
//! |-----|--------|---------|
//! | `tx` | the identifier this side sends with: decimal or `0x` hex, 0 to 0x1FFFFFFF | required |
//! | `rx` | the identifier this side receives (the peer's `tx`) | required |
//! | `fd` | `true`/`1`: CAN FD frames, `false`/`0`: classic frames | `false` |
//! | `bitrate` | bits/s, 1 to 15 000 000: informational, checked and logged | none |
//!
//! Identifiers up to 0x7FF are sent in standard (11-bit) frames, larger
//! ones in extended (29-bit) frames. `tx` and `rx` must differ. The bit
//! rate is a property of the interface, set by the administrator
//! (`ip link set can0 type can bitrate 500000`), never by this crate. An
//! unknown key or a bad value is an
//! [`InvalidAddress`](oscloud_core::Error::InvalidAddress) error that names
//! the key.
//!
//! ## The link: datagrams, segmented by the wire protocol
//!
//! A CAN link is a
//! [`Datagram`](oscloud_core::transport::LinkKind::Datagram) link: each
//! datagram is one CAN frame, 8 bytes for classic CAN, 63 for CAN FD (the
//! first of the 64 data bytes says how many follow, because a controller
//! pads an FD frame to the next valid length: 12, 16, 20, 24, 32, 48, 64).
//! The wire protocol cuts each session frame into segments with a 2-byte
//! header (frame counter, index, last flag) and a CRC-32 over the whole
//! frame, reassembles them, drops a frame whose segment is lost, garbled or
//! late, and the session retransmits it (`docs/PROTOCOL.md`). So a lost or
//! corrupted CAN frame costs a retransmission, never wrong data.
//!
//! Each link's socket has a kernel filter that passes only data frames with
//! its `rx` identifier (standard or extended as the value says): other
//! traffic on the bus never reaches it. Several node pairs share one bus by
//! using distinct identifiers.
//!
//! ## Connect and listen on a bus without connections
//!
//! A bus has no connections; a link is a pair of identifiers.
//!
//! - [`connect`](Transport::connect) opens a socket on the interface and
//!   returns the link at once. The session's Hello goes out with `tx`; the
//!   node's usual re-dial and the session's retransmission cover a peer
//!   that is not there yet.
//! - [`listen`](Transport::listen) opens a socket at once (a missing
//!   interface or a kernel without CAN is reported by `listen`), and
//!   [`accept`](oscloud_core::transport::Listener::accept) yields the link
//!   when the first frame with `rx` arrives: that is the peer. The next
//!   `accept` waits until that link is gone (its session ended, both
//!   halves dropped), then opens a new socket and waits for the next first
//!   frame. One listening address serves one peer at a time; more peers
//!   listen on more identifier pairs.
//!
//! Both sides of a pair use mirrored addresses:
//! `can://vcan0?tx=0x123&rx=0x321` on one,
//! `can://vcan0?tx=0x321&rx=0x123` on the other.
//!
//! ## Why not ISO-TP (can-isotp)
//!
//! The kernel's ISO 15765-2 sockets segment up to 4095 bytes per message
//! with flow control, but the wire protocol already segments, checks and
//! retransmits every kind of datagram link (BLE uses the same path), so
//! ISO-TP would be a second segmentation layer with its own timers, and a
//! lost ISO-TP frame still loses the whole message. Raw frames keep the
//! transport small and work wherever `can_raw` does (ISO-TP needs
//! `can-isotp`, in mainline Linux only since 5.10).
//!
//! ## Errors
//!
//! A kernel without SocketCAN (`modprobe can_raw`) or a missing interface
//! is [`Unreachable`](oscloud_core::Error::Unreachable) with a message
//! saying which. An interface that goes down (`ip link set can0 down`, e.g.
//! to change a controller's bit rate) does not end the link: the socket stays
//! bound, frames written meanwhile are lost (the session retransmits them),
//! and the link goes on when the interface is up again; both events are
//! logged (`CAN interface down ...`, `CAN interface up again`). An
//! interface that stays down longer than the node's idle timeout ends the
//! session like a silent peer (and, with `NodeConfig::resume_grace`, the
//! session waits for a new link). Any other read or write error (the
//! interface was deleted) ends the link, and a node that dialled re-dials.
//! A transmit queue that stays full for 200 ms drops the frame (the session
//! retransmits it).
//!
//! ## Platforms
//!
//! Linux only (SocketCAN); on other systems the crate builds and every
//! connect or listen fails with [`CanError::Unsupported`]. Tested in the
//! repository's hardware lab (`tests/hwlab/`) against Debian's kernel with
//! `vcan` and `vxcan`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use oscloud_core::transport::Transports;
//! use oscloud_core::{Kernel, Node};
//! use oscloud_transport_can::CanTransport;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let transports = Transports::new().with(Arc::new(CanTransport));
//! let node = Node::new(Kernel::new(), transports);
//! // The other side listens on can://vcan0?tx=0x321&rx=0x123.
//! let peer = node.connect(&"can://vcan0?tx=0x123&rx=0x321".parse()?).await?;
//! println!("linked to {peer}");
//! # Ok(())
//! # }
//! ```
//!
//! Parsing and validation need no bus:
//!
//! ```
//! use oscloud_transport_can::CanSettings;
//!
//! let s = CanSettings::from_address(&"can://vcan0?tx=0x123&rx=0x18DAF110&fd=true".parse()?)?;
//! assert!(s.rx.is_extended() && s.fd);
//! assert_eq!(s.mtu(), 63);
//! let err = CanSettings::from_address(&"can://vcan0?tx=0x123&rx=0x321&fd=maybe".parse()?)
//!     .unwrap_err();
//! assert!(err.to_string().contains("fd"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]

mod settings;
#[cfg(target_os = "linux")]
mod socket;

use std::sync::Arc;

use async_trait::async_trait;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, Listener, Transport};
use tokio::sync::Semaphore;

pub use settings::{CanId, CanSettings, MAX_EXTENDED_ID, MAX_STANDARD_ID, PARAMS};

/// The URI scheme of this transport.
pub const SCHEME: &str = "can";
/// The datagram MTU of a classic CAN link.
pub const CLASSIC_MTU: usize = 8;
/// The datagram MTU of a CAN FD link (64 data bytes, one of them the
/// length).
pub const FD_MTU: usize = 63;

/// What can go wrong with a CAN address or socket. Converted into
/// [`oscloud_core::Error`] at the [`Transport`] boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanError {
    /// The address is malformed (interface, port, path, scheme).
    #[error("invalid CAN address {address}: {reason}")]
    BadAddress {
        /// The address.
        address: String,
        /// What is wrong.
        reason: String,
    },
    /// A required parameter is missing.
    #[error("invalid CAN address {address}: missing parameter {key} (e.g. tx=0x123&rx=0x321)")]
    MissingParam {
        /// The address.
        address: String,
        /// The parameter.
        key: &'static str,
    },
    /// A parameter has a bad value.
    #[error("invalid CAN address {address}: parameter {key}={value:?} {reason}")]
    BadParam {
        /// The address.
        address: String,
        /// The parameter.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter this transport does not know.
    #[error(
        "invalid CAN address {address}: unknown parameter {key:?} (known: tx, rx, fd, bitrate)"
    )]
    UnknownParam {
        /// The address.
        address: String,
        /// The parameter.
        key: String,
    },
    /// The running kernel has no SocketCAN.
    #[error("this kernel has no SocketCAN support (load it with `modprobe can_raw`): {message}")]
    NoSocketCan {
        /// The system's message.
        message: String,
    },
    /// No network interface of that name.
    #[error(
        "no CAN interface {interface:?} (create a virtual one with `ip link add {interface} type vcan`): {message}"
    )]
    NoInterface {
        /// The interface.
        interface: String,
        /// The system's message.
        message: String,
    },
    /// The interface is down.
    #[error("CAN interface {interface:?} is down (`ip link set {interface} up`): {message}")]
    InterfaceDown {
        /// The interface.
        interface: String,
        /// The system's message.
        message: String,
    },
    /// Another I/O error.
    #[error("CAN I/O error on {interface:?}: {message}")]
    Io {
        /// The interface.
        interface: String,
        /// The system's message.
        message: String,
    },
    /// SocketCAN exists only on Linux.
    #[error("CAN links need Linux SocketCAN; this system has none")]
    Unsupported,
}

// errno values (Linux, all architectures that matter here).
const EAFNOSUPPORT: i32 = 97;
const ENODEV: i32 = 19;
const ENXIO: i32 = 6;
const ENETDOWN: i32 = 100;

impl CanError {
    /// The error for failing to open a socket on `interface`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn open(interface: &str, e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(EAFNOSUPPORT) => CanError::NoSocketCan {
                message: e.to_string(),
            },
            Some(ENODEV) | Some(ENXIO) => CanError::NoInterface {
                interface: interface.to_owned(),
                message: e.to_string(),
            },
            _ => Self::io(interface, e),
        }
    }

    /// The error for a failed read or write on `interface`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn io(interface: &str, e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(ENETDOWN) => CanError::InterfaceDown {
                interface: interface.to_owned(),
                message: e.to_string(),
            },
            Some(ENODEV) | Some(ENXIO) => CanError::NoInterface {
                interface: interface.to_owned(),
                message: e.to_string(),
            },
            _ => CanError::Io {
                interface: interface.to_owned(),
                message: e.to_string(),
            },
        }
    }
}

impl From<CanError> for Error {
    fn from(e: CanError) -> Self {
        let reason = e.to_string();
        match e {
            CanError::BadAddress { address, .. }
            | CanError::MissingParam { address, .. }
            | CanError::BadParam { address, .. }
            | CanError::UnknownParam { address, .. } => Error::InvalidAddress {
                input: address,
                reason,
            },
            CanError::NoSocketCan { .. } | CanError::Unsupported => Error::Unreachable {
                address: "can://".into(),
                reason,
            },
            CanError::NoInterface { interface, .. } | CanError::InterfaceDown { interface, .. } => {
                Error::Unreachable {
                    address: format!("can://{interface}"),
                    reason,
                }
            }
            CanError::Io { interface, .. } => Error::LinkFailed {
                address: format!("can://{interface}"),
                reason,
            },
        }
    }
}

/// CAN links (`can://vcan0?tx=0x123&rx=0x321`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CanTransport;

#[async_trait]
impl Transport for CanTransport {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        let settings = CanSettings::from_address(addr)?;
        log_bitrate(&settings);
        connect(&settings)
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        let settings = CanSettings::from_address(addr)?;
        log_bitrate(&settings);
        Ok(Box::new(listen(addr, settings)?))
    }
}

fn log_bitrate(settings: &CanSettings) {
    if let Some(b) = settings.bitrate {
        tracing::debug!(
            interface = %settings.interface,
            bitrate = b,
            "bitrate is informational: the interface's own setting applies"
        );
    }
}

#[cfg(target_os = "linux")]
fn connect(settings: &CanSettings) -> Result<Link, Error> {
    Ok(socket::open(settings, None)?.into_link(None))
}

#[cfg(not(target_os = "linux"))]
fn connect(_: &CanSettings) -> Result<Link, Error> {
    Err(CanError::Unsupported.into())
}

/// The listener of one identifier pair.
struct CanLinks {
    address: Address,
    settings: CanSettings,
    /// One permit: held by the current link, so the next accept waits.
    slot: Arc<Semaphore>,
    #[cfg(target_os = "linux")]
    next: Option<socket::OpenSocket>,
}

#[cfg(target_os = "linux")]
fn listen(addr: &Address, settings: CanSettings) -> Result<CanLinks, Error> {
    let slot = Arc::new(Semaphore::new(1));
    let permit = slot.clone().try_acquire_owned().ok();
    let first = socket::open(&settings, permit)?;
    Ok(CanLinks {
        address: addr.clone(),
        settings,
        slot,
        next: Some(first),
    })
}

#[cfg(not(target_os = "linux"))]
fn listen(_: &Address, _: CanSettings) -> Result<CanLinks, Error> {
    Err(CanError::Unsupported.into())
}

#[async_trait]
impl Listener for CanLinks {
    #[cfg(target_os = "linux")]
    async fn accept(&mut self) -> Result<Link, Error> {
        let open = match self.next.take() {
            Some(open) => open,
            None => {
                let permit =
                    self.slot
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| Error::LinkFailed {
                            address: self.address.to_string(),
                            reason: "listener closed".into(),
                        })?;
                socket::open(&self.settings, Some(permit))?
            }
        };
        // Cancel-safe enough: a cancelled accept drops the socket (and the
        // slot); the next one opens a new socket.
        let first = open.first_datagram().await?;
        tracing::debug!(address = %self.address, "CAN peer heard");
        Ok(open.into_link(Some(first)))
    }

    #[cfg(not(target_os = "linux"))]
    async fn accept(&mut self) -> Result<Link, Error> {
        let _ = (&self.settings, &self.slot);
        Err(CanError::Unsupported.into())
    }

    fn local_address(&self) -> Address {
        self.address.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_address_is_reported_before_any_socket() {
        let err = CanTransport
            .connect(&"can://vcan0?tx=1".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidAddress { .. }), "{err}");
        assert!(err.to_string().contains("missing parameter rx"), "{err}");
        let err = CanTransport
            .listen(&"can://vcan0?tx=1&rx=2&speed=5".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unknown parameter \"speed\""),
            "{err}"
        );
    }

    /// On a host without SocketCAN (the build machines) or without the
    /// interface, the error says which.
    #[tokio::test]
    async fn missing_socketcan_or_interface_is_clear() {
        let err = CanTransport
            .connect(&"can://nosuchcan9?tx=1&rx=2".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("no SocketCAN") || text.contains("no CAN interface \"nosuchcan9\""),
            "{text}"
        );
    }

    #[test]
    fn errno_mapping() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert!(matches!(
            CanError::open("can0", &e(EAFNOSUPPORT)),
            CanError::NoSocketCan { .. }
        ));
        assert!(matches!(
            CanError::open("can0", &e(ENODEV)),
            CanError::NoInterface { .. }
        ));
        assert!(matches!(
            CanError::io("can0", &e(ENETDOWN)),
            CanError::InterfaceDown { .. }
        ));
        let core: Error = CanError::io("can0", &e(5)).into();
        assert!(matches!(core, Error::LinkFailed { .. }), "{core}");
    }
}
