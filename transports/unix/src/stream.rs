//! A Unix stream's two halves, each registered for what it waits on.
//!
//! `tokio::net::UnixStream` registers its socket for both readable and
//! writable events. On a Unix socket, every read by the peer signals
//! "writable" to this side (`unix_write_space` in Linux), so a node
//! waiting for an answer was woken once when the peer read the request,
//! for nothing, and again when the answer came: between two processes,
//! 3.8 context switches per call against 2.0 for TCP or a raw ping-pong.
//!
//! Here the read half is registered for readable events only. The write
//! half writes straight to the socket and registers (a duplicate of) it
//! for writable events only once a write would block, which only a full
//! socket buffer makes it do; after [`QUIET_WRITES`] writes in a row that
//! did not block, it drops that registration again.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// After this many writes in a row that did not block, the write half
/// stops listening for writable events.
const QUIET_WRITES: u32 = 64;

/// Split a connected, non-blocking socket into its read and write halves.
pub(crate) fn split(stream: UnixStream) -> io::Result<(Reader, Writer)> {
    let writer = Writer {
        socket: stream.try_clone()?,
        waiting: None,
        quiet: 0,
    };
    let reader = Reader {
        socket: register(stream, Interest::READABLE)?,
    };
    Ok((reader, writer))
}

/// Register `socket` with the runtime's reactor, for `interest` only.
#[allow(unsafe_code)]
fn register(socket: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `AsyncFd` owns the socket, whose descriptor stays open,
    // and the same, until the `AsyncFd` is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

/// The read half: woken only when there is something to read.
#[derive(Debug)]
pub(crate) struct Reader {
    socket: AsyncFd<UnixStream>,
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.socket.poll_read_ready(cx))?;
            let room = buf.remaining();
            match ready.try_io(|socket| recv(socket.get_ref(), buf)) {
                Ok(Ok(n)) => {
                    // Less than there was room for: the socket is empty
                    // (as tokio's own streams assume), so the next read
                    // waits for the next event instead of failing first.
                    if n > 0 && n < room {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: readiness was cleared, wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

/// Receive into the unfilled part of `buf`, and say how many bytes came.
/// The part is not initialised first: the link's receive buffers are
/// large, and zeroing them on every read would cost more than the read.
#[allow(unsafe_code)]
fn recv(socket: &UnixStream, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: `recv` only writes to the slice (it never reads it, and
    // never de-initialises a byte).
    let unfilled = unsafe { buf.unfilled_mut() };
    let n = socket2::SockRef::from(socket).recv(unfilled)?;
    // SAFETY: the kernel wrote (initialised) the first `n` bytes.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(n)
}

/// The write half: writes at once, and listens for writable events only
/// while its writes block.
#[derive(Debug)]
pub(crate) struct Writer {
    socket: UnixStream,
    /// A duplicate of the socket, registered for writable events, while
    /// writes block.
    waiting: Option<AsyncFd<UnixStream>>,
    /// Writes in a row that did not block.
    quiet: u32,
}

impl Writer {
    /// One write attempt through `write`; pending (and `cx` woken once
    /// the socket has room) if it would block.
    fn poll_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl Fn(&UnixStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let result = match &self.waiting {
                Some(waiting) => {
                    let mut ready = ready!(waiting.poll_write_ready(cx))?;
                    match ready.try_io(|socket| write(socket.get_ref())) {
                        Ok(result) => result,
                        // Full again: readiness was cleared, wait again.
                        Err(_would_block) => {
                            self.quiet = 0;
                            continue;
                        }
                    }
                }
                None => match write(&self.socket) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Registered now: if room came since, the first
                        // poll of the registration says so.
                        let duplicate = self.socket.try_clone()?;
                        self.waiting = Some(register(duplicate, Interest::WRITABLE)?);
                        self.quiet = 0;
                        continue;
                    }
                    result => result,
                },
            };
            if self.waiting.is_some() {
                self.quiet += 1;
                if self.quiet >= QUIET_WRITES {
                    self.waiting = None;
                }
            }
            return Poll::Ready(result);
        }
    }
}

impl Drop for Writer {
    /// As with tokio's own write halves: the peer sees the end of the
    /// stream when this half goes, even if the read half lives on.
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_io(cx, |mut socket| socket.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(cx, |mut socket| socket.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> ((Reader, Writer), (Reader, Writer)) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (split(a).unwrap(), split(b).unwrap())
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_shutdown_ends_the_stream() {
        let ((mut ra, mut wa), (mut rb, mut wb)) = pair();
        wa.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        rb.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        wb.write_all(b"pong").await.unwrap();
        ra.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        wa.shutdown().await.unwrap();
        assert_eq!(rb.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_blocked_writer_waits_for_room_then_stops_listening() {
        let ((_ra, mut wa), (mut rb, _wb)) = pair();
        // Far more than the socket buffer holds: the writer blocks, waits
        // for the reader to make room, and every byte arrives in order.
        let total = 8 << 20;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            wa.write_all(&data).await.unwrap();
            let blocked = wa.waiting.is_some();
            // Small writes that do not block: the registration goes.
            for _ in 0..QUIET_WRITES {
                wa.write_all(b"x").await.unwrap();
            }
            (blocked, wa.waiting.is_some())
        });
        let mut got = vec![0u8; total];
        rb.read_exact(&mut got).await.unwrap();
        assert!(got == expected, "the bytes arrived changed");
        let mut tail = vec![0u8; QUIET_WRITES as usize];
        rb.read_exact(&mut tail).await.unwrap();
        let (blocked, still) = writer.await.unwrap();
        assert!(blocked, "8 MiB should have filled the socket buffer");
        assert!(!still, "the writable registration should be gone");
    }

    #[tokio::test]
    async fn dropping_the_write_half_ends_the_peers_stream() {
        let ((_ra, wa), (mut rb, _wb)) = pair();
        drop(wa);
        let mut buf = [0u8; 1];
        assert_eq!(rb.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_peer_closing_ends_the_stream_and_fails_writes() {
        let ((mut ra, mut wa), b) = pair();
        drop(b);
        let mut buf = [0u8; 1];
        assert_eq!(ra.read(&mut buf).await.unwrap(), 0);
        let mut failed = false;
        for _ in 0..4 {
            if wa.write_all(&[0u8; 4096]).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "writing to a closed peer should fail");
    }
}
