//! One link through zenoh: the zenoh entities of one side ([`Ends`]), the
//! dialler's handshake, and the task that moves frames between zenoh and
//! the session.
//!
//! The session reads and writes a length-prefixed byte stream (a reliable
//! stream link, as over TCP). The bridge task turns each sample from the
//! peer into `length ‖ frame` for the session, and cuts the session's
//! output back into one sample per frame, numbered in the sample's
//! attachment so that a lost sample ends the link instead of passing
//! unnoticed.

use std::time::Duration;

use bytes::BytesMut;
use oscloud_core::Error;
use oscloud_core::transport::{Link, LinkKind};
use oscloud_core::wire::LengthFraming;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tracing::{Instrument, debug, debug_span, warn};
use zenoh::Session;
use zenoh::handlers::FifoChannelHandler;
use zenoh::liveliness::LivelinessToken;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::{Sample, SampleKind};

use crate::keys::{self, Side};
use crate::{HANDSHAKE_TIMEOUT, Target};

/// The byte pipe between the session and a link's bridge task holds this
/// much each way.
const BRIDGE_BUFFER: usize = 256 * 1024;
/// Once one direction of a link has ended, how long the other may take
/// to finish.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Once the peer's liveliness token is gone, how long its last samples
/// may still take to arrive (they travel apart from the token's removal)
/// before the link ends.
const LINGER: Duration = Duration::from_millis(200);

/// A zenoh failure while setting up `target`'s link.
pub(crate) fn failed(target: &Target, what: &str, e: impl std::fmt::Display) -> Error {
    Error::LinkFailed {
        address: target.addr.to_string(),
        reason: format!("{what}: {e}"),
    }
}

/// The zenoh entities of one side of a link.
pub(crate) struct Ends {
    /// This side's frames.
    publisher: Publisher<'static>,
    /// This side is alive.
    token: LivelinessToken,
    /// The peer's frames.
    frames: Subscriber<FifoChannelHandler<Sample>>,
    /// The peer's liveliness token (with history: it may exist already).
    peer: Subscriber<FifoChannelHandler<Sample>>,
}

impl Ends {
    /// Declare `side`'s entities of link `id`.
    pub(crate) async fn declare(
        session: &Session,
        target: &Target,
        id: &str,
        side: Side,
    ) -> Result<Self, Error> {
        let other = match side {
            Side::Dialler => Side::Listener,
            Side::Listener => Side::Dialler,
        };
        let mine = keys::link(&target.cloud, id, side);
        let theirs = keys::link(&target.cloud, id, other);
        let frames = session
            .declare_subscriber(theirs.clone())
            .await
            .map_err(|e| failed(target, "zenoh subscriber", e))?;
        let peer = session
            .liveliness()
            .declare_subscriber(theirs)
            .history(true)
            .await
            .map_err(|e| failed(target, "zenoh liveliness subscriber", e))?;
        let publisher = session
            .declare_publisher(mine.clone())
            .congestion_control(CongestionControl::Block)
            .await
            .map_err(|e| failed(target, "zenoh publisher", e))?;
        let token = session
            .liveliness()
            .declare_token(mine)
            .await
            .map_err(|e| failed(target, "zenoh liveliness token", e))?;
        Ok(Self {
            publisher,
            token,
            frames,
            peer,
        })
    }

    /// Wait (at most [`HANDSHAKE_TIMEOUT`]) until the peer's liveliness
    /// token is seen.
    pub(crate) async fn wait_peer(&self, target: &Target) -> Result<(), Error> {
        let seen = async {
            loop {
                match self.peer.recv_async().await {
                    Ok(sample) if sample.kind() == SampleKind::Put => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(failed(target, "zenoh liveliness", e)),
                }
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, seen)
            .await
            .map_err(|_| {
                failed(
                    target,
                    "handshake",
                    format!("the peer did not appear within {HANDSHAKE_TIMEOUT:?}"),
                )
            })?
    }
}

/// Dial `target` through `session`: declare this side of a new link, ask
/// the listening node to take it, and wait for its side to appear.
pub(crate) async fn dial(session: &Session, target: &Target) -> Result<Link, Error> {
    let id = keys::new_link_id();
    let ends = Ends::declare(session, target, &id, Side::Dialler).await?;
    let replies = session
        .get(keys::accept(&target.cloud, &target.node))
        .payload(id.clone())
        .timeout(HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| failed(target, "zenoh query", e))?;
    match replies.recv_async().await {
        Ok(reply) => {
            if let Err(e) = reply.result() {
                let why = String::from_utf8_lossy(&e.payload().to_bytes()).into_owned();
                return Err(failed(target, "refused", why));
            }
        }
        Err(_) => {
            return Err(Error::ConnectionRefused {
                address: target.addr.to_string(),
            });
        }
    }
    ends.wait_peer(target).await?;
    let local = format!("zenoh://{}/{}/{id}", session.zid(), target.cloud);
    Ok(spawn_link(ends, local, target.addr.to_string(), &id))
}

/// A link carried by `ends`, whose bridge task now runs.
pub(crate) fn spawn_link(ends: Ends, local: String, remote: String, id: &str) -> Link {
    let (session_end, bridge_end) = tokio::io::duplex(BRIDGE_BUFFER);
    let span = debug_span!("zenoh link", id = %id, remote = %remote);
    tokio::spawn(bridge(ends, bridge_end).instrument(span));
    let (reader, writer) = tokio::io::split(session_end);
    Link::stream(LinkKind::ReliableStream, local, remote, reader, writer)
}

/// Move frames both ways until either side ends, then give the other side
/// [`CLOSE_WAIT`] to finish; dropping `ends` then withdraws this side's
/// token and subscriptions.
async fn bridge(ends: Ends, end: DuplexStream) {
    let Ends {
        publisher,
        token,
        frames,
        peer,
    } = ends;
    let (from_session, to_session) = tokio::io::split(end);
    let inbound = inbound(frames, peer, to_session);
    let outbound = outbound(&publisher, from_session);
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut outbound => { let _ = tokio::time::timeout(CLOSE_WAIT, inbound).await; }
        () = &mut inbound => { let _ = tokio::time::timeout(CLOSE_WAIT, outbound).await; }
    }
    drop(token);
    debug!("zenoh link ended");
}

