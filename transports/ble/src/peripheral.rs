//! The peripheral side: a GATT service with a write-without-response and a
//! notify characteristic, advertised, through BlueZ (`bluer`). Linux only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bluer::Adapter;
use bluer::adv::{Advertisement, AdvertisementHandle, Type};
use bluer::gatt::local::{
    Application, ApplicationHandle, Characteristic, CharacteristicNotifier, CharacteristicNotify,
    CharacteristicNotifyMethod, CharacteristicWrite, CharacteristicWriteMethod, Service,
};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, Listener, Transport};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::PERIPHERAL_SCHEME;
use crate::chan::{self, Incoming};
use crate::notifying::{self, Central, Disconnect, Notifier};
use crate::settings::{FROM_PERIPHERAL, PeripheralSettings, TO_PERIPHERAL};

/// BLE links from the peripheral side (`bleperipheral://?adapter=hci0`),
/// through BlueZ: Linux only, with `bluetoothd` running on the system bus.
///
/// [`listen`](Transport::listen) powers the adapter on, makes it
/// discoverable, registers the GATT service and advertises it; the listener
/// yields a link each time a central subscribes to the notify
/// characteristic. The link ends when the central unsubscribes or
/// disconnects. Dropping the listener withdraws the service and the
/// advertisement.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlePeripheralTransport;

fn failed(addr: &Address, reason: impl Into<String>) -> Error {
    Error::LinkFailed {
        address: addr.to_string(),
        reason: reason.into(),
    }
}

/// The current link: its receiver, where written datagrams go, and its
/// central (learnt from the writes).
#[derive(Clone)]
struct Current {
    inbound: mpsc::Sender<Incoming>,
    central: Central,
}

/// Where written datagrams go: the current link, if any.
type Sink = Arc<Mutex<Option<Current>>>;

