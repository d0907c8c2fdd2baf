//! Fuzz target: `oscloud_core::wire::fuzzing::link_wire`: a link's send
//! side driven by the fuzz bytes delivers every accepted cast, call and
//! pipe frame once, in its sender's order.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oscloud_core::wire::fuzzing::link_wire(data);
});
