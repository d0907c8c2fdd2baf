//! What a `can://` address says, checked.

use std::fmt;

use oscloud_core::address::Address;

use crate::CanError;

/// The parameters a `can://` address may carry.
pub const PARAMS: &[&str] = &["tx", "rx", "fd", "bitrate"];

/// The largest standard (11-bit) identifier; larger ones are extended.
pub const MAX_STANDARD_ID: u32 = 0x7FF;
/// The largest extended (29-bit) identifier.
pub const MAX_EXTENDED_ID: u32 = 0x1FFF_FFFF;
/// The longest Linux interface name (`IFNAMSIZ - 1`).
const MAX_INTERFACE: usize = 15;

/// A CAN identifier: standard (11-bit) up to 0x7FF, extended (29-bit)
/// above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CanId(u32);

impl CanId {
    /// The identifier `raw`, standard if it is at most 0x7FF, extended if
    /// it is at most 0x1FFF_FFFF; `None` above.
    pub fn new(raw: u32) -> Option<Self> {
        (raw <= MAX_EXTENDED_ID).then_some(Self(raw))
    }

    /// Its numeric value.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// Whether it needs the extended (29-bit) frame format.
    pub fn is_extended(self) -> bool {
        self.0 > MAX_STANDARD_ID
    }
}

impl fmt::Display for CanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The settings of one `can://` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanSettings {
    /// The network interface (`vcan0`, `can0`).
    pub interface: String,
    /// The identifier this side sends with.
    pub tx: CanId,
    /// The identifier this side receives (the peer's `tx`).
    pub rx: CanId,
    /// CAN FD frames (64 data bytes) instead of classic ones (8).
    pub fd: bool,
    /// The bit rate the address says the bus runs at, if any. Informational:
    /// it is checked and logged, never applied (set it with
    /// `ip link set can0 type can bitrate N`).
    pub bitrate: Option<u32>,
}

/// A number in decimal or `0x` hexadecimal.
fn parse_number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

