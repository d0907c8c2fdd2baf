//! oscloud servers (pending).
