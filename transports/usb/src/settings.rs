//! What `usb://` and `usbgadget://` addresses say, checked without any
//! device.

use oscloud_core::Error;
use oscloud_core::address::Address;

use crate::{GADGET_SCHEME, HOST_SCHEME};

/// The parameters a `usb://` address may carry.
pub const HOST_PARAMS: &[&str] = &["vid", "pid", "interface", "serial", "bus", "address"];

/// The parameters a `usbgadget://` address may carry.
pub const GADGET_PARAMS: &[&str] = &[
    "udc",
    "vid",
    "pid",
    "name",
    "serial",
    "product",
    "manufacturer",
];

/// The vendor id a gadget has unless told otherwise: the Linux Foundation.
pub const DEFAULT_VID: u16 = 0x1d6b;
/// The product id a gadget has unless told otherwise: "Multifunction
/// Composite Gadget".
pub const DEFAULT_PID: u16 = 0x0104;

fn invalid(addr: &Address, reason: impl Into<String>) -> Error {
    Error::InvalidAddress {
        input: addr.to_string(),
        reason: reason.into(),
    }
}

/// A 16-bit id in hex, with or without `0x`.
fn hex_id(addr: &Address, key: &str, text: &str) -> Result<u16, Error> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 {
        return Err(invalid(
            addr,
            format!("{key}={text:?} is not valid: expected 1 to 4 hex digits, e.g. 1d6b"),
        ));
    }
    u16::from_str_radix(digits, 16).map_err(|_| {
        invalid(
            addr,
            format!("{key}={text:?} is not valid: expected 1 to 4 hex digits, e.g. 1d6b"),
        )
    })
}

/// A parameter that is a hex id, if given.
fn hex_param(addr: &Address, key: &str) -> Result<Option<u16>, Error> {
    addr.param(key).map(|v| hex_id(addr, key, v)).transpose()
}

/// Which USB device (and which of its interfaces) a `usb://` address names.
///
/// `usb://VID:PID?interface=0&serial=...&bus=1&address=4`, ids of 1 to 4
/// hex digits (`usb://1d6b:0104`, `usb://0525:a4a1`, `usb://0x1D6B:104`);
/// either can be given as a parameter instead (`usb://?vid=0525&pid=a4a1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDeviceFilter {
    /// The vendor id.
    pub vid: u16,
    /// The product id.
    pub pid: u16,
    /// The interface with the bulk IN/OUT endpoint pair (default 0).
    pub interface: u8,
    /// Only the device with this serial number string.
    pub serial: Option<String>,
    /// Only a device on this bus.
    pub bus: Option<u8>,
    /// Only the device at this address on its bus.
    pub address: Option<u8>,
}

impl UsbDeviceFilter {
    /// Read and check a `usb://` address.
    pub fn from_address(addr: &Address) -> Result<Self, Error> {
        if addr.scheme() != HOST_SCHEME {
            return Err(invalid(addr, "not a usb:// address"));
        }
        addr.check_params(HOST_PARAMS)?;
        if !addr.path().is_empty() && addr.path() != "/" {
            return Err(invalid(addr, "a usb:// address has no path"));
        }
        let host_vid = (!addr.host().is_empty())
            .then(|| hex_id(addr, "vendor id", addr.host()))
            .transpose()?;
        // `0525:a4a1` reaches us as the port text "a4a1"; `1d6b:0104` as
        // the port number 104, whose decimal digits are the hex digits of
        // the product id (leading zeros do not count).
        let port_pid = addr
            .port_or_text()
            .map(|p| hex_id(addr, "product id", &p))
            .transpose()?;
        let vid = match (host_vid, hex_param(addr, "vid")?) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    addr,
                    "the vendor id is given twice (host and vid=)",
                ));
            }
            (Some(v), None) | (None, Some(v)) => v,
            (None, None) => {
                return Err(invalid(
                    addr,
                    "a usb:// address needs a vendor and product id, e.g. usb://1d6b:0104",
                ));
            }
        };
        let pid = match (port_pid, hex_param(addr, "pid")?) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    addr,
                    "the product id is given twice (:PID and pid=)",
                ));
            }
            (Some(p), None) | (None, Some(p)) => p,
            (None, None) => {
                return Err(invalid(
                    addr,
                    "a usb:// address needs a product id, e.g. usb://1d6b:0104 or usb://1d6b?pid=a4a1",
                ));
            }
        };
        Ok(Self {
            vid,
            pid,
            interface: addr.param_parse::<u8>("interface")?.unwrap_or(0),
            serial: addr.param("serial").map(str::to_owned),
            bus: addr.param_parse::<u8>("bus")?,
            address: addr.param_parse::<u8>("address")?,
        })
    }
}

