//! COBS + CRC-32 framing for lossy byte streams.

use std::collections::VecDeque;

use bytes::Bytes;

use super::FramingCounters;
use crate::Error;

/// Most data bytes in one COBS block (its code byte is then 0xFF).
const BLOCK: usize = 254;

/// Frames on a byte stream that may lose or corrupt bytes (a serial line).
///
/// On the wire a frame is `COBS(packet ‖ crc32_le(packet)) 0x00`: the packet
/// followed by its CRC-32/ISO-HDLC in little-endian order, COBS-encoded so
/// it contains no zero byte, then one `0x00` delimiter. A frame whose COBS
/// or CRC is bad, or which grows past the maximum without a delimiter, is
/// dropped and counted; decoding resumes after the next `0x00`.
///
/// The CRC is computed with `crc32fast` (the same CRC-32, with the
/// processor's carry-less multiply where there is one: several GB/s).
///
/// The encoding is the usual one: a block of up to 254 non-zero bytes
/// preceded by its length + 1, a zero implied after every block but a full
/// one (code 0xFF) or the last; a frame ending with a full block has no
/// empty block after it.
#[derive(Debug)]
pub struct CobsFraming {
    max_frame: usize,
    max_encoded: usize,
    /// The encoded bytes of a frame whose delimiter has not arrived yet.
    buf: Vec<u8>,
    skipping: bool,
    counters: FramingCounters,
}

/// Append the COBS encoding of the concatenation of `parts` to `out` (no
/// delimiter). Runs without a zero are copied whole.
fn encode_into(parts: &[&[u8]], out: &mut Vec<u8>) {
    let mut code_at = out.len();
    out.push(0);
    let mut run = 0; // data bytes in the current block
    let mut full = false; // the current block is full, the next starts lazily
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            if full {
                code_at = out.len();
                out.push(0);
                run = 0;
                full = false;
            }
            let take = rest.len().min(BLOCK - run);
            match memchr::memchr(0, &rest[..take]) {
                Some(i) => {
                    out.extend_from_slice(&rest[..i]);
                    out[code_at] = (run + i + 1) as u8;
                    code_at = out.len();
                    out.push(0);
                    run = 0;
                    rest = &rest[i + 1..];
                }
                None => {
                    out.extend_from_slice(&rest[..take]);
                    run += take;
                    rest = &rest[take..];
                    if run == BLOCK {
                        out[code_at] = 0xFF;
                        full = true;
                    }
                }
            }
        }
    }
    if !full {
        out[code_at] = (run + 1) as u8;
    }
}

/// Decode one COBS frame (without its delimiter, so no zero byte in it)
/// into `out`; false if it is malformed (a block longer than what is left,
/// or a zero code).
fn decode_into(mut src: &[u8], out: &mut Vec<u8>) -> bool {
    while let Some((&code, rest)) = src.split_first() {
        let n = usize::from(code);
        if n == 0 || n - 1 > rest.len() {
            return false;
        }
        out.extend_from_slice(&rest[..n - 1]);
        src = &rest[n - 1..];
        if n < 0xFF && !src.is_empty() {
            out.push(0);
        }
    }
    true
}

