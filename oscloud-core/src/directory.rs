//! Directories: where a node finds servers that are not in its registry.
//!
//! A node linked into a mesh learns every server its neighbours announce
//! (`docs/PROTOCOL.md` §13), so every node holds the whole registry of
//! the cloud. A [`Directory`] is the other way to find servers: each node
//! *publishes* the names it serves in it, and a node that looks up a name
//! it does not hold *asks* it which nodes serve the name, dials one of
//! them on demand, and then holds that node's servers only. A node's
//! registry then grows with what it uses, not with the cloud.
//!
//! The hook has two halves:
//!
//! - [`Directory`]: what a transport provides (the zenoh transport keeps
//!   its directory as liveliness tokens in the zenoh network). A
//!   [`Listener`](crate::transport::Listener) that comes with one returns
//!   it from [`Listener::directory`](crate::transport::Listener::directory);
//!   [`Node::listen`](crate::Node::listen) then uses it (or install one
//!   with [`Node::use_directory`](crate::Node::use_directory)).
//! - [`Resolver`]: what the registry asks on a miss
//!   ([`Registry::find`](crate::Registry::find)). A node that uses a
//!   directory installs one that asks the directory and dials.
//!
//! What a node publishes, and what travels over links made on demand
//! (*directory links*), is described on
//! [`Node::use_directory`](crate::Node::use_directory).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::Error;
use crate::address::Address;

/// How long a lookup by name that goes through the directory (a call's,
/// cast's or pipe's) may take to find a server and link to its node,
/// when the caller gives no timeout of its own.
pub const FIND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a link dialled on demand may go unused before its node closes
/// it, unless the directory says otherwise ([`Directory::link_idle`]).
pub const LINK_IDLE: Duration = Duration::from_secs(60);

/// A directory of the servers of a cloud, by name.
#[async_trait]
pub trait Directory: Send + Sync + fmt::Debug + 'static {
    /// The addresses of the nodes that publish `name` (this node left
    /// out), to be dialled in turn until one gives the server. Empty if
    /// no node does.
    async fn find(&self, name: &str) -> Result<Vec<Address>, Error>;

    /// Publish `name` as served by this node until the returned
    /// [`Publication`] is dropped (or the node's process ends: a
    /// directory must withdraw what a dead node published).
    async fn publish(&self, name: &str) -> Result<Publication, Error>;

    /// Follow who publishes `name` (`*`: every name) from now on, except
    /// this node: the returned watch first reports every publication as
    /// it stands, then each one that comes or goes (see
    /// [`Node::watch_directory`](crate::Node::watch_directory)).
    async fn watch(&self, name: &str) -> Result<DirectoryWatch, Error>;

    /// How long a link dialled on demand through this directory may carry
    /// nothing (no cast, call, reply or pipe packet either way, nothing
    /// waiting on it) before the node closes it; `None`: never.
    /// [`LINK_IDLE`] unless the directory says otherwise.
    fn link_idle(&self) -> Option<Duration> {
        Some(LINK_IDLE)
    }
}

/// A name published in a [`Directory`]: dropping it withdraws the name.
pub struct Publication {
    _guard: Box<dyn Send + Sync>,
}

impl Publication {
    /// A publication that lasts as long as `guard` (whatever withdraws the
    /// name when dropped).
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Self {
            _guard: Box::new(guard),
        }
    }
}

impl fmt::Debug for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publication").finish_non_exhaustive()
    }
}

/// A change in a [`Directory`], as a [`DirectoryWatch`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryEvent {
    /// `node` publishes server `name` (it did already when the watch
    /// began, or it does from now on).
    Published {
        /// The server's name.
        name: String,
        /// The node that publishes it, as the directory names it (for
        /// zenoh, its name in the cloud).
        node: String,
    },
    /// `node` no longer publishes `name`: the server left its registry,
    /// or the node is gone.
    Withdrawn {
        /// The server's name.
        name: String,
        /// The node that published it.
        node: String,
    },
}

/// The changes of a [`Directory`] for one name or pattern
/// ([`Directory::watch`]); dropping it stops the watch.
pub struct DirectoryWatch {
    events: mpsc::UnboundedReceiver<DirectoryEvent>,
    _guard: Box<dyn Send + Sync>,
}

impl DirectoryWatch {
    /// A watch that reports what `events` receives, for as long as
    /// `guard` (whatever feeds it, such as a subscription) is kept.
    pub fn new(
        events: mpsc::UnboundedReceiver<DirectoryEvent>,
        guard: impl Send + Sync + 'static,
    ) -> Self {
        Self {
            events,
            _guard: Box::new(guard),
        }
    }

    /// The next change; `None` once the directory stops reporting (its
    /// session closed).
    pub async fn next(&mut self) -> Option<DirectoryEvent> {
        self.events.recv().await
    }
}

impl fmt::Debug for DirectoryWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryWatch").finish_non_exhaustive()
    }
}

/// What a [`Registry`](crate::Registry) asks when a name is missing
/// ([`Registry::set_resolver`](crate::Registry::set_resolver)).
#[async_trait]
pub trait Resolver: Send + Sync + fmt::Debug + 'static {
    /// Try to bring a server named `name` into the registry (for a node:
    /// find it in a directory and link to a node that serves it). `Ok`
    /// when an attempt was made that may add it; the registry then waits
    /// for the entry itself.
    async fn resolve(&self, name: &str) -> Result<(), Error>;
}
