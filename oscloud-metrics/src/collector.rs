//! The node's counters as OpenMetrics families, read at scrape time.

use std::collections::BTreeMap;
use std::time::Duration;

use oscloud_core::endpoint::{LATENCY_BUCKETS_NS, ServerStats};
use oscloud_core::wire::{CloseCode, RttHistogram};
use oscloud_core::{CLOSE_CODES, LinkCloses, LinkStatus, Node};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// The label value of the links whose peer is not known yet (before the
/// handshake).
pub const NO_PEER: &str = "none";

/// The label value that gathers what is beyond the caps of
/// [`NodeCollector::with_caps`].
pub const OTHER: &str = "other";

/// Reads a [`Node`]'s counters on every scrape: its links (per peer), its
/// local servers (per name) and its registry.
///
/// Nothing is counted on the hot paths for it: the links' drivers and the
/// servers' endpoints keep their counters anyway (see
/// [`LinkStatus::stats`] and [`Endpoint::stats`]), and the collector reads
/// them when asked.
///
/// Label values are bounded: `peer` is the short id of a linked peer (at
/// most `max_peers` of them, the rest summed under `peer="other"`),
/// `server` the name of a local server (at most `max_servers`, the rest
/// under `server="other"`). Nothing a peer sends becomes a label value
/// but its node id, and only once it linked.
///
/// [`Endpoint::stats`]: oscloud_core::Endpoint::stats
#[derive(Debug, Clone)]
pub struct NodeCollector {
    node: Node,
    max_peers: usize,
    max_servers: usize,
}

/// The default cap on `peer` label values.
pub const MAX_PEERS: usize = 64;
/// The default cap on `server` label values.
pub const MAX_SERVERS: usize = 256;

impl NodeCollector {
    /// A collector over `node`, with the default caps ([`MAX_PEERS`],
    /// [`MAX_SERVERS`]).
    pub fn new(node: Node) -> Self {
        Self::with_caps(node, MAX_PEERS, MAX_SERVERS)
    }

    /// A collector that labels at most `max_peers` peers and
    /// `max_servers` servers (in name order); the others are summed under
    /// the label value [`OTHER`].
    pub fn with_caps(node: Node, max_peers: usize, max_servers: usize) -> Self {
        Self {
            node,
            max_peers,
            max_servers,
        }
    }
}

/// One link counter: its name (after `oscloud_link_`, before `_total`),
/// its help and how to read it from the link.
type LinkCounter = (&'static str, &'static str, fn(&LinkStatus) -> u64);

/// The link counters, in the order they are exported.
const LINK_COUNTERS: &[LinkCounter] = &[
    (
        "bytes_sent",
        "Link bytes sent (framing and headers included).",
        |l| l.stats.bytes_sent,
    ),
    ("bytes_received", "Link bytes received.", |l| {
        l.stats.bytes_received
    }),
    (
        "frames_sent",
        "Packets framed and sent, retransmissions included.",
        |l| l.stats.frames_sent,
    ),
    ("frames_received", "Intact packets received.", |l| {
        l.stats.frames_received
    }),
    (
        "payload_bytes_sent",
        "Application payload bytes sent (casts, calls, replies, pipe frames).",
        |l| l.stats.payload_bytes_sent,
    ),
    (
        "payload_bytes_received",
        "Application payload bytes delivered.",
        |l| l.stats.payload_bytes_received,
    ),
    ("retransmissions", "Data packets sent again.", |l| {
        l.stats.retransmissions
    }),
    (
        "fast_retransmits",
        "Data packets sent again at once on duplicate acknowledgements.",
        |l| l.stats.fast_retransmits,
    ),
    (
        "timeouts",
        "Retransmission timeouts that expired with data unacknowledged.",
        |l| l.stats.timeouts,
    ),
    (
        "duplicates",
        "Data packets received again (dropped).",
        |l| l.stats.duplicates,
    ),
    (
        "out_of_order",
        "Data packets received ahead of a gap (buffered).",
        |l| l.stats.out_of_order,
    ),
    (
        "dropped",
        "Packets dropped: before the handshake, beyond the receive window, or not for this session.",
        |l| l.stats.dropped,
    ),
    ("crc_failures", "Frames dropped for a bad CRC.", |l| {
        l.stats.crc_failures
    }),
    ("framing_failures", "Frames dropped as malformed.", |l| {
        l.stats.framing_failures
    }),
    (
        "decode_failures",
        "Packets that did not decode (each closes the session).",
        |l| l.stats.decode_failures,
    ),
    (
        "auth_failures",
        "Encrypted frames that failed authentication.",
        |l| l.stats.auth_failures,
    ),
    ("replays", "Encrypted frames rejected as replays.", |l| {
        l.stats.replays
    }),
    (
        "credit_stalls",
        "Times a pipe frame waited for the peer's credit on this link.",
        |l| l.credit_stalls,
    ),
    (
        "detaches",
        "Times the link was lost and the session kept for resumption.",
        |l| l.stats.detaches,
    ),
    ("resumes", "Times the session resumed on a new link.", |l| {
        l.stats.resumes
    }),
    (
        "reconnects",
        "Times the link came back (dialled again or resumed).",
        |l| l.reconnects,
    ),
    ("rtt_samples", "Round-trip times measured.", |l| {
        l.stats.rtt_samples
    }),
];

