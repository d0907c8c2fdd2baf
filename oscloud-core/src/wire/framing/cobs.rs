//! COBS + CRC-32 framing for lossy byte streams.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{CRC32, FramingCounters};
use crate::Error;

/// Frames on a byte stream that may lose or corrupt bytes (a serial line).
///
/// On the wire a frame is `COBS(packet ‖ crc32_le(packet)) 0x00`: the packet
/// followed by its CRC-32/ISO-HDLC in little-endian order, COBS-encoded so
/// it contains no zero byte, then one `0x00` delimiter. A frame whose COBS
/// or CRC is bad, or which grows past the maximum without a delimiter, is
/// dropped and counted; decoding resumes after the next `0x00`.
#[derive(Debug)]
pub struct CobsFraming {
    max_frame: usize,
    max_encoded: usize,
    buf: Vec<u8>,
    skipping: bool,
    counters: FramingCounters,
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
        let raw = super::with_crc(frame, self.max_frame)?;
        let mut enc = ::cobs::encode_vec(&raw);
        enc.push(0);
        out.push_back(Bytes::from(enc));
        Ok(())
    }

    /// Feed received bytes; push every intact packet to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<Bytes>) {
        for &b in input {
            if b == 0 {
                if self.skipping {
                    self.skipping = false;
                } else if !self.buf.is_empty() {
                    self.finish(out);
                }
                self.buf.clear();
            } else if !self.skipping {
                if self.buf.len() >= self.max_encoded {
                    self.counters.framing_failures += 1;
                    self.skipping = true;
                    self.buf.clear();
                } else {
                    self.buf.push(b);
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        let Ok(mut raw) = ::cobs::decode_vec(&self.buf) else {
            self.counters.framing_failures += 1;
            return;
        };
        let Some(body_len) = raw.len().checked_sub(4) else {
            self.counters.framing_failures += 1;
            return;
        };
        let (body, crc) = raw.split_at(body_len);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if CRC32.checksum(body) != crc {
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
    fn golden() {
        let mut f = CobsFraming::new(100);
        // crc32("123456789") = 0xCBF43926, appended little-endian.
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
        // "\x11\x00\x22" ‖ crc, COBS-encoded, then 0x00.
        let crc = CRC32.checksum(b"\x11\x00\x22").to_le_bytes();
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
