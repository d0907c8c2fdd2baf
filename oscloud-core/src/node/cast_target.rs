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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::Echo;
    use super::*;
    use crate::{Capabilities, Kernel};

    #[test]
    fn the_kept_server_serves_its_name_while_both_generations_stay() {
        let kernel = Kernel::new();
        let _reg = kernel
            .registry()
            .register("echo", Capabilities::new(), Arc::new(Echo::default()))
            .unwrap();
        let entry = kernel.registry().lookup("echo").unwrap();
        let then = Generations {
            registry: 4,
            policy: 7,
        };
        let mut target = CastTarget::default();
        assert!(target.get(&Name::from("echo"), then).is_none());
        target.keep(&entry, then);
        assert_eq!(target.get(&Name::from("echo"), then), Some(&entry));
        assert!(target.get(&Name::from("echo2"), then).is_none());
        assert!(target.get(&Name::from("ech"), then).is_none());
        let registry_moved = Generations {
            registry: 5,
            ..then
        };
        assert!(target.get(&Name::from("echo"), registry_moved).is_none());
        let policy_moved = Generations { policy: 8, ..then };
        assert!(target.get(&Name::from("echo"), policy_moved).is_none());
        target.clear();
        assert!(target.get(&Name::from("echo"), then).is_none());
    }
}
