//! Pipes: bounded, back-pressured channels of byte frames.
//!
//! A pipe carries [`Bytes`] frames from writers to one reader. Frame
//! boundaries are kept: what one `send` wrote is what one `recv` returns, and
//! no byte is copied between in-process ends (a frame is a reference-counted
//! buffer).
//!
//! Capacity is counted in bytes. A writer waits while the buffered frames
//! would exceed it, so a stalled reader bounds memory to the pipe's capacity
//! (a single frame larger than the whole capacity is let through alone once
//! the pipe is empty, so it can never dead-lock). An empty frame counts as
//! one byte.
//!
//! A pipe can also refuse frames above a length ([`PipeReader::limit_frames`]):
//! a node does so for the pipes it carries to a peer, whose pipe window is
//! the longest frame it takes. Such a frame fails its `send` with
//! [`Error::FrameTooLarge`] and is not written; the pipe stays open.
//!
//! Many small frames go cheaper as one batch ([`PipeWriter::send_many`]):
//! the batch takes its room with one credit permit and wakes the reader
//! once, and the reader still gets the frames one by one.
//!
//! When every writer is dropped (or [closed](PipeWriter::close)) the reader
//! sees end-of-stream after the buffered frames. When the reader is dropped
//! (or [closed](PipeReader::close)) writers get [`Error::PipeClosed`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{Semaphore, TryAcquireError, mpsc};

use crate::Error;

/// The capacity, in bytes, of a pipe made with [`PipeConfig::default`].
pub const DEFAULT_CAPACITY: usize = 256 * 1024;

/// How a pipe is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeConfig {
    /// How many bytes may be buffered before writers wait. At least 1.
    pub capacity: usize,
}

impl Default for PipeConfig {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl PipeConfig {
    /// A configuration with this capacity in bytes (raised to 1 if 0).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
        }
    }
}

