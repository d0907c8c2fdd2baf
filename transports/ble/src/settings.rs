//! What `ble://` and `bleperipheral://` addresses say, checked without any
//! radio.

use std::time::Duration;

use oscloud_core::Error;
use oscloud_core::address::Address;
use uuid::Uuid;

use crate::{CENTRAL_SCHEME, PERIPHERAL_SCHEME};

/// The service a peripheral offers unless told otherwise.
pub const DEFAULT_SERVICE: Uuid = Uuid::from_u128(0x6f73636c_0000_4000_8000_6f73636c6f75);
/// The characteristic the central writes (without response) to the
/// peripheral.
pub const TO_PERIPHERAL: Uuid = Uuid::from_u128(0x6f73636c_0001_4000_8000_6f73636c6f75);
/// The characteristic the peripheral notifies the central on.
pub const FROM_PERIPHERAL: Uuid = Uuid::from_u128(0x6f73636c_0002_4000_8000_6f73636c6f75);

/// The datagram size unless told otherwise: what fits the smallest ATT MTU
/// (23 bytes, less 3 of ATT header), which every BLE stack supports.
pub const DEFAULT_MTU: usize = 20;
/// The largest datagram: a 517-byte ATT MTU less 3 bytes of header.
pub const MAX_MTU: usize = 514;

/// How long a dial scans for the peripheral unless `scan_ms` says.
pub const DEFAULT_SCAN: Duration = Duration::from_secs(10);

/// The parameters a `ble://` address may carry.
pub const CENTRAL_PARAMS: &[&str] = &["service", "address", "adapter", "mtu", "scan_ms"];
/// The parameters a `bleperipheral://` address may carry.
pub const PERIPHERAL_PARAMS: &[&str] = &["service", "adapter", "name", "mtu"];

fn invalid(addr: &Address, reason: impl Into<String>) -> Error {
    Error::InvalidAddress {
        input: addr.to_string(),
        reason: reason.into(),
    }
}

fn service(addr: &Address) -> Result<Uuid, Error> {
    addr.param("service")
        .map(|s| {
            Uuid::parse_str(s).map_err(|e| {
                invalid(
                    addr,
                    format!("service={s:?} is not valid: {e} (expected a UUID)"),
                )
            })
        })
        .transpose()
        .map(|u| u.unwrap_or(DEFAULT_SERVICE))
}

fn mtu(addr: &Address) -> Result<usize, Error> {
    let mtu = addr.param_parse::<usize>("mtu")?.unwrap_or(DEFAULT_MTU);
    if !(4..=MAX_MTU).contains(&mtu) {
        return Err(invalid(
            addr,
            format!("mtu={mtu} is not valid: expected 4 to {MAX_MTU}"),
        ));
    }
    Ok(mtu)
}

fn adapter(addr: &Address) -> Result<Option<String>, Error> {
    match addr.param("adapter") {
        Some(a) if a.is_empty() || a.contains('/') => Err(invalid(
            addr,
            format!("adapter={a:?} is not valid: expected a name such as hci0"),
        )),
        a => Ok(a.map(str::to_owned)),
    }
}

/// A Bluetooth device address `AA:BB:CC:DD:EE:FF`, upper-cased.
fn device_address(addr: &Address, text: &str) -> Result<String, Error> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid(
            addr,
            format!("address {text:?} is not valid: expected AA:BB:CC:DD:EE:FF"),
        ));
    }
    Ok(parts.join(":").to_ascii_uppercase())
}

/// Which peripheral a `ble://` address names, and how to talk to it.
///
/// `ble://?service=<uuid>` (the first peripheral advertising the service),
/// `ble://[AA:BB:CC:DD:EE:FF]` or `ble://?address=AA:BB:CC:DD:EE:FF` (that
/// device). The brackets are needed because the address parser would read
/// the last `:FF` as a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralSettings {
    /// The service to look for (and whose characteristics carry the link).
    pub service: Uuid,
    /// Only the device with this address.
    pub address: Option<String>,
    /// The local adapter to use (`hci0`...); `None`: the first one.
    pub adapter: Option<String>,
    /// The datagram size: both ends must use the same, at most the ATT MTU
    /// less 3.
    pub mtu: usize,
    /// How long to scan for the peripheral before giving up.
    pub scan: Duration,
}

impl CentralSettings {
    /// Read and check a `ble://` address.
    pub fn from_address(addr: &Address) -> Result<Self, Error> {
        if addr.scheme() != CENTRAL_SCHEME {
            return Err(invalid(addr, "not a ble:// address"));
        }
        addr.check_params(CENTRAL_PARAMS)?;
        if addr.port().is_some() || (!addr.path().is_empty() && addr.path() != "/") {
            return Err(invalid(
                addr,
                "a ble:// address is ble://?service=UUID or ble://[AA:BB:CC:DD:EE:FF]",
            ));
        }
        let address = match (addr.host(), addr.param("address")) {
            ("", None) => None,
            ("", Some(a)) | (a, None) => Some(device_address(addr, a)?),
            (_, Some(_)) => {
                return Err(invalid(addr, "the device address is given twice"));
            }
        };
        let scan_ms = addr
            .param_parse::<u64>("scan_ms")?
            .unwrap_or(DEFAULT_SCAN.as_millis() as u64);
        if !(1..=600_000).contains(&scan_ms) {
            return Err(invalid(
                addr,
                format!("scan_ms={scan_ms} is not valid: expected 1 to 600000"),
            ));
        }
        Ok(Self {
            service: service(addr)?,
            address,
            adapter: adapter(addr)?,
            mtu: mtu(addr)?,
            scan: Duration::from_millis(scan_ms),
        })
    }
}