/// What the links to one peer add up to.
#[derive(Default)]
struct PeerLinks {
    links: u64,
    connected: u64,
    counters: Vec<u64>,
    /// The largest probe RTT, SRTT and RTO of the peer's links.
    rtt_us: u64,
    srtt_us: u64,
    rto_us: u64,
    send_queue_bytes: u64,
    probe_rtt: RttHistogram,
    session_rtt: RttHistogram,
}

impl PeerLinks {
    fn add(&mut self, l: &LinkStatus) {
        if self.counters.is_empty() {
            self.counters = vec![0; LINK_COUNTERS.len()];
        }
        self.links += 1;
        self.connected += u64::from(l.connected);
        for (sum, (_, _, read)) in self.counters.iter_mut().zip(LINK_COUNTERS) {
            *sum += read(l);
        }
        self.rtt_us = self.rtt_us.max(l.rtt_us);
        self.srtt_us = self.srtt_us.max(l.stats.srtt_us);
        self.rto_us = self.rto_us.max(l.stats.rto_us);
        self.send_queue_bytes += l.send_queue_bytes;
        self.probe_rtt = self.probe_rtt.merged(&l.probe_rtt);
        self.session_rtt = self.session_rtt.merged(&l.session_rtt);
    }
}

/// The closes of the links to one peer (or several, beyond the cap).
#[derive(Default)]
struct PeerCloses {
    sent: [u64; CLOSE_CODES],
    received: [u64; CLOSE_CODES],
}

impl PeerCloses {
    fn add(&mut self, c: &LinkCloses) {
        for (a, b) in self.sent.iter_mut().zip(c.sent) {
            *a += b;
        }
        for (a, b) in self.received.iter_mut().zip(c.received) {
            *a += b;
        }
    }
}

/// The `code` label of counter `i` of a [`LinkCloses`]: the code's name
/// in `docs/PROTOCOL.md` §5.4, `Other` for the codes a node does not
/// know.
fn close_code_label(i: usize) -> &'static str {
    u8::try_from(i).map_or("Other", |c| CloseCode::from_code(c).name())
}

/// The bounds of the round-trip histogram's buckets, in seconds, `+Inf`
/// last.
fn latency_bounds() -> Vec<f64> {
    LATENCY_BUCKETS_NS
        .iter()
        .map(|&ns| Duration::from_nanos(ns).as_secs_f64())
        .chain([f64::INFINITY])
        .collect()
}

/// Encode one histogram sample: `buckets` (per bucket, not cumulative) over
/// `bounds`, with `sum` in seconds.
fn histogram(
    e: &mut MetricEncoder<'_>,
    bounds: &[f64],
    buckets: &[u64],
    sum: f64,
) -> Result<(), std::fmt::Error> {
    let rows: Vec<(f64, u64)> = bounds
        .iter()
        .copied()
        .zip(buckets.iter().copied())
        .collect();
    e.encode_histogram::<NoLabelSet>(sum, buckets.iter().sum(), &rows, None)
}

