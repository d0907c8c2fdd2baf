//! How a link driver moves bytes: straight on a byte stream, through small
//! tasks on a datagram link.
//!
//! On a stream link (TCP, Unix, serial) the driver reads and writes the
//! stream itself, with no task in between: it reads into a receive buffer
//! whose whole frames the session takes without a copy, and it writes what
//! the session has queued in one vectored write: large payloads as they
//! are, small packets (headers, casts, calls, small pipe frames) copied
//! together into one buffer, so that many of them go in one system call.
//! A datagram link's transport hands out channels; each
//! direction gets a task that forwards datagrams.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::link_wire::LinkWire;
use crate::transport::{LinkIo, StreamReader, StreamWriter};
use crate::wire::Session;

/// The receive buffer of a stream link grows by this much at a time.
const RECV_BUFFER: usize = 512 * 1024;
/// Below this much free room, the receive buffer grows before a read.
const RECV_MIN_SPARE: usize = 64 * 1024;
/// Receive buffers kept for reuse once every frame cut from them is
/// dropped: a fresh buffer costs page faults and zeroed pages on every
/// use (about a tenth of a stream link's CPU in a pipe benchmark).
const RECV_POOL: usize = 2;
/// At most this many chunks go in one vectored write (well under IOV_MAX)
/// and wait to be written...
const WRITE_CHUNKS: usize = 64;
/// ...and at most this many bytes: beyond, the session keeps its output
/// (and pushes back on its senders) until the link takes more.
const WRITE_BYTES: usize = 1024 * 1024;
/// Chunks of output up to this long are copied together into one buffer
/// (one slice of the vectored write) rather than written as slices of
/// their own: copying a small chunk costs less than the slice, and the
/// slices a write takes ([`WRITE_CHUNKS`]) then carry many more packets.
const COALESCE: usize = 2048;
/// The buffer small chunks are copied into grows by at least this much.
const COALESCE_BUFFER: usize = 64 * 1024;
/// How long a closing link may take to write its last packets.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// A link's two directions, as the driver uses them.
pub(crate) struct LinkPorts {
    pub(crate) incoming: Incoming,
    pub(crate) outgoing: Outgoing,
}

impl LinkPorts {
    /// Take over a link's I/O; datagram links get their forwarding tasks.
    pub(crate) fn new(io: LinkIo) -> Self {
        match io {
            LinkIo::Stream { reader, writer } => Self {
                incoming: Incoming::Stream {
                    reader,
                    buf: BytesMut::with_capacity(64 * 1024),
                    pool: Vec::new(),
                },
                outgoing: Outgoing::Stream {
                    writer,
                    batch: VecDeque::new(),
                    bytes: 0,
                    small: BytesMut::new(),
                },
            },
            LinkIo::Datagram { mut rx, tx } => {
                let (in_tx, in_rx) = mpsc::channel::<Bytes>(16);
                let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
                tokio::spawn(async move {
                    while let Ok(datagram) = rx.recv().await {
                        if in_tx.send(datagram).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some(datagram) = out_rx.recv().await {
                        if tx.send(datagram).await.is_err() {
                            return;
                        }
                    }
                });
                Self {
                    incoming: Incoming::Channel(in_rx),
                    outgoing: Outgoing::Channel {
                        tx: out_tx,
                        pending: None,
                        reserving: None,
                    },
                }
            }
        }
    }
}

/// Where the driver gets the link's bytes.
pub(crate) enum Incoming {
    /// Datagrams, read by a task of their own; closed when the link is gone.
    Channel(mpsc::Receiver<Bytes>),
    /// A byte stream, read by the driver itself into `buf`; `pool` holds
    /// earlier receive buffers whose frames may still be in use.
    Stream {
        reader: StreamReader,
        buf: BytesMut,
        pool: Vec<BytesMut>,
    },
}

/// What [`Incoming::next`] brought.
pub(crate) enum Input {
    /// A datagram.
    Chunk(Bytes),
    /// Stream bytes, appended to the receive buffer.
    Buffered,
    /// The link is gone.
    Closed,
}

impl Incoming {
    /// Input, if some has come: pending (and `cx` woken when some comes)
    /// if not. Nothing is read unless this returns ready.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Input> {
        match self {
            Incoming::Channel(rx) => rx
                .poll_recv(cx)
                .map(|d| d.map_or(Input::Closed, Input::Chunk)),
            Incoming::Stream { reader, buf, pool } => {
                // Frames are cut out of this buffer and handed on without
                // a copy; only a frame straddling the end of the buffer is
                // copied, into the next one. Large buffers keep that rare.
                if buf.capacity() - buf.len() < RECV_MIN_SPARE {
                    grow(buf, pool);
                }
                // One read: the future reads at most once per poll.
                std::pin::pin!(reader.read_buf(buf))
                    .poll(cx)
                    .map(|read| match read {
                        Ok(0) | Err(_) => Input::Closed,
                        Ok(_) => Input::Buffered,
                    })
            }
        }
    }

