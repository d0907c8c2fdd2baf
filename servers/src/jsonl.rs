//! The JSON-lines logger: every frame of its input as one JSON line in a
//! file or on standard output.
//!
//! - **Port `in`.** Frames to log. Each becomes `{"n":N,"data":VALUE}`
//!   (plus `"ts"`, milliseconds since the Unix epoch, with
//!   [`JsonlSink::timestamps`]). `VALUE` is the frame as text when it is
//!   printable UTF-8, otherwise the MessagePack value it holds decoded to
//!   JSON, otherwise an array of byte values. Several pipes may be opened
//!   on `in`; once every one has ended the logger flushes and stops
//!   normally (so a finite topology ends).
//! - **Arguments** (topology files): `path` (a file, or `"-"` for standard
//!   output; default `"-"`), `append` (default false), `timestamps`
//!   (default false).
//! - **Calls**: any request gets the [`SinkStats`](crate::sink::SinkStats).

use std::borrow::Cow;

use oscloud_actors::{ChildSpec, ServerOptions};

use crate::sink::{Format, Target};

/// A JSON-lines logger (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct JsonlSink {
    target: Target,
    timestamps: bool,
}

impl JsonlSink {
    /// Log to `target`, without timestamps.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            timestamps: false,
        }
    }

    /// Add a `"ts"` field (milliseconds since the Unix epoch) to every line.
    pub fn timestamps(mut self, on: bool) -> Self {
        self.timestamps = on;
        self
    }

    /// A supervisor child registered as `options`.
    pub fn child_spec(&self, options: impl Into<ServerOptions>) -> ChildSpec {
        self.sink_child_spec(options)
    }
}

/// The JSON value a frame stands for (see the [module docs](self)).
pub fn frame_to_json(frame: &[u8]) -> serde_json::Value {
    if let Ok(text) = std::str::from_utf8(frame)
        && !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return serde_json::Value::String(text.to_owned());
    }
    let mut cursor = std::io::Cursor::new(frame);
    let mut de = rmp_serde::Deserializer::new(&mut cursor);
    if let Ok(v) = <serde_json::Value as serde::Deserialize>::deserialize(&mut de)
        && cursor.position() as usize == frame.len()
    {
        return v;
    }
    serde_json::Value::Array(frame.iter().map(|b| (*b).into()).collect())
}

impl Format for JsonlSink {
    const WHAT: &'static str = "jsonl logger";

    fn target(&self) -> &Target {
        &self.target
    }

    fn format<'a>(&self, n: u64, frame: &'a [u8]) -> Cow<'a, [u8]> {
        let mut line = serde_json::Map::new();
        line.insert("n".into(), n.into());
        if self.timestamps {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            line.insert("ts".into(), ms.into());
        }
        line.insert("data".into(), frame_to_json(frame));
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        Cow::Owned(text.into_bytes())
    }
}
