//! Fuzz target: `oscloud_core::wire::fuzzing::route` never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oscloud_core::wire::fuzzing::route(data);
});
