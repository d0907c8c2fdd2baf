//! Building outgoing packets: the send queue's messages, acks, pings and
//! the handshake packets, framed (and sealed on secure sessions).

use super::{MIN_FRAME, Session, State};
use crate::Error;
use crate::wire::packet::{CloseCode, DATA_OVERHEAD, Msg, Packet, encoded_len};
use crate::wire::secure::SECURE_OVERHEAD;

/// Below this much free room the buffer small packets are packed into
/// grows (by [`PACK_BUFFER`]) before the next one.
const PACK_SPARE: usize = 4 * 1024;
/// How much the packing buffer grows by at a time.
const PACK_BUFFER: usize = 64 * 1024;

impl Session {
    /// The largest packet we may send: ours and the peer's limit (less
    /// the encryption overhead on secure sessions).
    pub(super) fn send_max(&self) -> usize {
        let peer = self
            .peer
            .as_ref()
            .map_or(MIN_FRAME, |p| p.max_frame as usize);
        let overhead = if self.secure.is_some() {
            SECURE_OVERHEAD
        } else {
            0
        };
        self.max_frame.min(peer) - overhead
    }

    pub(super) fn enqueue(&mut self, msg: Msg) -> Result<(), Error> {
        self.check_open()?;
        if self.queued_app >= self.config.max_send_queue {
            self.queue_blocked = true;
            return Err(Error::WireWouldBlock {
                what: "send queue full",
            });
        }
        let max = self.send_max() - DATA_OVERHEAD;
        // A message whose bound fits needs no exact count.
        if msg.encoded_len_bound().is_none_or(|bound| bound > max) {
            let len = encoded_len(&msg)?;
            if len > max {
                return Err(Error::WireFrameTooLarge { len, max });
            }
        }
        self.queued_app += 1;
        self.queue.push_message(msg, true);
        Ok(())
    }

    /// Build one packet into `out`; false when there is nothing to send.
    pub(super) fn produce(&mut self) -> bool {
        if matches!(self.state, State::Closed | State::Detached) {
            return false;
        }
        let packet = if self.send_hello {
            self.send_hello = false;
            self.hello()
        } else if self.send_hello_ack {
            self.send_hello_ack = false;
            Packet::HelloAck {
                session_id: self.peer.as_ref().map_or(0, |p| p.session_id),
            }
        } else if let Some(msg) = self.hs_out.pop_front() {
            Packet::Handshake { msg }
        } else if self.secure.as_ref().is_some_and(|s| !s.has_keys()) {
            // Nothing but the handshake goes out before the keys.
            return false;
        } else if self.gap_acks > 0 && self.state == State::Open {
            self.gap_acks -= 1;
            if self.gap_acks == 0 {
                self.ack_at = None;
            }
            Packet::Ack {
                ack: self.recv_next - 1,
            }
        } else if let Some(p) = self.next_data() {
            p
        } else if self.ack_at.is_some_and(|t| t <= self.now) {
            self.ack_at = None;
            Packet::Ack {
                ack: self.recv_next - 1,
            }
        } else if self.ping_due {
            self.ping_due = false;
            Packet::Ping
        } else {
            return false;
        };
        let clear = matches!(
            packet,
            Packet::Hello(_) | Packet::HelloAck { .. } | Packet::Handshake { .. }
        );
        // A plaintext packet on a length-prefixed stream is encoded after
        // room for its prefix, and goes out without another copy.
        let prefix = match self.framer.in_place_prefix() {
            Some(prefix) if clear || self.secure.is_none() => prefix,
            _ => 0,
        };
        // One that is not split around a large payload is packed behind
        // the small packets before it, into one chunk (`poll_transmit`).
        if prefix > 0 && !packet.splits() {
            if self.packed.capacity() - self.packed.len() < PACK_SPARE {
                // In place once the chunks cut from it are written.
                self.packed.reserve(PACK_BUFFER);
            }
            let res = self
                .framer
                .pack(&mut self.packed, |buf| packet.encode_into(buf));
            return self.produced(res);
        }
        let res = match packet.encode_split_after(prefix) {
            Ok((head, tail)) if prefix > 0 => {
                self.framer.frame_parts_in_place(head, tail, &mut self.out)
            }
            Ok((head, tail)) => match self.secure.as_mut() {
                // On a length-prefixed stream the frame is sealed after
                // room for the prefix and goes out as one chunk, in a
                // buffer reused from an earlier frame when one came back.
                Some(sec) if !clear && self.framer.in_place_prefix().is_some() => {
                    let prefix = self.framer.in_place_prefix().unwrap_or(0);
                    match sec.seal_after(self.now, prefix, &head, &tail) {
                        Some(buf) => self
                            .framer
                            .frame_in_place(buf, &mut self.out)
                            .map(|chunk| sec.recycle(&chunk)),
                        None => Err(Error::Encode("no key to seal the packet".into())),
                    }
                }
                Some(sec) if !clear => match sec.seal(self.now, &head, &tail) {
                    Some(frame) => self.framer.encode(&frame, &mut self.out),
                    None => Err(Error::Encode("no key to seal the packet".into())),
                },
                _ => self.framer.encode_parts(&head, tail, &mut self.out),
            },
            Err(e) => Err(e),
        };
        self.produced(res)
    }

    /// Count a packet built, or close the session if it could not be.
    fn produced(&mut self, res: Result<(), Error>) -> bool {
        match res {
            Ok(()) => {
                self.stats.frames_sent += 1;
                true
            }
            Err(e) => {
                // Sizes are checked on entry, so this is a bug; do not panic.
                self.close_with(CloseCode::Protocol, format!("cannot send a packet: {e}"));
                true
            }
        }
    }
}
