//! The central side: scan, connect, write-without-response and notify,
//! through btleplug.

use async_trait::async_trait;
use btleplug::api::{
    Central, CentralEvent, Characteristic, Manager as _, Peripheral as _, ScanFilter, WriteType,
};
use btleplug::platform::{Adapter, Manager, Peripheral};
use bytes::Bytes;
use std::time::Duration;

use futures::StreamExt;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, Listener, Transport};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::CENTRAL_SCHEME;
use crate::chan;
use crate::settings::{CentralSettings, FROM_PERIPHERAL, TO_PERIPHERAL};

/// BLE links from the central side (`ble://?service=UUID`,
/// `ble://[AA:BB:CC:DD:EE:FF]`), through btleplug (BlueZ on Linux,
/// CoreBluetooth on macOS, WinRT on Windows).
///
/// Dialling scans for the peripheral, connects, subscribes to its notify
/// characteristic and returns a datagram link: each datagram is one
/// write-without-response one way and one notification the other. There
/// is nothing to listen on: the peripheral side listens (see
/// [`BlePeripheralTransport`](crate::BlePeripheralTransport)).
#[derive(Debug, Clone, Copy, Default)]
pub struct BleCentralTransport;

fn failed(addr: &Address, reason: impl Into<String>) -> Error {
    Error::LinkFailed {
        address: addr.to_string(),
        reason: reason.into(),
    }
}

async fn pick_adapter(addr: &Address, s: &CentralSettings) -> Result<Adapter, Error> {
    let manager = Manager::new().await.map_err(|e| {
        failed(
            addr,
            format!(
                "cannot reach the Bluetooth stack: {e} (is bluetoothd running on the system bus?)"
            ),
        )
    })?;
    let adapters = manager
        .adapters()
        .await
        .map_err(|e| failed(addr, format!("cannot list Bluetooth adapters: {e}")))?;
    let mut names = Vec::new();
    for a in adapters {
        let info = a.adapter_info().await.unwrap_or_default();
        match &s.adapter {
            None => return Ok(a),
            Some(want) if info.split_whitespace().next() == Some(want.as_str()) => return Ok(a),
            Some(_) => names.push(info),
        }
    }
    Err(Error::Unreachable {
        address: addr.to_string(),
        reason: match &s.adapter {
            Some(want) => format!("no Bluetooth adapter {want} (there: {})", names.join(", ")),
            None => "this machine has no Bluetooth adapter".into(),
        },
    })
}

/// Whether `p` is the peripheral the settings name.
async fn matches(p: &Peripheral, s: &CentralSettings) -> bool {
    if let Some(want) = &s.address {
        return p.address().to_string().eq_ignore_ascii_case(want);
    }
    match p.properties().await {
        Ok(Some(props)) => props.services.contains(&s.service),
        _ => false,
    }
}

/// How long one scan runs before it is restarted (see [`find`]).
const RESCAN: Duration = Duration::from_secs(3);

/// Scan until the peripheral shows up, for `s.scan` at most.
///
/// The scan is stopped and started again every [`RESCAN`]: BlueZ
/// reports a device once per discovery when its advertising data does
/// not change, and some controllers (BlueZ's own emulator, `btvirt`)
/// report an advertiser only when scanning or advertising is enabled, so
/// an advertisement that starts, or a report that is lost, while a long
/// scan runs was seen only at the next dial.
async fn find(addr: &Address, adapter: &Adapter, s: &CentralSettings) -> Result<Peripheral, Error> {
    let mut events = adapter
        .events()
        .await
        .map_err(|e| failed(addr, format!("cannot watch the adapter: {e}")))?;
    let filter = ScanFilter {
        services: if s.address.is_some() {
            vec![]
        } else {
            vec![s.service]
        },
    };
    let deadline = tokio::time::Instant::now() + s.scan;
    let mut scans = 0u32;
    let found = loop {
        if let Some(p) = known(adapter, s).await {
            break Some(p);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break None;
        }
        adapter
            .start_scan(filter.clone())
            .await
            .map_err(|e| failed(addr, format!("cannot scan: {e}")))?;
        scans += 1;
        let until = deadline.min(now + RESCAN);
        let seen = tokio::time::timeout_at(until, async {
            while let Some(ev) = events.next().await {
                if let CentralEvent::DeviceDiscovered(id) | CentralEvent::DeviceUpdated(id) = ev
                    && let Ok(p) = adapter.peripheral(&id).await
                    && matches(&p, s).await
                {
                    return Some(p);
                }
            }
            None
        })
        .await;
        let _ = adapter.stop_scan().await;
        match seen {
            Ok(Some(p)) => break Some(p),
            Ok(None) => break None,
            Err(_) => {}
        }
    };
    debug!(%addr, scans, found = found.is_some(), "BLE scan");
    match found {
        Some(p) => Ok(p),
        None => Err(Error::Unreachable {
            address: addr.to_string(),
            reason: match &s.address {
                Some(a) => format!("no BLE device {a} found within {:?}", s.scan),
                None => format!(
                    "no BLE peripheral advertising service {} found within {:?}",
                    s.service, s.scan
                ),
            },
        }),
    }
}