impl CobsFraming {
    /// A framing accepting packets of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            max_encoded: ::cobs::max_encoding_length(max_frame + 4),
            buf: Vec::new(),
            skipping: false,
            counters: FramingCounters::default(),
        }
    }

    /// The largest packet carried.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Frames dropped so far.
    pub fn counters(&self) -> FramingCounters {
        self.counters
    }

    /// Append the framed `frame` to `out` (one chunk).
    pub fn encode(&mut self, frame: &[u8], out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        self.encode_parts(frame, &[], out)
    }

    /// Append the framed packet `head ‖ tail` to `out` (one chunk), without
    /// joining the two first.
    pub fn encode_parts(
        &mut self,
        head: &[u8],
        tail: &[u8],
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), Error> {
        let len = head.len() + tail.len();
        if len > self.max_frame {
            return Err(Error::WireFrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        let mut digest = crc32fast::Hasher::new();
        digest.update(head);
        digest.update(tail);
        let crc = digest.finalize().to_le_bytes();
        let mut enc = Vec::with_capacity(::cobs::max_encoding_length(len + 4) + 1);
        encode_into(&[head, tail, &crc], &mut enc);
        enc.push(0);
        out.push_back(Bytes::from(enc));
        Ok(())
    }

    /// Feed received bytes; push every intact packet to `out`.
    pub fn decode(&mut self, mut input: &[u8], out: &mut Vec<Bytes>) {
        while !input.is_empty() {
            let end = memchr::memchr(0, input);
            let run = &input[..end.unwrap_or(input.len())];
            if !self.skipping {
                if self.buf.len() + run.len() > self.max_encoded {
                    self.counters.framing_failures += 1;
                    self.skipping = true;
                    self.buf.clear();
                } else if end.is_some() && self.buf.is_empty() {
                    // A whole frame in this input: decoded from where it is.
                    if !run.is_empty() {
                        self.finish(run, out);
                    }
                } else {
                    self.buf.extend_from_slice(run);
                    if end.is_some() {
                        let frame = std::mem::take(&mut self.buf);
                        self.finish(&frame, out);
                        self.buf = frame;
                        self.buf.clear();
                    }
                }
            }
            match end {
                Some(i) => {
                    self.skipping = false;
                    input = &input[i + 1..];
                }
                None => break,
            }
        }
    }

    /// One encoded frame (delimiter removed): its packet goes to `out` if
    /// the COBS and the CRC are good.
    fn finish(&mut self, encoded: &[u8], out: &mut Vec<Bytes>) {
        let mut raw = Vec::with_capacity(encoded.len());
        if !decode_into(encoded, &mut raw) {
            self.counters.framing_failures += 1;
            return;
        }
        let Some(body_len) = raw.len().checked_sub(4) else {
            self.counters.framing_failures += 1;
            return;
        };
        let (body, crc) = raw.split_at(body_len);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(body) != crc {
            self.counters.crc_failures += 1;
            return;
        }
        raw.truncate(body_len);
        out.push(Bytes::from(raw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: &mut CobsFraming, frame: &[u8]) -> Vec<u8> {
        let mut out = VecDeque::new();
        f.encode(frame, &mut out).unwrap();
        out.into_iter().flat_map(|b| b.to_vec()).collect()
    }

    #[test]
    fn crc32fast_is_the_crc_of_the_protocol() {
        for data in [&b""[..], b"123456789", &[0u8; 3000], &[0xa5; 77]] {
            assert_eq!(crc32fast::hash(data), super::super::CRC32.checksum(data));
        }
    }

    #[test]
    fn golden() {
        let mut f = CobsFraming::new(100);
        // crc32("123456789") = 0xCBF43926, appended little-endian.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        // "\x11\x00\x22" ‖ crc, COBS-encoded, then 0x00.
        let crc = crc32fast::hash(b"\x11\x00\x22").to_le_bytes();
        let mut expect = vec![0x02, 0x11, 0x06, 0x22];
        expect.extend(crc);
        expect.push(0);
        assert!(!crc.contains(&0));
        assert_eq!(enc(&mut f, b"\x11\x00\x22"), expect);
    }

    #[test]
    fn scripted_partial_reads_and_resync() {
        let mut f = CobsFraming::new(100);
        let mut wire = b"\x13\x37garbage".to_vec(); // line noise before the first frame
        wire.push(0);
        wire.extend(enc(&mut f, b"one\x00\x00"));
        wire.extend(enc(&mut f, b""));
        wire.extend(enc(&mut f, &[0u8; 300][..100]));
        for step in [1, 2, 3, 7, wire.len()] {
            let mut f = CobsFraming::new(100);
            let mut out = Vec::new();
            for chunk in wire.chunks(step) {
                f.decode(chunk, &mut out);
            }
            assert_eq!(out.len(), 3, "step {step}");
            assert_eq!(out[0], &b"one\x00\x00"[..]);
            assert_eq!(out[1], &b""[..]);
            assert_eq!(out[2], &[0u8; 100][..]);
            assert_eq!(f.counters().framing_failures + f.counters().crc_failures, 1);
        }
    }

    #[test]
    fn corruption_is_dropped_and_counted() {
        let mut f = CobsFraming::new(100);
        let good = enc(&mut f, b"payload");
        let mut bad = good.clone();
        bad[3] ^= 0x40;
        let mut out = Vec::new();
        f.decode(&bad, &mut out);
        f.decode(&good, &mut out);
        assert_eq!(out, [&b"payload"[..]]);
        assert_eq!(f.counters().crc_failures, 1);
        // A truncated frame merges with the next one: both lost, next ok.
        f.decode(&good[..4], &mut out);
        f.decode(&good, &mut out);
        f.decode(&good, &mut out);
        assert_eq!(out.len(), 2);
    }

    proptest::proptest! {
        /// The encoder and decoder agree byte for byte with the `cobs`
        /// crate (used before, and by the serial relay of the tests), on
        /// data rich in zeros and in long runs around the 254-byte block.
        #[test]
        fn same_bytes_as_the_cobs_crate(
            data in proptest::collection::vec(
                proptest::prop_oneof![3 => 1u8..=255, 1 => proptest::strategy::Just(0u8)],
                0..1200,
            ),
            cut in 0usize..1200,
        ) {
            let mut ours = Vec::new();
            let cut = cut.min(data.len());
            encode_into(&[&data[..cut], &data[cut..]], &mut ours);
            proptest::prop_assert_eq!(&ours, &::cobs::encode_vec(&data));
            let mut back = Vec::new();
            proptest::prop_assert!(decode_into(&ours, &mut back));
            proptest::prop_assert_eq!(&back, &data);
        }
    }

    #[test]
    fn block_edges_match_the_cobs_crate() {
        for len in [0, 1, 253, 254, 255, 508, 509, 1000] {
            for zero_at in [None, Some(0), Some(253), Some(254)] {
                let mut data = vec![7u8; len];
                if let Some(z) = zero_at.filter(|z| *z < len) {
                    data[z] = 0;
                }
                let mut ours = Vec::new();
                encode_into(&[&data], &mut ours);
                assert_eq!(
                    ours,
                    ::cobs::encode_vec(&data),
                    "len {len} zero {zero_at:?}"
                );
                let mut back = Vec::new();
                assert!(decode_into(&ours, &mut back));
                assert_eq!(back, data);
            }
        }
        let mut out = Vec::new();
        assert!(!decode_into(&[0x05, 1, 2], &mut out), "block past the end");
        assert!(!decode_into(&[0x00], &mut out), "zero code");
    }

    #[test]
    fn overlong_run_is_skipped() {
        let mut f = CobsFraming::new(8);
        let mut out = Vec::new();
        f.decode(&[1u8; 1000], &mut out);
        assert_eq!(f.counters().framing_failures, 1);
        f.decode(&[0], &mut out);
        let good = enc(&mut f, b"ok");
        f.decode(&good, &mut out);
        assert_eq!(out, [&b"ok"[..]]);
        assert!(f.buf.capacity() < 100);
    }
}
