//! What a node knows about its links and routes: list the links with their
//! wire counters, read one link's health (round trips, queues, how it
//! closed), list the routes to the servers of other nodes, close a
//! link.
//!
//! The lists are copied into arrays of plain structs the caller owns
//! (fixed-size, NUL-terminated text fields, no pointers), so nothing needs
//! to be freed and a snapshot stays valid after the links change.

use std::ffi::{c_char, c_int};

use oscloud_core::endpoint::LATENCY_BUCKETS_NS;
use oscloud_core::node::{LinkStatus, Route};
use oscloud_core::wire::{RttHistogram, Stats};

use crate::error::{Error, OSCLOUD_OK, guard};
use crate::node::{OscloudNode, node_arg};

/// Bytes of a node id field: 32 hex digits and a NUL.
pub const OSCLOUD_NODE_ID_SIZE: usize = 33;
/// Bytes of an address field (`local`, `remote`, `dialed`), NUL included.
/// Longer text is cut, on a UTF-8 character boundary, to fit.
pub const OSCLOUD_ADDRESS_SIZE: usize = 256;
/// Bytes of a server name field, NUL included: every valid name (at most
/// 255 bytes) fits.
pub const OSCLOUD_NAME_SIZE: usize = 256;

const _: () = assert!(OSCLOUD_NAME_SIZE > oscloud_core::registry::MAX_NAME_LEN);

/// The wire counters of one link (Rust's `oscloud_core::wire::Stats`),
/// counted since the link's session started.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OscloudLinkStats {
    /// Packets sent (first sends and retransmissions).
    pub frames_sent: u64,
    /// Intact packets received.
    pub frames_received: u64,
    /// Bytes written to the link.
    pub bytes_sent: u64,
    /// Bytes read from the link.
    pub bytes_received: u64,
    /// Application payload bytes sent (casts, calls, replies, pipe frames).
    pub payload_bytes_sent: u64,
    /// Application payload bytes delivered.
    pub payload_bytes_received: u64,
    /// Data packets sent again (after a timeout or a fast retransmit).
    pub retransmissions: u64,
    /// Of those, packets sent again at once because duplicate
    /// acknowledgements showed them lost (lossy links).
    pub fast_retransmits: u64,
    /// Retransmission timeouts that expired with data unacknowledged.
    pub timeouts: u64,
    /// Data packets received again (dropped).
    pub duplicates: u64,
    /// Data packets received ahead of a gap (buffered).
    pub out_of_order: u64,
    /// Packets dropped before the handshake, beyond the receive window or
    /// not for this session (a HelloAck naming another session), and
    /// Withdraws of entries the peer had not announced.
    pub dropped: u64,
    /// Frames dropped for a bad CRC (lossy links).
    pub crc_failures: u64,
    /// Frames dropped as malformed by the framing.
    pub framing_failures: u64,
    /// Packets that did not decode (each one closes the session).
    pub decode_failures: u64,
    /// Encrypted frames that failed authentication.
    pub auth_failures: u64,
    /// Encrypted frames rejected as replays.
    pub replays: u64,
    /// Times the link was lost and the session kept for resumption.
    pub detaches: u64,
    /// Times the session resumed on a new link.
    pub resumes: u64,
    /// Round-trip times measured (lossy links only: one timed packet at a
    /// time, never one that was sent again).
    pub rtt_samples: u64,
    /// Smoothed round-trip time in microseconds, as the retransmission
    /// timer sees it (from a packet's send, or the last acknowledgement
    /// that made progress if later, to its acknowledgement); 0 before the
    /// first sample and on reliable streams (TCP, Unix sockets), which
    /// measure none.
    pub srtt_us: u64,
    /// Current retransmission timeout in microseconds, backoff included; 0
    /// on reliable streams, which retransmit nothing.
    pub rto_us: u64,
}

// Every counter of the core's link stats reaches C: a counter added there
// fails to compile here until this struct (and the header) has it too.
const _: () = assert!(size_of::<OscloudLinkStats>() == Stats::COUNTERS * size_of::<u64>());