impl CanSettings {
    /// Read and check an address: `can://IFACE?tx=ID&rx=ID[&fd=BOOL][&bitrate=N]`.
    /// An error names the bad key.
    pub fn from_address(addr: &Address) -> Result<Self, CanError> {
        let bad = |key: &'static str, value: &str, reason: &str| CanError::BadParam {
            address: addr.to_string(),
            key,
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let bad_address = |reason: &str| CanError::BadAddress {
            address: addr.to_string(),
            reason: reason.to_owned(),
        };
        if addr.scheme() != crate::SCHEME {
            return Err(bad_address("the scheme is not can://"));
        }
        if let Some(key) = addr.params().keys().find(|k| !PARAMS.contains(&k.as_str())) {
            return Err(CanError::UnknownParam {
                address: addr.to_string(),
                key: key.clone(),
            });
        }
        let interface = addr.host();
        if interface.is_empty() {
            return Err(bad_address(
                "a CAN address names an interface, e.g. can://vcan0?tx=0x123&rx=0x321",
            ));
        }
        if interface.len() > MAX_INTERFACE
            || !interface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad_address(
                "the interface name must be at most 15 letters, digits, '-', '_' or '.'",
            ));
        }
        if addr.port_or_text().is_some() {
            return Err(bad_address("a CAN address has no port"));
        }
        if !addr.path().is_empty() && addr.path() != "/" {
            return Err(bad_address("a CAN address has no path"));
        }
        let id = |key: &'static str| -> Result<CanId, CanError> {
            let value = addr.param(key).ok_or(CanError::MissingParam {
                address: addr.to_string(),
                key,
            })?;
            let raw = parse_number(value)
                .ok_or_else(|| bad(key, value, "not a number (decimal or 0x hexadecimal)"))?;
            CanId::new(raw).ok_or_else(|| {
                bad(
                    key,
                    value,
                    "above 0x1FFFFFFF, the largest extended (29-bit) identifier",
                )
            })
        };
        let tx = id("tx")?;
        let rx = id("rx")?;
        if tx == rx {
            return Err(bad(
                "rx",
                addr.param("rx").unwrap_or_default(),
                "must differ from tx (each side sends with its own identifier)",
            ));
        }
        let fd = match addr.param("fd") {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(v) => return Err(bad("fd", v, "expected true or false")),
        };
        let bitrate = match addr.param("bitrate") {
            None => None,
            Some(v) => match parse_number(v) {
                Some(n @ 1..=15_000_000) => Some(n),
                _ => return Err(bad("bitrate", v, "expected bits/s from 1 to 15000000")),
            },
        };
        Ok(Self {
            interface: interface.to_owned(),
            tx,
            rx,
            fd,
            bitrate,
        })
    }

    /// The largest datagram a link with these settings carries: 8 bytes
    /// for classic CAN, 63 for CAN FD (one byte of each 64 says how many
    /// are used, as a controller pads frames to the next valid length).
    pub fn mtu(&self) -> usize {
        if self.fd {
            crate::FD_MTU
        } else {
            crate::CLASSIC_MTU
        }
    }

    /// The address for logs: `can://vcan0?tx=0x123&rx=0x321`.
    pub fn describe(&self, tx: CanId, rx: CanId) -> String {
        format!(
            "can://{}?tx={tx}&rx={rx}{}",
            self.interface,
            if self.fd { "&fd=true" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CanSettings, CanError> {
        CanSettings::from_address(&s.parse().unwrap())
    }

    #[test]
    fn good_addresses() {
        let s = parse("can://vcan0?tx=0x123&rx=0x321").unwrap();
        assert_eq!(s.interface, "vcan0");
        assert_eq!((s.tx.raw(), s.rx.raw()), (0x123, 0x321));
        assert!(!s.fd && !s.tx.is_extended());
        assert_eq!(s.mtu(), 8);
        assert_eq!(s.bitrate, None);

        let s = parse("can://can1?tx=291&rx=0X10000&fd=true&bitrate=500000").unwrap();
        assert_eq!((s.tx.raw(), s.rx.raw()), (291, 0x10000));
        assert!(s.rx.is_extended() && !s.tx.is_extended());
        assert!(s.fd);
        assert_eq!(s.mtu(), 63);
        assert_eq!(s.bitrate, Some(500_000));

        let s = parse("can://vcan0?tx=0x7FF&rx=0x800&fd=0").unwrap();
        assert!(!s.tx.is_extended() && s.rx.is_extended());
        let s = parse("can://vcan0?tx=0x1FFFFFFF&rx=0&fd=1").unwrap();
        assert!(s.tx.is_extended() && s.fd);
        assert_eq!(
            s.describe(s.tx, s.rx),
            "can://vcan0?tx=0x1fffffff&rx=0x0&fd=true"
        );
    }

    #[test]
    fn bad_addresses_name_the_key() {
        for (addr, says) in [
            ("can://vcan0?rx=0x321", "missing parameter tx"),
            ("can://vcan0?tx=0x321", "missing parameter rx"),
            ("can://vcan0?tx=0x12g&rx=1", "tx=\"0x12g\""),
            ("can://vcan0?tx=-1&rx=1", "tx=\"-1\""),
            ("can://vcan0?tx=1&rx=0x20000000", "rx=\"0x20000000\""),
            ("can://vcan0?tx=1&rx=1", "must differ"),
            ("can://vcan0?tx=1&rx=2&fd=yes", "fd=\"yes\""),
            ("can://vcan0?tx=1&rx=2&bitrate=0", "bitrate=\"0\""),
            ("can://vcan0?tx=1&rx=2&bitrate=fast", "bitrate"),
            ("can://vcan0?tx=1&rx=2&mtu=8", "unknown parameter \"mtu\""),
            ("can://?tx=1&rx=2", "names an interface"),
            ("can://vcan0:7?tx=1&rx=2", "no port"),
            ("can://vcan0/x?tx=1&rx=2", "no path"),
            ("can://a-very-long-interface?tx=1&rx=2", "at most 15"),
            ("tcp://vcan0?tx=1&rx=2", "not can://"),
        ] {
            let err = parse(addr).unwrap_err();
            assert!(err.to_string().contains(says), "{addr}: {err}");
            let core: oscloud_core::Error = err.into();
            assert!(
                matches!(core, oscloud_core::Error::InvalidAddress { .. }),
                "{addr}: {core}"
            );
        }
    }
}
