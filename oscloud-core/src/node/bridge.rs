//! Pipes across a link: how a local pipe end is joined to a session pipe.
//!
//! Outbound, the driver polls the local reader itself ([`Outbound`]) while
//! the peer has credit, so a frame goes from the local writer to the link
//! without a task of its own in between; a pipe short of credit is parked
//! (its reader set aside) until the peer grants more.
//!
//! Inbound, the driver writes the peer's frames straight into the local
//! pipe when it has room, and gives the credit back at once. Only when the
//! local reader is behind do frames queue for a delivery task, which waits
//! for room and gives the credit back as they go in; frames never overtake
//! each other because the driver writes directly only while that queue is
//! empty.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::remote::Command;
use crate::wire::PipeId;
use crate::{Error, PipeReader, PipeWriter};

/// One pipe between a local end and the peer.
pub(super) struct Bridge {
    /// The local reader while it is not polled: short of credit, or done.
    pub(super) parked: Option<PipeReader>,
    /// A frame the session refused for lack of credit.
    pub(super) waiting: Option<Bytes>,
    /// Towards the local reader; `None` once the peer sends no more.
    pub(super) local: Option<PipeWriter>,
    /// Frames that found the local pipe full, for the delivery task.
    pub(super) slow: Option<mpsc::UnboundedSender<Bytes>>,
    /// How many frames the delivery task has yet to write.
    pub(super) backlog: Arc<AtomicUsize>,
    /// The delivery task (it also reports when the local reader is gone).
    pub(super) deliver: Option<AbortHandle>,
    /// Every local frame was handed to the session and the peer was told.
    pub(super) out_done: bool,
    /// The local reader is gone.
    pub(super) in_done: bool,
    /// The peer sends no more (it half-closed the pipe).
    pub(super) peer_ended: bool,
}

/// What happened to a frame from the peer.
pub(super) enum Delivered {
    /// It is in the local pipe: give its credit back now.
    Now(usize),
    /// It waits for the delivery task (which gives the credit back).
    Queued,
    /// Nobody reads it any more.
    Dropped,
    /// The local pipe refuses it ([`Error::FrameTooLarge`]: the pipe goes
    /// on to another link with a smaller window): the pipe must close.
    Refused(Error),
}

impl Bridge {
    /// Join `writer` (towards the local reader) to pipe `id`: starts the
    /// delivery task.
    pub(super) fn new(
        id: PipeId,
        writer: PipeWriter,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Self {
        let backlog = Arc::new(AtomicUsize::new(0));
        let (slow, mut frames) = mpsc::unbounded_channel::<Bytes>();
        let deliver = tokio::spawn({
            let writer = writer.clone();
            let backlog = backlog.clone();
            async move {
                loop {
                    tokio::select! {
                        frame = frames.recv() => match frame {
                            Some(frame) => {
                                let n = frame.len();
                                match writer.send(frame).await {
                                    Ok(()) => {}
                                    Err(error @ Error::FrameTooLarge { .. }) => {
                                        let _ = commands.send(Command::PipeFailed { pipe: id, error });
                                        return;
                                    }
                                    Err(_) => break,
                                }
                                backlog.fetch_sub(1, Ordering::AcqRel);
                                let _ = commands.send(Command::PipeConsumed { pipe: id, n });
                            }
                            // The peer ended: dropping `writer` is the end of
                            // stream once the driver dropped its clone too.
                            None => return,
                        },
                        () = writer.closed() => break,
                    }
                }
                let _ = commands.send(Command::PipeInDone { pipe: id });
            }
        });
        Self {
            parked: None,
            waiting: None,
            local: Some(writer),
            slow: Some(slow),
            backlog,
            deliver: Some(deliver.abort_handle()),
            out_done: false,
            in_done: false,
            peer_ended: false,
        }
    }

    /// Hand a frame from the peer to the local reader, in order.
    pub(super) fn deliver(&mut self, frame: Bytes) -> Delivered {
        let Some(local) = &self.local else {
            return Delivered::Dropped;
        };
        let frame = if self.backlog.load(Ordering::Acquire) == 0 {
            let n = frame.len();
            match local.try_send(frame) {
                Ok(()) => return Delivered::Now(n),
                Err((frame, Error::PipeFull { .. })) => frame,
                Err((_, error @ Error::FrameTooLarge { .. })) => return Delivered::Refused(error),
                Err(_) => return Delivered::Dropped,
            }
        } else {
            frame
        };
        let Some(slow) = &self.slow else {
            return Delivered::Dropped;
        };
        self.backlog.fetch_add(1, Ordering::AcqRel);
        if slow.send(frame).is_err() {
            self.backlog.fetch_sub(1, Ordering::AcqRel);
            return Delivered::Dropped;
        }
        Delivered::Queued
    }

    /// The peer sends no more: the local reader gets what is queued, then
    /// end of stream.
    pub(super) fn peer_ended(&mut self) {
        self.local = None;
        self.slow = None;
        self.peer_ended = true;
    }

    /// Let the delivery task finish what is queued rather than abort it
    /// when the bridge is dropped.
    pub(super) fn drain_on_drop(&mut self) {
        self.local = None;
        self.slow = None;
        self.deliver = None;
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(task) = self.deliver.take() {
            task.abort();
        }
    }
}

/// The local readers of pipes whose frames go to the peer, polled by the
/// driver while the peer has credit for them.
#[derive(Default)]
pub(super) struct Outbound {
    readers: Vec<(PipeId, PipeReader)>,
    /// Where the next poll starts, so that no pipe starves the others.
    next: usize,
    /// A reader was added since [`Self::take_added`]: it has not been
    /// polled, so nothing wakes the driver for it yet.
    added: bool,
}

impl Outbound {
    pub(super) fn is_empty(&self) -> bool {
        self.readers.is_empty()
    }

    pub(super) fn insert(&mut self, id: PipeId, reader: PipeReader) {
        self.readers.push((id, reader));
        self.added = true;
    }

    /// Whether a reader was added since the last call.
    pub(super) fn take_added(&mut self) -> bool {
        std::mem::take(&mut self.added)
    }

    pub(super) fn remove(&mut self, id: PipeId) -> Option<PipeReader> {
        let i = self.readers.iter().position(|(p, _)| *p == id)?;
        Some(self.readers.swap_remove(i).1)
    }

    pub(super) fn clear(&mut self) {
        self.readers.clear();
    }

    /// The next frame of any reader (`None`: that reader's writers are all
    /// gone); pending while there is none (forever while there are no
    /// readers), and `cx` is woken when one may have come.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(PipeId, Option<Bytes>)> {
        let n = self.readers.len();
        for i in 0..n {
            let k = (self.next + i) % n;
            let (id, reader) = &mut self.readers[k];
            if let Poll::Ready(item) = Pin::new(reader).poll_next(cx) {
                self.next = k + 1;
                return Poll::Ready((*id, item));
            }
        }
        Poll::Pending
    }
}
