//! Pipe flow control: credit spent by sends, given back by the reader
//! (`docs/PROTOCOL.md` §8).

use super::{Event, PipeId, Session};
use crate::Error;
use crate::wire::packet::{CloseCode, Msg};

impl Session {
    /// Bytes that may be sent on a pipe now (`None` if it is not open).
    pub fn pipe_credit(&self, id: PipeId) -> Option<u64> {
        self.pipes.get(&id.0).map(|p| p.send_credit)
    }

    /// The local reader took `n` bytes of a pipe's frames: give the peer
    /// that much credit back. Ignored for a closed pipe.
    pub fn pipe_consumed(&mut self, id: PipeId, n: usize) -> Result<(), Error> {
        self.check_open()?;
        let known = self.pipe_known(id.0);
        let Some(pipe) = self.pipes.get_mut(&id.0) else {
            return if known {
                Ok(())
            } else {
                Err(Error::WireUnknownPipe(id.0))
            };
        };
        let delivered = pipe.recv_used.saturating_sub(pipe.partial.len() as u64);
        let grant = (n as u64).min(delivered);
        if grant > 0 {
            pipe.recv_used -= grant;
            if pipe.grant == 0 {
                self.grants_due.push(id.0);
            }
            pipe.grant += grant;
        }
        Ok(())
    }

    /// Queue one PipeCredit per pipe for the credit given back since the
    /// last transmission.
    pub(super) fn queue_grants(&mut self) {
        for id in std::mem::take(&mut self.grants_due) {
            if let Some(pipe) = self.pipes.get_mut(&id)
                && pipe.grant > 0
            {
                let bytes = std::mem::take(&mut pipe.grant);
                self.queue
                    .push_message(Msg::PipeCredit { pipe: id, bytes }, false);
            }
        }
    }

    /// The peer gave credit back on pipe `id`.
    pub(super) fn handle_pipe_credit(&mut self, id: u64, bytes: u64) {
        let window = self.peer.as_ref().map_or(0, |p| u64::from(p.pipe_window));
        let (over, writable) = match self.pipe_or_close(id) {
            None => return,
            Some(p) => {
                p.send_credit = p.send_credit.saturating_add(bytes);
                (p.send_credit > window, std::mem::take(&mut p.blocked))
            }
        };
        if over {
            self.protocol_error(
                CloseCode::FlowControl,
                format!("pipe credit above the window on {}", PipeId(id)),
            );
        } else if writable {
            self.events
                .push_back(Event::PipeWritable { id: PipeId(id) });
        }
    }
}
