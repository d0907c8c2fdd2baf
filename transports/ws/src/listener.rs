//! Incoming WebSocket links: a task accepts TCP connections and runs each
//! one's handshakes in a task of its own (so a slow or silent client holds
//! up no one, and handshakes go on while nobody calls `accept`), handing
//! the links that come up to [`WsLinks::accept`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use oscloud_core::Error;
use oscloud_core::address::Address;
use oscloud_core::transport::{Link, Listener};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{Instrument, debug, info_span, warn};

use crate::link::{CLOSE_WAIT, close_frame, spawn_link};
use crate::{HANDSHAKE_TIMEOUT, PARAM_PLAINTEXT, Plaintext, Target};

/// Links that came up wait here for `accept`.
const BACKLOG: usize = 16;

/// How a listener's connections are secured.
pub(crate) enum Security {
    /// Plaintext, from whom the policy allows.
    Plain(Plaintext),
    /// TLS with the listener's certificate.
    Tls(TlsAcceptor),
}

/// A `ws://` or `wss://` listener. Dropping it stops its task, which
/// closes the socket and abandons the handshakes under way.
pub(crate) struct WsLinks {
    links: mpsc::Receiver<Link>,
    address: Address,
    task: AbortHandle,
}

impl Drop for WsLinks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsLinks {
    /// Listen at `target`.
    pub(crate) async fn bind(
        target: Target,
        security: Security,
    ) -> Result<Box<dyn Listener>, Error> {
        let (listener, address) = oscloud_transport_tcp::bind(&target.addr).await?;
        let (tx, links) = mpsc::channel(BACKLOG);
        let target = Target {
            addr: address.clone(),
            ..target
        };
        let span = info_span!("ws listener", at = %address);
        let task = tokio::spawn(serve(listener, target, security, tx).instrument(span));
        Ok(Box::new(WsLinks {
            links,
            address,
            task: task.abort_handle(),
        }))
    }
}

/// Accept connections and run their handshakes (dropped with this task)
/// until `accept`'s side is gone.
async fn serve(
    listener: TcpListener,
    target: Target,
    security: Security,
    links: mpsc::Sender<Link>,
) {
    let (target, security) = (Arc::new(target), Arc::new(security));
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let (security, target) = (security.clone(), target.clone());
                    let span = info_span!("ws accept", peer = %peer);
                    handshakes.spawn(
                        async move {
                            let shaken = handshake(tcp, peer, &security, &target);
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, shaken).await {
                                Ok(Ok(link)) => Some(link),
                                Ok(Err(why)) => {
                                    warn!("refused: {why}");
                                    None
                                }
                                Err(_) => {
                                    warn!("no handshake within {HANDSHAKE_TIMEOUT:?}: dropped");
                                    None
                                }
                            }
                        }
                        .instrument(span),
                    );
                }
                Err(e) => {
                    warn!("accept failed: {e}");
                    // Do not spin on a persistent error (such as too many
                    // open files).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = handshakes.join_next() => {
                if let Ok(Some(link)) = done
                    && links.send(link).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl Listener for WsLinks {
    /// Cancel-safe: a link not returned stays for the next call.
    async fn accept(&mut self) -> Result<Link, Error> {
        self.links.recv().await.ok_or_else(|| Error::Io {
            address: self.address.to_string(),
            kind: std::io::ErrorKind::BrokenPipe,
            message: "the WebSocket listener stopped".into(),
        })
    }

    fn local_address(&self) -> Address {
        self.address.clone()
    }
}

/// Whether a plaintext link from `peer` is taken under `policy`.
pub(crate) fn plaintext_allowed(policy: Plaintext, peer: IpAddr) -> bool {
    policy == Plaintext::Any || peer.to_canonical().is_loopback()
}

/// The handshakes of one incoming connection; an error says why it was
/// refused (for the log).
pub(crate) async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    security: &Security,
    target: &Target,
) -> Result<Link, String> {
    let _ = tcp.set_nodelay(true);
    let scheme = target.addr.scheme();
    let local = target.url();
    let remote = format!("{scheme}://{peer}");
    match security {
        Security::Tls(acceptor) => {
            let stream = acceptor
                .accept(tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let ws = upgrade(stream, target).await?;
            Ok(spawn_link(ws, local, remote))
        }
        Security::Plain(policy) => {
            let mut ws = upgrade(tcp, target).await?;
            if plaintext_allowed(*policy, peer.ip()) {
                return Ok(spawn_link(ws, local, remote));
            }
            let reason = format!(
                "plaintext ws:// is refused from other hosts: use wss:// \
                 (or {PARAM_PLAINTEXT}=any on the listener)"
            );
            let _ = ws
                .send(Message::Close(Some(close_frame(
                    CloseCode::Policy,
                    &reason,
                ))))
                .await;
            // Wait briefly for the peer's answer, so the Close reaches it
            // before the connection goes.
            let answer = async { while let Some(Ok(_)) = ws.next().await {} };
            let _ = tokio::time::timeout(CLOSE_WAIT, answer).await;
            Err(reason)
        }
    }
}

/// The WebSocket handshake, taking only requests for the listener's path.
async fn upgrade<S>(stream: S, target: &Target) -> Result<WebSocketStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = target.path.clone();
    let check = move |request: &Request, response: Response| {
        if request.uri().path() == path {
            Ok(response)
        } else {
            debug!("request for {:?}, not {path:?}", request.uri().path());
            let mut refusal = ErrorResponse::new(Some(format!(
                "no oscloud node at {:?}; try {path:?}",
                request.uri().path()
            )));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(target.config()))
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))
}
