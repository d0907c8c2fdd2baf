//! The packets a busy link carries most (Data with a Cast, Call, ReplyOk
//! or PipeData, and Ack) read straight from the frame's bytes, without
//! serde: their fields are fixed, and the generic decoder spends most of
//! a small cast's receive time walking them.
//!
//! Only the exact shape this code's encoder writes is taken (arrays with
//! no extra element, so a Cast or Call with a trace element goes to the
//! full decoder, unsigned integers, `str` names and `bin` payloads);
//! anything else, valid or not, is left to the full decoder
//! ([`Packet::decode_frame`](super::packet::Packet)), so both always
//! agree (property-tested below and checked by the `packet` fuzz target).

use bytes::Bytes;

use super::name::Name;
use super::packet::{Msg, Packet, Src, Trace, code};

/// A cursor over a frame's bytes.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)),
        )
    }

    /// A fixarray's length.
    fn array(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x90..=0x9f => Some(usize::from(b & 0x0f)),
            _ => None,
        }
    }

    /// An unsigned integer, in any of msgpack's unsigned forms.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    /// `true` or `false`.
    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// A `str`'s bytes (not checked for UTF-8 here).
    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => usize::try_from(self.be(4)?).ok()?,
            _ => return None,
        };
        self.take(n)
    }

    /// A `bin`'s bytes.
    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => self.be(1)? as usize,
            0xc5 => self.be(2)? as usize,
            0xc6 => usize::try_from(self.be(4)?).ok()?,
            _ => return None,
        };
        self.take(n)
    }
}

/// The packet in `frame` if it is one of the common ones in its usual
/// shape; `None` leaves it to the full decoder.
pub(super) fn decode(frame: &Bytes) -> Option<Packet> {
    let src = Src::frame(frame);
    let mut c = Cursor { rest: frame };
    let len = c.array()?;
    let packet = match (c.uint()?, len) {
        (t, 4) if t == u64::from(code::DATA) => {
            let seq = c.uint()?;
            let ack = c.uint()?;
            let msg = match (c.array()?, c.uint()?) {
                (3, t) if t == u64::from(code::CAST) => {
                    let to = Name::from_frame(src, c.str()?).ok()?;
                    Msg::Cast {
                        to,
                        payload: src.bytes(c.bin()?),
                        trace: Trace::None,
                    }
                }
                (4, t) if t == u64::from(code::CALL) => {
                    let id = c.uint()?;
                    let to = Name::from_frame(src, c.str()?).ok()?;
                    Msg::Call {
                        id,
                        to,
                        payload: src.bytes(c.bin()?),
                        trace: Trace::None,
                    }
                }
                (3, t) if t == u64::from(code::REPLY_OK) => Msg::ReplyOk {
                    id: c.uint()?,
                    payload: src.bytes(c.bin()?),
                },
                (4, t) if t == u64::from(code::PIPE_DATA) => Msg::PipeData {
                    pipe: c.uint()?,
                    last: c.bool()?,
                    data: src.bytes(c.bin()?),
                },
                _ => return None,
            };
            Packet::Data { seq, ack, msg }
        }
        (t, 2) if t == u64::from(code::ACK) => Packet::Ack { ack: c.uint()? },
        _ => return None,
    };
    // Anything after the packet is the full decoder's to refuse.
    c.rest.is_empty().then_some(packet)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What the full decoder makes of `frame`.
    fn full(frame: &Bytes) -> Result<Packet, crate::Error> {
        Packet::decode_serde(frame)
    }

    fn common() -> impl Strategy<Value = Packet> {
        let payload = proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from);
        let name = "[a-z./-]{0,40}|\\PC{0,40}";
        let msg =
            prop_oneof![
                (name, payload.clone()).prop_map(|(to, payload)| Msg::Cast {
                    to: Name::from(to),
                    payload,
                    trace: Trace::None,
                }),
                (any::<u64>(), name, payload.clone()).prop_map(|(id, to, payload)| Msg::Call {
                    id,
                    to: Name::from(to),
                    payload,
                    trace: Trace::None,
                }),
                (any::<u64>(), payload.clone())
                    .prop_map(|(id, payload)| Msg::ReplyOk { id, payload }),
                (any::<u64>(), any::<bool>(), payload)
                    .prop_map(|(pipe, last, data)| Msg::PipeData { pipe, last, data }),
            ];
        prop_oneof![
            (any::<u64>(), any::<u64>(), msg).prop_map(|(seq, ack, msg)| Packet::Data {
                seq,
                ack,
                msg
            }),
            any::<u64>().prop_map(|ack| Packet::Ack { ack }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        /// The common packets, as encoded, are all taken by the fast path,
        /// and read as the full decoder reads them.
        #[test]
        fn the_common_packets_decode_as_the_full_decoder_decodes_them(p in common()) {
            let frame = Bytes::from(p.encode().unwrap());
            prop_assert_eq!(decode(&frame), Some(p.clone()));
            prop_assert_eq!(full(&frame).ok(), Some(p));
        }

        /// Damaged or cut short, a packet the fast path still takes is the
        /// one the full decoder reads.
        #[test]
        fn whatever_the_fast_path_takes_the_full_decoder_reads_alike(
            p in common(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = p.encode().unwrap();
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1).max(1));
            let frame = Bytes::from(bytes);
            if let Some(fast) = decode(&frame) {
                prop_assert_eq!(full(&frame).ok(), Some(fast));
            }
        }
    }

    #[test]
    fn payloads_and_long_names_are_slices_of_the_frame() {
        for (name, sliced) in [("bench".to_owned(), false), ("b".repeat(40), true)] {
            let p = Packet::Data {
                seq: 1,
                ack: 0,
                msg: Msg::Cast {
                    to: Name::from(name.as_str()),
                    payload: Bytes::from_static(&[7; 64]),
                    trace: Trace::None,
                },
            };
            let frame = Bytes::from(p.encode().unwrap());
            let Some(Packet::Data {
                msg: Msg::Cast { to, payload, .. },
                ..
            }) = decode(&frame)
            else {
                panic!("not taken by the fast path");
            };
            let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
            assert!(range.contains(&(payload.as_ptr() as usize)));
            // A short name is held in place, a long one is sliced.
            assert_eq!(range.contains(&(to.as_ptr() as usize)), sliced, "{name}");
            assert_eq!(to, name.as_str());
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_full_decoder() {
        // A Cast with an extra trailing element (a later version's).
        let frame = Bytes::from_static(&[
            0x94, 0x03, 0x01, 0x00, 0x94, 0x20, 0xa1, b'x', 0xc4, 0x00, 0xc0,
        ]);
        assert_eq!(decode(&frame), None);
        assert!(full(&frame).is_ok());
        // Trailing bytes after the packet.
        let frame = Bytes::from_static(&[0x92, 0x04, 0x01, 0x00]);
        assert_eq!(decode(&frame), None);
        assert!(full(&frame).is_err());
        // A Ping.
        assert_eq!(decode(&Bytes::from_static(&[0x91, 0x05])), None);
    }
}
