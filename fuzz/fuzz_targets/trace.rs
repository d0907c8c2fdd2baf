//! Fuzz target: `oscloud_core::wire::fuzzing::trace` never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oscloud_core::wire::fuzzing::trace(data);
});