impl From<&Stats> for OscloudLinkStats {
    fn from(s: &Stats) -> Self {
        Self {
            frames_sent: s.frames_sent,
            frames_received: s.frames_received,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            payload_bytes_sent: s.payload_bytes_sent,
            payload_bytes_received: s.payload_bytes_received,
            retransmissions: s.retransmissions,
            fast_retransmits: s.fast_retransmits,
            timeouts: s.timeouts,
            duplicates: s.duplicates,
            out_of_order: s.out_of_order,
            dropped: s.dropped,
            crc_failures: s.crc_failures,
            framing_failures: s.framing_failures,
            decode_failures: s.decode_failures,
            auth_failures: s.auth_failures,
            replays: s.replays,
            detaches: s.detaches,
            resumes: s.resumes,
            rtt_samples: s.rtt_samples,
            srtt_us: s.srtt_us,
            rto_us: s.rto_us,
        }
    }
}

/// One link of a node, as `oscloud_node_links` copies it out. Plain data:
/// every text field is NUL-terminated, nothing needs freeing.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OscloudLink {
    /// A number for the link, unique within the node (what
    /// `oscloud_node_close_link` and `oscloud_route_t.link` use).
    pub id: u64,
    /// Whether the session is up now.
    pub connected: bool,
    /// How many times the link was dialled again after it went down.
    pub reconnects: u64,
    /// The peer's node id (32 hex digits); empty before the handshake.
    pub peer: [c_char; OSCLOUD_NODE_ID_SIZE],
    /// The local side, as the transport describes it.
    pub local: [c_char; OSCLOUD_ADDRESS_SIZE],
    /// The remote side, as the transport describes it.
    pub remote: [c_char; OSCLOUD_ADDRESS_SIZE],
    /// The address this node dials for the link; empty if the peer dialled
    /// it (the link was accepted).
    pub dialed: [c_char; OSCLOUD_ADDRESS_SIZE],
    /// The wire counters.
    pub stats: OscloudLinkStats,
}

impl From<&LinkStatus> for OscloudLink {
    fn from(l: &LinkStatus) -> Self {
        Self {
            id: l.id,
            connected: l.connected,
            reconnects: l.reconnects,
            peer: fixed(&l.peer.map(|p| p.to_string()).unwrap_or_default()),
            local: fixed(&l.local),
            remote: fixed(&l.remote),
            dialed: fixed(
                &l.dialed
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
            stats: OscloudLinkStats::from(&l.stats),
        }
    }
}

/// Bounds of a round-trip histogram (`oscloud_rtt_histogram_t.bounds_ns`).
pub const OSCLOUD_RTT_BOUNDS: usize = 16;
/// Buckets of a round-trip histogram: one per bound, then one for longer
/// round trips.
pub const OSCLOUD_RTT_BUCKETS: usize = 17;
/// Bytes of a close message field (`close_message`), NUL included. Longer
/// text is cut, on a UTF-8 character boundary, to fit.
pub const OSCLOUD_CLOSE_MESSAGE_SIZE: usize = 256;

const _: () = assert!(OSCLOUD_RTT_BOUNDS == LATENCY_BUCKETS_NS.len());
const _: () = assert!(OSCLOUD_RTT_BUCKETS == OSCLOUD_RTT_BOUNDS + 1);

/// Round-trip times of one link counted per bucket (Rust's
/// `oscloud_core::wire::RttHistogram`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OscloudRttHistogram {
    /// The buckets' upper bounds in nanoseconds (25 µs to 5 s).
    pub bounds_ns: [u64; OSCLOUD_RTT_BOUNDS],
    /// Samples per bucket, not cumulative: `buckets[i]` counts the round
    /// trips of at most `bounds_ns[i]` (and more than the bound before),
    /// the last one those longer than every bound.
    pub buckets: [u64; OSCLOUD_RTT_BUCKETS],
    /// The samples' sum, in microseconds.
    pub sum_us: u64,
    /// Samples counted (the sum of `buckets`).
    pub count: u64,
}

