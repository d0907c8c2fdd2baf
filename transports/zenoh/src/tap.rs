//! Pipe taps: a pipe's frames published on zenoh, so that a plain zenoh
//! subscriber (no oscloud code) can watch them by key expression.
//!
//! A tap is opt-in and costs a zenoh sample per frame: the node feeds it
//! from one branch of a [`split`](oscloud_core::plumbing::split) of the
//! pipe (a [`Branch::drop_oldest`](oscloud_core::plumbing::Branch::drop_oldest)
//! branch keeps a slow router from slowing the pipe, at the price of
//! frames the tap drops; [`Branch::block`](oscloud_core::plumbing::Branch::block)
//! publishes every frame and lets zenoh's pace hold the pipe back).
//!
//! Key: `oscloud/<cloud>/pipe/<node>/<pipe>`. Each frame is one sample
//! (`Put`, reliable, congestion control `Block`), its payload the frame's
//! bytes as written, its attachment the frame's number (u64, big-endian,
//! from 0), so a subscriber can tell a gap (a frame the branch dropped
//! does not get a number). At end of stream the tap publishes one `Delete`
//! sample on the key.

use bytes::Bytes;
use oscloud_core::address::Address;
use oscloud_core::{Error, PipeReader};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, warn};
use zenoh::qos::CongestionControl;

use crate::link::failed;
use crate::{Target, ZenohTransport, keys};

/// A running pipe tap (see [`ZenohTransport::tap`]); dropping it stops
/// the tap.
#[derive(Debug)]
pub struct PipeTap {
    key: String,
    task: JoinHandle<Result<u64, Error>>,
}

impl PipeTap {
    /// The zenoh key the frames are published on.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Wait until the tapped pipe ends; returns how many frames were
    /// published. Fails when publishing failed (the tap then stopped and
    /// closed its reader).
    pub async fn finished(mut self) -> Result<u64, Error> {
        (&mut self.task)
            .await
            .map_err(|e| Error::PipeTask(e.to_string()))?
    }

    /// Stop publishing now (the tap's reader closes, so its branch of the
    /// split sees the pipe closed).
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for PipeTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The zenoh key of pipe `pipe` tapped on node `node` of cloud `cloud`:
/// `oscloud/<cloud>/pipe/<node>/<pipe>`. Each name is 1 to 64 ASCII
/// letters, digits, `-`, `_` or `.`.
pub fn tap_key(cloud: &str, node: &str, pipe: &str) -> Result<String, Error> {
    for (what, name) in [("cloud", cloud), ("node", node), ("pipe", pipe)] {
        if !keys::valid_name(name) {
            return Err(Error::InvalidAddress {
                input: format!("oscloud/{cloud}/pipe/{node}/{pipe}"),
                reason: format!(
                    "{what} name {name:?}: 1 to 64 ASCII letters, digits, '-', '_' or '.'"
                ),
            });
        }
    }
    Ok(keys::pipe(cloud, node, pipe))
}

impl ZenohTransport {
    /// Publish every frame `reader` yields on zenoh, under the key of pipe
    /// `pipe` of the node and cloud that `at` names
    /// (`zenoh://ROUTER:PORT/<cloud>/<node>`, as a listen address; the
    /// zenoh session is the one this transport's links through that router
    /// share). See the crate's "Pipe taps" section for the key layout.
    pub async fn tap(
        &self,
        at: &Address,
        pipe: &str,
        reader: PipeReader,
    ) -> Result<PipeTap, Error> {
        let target = Target::parse(at)?;
        let key = tap_key(&target.cloud, &target.node, pipe)?;
        let session = self.sessions.get(&target).await?;
        let publisher = session
            .declare_publisher(key.clone())
            .congestion_control(CongestionControl::Block)
            .await
            .map_err(|e| failed(&target, "zenoh publisher", e))?;
        let span = info_span!("zenoh pipe tap", key = %key);
        let task = tokio::spawn(
            async move {
                let mut reader = reader;
                let mut seq = 0u64;
                while let Some(frame) = reader.recv().await {
                    let put = publisher
                        .put(Bytes::clone(&frame))
                        .attachment(seq.to_be_bytes().to_vec())
                        .await;
                    if let Err(e) = put {
                        warn!("the pipe tap stops: publishing failed: {e}");
                        reader.close();
                        return Err(failed(&target, "zenoh put", e));
                    }
                    seq += 1;
                }
                let _ = publisher.delete().await;
                debug!(frames = seq, "the tapped pipe ended");
                Ok(seq)
            }
            .instrument(span),
        );
        Ok(PipeTap { key, task })
    }
}