/// The GATT peripheral a `bleperipheral://` address asks for.
///
/// `bleperipheral://?adapter=hci0&service=<uuid>&name=oscloud&mtu=20`, every
/// parameter optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeripheralSettings {
    /// The service to offer.
    pub service: Uuid,
    /// The local adapter to use; `None`: BlueZ's default one.
    pub adapter: Option<String>,
    /// The name to advertise.
    pub name: String,
    /// The datagram size (the same as the central's).
    pub mtu: usize,
}

impl PeripheralSettings {
    /// Read and check a `bleperipheral://` address.
    pub fn from_address(addr: &Address) -> Result<Self, Error> {
        if addr.scheme() != PERIPHERAL_SCHEME {
            return Err(invalid(addr, "not a bleperipheral:// address"));
        }
        addr.check_params(PERIPHERAL_PARAMS)?;
        if !addr.host().is_empty()
            || addr.port().is_some()
            || (!addr.path().is_empty() && addr.path() != "/")
        {
            return Err(invalid(
                addr,
                "a bleperipheral:// address has parameters only, e.g. bleperipheral://?adapter=hci0",
            ));
        }
        let name = addr.param("name").unwrap_or("oscloud").to_owned();
        if name.is_empty() || name.len() > 20 {
            return Err(invalid(
                addr,
                format!("name={name:?} is not valid: 1 to 20 bytes (it must fit an advertisement)"),
            ));
        }
        Ok(Self {
            service: service(addr)?,
            adapter: adapter(addr)?,
            name,
            mtu: mtu(addr)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn central(s: &str) -> Result<CentralSettings, Error> {
        CentralSettings::from_address(&s.parse()?)
    }

    fn peripheral(s: &str) -> Result<PeripheralSettings, Error> {
        PeripheralSettings::from_address(&s.parse()?)
    }

    #[test]
    fn central_addresses() {
        let c = central("ble://").unwrap();
        assert_eq!(
            (c.service, c.address, c.mtu),
            (DEFAULT_SERVICE, None, DEFAULT_MTU)
        );
        let c = central("ble://[aa:bb:cc:dd:ee:ff]?mtu=244&adapter=hci1").unwrap();
        assert_eq!(c.address.as_deref(), Some("AA:BB:CC:DD:EE:FF"));
        assert_eq!((c.mtu, c.adapter.as_deref()), (244, Some("hci1")));
        let c = central(
            "ble://?address=AA-BB-CC-DD-EE-01&service=0000180d-0000-1000-8000-00805f9b34fb",
        )
        .unwrap();
        assert_eq!(c.address.as_deref(), Some("AA:BB:CC:DD:EE:01"));
        assert_eq!(
            c.service,
            Uuid::from_u128(0x0000180d_0000_1000_8000_00805f9b34fb)
        );
    }

    #[test]
    fn bad_central_addresses_name_the_problem() {
        for (addr, says) in [
            ("ble://?service=nope", "service="),
            ("ble://?mtu=2", "mtu=2"),
            ("ble://?mtu=600", "mtu=600"),
            ("ble://[aa:bb]", "address \"aa:bb\""),
            ("ble://?address=zz:bb:cc:dd:ee:ff", "address \"zz"),
            (
                "ble://[aa:bb:cc:dd:ee:ff]?address=aa:bb:cc:dd:ee:ff",
                "given twice",
            ),
            ("ble://?scan_ms=0", "scan_ms"),
            ("ble://?adapter=", "adapter="),
            ("ble://?power=1", "power"),
        ] {
            let err = central(addr).unwrap_err();
            assert!(err.to_string().contains(says), "{addr}: {err}");
        }
    }

    #[test]
    fn peripheral_addresses() {
        let p = peripheral("bleperipheral://").unwrap();
        assert_eq!(
            (p.service, p.adapter, p.name.as_str()),
            (DEFAULT_SERVICE, None, "oscloud")
        );
        let p = peripheral("bleperipheral://?adapter=hci0&name=board&mtu=100").unwrap();
        assert_eq!(
            (p.adapter.as_deref(), p.name.as_str(), p.mtu),
            (Some("hci0"), "board", 100)
        );
        for (addr, says) in [
            ("bleperipheral://hci0", "parameters only"),
            ("bleperipheral://?name=", "name="),
            ("bleperipheral://?mtu=x", "mtu"),
            ("bleperipheral://?address=x", "address"),
        ] {
            let err = peripheral(addr).unwrap_err();
            assert!(err.to_string().contains(says), "{addr}: {err}");
        }
    }
}
