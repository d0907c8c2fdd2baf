//! The message channel: casts, calls and their replies
//! (`docs/PROTOCOL.md` §4.2).

use bytes::Bytes;

use super::{Event, Session};
use crate::wire::Name;
use crate::wire::packet::{CloseCode, Msg, RemoteError, Trace};
use crate::{Error, TraceContext};

/// Identifies one outgoing or incoming call on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl Session {
    /// Send a one-way message to the server named `to` on the peer.
    pub fn cast(&mut self, to: &str, payload: Bytes) -> Result<(), Error> {
        self.cast_traced(to, payload, None)
    }

    /// [`cast`](Self::cast) with the trace the message belongs to
    /// (`docs/PROTOCOL.md` §4.2; `None`: no trace element is sent).
    pub fn cast_traced(
        &mut self,
        to: &str,
        payload: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), Error> {
        self.cast_to(to.into(), payload, trace)
    }

    /// [`cast_traced`](Self::cast_traced) to a name already made (a
    /// link's sender keeps one per server, shared by its casts and calls).
    pub(crate) fn cast_to(
        &mut self,
        to: Name,
        payload: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<(), Error> {
        let n = payload.len() as u64;
        self.enqueue(Msg::Cast {
            to,
            payload,
            trace: trace.into(),
        })?;
        self.stats.payload_bytes_sent += n;
        Ok(())
    }

    /// Send a request to the server named `to` on the peer; the answer
    /// comes as [`Event::Reply`] with the returned id.
    pub fn call(&mut self, to: &str, payload: Bytes) -> Result<CallId, Error> {
        self.call_traced(to, payload, None)
    }

    /// [`call`](Self::call) with the trace the call belongs to
    /// (`docs/PROTOCOL.md` §4.2; `None`: no trace element is sent).
    pub fn call_traced(
        &mut self,
        to: &str,
        payload: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<CallId, Error> {
        self.call_to(to.into(), payload, trace)
    }

    /// [`call_traced`](Self::call_traced) to a name already made (a
    /// link's sender keeps one per server, shared by its calls).
    pub(crate) fn call_to(
        &mut self,
        to: Name,
        payload: Bytes,
        trace: Option<TraceContext>,
    ) -> Result<CallId, Error> {
        if self.pending_calls.len() >= self.config.max_pending_calls {
            self.check_open()?;
            return Err(Error::WireLimit {
                what: "pending calls",
                limit: self.config.max_pending_calls,
            });
        }
        let id = self.next_call;
        let n = payload.len() as u64;
        self.enqueue(Msg::Call {
            id,
            to,
            payload,
            trace: trace.into(),
        })?;
        self.next_call += 1;
        self.pending_calls.insert(id);
        self.stats.payload_bytes_sent += n;
        Ok(CallId(id))
    }

    /// Stop waiting for a call's reply (e.g. after a timeout); a late reply
    /// is then dropped. Returns whether the call was pending.
    pub fn cancel_call(&mut self, id: CallId) -> bool {
        self.pending_calls.remove(&id.0)
    }

    /// Answer a call received as [`Event::Call`].
    pub fn reply(&mut self, id: CallId, result: Result<Bytes, RemoteError>) -> Result<(), Error> {
        self.check_open()?;
        if !self.incoming_calls.contains(&id.0) {
            return Err(Error::WireUnknownCall(id.0));
        }
        let (msg, n) = match result {
            Ok(payload) => {
                let n = payload.len() as u64;
                (Msg::ReplyOk { id: id.0, payload }, n)
            }
            Err(error) => (Msg::ReplyErr { id: id.0, error }, 0),
        };
        self.enqueue(msg)?;
        self.incoming_calls.remove(&id.0);
        self.stats.payload_bytes_sent += n;
        Ok(())
    }

    /// A call from the peer: reported as [`Event::Call`], to be answered
    /// with [`reply`](Self::reply).
    pub(super) fn handle_call(
        &mut self,
        id: u64,
        to: Name,
        payload: Bytes,
        trace: Option<TraceContext>,
    ) {
        if self.incoming_calls.len() >= self.config.max_pending_calls {
            self.protocol_error(
                CloseCode::Limit,
                format!(
                    "more than {} calls waiting for a reply",
                    self.config.max_pending_calls
                ),
            );
            return;
        }
        if !self.incoming_calls.insert(id) {
            self.protocol_error(CloseCode::Protocol, format!("call id {id} reused"));
            return;
        }
        self.stats.payload_bytes_received += payload.len() as u64;
        self.events.push_back(Event::Call {
            id: CallId(id),
            to,
            payload,
            trace,
        });
    }

    /// The context of a received `trace` element; one that is not a
    /// context is ignored and counted in
    /// [`Stats::dropped`](super::Stats::dropped) (the message is delivered
    /// without it).
    pub(super) fn trace_received(&mut self, trace: Trace) -> Option<TraceContext> {
        if trace == Trace::Ignored {
            tracing::debug!("ignored a trace element that is not a trace context");
            self.stats.dropped += 1;
        }
        trace.context()
    }

    pub(super) fn handle_reply(&mut self, id: u64, result: Result<Bytes, RemoteError>) {
        if self.pending_calls.remove(&id) {
            self.events.push_back(Event::Reply {
                id: CallId(id),
                result,
            });
        } else if id >= self.next_call {
            self.protocol_error(
                CloseCode::Protocol,
                format!("reply to call {id}, which was never made"),
            );
        }
        // else: a cancelled call; drop the late reply.
    }
}
