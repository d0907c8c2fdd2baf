//! The pipe channel: the state of each pipe, opened, written, ended and
//! closed from either side (`docs/PROTOCOL.md` §4.3).

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::{Event, Session};
use crate::wire::packet::{CloseCode, DATA_OVERHEAD, Msg, PIPE_DATA_OVERHEAD};
use crate::{Error, ExitReason};

/// Identifies one pipe on a session. Bit 0 tells who opened it: 0 this
/// side, 1 the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipeId(pub u64);

impl PipeId {
    /// Whether this side opened the pipe.
    pub fn is_local(self) -> bool {
        self.0 & 1 == 0
    }
}

impl fmt::Display for PipeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pipe {}{}",
            self.0,
            if self.is_local() { "L" } else { "R" }
        )
    }
}

#[derive(Debug, Default)]
pub(super) struct Pipe {
    /// Bytes we may still send.
    pub(super) send_credit: u64,
    /// A send was refused for lack of credit.
    pub(super) blocked: bool,
    /// Bytes received and not yet given back as credit.
    pub(super) recv_used: u64,
    /// Credit given back by the application, not yet queued for the peer:
    /// grants made between two transmissions go in one PipeCredit.
    pub(super) grant: u64,
    /// Fragments of a frame not yet complete.
    pub(super) partial: BytesMut,
    /// We sent PipeEnd: no more data from this side.
    pub(super) send_ended: bool,
    /// The peer sent PipeEnd: no more data from that side.
    pub(super) recv_ended: bool,
}

impl Session {
    /// Open a pipe to port `port` of server `to_server` on the peer. It may
    /// be written at once; the peer may refuse it by closing it.
    pub fn open_pipe(&mut self, to_server: &str, port: &str) -> Result<PipeId, Error> {
        let credit = u64::from(self.check_open()?.pipe_window);
        if self.pipes.len() >= self.config.max_pipes {
            return Err(Error::WireLimit {
                what: "open pipes",
                limit: self.config.max_pipes,
            });
        }
        let id = self.next_local_pipe << 1;
        self.enqueue(Msg::PipeOpen {
            pipe: id,
            server: to_server.to_owned(),
            port: port.to_owned(),
        })?;
        self.next_local_pipe += 1;
        self.pipes.insert(
            id,
            Pipe {
                send_credit: credit,
                ..Pipe::default()
            },
        );
        Ok(PipeId(id))
    }

    /// Send one frame on a pipe. Fails with [`Error::WireWouldBlock`] when
    /// the peer's credit is short ([`Event::PipeWritable`] follows), with
    /// [`Error::WireFrameTooLarge`] when the frame exceeds the peer's
    /// `pipe_window`, and with [`Error::PipeClosed`] once the pipe closed.
    pub fn pipe_send(&mut self, id: PipeId, data: Bytes) -> Result<(), Error> {
        let peer = self.check_open()?;
        let window = peer.pipe_window as usize;
        let send_max = self.send_max();
        let known = self.pipe_known(id.0);
        let Some(pipe) = self.pipes.get_mut(&id.0) else {
            return Err(if known {
                Error::PipeClosed
            } else {
                Error::WireUnknownPipe(id.0)
            });
        };
        if pipe.send_ended {
            return Err(Error::PipeClosed);
        }
        let len = data.len();
        if len > window {
            return Err(Error::WireFrameTooLarge { len, max: window });
        }
        if len as u64 > pipe.send_credit {
            pipe.blocked = true;
            return Err(Error::WireWouldBlock {
                what: "pipe credit",
            });
        }
        pipe.send_credit -= len as u64;
        let chunk = send_max - DATA_OVERHEAD - PIPE_DATA_OVERHEAD;
        let mut rest = data;
        loop {
            let piece = rest.split_to(rest.len().min(chunk));
            let last = rest.is_empty();
            self.queue.push_pipe(Msg::PipeData {
                pipe: id.0,
                last,
                data: piece,
            });
            if last {
                break;
            }
        }
        self.stats.payload_bytes_sent += len as u64;
        Ok(())
    }

    /// Half-close a pipe: this side sends no more frames on it (further
    /// [`pipe_send`](Self::pipe_send)s fail with
    /// [`Error::PipeClosed`](crate::Error::PipeClosed)), but still reads.
    /// The peer gets [`Event::PipeEnded`] after every frame sent before.
    /// Ending an ended or closed pipe is a no-op.
    pub fn end_pipe(&mut self, id: PipeId) -> Result<(), Error> {
        self.check_open()?;
        let known = self.pipe_known(id.0);
        let Some(pipe) = self.pipes.get_mut(&id.0) else {
            return if known {
                Ok(())
            } else {
                Err(Error::WireUnknownPipe(id.0))
            };
        };
        if !std::mem::replace(&mut pipe.send_ended, true) {
            self.queue.push_pipe(Msg::PipeEnd { pipe: id.0 });
        }
        Ok(())
    }

