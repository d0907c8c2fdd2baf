//! Segmentation for small-MTU datagram links (CAN, BLE).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{CRC32, FramingCounters};
use crate::Error;

/// Bytes of segment header.
pub const SEGMENT_HEADER: usize = 2;
/// Most segments in one frame (the index has 7 bits).
pub const MAX_SEGMENTS: usize = 128;
const LAST: u8 = 0x80;

/// Frames over datagrams of at most `mtu` bytes.
///
/// A packet plus its CRC-32 (`packet ‖ crc32_le(packet)`) is cut into
/// segments of `mtu - 2` bytes (the last may be shorter); each datagram is
/// `[counter, flags_index] ‖ segment`, where `counter` (u8, wrapping) numbers
/// the frame and `flags_index` holds the segment index in bits 0–6 and the
/// *last segment* flag in bit 7. The receiver reassembles one frame at a
/// time, in any segment order: a segment of another frame, a malformed
/// segment, a bad CRC or a reassembly older than the timeout drops the
/// frame (counted). Lost frames are repaired by the session.
#[derive(Debug)]
pub struct SegmentFraming {
    mtu: usize,
    max_frame: usize,
    timeout: Duration,
    counter: u8,
    slot: Option<Reassembly>,
    counters: FramingCounters,
}

#[derive(Debug)]
struct Reassembly {
    counter: u8,
    started: Instant,
    parts: Vec<Option<Bytes>>,
    total: Option<usize>,
}

impl SegmentFraming {
    /// Segmentation for datagrams of `mtu` bytes, packets of at most
    /// `max_frame` bytes (lowered to what 128 segments can carry), dropping
    /// a partial frame after `timeout`.
    pub fn new(mtu: usize, max_frame: usize, timeout: Duration) -> Result<Self, Error> {
        if mtu < 4 {
            return Err(Error::WireConfig(format!(
                "datagram MTU {mtu} is too small (at least 4 bytes)"
            )));
        }
        let cap = MAX_SEGMENTS * (mtu - SEGMENT_HEADER) - 4;
        Ok(Self {
            mtu,
            max_frame: max_frame.min(cap),
            timeout,
            counter: 0,
            slot: None,
            counters: FramingCounters::default(),
        })
    }

    /// The largest packet carried.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Frames dropped so far.
    pub fn counters(&self) -> FramingCounters {
        self.counters
    }

