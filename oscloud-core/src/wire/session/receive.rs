//! Taking frames from the link apart: decoding packets and dispatching
//! the messages delivered in order.

use bytes::{Bytes, BytesMut};

use super::{CloseReason, Event, Session, State};
use crate::Error;
use crate::wire::packet::{CloseCode, Msg, Packet, VERSION};
use crate::wire::secure::SECURE_MARK;

impl Session {
    /// Handle the frames just decoded (`res` says how decoding ended);
    /// `frames` is kept, emptied, for the next input.
    pub(super) fn handle_frames(&mut self, mut frames: Vec<Bytes>, res: Result<(), Error>) {
        self.sync_framing_stats();
        let mut closed = false;
        for frame in frames.drain(..) {
            self.handle_frame(&frame);
            if self.state == State::Closed {
                closed = true;
                break;
            }
        }
        self.rx_frames = frames;
        if closed {
            return;
        }
        if let Err(e) = res {
            let code = match e {
                Error::WireFrameTooLarge { .. } => CloseCode::FrameTooLarge,
                _ => CloseCode::Protocol,
            };
            self.close_with(code, e.to_string());
        }
    }

    pub(super) fn handle_frame(&mut self, frame: &Bytes) {
        if self.secure.is_some() && frame.first() == Some(&SECURE_MARK) {
            return self.handle_sealed(BytesMut::from(&frame[..]));
        }
        self.handle_packet(frame, false);
    }

    /// A packet as received, or as opened from a sealed frame.
    pub(super) fn handle_packet(&mut self, frame: &Bytes, sealed: bool) {
        self.last_recv = self.now;
        let packet = match Packet::decode_frame(frame) {
            Ok(p) => p,
            Err(e) => {
                self.stats.decode_failures += 1;
                self.protocol_error(CloseCode::Decode, e.to_string());
                return;
            }
        };
        self.stats.frames_received += 1;
        if self.secure.is_some() && !self.secure_accepts(&packet, sealed) {
            return;
        }
        if sealed {
            // The initiator's proof that the responder has the keys.
            self.secure_connected();
        }
        match packet {
            Packet::ForeignHello { magic, version } => {
                if magic != crate::wire::MAGIC {
                    self.protocol_error(
                        CloseCode::BadMagic,
                        format!("not an oscloud peer: bad magic {magic:#010x}"),
                    );
                } else {
                    self.protocol_error(
                        CloseCode::Version,
                        format!(
                            "unsupported protocol version {version} (this side speaks {VERSION})"
                        ),
                    );
                }
            }
            Packet::Hello(h) => self.handle_hello(*h, frame),
            Packet::Handshake { msg } => self.handle_handshake(msg),
            Packet::HelloAck { session_id } => self.handle_hello_ack(session_id),
            Packet::Data { seq, ack, msg } => {
                if self.peer.is_none() {
                    self.stats.dropped += 1;
                    return;
                }
                self.hello_confirmed = true;
                self.handle_ack(ack, false);
                if self.state == State::Open {
                    self.handle_data(seq, msg);
                }
            }
            Packet::Ack { ack } => {
                // Not a proof that the peer has our Hello: a peer may
                // answer a Ping before it does.
                if self.peer.is_none() {
                    self.stats.dropped += 1;
                    return;
                }
                self.handle_ack(ack, true);
            }
            Packet::Ping => {
                if self.peer.is_some() {
                    self.ack_at = Some(self.now);
                }
            }
            Packet::Close { code, message } => {
                self.finish(CloseReason {
                    code,
                    message,
                    remote: true,
                });
            }
        }
        let awaiting = self.secure_awaiting();
        if self.hello_confirmed
            && self.in_flight.is_empty()
            && !awaiting
            && self.state != State::Closed
        {
            self.rto_at = None;
        } else if awaiting && self.rto_at.is_none() {
            self.rto_at = Some(self.now + self.rtt.rto());
        }
        if self.hello_confirmed && !awaiting && std::mem::take(&mut self.hs_backoff) {
            self.rtt.clear_backoff();
        }
    }

    pub(super) fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Announce(e) => self.handle_announce(e),
            Msg::Route(e, r) => self.handle_route(e, r),
            Msg::Withdraw { id, reason } => self.handle_withdraw(id, reason),
            Msg::Cast { to, payload, trace } => {
                let trace = self.trace_received(trace);
                self.stats.payload_bytes_received += payload.len() as u64;
                self.events.push_back(Event::Cast { to, payload, trace });
            }
            Msg::Call {
                id,
                to,
                payload,
                trace,
            } => {
                let trace = self.trace_received(trace);
                self.handle_call(id, to, payload, trace)
            }
            Msg::ReplyOk { id, payload } => {
                self.stats.payload_bytes_received += payload.len() as u64;
                self.handle_reply(id, Ok(payload));
            }
            Msg::ReplyErr { id, error } => self.handle_reply(id, Err(error)),
            Msg::PipeOpen { pipe, server, port } => self.handle_pipe_open(pipe, server, port),
            Msg::PipeData { pipe, last, data } => self.handle_pipe_data(pipe ^ 1, last, data),
            Msg::PipeCredit { pipe, bytes } => self.handle_pipe_credit(pipe ^ 1, bytes),
            Msg::PipeEnd { pipe } => self.handle_pipe_end(pipe ^ 1),
            Msg::PipeClose { pipe, reason } => self.handle_pipe_close(pipe ^ 1, reason),
        }
    }
}
