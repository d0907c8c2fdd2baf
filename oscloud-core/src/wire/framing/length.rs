//! Length-delimited framing for reliable byte streams.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::Error;

/// Frames on a reliable byte stream: a 4-byte big-endian length, then that
/// many bytes of packet (tokio-util's `LengthDelimitedCodec` format).
///
/// Both directions are written here, byte for byte the codec's format (a
/// test checks it against the codec): encoding copies the packet once, and
/// decoding reports an oversized length with its value.
///
/// A length above the maximum is an error: on a reliable stream it can only
/// come from a broken or hostile peer, and the stream cannot resynchronise.
#[derive(Debug)]
pub struct LengthFraming {
    buf: BytesMut,
    max_frame: usize,
}

impl LengthFraming {
    /// A framing accepting packets of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        let max_frame = max_frame.min(u32::MAX as usize);
        Self {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// The largest packet carried.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Append one frame to `buf`, after what it holds: the length, then
    /// the packet `encode` writes after it (the length is filled in once
    /// the packet is there, so it is not copied). Small frames are packed
    /// one after another this way, to go out as one chunk. On an error
    /// `buf` is left as it was.
    pub fn pack(
        &self,
        buf: &mut BytesMut,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let start = buf.len();
        buf.put_u32(0);
        let framed = encode(buf).and_then(|()| {
            let len = buf.len() - start - 4;
            if len > self.max_frame {
                return Err(Error::WireFrameTooLarge {
                    len,
                    max: self.max_frame,
                });
            }
            Ok(len)
        });
        match framed {
            Ok(len) => {
                // Fits in the prefix: `max_frame` is at most `u32::MAX`.
                buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
                Ok(())
            }
            Err(e) => {
                buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Append the framed `frame` to `out` (one chunk).
    pub fn encode(&mut self, frame: &[u8], out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        self.encode_parts(frame, Bytes::new(), out)
    }

    /// Append the framed packet `head ‖ tail` to `out`: the length and
    /// `head` in one chunk, then `tail` as it is (not copied), so a large
    /// payload goes to the link straight from its sender's buffer.
    pub fn encode_parts(
        &mut self,
        head: &[u8],
        tail: Bytes,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), Error> {
        let len = head.len() + tail.len();
        if len > self.max_frame {
            return Err(Error::WireFrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        // The codec's format, written directly: the head is copied once.
        let mut dst = BytesMut::with_capacity(head.len() + 4);
        dst.put_u32(len as u32);
        dst.extend_from_slice(head);
        out.push_back(dst.freeze());
        if !tail.is_empty() {
            out.push_back(tail);
        }
        Ok(())
    }

    /// Take every complete packet out of `input`, the caller's receive
    /// buffer, without copying: what stays in `input` is the start of a
    /// packet. Read more bytes onto its end and call again. Room for them
    /// is the caller's to make: reserving it here would allocate a fresh
    /// buffer (and copy the start of the packet) whenever packets cut from
    /// `input` are still in use, where the caller can reuse one of its own.
    ///
    /// Bytes fed earlier through [`decode`](Self::decode) come first.
    /// Fails (and must not be fed again) on a length over the maximum.
    pub fn decode_buf(&mut self, input: &mut BytesMut, out: &mut Vec<Bytes>) -> Result<(), Error> {
        if !self.buf.is_empty() {
            let chunk = input.split();
            return self.decode(&chunk, out);
        }
        split_frames(self.max_frame, input, false, |f| out.push(f.freeze()))
    }

    /// Like [`decode_buf`](Self::decode_buf), but the frames stay mutable
    /// (for decryption in place); still without copying them.
    pub(crate) fn decode_buf_mut(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<BytesMut>,
    ) -> Result<(), Error> {
        if !self.buf.is_empty() {
            let chunk = input.split();
            let mut frames = Vec::new();
            let res = self.decode(&chunk, &mut frames);
            out.extend(frames.iter().map(|f| BytesMut::from(&f[..])));
            return res;
        }
        split_frames(self.max_frame, input, false, |f| out.push(f))
    }

    /// Feed received bytes; push every complete packet to `out`.
    ///
    /// Fails (and must not be fed again) on a length over the maximum.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<Bytes>) -> Result<(), Error> {
        self.buf.extend_from_slice(input);
        split_frames(self.max_frame, &mut self.buf, true, |f| {
            out.push(f.freeze())
        })
    }
}

/// Cut every complete length-prefixed frame out of `buf` (no copy) and hand
/// it to `push`; what stays is the start of a frame, with room reserved for
/// its rest if `reserve`. A length over `max_frame` empties `buf` and fails.
fn split_frames(
    max_frame: usize,
    buf: &mut BytesMut,
    reserve: bool,
    mut push: impl FnMut(BytesMut),
) -> Result<(), Error> {
    while buf.len() >= 4 {
        let len = (&buf[..4]).get_u32() as usize;
        if len > max_frame {
            buf.clear();
            return Err(Error::WireFrameTooLarge {
                len,
                max: max_frame,
            });
        }
        if buf.len() < 4 + len {
            if reserve {
                buf.reserve(4 + len - buf.len());
            }
            break;
        }
        buf.advance(4);
        push(buf.split_to(len));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: &mut LengthFraming, frame: &[u8]) -> Vec<u8> {
        let mut out = VecDeque::new();
        f.encode(frame, &mut out).unwrap();
        out.into_iter().flat_map(|b| b.to_vec()).collect()
    }

    #[test]
    fn golden() {
        let mut f = LengthFraming::new(100);
        assert_eq!(enc(&mut f, b"abc"), b"\x00\x00\x00\x03abc");
        assert_eq!(enc(&mut f, b""), b"\x00\x00\x00\x00");
    }

    #[test]
    fn same_bytes_as_tokio_util_codec() {
        use tokio_util::codec::{Encoder, LengthDelimitedCodec};
        let mut codec = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .new_codec();
        let mut f = LengthFraming::new(1 << 20);
        for frame in [&b""[..], b"x", &[7u8; 70_000][..]] {
            let mut theirs = BytesMut::new();
            codec
                .encode(Bytes::copy_from_slice(frame), &mut theirs)
                .unwrap();
            assert_eq!(enc(&mut f, frame), theirs.to_vec());
        }
    }

    #[test]
    fn decode_buf_takes_frames_without_copying() {
        let mut f = LengthFraming::new(1 << 20);
        let mut wire = enc(&mut f, &[1u8; 5000]);
        wire.extend(enc(&mut f, b"x"));
        wire.extend(enc(&mut f, &[2u8; 3000]));
        // Every split point between two reads.
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut out = Vec::new();
            f.decode_buf(&mut buf, &mut out).unwrap();
            buf.extend_from_slice(&wire[cut..]);
            f.decode_buf(&mut buf, &mut out).unwrap();
            assert!(buf.is_empty());
            assert_eq!(out.len(), 3, "cut {cut}");
            assert_eq!(&out[0][..], &[1u8; 5000][..]);
            assert_eq!(&out[1][..], b"x");
            assert_eq!(&out[2][..], &[2u8; 3000][..]);
        }
        // A partial frame stays where it is: the room for its rest is the
        // caller's to make (the link driver reuses its own buffers).
        let mut buf = BytesMut::from(&wire[..10]);
        let at = buf.as_ptr();
        f.decode_buf(&mut buf, &mut Vec::new()).unwrap();
        assert_eq!((buf.as_ptr(), &buf[..]), (at, &wire[..10]));
        // Decoding from a buffer of its own, the framing does make room.
        let mut own = LengthFraming::new(1 << 20);
        own.decode(&wire[..10], &mut Vec::new()).unwrap();
        assert!(own.buf.capacity() >= 5004);
        // Oversized.
        let mut small = LengthFraming::new(10);
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x0bhello world"[..]);
        assert!(small.decode_buf(&mut buf, &mut Vec::new()).is_err());
    }

    #[test]
    fn decode_buf_mut_matches_decode_buf() {
        let mut f = LengthFraming::new(1 << 20);
        let mut wire = enc(&mut f, &[1u8; 5000]);
        wire.extend(enc(&mut f, b"x"));
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut out = Vec::new();
            f.decode_buf_mut(&mut buf, &mut out).unwrap();
            buf.extend_from_slice(&wire[cut..]);
            f.decode_buf_mut(&mut buf, &mut out).unwrap();
            assert!(buf.is_empty());
            assert_eq!(out.len(), 2, "cut {cut}");
            assert_eq!(&out[0][..], &[1u8; 5000][..]);
            assert_eq!(&out[1][..], b"x");
        }
        let mut small = LengthFraming::new(10);
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x0bhello world"[..]);
        assert!(small.decode_buf_mut(&mut buf, &mut Vec::new()).is_err());
    }

    #[test]
    fn parts_frame_like_one_packet() {
        let mut f = LengthFraming::new(100);
        let mut out = VecDeque::new();
        f.encode_parts(b"ab", Bytes::from_static(b"cdef"), &mut out)
            .unwrap();
        let wire: Vec<u8> = out.into_iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(wire, enc(&mut f, b"abcdef"));
        let mut out = VecDeque::new();
        assert!(
            f.encode_parts(&[0; 60], Bytes::from(vec![0; 41]), &mut out)
                .is_err()
        );
    }

    #[test]
    fn parts_framed_in_place_frame_like_one_packet() {
        use crate::wire::framing::{Framer, FramingKind};
        let mut framer = Framer::new(
            FramingKind::ReliableStream,
            100,
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        let mut out = VecDeque::new();
        let head = b"\0\0\0\0ab".to_vec();
        framer
            .frame_parts_in_place(head, Bytes::from_static(b"cdef"), &mut out)
            .unwrap();
        let wire: Vec<u8> = out.into_iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(wire, enc(&mut LengthFraming::new(100), b"abcdef"));
        // The limit counts head and tail, without the prefix.
        let mut out = VecDeque::new();
        assert!(
            framer
                .frame_parts_in_place(vec![0; 64], Bytes::from(vec![0; 41]), &mut out)
                .is_err()
        );
        assert!(out.is_empty());
    }

    #[test]
    fn scripted_partial_reads() {
        let mut f = LengthFraming::new(100);
        let mut wire = enc(&mut f, b"hello");
        wire.extend(enc(&mut f, b""));
        wire.extend(enc(&mut f, b"world!"));
        // Every split point, one byte at a time, and all at once.
        for step in [1, 2, 3, 5, 7, wire.len()] {
            let mut f = LengthFraming::new(100);
            let mut out = Vec::new();
            for chunk in wire.chunks(step) {
                f.decode(chunk, &mut out).unwrap();
            }
            assert_eq!(out, [&b"hello"[..], b"", b"world!"], "step {step}");
        }
    }

    #[test]
    fn oversized_is_an_error() {
        let mut f = LengthFraming::new(4);
        let mut out = Vec::new();
        assert!(matches!(
            f.decode(b"\x00\x00\x00\x05", &mut out),
            Err(Error::WireFrameTooLarge { len: 5, max: 4 })
        ));
        let mut q = VecDeque::new();
        assert!(f.encode(b"12345", &mut q).is_err());
        // Exactly the maximum is fine.
        let mut f = LengthFraming::new(4);
        f.decode(b"\x00\x00\x00\x04abcd", &mut out).unwrap();
        assert_eq!(out, [&b"abcd"[..]]);
    }
}
