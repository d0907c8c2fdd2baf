//! The packets a busy link sends most (Data with an untraced Cast or Call,
//! a ReplyOk or PipeData, and Ack) written straight into the output
//! buffer, without serde: the other half of `fast_decode`.
//!
//! The bytes are exactly the ones the serde encoder writes (msgpack's
//! shortest form of every integer and length, tuples as fixarrays), which
//! a property test below checks; any other packet goes to the serde
//! encoder ([`Packet::encode_into`](super::packet::Packet)).

use bytes::{BufMut, BytesMut};

use super::packet::{Msg, Packet, code};

/// Append `packet` to `buf` if it is one of the common packets; false
/// (and nothing appended) if not.
pub(crate) fn encode(packet: &Packet, buf: &mut BytesMut) -> bool {
    match packet {
        Packet::Data { seq, ack, msg } => {
            let start = buf.len();
            data_head(buf, *seq, *ack);
            match msg {
                Msg::Cast { to, payload, trace } if trace.context().is_none() => {
                    buf.put_u8(0x93);
                    buf.put_u8(code::CAST);
                    str(buf, to.as_bytes());
                    bin(buf, payload);
                }
                Msg::Call {
                    id,
                    to,
                    payload,
                    trace,
                } if trace.context().is_none() => {
                    buf.put_u8(0x94);
                    buf.put_u8(code::CALL);
                    uint(buf, *id);
                    str(buf, to.as_bytes());
                    bin(buf, payload);
                }
                Msg::ReplyOk { id, payload } => {
                    buf.put_u8(0x93);
                    buf.put_u8(code::REPLY_OK);
                    uint(buf, *id);
                    bin(buf, payload);
                }
                Msg::PipeData { pipe, last, data } => {
                    pipe_data_msg_head(buf, *pipe, *last, data.len());
                    buf.put_slice(data);
                }
                _ => {
                    buf.truncate(start);
                    return false;
                }
            }
            true
        }
        Packet::Ack { ack } => {
            buf.put_u8(0x92);
            buf.put_u8(code::ACK);
            uint(buf, *ack);
            true
        }
        _ => false,
    }
}

/// The head of a Data packet carrying PipeData, up to and including its
/// payload's bin length: the bytes serde writes for `(DATA, seq, ack,
/// (PIPE_DATA, pipe, last, data))` before `data` itself. `len` must be
/// below 4 GiB (entry checks keep every packet far below).
pub(crate) fn pipe_data_head(
    buf: &mut impl BufMut,
    seq: u64,
    ack: u64,
    pipe: u64,
    last: bool,
    len: usize,
) {
    data_head(buf, seq, ack);
    pipe_data_msg_head(buf, pipe, last, len);
}

/// A Data packet's array header, code, sequence number and ack: its
/// message follows.
fn data_head(buf: &mut impl BufMut, seq: u64, ack: u64) {
    buf.put_u8(0x94);
    buf.put_u8(code::DATA);
    uint(buf, seq);
    uint(buf, ack);
}

/// A PipeData message up to and including its payload's bin length.
fn pipe_data_msg_head(buf: &mut impl BufMut, pipe: u64, last: bool, len: usize) {
    buf.put_u8(0x94);
    buf.put_u8(code::PIPE_DATA);
    uint(buf, pipe);
    buf.put_u8(if last { 0xc3 } else { 0xc2 });
    bin_len(buf, len);
}

/// An unsigned integer in its shortest form.
fn uint(buf: &mut impl BufMut, v: u64) {
    if v < 0x80 {
        buf.put_u8(v as u8);
    } else if let Ok(v) = u8::try_from(v) {
        buf.put_u8(0xcc);
        buf.put_u8(v);
    } else if let Ok(v) = u16::try_from(v) {
        buf.put_u8(0xcd);
        buf.put_u16(v);
    } else if let Ok(v) = u32::try_from(v) {
        buf.put_u8(0xce);
        buf.put_u32(v);
    } else {
        buf.put_u8(0xcf);
        buf.put_u64(v);
    }
}

