//! One WebSocket link: the dialler's handshakes, and the task that moves
//! frames between the WebSocket and the session.
//!
//! The session reads and writes a length-prefixed byte stream (a reliable
//! stream link, as over TCP). A bridge task per link turns each binary
//! message into `length ‖ frame` for the session, and cuts the session's
//! output back into one binary message per frame; so on the wire there is
//! no prefix, only WebSocket messages.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use oscloud_core::Error;
use oscloud_core::transport::{Link, LinkKind, io_error};
use oscloud_core::wire::LengthFraming;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{Instrument, debug, debug_span, warn};

use crate::{HANDSHAKE_TIMEOUT, Target};

/// The byte pipe between the session and a link's bridge task holds this
/// much each way.
const BRIDGE_BUFFER: usize = 256 * 1024;
/// Once one direction of a link has ended, how long the other may take
/// to finish (the peer to answer a Close, the session to notice the end).
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The reason text of a Close frame is at most this long (a control frame
/// carries 125 bytes, two of them the code).
const MAX_REASON: usize = 123;

/// The link failed to come up after the TCP connection was made.
pub(crate) fn failed(target: &Target, reason: impl Into<String>) -> Error {
    Error::LinkFailed {
        address: target.addr.to_string(),
        reason: reason.into(),
    }
}

/// Dial `target`: TCP, then TLS if `tls` is given, then the WebSocket
/// handshake, all within [`HANDSHAKE_TIMEOUT`] after the TCP connection.
pub(crate) async fn dial(
    target: &Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
) -> Result<Link, Error> {
    let tcp = oscloud_transport_tcp::dial(&target.addr).await?;
    tcp.set_nodelay(true)
        .map_err(|e| io_error(&target.addr, &e))?;
    let local = tcp
        .local_addr()
        .map(|a| format!("{}://{a}", target.addr.scheme()))
        .unwrap_or_else(|_| format!("{}://?", target.addr.scheme()));
    let remote = target.url();
    let handshakes = async {
        match tls {
            None => client(target, tcp, local, remote).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| failed(target, format!("TLS handshake: {e}")))?;
                client(target, stream, local, remote).await
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshakes)
        .await
        .map_err(|_| {
            failed(
                target,
                format!("no WebSocket handshake within {HANDSHAKE_TIMEOUT:?}"),
            )
        })?
}

async fn client<S>(target: &Target, stream: S, local: String, remote: String) -> Result<Link, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(target.url(), stream, Some(target.config()))
            .await
            .map_err(|e| failed(target, format!("WebSocket handshake: {e}")))?;
    Ok(spawn_link(ws, local, remote))
}

/// A link carried by `ws`, whose bridge task now runs.
pub(crate) fn spawn_link<S>(ws: WebSocketStream<S>, local: String, remote: String) -> Link
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (session_end, bridge_end) = tokio::io::duplex(BRIDGE_BUFFER);
    let span = debug_span!("ws link", local = %local, remote = %remote);
    tokio::spawn(bridge(ws, bridge_end).instrument(span));
    let (reader, writer) = tokio::io::split(session_end);
    Link::stream(LinkKind::ReliableStream, local, remote, reader, writer)
}

/// What a link does with one read from its WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A frame for the session.
    Frame(Bytes),
    /// Nothing for the session (ping, pong).
    Skip,
    /// The peer closed or the connection is gone.
    End,
    /// The peer broke the rules: close with this code and reason.
    Close(CloseCode, String),
}

/// Judge one read from the WebSocket (`None`: the stream ended).
pub(crate) fn judge(read: Option<Result<Message, WsError>>) -> Verdict {
    const BINARY_ONLY: &str = "oscloud takes binary messages only, one frame per message";
    match read {
        Some(Ok(Message::Binary(frame))) => Verdict::Frame(frame),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Verdict::Skip,
        None | Some(Ok(Message::Close(_))) => Verdict::End,
        Some(Ok(Message::Text(_)) | Err(WsError::Utf8(_))) => {
            Verdict::Close(CloseCode::Unsupported, BINARY_ONLY.into())
        }
        Some(Err(WsError::Capacity(e))) => Verdict::Close(CloseCode::Size, e.to_string()),
        // The peer went away (killed, cable cut): nothing to tell it.
        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
            debug!("the peer dropped the connection without a Close");
            Verdict::End
        }
        Some(Err(WsError::Protocol(e))) => Verdict::Close(CloseCode::Protocol, e.to_string()),
        Some(Err(e)) => {
            debug!("WebSocket read ended: {e}");
            Verdict::End
        }
    }
}

/// A Close frame with `reason` cut to fit.
pub(crate) fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason.get(..end).unwrap_or_default().into(),
    }
}

/// Move frames both ways until either side ends, then give the other side
/// [`CLOSE_WAIT`] to finish.
async fn bridge<S>(ws: WebSocketStream<S>, end: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (from_session, to_session) = tokio::io::split(end);
    let (close_tx, close_rx) = oneshot::channel();
    let inbound = inbound(stream, to_session, close_tx);
    let outbound = outbound(sink, from_session, close_rx);
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut outbound => { let _ = tokio::time::timeout(CLOSE_WAIT, inbound).await; }
        () = &mut inbound => { let _ = tokio::time::timeout(CLOSE_WAIT, outbound).await; }
    }
    debug!("WebSocket link ended");
}

/// Messages from the peer to the session, as `length ‖ frame`; a broken
/// rule is handed to the sending side as the Close to send.
async fn inbound<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    mut to_session: WriteHalf<DuplexStream>,
    close: oneshot::Sender<CloseFrame>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match judge(stream.next().await) {
            Verdict::Frame(frame) => {
                // At most `max_message` ≤ 2^32 − 1 long.
                let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                if to_session.write_all(&len.to_be_bytes()).await.is_err()
                    || to_session.write_all(&frame).await.is_err()
                {
                    return;
                }
            }
            Verdict::Skip => {}
            Verdict::End => return,
            Verdict::Close(code, reason) => {
                warn!("closing the WebSocket link ({code}): {reason}");
                let _ = close.send(close_frame(code, &reason));
                return;
            }
        }
    }
}

/// The session's frames to the peer, one binary message each; ends with a
/// Close when the session ends its stream or the inbound side asks.
async fn outbound<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut from_session: ReadHalf<DuplexStream>,
    mut close: oneshot::Receiver<CloseFrame>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The session's own output: no frame is too long to pass on.
    let mut framing = LengthFraming::new(u32::MAX as usize);
    let mut buf = BytesMut::with_capacity(BRIDGE_BUFFER);
    let mut frames = Vec::new();
    let mut asked = true;
    loop {
        if buf.capacity() - buf.len() < BRIDGE_BUFFER / 4 {
            buf.reserve(BRIDGE_BUFFER);
        }
        tokio::select! {
            frame = &mut close, if asked => match frame {
                Ok(frame) => {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return;
                }
                // The inbound side ended without a complaint.
                Err(_) => asked = false,
            },
            read = from_session.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    let bye = close_frame(CloseCode::Normal, "the node closed the link");
                    let _ = sink.send(Message::Close(Some(bye))).await;
                    return;
                }
                if framing.decode_buf(&mut buf, &mut frames).is_err() {
                    return;
                }
                for frame in frames.drain(..) {
                    if sink.feed(Message::Binary(frame)).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}
