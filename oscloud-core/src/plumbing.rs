//! Kernel operations on pipes: connect, split (fan-out) and merge (fan-in).
//!
//! Each operation starts a small task that moves frames ([`Bytes`], never
//! copied) and returns a handle to follow it. They keep the pipes'
//! guarantees: frame boundaries and per-source order are kept, end of stream
//! flows downstream, a reader that goes away is felt upstream, and
//! back-pressure reaches the source — except on a split branch that opted
//! into [`Overflow::DropOldest`], which drops (and counts) instead.
//!
//! ```
//! use bytes::Bytes;
//! use oscloud_core::plumbing::{Branch, split};
//! use oscloud_core::Kernel;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let kernel = Kernel::new();
//! let (src_w, src_r) = kernel.pipe();
//! let (log_w, mut log_r) = kernel.pipe();
//! let (ui_w, mut ui_r) = kernel.pipe();
//! let fanout = split(src_r, vec![Branch::block(log_w), Branch::drop_oldest(ui_w, 16)]);
//! src_w.send(Bytes::from_static(b"reading")).await?;
//! drop(src_w);
//! assert_eq!(log_r.recv().await, Some(Bytes::from_static(b"reading")));
//! assert_eq!(ui_r.recv().await, Some(Bytes::from_static(b"reading")));
//! let report = fanout.finished().await?;
//! assert_eq!(report.frames, 1);
//! assert_eq!(report.dropped, vec![0, 0]);
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::{Error, PipeEnd, PipeReader, PipeWriter};

/// Why a plumbing task ended other than by end of stream.
fn task_error(err: tokio::task::JoinError) -> Error {
    Error::PipeTask(if err.is_cancelled() {
        "aborted".to_owned()
    } else {
        "panicked".to_owned()
    })
}

// ------------------------------------------------------------------ connect

/// A running [`connect`]: frames flowing from one pipe into another.
#[derive(Debug)]
pub struct Connection {
    task: JoinHandle<Result<u64, Error>>,
}

impl Connection {
    /// Wait until the connection ends; returns how many frames it moved.
    ///
    /// Ends with `Ok` at end of stream (the downstream reader then sees end
    /// of stream too), with [`Error::PipeClosed`] when the downstream
    /// reader went away, and with [`Error::FrameTooLarge`] for a frame
    /// longer than the downstream pipe takes (downstream then sees end of
    /// stream). Either way the upstream writers then get `PipeClosed`.
    pub async fn finished(self) -> Result<u64, Error> {
        self.task.await.map_err(task_error)?
    }

    /// Stop moving frames now. Both pipes are released: downstream sees end
    /// of stream, upstream writers get [`Error::PipeClosed`].
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the connection has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Move every frame of `from` into `to`, in order, until `from` ends or
/// `to` refuses a frame: its reader went away ([`Error::PipeClosed`]), or
/// the frame is longer than `to` takes ([`Error::FrameTooLarge`]). Then
/// `from` is closed and `to` ends there.
pub fn connect(mut from: PipeReader, to: PipeWriter) -> Connection {
    let task = tokio::spawn(async move {
        let mut frames = 0u64;
        while let Some(frame) = from.recv().await {
            if let Err(err) = to.send(frame).await {
                from.close();
                return Err(err);
            }
            frames += 1;
        }
        Ok(frames)
    });
    Connection { task }
}

/// Join two duplex ends: what is written to the peer of `a` comes out of
/// the peer of `b`, and the other way round.
pub fn connect_duplex(a: PipeEnd, b: PipeEnd) -> (Connection, Connection) {
    let (a_r, a_w) = a.split();
    let (b_r, b_w) = b.split();
    (connect(a_r, b_w), connect(b_r, a_w))
}

// ------------------------------------------------------------------ split

/// What a split branch does when its reader is slower than the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Wait for the branch: the slowest blocking branch back-pressures the
    /// source (and so every other branch). The default.
    Block,
    /// Keep up to `queue` frames for the branch and drop the oldest when it
    /// is full; the branch never slows the source. Drops are counted.
    DropOldest {
        /// Frames kept for the branch beyond what its pipe buffers (≥ 1).
        queue: usize,
    },
}

