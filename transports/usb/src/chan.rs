//! The bridge between blocking USB I/O threads and a link's async halves.
//!
//! USB transfers (libusb's synchronous API, FunctionFS endpoint files) block
//! a thread. Each link therefore has a reading thread that hands what it
//! reads to a channel, read by [`ChannelReader`], and a writing thread fed
//! through an in-memory duplex pipe. The reading thread ends the stream
//! with an error that says why the link went down.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// The largest USB transfer either side makes, and the size of every read.
/// A multiple of every bulk max-packet size (64, 512, 1024).
pub(crate) const TRANSFER: usize = 16 * 1024;

/// The smallest bulk max-packet size (full speed). Every larger one is a
/// multiple of it.
const MIN_PACKET: usize = 64;

/// What the reading thread passes on: bytes, or why the link is down.
pub(crate) type Incoming = Result<Bytes, String>;

/// How many transfers may wait between the reading thread and the link.
pub(crate) const INCOMING_DEPTH: usize = 32;

/// How long `len` pending bytes' next transfer may be.
///
/// A bulk transfer ends at a short packet or when the reader's buffer is
/// full. Every read here is [`TRANSFER`] bytes long, so a transfer shorter
/// than that must end with a short packet, or the reader waits for more
/// data (or a zero-length packet, which neither libusb's synchronous API
/// nor FunctionFS sends on request). So a transfer is either exactly
/// [`TRANSFER`] bytes, or a length that is not a multiple of any max-packet
/// size: one byte less when it would be, that byte going in the next
/// transfer.
pub(crate) fn next_transfer(len: usize) -> usize {
    let n = len.min(TRANSFER);
    if n < TRANSFER && n.is_multiple_of(MIN_PACKET) && n > 0 {
        n - 1
    } else {
        n
    }
}

/// The read half of a USB link: the reading thread's transfers, in order.
#[derive(Debug)]
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Incoming>,
    current: Bytes,
    /// Why the link went down, once it did.
    ended: Option<String>,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Incoming>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
            ended: None,
        }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                buf.put_slice(&self.current[..n]);
                self.current.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(reason) = &self.ended {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    reason.clone(),
                )));
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => self.current = bytes,
                Poll::Ready(Some(Err(reason))) => self.ended = Some(reason),
                // The thread ended without a word: end of stream.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn transfers_end_with_a_short_packet_or_fill_the_read() {
        assert_eq!(next_transfer(0), 0);
        assert_eq!(next_transfer(1), 1);
        assert_eq!(next_transfer(64), 63);
        assert_eq!(next_transfer(512), 511);
        assert_eq!(next_transfer(1000), 1000);
        assert_eq!(next_transfer(TRANSFER), TRANSFER);
        assert_eq!(next_transfer(TRANSFER + 512), TRANSFER);
        for len in 1..3 * TRANSFER {
            let n = next_transfer(len);
            assert!(n > 0 && n <= len);
            assert!(n == TRANSFER || !n.is_multiple_of(64), "{len} -> {n}");
        }
    }

    #[tokio::test]
    async fn reader_yields_bytes_then_the_reason() {
        let (tx, rx) = mpsc::channel(4);
        let mut r = ChannelReader::new(rx);
        tx.send(Ok(Bytes::from_static(b"hello "))).await.unwrap();
        tx.send(Ok(Bytes::from_static(b"world"))).await.unwrap();
        tx.send(Err("unplugged".into())).await.unwrap();
        let mut got = vec![0u8; 11];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
        let err = r.read(&mut got).await.unwrap_err();
        assert_eq!(err.to_string(), "unplugged");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn reader_ends_when_the_thread_goes() {
        let (tx, rx) = mpsc::channel(4);
        let mut r = ChannelReader::new(rx);
        drop(tx);
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).await.unwrap(), 0);
    }
}
