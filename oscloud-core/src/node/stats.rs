//! Counters of one link, readable while it runs.

use std::sync::Mutex;

use crate::wire::Stats;

/// The latest wire counters of one link (see [`Stats`]).
#[derive(Debug, Default)]
pub(crate) struct LinkStats {
    latest: Mutex<Stats>,
}

impl LinkStats {
    pub(crate) fn update(&self, stats: &Stats) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = *stats;
    }

    pub(crate) fn get(&self) -> Stats {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }
}
