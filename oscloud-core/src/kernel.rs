//! The kernel: one node's registry and the pipe factory.

use crate::{NodeId, PipeConfig, PipeEnd, PipeReader, PipeWriter, Registry};

/// One node's kernel: its identity, its registry, and the default shape of
/// the pipes it makes.
///
/// The kernel is mechanism only. It moves bytes and names; servers run *on*
/// it and talk *through* it, and it never starts, stops or restarts one.
/// Cheap to clone: clones share one kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    registry: Registry,
    pipe_config: PipeConfig,
}

impl Default for Kernel {
    fn default() -> Self {
        Self::new()
    }
}

impl Kernel {
    /// A kernel with a fresh random node id and default pipes.
    pub fn new() -> Self {
        Self::with_node(NodeId::random())
    }

    /// A kernel for the node `node`.
    pub fn with_node(node: NodeId) -> Self {
        Self {
            registry: Registry::new(node),
            pipe_config: PipeConfig::default(),
        }
    }

    /// Use `config` for the pipes this kernel makes.
    pub fn with_pipe_config(mut self, config: PipeConfig) -> Self {
        self.pipe_config = config;
        self
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.registry.node()
    }

    /// This node's registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The configuration of the pipes this kernel makes.
    pub fn pipe_config(&self) -> PipeConfig {
        self.pipe_config
    }

    /// A one-way pipe with the kernel's pipe configuration.
    pub fn pipe(&self) -> (PipeWriter, PipeReader) {
        crate::pipe::pipe(self.pipe_config)
    }

    /// A duplex pipe with the kernel's pipe configuration.
    pub fn duplex(&self) -> (PipeEnd, PipeEnd) {
        crate::pipe::duplex(self.pipe_config)
    }
}
