//! Closing a directory link nothing uses (`docs/PROTOCOL.md` §13.1): a
//! link dialled on demand because of a lookup is closed, with a Normal
//! Close, once no message went either way over it for a while and
//! nothing waits on it.
//!
//! *Used* means a cast, call, reply or pipe packet, sent or received
//! (the round-trip probe and its answer, registry updates and keepalives
//! are not). *Busy* means something still waits on the link: a call of
//! this node not answered yet, a call of the peer being served, an open
//! pipe, a message the session has not taken yet. The driver counts the
//! uses and says whether the link is busy; this keeps the time.

use std::time::{Duration, Instant};

/// The idle clock of one directory link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleClose {
    /// How long the link may go unused before it is closed.
    after: Duration,
    /// Since when the link has been unused and not busy.
    since: Instant,
    /// The count of uses when it was last looked at.
    seen: u64,
}

impl IdleClose {
    /// A link that may idle `after`, unused since `now`.
    pub(crate) fn new(after: Duration, now: Instant) -> Self {
        Self {
            after,
            since: now,
            seen: 0,
        }
    }

    /// How long the link may idle.
    pub(crate) fn after(&self) -> Duration {
        self.after
    }

    /// Look at the link at `now`: `used` is its count of uses so far,
    /// `busy` whether something waits on it. A use or a busy link starts
    /// the idle time again.
    pub(crate) fn note(&mut self, used: u64, busy: bool, now: Instant) {
        if used != self.seen || busy {
            self.seen = used;
            self.since = now;
        }
    }

    /// When the link is to be closed, if nothing uses it until then.
    pub(crate) fn deadline(&self) -> Instant {
        self.since + self.after
    }

    /// Look at the link at `now` (as [`note`](Self::note)) and say
    /// whether it has idled long enough to be closed.
    pub(crate) fn due(&mut self, used: u64, busy: bool, now: Instant) -> bool {
        self.note(used, busy, now);
        now >= self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_and_waiting_work_start_the_idle_time_again() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut idle = IdleClose::new(s(10), t0);
        assert_eq!(idle.deadline(), t0 + s(10));
        assert!(!idle.due(0, false, t0 + s(9)));
        // A use at 9 s: closed 10 s later, not before.
        assert!(!idle.due(1, false, t0 + s(9)));
        assert!(!idle.due(1, false, t0 + s(18)));
        assert!(idle.due(1, false, t0 + s(19)));
        // A call waits for its reply for 30 s: not idle meanwhile.
        assert!(!idle.due(1, true, t0 + s(49)));
        assert!(!idle.due(1, false, t0 + s(58)));
        assert!(idle.due(1, false, t0 + s(59)));
    }
}
