//! # oscloud-transport-ws: WebSocket links for oscloud nodes
//!
//! Addresses: `ws://host:port/path` and `wss://host:port/path` (TLS, with
//! rustls; no OpenSSL). A node listening at `ws://0.0.0.0:7780/oscloud`
//! takes WebSocket connections whose request path is `/oscloud` (an empty
//! path means `/`); any other path gets HTTP 404. Listening on port 0 lets
//! the system choose; the listener's
//! [`local_address`](oscloud_core::transport::Listener::local_address)
//! tells which.
//!
//! ## Framing
//!
//! One oscloud frame (a packet, or a sealed packet in an encrypted
//! session) travels as one **binary** WebSocket message, with no prefix:
//! what a browser's `WebSocket` (with `binaryType = "arraybuffer"`) sends
//! and receives as it is. The link is a
//! [`ReliableStream`](oscloud_core::transport::LinkKind::ReliableStream)
//! to the session (nothing is retransmitted, a message above the node's
//! `max_frame` closes the session with Close code 4, `FrameTooLarge`), so
//! resumable sessions, encryption, the allow-list, access control and
//! routing apply as on TCP.
//!
//! A link whose peer breaks these rules is closed with a WebSocket Close
//! frame saying why, and the node goes on: a text message gets code 1003
//! (unsupported data), a message or fragment sequence above `max_message`
//! code 1009 (message too big), any other protocol error code 1002.
//!
//! ## Parameters
//!
//! | key | where | meaning |
//! |---|---|---|
//! | `max_message` | both | the largest message taken, in bytes (default [`DEFAULT_MAX_MESSAGE`], 16 MiB); it bounds what one connection buffers, the node's `max_frame` still applies below it |
//! | `plaintext` | `ws://` listener | `loopback` (default): plaintext links are taken from loopback peers only, others are closed with code 1008 (policy); `any`: from anyone |
//! | `cert`, `key` | `wss://` listener (required) | PEM files: the certificate chain and its private key |
//! | `ca` | `wss://` dialler | a PEM file of CA certificates to trust instead of the built-in web roots |
//!
//! Plaintext WebSocket from other hosts is refused by default because a
//! browser cannot use the Noise encryption of oscloud sessions: its links
//! rely on `wss://` for privacy and on the node's access policy for what
//! they may do. Set `plaintext=any` only on a trusted network.
//!
//! Errors: dialling fails as TCP does (refused, unreachable, ...); a TLS or
//! WebSocket handshake that fails is
//! [`LinkFailed`](oscloud_core::Error::LinkFailed); a bad or missing
//! certificate or key file is
//! [`BadKeyFile`](oscloud_core::Error::BadKeyFile); a bad parameter is
//! [`InvalidAddress`](oscloud_core::Error::InvalidAddress) naming it. An
//! incoming connection that fails its handshake is logged and dropped;
//! the listener goes on.
//!
//! ```
//! use std::sync::Arc;
//! use oscloud_core::transport::{LinkKind, Transports};
//! use oscloud_transport_ws::WsTransport;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let transports = Transports::new()
//!     .with(Arc::new(WsTransport::ws()))
//!     .with(Arc::new(WsTransport::wss()));
//! let mut listener = transports.listen(&"ws://127.0.0.1:0/oscloud".parse()?).await?;
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

pub mod fuzzing;
mod link;
mod listener;
mod tls;

use std::time::Duration;

use async_trait::async_trait;
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, Listener, Transport};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The acceptor [`tls_acceptor`] makes (`tokio-rustls`).
pub use tokio_rustls::TlsAcceptor;

/// A TLS acceptor (rustls, ring) from PEM files, the certificate chain
/// and its private key, made as a `wss://` listener makes its own: for
/// servers next to a node that speak TLS with the same files (the
/// `oscloud` web console). A bad or missing file is
/// [`BadKeyFile`](oscloud_core::Error::BadKeyFile).
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Error> {
    tls::acceptor(cert, key)
}

/// Check the TLS files a `wss://` address names, read and parsed as
/// listening on it (`listening`: its `cert` and `key`, both required) or
/// dialling it (its `ca`, if given) would, without binding or dialling:
/// for `oscloud check`. A bad or missing file is
/// [`BadKeyFile`](oscloud_core::Error::BadKeyFile), a missing parameter
/// [`InvalidAddress`](oscloud_core::Error::InvalidAddress). Other schemes
/// have nothing to check.
pub fn check_tls(addr: &Address, listening: bool) -> Result<(), Error> {
    if addr.scheme() != SCHEME_WSS {
        return Ok(());
    }
    if listening {
        tls::server(addr).map(drop)
    } else {
        tls::client(addr).map(drop)
    }
}