impl std::fmt::Display for UsbDeviceFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vid, self.pid)?;
        if let Some(s) = &self.serial {
            write!(f, " serial {s:?}")?;
        }
        if let Some(b) = self.bus {
            write!(f, " on bus {b}")?;
        }
        if let Some(a) = self.address {
            write!(f, " at address {a}")?;
        }
        Ok(())
    }
}

/// The USB gadget a `usbgadget://` address asks for.
///
/// `usbgadget://?udc=dummy_udc.0&vid=1d6b&pid=0104&name=oscloud&serial=...`,
/// every parameter optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GadgetSettings {
    /// The USB device controller to bind to (a name in `/sys/class/udc`);
    /// `None`: the first one there.
    pub udc: Option<String>,
    /// The vendor id the device shows.
    pub vid: u16,
    /// The product id the device shows.
    pub pid: u16,
    /// The gadget's name: its configfs directory and FunctionFS instance.
    pub name: String,
    /// The serial number string.
    pub serial: String,
    /// The product string.
    pub product: String,
    /// The manufacturer string.
    pub manufacturer: String,
}

impl GadgetSettings {
    /// Read and check a `usbgadget://` address.
    pub fn from_address(addr: &Address) -> Result<Self, Error> {
        if addr.scheme() != GADGET_SCHEME {
            return Err(invalid(addr, "not a usbgadget:// address"));
        }
        addr.check_params(GADGET_PARAMS)?;
        if !addr.host().is_empty()
            || addr.port_or_text().is_some()
            || (!addr.path().is_empty() && addr.path() != "/")
        {
            return Err(invalid(
                addr,
                "a usbgadget:// address has parameters only, e.g. usbgadget://?udc=dummy_udc.0",
            ));
        }
        let name = addr.param("name").unwrap_or("oscloud").to_owned();
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                addr,
                format!(
                    "name={name:?} is not valid: 1 to 32 letters, digits, '_' or '-' (it names a configfs directory)"
                ),
            ));
        }
        let udc = addr.param("udc").map(str::to_owned);
        if let Some(u) = &udc
            && (u.is_empty() || u.contains('/'))
        {
            return Err(invalid(
                addr,
                format!("udc={u:?} is not valid: expected a name from /sys/class/udc"),
            ));
        }
        let text = |key: &str, default: &str| -> Result<String, Error> {
            let v = addr.param(key).unwrap_or(default);
            if v.len() > 126 || v.contains('\n') {
                return Err(invalid(
                    addr,
                    format!("{key}={v:?} is not valid: one line of at most 126 bytes"),
                ));
            }
            Ok(v.to_owned())
        };
        Ok(Self {
            udc,
            vid: hex_param(addr, "vid")?.unwrap_or(DEFAULT_VID),
            pid: hex_param(addr, "pid")?.unwrap_or(DEFAULT_PID),
            serial: text("serial", &name)?,
            product: text("product", "oscloud node")?,
            manufacturer: text("manufacturer", "oscloud")?,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Result<UsbDeviceFilter, Error> {
        UsbDeviceFilter::from_address(&s.parse()?)
    }

    fn gadget(s: &str) -> Result<GadgetSettings, Error> {
        GadgetSettings::from_address(&s.parse()?)
    }

    #[test]
    fn host_addresses() {
        let f = host("usb://1d6b:0104").unwrap();
        assert_eq!((f.vid, f.pid, f.interface), (0x1d6b, 0x0104, 0));
        assert_eq!(f.to_string(), "1d6b:0104");
        let f = host("usb://0x1D6B:104?interface=2&serial=abc&bus=3&address=7").unwrap();
        assert_eq!((f.vid, f.pid, f.interface), (0x1d6b, 0x0104, 2));
        assert_eq!(f.serial.as_deref(), Some("abc"));
        assert_eq!((f.bus, f.address), (Some(3), Some(7)));
        let f = host("usb://?vid=0525&pid=a4a1").unwrap();
        assert_eq!((f.vid, f.pid), (0x0525, 0xa4a1));
        let f = host("usb://0525?pid=0xA4A1").unwrap();
        assert_eq!((f.vid, f.pid), (0x0525, 0xa4a1));
        // Hex letters in the product id after the colon.
        for (addr, vid, pid) in [
            ("usb://0525:a4a1", 0x0525, 0xa4a1),
            ("usb://0525:A4A1?interface=1", 0x0525, 0xa4a1),
            ("usb://1d6b:ff", 0x1d6b, 0x00ff),
            ("usb://1d6b:0000", 0x1d6b, 0),
            ("usb://1d6b:9999", 0x1d6b, 0x9999),
        ] {
            let f = host(addr).unwrap();
            assert_eq!((f.vid, f.pid), (vid, pid), "{addr}");
        }
        assert_eq!(host("usb://0525:a4a1").unwrap().to_string(), "0525:a4a1");
    }

    #[test]
    fn bad_host_addresses_name_the_problem() {
        for (addr, says) in [
            ("usb://1d6b", "needs a product id"),
            ("usb://", "needs a vendor and product id"),
            ("usb://zz:0104", "vendor id=\"zz\""),
            ("usb://12345:0104", "vendor id=\"12345\""),
            ("usb://1d6b:0104?interface=x", "interface"),
            ("usb://1d6b:0104?interface=300", "interface"),
            ("usb://1d6b:0104?bus=-1", "bus"),
            ("usb://1d6b:0104?speed=high", "speed"),
            ("usb://1d6b:0104?pid=1", "given twice"),
            ("usb://1d6b:0104/x", "no path"),
            ("usb://?vid=1d6b&pid=g", "pid=\"g\""),
            // Bad product ids after the colon: not hex, too long.
            ("usb://0525:a4g1", "1 to 4 hex digits"),
            ("usb://0525:a4a1f", "1 to 4 hex digits"),
            ("usb://0525:12345", "product id=\"12345\""),
            ("usb://0525:", "bad port"),
            ("usb://0525:a4a1?pid=a4a1", "given twice"),
        ] {
            let err = host(addr).unwrap_err();
            assert!(err.to_string().contains(says), "{addr}: {err}");
        }
    }

    #[test]
    fn gadget_addresses() {
        let g = gadget("usbgadget://").unwrap();
        assert_eq!(g.udc, None);
        assert_eq!((g.vid, g.pid), (DEFAULT_VID, DEFAULT_PID));
        assert_eq!((g.name.as_str(), g.serial.as_str()), ("oscloud", "oscloud"));
        let g = gadget("usbgadget://?udc=dummy_udc.0&vid=0x1234&pid=5678&name=n1&serial=s%201")
            .unwrap();
        assert_eq!(g.udc.as_deref(), Some("dummy_udc.0"));
        assert_eq!((g.vid, g.pid), (0x1234, 0x5678));
        assert_eq!((g.name.as_str(), g.serial.as_str()), ("n1", "s 1"));
    }

    #[test]
    fn bad_gadget_addresses_name_the_problem() {
        for (addr, says) in [
            ("usbgadget://board", "parameters only"),
            ("usbgadget://?name=a/b", "name="),
            ("usbgadget://?name=", "name="),
            ("usbgadget://?udc=../x", "udc="),
            ("usbgadget://?vid=10000", "vid="),
            ("usbgadget://?power=2", "power"),
        ] {
            let err = gadget(addr).unwrap_err();
            assert!(err.to_string().contains(says), "{addr}: {err}");
        }
    }
}
