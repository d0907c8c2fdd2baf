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
/// *last segment* flag in bit 7. The receiver reassembles up to
/// [`REASSEMBLIES`] frames at once, each in any segment order, so segments
/// of neighbouring frames may interleave (a BLE stack that sends over
/// several ATT bearers reorders them). A malformed segment, a bad CRC, a
/// reassembly older than the timeout, or the oldest reassembly when a
/// frame beyond them starts, drops that frame (counted). Lost frames are
/// repaired by the session.
#[derive(Debug)]
pub struct SegmentFraming {
    mtu: usize,
    max_frame: usize,
    timeout: Duration,
    counter: u8,
    /// Reassemblies in progress, oldest first, at most [`REASSEMBLIES`].
    slots: Vec<Reassembly>,
    counters: FramingCounters,
}

/// Frames reassembled at once.
pub const REASSEMBLIES: usize = 4;

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
            slots: Vec::with_capacity(REASSEMBLIES),
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

    /// When the oldest partial frame (if any) expires.
    pub fn timeout(&self) -> Option<Instant> {
        self.slots.first().map(|s| s.started + self.timeout)
    }

    /// Drop the partial frames older than the timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        let before = self.slots.len();
        let timeout = self.timeout;
        self.slots.retain(|s| s.started + timeout > now);
        self.counters.framing_failures += (before - self.slots.len()) as u64;
    }

    /// Drop the reassembly at `i`.
    fn drop_slot(&mut self, i: usize) {
        self.slots.remove(i);
        self.counters.framing_failures += 1;
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
        let i = match self.slots.iter().position(|s| s.counter == counter) {
            Some(i) => i,
            None => {
                if self.slots.len() == REASSEMBLIES {
                    self.drop_slot(0);
                }
                self.slots.push(Reassembly {
                    counter,
                    started: now,
                    parts: Vec::new(),
                    total: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[i];
        let consistent = if last {
            slot.total.is_none_or(|t| t == index + 1) && slot.parts.len() <= index + 1
        } else {
            slot.total.is_none_or(|t| index + 1 < t)
        };
        if !consistent {
            self.drop_slot(i);
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
        let slot = self.slots.remove(i);
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
        // The incomplete frame waits for its segment until the timeout.
        assert_eq!(rx.counters().framing_failures, 0);
        assert_eq!(rx.timeout(), Some(t0 + Duration::from_secs(1)));
        rx.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(rx.counters().framing_failures, 1);
        assert_eq!(rx.timeout(), None);
    }

    #[test]
    fn segments_of_neighbouring_frames_may_interleave() {
        // As a BLE stack sending over several ATT bearers delivers them:
        // each frame's segments in order, the frames' segments mixed.
        let t0 = Instant::now();
        let mut tx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let frames: Vec<Vec<u8>> = (0..REASSEMBLIES as u8).map(|i| vec![i; 30]).collect();
        let segs: Vec<Vec<Bytes>> = frames.iter().map(|f| enc(&mut tx, f)).collect();
        let mut rx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let mut out = Vec::new();
        for k in 0..segs[0].len() {
            for s in segs.iter().rev() {
                rx.decode(t0, &s[k], &mut out);
            }
        }
        let mut want: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
        want.reverse();
        assert_eq!(out, want);
        assert_eq!(rx.counters(), FramingCounters::default());
    }

    #[test]
    fn a_frame_beyond_the_reassemblies_drops_the_oldest() {
        let t0 = Instant::now();
        let mut tx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let segs: Vec<Vec<Bytes>> = (0..=REASSEMBLIES as u8)
            .map(|i| enc(&mut tx, &[i; 20]))
            .collect();
        let mut rx = SegmentFraming::new(8, 1000, Duration::from_secs(1)).unwrap();
        let mut out = Vec::new();
        // The first segment of every frame, then the rest of every frame.
        for s in &segs {
            rx.decode(t0, &s[0], &mut out);
        }
        assert_eq!(rx.counters().framing_failures, 1);
        for s in segs[1..].iter().chain(&segs[..1]) {
            for d in &s[1..] {
                rx.decode(t0, d, &mut out);
            }
        }
        let want: Vec<Bytes> = (1..=REASSEMBLIES as u8)
            .map(|i| Bytes::from(vec![i; 20]))
            .collect();
        assert_eq!(out, want, "every frame but the oldest");
        // The oldest frame's late segments start a reassembly that expires.
        rx.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(rx.counters().framing_failures, 2);
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