    /// Feed the session what has already come, without waiting: at most
    /// `reads` reads, until nothing more is there, the link is gone or
    /// the session closed. For a link whose writer failed: a peer that
    /// closes its session and drops its end at once makes the write fail,
    /// and its Close, already here, is then the reason the session ends,
    /// not the failed write.
    pub(crate) fn feed_ready(&mut self, wire: &LinkWire, reads: usize) {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..reads {
            match self.poll_next(&mut cx) {
                Poll::Ready(Input::Closed) | Poll::Pending => return,
                Poll::Ready(input) => {
                    let mut w = wire.lock();
                    self.feed(&mut w.session, input);
                    if w.session.close_reason().is_some() {
                        return;
                    }
                }
            }
        }
    }

    /// Hand what arrived to the session: whole frames leave the receive
    /// buffer without a copy, a partial one stays for the next read.
    pub(crate) fn feed(&mut self, session: &mut Session, input: Input) {
        match (self, input) {
            (_, Input::Chunk(chunk)) => session.handle_input(Instant::now(), &chunk),
            (Incoming::Stream { buf, .. }, Input::Buffered) => {
                session.handle_input_buf(Instant::now(), buf)
            }
            _ => {}
        }
    }
}

/// Give `buf` more room: [`RECV_BUFFER`] in place when every frame cut
/// from it is gone, else at least [`RECV_MIN_SPARE`] in a pooled buffer
/// whose frames are all gone, else `RECV_BUFFER` in a fresh one; the
/// buffer given up goes to the pool.
fn grow(buf: &mut BytesMut, pool: &mut Vec<BytesMut>) {
    if buf.try_reclaim(RECV_BUFFER) {
        return;
    }
    // The partial frame at the end of `buf` moves along, so the next
    // buffer needs room for it and a read after it.
    let need = buf.len() + RECV_MIN_SPARE;
    let reusable = pool.iter_mut().position(|b| b.try_reclaim(need));
    let mut next = match reusable {
        Some(i) => pool.swap_remove(i),
        None => BytesMut::with_capacity(buf.len() + RECV_BUFFER),
    };
    next.extend_from_slice(buf);
    let mut old = std::mem::replace(buf, next);
    old.clear();
    if pool.len() < RECV_POOL {
        pool.push(old);
    }
}

/// A slot in a datagram link's sending channel, being waited for.
type Reserving = Pin<
    Box<dyn Future<Output = Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>>> + Send>,
>;

/// Where the driver puts the session's output.
pub(crate) enum Outgoing {
    /// Datagrams for the link's sending task; `pending` did not fit yet,
    /// and waits for the slot `reserving`.
    Channel {
        tx: mpsc::Sender<Bytes>,
        pending: Option<Bytes>,
        reserving: Option<Reserving>,
    },
    /// A byte stream written by the driver; `batch` is what waits to be
    /// written (`bytes` long); `small` is where small chunks are copied
    /// together (its written parts are reclaimed once written).
    Stream {
        writer: StreamWriter,
        batch: VecDeque<Bytes>,
        bytes: usize,
        small: BytesMut,
    },
}

/// The link can no longer be written.
#[derive(Debug)]
pub(crate) struct WriteFailed;

impl Outgoing {
    /// Take the session's output while there is room for it; true if the
    /// session has none left.
    pub(crate) fn fill(&mut self, session: &mut Session) -> bool {
        // One clock reading for the whole batch: the packets are taken in
        // one go.
        let now = Instant::now();
        match self {
            Outgoing::Channel { tx, pending, .. } => loop {
                if pending.is_none() {
                    *pending = session.poll_transmit(now);
                }
                let Some(chunk) = pending.take() else {
                    return true;
                };
                match tx.try_send(chunk) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(chunk)) => {
                        *pending = Some(chunk);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            },
            Outgoing::Stream {
                batch,
                bytes,
                small,
                ..
            } => {
                // A turn pushes at most two slices (the small chunks so
                // far, and a large one), and one more at the end.
                let mut drained = false;
                while batch.len() + 3 <= WRITE_CHUNKS && *bytes < WRITE_BYTES {
                    let Some(chunk) = session.poll_transmit(now) else {
                        drained = true;
                        break;
                    };
                    *bytes += chunk.len();
                    if chunk.len() <= COALESCE {
                        if small.capacity() - small.len() < chunk.len() {
                            // In place once what was cut from it is
                            // written and dropped.
                            small.reserve(COALESCE_BUFFER);
                        }
                        small.extend_from_slice(&chunk);
                    } else {
                        if !small.is_empty() {
                            batch.push_back(small.split().freeze());
                        }
                        batch.push_back(chunk);
                    }
                }
                if !small.is_empty() {
                    batch.push_back(small.split().freeze());
                }
                drained
            }
        }
    }

    /// Whether output waits for the link.
    pub(crate) fn has_pending(&self) -> bool {
        match self {
            Outgoing::Channel { pending, .. } => pending.is_some(),
            Outgoing::Stream { batch, .. } => !batch.is_empty(),
        }
    }