/// One output of a [`split`].
#[derive(Debug)]
pub struct Branch {
    writer: PipeWriter,
    overflow: Overflow,
}

impl Branch {
    /// A branch that back-pressures the source.
    pub fn block(writer: PipeWriter) -> Self {
        Self {
            writer,
            overflow: Overflow::Block,
        }
    }

    /// A branch that drops its oldest frames beyond `queue` instead.
    pub fn drop_oldest(writer: PipeWriter, queue: usize) -> Self {
        Self {
            writer,
            overflow: Overflow::DropOldest {
                queue: queue.max(1),
            },
        }
    }

    /// A branch with an explicit policy.
    pub fn new(writer: PipeWriter, overflow: Overflow) -> Self {
        match overflow {
            Overflow::Block => Self::block(writer),
            Overflow::DropOldest { queue } => Self::drop_oldest(writer, queue),
        }
    }
}

/// What a split did, when it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitReport {
    /// Frames read from the source.
    pub frames: u64,
    /// Per branch, in the order given: frames dropped by drop-oldest.
    pub dropped: Vec<u64>,
    /// Per branch: frames written into the branch's pipe.
    pub delivered: Vec<u64>,
}

/// Counters of one branch, shared with the split's tasks.
#[derive(Debug, Default)]
struct BranchCounters {
    dropped: AtomicU64,
    delivered: AtomicU64,
}

/// A running [`split`].
#[derive(Debug)]
pub struct Split {
    task: JoinHandle<u64>,
    branches: Vec<Arc<BranchCounters>>,
    drains: Vec<JoinHandle<()>>,
}

impl Split {
    /// Frames dropped so far on branch `i` (0 for blocking branches and
    /// out-of-range indexes).
    pub fn dropped(&self, i: usize) -> u64 {
        self.branches
            .get(i)
            .map_or(0, |c| c.dropped.load(Ordering::Relaxed))
    }

    /// Frames written so far into branch `i`'s pipe.
    pub fn delivered(&self, i: usize) -> u64 {
        self.branches
            .get(i)
            .map_or(0, |c| c.delivered.load(Ordering::Relaxed))
    }

    /// Wait until the source ended and every branch received what it will
    /// receive; returns the exact figures.
    pub async fn finished(self) -> Result<SplitReport, Error> {
        let frames = self.task.await.map_err(task_error)?;
        for d in self.drains {
            d.await.map_err(task_error)?;
        }
        Ok(SplitReport {
            frames,
            dropped: self
                .branches
                .iter()
                .map(|c| c.dropped.load(Ordering::Relaxed))
                .collect(),
            delivered: self
                .branches
                .iter()
                .map(|c| c.delivered.load(Ordering::Relaxed))
                .collect(),
        })
    }

    /// Stop now; every branch sees end of stream.
    pub fn abort(&self) {
        self.task.abort();
        for d in &self.drains {
            d.abort();
        }
    }
}

