//! Framing: how packets are cut out of (and put onto) a link, chosen by the
//! link's kind.
//!
//! | link | framing | on damage |
//! |---|---|---|
//! | reliable byte stream (TCP, Unix) | [`LengthFraming`]: u32 big-endian length prefix | a frame over the limit closes the session |
//! | lossy byte stream (serial) | [`CobsFraming`]: COBS over `packet ‖ CRC-32`, `0x00` delimited | bad frames are dropped and counted; resync at the next `0x00` |
//! | datagrams with a small MTU (CAN, BLE) | [`SegmentFraming`]: 2-byte segment header, CRC-32 over the frame | a frame with a lost or bad segment is dropped and counted |
//!
//! Each framing is a small pure type: `encode` writes link chunks, `decode`
//! takes whatever bytes arrived (any split) and yields whole packets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::Error;

mod cobs;
mod length;
mod segment;

pub use cobs::CobsFraming;
pub use length::LengthFraming;
pub use segment::{MAX_SEGMENTS, REASSEMBLIES, SEGMENT_HEADER, SegmentFraming};

/// The CRC used by the lossy framings: CRC-32/ISO-HDLC (the Ethernet/zlib
/// CRC-32), appended little-endian.
/// Slice-by-16 tables: several times faster than one table, for 16 KiB.
pub(crate) const CRC32: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);

/// `frame` followed by its CRC-32 (little-endian), after checking that it
/// fits `max_frame`: the common start of the lossy framings.
pub(crate) fn with_crc(frame: &[u8], max_frame: usize) -> Result<Vec<u8>, Error> {
    if frame.len() > max_frame {
        return Err(Error::WireFrameTooLarge {
            len: frame.len(),
            max: max_frame,
        });
    }
    let mut raw = Vec::with_capacity(frame.len() + 4);
    raw.extend_from_slice(frame);
    raw.extend_from_slice(&CRC32.checksum(frame).to_le_bytes());
    Ok(raw)
}

/// What kind of link the session runs over; it picks the framing and
/// whether the session retransmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FramingKind {
    /// A reliable, ordered byte stream (TCP, Unix socket): length-prefixed
    /// frames, no retransmission.
    ReliableStream,
    /// A byte stream that may lose or corrupt bytes (a serial line):
    /// COBS + CRC-32 frames, retransmission on.
    LossyStream,
    /// Datagrams of at most `mtu` bytes that may be lost, duplicated or
    /// reordered (CAN: 8 or 64, BLE: 20–244): segmentation, retransmission
    /// on. Each call to `handle_input` must carry exactly one datagram and
    /// each `poll_transmit` chunk is one datagram.
    Datagram {
        /// The largest datagram the link carries, in bytes (at least 4).
        mtu: usize,
    },
}

impl FramingKind {
    /// Whether the link can lose data, so the session must retransmit.
    pub fn is_lossy(self) -> bool {
        !matches!(self, FramingKind::ReliableStream)
    }
}

/// Damage counters kept by a framing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramingCounters {
    /// Frames dropped because their CRC did not match.
    pub crc_failures: u64,
    /// Frames dropped because they were malformed (bad COBS, overlong,
    /// lost or inconsistent segments, reassembly timeout).
    pub framing_failures: u64,
}

/// One of the framings, picked at run time.
#[derive(Debug)]
pub(crate) enum Framer {
    Length(LengthFraming),
    Cobs(CobsFraming),
    Segment(SegmentFraming),
}

impl Framer {
    pub(crate) fn new(
        kind: FramingKind,
        max_frame: usize,
        reassembly_timeout: Duration,
    ) -> Result<Self, Error> {
        Ok(match kind {
            FramingKind::ReliableStream => Framer::Length(LengthFraming::new(max_frame)),
            FramingKind::LossyStream => Framer::Cobs(CobsFraming::new(max_frame)),
            FramingKind::Datagram { mtu } => {
                Framer::Segment(SegmentFraming::new(mtu, max_frame, reassembly_timeout)?)
            }
        })
    }

    pub(crate) fn max_frame(&self) -> usize {
        match self {
            Framer::Length(f) => f.max_frame(),
            Framer::Cobs(f) => f.max_frame(),
            Framer::Segment(f) => f.max_frame(),
        }
    }

    pub(crate) fn encode(&mut self, frame: &[u8], out: &mut VecDeque<Bytes>) -> Result<(), Error> {
        self.encode_parts(frame, Bytes::new(), out)
    }

    /// The bytes a frame is preceded by when it can be framed in place
    /// (see [`frame_in_place`](Self::frame_in_place)): the length
    /// framing's prefix; `None` for the framings that transform the frame.
    pub(crate) fn in_place_prefix(&self) -> Option<usize> {
        match self {
            Framer::Length(_) => Some(4),
            _ => None,
        }
    }