/// A peripheral BlueZ already knows that matches the settings.
async fn known(adapter: &Adapter, s: &CentralSettings) -> Option<Peripheral> {
    for p in adapter.peripherals().await.unwrap_or_default() {
        if matches(&p, s).await {
            return Some(p);
        }
    }
    None
}

fn characteristic(p: &Peripheral, uuid: uuid::Uuid) -> Option<Characteristic> {
    p.characteristics().into_iter().find(|c| c.uuid == uuid)
}

#[async_trait]
impl Transport for BleCentralTransport {
    fn scheme(&self) -> &'static str {
        CENTRAL_SCHEME
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        let s = CentralSettings::from_address(addr)?;
        let adapter = pick_adapter(addr, &s).await?;
        let p = find(addr, &adapter, &s).await?;
        let remote = format!("ble://[{}]", p.address());
        if !p.is_connected().await.unwrap_or(false)
            && let Err(e) = p.connect().await
        {
            // A connect that timed out on our side may still be pending
            // in BlueZ, and the next dial would then fail with
            // "Operation already in progress": cancel it.
            let _ = p.disconnect().await;
            return Err(failed(addr, format!("cannot connect to {remote}: {e}")));
        }
        let ready = async {
            p.discover_services()
                .await
                .map_err(|e| format!("cannot discover services: {e}"))?;
            let to = characteristic(&p, TO_PERIPHERAL)
                .ok_or_else(|| format!("{remote} lacks the characteristic {TO_PERIPHERAL}"))?;
            let from = characteristic(&p, FROM_PERIPHERAL)
                .ok_or_else(|| format!("{remote} lacks the characteristic {FROM_PERIPHERAL}"))?;
            p.subscribe(&from)
                .await
                .map_err(|e| format!("cannot subscribe to notifications: {e}"))?;
            let notes = p
                .notifications()
                .await
                .map_err(|e| format!("cannot receive notifications: {e}"))?;
            let events = adapter
                .events()
                .await
                .map_err(|e| format!("cannot watch the adapter: {e}"))?;
            Ok::<_, String>((to, notes, events))
        };
        let (to, mut notes, mut events) = match ready.await {
            Ok(r) => r,
            Err(reason) => {
                let _ = p.disconnect().await;
                return Err(failed(addr, reason));
            }
        };
        debug!(%addr, %remote, "BLE peripheral connected");
        let (in_tx, in_rx) = mpsc::channel(64);
        let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(16);
        let id = p.id();
        // Notifications in, until the peripheral disconnects or the link
        // is dropped.
        let reader = p.clone();
        tokio::spawn(async move {
            let why = loop {
                tokio::select! {
                    note = notes.next() => match note {
                        Some(n) if n.uuid == FROM_PERIPHERAL => {
                            if in_tx.send(Ok(Bytes::from(n.value))).await.is_err() {
                                break None;
                            }
                        }
                        Some(_) => {}
                        None => break Some("the BLE notification stream ended".to_owned()),
                    },
                    ev = events.next() => match ev {
                        Some(CentralEvent::DeviceDisconnected(gone)) if gone == id => {
                            break Some("the BLE peripheral disconnected".to_owned());
                        }
                        Some(_) => {}
                        None => break Some("the Bluetooth adapter went away".to_owned()),
                    },
                    () = in_tx.closed() => break None,
                }
            };
            if let Some(why) = why {
                info!("BLE link down: {why}");
                let _ = in_tx.send(Err(why)).await;
            }
            let _ = reader.disconnect().await;
        });
        // Datagrams out, one write-without-response each.
        let writer = p.clone();
        tokio::spawn(async move {
            while let Some(d) = out_rx.recv().await {
                if let Err(e) = writer.write(&to, &d, WriteType::WithoutResponse).await {
                    info!("BLE link down: write failed: {e}");
                    break;
                }
            }
            let _ = writer.disconnect().await;
        });
        let local = adapter
            .adapter_info()
            .await
            .map(|i| format!("ble central {i}"))
            .unwrap_or_else(|_| "ble central".into());
        Ok(chan::link(s.mtu, local, remote, in_rx, out_tx))
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        Err(Error::InvalidAddress {
            input: addr.to_string(),
            reason:
                "a BLE central dials (connect); the peripheral side listens on bleperipheral://"
                    .into(),
        })
    }
}