    /// Close a pipe; the peer gets [`Event::PipeClosed`] after every frame
    /// sent before. Closing a closed pipe is a no-op.
    pub fn close_pipe(&mut self, id: PipeId, reason: ExitReason) -> Result<(), Error> {
        self.check_open()?;
        if self.pipes.remove(&id.0).is_none() {
            return if self.pipe_known(id.0) {
                Ok(())
            } else {
                Err(Error::WireUnknownPipe(id.0))
            };
        }
        self.queue.push_pipe(Msg::PipeClose { pipe: id.0, reason });
        Ok(())
    }

    pub(super) fn pipe_known(&self, id: u64) -> bool {
        let n = id >> 1;
        if id & 1 == 0 {
            n < self.next_local_pipe
        } else {
            n < self.next_remote_pipe
        }
    }

    /// The open pipe `id`; None if it is closed (ignore the message) or
    /// unknown (the session is closed).
    pub(super) fn pipe_or_close(&mut self, id: u64) -> Option<&mut Pipe> {
        if !self.pipes.contains_key(&id) {
            if !self.pipe_known(id) {
                self.protocol_error(
                    CloseCode::UnknownPipe,
                    format!("message for {}, which was never opened", PipeId(id)),
                );
            }
            return None;
        }
        self.pipes.get_mut(&id)
    }

    pub(super) fn handle_pipe_open(&mut self, wire_id: u64, server: String, port: String) {
        let id = wire_id ^ 1;
        if id & 1 == 0 || id >> 1 != self.next_remote_pipe {
            self.protocol_error(
                CloseCode::Protocol,
                format!(
                    "pipe opened with id {wire_id}, expected {}",
                    self.next_remote_pipe << 1
                ),
            );
            return;
        }
        self.next_remote_pipe += 1;
        if self.pipes.len() >= self.config.max_pipes {
            // Refuse it; its data is then ignored as that of a closed pipe.
            let reason = ExitReason::Failed(format!(
                "too many pipes (at most {})",
                self.config.max_pipes
            ));
            // A refusal: nothing of this pipe is queued here, so it need
            // not wait behind pipe data.
            self.queue
                .push_message(Msg::PipeClose { pipe: id, reason }, false);
            return;
        }
        let credit = self.peer.as_ref().map_or(0, |p| u64::from(p.pipe_window));
        self.pipes.insert(
            id,
            Pipe {
                send_credit: credit,
                ..Pipe::default()
            },
        );
        self.events.push_back(Event::PipeOpened {
            id: PipeId(id),
            server,
            port,
        });
    }

    pub(super) fn handle_pipe_data(&mut self, id: u64, last: bool, data: Bytes) {
        let window = u64::from(self.config.pipe_window);
        if self.pipes.get(&id).is_some_and(|p| p.recv_ended) {
            self.protocol_error(
                CloseCode::Protocol,
                format!("data after the end of {}", PipeId(id)),
            );
            return;
        }
        let frame = match self.pipe_or_close(id) {
            None => return,
            Some(p) => {
                p.recv_used += data.len() as u64;
                if p.recv_used > window {
                    None
                } else if !last {
                    p.partial.extend_from_slice(&data);
                    return;
                } else if p.partial.is_empty() {
                    Some(data)
                } else {
                    p.partial.extend_from_slice(&data);
                    Some(p.partial.split().freeze())
                }
            }
        };
        let Some(bytes) = frame else {
            self.protocol_error(
                CloseCode::FlowControl,
                format!("more data than the credit allows on {}", PipeId(id)),
            );
            return;
        };
        self.stats.payload_bytes_received += bytes.len() as u64;
        self.events.push_back(Event::PipeData {
            id: PipeId(id),
            bytes,
        });
    }

    /// The peer ended pipe `id`: it sends no more on it.
    pub(super) fn handle_pipe_end(&mut self, id: u64) {
        if let Some(p) = self.pipe_or_close(id)
            && !std::mem::replace(&mut p.recv_ended, true)
        {
            self.events.push_back(Event::PipeEnded { id: PipeId(id) });
        }
    }

    /// The peer closed pipe `id`.
    pub(super) fn handle_pipe_close(&mut self, id: u64, reason: ExitReason) {
        if self.pipe_or_close(id).is_some() {
            self.pipes.remove(&id);
            self.events.push_back(Event::PipeClosed {
                id: PipeId(id),
                reason,
            });
        }
    }
}
