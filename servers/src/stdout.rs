//! The terminal sink: the bytes of its input, as they are, on standard
//! output (or in a file).
//!
//! - **Port `in`.** Raw frames, written one after the other, each followed
//!   by a newline when [`StdoutSink::newline`] is on (the default for
//!   line-framed streams; a PTY's output wants it off). Once every input
//!   has ended the sink flushes and stops normally.
//! - **Arguments** (topology files): `path` (default `"-"`, standard
//!   output), `append`, `newline` (default true).
//! - **Calls**: any request gets the [`SinkStats`](crate::sink::SinkStats).

use std::borrow::Cow;

use oscloud_actors::{ChildSpec, ServerOptions};

use crate::sink::{Format, Target};

/// A terminal (raw bytes) sink (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct StdoutSink {
    target: Target,
    newline: bool,
}

impl StdoutSink {
    /// Write to `target`, a newline after each frame.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            newline: true,
        }
    }

    /// Whether a newline follows each frame.
    pub fn newline(mut self, on: bool) -> Self {
        self.newline = on;
        self
    }

    /// A supervisor child registered as `options`.
    pub fn child_spec(&self, options: impl Into<ServerOptions>) -> ChildSpec {
        self.sink_child_spec(options)
    }
}

impl Format for StdoutSink {
    const WHAT: &'static str = "stdout sink";

    fn target(&self) -> &Target {
        &self.target
    }

    fn format<'a>(&self, _n: u64, frame: &'a [u8]) -> Cow<'a, [u8]> {
        if self.newline {
            let mut v = Vec::with_capacity(frame.len() + 1);
            v.extend_from_slice(frame);
            v.push(b'\n');
            Cow::Owned(v)
        } else {
            Cow::Borrowed(frame)
        }
    }
}
