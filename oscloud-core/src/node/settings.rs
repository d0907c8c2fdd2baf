//! [`NodeConfig`] from text: one `key = value` setting at a time, so every
//! front end (the `oscloud` command's topology files, the Python and C
//! bindings, a test binary's `--config` flag) reads node settings the same
//! way and reports the same errors.
//!
//! Durations are a number with a unit, `ms`, `s` or `m` (`250ms`, `1.5s`,
//! `2m`); a bare number is seconds. Sizes and counts are whole numbers,
//! optionally with a binary suffix for sizes (`64KiB`, `1MiB`).

use std::time::{Duration, Instant};

use super::NodeConfig;
use crate::Error;
use crate::node::NodeId;
use crate::wire::{FramingKind, LocalInfo, Session};

/// How a setting's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    /// A duration: `250ms`, `1.5s`, `2m`, or a bare number of seconds.
    Duration,
    /// A size in bytes: `4096`, `64KiB`, `1MiB`.
    Bytes,
    /// A whole number.
    Count,
}

/// One setting of [`NodeConfig`] that [`NodeConfig::set`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Its key, the field's name.
    pub key: &'static str,
    /// How its value is written.
    pub kind: SettingKind,
    /// One line on what it does.
    pub help: &'static str,
}

/// Every setting [`NodeConfig::set`] accepts, in the order of the struct.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "keepalive",
        kind: SettingKind::Duration,
        help: "send a ping on a quiet link this often",
    },
    Setting {
        key: "idle_timeout",
        kind: SettingKind::Duration,
        help: "declare a link dead after this long without hearing from the peer",
    },
    Setting {
        key: "reconnect_min",
        kind: SettingKind::Duration,
        help: "first wait before dialling a lost link again",
    },
    Setting {
        key: "reconnect_max",
        kind: SettingKind::Duration,
        help: "longest wait between dial attempts",
    },
    Setting {
        key: "pipe_window",
        kind: SettingKind::Bytes,
        help: "bytes each pipe may have in flight towards this node",
    },
    Setting {
        key: "max_frame",
        kind: SettingKind::Bytes,
        help: "largest wire packet on reliable links",
    },
    Setting {
        key: "lossy_max_frame",
        kind: SettingKind::Bytes,
        help: "largest wire packet on lossy and datagram links",
    },
    Setting {
        key: "lossy_send_window",
        kind: SettingKind::Count,
        help: "most unacknowledged packets in flight on a lossy or datagram link",
    },
    Setting {
        key: "lossy_initial_rto",
        kind: SettingKind::Duration,
        help: "first retransmission timeout on a lossy or datagram link",
    },
    Setting {
        key: "max_queued",
        kind: SettingKind::Bytes,
        help: "bytes of casts and calls that may wait for one link",
    },
    Setting {
        key: "link_budget",
        kind: SettingKind::Bytes,
        help: "bytes of replies and casts one link's peer may make this node hold",
    },
    Setting {
        key: "max_serving",
        kind: SettingKind::Count,
        help: "most calls from one link served at once (more get a busy error)",
    },
    Setting {
        key: "resume_grace",
        kind: SettingKind::Duration,
        help: "how long a session outlives its link (0 = not at all)",
    },
    Setting {
        key: "max_hops",
        kind: SettingKind::Count,
        help: "the longest route taken, in nodes on its path (1 to 32)",
    },
];