/// Make a one-way pipe: frames written to the [`PipeWriter`] come out of the
/// [`PipeReader`] in order.
pub fn pipe(config: PipeConfig) -> (PipeWriter, PipeReader) {
    let capacity = config.capacity.clamp(1, Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::unbounded_channel::<Item>();
    let shared = Arc::new(Shared {
        credit: Semaphore::new(capacity),
        max_frame: AtomicUsize::new(usize::MAX),
    });
    (
        PipeWriter {
            tx,
            shared: shared.clone(),
            capacity,
        },
        PipeReader {
            rx,
            batch: None,
            shared,
            capacity,
        },
    )
}

/// Make a duplex pipe: two ends, each of which writes to the other.
pub fn duplex(config: PipeConfig) -> (PipeEnd, PipeEnd) {
    let (a_tx, b_rx) = pipe(config);
    let (b_tx, a_rx) = pipe(config);
    (
        PipeEnd {
            reader: a_rx,
            writer: a_tx,
        },
        PipeEnd {
            reader: b_rx,
            writer: b_tx,
        },
    )
}

/// What goes through a pipe's channel: one frame, or a batch of frames
/// (from [`PipeWriter::send_many`]), with the credit units it took.
#[derive(Debug)]
enum Item {
    One(Bytes, usize),
    Many(std::vec::IntoIter<Bytes>, usize),
}

/// What the ends of one pipe share.
#[derive(Debug)]
struct Shared {
    /// Free room in bytes: a writer takes a frame's cost, the reader gives
    /// it back when it takes the frame.
    credit: Semaphore,
    /// The longest frame writers may send ([`usize::MAX`]: any).
    max_frame: AtomicUsize,
}

impl Shared {
    /// The credit units `frame` takes, or why it may not be written.
    fn cost(&self, frame: &Bytes, capacity: usize) -> Result<usize, Error> {
        let len = frame.len();
        let max = self.max_frame.load(Ordering::Relaxed);
        if len > max {
            return Err(Error::FrameTooLarge { len, max });
        }
        Ok(len.clamp(1, capacity))
    }
}

/// The writing side of a pipe. Clone it to write from several places; the
/// reader sees end-of-stream once every clone is gone.
#[derive(Debug, Clone)]
pub struct PipeWriter {
    tx: mpsc::UnboundedSender<Item>,
    shared: Arc<Shared>,
    capacity: usize,
}

impl PipeWriter {
    /// Write one frame, waiting while the pipe is full.
    ///
    /// Fails with [`Error::PipeClosed`] once the reader is gone, and with
    /// [`Error::FrameTooLarge`] for a frame above the pipe's
    /// [limit](Self::max_frame) (not written; the pipe stays open).
    ///
    /// Cancel-safe: if the future is dropped before it completes, the frame
    /// was not written.
    pub async fn send(&self, frame: Bytes) -> Result<(), Error> {
        let n = self.shared.cost(&frame, self.capacity)?;
        let permit = self
            .shared
            .credit
            .acquire_many(n as u32)
            .await
            .map_err(|_| Error::PipeClosed)?;
        permit.forget();
        self.tx
            .send(Item::One(frame, n))
            .map_err(|_| Error::PipeClosed)
    }

    /// Write `frames`, in order, as few batches: each batch takes its room
    /// with one credit permit and wakes the reader once, which is what
    /// makes many small frames cheaper than a [`send`](Self::send) each.
    /// The reader gets the frames one by one, boundaries kept, as if each
    /// had been sent alone.
    ///
    /// Frames are grouped into batches of at most the pipe's capacity (a
    /// frame larger than the capacity goes alone), so a batch never waits
    /// for more room than the pipe has. A batch's room is given back when
    /// the reader has taken its last frame: until then its frames count as
    /// buffered.
    ///
    /// Fails with [`Error::FrameTooLarge`] if any frame is above the
    /// pipe's [limit](Self::max_frame), before anything is written, and
    /// with [`Error::PipeClosed`] once the reader is gone: the batches
    /// written before that were written, the rest not.
    ///
    /// Cancel-safety: dropped while it waits for room, the batches written
    /// so far (the first frames, in order) stay written and the others are
    /// not; no frame is written twice or torn.
    pub async fn send_many(&self, frames: Vec<Bytes>) -> Result<(), Error> {
        let costs = frames
            .iter()
            .map(|f| self.shared.cost(f, self.capacity))
            .collect::<Result<Vec<_>, _>>()?;
        let mut frames = frames;
        let mut costs = &costs[..];
        while !frames.is_empty() {
            // The longest prefix that fits in the capacity (at least one).
            let mut take = 0;
            let mut credit = 0;
            for &c in costs {
                if take > 0 && credit + c > self.capacity {
                    break;
                }
                take += 1;
                credit += c;
            }
            let rest = frames.split_off(take);
            costs = &costs[take..];
            let permit = self
                .shared
                .credit
                .acquire_many(credit as u32)
                .await
                .map_err(|_| Error::PipeClosed)?;
            permit.forget();
            self.tx
                .send(Item::Many(
                    std::mem::replace(&mut frames, rest).into_iter(),
                    credit,
                ))
                .map_err(|_| Error::PipeClosed)?;
        }
        Ok(())
    }

    /// Write one frame if there is room now; hands it back otherwise, with
    /// why ([`Error::PipeFull`], [`Error::PipeClosed`] or
    /// [`Error::FrameTooLarge`]).
    pub fn try_send(&self, frame: Bytes) -> Result<(), (Bytes, Error)> {
        let n = match self.shared.cost(&frame, self.capacity) {
            Ok(n) => n,
            Err(err) => return Err((frame, err)),
        };
        match self.shared.credit.try_acquire_many(n as u32) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => {
                return Err((
                    frame,
                    Error::PipeFull {
                        capacity: self.capacity,
                    },
                ));
            }
            Err(TryAcquireError::Closed) => return Err((frame, Error::PipeClosed)),
        }
        self.tx.send(Item::One(frame, n)).map_err(|e| match e.0 {
            Item::One(frame, _) => (frame, Error::PipeClosed),
            // What was sent comes back: one frame.
            Item::Many(..) => (Bytes::new(), Error::PipeClosed),
        })
    }

    /// The pipe's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The longest frame this pipe takes, if it is limited (see
    /// [`PipeReader::limit_frames`]).
    pub fn max_frame(&self) -> Option<usize> {
        match self.shared.max_frame.load(Ordering::Relaxed) {
            usize::MAX => None,
            max => Some(max),
        }
    }

    /// True once the reader is gone: every further write fails.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.shared.credit.is_closed()
    }

    /// Wait until the reader is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Wait until the reader has taken every frame written so far (by any
    /// clone), or is gone. Writes from other clones wait meanwhile.
    pub async fn drained(&self) {
        let all = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        if let Ok(permits) = self.shared.credit.acquire_many(all).await {
            drop(permits);
        }
    }

    /// Stop writing from this clone (the same as dropping it).
    pub fn close(self) {}
}

