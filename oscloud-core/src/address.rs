//! Addresses: `scheme://authority/path?key=value` URIs naming where a node
//! listens or connects.
//!
//! (Implementation pending: see the kernel issue.)