impl From<&RttHistogram> for OscloudRttHistogram {
    fn from(h: &RttHistogram) -> Self {
        Self {
            bounds_ns: LATENCY_BUCKETS_NS,
            buckets: h.buckets,
            sum_us: h.sum_us,
            count: h.count(),
        }
    }
}

/// The health of one link, as `oscloud_node_link_health` copies it out
/// (what `oscloud_link_t` does not hold: round trips, queues, stalls, how
/// the session closed). Plain data, nothing needs freeing. Fields are only
/// ever added at its end (see `oscloud_node_link_health`'s `size`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OscloudLinkHealth {
    /// The link (an `oscloud_link_t.id`).
    pub id: u64,
    /// The link's round-trip time in microseconds as the node measures it
    /// on every kind of link (a probe call the peer node answers at once,
    /// one a second at most while the link is busy, one per keepalive
    /// while it idles; smoothed); 0 until the first answer.
    pub rtt_us: u64,
    /// Times a local pipe writer's frame had to wait for the peer's credit
    /// on this link (the peer's reader was behind).
    pub credit_stalls: u64,
    /// Bytes waiting to be sent on the link: casts and calls waiting for
    /// its driver, replies and pipe data queued in its session.
    pub send_queue_bytes: u64,
    /// Every round trip the node's probe measured (see `rtt_us`).
    pub probe_rtt: OscloudRttHistogram,
    /// The round trips the session's retransmission timer measured (lossy
    /// links; empty on reliable streams).
    pub session_rtt: OscloudRttHistogram,
    /// Whether the link's session closed (a dialled link stays listed
    /// while it is dialled again); the `close_` fields say how.
    pub closed: bool,
    /// Whether the peer closed it (its Close packet arrived).
    pub close_remote: bool,
    /// The close code (`docs/PROTOCOL.md` §5.4: 0 normal, 9 idle timeout,
    /// ...); 0 while the session runs.
    pub close_code: u8,
    /// What happened, in words; empty while the session runs.
    pub close_message: [c_char; OSCLOUD_CLOSE_MESSAGE_SIZE],
}

impl From<&LinkStatus> for OscloudLinkHealth {
    fn from(l: &LinkStatus) -> Self {
        let close = l.closed.as_ref();
        Self {
            id: l.id,
            rtt_us: l.rtt_us,
            credit_stalls: l.credit_stalls,
            send_queue_bytes: l.send_queue_bytes,
            probe_rtt: OscloudRttHistogram::from(&l.probe_rtt),
            session_rtt: OscloudRttHistogram::from(&l.session_rtt),
            closed: close.is_some(),
            close_remote: close.is_some_and(|c| c.remote),
            close_code: close.map_or(0, |c| c.code.code()),
            close_message: fixed(close.map_or("", |c| c.message.as_str())),
        }
    }
}

/// One route from a node to a server of another node, as
/// `oscloud_node_routes` copies it out. A server reachable several ways has
/// one route per way; the one in use has `best` set.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OscloudRoute {
    /// The server's name.
    pub name: [c_char; OSCLOUD_NAME_SIZE],
    /// The id of the node the server lives on (32 hex digits).
    pub node: [c_char; OSCLOUD_NODE_ID_SIZE],
    /// The id of the neighbour the route goes through (the first hop; the
    /// same as `node` for a neighbour's own server).
    pub via: [c_char; OSCLOUD_NODE_ID_SIZE],
    /// Nodes on the path, the server's node included: 1 for a neighbour's
    /// own server, 2 through one forwarding node, ...
    pub hops: u32,
    /// The total cost: the sum of the link costs along the path (1 per
    /// reliable stream link, 10 per serial or datagram link).
    pub cost: u64,
    /// The id of this node's link the route goes through (see
    /// `oscloud_link_t.id`).
    pub link: u64,
    /// Whether it is the route in use (the best one).
    pub best: bool,
}