impl NodeConfig {
    /// Set one setting from text, e.g. `set("resume_grace", "30s")`; the
    /// keys and how their values are written are in [`SETTINGS`].
    ///
    /// # Errors
    /// [`Error::BadSetting`] for an unknown key, a value that does not
    /// parse, or one out of range (a zero window, timeout or frame size).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        let bad = |reason: String| Error::BadSetting {
            key: key.to_owned(),
            reason,
        };
        let setting = SETTINGS.iter().find(|s| s.key == key).ok_or_else(|| {
            let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
            bad(format!("unknown setting (known: {})", known.join(", ")))
        })?;
        let value = value.trim();
        match setting.kind {
            SettingKind::Duration => {
                let d = parse_duration(value).map_err(bad)?;
                // Only the grace may be zero (it means "off").
                if d.is_zero() && key != "resume_grace" {
                    return Err(bad("must be above zero".into()));
                }
                match key {
                    "keepalive" => self.keepalive = d,
                    "idle_timeout" => self.idle_timeout = d,
                    "reconnect_min" => self.reconnect_min = d,
                    "reconnect_max" => self.reconnect_max = d,
                    "lossy_initial_rto" => self.lossy_initial_rto = d,
                    _ => self.resume_grace = d,
                }
            }
            SettingKind::Bytes | SettingKind::Count => {
                let n = if setting.kind == SettingKind::Bytes {
                    parse_bytes(value)
                } else {
                    parse_count(value)
                }
                .map_err(bad)?;
                if n == 0 {
                    return Err(bad("must be above zero".into()));
                }
                let as_u32 =
                    || u32::try_from(n).map_err(|_| bad(format!("{n} is above {}", u32::MAX)));
                let as_usize =
                    || usize::try_from(n).map_err(|_| bad(format!("{n} is too large here")));
                match key {
                    "max_hops" if n > crate::wire::MAX_ROUTE_PATH as u64 => {
                        return Err(bad(format!("{n} is above {}", crate::wire::MAX_ROUTE_PATH)));
                    }
                    "max_hops" => self.max_hops = as_usize()?,
                    "pipe_window" => self.pipe_window = as_u32()?,
                    "max_frame" => self.max_frame = as_usize()?,
                    "lossy_max_frame" => self.lossy_max_frame = as_usize()?,
                    "lossy_send_window" => self.lossy_send_window = as_u32()?,
                    "link_budget" => self.link_budget = as_usize()?,
                    "max_serving" => self.max_serving = as_usize()?,
                    _ => self.max_queued = as_usize()?,
                }
            }
        }
        Ok(())
    }

    /// Apply several settings written `key=value`, separated by commas,
    /// semicolons or newlines (`"resume_grace=30s, idle_timeout=3s"`);
    /// empty items are skipped. Stops at the first bad one.
    ///
    /// # Errors
    /// [`Error::BadSetting`] for an item without `=` or one that
    /// [`NodeConfig::set`] refuses.
    pub fn apply(&mut self, settings: &str) -> Result<(), Error> {
        for item in settings.split([',', ';', '\n']) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (key, value) = item.split_once('=').ok_or_else(|| Error::BadSetting {
                key: item.to_owned(),
                reason: "expected key=value".into(),
            })?;
            self.set(key.trim(), value)?;
        }
        Ok(())
    }
}

impl NodeConfig {
    /// Check the settings together: what each setting accepts alone may
    /// still make every link fail. A keepalive must be shorter than the
    /// idle timeout (`docs/PROTOCOL.md` §6): a quiet peer sends its pings
    /// every `keepalive`, and a node that hears nothing for
    /// `idle_timeout` closes the link, so otherwise every quiet link would
    /// be closed. The wire sessions' own checks (frame sizes, timers of at
    /// most a day) are made here too, for reliable and lossy links.
    /// [`Node::listen`](super::Node::listen) and
    /// [`Node::connect`](super::Node::connect) refuse to start with
    /// settings that fail this.
    ///
    /// # Errors
    /// [`Error::BadSetting`] for a keepalive not shorter than the idle
    /// timeout, [`Error::WireConfig`] for what a wire session refuses.
    pub fn validate(&self) -> Result<(), Error> {
        if self.keepalive >= self.idle_timeout {
            return Err(Error::BadSetting {
                key: "keepalive".into(),
                reason: format!(
                    "{:?} is not shorter than idle_timeout ({:?}): a quiet link would be \
                     closed before its peer's next ping",
                    self.keepalive, self.idle_timeout
                ),
            });
        }
        for framing in [FramingKind::ReliableStream, FramingKind::LossyStream] {
            Session::new(
                self.session_config(framing),
                LocalInfo::new(NodeId::random()),
                Instant::now(),
            )?;
        }
        Ok(())
    }
}

