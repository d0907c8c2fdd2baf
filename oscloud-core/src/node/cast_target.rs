//! The local server the peer's latest cast went to, kept while the
//! driver takes the events of one read: the casts of a read mostly go to
//! one server, and each would otherwise read its name as text, ask the
//! access policy and look the name up in the registry again.
//!
//! A cast reuses the kept server only if it names the same server, the
//! registry's [generation](crate::Registry::generation) and the access
//! policy's have not moved since the server was looked up and the cast
//! allowed, and the name was held by that one local server (never a
//! group of several, whose members take turns): the same lookup and the
//! same verdict, exactly, without doing them again. A refused or
//! unknown name is never kept: each such cast is looked at (and logged)
//! on its own.

use crate::Entry;
use crate::wire::Name;

/// What a cast to the kept server depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generations {
    /// [`Registry::generation`](crate::Registry::generation).
    pub(crate) registry: u64,
    /// [`AccessPolicy::generation`](crate::access::AccessPolicy::generation).
    pub(crate) policy: u64,
}

/// The server the latest cast went to, if it may be reused.
#[derive(Debug, Default)]
pub(crate) struct CastTarget(Option<(Entry, Generations)>);

impl CastTarget {
    /// The kept server, if `to` names it and `now` are the generations it
    /// was found under.
    pub(crate) fn get(&self, to: &Name, now: Generations) -> Option<&Entry> {
        let (entry, then) = self.0.as_ref()?;
        // Compared as bytes: the name is not read as text again.
        (*then == now && *to == entry.name()).then_some(entry)
    }

    /// Keep `entry`, the only server under its name, found (and the cast
    /// to it allowed) under `then`, generations read before the lookup.
    pub(crate) fn keep(&mut self, entry: &Entry, then: Generations) {
        self.0 = Some((entry.clone(), then));
    }

    /// Forget the kept server.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}
