//! The examples live under `examples/`; this library only runs the code
//! blocks of the workspace README as doc tests, so the README cannot drift
//! from the API.
#![doc = include_str!("../README.md")]