/// A duration written as the settings' are: `250ms`, `1.5s`, `2m`, or a
/// bare number of seconds (for address parameters that take one). The
/// error says what was wrong, in words.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('m') {
        (n, 60.0)
    } else {
        (value, 1.0)
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a duration (like 250ms, 1.5s, 2m)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{value:?} is not a duration of zero or more"));
    }
    Duration::try_from_secs_f64(n * scale).map_err(|_| format!("{value:?} is too long"))
}

/// A whole number of bytes, optionally `KiB`, `MiB` or `GiB`.
fn parse_bytes(value: &str) -> Result<u64, String> {
    let units = [("KiB", 1u64 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)];
    let (number, scale) = units
        .iter()
        .find_map(|(suffix, scale)| value.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((value, 1));
    let n = parse_count(number.trim())
        .map_err(|_| format!("{value:?} is not a size (like 4096, 64KiB, 1MiB)"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("{value:?} is too large"))
}

fn parse_count(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_accepted_and_lands_in_its_field() {
        let mut c = NodeConfig::default();
        c.apply(
            "keepalive=250ms, idle_timeout=1.5s; reconnect_min=10ms\nreconnect_max=2m,\
             pipe_window=64KiB, max_frame=1MiB, lossy_max_frame=512, lossy_send_window=32,\
             lossy_initial_rto=40ms, max_queued=2MiB, link_budget=4MiB, max_serving=8,\
             resume_grace=30, max_hops=4",
        )
        .expect("valid settings");
        assert_eq!(c.keepalive, Duration::from_millis(250));
        assert_eq!(c.idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.reconnect_min, Duration::from_millis(10));
        assert_eq!(c.reconnect_max, Duration::from_secs(120));
        assert_eq!(c.pipe_window, 64 * 1024);
        assert_eq!(c.max_frame, 1024 * 1024);
        assert_eq!(c.lossy_max_frame, 512);
        assert_eq!(c.lossy_send_window, 32);
        assert_eq!(c.lossy_initial_rto, Duration::from_millis(40));
        assert_eq!(c.max_queued, 2 * 1024 * 1024);
        assert_eq!(c.link_budget, 4 * 1024 * 1024);
        assert_eq!(c.max_serving, 8);
        assert_eq!(c.resume_grace, Duration::from_secs(30));
        assert_eq!(c.max_hops, 4);
        assert_eq!(SETTINGS.len(), 14, "a new setting needs a test line here");
    }

    #[test]
    fn bad_settings_say_which_and_why() {
        let mut c = NodeConfig::default();
        let cases = [
            ("nope=1", "unknown setting"),
            ("keepalive=fast", "not a duration"),
            ("keepalive=0", "above zero"),
            ("keepalive=-1s", "zero or more"),
            ("pipe_window=8GiB", "above"),
            ("pipe_window=lots", "not a size"),
            ("lossy_send_window=1.5", "whole number"),
            ("max_queued=0", "above zero"),
            ("max_hops=33", "above 32"),
            ("max_hops=0", "above zero"),
            ("resume_grace", "key=value"),
        ];
        for (input, expected) in cases {
            let err = c.apply(input).expect_err(input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
        assert_eq!(c, NodeConfig::default(), "refused settings change nothing");
        c.apply("keepalive=3s, idle_timeout=3s")
            .expect("each is valid alone");
        let err = c
            .validate()
            .expect_err("keepalive = idle_timeout")
            .to_string();
        assert!(
            err.contains("\"keepalive\"") && err.contains("not shorter than idle_timeout"),
            "{err}"
        );
        c.apply("keepalive=2s").expect("valid");
        c.validate().expect("keepalive below idle_timeout");
        c.apply("max_frame=64").expect("above zero");
        let err = c.validate().expect_err("a frame too small").to_string();
        assert!(err.contains("max_frame"), "{err}");
        c = NodeConfig::default();
        c.validate().expect("the defaults are valid");
        c.set("resume_grace", "0").expect("zero grace is off");
        assert!(c.resume_grace.is_zero());
    }
}