impl From<&Route> for OscloudRoute {
    fn from(r: &Route) -> Self {
        Self {
            name: fixed(&r.name),
            node: fixed(&r.node.to_string()),
            via: fixed(&r.path.last().map(ToString::to_string).unwrap_or_default()),
            hops: u32::try_from(r.path.len()).unwrap_or(u32::MAX),
            cost: r.cost,
            link: r.link,
            best: r.best,
        }
    }
}

/// `s` as a NUL-terminated C string in `N` bytes: cut to at most `N - 1`
/// bytes on a character boundary (and at an interior NUL), NUL-padded.
fn fixed<const N: usize>(s: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    let s = s.split('\0').next().unwrap_or_default();
    let mut end = s.len().min(N.saturating_sub(1));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    for (dst, src) in out.iter_mut().zip(&s.as_bytes()[..end]) {
        *dst = *src as c_char;
    }
    out
}

/// Copy `items` into the caller's array `out` of `cap` elements and their
/// number into `*len`; an error if they do not all fit (the first `cap` are
/// copied).
///
/// # Safety
/// `out` is NULL or valid for writing `cap` elements; `len` is NULL or
/// valid for writes.
unsafe fn copy_out<T>(
    items: &[T],
    out: *mut T,
    cap: usize,
    len: *mut usize,
    what: &str,
) -> Result<c_int, Error>
where
    T: Copy,
{
    if len.is_null() {
        return Err(Error::Null("len"));
    }
    if out.is_null() && cap > 0 {
        return Err(Error::Null("out"));
    }
    for (i, item) in items.iter().take(cap).enumerate() {
        // SAFETY: `out` is valid for `cap` elements and `i < cap`; `write`
        // does not read the (possibly uninitialised) old value.
        unsafe { out.add(i).write(*item) };
    }
    // SAFETY: non-NULL and writable per the contract.
    unsafe { *len = items.len() };
    if items.len() > cap {
        return Err(Error::Invalid(format!(
            "room for {cap} {what}s, the node has {}: call again with an array of *len",
            items.len()
        )));
    }
    Ok(OSCLOUD_OK)
}

/// Copy every link of `node` now, in id order, into `out` (an array of
/// `cap` elements the caller owns) and their number into `*len`.
///
/// Returns `OSCLOUD_OK` when they all fit, `OSCLOUD_ERR_INVALID` when
/// `cap` is too small: the first `cap` links are copied and `*len` says
/// how many there are, so call again with a larger array. `out` may be
/// NULL when `cap` is 0: `oscloud_node_links(node, NULL, 0, &n)` counts
/// the links (`OSCLOUD_OK` only if there are none).
///
/// A link stays listed while it is dialled again after a drop
/// (`connected` false); one accepted from a peer leaves the list when it
/// ends.
///
/// # Safety
/// `node` is a live node; `out` NULL or valid for writing `cap` elements;
/// `len` valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_links(
    node: *const OscloudNode,
    out: *mut OscloudLink,
    cap: usize,
    len: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        let links: Vec<OscloudLink> = node.node.links().iter().map(OscloudLink::from).collect();
        // SAFETY: per the contract.
        unsafe { copy_out(&links, out, cap, len, "link") }
    })
}

/// Copy every route `node` knows to the servers of other nodes (its
/// neighbours' own servers included, as one-hop routes) into `out` (an
/// array of `cap` elements the caller owns) and their number into `*len`:
/// sorted by server name, the route in use first.
///
/// Returns `OSCLOUD_OK` when they all fit, `OSCLOUD_ERR_INVALID` when
/// `cap` is too small (the first `cap` routes are copied and `*len` is
/// the number of routes). `out` may be NULL when `cap` is 0.
///
/// # Safety
/// `node` is a live node; `out` NULL or valid for writing `cap` elements;
/// `len` valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_routes(
    node: *const OscloudNode,
    out: *mut OscloudRoute,
    cap: usize,
    len: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        let routes: Vec<OscloudRoute> = node.node.routes().iter().map(OscloudRoute::from).collect();
        // SAFETY: per the contract.
        unsafe { copy_out(&routes, out, cap, len, "route") }
    })
}

