//! The session's send scheduler: which queued message gets the next
//! sequence number (`docs/PROTOCOL.md` §7.1).
//!
//! Two queues, each first in, first out:
//!
//! - **messages**: casts, calls, replies, registry messages (Announce,
//!   Route, Withdraw), PipeOpen, PipeCredit, and the PipeClose that
//!   refuses a peer's PipeOpen;
//! - **pipe data**: PipeData, and every PipeEnd and PipeClose the
//!   application sends, which must stay behind the pipe's data.
//!
//! Messages go first, so a call queued behind a long pipe write on a slow
//! link waits for the packets already in flight, not for the whole write.
//! Pipe data is not starved: after [`MESSAGE_BURST`] message packets in a
//! row while pipe data waits, one pipe-data packet goes. Pipe data of a
//! pipe this side opened waits until its PipeOpen has a sequence number
//! (the PipeOpen sits in the message queue and the receiver must see it
//! first). Only the order of packets not yet numbered is chosen here;
//! what has a sequence number is sent and re-sent in that order.
//!
//! What this keeps: messages in the order they were queued (so casts from
//! one sender, a call after a cast, a Withdraw after an Announce); a pipe's
//! data, PipeEnd and PipeClose in order, after its PipeOpen. What it does
//! not keep: the order between pipe data and the messages queued after it
//! (a reply may overtake pipe data written before it).

use std::collections::VecDeque;

use super::packet::Msg;

/// Message packets sent in a row while pipe data waits before one
/// pipe-data packet goes: pipe data gets at least one packet in
/// `MESSAGE_BURST + 1` however many messages are queued.
pub const MESSAGE_BURST: u32 = 4;

/// The two send queues and the rule that picks between them.
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    /// Messages, with the flag the session uses to count the ones the
    /// application queued (`queued_app`).
    messages: VecDeque<(Msg, bool)>,
    /// Pipe data, PipeEnd and PipeClose.
    data: VecDeque<Msg>,
    /// Message packets taken in a row while pipe data waited.
    run: u32,
    /// PipeOpens of this side taken so far: data of a local pipe with a
    /// higher number waits for its PipeOpen.
    opens_taken: u64,
    /// Bytes of the replies in `messages` (see [`reply_bytes`]).
    reply_bytes: usize,
    /// Bytes of pipe data queued, wherever it waits.
    pipe_bytes: usize,
    /// One queue for everything, in the order queued (test only: the
    /// behaviour before the two queues, to compare against).
    #[cfg(any(test, feature = "test-knobs"))]
    fifo: bool,
}

impl SendQueue {
    /// A scheduler; `fifo` (test builds only) puts everything in one
    /// first-in, first-out queue.
    #[cfg(any(test, feature = "test-knobs"))]
    pub(super) fn new(fifo: bool) -> Self {
        Self {
            fifo,
            ..Self::default()
        }
    }

    /// A scheduler.
    #[cfg(not(any(test, feature = "test-knobs")))]
    pub(super) fn new(_fifo: bool) -> Self {
        Self::default()
    }

    /// Queue a message (anything but pipe data, PipeEnd and a PipeClose
    /// sent by the application); `counted` is handed back by `pop`.
    pub(super) fn push_message(&mut self, msg: Msg, counted: bool) {
        self.reply_bytes += reply_bytes(&msg);
        self.messages.push_back((msg, counted));
    }

    /// Bytes of the replies queued (their payloads and error texts, and a
    /// few bytes of header each): what the peer's calls made this side
    /// hold for it.
    pub(super) fn queued_reply_bytes(&self) -> usize {
        self.reply_bytes
    }

    /// Bytes of pipe data queued (payloads only).
    pub(super) fn queued_pipe_bytes(&self) -> usize {
        self.pipe_bytes
    }

    /// Queue pipe data, a PipeEnd or a PipeClose: after everything queued
    /// so far for that pipe.
    pub(super) fn push_pipe(&mut self, msg: Msg) {
        self.pipe_bytes += pipe_bytes(&msg);
        #[cfg(any(test, feature = "test-knobs"))]
        if self.fifo {
            self.messages.push_back((msg, false));
            return;
        }
        self.data.push_back(msg);
    }

    /// Whether nothing is queued.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.data.is_empty()
    }

    /// Drop everything (the session closed).
    pub(super) fn clear(&mut self) {
        self.messages.clear();
        self.data.clear();
        self.run = 0;
        self.reply_bytes = 0;
        self.pipe_bytes = 0;
    }

    /// Whether the first pipe-data entry may go now: not before the
    /// PipeOpen of a pipe this side opened.
    fn data_ready(&self) -> bool {
        match self.data.front() {
            None => false,
            Some(msg) => pipe_of(msg).is_none_or(|id| id & 1 == 1 || id >> 1 < self.opens_taken),
        }
    }

    /// The next message to number and send, with its `counted` flag.
    pub(super) fn pop(&mut self) -> Option<(Msg, bool)> {
        let data_first =
            self.data_ready() && (self.messages.is_empty() || self.run >= MESSAGE_BURST);
        if data_first || self.messages.is_empty() {
            // With no message left, a PipeOpen cannot still be queued:
            // nothing can hold the data back any more.
            let msg = self.data.pop_front()?;
            self.pipe_bytes -= pipe_bytes(&msg);
            self.run = 0;
            return Some((msg, false));
        }
        let (msg, counted) = self.messages.pop_front()?;
        self.reply_bytes -= reply_bytes(&msg);
        self.pipe_bytes -= pipe_bytes(&msg);
        self.run = if self.data.is_empty() {
            0
        } else {
            self.run.saturating_add(1)
        };
        if let Msg::PipeOpen { pipe, .. } = &msg {
            self.opens_taken = self.opens_taken.max((pipe >> 1) + 1);
        }
        Some((msg, counted))
    }
}