/// What a link does with one sample of the peer's frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The next frame: pass it on.
    Frame,
    /// The peer ended the link.
    End,
    /// The sample is not the one expected: end the link.
    Broken(String),
}

/// Judge a sample of `kind` numbered `seq` (its attachment, if 8 bytes)
/// when sample `expected` is due.
pub(crate) fn judge(kind: SampleKind, seq: Option<&[u8]>, expected: u64) -> Verdict {
    if kind == SampleKind::Delete {
        return Verdict::End;
    }
    match seq.and_then(|s| <[u8; 8]>::try_from(s).ok()) {
        Some(n) if u64::from_be_bytes(n) == expected => Verdict::Frame,
        Some(n) => Verdict::Broken(format!(
            "frame {} came when {expected} was due: frames were lost",
            u64::from_be_bytes(n)
        )),
        None => Verdict::Broken("a sample without an 8-byte sequence number".into()),
    }
}

/// The peer's frames to the session, as `length ‖ frame`, until the peer
/// ends the link, its token goes (then its last samples get [`LINGER`]),
/// or a sample is missing.
async fn inbound(
    frames: Subscriber<FifoChannelHandler<Sample>>,
    peer: Subscriber<FifoChannelHandler<Sample>>,
    mut to_session: WriteHalf<DuplexStream>,
) {
    let mut expected = 0u64;
    let mut peer_gone = false;
    loop {
        let sample = tokio::select! {
            sample = frames.recv_async() => sample,
            live = peer.recv_async(), if !peer_gone => {
                match live {
                    Ok(s) if s.kind() == SampleKind::Put => {}
                    _ => {
                        debug!("the peer's liveliness token is gone");
                        peer_gone = true;
                    }
                }
                continue;
            }
            () = tokio::time::sleep(LINGER), if peer_gone => {
                debug!("the peer's zenoh session or link is gone");
                return;
            }
        };
        let Ok(sample) = sample else { return };
        let seq = sample.attachment().map(|a| a.to_bytes());
        match judge(sample.kind(), seq.as_deref(), expected) {
            Verdict::Frame => {}
            Verdict::End => {
                debug!("the peer closed the link");
                return;
            }
            Verdict::Broken(why) => {
                warn!("ending the zenoh link: {why}");
                return;
            }
        }
        expected += 1;
        let frame = sample.payload().to_bytes();
        // A frame the session could take is below 4 GiB.
        let Ok(len) = u32::try_from(frame.len()) else {
            warn!("ending the zenoh link: a frame of {} bytes", frame.len());
            return;
        };
        if to_session.write_all(&len.to_be_bytes()).await.is_err()
            || to_session.write_all(&frame).await.is_err()
        {
            return;
        }
    }
}

/// The session's frames to the peer, one numbered sample each; a Delete
/// sample when the session ends its stream.
async fn outbound(publisher: &Publisher<'static>, mut from_session: ReadHalf<DuplexStream>) {
    // The session's own output: no frame is too long to pass on.
    let mut framing = LengthFraming::new(u32::MAX as usize);
    let mut buf = BytesMut::with_capacity(BRIDGE_BUFFER);
    let mut frames = Vec::new();
    let mut seq = 0u64;
    loop {
        if buf.capacity() - buf.len() < BRIDGE_BUFFER / 4 {
            buf.reserve(BRIDGE_BUFFER);
        }
        let read = from_session.read_buf(&mut buf).await;
        if !matches!(read, Ok(n) if n > 0) {
            let _ = publisher.delete().await;
            return;
        }
        if framing.decode_buf(&mut buf, &mut frames).is_err() {
            return;
        }
        for frame in frames.drain(..) {
            let put = publisher
                .put(frame)
                .attachment(seq.to_be_bytes().to_vec())
                .await;
            if let Err(e) = put {
                warn!("ending the zenoh link: publishing failed: {e}");
                return;
            }
            seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_judged_by_number() {
        let n = |v: u64| v.to_be_bytes();
        assert_eq!(judge(SampleKind::Put, Some(&n(0)), 0), Verdict::Frame);
        assert_eq!(judge(SampleKind::Put, Some(&n(7)), 7), Verdict::Frame);
        assert_eq!(judge(SampleKind::Delete, None, 3), Verdict::End);
        assert!(matches!(
            judge(SampleKind::Put, Some(&n(5)), 4),
            Verdict::Broken(w) if w.contains("lost")
        ));
        assert!(matches!(
            judge(SampleKind::Put, None, 0),
            Verdict::Broken(_)
        ));
        assert!(matches!(
            judge(SampleKind::Put, Some(&[0, 1]), 0),
            Verdict::Broken(_)
        ));
    }
}