/// Group `items` by label: the first `cap` labels (in order) keep theirs,
/// the rest go under [`OTHER`].
fn capped<T, A: Default>(
    items: impl IntoIterator<Item = (String, T)>,
    cap: usize,
    mut add: impl FnMut(&mut A, T),
) -> BTreeMap<String, A> {
    let mut by: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for (label, item) in items {
        by.entry(label).or_default().push(item);
    }
    let mut out: BTreeMap<String, A> = BTreeMap::new();
    for (i, (label, items)) in by.into_iter().enumerate() {
        let key = if i < cap { label } else { OTHER.to_owned() };
        let slot = out.entry(key).or_default();
        for item in items {
            add(slot, item);
        }
    }
    out
}

/// The `peer` label of a peer (before the cap).
fn peer_label(peer: Option<oscloud_core::NodeId>) -> String {
    peer.map_or_else(|| NO_PEER.to_owned(), |p| p.short())
}

fn seconds_us(us: u64) -> f64 {
    Duration::from_micros(us).as_secs_f64()
}

/// Encode one family: `name` of `kind`, one sample per `(label, value)`.
fn family<'a, V: 'a>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    rows: impl IntoIterator<Item = (&'a String, V)>,
    mut sample: impl FnMut(&mut MetricEncoder<'_>, V) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (value, v) in rows {
        let labels = [(label, value.as_str())];
        let mut e = m.encode_family(&labels)?;
        sample(&mut e, v)?;
    }
    Ok(())
}

