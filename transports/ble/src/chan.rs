//! Datagram link halves over channels, filled and drained by the tasks
//! that talk to the Bluetooth stack.

use async_trait::async_trait;
use bytes::Bytes;
use oscloud_core::Error;
use oscloud_core::transport::{DatagramRx, DatagramTx, Link, LinkInfo, LinkIo, LinkKind};
use tokio::sync::mpsc;

/// What the stack's task passes on: a datagram, or why the link is down.
pub(crate) type Incoming = Result<Bytes, String>;

/// The receiving half: datagrams from the stack's task.
#[derive(Debug)]
pub(crate) struct ChannelRx {
    pub(crate) rx: mpsc::Receiver<Incoming>,
    pub(crate) address: String,
}

#[async_trait]
impl DatagramRx for ChannelRx {
    async fn recv(&mut self) -> Result<Bytes, Error> {
        match self.rx.recv().await {
            Some(Ok(d)) => Ok(d),
            Some(Err(reason)) => Err(Error::LinkFailed {
                address: self.address.clone(),
                reason,
            }),
            None => Err(Error::LinkFailed {
                address: self.address.clone(),
                reason: "the BLE link closed".into(),
            }),
        }
    }
}

/// The sending half: datagrams for the stack's task.
#[derive(Debug)]
pub(crate) struct ChannelTx {
    pub(crate) tx: mpsc::Sender<Bytes>,
    pub(crate) address: String,
}

#[async_trait]
impl DatagramTx for ChannelTx {
    async fn send(&self, datagram: Bytes) -> Result<(), Error> {
        self.tx.send(datagram).await.map_err(|_| Error::LinkFailed {
            address: self.address.clone(),
            reason: "the BLE link closed".into(),
        })
    }
}

/// A datagram link of `mtu` bytes over the two channels: datagrams (or
/// why the link is down) come in on `inbound`, and go out on `outbound`.
pub(crate) fn link(
    mtu: usize,
    local: String,
    remote: String,
    inbound: mpsc::Receiver<Incoming>,
    outbound: mpsc::Sender<Bytes>,
) -> Link {
    Link {
        info: LinkInfo {
            kind: LinkKind::Datagram { mtu },
            local,
            remote: remote.clone(),
        },
        io: LinkIo::Datagram {
            rx: Box::new(ChannelRx {
                rx: inbound,
                address: remote.clone(),
            }),
            tx: Box::new(ChannelTx {
                tx: outbound,
                address: remote,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn halves_carry_datagrams_and_the_reason() {
        let (in_tx, rx) = mpsc::channel(4);
        let (tx, mut out_rx) = mpsc::channel(4);
        let mut rx = ChannelRx {
            rx,
            address: "ble://x".into(),
        };
        let tx = ChannelTx {
            tx,
            address: "ble://x".into(),
        };
        tx.send(Bytes::from_static(b"out")).await.unwrap();
        assert_eq!(out_rx.recv().await.unwrap(), Bytes::from_static(b"out"));
        in_tx.send(Ok(Bytes::from_static(b"in"))).await.unwrap();
        in_tx.send(Err("disconnected".into())).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"in"));
        let err = rx.recv().await.unwrap_err();
        assert!(err.to_string().contains("disconnected"), "{err}");
        drop(out_rx);
        assert!(tx.send(Bytes::new()).await.is_err());
    }
}