fn sink_of(sink: &Sink) -> Option<Current> {
    sink.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// BlueZ's notification session, as the link's task uses it.
impl Notifier for CharacteristicNotifier {
    fn notify(&mut self, datagram: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        async move {
            CharacteristicNotifier::notify(self, datagram)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        CharacteristicNotifier::stopped(self).boxed()
    }

    fn is_stopped(&self) -> bool {
        CharacteristicNotifier::is_stopped(self)
    }
}

/// Ends a central's connection through BlueZ (`Device1.Disconnect` on the
/// peripheral's adapter).
struct AdapterConnections(Adapter);

impl Disconnect for AdapterConnections {
    fn disconnect(&self, central: bluer::Address) -> BoxFuture<'static, Result<(), String>> {
        let device = self.0.device(central);
        async move {
            device
                .map_err(|e| e.to_string())?
                .disconnect()
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }
}

#[async_trait]
impl Transport for BlePeripheralTransport {
    fn scheme(&self) -> &'static str {
        PERIPHERAL_SCHEME
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        PeripheralSettings::from_address(addr)?;
        Err(Error::InvalidAddress {
            input: addr.to_string(),
            reason: "a BLE peripheral waits for its central: listen on bleperipheral:// and dial it with ble://".into(),
        })
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        let s = PeripheralSettings::from_address(addr)?;
        let session = bluer::Session::new().await.map_err(|e| {
            failed(
                addr,
                format!("cannot reach BlueZ: {e} (is bluetoothd running on the system bus?)"),
            )
        })?;
        let adapter = match &s.adapter {
            Some(name) => session.adapter(name),
            None => session.default_adapter().await,
        }
        .map_err(|e| Error::Unreachable {
            address: addr.to_string(),
            reason: format!("no Bluetooth adapter: {e}"),
        })?;
        let adapter_name = adapter.name().to_owned();
        adapter
            .set_powered(true)
            .await
            .map_err(|e| failed(addr, format!("cannot power {adapter_name} on: {e}")))?;
        // Without Discoverable, bluetoothd drops a peripheral's connections.
        adapter.set_discoverable(true).await.map_err(|e| {
            failed(
                addr,
                format!("cannot make {adapter_name} discoverable: {e}"),
            )
        })?;
        let own = adapter
            .address()
            .await
            .map(|a| a.to_string())
            .unwrap_or_default();

        let sink: Sink = Arc::default();
        let (links_tx, links) = mpsc::unbounded_channel::<Link>();
        let write_sink = sink.clone();
        let warned = Arc::new(AtomicBool::new(false));
        let notify_sink = sink.clone();
        let notify_adapter = adapter.clone();
        let mtu = s.mtu;
        let local = format!("bleperipheral {adapter_name} [{own}]");
        let local2 = local.clone();
        let app = Application {
            services: vec![Service {
                uuid: s.service,
                primary: true,
                characteristics: vec![
                    Characteristic {
                        uuid: TO_PERIPHERAL,
                        write: Some(CharacteristicWrite {
                            write_without_response: true,
                            method: CharacteristicWriteMethod::Fun(Box::new(move |value, req| {
                                // Handed on here, in the order BlueZ calls
                                // (the returned futures may run in any
                                // order). A full queue drops the datagram,
                                // which the session re-sends.
                                if value.len() + 3 > usize::from(req.mtu)
                                    && req.mtu > 0
                                    && !warned.swap(true, Ordering::Relaxed)
                                {
                                    warn!(
                                        len = value.len(),
                                        att_mtu = req.mtu,
                                        "BLE write as large as the ATT MTU allows: lower mtu= on both ends"
                                    );
                                }
                                if value.len() > mtu && !warned.swap(true, Ordering::Relaxed) {
                                    warn!(
                                        len = value.len(),
                                        mtu,
                                        "BLE write larger than mtu=: use the same mtu= on both ends"
                                    );
                                }
                                if let Some(current) = sink_of(&write_sink) {
                                    current.central.wrote(req.device_address);
                                    let _ = current.inbound.try_send(Ok(Bytes::from(value)));
                                }
                                async move { Ok(()) }.boxed()
                            })),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Characteristic {
                        uuid: FROM_PERIPHERAL,
                        notify: Some(CharacteristicNotify {
                            notify: true,
                            method: CharacteristicNotifyMethod::Fun(Box::new(move |notifier| {
                                // A central subscribed: a new link.
                                let (in_tx, in_rx) = mpsc::channel(1024);
                                let (out_tx, out_rx) = mpsc::channel::<Bytes>(16);
                                let central = Central::default();
                                let previous = notify_sink
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .replace(Current {
                                        inbound: in_tx.clone(),
                                        central: central.clone(),
                                    });
                                if let Some(old) = previous {
                                    let _ = old
                                        .inbound
                                        .try_send(Err("another central subscribed".into()));
                                }
                                let _ = links_tx.send(chan::link(
                                    mtu,
                                    local2.clone(),
                                    "ble central".to_owned(),
                                    in_rx,
                                    out_tx,
                                ));
                                let sink = notify_sink.clone();
                                let connections = AdapterConnections(notify_adapter.clone());
                                async move {
                                    debug!("BLE central subscribed");
                                    notifying::run(
                                        notifier,
                                        out_rx,
                                        &in_tx,
                                        &central,
                                        &connections,
                                    )
                                    .await;
                                    let mut current =
                                        sink.lock().unwrap_or_else(|p| p.into_inner());
                                    if current
                                        .as_ref()
                                        .is_some_and(|c| c.inbound.same_channel(&in_tx))
                                    {
                                        *current = None;
                                    }
                                }
                                .boxed()
                            })),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let app = adapter
            .serve_gatt_application(app)
            .await
            .map_err(|e| failed(addr, format!("cannot register the GATT service: {e}")))?;
        let adv = adapter
            .advertise(Advertisement {
                advertisement_type: Type::Peripheral,
                service_uuids: [s.service].into_iter().collect(),
                discoverable: Some(true),
                local_name: Some(s.name.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| failed(addr, format!("cannot advertise: {e}")))?;
        // The GATT application's D-Bus object (ApplicationHandle { path }),
        // where BlueZ calls StartNotify and StopNotify.
        info!(%addr, adapter = %adapter_name, address = %own, service = %s.service, gatt = ?app, "BLE peripheral advertising");
        Ok(Box::new(BleLinks {
            _app: app,
            _adv: adv,
            _session: session,
            links,
            address: addr.clone(),
            _local: local,
        }))
    }
}

/// The links of one peripheral: one per subscribing central.
struct BleLinks {
    _app: ApplicationHandle,
    _adv: AdvertisementHandle,
    _session: bluer::Session,
    links: mpsc::UnboundedReceiver<Link>,
    address: Address,
    _local: String,
}

#[async_trait]
impl Listener for BleLinks {
    async fn accept(&mut self) -> Result<Link, Error> {
        self.links
            .recv()
            .await
            .ok_or_else(|| failed(&self.address, "the GATT service is gone"))
    }

    fn local_address(&self) -> Address {
        self.address.clone()
    }
}