    /// Append the datagrams carrying `frame` to `out`.
    pub fn encode(&mut self, frame: &[u8], out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        let raw = super::with_crc(frame, self.max_frame)?;
        let chunks: Vec<&[u8]> = raw.chunks(self.mtu - SEGMENT_HEADER).collect();
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut d = BytesMut::with_capacity(chunk.len() + SEGMENT_HEADER);
            let flags = (i as u8 & 0x7f) | if i + 1 == n { LAST } else { 0 };
            d.extend_from_slice(&[self.counter, flags]);
            d.extend_from_slice(chunk);
            out.push_back(d.freeze());
        }
        self.counter = self.counter.wrapping_add(1);
        Ok(())
    }

    /// When the partial frame (if any) expires.
    pub fn timeout(&self) -> Option<Instant> {
        self.slot.as_ref().map(|s| s.started + self.timeout)
    }

    /// Drop a partial frame older than the timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timeout().is_some_and(|t| t <= now) {
            self.slot = None;
            self.counters.framing_failures += 1;
        }
    }

    fn drop_slot(&mut self) {
        if self.slot.take().is_some() {
            self.counters.framing_failures += 1;
        }
    }

    /// Feed one received datagram; push a packet to `out` when one is
    /// complete and intact.
    pub fn decode(&mut self, now: Instant, datagram: &[u8], out: &mut Vec<Bytes>) {
        self.handle_timeout(now);
        let seg_max = self.mtu - SEGMENT_HEADER;
        let (counter, flags, body) = match datagram {
            [c, f, body @ ..] if !body.is_empty() && body.len() <= seg_max => (*c, *f, body),
            _ => {
                self.counters.framing_failures += 1;
                return;
            }
        };
        let index = usize::from(flags & 0x7f);
        let last = flags & LAST != 0;
        if !last && body.len() != seg_max {
            // Only the last segment may be short: this one was truncated.
            self.counters.framing_failures += 1;
            return;
        }
        if self.slot.as_ref().is_some_and(|s| s.counter != counter) {
            self.drop_slot();
        }
        let slot = self.slot.get_or_insert_with(|| Reassembly {
            counter,
            started: now,
            parts: Vec::new(),
            total: None,
        });
        let consistent = if last {
            slot.total.is_none_or(|t| t == index + 1) && slot.parts.len() <= index + 1
        } else {
            slot.total.is_none_or(|t| index + 1 < t)
        };
        if !consistent {
            self.drop_slot();
            return;
        }
        if last {
            slot.total = Some(index + 1);
        }
        if slot.parts.len() <= index {
            slot.parts.resize(index + 1, None);
        }
        if let Some(p) = slot.parts.get_mut(index)
            && p.is_none()
        {
            *p = Some(Bytes::copy_from_slice(body));
        }
        let complete = slot
            .total
            .is_some_and(|t| slot.parts.len() == t && slot.parts.iter().all(Option::is_some));
        if !complete {
            return;
        }
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut raw = BytesMut::new();
        for p in slot.parts.into_iter().flatten() {
            raw.extend_from_slice(&p);
        }
        let Some(body_len) = raw.len().checked_sub(4) else {
            self.counters.framing_failures += 1;
            return;
        };
        let crc = raw.split_off(body_len);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if CRC32.checksum(&raw) != crc || raw.len() > self.max_frame {
            self.counters.crc_failures += 1;
            return;
        }
        out.push(raw.freeze());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: &mut SegmentFraming, frame: &[u8]) -> Vec<Bytes> {
        let mut out = VecDeque::new();
        f.encode(frame, &mut out).unwrap();
        out.into()
    }

    #[test]
    fn golden() {
        let mut f = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        assert_eq!(f.max_frame(), 128 * 6 - 4);
        let crc = CRC32.checksum(b"abcdefgh").to_le_bytes();
        let d = enc(&mut f, b"abcdefgh");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], &b"\x00\x00abcdef"[..]);
        assert_eq!(
            &d[1][..],
            &[&[0x00, 0x81][..], b"gh", &crc[..]].concat()[..]
        );
        // The next frame has the next counter; one segment with LAST set.
        let d = enc(&mut f, b"");
        assert_eq!(&d[0][..2], &[0x01, 0x80]);
        assert_eq!(d[0].len(), 6);
    }

    #[test]
    fn reassembles_in_any_order_with_duplicates() {
        let t0 = Instant::now();
        let mut tx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let frame: Vec<u8> = (0..40u8).collect();
        let mut d = enc(&mut tx, &frame);
        d.reverse();
        d.insert(2, d[2].clone());
        let mut rx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let mut out = Vec::new();
        for x in &d {
            rx.decode(t0, x, &mut out);
        }
        assert_eq!(out, [Bytes::from(frame)]);
        assert_eq!(rx.counters(), FramingCounters::default());
    }

    #[test]
    fn lost_segment_drops_the_frame() {
        let t0 = Instant::now();
        let mut tx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let a = enc(&mut tx, &[1; 20]);
        let b = enc(&mut tx, &[2; 20]);
        let mut rx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let mut out = Vec::new();
        for x in a.iter().skip(1).chain(&b) {
            rx.decode(t0, x, &mut out);
        }
        assert_eq!(out, [Bytes::from(vec![2u8; 20])]);
        assert_eq!(rx.counters().framing_failures, 1);
    }

    #[test]
    fn reassembly_times_out() {
        let t0 = Instant::now();
        let mut tx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let a = enc(&mut tx, &[1; 20]);
        let mut rx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let mut out = Vec::new();
        rx.decode(t0, &a[0], &mut out);
        assert_eq!(rx.timeout(), Some(t0 + Duration::from_secs(1)));
        for x in &a[1..] {
            rx.decode(t0 + Duration::from_secs(2), x, &mut out);
        }
        assert!(out.is_empty());
        assert!(rx.counters().framing_failures >= 1);
    }

    #[test]
    fn garbage_is_counted() {
        let t0 = Instant::now();
        let mut rx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let mut out = Vec::new();
        for d in [
            &b""[..],
            b"\x00",
            b"\x00\x80",
            b"\x00\x00abc",
            b"\x00\x80abcdefghijk",
        ] {
            rx.decode(t0, d, &mut out);
        }
        rx.decode(t0, b"\x05\x80abcd", &mut out); // complete but bad CRC
        assert!(out.is_empty());
        assert_eq!(rx.counters().framing_failures, 5);
        assert_eq!(rx.counters().crc_failures, 1);
        assert!(SegmentFraming::new(3, 100, Duration::ZERO).is_err());
    }
}
