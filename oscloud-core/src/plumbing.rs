//! Kernel operations on pipes: connect, split (fan-out) and merge (fan-in).
//!
//! (Implementation pending: see the kernel issue.)