/// Header bytes counted for each queued reply on top of its payload.
const REPLY_HEAD: usize = 16;

/// What a queued message counts in [`SendQueue::queued_reply_bytes`]:
/// nothing unless it is a reply.
fn reply_bytes(msg: &Msg) -> usize {
    match msg {
        Msg::ReplyOk { payload, .. } => REPLY_HEAD + payload.len(),
        Msg::ReplyErr { error, .. } => REPLY_HEAD + error.message.len(),
        _ => 0,
    }
}

/// What a queued message counts in [`SendQueue::queued_pipe_bytes`]: its
/// data if it is pipe data (which the test knob `fifo` queues with the
/// messages).
fn pipe_bytes(msg: &Msg) -> usize {
    match msg {
        Msg::PipeData { data, .. } => data.len(),
        _ => 0,
    }
}

/// The pipe a pipe-queue entry belongs to (in this side's numbering).
fn pipe_of(msg: &Msg) -> Option<u64> {
    match msg {
        Msg::PipeData { pipe, .. } | Msg::PipeEnd { pipe } | Msg::PipeClose { pipe, .. } => {
            Some(*pipe)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn cast(i: u8) -> Msg {
        Msg::Cast {
            to: "c".into(),
            payload: Bytes::from(vec![i]),
            trace: Default::default(),
        }
    }

    fn data(pipe: u64, i: u8) -> Msg {
        Msg::PipeData {
            pipe,
            last: true,
            data: Bytes::from(vec![i]),
        }
    }

    fn open(pipe: u64) -> Msg {
        Msg::PipeOpen {
            pipe,
            server: "s".into(),
            port: "p".into(),
        }
    }

    fn drain(q: &mut SendQueue) -> Vec<Msg> {
        std::iter::from_fn(|| q.pop().map(|(m, _)| m)).collect()
    }

    #[test]
    fn messages_overtake_queued_pipe_data() {
        let mut q = SendQueue::new(false);
        // Pipe 1 was opened by the peer: its data needs no PipeOpen.
        for i in 0..10 {
            q.push_pipe(data(1, i));
        }
        q.push_message(cast(0), true);
        assert_eq!(q.pop(), Some((cast(0), true)));
        assert_eq!(q.pop(), Some((data(1, 0), false)));
        assert!(!q.is_empty());
    }

    #[test]
    fn pipe_data_gets_one_packet_after_each_burst() {
        let mut q = SendQueue::new(false);
        for i in 0..3 {
            q.push_pipe(data(1, i));
        }
        for i in 0..12 {
            q.push_message(cast(i), true);
        }
        let order = drain(&mut q);
        let burst = MESSAGE_BURST as usize;
        let mut want: Vec<Msg> = Vec::new();
        let mut casts = (0..12).map(cast);
        for i in 0..3 {
            want.extend(casts.by_ref().take(burst));
            want.push(data(1, i));
        }
        want.extend(casts);
        assert_eq!(order, want);
    }

    #[test]
    fn local_pipe_data_waits_for_its_open() {
        let mut q = SendQueue::new(false);
        // Pipe 0 open and written; then a flood of casts; then pipe 2
        // opened behind the casts and written.
        q.push_message(open(0), true);
        q.push_pipe(data(0, 0));
        for i in 0..10 {
            q.push_message(cast(i), true);
        }
        q.push_message(open(2), true);
        q.push_pipe(data(2, 0));
        q.push_pipe(Msg::PipeEnd { pipe: 2 });
        let order = drain(&mut q);
        let pos = |m: &Msg| order.iter().position(|x| x == m).unwrap_or(usize::MAX);
        assert!(pos(&open(0)) < pos(&data(0, 0)));
        assert!(pos(&open(2)) < pos(&data(2, 0)));
        assert!(pos(&data(2, 0)) < pos(&Msg::PipeEnd { pipe: 2 }));
        assert_eq!(order.len(), 15);
    }

    #[test]
    fn queued_replies_are_counted_until_taken() {
        let mut q = SendQueue::new(false);
        q.push_message(cast(0), true);
        q.push_message(
            Msg::ReplyOk {
                id: 1,
                payload: Bytes::from(vec![0u8; 1000]),
            },
            true,
        );
        assert_eq!(q.queued_reply_bytes(), REPLY_HEAD + 1000);
        assert_eq!(q.pop().map(|(m, _)| m), Some(cast(0)));
        assert_eq!(q.queued_reply_bytes(), REPLY_HEAD + 1000);
        assert!(q.pop().is_some());
        assert_eq!(q.queued_reply_bytes(), 0);
        q.push_pipe(data(1, 7));
        assert_eq!(q.queued_pipe_bytes(), 1);
        assert!(q.pop().is_some());
        assert_eq!(q.queued_pipe_bytes(), 0);
    }

    #[test]
    fn fifo_knob_keeps_the_queued_order() {
        let mut q = SendQueue::new(true);
        q.push_pipe(data(1, 0));
        q.push_message(cast(0), true);
        q.push_pipe(data(1, 1));
        assert_eq!(drain(&mut q), vec![data(1, 0), cast(0), data(1, 1)]);
    }
}
