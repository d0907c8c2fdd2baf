//! Fuzz target: `oscloud_transport_ws::fuzzing::incoming` never panics
//! (what a WebSocket listener does with a client's bytes after the
//! handshake).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oscloud_transport_ws::fuzzing::incoming(data);
});
