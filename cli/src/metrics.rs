//! `oscloud run --metrics ADDR`: the OpenMetrics endpoint of the nodes
//! of this process, labelled `node="NAME"` (names from the topology).
//!
//! Besides what `oscloud-metrics` exports for every node (links, servers,
//! registry), each node exports the pipes it wires (names from the
//! topology, so bounded): `oscloud_pipe_frames_total`,
//! `oscloud_pipe_bytes_total`, `oscloud_pipe_tap_dropped_total`,
//! `oscloud_pipe_credit_stalls_total`, `oscloud_pipe_open`.

use std::net::SocketAddr;
use std::sync::Arc;

use oscloud_metrics::prometheus_client::collector::Collector;
use oscloud_metrics::prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use oscloud_metrics::prometheus_client::metrics::MetricType;
use oscloud_metrics::{MetricsServer, NodeCollector};

use crate::Error;
use crate::runtime::{RunningNode, Shared};

/// Serve the metrics of `nodes` on `at` until the server is dropped.
pub(crate) async fn serve(at: SocketAddr, nodes: &[RunningNode]) -> Result<MetricsServer, Error> {
    let mut registry = oscloud_metrics::prometheus_client::registry::Registry::with_prefix(
        oscloud_metrics::PREFIX,
    );
    for n in nodes {
        let (node, shared) = n.observed();
        let sub = registry.sub_registry_with_label(("node".into(), n.name.clone().into()));
        sub.register_collector(Box::new(NodeCollector::new(node.clone())));
        sub.register_collector(Box::new(Pipes(shared)));
    }
    let server = oscloud_metrics::serve(at, registry).await?;
    tracing::info!("metrics on http://{}/metrics", server.local_addr());
    Ok(server)
}

/// The pipes a node wires.
struct Pipes(Arc<Shared>);

impl std::fmt::Debug for Pipes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipes")
    }
}

/// One pipe counter: name (before `_total`), help, reading.
type PipeCounter = (
    &'static str,
    &'static str,
    fn(&crate::runtime::PipeStatus) -> u64,
);

const PIPE_COUNTERS: [PipeCounter; 4] = [
    ("pipe_frames", "Frames through the pipe.", |p| p.frames),
    ("pipe_bytes", "Bytes through the pipe.", |p| p.bytes),
    (
        "pipe_tap_dropped",
        "Frames the pipe's tap branch dropped for slow watchers.",
        |p| p.tap_dropped,
    ),
    (
        "pipe_credit_stalls",
        "Times a frame waited for room at a destination of the pipe (the server's port full, or the peer's credit short).",
        |p| p.credit_stalls,
    ),
];

impl Collector for Pipes {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let pipes = self.0.wired_pipes();
        for (name, help, read) in PIPE_COUNTERS {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &pipes {
                let labels = [("pipe", p.name.as_str())];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&read(p), None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "pipe_open",
            "1 while the pipe runs, 0 once it ended.",
            None,
            MetricType::Gauge,
        )?;
        for p in &pipes {
            let labels = [("pipe", p.name.as_str())];
            m.encode_family(&labels)?
                .encode_gauge(&i64::from(!p.finished))?;
        }
        Ok(())
    }
}