/// The reading side of a pipe. Also a [`Stream`] of frames.
#[derive(Debug)]
pub struct PipeReader {
    rx: mpsc::UnboundedReceiver<Item>,
    /// The rest of a batch being read, and the credit it gives back once
    /// its last frame is taken.
    batch: Option<(std::vec::IntoIter<Bytes>, usize)>,
    shared: Arc<Shared>,
    capacity: usize,
}

impl PipeReader {
    /// The next frame, or `None` at end-of-stream (every writer is gone and
    /// every buffered frame was read).
    ///
    /// Cancel-safe: a frame is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.next_of_batch() {
                return Some(frame);
            }
            let item = self.rx.recv().await?;
            if let Some(frame) = self.take(item) {
                return Some(frame);
            }
        }
    }

    /// The next frame of the batch being read, if any.
    fn next_of_batch(&mut self) -> Option<Bytes> {
        let (frames, credit) = self.batch.as_mut()?;
        let frame = frames.next();
        if frames.as_slice().is_empty() {
            self.shared.credit.add_permits(*credit);
            self.batch = None;
        }
        frame
    }

    /// The first frame of `item`, giving its credit back (a batch's once
    /// its last frame is taken); `None` for an empty batch.
    fn take(&mut self, item: Item) -> Option<Bytes> {
        match item {
            Item::One(frame, n) => {
                self.shared.credit.add_permits(n);
                Some(frame)
            }
            Item::Many(frames, credit) => {
                self.batch = Some((frames, credit));
                self.next_of_batch()
            }
        }
    }

    /// The next frame if one is buffered now.
    ///
    /// `Ok(None)` means "nothing yet"; `Err(())` means end-of-stream.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Option<Bytes>, ()> {
        loop {
            if let Some(frame) = self.next_of_batch() {
                return Ok(Some(frame));
            }
            match self.rx.try_recv() {
                Ok(item) => {
                    if let Some(frame) = self.take(item) {
                        return Ok(Some(frame));
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(()),
            }
        }
    }

    /// The pipe's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many bytes are buffered now (empty frames count as one).
    pub fn buffered(&self) -> usize {
        self.capacity
            .saturating_sub(self.shared.credit.available_permits())
            .min(self.capacity)
    }

    /// Stop reading: writers get [`Error::PipeClosed`] from now on. Frames
    /// already buffered can still be read with [`recv`](Self::recv).
    pub fn close(&mut self) {
        self.shared.credit.close();
        self.rx.close();
    }

    /// Refuse frames longer than `max` bytes from now on: writing one fails
    /// with [`Error::FrameTooLarge`] and leaves the pipe open. A lower
    /// limit set earlier stays; frames already written are not affected.
    /// A node sets this on the pipes it carries to a peer, to the peer's
    /// pipe window, and on pipes to a server of another node, to the
    /// smallest window on the route.
    pub fn limit_frames(&self, max: usize) {
        self.shared.max_frame.fetch_min(max, Ordering::Relaxed);
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        // Wake writers blocked on credit: nobody will ever read again.
        self.shared.credit.close();
    }
}