/// A string (its length in the shortest header, then its bytes).
fn str(buf: &mut BytesMut, s: &[u8]) {
    let n = s.len();
    if n < 32 {
        buf.put_u8(0xa0 | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        buf.put_u8(0xd9);
        buf.put_u8(n);
    } else if let Ok(n) = u16::try_from(n) {
        buf.put_u8(0xda);
        buf.put_u16(n);
    } else {
        buf.put_u8(0xdb);
        // Entry checks keep every packet far below 4 GiB.
        buf.put_u32(n as u32);
    }
    buf.put_slice(s);
}

/// A bin (its length in the shortest header, then its bytes).
fn bin(buf: &mut BytesMut, b: &[u8]) {
    bin_len(buf, b.len());
    buf.put_slice(b);
}

/// A bin's length in its shortest header.
fn bin_len(buf: &mut impl BufMut, n: usize) {
    if let Ok(n) = u8::try_from(n) {
        buf.put_u8(0xc4);
        buf.put_u8(n);
    } else if let Ok(n) = u16::try_from(n) {
        buf.put_u8(0xc5);
        buf.put_u16(n);
    } else {
        buf.put_u8(0xc6);
        // Entry checks keep every packet far below 4 GiB.
        buf.put_u32(n as u32);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::TraceContext;
    use crate::wire::name::Name;
    use crate::wire::packet::Trace;

    /// Integers and lengths around every boundary of msgpack's forms.
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..300,
            any::<u64>(),
            prop::sample::select(vec![
                0x7f,
                0x80,
                0xff,
                0x100,
                0xffff,
                0x1_0000,
                0xffff_ffff,
                0x1_0000_0000,
                u64::MAX
            ]),
        ]
    }

    fn length() -> impl Strategy<Value = usize> {
        prop_oneof![
            0usize..300,
            prop::sample::select(vec![31, 32, 255, 256, 65_535, 65_536]),
        ]
    }

    fn name() -> impl Strategy<Value = Name> {
        length().prop_map(|n| Name::from("é".repeat(n / 2) + &"n".repeat(n % 2)))
    }

    fn payload() -> impl Strategy<Value = Bytes> {
        length().prop_map(|n| Bytes::from(vec![7u8; n]))
    }

    fn traced() -> impl Strategy<Value = Trace> {
        any::<bool>().prop_map(|t| match TraceContext::new([1; 16], [2; 8], 1) {
            Some(context) if t => Trace::Context(context),
            _ => Trace::None,
        })
    }

    fn packet() -> impl Strategy<Value = Packet> {
        let msg = prop_oneof![
            (name(), payload(), traced())
                .prop_map(|(to, payload, trace)| { Msg::Cast { to, payload, trace } }),
            (number(), name(), payload(), traced()).prop_map(|(id, to, payload, trace)| {
                Msg::Call {
                    id,
                    to,
                    payload,
                    trace,
                }
            }),
            (number(), payload()).prop_map(|(id, payload)| Msg::ReplyOk { id, payload }),
            (number(), any::<bool>(), payload()).prop_map(|(pipe, last, data)| Msg::PipeData {
                pipe,
                last,
                data
            }),
            number().prop_map(|pipe| Msg::PipeEnd { pipe }),
        ];
        prop_oneof![
            (number(), number(), msg).prop_map(|(seq, ack, msg)| Packet::Data { seq, ack, msg }),
            number().prop_map(|ack| Packet::Ack { ack }),
            Just(Packet::Ping),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        /// What the fast path writes is byte for byte what serde writes;
        /// what it does not take it leaves as it was.
        #[test]
        fn the_common_packets_encode_as_serde_encodes_them(
            p in packet(),
            before in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut buf = BytesMut::from(&before[..]);
            let taken = encode(&p, &mut buf);
            let traced = matches!(
                &p,
                Packet::Data { msg: Msg::Cast { trace: Trace::Context(_), .. }
                    | Msg::Call { trace: Trace::Context(_), .. }, .. }
            );
            let common = matches!(
                &p,
                Packet::Ack { .. }
                    | Packet::Data { msg: Msg::Cast { .. } | Msg::Call { .. }
                        | Msg::ReplyOk { .. } | Msg::PipeData { .. }, .. }
            ) && !traced;
            prop_assert_eq!(taken, common);
            if taken {
                prop_assert_eq!(&buf[..before.len()], &before[..]);
                prop_assert_eq!(&buf[before.len()..], &p.encode().unwrap()[..]);
            } else {
                prop_assert_eq!(&buf[..], &before[..]);
            }
        }
    }
}
