//! The wire protocol, sans-IO.
//!
//! (Implementation pending: see the nodes issue.)