    /// Move some of the waiting output to the link: one vectored write on
    /// a stream. Cancel-safe: a cancelled call has written nothing.
    pub(crate) async fn write_some(&mut self) -> Result<(), WriteFailed> {
        std::future::poll_fn(|cx| self.poll_write(cx)).await
    }

    /// [`Self::write_some`], polled: pending (and `cx` woken when the link
    /// takes more) if the link takes nothing now.
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteFailed>> {
        match self {
            Outgoing::Channel {
                tx,
                pending,
                reserving,
            } => {
                let slot = reserving.get_or_insert_with(|| Box::pin(tx.clone().reserve_owned()));
                let permit = ready!(slot.as_mut().poll(cx));
                *reserving = None;
                let permit = permit.map_err(|_| WriteFailed)?;
                if let Some(chunk) = pending.take() {
                    permit.send(chunk);
                }
                Poll::Ready(Ok(()))
            }
            Outgoing::Stream {
                writer,
                batch,
                bytes,
                ..
            } => {
                // On the stack: the batch holds at most WRITE_CHUNKS.
                let mut slices = [IoSlice::new(&[]); WRITE_CHUNKS];
                let mut count = 0;
                for (slice, chunk) in slices.iter_mut().zip(batch.iter()) {
                    *slice = IoSlice::new(chunk);
                    count += 1;
                }
                if count == 0 {
                    // Nothing waits: a sender wrote it between the
                    // driver's look and its turn (`link_wire`). A write of
                    // nothing is not a closed link.
                    return Poll::Ready(Ok(()));
                }
                let slices = slices.get(..count).unwrap_or_default();
                let n = ready!(Pin::new(&mut *writer).poll_write_vectored(cx, slices))
                    .map_err(|_| WriteFailed)?;
                if n == 0 {
                    return Poll::Ready(Err(WriteFailed));
                }
                *bytes -= n;
                let mut n = n;
                while n > 0 {
                    let Some(front) = batch.front_mut() else {
                        break;
                    };
                    if n >= front.len() {
                        n -= front.len();
                        batch.pop_front();
                    } else {
                        front.advance(n);
                        n = 0;
                    }
                }
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Write everything the session still has (its Close packet), for a
    /// short while at most, and end the stream.
    pub(crate) async fn finish(&mut self, wire: &LinkWire) {
        let flush = async {
            loop {
                self.fill(&mut wire.lock().session);
                if !self.has_pending() {
                    break;
                }
                if self.write_some().await.is_err() {
                    return;
                }
            }
            if let Outgoing::Stream { writer, .. } = self {
                let _ = writer.shutdown().await;
            }
        };
        let _ = tokio::time::timeout(CLOSE_FLUSH, flush).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fill `buf` to its capacity and cut it all out as one frame.
    fn fill_and_cut(buf: &mut BytesMut) -> Bytes {
        let room = buf.capacity() - buf.len();
        buf.extend_from_slice(&vec![7u8; room]);
        buf.split().freeze()
    }

    /// The driver may find nothing to write when its turn comes: a sender
    /// wrote it meanwhile (`link_wire`). That is not a failed link.
    #[tokio::test]
    async fn a_write_with_nothing_waiting_succeeds() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut out = Outgoing::Stream {
            writer: Box::new(ours),
            batch: VecDeque::new(),
            bytes: 0,
            small: BytesMut::new(),
        };
        assert!(!out.has_pending());
        assert!(out.write_some().await.is_ok());
        // And the link still works.
        out = match out {
            Outgoing::Stream { writer, .. } => Outgoing::Stream {
                writer,
                batch: VecDeque::from([Bytes::from_static(b"hi")]),
                bytes: 2,
                small: BytesMut::new(),
            },
            other => other,
        };
        assert!(out.write_some().await.is_ok());
        let mut got = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut theirs, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn receive_buffers_are_reused_once_their_frames_are_gone() {
        let mut pool = Vec::new();
        let mut buf = BytesMut::with_capacity(RECV_BUFFER);
        let first = buf.as_ptr();
        let held = fill_and_cut(&mut buf);
        // A frame of the first buffer is still in use: a fresh buffer.
        grow(&mut buf, &mut pool);
        assert_ne!(buf.as_ptr(), first);
        assert_eq!(pool.len(), 1);
        let held2 = fill_and_cut(&mut buf);
        // Its frame gone, the first buffer comes back from the pool, with
        // the partial frame (the bytes after the last whole one) carried
        // over.
        drop(held);
        buf.extend_from_slice(b"xy");
        grow(&mut buf, &mut pool);
        assert_eq!(buf.as_ptr(), first);
        assert_eq!(&buf[..], b"xy");
        assert!(buf.capacity() - buf.len() >= RECV_MIN_SPARE);
        // And when nothing holds the current buffer, it grows in place.
        drop(held2);
        let mut lone = BytesMut::with_capacity(RECV_BUFFER);
        let at = lone.as_ptr();
        drop(fill_and_cut(&mut lone));
        grow(&mut lone, &mut pool);
        assert_eq!(lone.as_ptr(), at);
        assert!(pool.len() <= RECV_POOL);
    }
}