/// The queue of a drop-oldest branch, between the splitter and the task
/// that writes into the branch's pipe.
#[derive(Debug)]
struct Lossy {
    state: Mutex<LossyState>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct LossyState {
    frames: VecDeque<Bytes>,
    ended: bool,
    reader_gone: bool,
}

impl Lossy {
    fn lock(&self) -> std::sync::MutexGuard<'_, LossyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Out {
    Block(PipeWriter),
    Lossy(Arc<Lossy>, usize),
}

/// Send every frame of `src` to every branch (fan-out). Frames are shared,
/// not copied. Blocking branches get every frame; drop-oldest branches get
/// an in-order subsequence and count what they dropped. A branch whose
/// reader goes away is removed and the others go on. When `src` ends, each
/// branch gets what is queued for it, then end of stream.
pub fn split(mut src: PipeReader, branches: Vec<Branch>) -> Split {
    let counters: Vec<Arc<BranchCounters>> = branches.iter().map(|_| Arc::default()).collect();
    let mut outs: Vec<(usize, Out)> = Vec::with_capacity(branches.len());
    let mut drains = Vec::new();
    for (i, b) in branches.into_iter().enumerate() {
        match b.overflow {
            Overflow::Block => outs.push((i, Out::Block(b.writer))),
            Overflow::DropOldest { queue } => {
                let lossy = Arc::new(Lossy {
                    state: Mutex::new(LossyState::default()),
                    wake: Notify::new(),
                });
                drains.push(tokio::spawn(drain(
                    lossy.clone(),
                    b.writer,
                    counters[i].clone(),
                )));
                outs.push((i, Out::Lossy(lossy, queue)));
            }
        }
    }
    let task_counters = counters.clone();
    let task = tokio::spawn(async move {
        let mut frames = 0u64;
        while let Some(frame) = src.recv().await {
            frames += 1;
            let mut gone = Vec::new();
            for (k, (i, out)) in outs.iter().enumerate() {
                let c = &task_counters[*i];
                match out {
                    Out::Block(w) => match w.send(frame.clone()).await {
                        Ok(()) => {
                            c.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            debug!(branch = i, "split branch ends: {err}");
                            gone.push(k);
                        }
                    },
                    Out::Lossy(q, cap) => {
                        let mut st = q.lock();
                        if st.reader_gone {
                            gone.push(k);
                            continue;
                        }
                        if st.frames.len() >= *cap {
                            st.frames.pop_front();
                            c.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        st.frames.push_back(frame.clone());
                        drop(st);
                        q.wake.notify_one();
                    }
                }
            }
            for k in gone.into_iter().rev() {
                outs.remove(k);
            }
            if outs.is_empty() {
                // Nobody reads any more: tell the writers upstream.
                src.close();
            }
        }
        for (_, out) in &outs {
            if let Out::Lossy(q, _) = out {
                q.lock().ended = true;
                q.wake.notify_one();
            }
        }
        frames
    });
    Split {
        task,
        branches: counters,
        drains,
    }
}

/// Write a drop-oldest branch's queue into its pipe.
async fn drain(q: Arc<Lossy>, writer: PipeWriter, c: Arc<BranchCounters>) {
    loop {
        let next = {
            let mut st = q.lock();
            match st.frames.pop_front() {
                Some(f) => Some(f),
                None if st.ended => return,
                None => None,
            }
        };
        match next {
            Some(frame) => {
                if writer.send(frame).await.is_err() {
                    q.lock().reader_gone = true;
                    return;
                }
                c.delivered.fetch_add(1, Ordering::Relaxed);
            }
            None => q.wake.notified().await,
        }
    }
}

// ------------------------------------------------------------------ merge

/// A running [`merge`].
#[derive(Debug)]
pub struct Merge {
    tasks: Vec<JoinHandle<Result<u64, Error>>>,
}

impl Merge {
    /// Wait until every source ended; returns the frames moved per source.
    /// [`Error::PipeClosed`] if the destination's reader went away.
    pub async fn finished(self) -> Result<Vec<u64>, Error> {
        let mut out = Vec::with_capacity(self.tasks.len());
        let mut closed = false;
        for t in self.tasks {
            match t.await.map_err(task_error)? {
                Ok(n) => out.push(n),
                Err(_) => closed = true,
            }
        }
        if closed {
            return Err(Error::PipeClosed);
        }
        Ok(out)
    }

    /// Stop now; the destination sees end of stream.
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Move the frames of every source into `dst` (fan-in). Each source's
/// frames keep their order; sources interleave frame by frame. `dst` sees
/// end of stream once every source ended. Back-pressure from `dst` reaches
/// every source.
pub fn merge(srcs: Vec<PipeReader>, dst: PipeWriter) -> Merge {
    let tasks = srcs
        .into_iter()
        .map(|src| connect(src, dst.clone()).task)
        .collect();
    Merge { tasks }
}

#[cfg(test)]
mod tests;