fn counter(e: &mut MetricEncoder<'_>, v: u64) -> Result<(), std::fmt::Error> {
    e.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

impl NodeCollector {
    fn encode_links(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let links = self.node.links();
        let peers: BTreeMap<String, PeerLinks> = capped(
            links.iter().map(|l| (peer_label(l.peer), l)),
            self.max_peers,
            PeerLinks::add,
        );
        family(
            enc,
            "link_count",
            "Links to the peer (up or down).",
            MetricType::Gauge,
            "peer",
            peers.iter().map(|(k, p)| (k, p.links)),
            |e, v| e.encode_gauge(&(v as i64)),
        )?;
        family(
            enc,
            "link_up",
            "Links to the peer whose session is up now.",
            MetricType::Gauge,
            "peer",
            peers.iter().map(|(k, p)| (k, p.connected)),
            |e, v| e.encode_gauge(&(v as i64)),
        )?;
        for (i, (name, help, _)) in LINK_COUNTERS.iter().enumerate() {
            family(
                enc,
                &format!("link_{name}"),
                help,
                MetricType::Counter,
                "peer",
                peers
                    .iter()
                    .map(|(k, p)| (k, p.counters.get(i).copied().unwrap_or(0))),
                counter,
            )?;
        }
        family(
            enc,
            "link_rtt_seconds",
            "Round-trip time the node's probe measured on the link (0 until measured).",
            MetricType::Gauge,
            "peer",
            peers.iter().map(|(k, p)| (k, p.rtt_us)),
            |e, v| e.encode_gauge(&seconds_us(v)),
        )?;
        family(
            enc,
            "link_srtt_seconds",
            "Smoothed round-trip time (RFC 6298) of lossy links; 0 on reliable streams.",
            MetricType::Gauge,
            "peer",
            peers.iter().map(|(k, p)| (k, p.srtt_us)),
            |e, v| e.encode_gauge(&seconds_us(v)),
        )?;
        family(
            enc,
            "link_rto_seconds",
            "Current retransmission timeout (backoff included); 0 on reliable streams.",
            MetricType::Gauge,
            "peer",
            peers.iter().map(|(k, p)| (k, p.rto_us)),
            |e, v| e.encode_gauge(&seconds_us(v)),
        )?;
        family(
            enc,
            "link_send_queue_bytes",
            "Bytes waiting to be sent on the links to the peer: casts and calls waiting for the link, replies and pipe data queued in the session.",
            MetricType::Gauge,
            "peer",
            peers.iter().map(|(k, p)| (k, p.send_queue_bytes)),
            |e, v| e.encode_gauge(&(v as i64)),
        )?;
        let bounds = latency_bounds();
        let mut m = enc.encode_descriptor(
            "link_round_trip_seconds",
            "Round-trip times measured on the links to the peer: source=\"probe\" by the node's probe (every link), source=\"session\" by the retransmission timer (lossy links).",
            None,
            MetricType::Histogram,
        )?;
        for (peer, p) in &peers {
            for (source, h) in [("probe", &p.probe_rtt), ("session", &p.session_rtt)] {
                let labels = [("peer", peer.as_str()), ("source", source)];
                let mut e = m.encode_family(&labels)?;
                histogram(&mut e, &bounds, &h.buckets, seconds_us(h.sum_us))?;
            }
        }
        self.encode_closes(enc)
    }

    /// The closes of link sessions: per peer (the peers with a close), and
    /// node totals with every code (so an alert sees the first close).
    fn encode_closes(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let closes = self.node.link_closes();
        let peers: BTreeMap<String, PeerCloses> = capped(
            closes.iter().map(|c| (peer_label(c.peer), c)),
            self.max_peers,
            PeerCloses::add,
        );
        let mut total = PeerCloses::default();
        for c in &closes {
            total.add(c);
        }
        type Side = fn(&PeerCloses) -> &[u64; CLOSE_CODES];
        let sides: [(&str, &str, Side); 2] = [
            (
                "sent",
                "Link sessions this node closed, per close code (docs/PROTOCOL.md 5.4), since it started.",
                |c| &c.sent,
            ),
            (
                "received",
                "Link sessions the peer closed (its Close packet arrived), per close code, since this node started.",
                |c| &c.received,
            ),
        ];
        for (direction, help, side) in sides {
            let name = format!("link_closes_{direction}");
            let mut m = enc.encode_descriptor(&name, help, None, MetricType::Counter)?;
            for (peer, c) in &peers {
                for (i, n) in side(c).iter().enumerate() {
                    let labels = [("peer", peer.as_str()), ("code", close_code_label(i))];
                    counter(&mut m.encode_family(&labels)?, *n)?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "node_link_closes",
            "Link sessions closed, per close code and direction (sent: this node closed it; received: the peer did), since the node started.",
            None,
            MetricType::Counter,
        )?;
        for (direction, _, side) in sides {
            for (i, n) in side(&total).iter().enumerate() {
                let labels = [("code", close_code_label(i)), ("direction", direction)];
                counter(&mut m.encode_family(&labels)?, *n)?;
            }
        }
        Ok(())
    }

    fn encode_servers(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let kernel = self.node.kernel();
        let me = kernel.node();
        let entries = kernel.registry().entries();
        let local = entries.iter().filter(|e| e.node() == me).count();
        let mut m = enc.encode_descriptor(
            "registry_entries",
            "Entries in the registry: this node's servers (scope=\"local\") and those it sees on other nodes (scope=\"remote\").",
            None,
            MetricType::Gauge,
        )?;
        for (which, n) in [("local", local), ("remote", entries.len() - local)] {
            let labels = [("scope", which)];
            m.encode_family(&labels)?.encode_gauge(&(n as i64))?;
        }
        let servers: BTreeMap<String, ServerSum> = capped(
            entries
                .iter()
                .filter(|e| e.node() == me)
                .filter_map(|e| Some((e.name().to_owned(), e.endpoint().stats()?))),
            self.max_servers,
            ServerSum::add,
        );
        let rows = || servers.iter().map(|(k, s)| (k, &s.0));
        for (name, help, read) in SERVER_COUNTERS {
            family(
                enc,
                name,
                help,
                MetricType::Counter,
                "server",
                rows(),
                |e, s| counter(e, read(s)),
            )?;
        }
        family(
            enc,
            "server_mailbox_messages",
            "Messages waiting in the server's mailbox.",
            MetricType::Gauge,
            "server",
            rows(),
            |e, s| e.encode_gauge(&(s.mailbox as i64)),
        )?;
        let bounds = latency_bounds();
        family(
            enc,
            "server_call_duration_seconds",
            "Time from the server's endpoint taking a call to its reply (mailbox wait included).",
            MetricType::Histogram,
            "server",
            rows(),
            |e, s| histogram(e, &bounds, &s.latency_buckets, s.latency_sum.as_secs_f64()),
        )
    }
}

/// One server counter: its name (before `_total`), help and reading.
type ServerCounter = (&'static str, &'static str, fn(&ServerStats) -> u64);

const SERVER_COUNTERS: [ServerCounter; 4] = [
    (
        "server_calls",
        "Calls answered (replies and errors).",
        |s| s.calls,
    ),
    ("server_casts", "Casts taken.", |s| s.casts),
    (
        "server_errors",
        "Calls answered with an error, and casts that failed.",
        |s| s.errors,
    ),
    (
        "server_restarts",
        "Times the server was restarted by its supervisor.",
        |s| s.restarts,
    ),
];

/// The servers registered under one name (group members) summed.
#[derive(Default)]
struct ServerSum(ServerStats);

impl ServerSum {
    fn add(&mut self, s: ServerStats) {
        let t = &mut self.0;
        t.calls += s.calls;
        t.casts += s.casts;
        t.errors += s.errors;
        t.mailbox += s.mailbox;
        t.restarts += s.restarts;
        t.latency_sum += s.latency_sum;
        for (a, b) in t.latency_buckets.iter_mut().zip(s.latency_buckets) {
            *a += b;
        }
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.encode_links(&mut encoder)?;
        self.encode_servers(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use oscloud_core::endpoint::ServerCounters;
    use oscloud_core::transport::Transports;
    use oscloud_core::{Capabilities, Endpoint, Error, Kernel, PipeEnd};
    use prometheus_client::registry::Registry;

    use super::*;

    /// A server that only counts.
    #[derive(Debug, Default)]
    struct Counted(ServerCounters);

    #[async_trait::async_trait]
    impl Endpoint for Counted {
        fn try_cast(&self, _: bytes::Bytes) -> Result<(), Error> {
            self.0.cast();
            Ok(())
        }
        async fn call(&self, _: bytes::Bytes) -> Result<bytes::Bytes, Error> {
            Ok(bytes::Bytes::new())
        }
        async fn open_pipe(&self, _: &str, _: PipeEnd) -> Result<(), Error> {
            Ok(())
        }
        fn stats(&self) -> Option<ServerStats> {
            Some(self.0.stats(0))
        }
    }

    fn scrape(collector: NodeCollector) -> String {
        let mut registry = Registry::with_prefix("oscloud");
        registry.register_collector(Box::new(collector));
        crate::encode(&registry).unwrap()
    }

    #[test]
    fn servers_beyond_the_cap_are_summed_under_other() {
        let kernel = Kernel::new();
        let node = Node::new(kernel.clone(), Transports::new());
        let mut regs = Vec::new();
        for (name, casts) in [("a", 1), ("b", 2), ("c", 4)] {
            let ep = Arc::new(Counted::default());
            for _ in 0..casts {
                ep.try_cast(bytes::Bytes::new()).unwrap();
            }
            regs.push(
                kernel
                    .registry()
                    .register(name, Capabilities::new(), ep)
                    .unwrap(),
            );
        }
        let text = scrape(NodeCollector::with_caps(node.clone(), MAX_PEERS, 2));
        assert!(
            text.contains("oscloud_server_casts_total{server=\"a\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("oscloud_server_casts_total{server=\"b\"} 2\n"));
        assert!(text.contains("oscloud_server_casts_total{server=\"other\"} 4\n"));
        assert!(!text.contains("server=\"c\""));
        assert!(text.contains("oscloud_registry_entries{scope=\"local\"} 3\n"));
        let text = scrape(NodeCollector::with_caps(node, MAX_PEERS, 0));
        assert!(
            text.contains("oscloud_server_casts_total{server=\"other\"} 7\n"),
            "{text}"
        );
    }

    #[test]
    fn every_close_code_is_exported_before_any_close() {
        let node = Node::new(Kernel::new(), Transports::new());
        let text = scrape(NodeCollector::new(node));
        let totals: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("oscloud_node_link_closes_total{"))
            .collect();
        assert_eq!(totals.len(), 2 * CLOSE_CODES, "{text}");
        assert!(totals.iter().all(|l| l.ends_with(" 0")), "{totals:?}");
        for code in ["Normal", "IdleTimeout", "NoSession", "Other"] {
            let line = format!(
                "oscloud_node_link_closes_total{{code=\"{code}\",direction=\"received\"}} 0"
            );
            assert!(text.contains(&line), "{line} not in {text}");
        }
        // No peer closed anything: no per-peer series.
        assert!(!text.contains("oscloud_link_closes_sent_total{"), "{text}");
    }

    #[test]
    fn capped_keeps_the_first_labels_in_order() {
        let items = [("z", 1), ("a", 2), ("m", 3), ("a", 4)].map(|(l, v)| (l.to_owned(), v));
        let out: BTreeMap<String, u64> = capped(items, 2, |sum: &mut u64, v| *sum += v);
        let out: Vec<(&str, u64)> = out.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(out, [("a", 6), ("m", 3), ("other", 1)]);
    }
}
