//! # oscloud-transport-tcp: TCP links for oscloud nodes
//!
//! Addresses: `tcp://host:port` (`tcp://127.0.0.1:7000`, `tcp://[::1]:7000`,
//! `tcp://localhost:7000`). Listening on port 0 lets the system choose; the
//! listener's [`local_address`](oscloud_core::transport::Listener::local_address)
//! tells which. Every socket has `TCP_NODELAY` set, so small messages are
//! not held back. A TCP link is a
//! [`ReliableStream`](oscloud_core::transport::LinkKind::ReliableStream).
//! No parameters are accepted; an unknown one is an error.
//!
//! Errors: a refused connection is
//! [`ConnectionRefused`](oscloud_core::Error::ConnectionRefused), a name that
//! does not resolve or a host that cannot be reached is
//! [`Unreachable`](oscloud_core::Error::Unreachable), a port in use is
//! [`AddressInUse`](oscloud_core::Error::AddressInUse), a missing port is
//! [`InvalidAddress`](oscloud_core::Error::InvalidAddress).
//!
//! ```
//! use std::sync::Arc;
//! use oscloud_core::transport::{LinkKind, Transports};
//! use oscloud_transport_tcp::TcpTransport;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let transports = Transports::new().with(Arc::new(TcpTransport));
//! let mut listener = transports.listen(&"tcp://127.0.0.1:0".parse()?).await?;
//! let at = listener.local_address();
//! assert_ne!(at.port(), Some(0));
//! let link = transports.connect(&at).await?;
//! assert_eq!(link.info.kind, LinkKind::ReliableStream);
//! let accepted = listener.accept().await?;
//! assert_eq!(accepted.info.remote, link.info.local);
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]

use async_trait::async_trait;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, LinkKind, Listener, Transport, io_error};
use tokio::net::{TcpListener, TcpStream};

/// The URI scheme of this transport.
pub const SCHEME: &str = "tcp";

/// TCP links (`tcp://host:port`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

fn host_port(addr: &Address) -> Result<(String, u16), Error> {
    addr.check_params(&[])?;
    if !addr.path().is_empty() && addr.path() != "/" {
        return Err(Error::InvalidAddress {
            input: addr.to_string(),
            reason: "a TCP address has no path".into(),
        });
    }
    host_and_port(addr)
}

/// The host and port of `addr` (any scheme whose authority is
/// `host:port`), or an [`InvalidAddress`](Error::InvalidAddress) error
/// saying which is missing. Parameters and path are left to the caller.
pub fn host_and_port(addr: &Address) -> Result<(String, u16), Error> {
    let scheme = addr.scheme();
    let port = addr.port().ok_or_else(|| Error::InvalidAddress {
        input: addr.to_string(),
        reason: match addr.port_text() {
            Some(t) => format!("bad port {t:?}: expected 0 to 65535"),
            None => format!("a {scheme} address needs a port, e.g. {scheme}://127.0.0.1:7000"),
        },
    })?;
    if addr.host().is_empty() {
        return Err(Error::InvalidAddress {
            input: addr.to_string(),
            reason: format!("a {scheme} address needs a host, e.g. {scheme}://127.0.0.1:7000"),
        });
    }
    Ok((addr.host().to_owned(), port))
}

fn link(stream: TcpStream, addr: &Address) -> Result<Link, Error> {
    stream.set_nodelay(true).map_err(|e| io_error(addr, &e))?;
    let local = stream
        .local_addr()
        .map(|a| format!("tcp://{a}"))
        .unwrap_or_else(|_| "tcp://?".into());
    let remote = stream
        .peer_addr()
        .map(|a| format!("tcp://{a}"))
        .unwrap_or_else(|_| addr.to_string());
    let (r, w) = stream.into_split();
    Ok(Link::stream(LinkKind::ReliableStream, local, remote, r, w))
}

/// Resolve `host:port`, mapping a failed lookup to `Unreachable`.
async fn resolve(
    addr: &Address,
    host: &str,
    port: u16,
) -> Result<Vec<std::net::SocketAddr>, Error> {
    let found: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::Unreachable {
            address: addr.to_string(),
            reason: format!("cannot resolve {host:?}: {e}"),
        })?
        .collect();
    if found.is_empty() {
        return Err(Error::Unreachable {
            address: addr.to_string(),
            reason: format!("{host:?} resolves to no address"),
        });
    }
    Ok(found)
}

