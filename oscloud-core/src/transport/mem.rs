//! `mem://name`: in-process links, for tests and single-process nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Link, LinkKind, Listener, Transport};
use crate::Error;
use crate::address::Address;

/// Bytes buffered in each direction of an in-process link.
const BUFFER: usize = 256 * 1024;

/// In-process links (`mem://name`). Clones share one set of names, and
/// separate `MemTransport::new()`s are isolated from each other, so tests
/// never collide.
#[derive(Debug, Clone, Default)]
pub struct MemTransport {
    hub: Arc<Mutex<HashMap<String, mpsc::Sender<Link>>>>,
}

impl MemTransport {
    /// A new, empty set of names.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Link>>> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn name_of(addr: &Address) -> Result<String, Error> {
    addr.check_params(&[])?;
    if addr.host().is_empty() {
        return Err(Error::InvalidAddress {
            input: addr.to_string(),
            reason: "expected mem://name".into(),
        });
    }
    Ok(addr.host().to_owned())
}

#[async_trait]
impl Transport for MemTransport {
    fn scheme(&self) -> &'static str {
        "mem"
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        let name = name_of(addr)?;
        let listener = self
            .lock()
            .get(&name)
            .cloned()
            .ok_or_else(|| Error::ConnectionRefused {
                address: addr.to_string(),
            })?;
        let (near, far) = tokio::io::duplex(BUFFER);
        let (near_r, near_w) = tokio::io::split(near);
        let (far_r, far_w) = tokio::io::split(far);
        let remote = addr.to_string();
        let accepted = Link::stream(
            LinkKind::ReliableStream,
            remote.clone(),
            "mem://(dialer)",
            far_r,
            far_w,
        );
        listener
            .send(accepted)
            .await
            .map_err(|_| Error::ConnectionRefused {
                address: remote.clone(),
            })?;
        Ok(Link::stream(
            LinkKind::ReliableStream,
            "mem://(dialer)",
            remote,
            near_r,
            near_w,
        ))
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        let name = name_of(addr)?;
        let mut hub = self.lock();
        if hub.get(&name).is_some_and(|tx| !tx.is_closed()) {
            return Err(Error::AddressInUse {
                address: addr.to_string(),
            });
        }
        let (tx, rx) = mpsc::channel(16);
        hub.insert(name.clone(), tx.clone());
        Ok(Box::new(MemListener {
            transport: self.clone(),
            tx,
            name,
            address: addr.clone(),
            incoming: rx,
        }))
    }
}

struct MemListener {
    transport: MemTransport,
    tx: mpsc::Sender<Link>,
    name: String,
    address: Address,
    incoming: mpsc::Receiver<Link>,
}

#[async_trait]
impl Listener for MemListener {
    async fn accept(&mut self) -> Result<Link, Error> {
        self.incoming.recv().await.ok_or_else(|| Error::Io {
            address: self.address.to_string(),
            kind: std::io::ErrorKind::BrokenPipe,
            message: "listener closed".into(),
        })
    }

    fn local_address(&self) -> Address {
        self.address.clone()
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        let mut hub = self.transport.lock();
        // Free the name unless a newer listener has it already.
        if hub
            .get(&self.name)
            .is_some_and(|tx| tx.same_channel(&self.tx))
        {
            hub.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{LinkIo, Transports};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connect_accept_both_ways() {
        let mem = MemTransport::new();
        let t = Transports::new().with(Arc::new(mem));
        let addr: Address = "mem://a".parse().unwrap();
        let mut l = t.listen(&addr).await.unwrap();
        assert_eq!(l.local_address(), addr);
        let dialed = t.connect(&addr).await.unwrap();
        let accepted = l.accept().await.unwrap();
        assert_eq!(dialed.info.kind, LinkKind::ReliableStream);
        let (LinkIo::Stream { mut reader, .. }, LinkIo::Stream { mut writer, .. }) =
            (accepted.io, dialed.io)
        else {
            panic!("mem links are streams");
        };
        writer.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        reader.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn errors() {
        let t = Transports::new().with(Arc::new(MemTransport::new()));
        let addr: Address = "mem://b".parse().unwrap();
        assert!(matches!(
            t.connect(&addr).await,
            Err(Error::ConnectionRefused { .. })
        ));
        let l = t.listen(&addr).await.unwrap();
        assert!(matches!(
            t.listen(&addr).await,
            Err(Error::AddressInUse { .. })
        ));
        drop(l);
        let _again = t.listen(&addr).await.unwrap();
        let err = t.connect(&"tcp://x:1".parse().unwrap()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "no transport for scheme \"tcp\" (known: mem)"
        );
        assert!(t.listen(&"mem://".parse().unwrap()).await.is_err());
    }
}
