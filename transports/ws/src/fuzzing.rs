//! Entry point for the fuzz target in `fuzz/` (and its stable smoke test):
//! it takes arbitrary bytes and must never panic, hang or grow memory
//! without bound. Not a stable API.

use std::io::{Read, Write};

use bytes::BytesMut;
use oscloud_core::wire::LengthFraming;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

use crate::link::{Verdict, close_frame, judge};

/// The message limit of the fuzzed listener.
const LIMIT: usize = 4096;

/// A connection whose peer sent `input` and reads nothing.
struct Wire<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // What the listener answers (pongs, a Close) is bounded by what
        // came in; keep only the last of it.
        if self.output.len() > 64 * 1024 {
            self.output.clear();
        }
        self.output.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a node's WebSocket listener does with `data` arriving after the
/// handshake: the WebSocket layer reads it as client frames (messages of
/// at most 4 KiB), each read is judged as a link judges it, a broken rule
/// is answered with its Close, and the frames handed to the session reach
/// its length framing whole and in order. Returns how many frames passed.
pub fn incoming(data: &[u8]) -> usize {
    let config = WebSocketConfig::default()
        .max_message_size(Some(LIMIT))
        .max_frame_size(Some(LIMIT));
    let wire = Wire {
        input: data,
        output: Vec::new(),
    };
    let mut ws = WebSocket::from_raw_socket(wire, Role::Server, Some(config));
    let mut to_session = BytesMut::new();
    let mut passed = Vec::new();
    // Every read consumes input or ends; the bound is a safety net.
    for _ in 0..=data.len() + 1 {
        match judge(Some(ws.read())) {
            Verdict::Frame(frame) => {
                assert!(frame.len() <= LIMIT, "a message above the limit passed");
                to_session.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                to_session.extend_from_slice(&frame);
                passed.push(frame);
            }
            Verdict::Skip => {}
            Verdict::End => break,
            Verdict::Close(code, reason) => {
                let _ = ws.close(Some(close_frame(code, &reason)));
                let _ = ws.flush();
                break;
            }
        }
    }
    let mut framing = LengthFraming::new(LIMIT);
    let mut frames = Vec::new();
    let decoded = framing.decode_buf(&mut to_session, &mut frames);
    assert!(decoded.is_ok(), "the session refused what the link passed");
    assert_eq!(frames, passed, "frames changed on their way to the session");
    assert!(to_session.is_empty(), "a partial frame was left over");
    passed.len()
}
