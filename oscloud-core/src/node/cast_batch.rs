//! The peer's casts to one local server, gathered while the driver takes
//! the events of one read and handed to the server together
//! ([`Endpoint::try_cast_batch`](crate::Endpoint::try_cast_batch)): one
//! mailbox message and one wake-up of the server for many casts instead
//! of one each.
//!
//! Only consecutive casts to the same entry are gathered, and the driver
//! delivers what is gathered before it acts on any other event, so the
//! server sees the peer's casts, calls and pipes in the order the peer
//! sent them. A batch counts against the link budget (`held_casts`) from
//! when it is handed over until the server has decoded its casts.

use bytes::Bytes;

use crate::Entry;

/// At most this many casts go to a server in one batch.
pub(crate) const CAST_BATCH: usize = 256;

/// Consecutive casts to one entry, not delivered yet.
#[derive(Debug, Default)]
pub(crate) struct CastBatch {
    to: Option<Entry>,
    payloads: Vec<Bytes>,
    /// How many casts the last batch taken held: the room the next one
    /// starts with, so that it does not grow step by step.
    last: usize,
}

impl CastBatch {
    /// Add a cast for `to` (kept, a copy of it, when it starts a batch).
    /// Returns the batch to deliver first, if this cast ends one: the
    /// gathered casts of another entry, or a full batch.
    pub(crate) fn push(&mut self, to: &Entry, payload: Bytes) -> Option<(Entry, Vec<Bytes>)> {
        let ended = match &self.to {
            Some(held) if held == to && self.payloads.len() < CAST_BATCH => None,
            Some(_) => self.take(),
            None => None,
        };
        if self.to.is_none() {
            self.to = Some(to.clone());
        }
        if self.payloads.capacity() == 0 {
            self.payloads.reserve_exact(self.last.max(1));
        }
        self.payloads.push(payload);
        ended
    }

    /// The gathered casts and their entry, if any, leaving the batch
    /// empty.
    pub(crate) fn take(&mut self) -> Option<(Entry, Vec<Bytes>)> {
        let to = self.to.take()?;
        self.last = self.payloads.len();
        Some((to, std::mem::take(&mut self.payloads)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::Echo;
    use super::*;
    use crate::{Capabilities, Kernel, Registration};

    fn entries(kernel: &Kernel, names: &[&str]) -> Vec<(Entry, Registration)> {
        names
            .iter()
            .map(|name| {
                let reg = kernel
                    .registry()
                    .register(*name, Capabilities::new(), Arc::new(Echo::default()))
                    .unwrap();
                (kernel.registry().lookup(name).unwrap(), reg)
            })
            .collect()
    }

    fn numbers(payloads: &[Bytes]) -> Vec<u8> {
        payloads.iter().map(|p| p[0]).collect()
    }

    #[test]
    fn consecutive_casts_to_one_entry_go_together_in_order() {
        let kernel = Kernel::new();
        let es = entries(&kernel, &["a", "b"]);
        let (a, b) = (&es[0].0, &es[1].0);
        let mut batch = CastBatch::default();
        for i in 0..3u8 {
            assert!(batch.push(a, Bytes::from(vec![i])).is_none());
        }
        // A cast to another server ends the first batch.
        let (to, first) = batch.push(b, Bytes::from(vec![3])).unwrap();
        assert_eq!((&to, numbers(&first)), (a, vec![0, 1, 2]));
        let (to, second) = batch.take().unwrap();
        assert_eq!((&to, numbers(&second)), (b, vec![3]));
        assert!(batch.take().is_none());
    }

    #[test]
    fn a_batch_holds_at_most_cast_batch_casts() {
        let kernel = Kernel::new();
        let es = entries(&kernel, &["a"]);
        let a = &es[0].0;
        let mut batch = CastBatch::default();
        let mut delivered = Vec::new();
        for i in 0..(2 * CAST_BATCH + 3) {
            if let Some((_, full)) = batch.push(a, Bytes::from((i as u32).to_be_bytes().to_vec())) {
                assert_eq!(full.len(), CAST_BATCH);
                delivered.extend(full);
            }
        }
        let (_, rest) = batch.take().unwrap();
        assert_eq!(rest.len(), 3);
        delivered.extend(rest);
        let order: Vec<u32> = delivered
            .iter()
            .map(|p| u32::from_be_bytes(p[..4].try_into().unwrap()))
            .collect();
        assert_eq!(order, (0..(2 * CAST_BATCH as u32 + 3)).collect::<Vec<_>>());
    }
}