/// Copy the health of `node`'s link `id` (an `oscloud_link_t.id`) into
/// `*out`: its round trip, the histograms of round trips, credit stalls,
/// the bytes waiting to be sent and how its session closed.
///
/// `size` is `sizeof(oscloud_link_health_t)` as the caller's header
/// declares it: the first `size` bytes of the struct are written (at most
/// the whole struct), so a program built against a header from before
/// fields were added at its end keeps working. Returns `OSCLOUD_OK`,
/// `OSCLOUD_ERR_NOT_FOUND` if the node has no such link,
/// `OSCLOUD_ERR_NULL` for a NULL `out`.
///
/// # Safety
/// `node` is a live node; `out` NULL or valid for writing `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_link_health(
    node: *const OscloudNode,
    id: u64,
    out: *mut OscloudLinkHealth,
    size: usize,
) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        if out.is_null() {
            return Err(Error::Null("out"));
        }
        let links = node.node.links();
        let link = links
            .iter()
            .find(|l| l.id == id)
            .ok_or(Error::NoSuchLink(id))?;
        let health = OscloudLinkHealth::from(link);
        // SAFETY: `out` is valid for `size` bytes per the contract, the
        // source for `size_of::<OscloudLinkHealth>()`; an untyped copy
        // (padding bytes included).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const health).cast::<u8>(),
                out.cast::<u8>(),
                size.min(size_of::<OscloudLinkHealth>()),
            );
        }
        Ok(OSCLOUD_OK)
    })
}

/// Close the link `id` (an `oscloud_link_t.id`) for good: its session ends,
/// the routes through it are withdrawn (servers left with no route leave
/// the registry), and a link this node dialled is not dialled again (a
/// peer that dialled it may dial again). Returns at once; the link leaves `oscloud_node_links`
/// shortly after. `OSCLOUD_ERR_NOT_FOUND` if the node has no such link.
///
/// # Safety
/// `node` is a live node.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oscloud_node_close_link(node: *const OscloudNode, id: u64) -> c_int {
    guard(|| {
        // SAFETY: per the contract.
        let node = unsafe { node_arg(node) }?;
        if node.node.close_link(id) {
            Ok(OSCLOUD_OK)
        } else {
            Err(Error::NoSuchLink(id))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<const N: usize>(a: &[c_char; N]) -> String {
        let bytes: Vec<u8> = a
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8(bytes).expect("fixed() keeps UTF-8 whole")
    }

    #[test]
    fn fixed_fits_and_pads() {
        let a: [c_char; 8] = fixed("abc");
        assert_eq!(text(&a), "abc");
        assert!(a[3..].iter().all(|c| *c == 0));
        let empty: [c_char; 4] = fixed("");
        assert!(empty.iter().all(|c| *c == 0));
    }

    #[test]
    fn fixed_cuts_on_a_character_boundary_and_keeps_the_nul() {
        let exact: [c_char; 4] = fixed("abcd");
        assert_eq!(text(&exact), "abc");
        assert_eq!(exact[3], 0);
        // "é" is two bytes: with room for 3 bytes, "aé" fits, "aéé" is cut
        // after the first "é", never inside the second.
        let cut: [c_char; 4] = fixed("aéé");
        assert_eq!(text(&cut), "aé");
        let cut: [c_char; 3] = fixed("aéé");
        assert_eq!(text(&cut), "a");
        let one: [c_char; 1] = fixed("anything");
        assert_eq!(one, [0]);
    }

    #[test]
    fn fixed_stops_at_an_interior_nul() {
        let a: [c_char; 8] = fixed("ab\0cd");
        assert_eq!(text(&a), "ab");
    }

    #[test]
    fn a_long_address_is_cut_to_the_field() {
        let long = "x".repeat(1000);
        let a: [c_char; OSCLOUD_ADDRESS_SIZE] = fixed(&long);
        assert_eq!(text(&a).len(), OSCLOUD_ADDRESS_SIZE - 1);
    }
}