impl Stream for PipeReader {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if let Some(frame) = self.next_of_batch() {
                return Poll::Ready(Some(frame));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => {
                    if let Some(frame) = self.take(item) {
                        return Poll::Ready(Some(frame));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One end of a duplex pipe: a reader and a writer to the other end.
#[derive(Debug)]
pub struct PipeEnd {
    /// Frames written by the other end.
    pub reader: PipeReader,
    /// Frames for the other end.
    pub writer: PipeWriter,
}

impl PipeEnd {
    /// Separate the reading and writing halves.
    pub fn split(self) -> (PipeReader, PipeWriter) {
        (self.reader, self.writer)
    }

    /// Write one frame to the other end (see [`PipeWriter::send`]).
    pub async fn send(&self, frame: Bytes) -> Result<(), Error> {
        self.writer.send(frame).await
    }

    /// Write frames to the other end as batches (see
    /// [`PipeWriter::send_many`]).
    pub async fn send_many(&self, frames: Vec<Bytes>) -> Result<(), Error> {
        self.writer.send_many(frames).await
    }

    /// Read one frame from the other end (see [`PipeReader::recv`]).
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.reader.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_keep_boundaries_and_order() {
        let (w, mut r) = pipe(PipeConfig::default());
        for i in 0..10u8 {
            w.send(Bytes::from(vec![i; i as usize])).await.unwrap();
        }
        drop(w);
        for i in 0..10u8 {
            assert_eq!(r.recv().await.unwrap(), Bytes::from(vec![i; i as usize]));
        }
        assert_eq!(r.recv().await, None, "EOF after the last frame");
    }

    #[tokio::test]
    async fn drained_waits_for_the_reader_to_take_every_frame() {
        let (w, mut r) = pipe(PipeConfig::with_capacity(100));
        w.send(Bytes::from_static(b"one")).await.unwrap();
        w.send(Bytes::from_static(b"two")).await.unwrap();
        let drained = w.drained();
        tokio::pin!(drained);
        assert!(futures::poll!(drained.as_mut()).is_pending());
        assert_eq!(r.recv().await.unwrap(), Bytes::from_static(b"one"));
        assert!(futures::poll!(drained.as_mut()).is_pending());
        assert_eq!(r.recv().await.unwrap(), Bytes::from_static(b"two"));
        drained.await;
        // The pipe still works afterwards, and a gone reader ends the wait.
        w.send(Bytes::from_static(b"three")).await.unwrap();
        drop(r);
        w.drained().await;
    }

    #[tokio::test]
    async fn no_copy_between_ends() {
        let (w, mut r) = pipe(PipeConfig::default());
        let frame = Bytes::from(vec![7u8; 1000]);
        let ptr = frame.as_ptr();
        w.send(frame).await.unwrap();
        assert_eq!(r.recv().await.unwrap().as_ptr(), ptr);
    }

    #[tokio::test]
    async fn stalled_reader_bounds_memory() {
        let (w, r) = pipe(PipeConfig::with_capacity(100));
        for _ in 0..10 {
            w.try_send(Bytes::from_static(&[0; 10])).unwrap();
        }
        assert_eq!(r.buffered(), 100);
        let (_, err) = w.try_send(Bytes::from_static(&[1])).unwrap_err();
        assert_eq!(err, Error::PipeFull { capacity: 100 });
        // A blocking send waits rather than growing the buffer.
        let blocked = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            w.send(Bytes::from_static(&[1])),
        )
        .await;
        assert!(blocked.is_err(), "send must wait while the pipe is full");
        assert_eq!(r.buffered(), 100);
    }

    #[tokio::test]
    async fn reading_frees_room() {
        let (w, mut r) = pipe(PipeConfig::with_capacity(10));
        w.send(Bytes::from_static(&[0; 10])).await.unwrap();
        let writer = tokio::spawn(async move { w.send(Bytes::from_static(&[1; 5])).await });
        assert_eq!(r.recv().await.unwrap().len(), 10);
        writer.await.unwrap().unwrap();
        assert_eq!(r.recv().await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn oversized_frame_passes_alone() {
        let (w, mut r) = pipe(PipeConfig::with_capacity(4));
        w.send(Bytes::from_static(&[9; 64])).await.unwrap();
        assert!(w.try_send(Bytes::from_static(&[1])).is_err());
        assert_eq!(r.recv().await.unwrap().len(), 64);
        w.try_send(Bytes::from_static(&[1])).unwrap();
    }

    #[tokio::test]
    async fn frames_above_the_limit_are_refused_and_the_pipe_goes_on() {
        let (w, mut r) = pipe(PipeConfig::default());
        assert_eq!(w.max_frame(), None);
        r.limit_frames(4);
        assert_eq!(w.max_frame(), Some(4));
        let long = Error::FrameTooLarge { len: 5, max: 4 };
        assert_eq!(
            w.send(Bytes::from_static(b"12345")).await,
            Err(long.clone())
        );
        let (back, err) = w.try_send(Bytes::from_static(b"12345")).unwrap_err();
        assert_eq!((back.len(), err), (5, long));
        assert_eq!(r.buffered(), 0, "a refused frame takes no room");
        w.send(Bytes::from_static(b"1234")).await.unwrap();
        assert_eq!(r.recv().await.unwrap(), Bytes::from_static(b"1234"));
    }

    #[tokio::test]
    async fn dropped_reader_fails_writers_even_blocked_ones() {
        let (w, r) = pipe(PipeConfig::with_capacity(1));
        w.send(Bytes::from_static(b"x")).await.unwrap();
        let w2 = w.clone();
        let blocked = tokio::spawn(async move { w2.send(Bytes::from_static(b"y")).await });
        tokio::task::yield_now().await;
        drop(r);
        assert_eq!(blocked.await.unwrap(), Err(Error::PipeClosed));
        assert_eq!(w.send(Bytes::new()).await, Err(Error::PipeClosed));
        assert!(w.is_closed());
    }

    #[tokio::test]
    async fn closed_reader_still_drains() {
        let (w, mut r) = pipe(PipeConfig::default());
        w.send(Bytes::from_static(b"kept")).await.unwrap();
        r.close();
        assert_eq!(
            w.send(Bytes::from_static(b"lost")).await,
            Err(Error::PipeClosed)
        );
        assert_eq!(r.recv().await.unwrap(), Bytes::from_static(b"kept"));
        assert_eq!(r.recv().await, None);
    }

    #[tokio::test]
    async fn eof_waits_for_every_writer_clone() {
        let (w, mut r) = pipe(PipeConfig::default());
        let w2 = w.clone();
        w.close();
        w2.send(Bytes::from_static(b"late")).await.unwrap();
        drop(w2);
        assert_eq!(r.recv().await.unwrap(), Bytes::from_static(b"late"));
        assert_eq!(r.recv().await, None);
    }

    #[tokio::test]
    async fn duplex_both_ways() {
        let (mut a, mut b) = duplex(PipeConfig::default());
        a.send(Bytes::from_static(b"ping")).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Bytes::from_static(b"ping"));
        b.send(Bytes::from_static(b"pong")).await.unwrap();
        assert_eq!(a.recv().await.unwrap(), Bytes::from_static(b"pong"));
        let (_r, w) = b.split();
        drop(w);
        assert_eq!(a.recv().await, None);
    }

    fn frames(n: u8, len: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(vec![i; len])).collect()
    }

    #[tokio::test]
    async fn send_many_keeps_order_and_boundaries_among_single_sends() {
        let (w, mut r) = pipe(PipeConfig::default());
        w.send(Bytes::from_static(b"first")).await.unwrap();
        w.send_many(frames(5, 3)).await.unwrap();
        w.send(Bytes::from_static(b"last")).await.unwrap();
        w.send_many(Vec::new()).await.unwrap();
        drop(w);
        assert_eq!(r.recv().await.unwrap(), Bytes::from_static(b"first"));
        for f in frames(5, 3) {
            assert_eq!(r.recv().await.unwrap(), f);
        }
        assert_eq!(r.try_recv(), Ok(Some(Bytes::from_static(b"last"))));
        assert_eq!(r.recv().await, None);
    }

    #[tokio::test]
    async fn send_many_takes_one_credit_per_batch_and_gives_it_back_after_its_last_frame() {
        let (w, mut r) = pipe(PipeConfig::with_capacity(100));
        // 4 frames of 10 bytes and an empty one (1 unit): 41 units.
        let mut batch = frames(4, 10);
        batch.push(Bytes::new());
        w.send_many(batch).await.unwrap();
        assert_eq!(r.buffered(), 41);
        assert_eq!(r.recv().await.unwrap().len(), 10);
        assert_eq!(r.buffered(), 41, "room comes back with the last frame");
        for _ in 0..3 {
            r.recv().await.unwrap();
        }
        assert_eq!(r.recv().await.unwrap(), Bytes::new());
        assert_eq!(r.buffered(), 0);
        // The pipe still works for single frames, and as a stream.
        w.send(Bytes::from_static(b"x")).await.unwrap();
        w.send_many(frames(2, 1)).await.unwrap();
        drop(w);
        let rest: Vec<Bytes> = futures::StreamExt::collect(r).await;
        assert_eq!(rest.len(), 3);
    }

    #[tokio::test]
    async fn send_many_waits_for_room_batch_by_batch() {
        let (w, mut r) = pipe(PipeConfig::with_capacity(25));
        // 10 frames of 10 bytes: batches of 2 (20 of 25 units); a frame
        // above the capacity goes alone.
        let mut batch = frames(10, 10);
        batch.push(Bytes::from(vec![9; 64]));
        let writer = tokio::spawn(async move { w.send_many(batch).await });
        tokio::task::yield_now().await;
        assert!(r.buffered() <= 25, "never more than the capacity buffered");
        for i in 0..10u8 {
            assert_eq!(r.recv().await.unwrap(), Bytes::from(vec![i; 10]));
            assert!(r.buffered() <= 25);
        }
        assert_eq!(r.recv().await.unwrap().len(), 64);
        writer.await.unwrap().unwrap();
        assert_eq!(r.recv().await, None);
    }

    #[tokio::test]
    async fn send_many_refuses_a_batch_with_a_frame_above_the_limit_whole() {
        let (w, mut r) = pipe(PipeConfig::default());
        r.limit_frames(4);
        let batch = vec![Bytes::from_static(b"ok"), Bytes::from_static(b"12345")];
        let err = w.send_many(batch).await.unwrap_err();
        assert_eq!(err, Error::FrameTooLarge { len: 5, max: 4 });
        assert_eq!(r.buffered(), 0, "nothing of it was written");
        assert_eq!(r.try_recv(), Ok(None));
    }

    #[tokio::test]
    async fn send_many_fails_when_the_reader_closes_mid_batch() {
        let (w, mut r) = pipe(PipeConfig::with_capacity(20));
        // Batches of 2 frames; the second waits for room.
        let writer = tokio::spawn(async move {
            let r = w.send_many(frames(4, 10)).await;
            (r, w)
        });
        while r.buffered() < 20 {
            tokio::task::yield_now().await;
        }
        r.close();
        let (sent, w) = writer.await.unwrap();
        assert_eq!(sent, Err(Error::PipeClosed));
        assert_eq!(w.send_many(frames(1, 1)).await, Err(Error::PipeClosed));
        // The first batch was written whole and can still be read.
        assert_eq!(r.recv().await.unwrap(), Bytes::from(vec![0; 10]));
        assert_eq!(r.recv().await.unwrap(), Bytes::from(vec![1; 10]));
        drop(w);
        assert_eq!(r.recv().await, None);
    }

    #[tokio::test]
    async fn stream_interface() {
        use futures::StreamExt;
        let (w, r) = pipe(PipeConfig::default());
        tokio::spawn(async move {
            for i in 0..3u8 {
                w.send(Bytes::from(vec![i])).await.unwrap();
            }
        });
        let all: Vec<Bytes> = r.collect().await;
        assert_eq!(all.len(), 3);
    }
}