    /// Append one frame, the packet `encode` writes, to `buf` after the
    /// frames already there ([`LengthFraming::pack`]); only the length
    /// framing packs frames.
    pub(crate) fn pack(
        &self,
        buf: &mut BytesMut,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
    ) -> Result<(), Error> {
        match self {
            Framer::Length(f) => f.pack(buf, encode),
            _ => Err(Error::Encode("this framing cannot pack frames".into())),
        }
    }

    /// Frame a packet written after [`in_place_prefix`](Self::in_place_prefix)
    /// reserved bytes of `buf`: the prefix is filled in and the whole
    /// buffer becomes one chunk. Returns the chunk.
    pub(crate) fn frame_in_place(
        &mut self,
        mut buf: BytesMut,
        out: &mut VecDeque<Bytes>,
    ) -> Result<Bytes, Error> {
        let prefix = self.length_prefix(buf.len(), 0)?;
        buf[..4].copy_from_slice(&prefix);
        let chunk = buf.freeze();
        out.push_back(chunk.clone());
        Ok(chunk)
    }

    /// Frame the packet `buf ‖ tail`, whose head was written after
    /// [`in_place_prefix`](Self::in_place_prefix) reserved bytes of `buf`:
    /// the prefix is filled in, and `buf` and `tail` go out as they are
    /// (neither is copied).
    pub(crate) fn frame_parts_in_place<B>(
        &mut self,
        mut buf: B,
        tail: Bytes,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), Error>
    where
        B: std::ops::DerefMut<Target = [u8]> + Into<Bytes>,
    {
        let prefix = self.length_prefix(buf.len(), tail.len())?;
        buf[..4].copy_from_slice(&prefix);
        // Moved, not cloned: a clone of a `Vec`'s `Bytes` would allocate
        // its shared count for nothing.
        out.push_back(buf.into());
        if !tail.is_empty() {
            out.push_back(tail);
        }
        Ok(())
    }

    /// The length prefix of a frame of `head` bytes (the 4 of the prefix
    /// included) and `tail` more, if it fits the length framing.
    fn length_prefix(&self, head: usize, tail: usize) -> Result<[u8; 4], Error> {
        let Framer::Length(f) = self else {
            return Err(Error::Encode("this framing cannot frame in place".into()));
        };
        let len = (head + tail).saturating_sub(4);
        if len > f.max_frame() || head < 4 {
            return Err(Error::WireFrameTooLarge {
                len,
                max: f.max_frame(),
            });
        }
        Ok((len as u32).to_be_bytes())
    }

    /// Frame the packet `head ‖ tail`; only the length framing keeps the
    /// tail uncopied (the lossy framings transform every byte anyway).
    pub(crate) fn encode_parts(
        &mut self,
        head: &[u8],
        tail: Bytes,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), Error> {
        match self {
            Framer::Length(f) => return f.encode_parts(head, tail, out),
            Framer::Cobs(f) => return f.encode_parts(head, &tail, out),
            Framer::Segment(_) => {}
        }
        let joined;
        let frame = if tail.is_empty() {
            head
        } else {
            joined = [head, &tail[..]].concat();
            &joined[..]
        };
        match self {
            Framer::Length(f) => f.encode(frame, out),
            Framer::Cobs(f) => f.encode(frame, out),
            Framer::Segment(f) => f.encode(frame, out),
        }
    }

    /// Take whole packets out of the caller's receive buffer: without a
    /// copy for the length framing; the others consume it all.
    pub(crate) fn decode_buf(
        &mut self,
        now: Instant,
        input: &mut BytesMut,
        out: &mut Vec<Bytes>,
    ) -> Result<(), Error> {
        if let Framer::Length(f) = self {
            return f.decode_buf(input, out);
        }
        let chunk = input.split();
        self.decode(now, &chunk, out)
    }

    pub(crate) fn decode(
        &mut self,
        now: Instant,
        input: &[u8],
        out: &mut Vec<Bytes>,
    ) -> Result<(), Error> {
        match self {
            Framer::Length(f) => f.decode(input, out),
            Framer::Cobs(f) => {
                f.decode(input, out);
                Ok(())
            }
            Framer::Segment(f) => {
                f.decode(now, input, out);
                Ok(())
            }
        }
    }

    pub(crate) fn timeout(&self) -> Option<Instant> {
        match self {
            Framer::Segment(f) => f.timeout(),
            _ => None,
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Framer::Segment(f) = self {
            f.handle_timeout(now);
        }
    }

    pub(crate) fn counters(&self) -> FramingCounters {
        match self {
            Framer::Length(_) => FramingCounters::default(),
            Framer::Cobs(f) => f.counters(),
            Framer::Segment(f) => f.counters(),
        }
    }
}