/// Open a TCP connection to the `host:port` of `addr` (any scheme carried
/// over TCP), trying each address the host resolves to in turn. Errors
/// are those of [`TcpTransport::connect`]; parameters and path are not
/// looked at.
pub async fn dial(addr: &Address) -> Result<TcpStream, Error> {
    let (host, port) = host_and_port(addr)?;
    let mut last = None;
    for target in resolve(addr, &host, port).await? {
        match TcpStream::connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(io_error(addr, &e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::ConnectionRefused {
        address: addr.to_string(),
    }))
}

/// Bind a TCP listener at the `host:port` of `addr` (port 0 lets the
/// system choose); returns it with `addr` carrying the port bound.
pub async fn bind(addr: &Address) -> Result<(TcpListener, Address), Error> {
    let (host, port) = host_and_port(addr)?;
    let target = resolve(addr, &host, port).await?;
    let listener = TcpListener::bind(&target[..])
        .await
        .map_err(|e| io_error(addr, &e))?;
    let bound = listener.local_addr().map_err(|e| io_error(addr, &e))?;
    Ok((listener, addr.clone().with_port(bound.port())))
}

#[async_trait]
impl Transport for TcpTransport {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        host_port(addr)?;
        link(dial(addr).await?, addr)
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        host_port(addr)?;
        let (listener, address) = bind(addr).await?;
        Ok(Box::new(TcpLinks { listener, address }))
    }
}

struct TcpLinks {
    listener: TcpListener,
    address: Address,
}

#[async_trait]
impl Listener for TcpLinks {
    async fn accept(&mut self) -> Result<Link, Error> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| io_error(&self.address, &e))?;
        link(stream, &self.address)
    }

    fn local_address(&self) -> Address {
        self.address.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oscloud_core::transport::LinkIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Link, Link) {
        let mut l = TcpTransport
            .listen(&"tcp://127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let at = l.local_address();
        let dialed = TcpTransport.connect(&at).await.unwrap();
        let accepted = l.accept().await.unwrap();
        (dialed, accepted)
    }

    #[tokio::test]
    async fn echo_both_ways() {
        let (a, b) = pair().await;
        let (
            LinkIo::Stream {
                reader: mut ar,
                writer: mut aw,
            },
            LinkIo::Stream {
                reader: mut br,
                writer: mut bw,
            },
        ) = (a.io, b.io)
        else {
            panic!("TCP links are streams");
        };
        aw.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        br.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        bw.write_all(b"pong").await.unwrap();
        ar.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[tokio::test]
    async fn port_zero_is_reported() {
        let l = TcpTransport
            .listen(&"tcp://127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert!(l.local_address().port().is_some_and(|p| p != 0));
    }

    #[tokio::test]
    async fn refused_and_in_use() {
        let l = TcpTransport
            .listen(&"tcp://127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let at = l.local_address();
        let err = TcpTransport.listen(&at).await.err().unwrap();
        assert!(matches!(err, Error::AddressInUse { .. }), "{err}");
        drop(l);
        let err = TcpTransport.connect(&at).await.unwrap_err();
        assert!(matches!(err, Error::ConnectionRefused { .. }), "{err}");
    }

    #[tokio::test]
    async fn bad_addresses() {
        for (addr, says) in [
            ("tcp://127.0.0.1", "needs a port"),
            ("tcp://127.0.0.1:ff", "bad port \"ff\""),
            ("tcp://:7000", "needs a host"),
            ("tcp://127.0.0.1:7000/x", "no path"),
            ("tcp://127.0.0.1:7000?nodelay=false", "unknown parameter"),
        ] {
            let err = TcpTransport
                .connect(&addr.parse().unwrap())
                .await
                .unwrap_err();
            assert!(err.to_string().contains(says), "{addr}: {err}");
        }
        let err = TcpTransport
            .connect(&"tcp://no-such-host.invalid:1".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    }
}
