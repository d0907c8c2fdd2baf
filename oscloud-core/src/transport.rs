//! The transport SDK: how links between nodes are made.
//!
//! (Implementation pending: see the nodes issue.)
