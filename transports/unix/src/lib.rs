//! # oscloud-transport-unix: Unix-socket links for oscloud nodes
//!
//! Addresses: `unix:///absolute/path.sock`. Listening creates the socket
//! file and dropping the listener removes it. A file left behind by a
//! process that died (nobody accepts on it) is replaced; a socket somebody
//! still listens on is [`AddressInUse`](oscloud_core::Error::AddressInUse);
//! a relative path, a missing directory or a path that is not a socket is
//! [`BadPath`](oscloud_core::Error::BadPath). A Unix link is a
//! [`ReliableStream`](oscloud_core::transport::LinkKind::ReliableStream).
//! Its read half waits for readable events only, and its write half for
//! writable events only while its writes block: a peer reading does not
//! wake a node that waits for an answer.
//!
//! ```
//! use std::sync::Arc;
//! use oscloud_core::transport::Transports;
//! use oscloud_transport_unix::UnixTransport;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let dir = std::env::temp_dir().join(format!("oscloud-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).expect("temp dir");
//! let addr = format!("unix://{}/node.sock", dir.display()).parse()?;
//! let transports = Transports::new().with(Arc::new(UnixTransport));
//! let mut listener = transports.listen(&addr).await?;
//! let _link = transports.connect(&addr).await?;
//! let _accepted = listener.accept().await?;
//! drop(listener); // removes the socket file
//! assert!(!dir.join("node.sock").exists());
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, LinkKind, Listener, Transport, io_error};
use tokio::net::{UnixListener, UnixStream};
use tracing::debug;

mod stream;

/// The URI scheme of this transport.
pub const SCHEME: &str = "unix";

/// Unix-domain socket links (`unix:///path`).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixTransport;

fn bad_path(addr: &Address, reason: impl Into<String>) -> Error {
    Error::BadPath {
        address: addr.to_string(),
        reason: reason.into(),
    }
}

fn path_of(addr: &Address) -> Result<PathBuf, Error> {
    addr.check_params(&[])?;
    if !addr.host().is_empty() || addr.port_or_text().is_some() {
        return Err(Error::InvalidAddress {
            input: addr.to_string(),
            reason: "a Unix address is unix:///absolute/path (three slashes)".into(),
        });
    }
    let path = Path::new(addr.path());
    if !path.is_absolute() {
        return Err(bad_path(addr, "the path must be absolute"));
    }
    Ok(path.to_owned())
}

/// A link over a connected socket, its halves registered as [`stream`]
/// explains.
fn link(stream: UnixStream, addr: &Address, local: String, remote: String) -> Result<Link, Error> {
    let (r, w) = stream
        .into_std()
        .and_then(stream::split)
        .map_err(|e| io_error(addr, &e))?;
    Ok(Link::stream(LinkKind::ReliableStream, local, remote, r, w))
}

#[async_trait]
impl Transport for UnixTransport {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        let path = path_of(addr)?;
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    bad_path(addr, "no socket file there (is the node listening?)")
                }
                _ => io_error(addr, &e),
            })?;
        link(stream, addr, "unix://(dialer)".into(), addr.to_string())
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        let path = path_of(addr)?;
        match path.parent() {
            Some(dir) if dir.is_dir() => {}
            _ => return Err(bad_path(addr, "the directory does not exist")),
        }
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(bad_path(addr, "a file that is not a socket is there"));
            }
            // A socket file: live if somebody accepts on it, stale if not.
            match UnixStream::connect(&path).await {
                Ok(_) => {
                    return Err(Error::AddressInUse {
                        address: addr.to_string(),
                    });
                }
                Err(_) => {
                    debug!(path = %path.display(), "replacing a stale socket file");
                    std::fs::remove_file(&path).map_err(|e| io_error(addr, &e))?;
                }
            }
        }
        let listener = UnixListener::bind(&path).map_err(|e| io_error(addr, &e))?;
        Ok(Box::new(UnixLinks {
            listener,
            path,
            address: addr.clone(),
        }))
    }
}

struct UnixLinks {
    listener: UnixListener,
    path: PathBuf,
    address: Address,
}

#[async_trait]
impl Listener for UnixLinks {
    async fn accept(&mut self) -> Result<Link, Error> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| io_error(&self.address, &e))?;
        link(
            stream,
            &self.address,
            self.address.to_string(),
            "unix://(dialer)".into(),
        )
    }

    fn local_address(&self) -> Address {
        self.address.clone()
    }
}

impl Drop for UnixLinks {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            debug!(path = %self.path.display(), "could not remove the socket file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oscloud_core::transport::LinkIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn addr(dir: &tempfile::TempDir, name: &str) -> Address {
        format!("unix://{}/{name}", dir.path().display())
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn echo_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let at = addr(&dir, "a.sock");
        let mut l = UnixTransport.listen(&at).await.unwrap();
        assert!(dir.path().join("a.sock").exists());
        let dialed = UnixTransport.connect(&at).await.unwrap();
        let accepted = l.accept().await.unwrap();
        let (LinkIo::Stream { writer: mut w, .. }, LinkIo::Stream { reader: mut r, .. }) =
            (dialed.io, accepted.io)
        else {
            panic!("Unix links are streams");
        };
        w.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        drop(l);
        assert!(!dir.path().join("a.sock").exists());
    }

    #[tokio::test]
    async fn live_socket_in_use_stale_socket_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let at = addr(&dir, "b.sock");
        let l = UnixTransport.listen(&at).await.unwrap();
        let err = UnixTransport.listen(&at).await.err().unwrap();
        assert!(matches!(err, Error::AddressInUse { .. }), "{err}");
        drop(l);
        // A stale socket file, as a killed process leaves it.
        let path = dir.path().join("b.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let _l = UnixTransport.listen(&at).await.unwrap();
    }

    #[tokio::test]
    async fn bad_paths_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = addr(&dir, "nope/c.sock");
        let err = UnixTransport.listen(&missing_dir).await.err().unwrap();
        assert!(matches!(err, Error::BadPath { .. }), "{err}");
        let err = UnixTransport
            .connect(&addr(&dir, "absent.sock"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no socket file"), "{err}");
        std::fs::write(dir.path().join("plain"), b"x").unwrap();
        let err = UnixTransport
            .listen(&addr(&dir, "plain"))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
        let err = UnixTransport
            .connect(&"unix://host/x.sock".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("three slashes"), "{err}");
        // A stale file with nobody behind it refuses connections.
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = UnixTransport
            .connect(&addr(&dir, "stale.sock"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ConnectionRefused { .. }), "{err}");
    }
}