/// The URI scheme of plaintext WebSocket links.
pub const SCHEME_WS: &str = "ws";
/// The URI scheme of WebSocket links over TLS.
pub const SCHEME_WSS: &str = "wss";
/// The largest message taken when the address does not say
/// (`max_message`): 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;
/// How long a TLS and WebSocket handshake may take, each way.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Address parameter: the largest message taken, in bytes.
pub const PARAM_MAX_MESSAGE: &str = "max_message";
/// Address parameter of a `ws://` listener: `loopback` or `any`.
pub const PARAM_PLAINTEXT: &str = "plaintext";
/// Address parameter of a `wss://` listener: its certificate chain (PEM).
pub const PARAM_CERT: &str = "cert";
/// Address parameter of a `wss://` listener: its private key (PEM).
pub const PARAM_KEY: &str = "key";
/// Address parameter of a `wss://` dialler: CA certificates to trust (PEM).
pub const PARAM_CA: &str = "ca";

/// WebSocket links: [`WsTransport::ws`] serves `ws://`,
/// [`WsTransport::wss`] serves `wss://`; add both to serve both.
#[derive(Debug, Clone, Copy)]
pub struct WsTransport {
    tls: bool,
}

impl WsTransport {
    /// Plaintext links (`ws://host:port/path`).
    pub fn ws() -> Self {
        Self { tls: false }
    }

    /// Links over TLS (`wss://host:port/path`).
    pub fn wss() -> Self {
        Self { tls: true }
    }
}

/// Who may open a plaintext link to a `ws://` listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plaintext {
    /// Loopback peers only.
    Loopback,
    /// Anyone.
    Any,
}

/// What an address says, checked.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The address as given.
    pub(crate) addr: Address,
    /// The path a listener serves (`/` for none).
    pub(crate) path: String,
    /// `max_message`.
    pub(crate) max_message: usize,
}

impl Target {
    fn parse(addr: &Address, known: &[&str]) -> Result<Self, Error> {
        let mut all = vec![PARAM_MAX_MESSAGE];
        all.extend_from_slice(known);
        addr.check_params(&all)?;
        oscloud_transport_tcp::host_and_port(addr)?;
        let max_message = addr
            .param_parse::<usize>(PARAM_MAX_MESSAGE)?
            .unwrap_or(DEFAULT_MAX_MESSAGE);
        if !(128..=u32::MAX as usize).contains(&max_message) {
            return Err(invalid(
                addr,
                format!(
                    "parameter {PARAM_MAX_MESSAGE}={max_message} must be between 128 and 2^32-1"
                ),
            ));
        }
        let path = if addr.path().is_empty() {
            "/".to_owned()
        } else {
            addr.path().to_owned()
        };
        Ok(Self {
            addr: addr.clone(),
            path,
            max_message,
        })
    }

    /// The URL requested: the address without its parameters (which are
    /// this side's settings, not the server's business).
    pub(crate) fn url(&self) -> String {
        let text = self.addr.to_string();
        match text.split_once('?') {
            Some((url, _)) => url.to_owned(),
            None => text,
        }
    }

    pub(crate) fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
    }
}

pub(crate) fn invalid(addr: &Address, reason: impl Into<String>) -> Error {
    Error::InvalidAddress {
        input: addr.to_string(),
        reason: reason.into(),
    }
}

fn plaintext_policy(addr: &Address) -> Result<Plaintext, Error> {
    match addr.param(PARAM_PLAINTEXT) {
        None | Some("loopback") => Ok(Plaintext::Loopback),
        Some("any") => Ok(Plaintext::Any),
        Some(other) => Err(invalid(
            addr,
            format!("parameter {PARAM_PLAINTEXT}={other:?} is not valid: expected loopback or any"),
        )),
    }
}

#[async_trait]
impl Transport for WsTransport {
    fn scheme(&self) -> &'static str {
        if self.tls { SCHEME_WSS } else { SCHEME_WS }
    }

    async fn connect(&self, addr: &Address) -> Result<Link, Error> {
        let known: &[&str] = if self.tls { &[PARAM_CA] } else { &[] };
        let target = Target::parse(addr, known)?;
        let tls = if self.tls {
            Some(tls::client(addr)?)
        } else {
            None
        };
        link::dial(&target, tls).await
    }

    async fn listen(&self, addr: &Address) -> Result<Box<dyn Listener>, Error> {
        let (target, security) = if self.tls {
            let target = Target::parse(addr, &[PARAM_CERT, PARAM_KEY])?;
            (target, listener::Security::Tls(tls::server(addr)?))
        } else {
            let target = Target::parse(addr, &[PARAM_PLAINTEXT])?;
            (target, listener::Security::Plain(plaintext_policy(addr)?))
        };
        listener::WsLinks::bind(target, security).await
    }
}

#[cfg(test)]
mod tests;
