//! Trace context: which distributed trace a call or cast belongs to.
//!
//! A call or cast may carry a [`TraceContext`], the values of a W3C Trace
//! Context `traceparent` header (`docs/PROTOCOL.md` §4.2), so that one
//! trace shows the caller, every node that forwards the message, the
//! server that handles it and its reply.
//!
//! The context travels by itself:
//!
//! - a call or cast made while [`current_trace`] is `Some` carries it, to a
//!   server on another node (in the wire message) as to a local one;
//! - the node runs the delivery of a message that carried a context inside
//!   [`with_trace`], so the server sees it (`oscloud-actors`:
//!   `Context::trace`) and the calls it makes while handling the message
//!   carry it on; a node that forwards a message to another node (routing)
//!   passes it on the same way;
//! - a caller starts or joins a trace with [`with_trace`] around its calls.
//!   The context is taken when the call or cast is made: an async call
//!   when it first runs, [`Endpoint::cast`](crate::Endpoint::cast) and
//!   `try_cast` when called, so make them inside the scope.
//!
//! A tracing system (the `otel` feature of `oscloud-metrics`, which uses
//! OpenTelemetry) plugs in with [`set_trace_hook`]: outgoing messages made
//! outside [`with_trace`] then carry the context of the caller's current
//! `tracing` span, and every
//! delivery from a link runs in a span whose parent is the remote context.
//! Without a hook nothing is recorded and nothing is added to a message
//! that had no context.
//!
//! ```
//! use oscloud_core::trace::{TraceContext, current_trace, with_trace};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oscloud_core::Error> {
//! let ctx: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
//! assert!(ctx.sampled());
//! let seen = with_trace(ctx, async { current_trace() }).await;
//! assert_eq!(seen, Some(ctx));
//! assert_eq!(current_trace(), None);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::Error;

/// The trace a message belongs to: the fields of a W3C Trace Context
/// `traceparent` header of version 00
/// (`00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`).
///
/// Neither id is ever all zero (the constructors refuse it, as the W3C
/// specification does). On the wire it is a bin of
/// [`WIRE_LEN`](Self::WIRE_LEN) bytes: trace-id, parent-id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceContext {
    /// Bytes of the context on the wire: 16 + 8 + 1.
    pub const WIRE_LEN: usize = 25;
    /// The `sampled` bit of the trace flags.
    pub const SAMPLED: u8 = 1;

    /// A context from its fields; `None` if either id is all zero.
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The context of a wire `trace` element: exactly
    /// [`WIRE_LEN`](Self::WIRE_LEN) bytes with non-zero ids, else `None`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; Self::WIRE_LEN] = bytes.try_into().ok()?;
        let mut trace_id = [0; 16];
        let mut parent_id = [0; 8];
        trace_id.copy_from_slice(&b[..16]);
        parent_id.copy_from_slice(&b[16..24]);
        Self::new(trace_id, parent_id, b[24])
    }

    /// The wire form: trace-id, parent-id, flags.
    pub fn to_bytes(&self) -> [u8; Self::WIRE_LEN] {
        let mut b = [0; Self::WIRE_LEN];
        b[..16].copy_from_slice(&self.trace_id);
        b[16..24].copy_from_slice(&self.parent_id);
        b[24] = self.flags;
        b
    }

    /// The trace's id, shared by every span of the trace.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the span the message was sent from (its receiver's
    /// parent).
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags (bit 0: [`SAMPLED`](Self::SAMPLED)).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller records the trace (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The same trace with another parent span (what a node that records
    /// its own span for a message passes on); `None` if `parent_id` is all
    /// zero.
    pub fn with_parent(self, parent_id: [u8; 8]) -> Option<Self> {
        Self::new(self.trace_id, parent_id, self.flags)
    }

    /// The `traceparent` header text, version 00 (the same as
    /// [`Display`](fmt::Display)).
    pub fn traceparent(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.parent_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

/// Parses a `traceparent` header: version 00 exactly as specified, a later
/// version (not `ff`) by its first four fields, as the W3C specification
/// asks. Hex digits are lower case; ids may not be all zero.
impl FromStr for TraceContext {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = |reason| Error::BadTraceparent {
            text: text.to_owned(),
            reason,
        };
        let b = text.as_bytes();
        if b.len() < 55 {
            return Err(bad("shorter than 55 characters"));
        }
        let version = hex::<1>(&b[..2]).ok_or_else(|| bad("version is not two hex digits"))?[0];
        if version == 0xff {
            return Err(bad("version ff is invalid"));
        }
        if (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return Err(bad("unexpected characters after the flags"));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(bad("fields are not separated by '-'"));
        }
        let trace_id = hex::<16>(&b[3..35]).ok_or_else(|| bad("trace-id is not 32 hex digits"))?;
        let parent_id =
            hex::<8>(&b[36..52]).ok_or_else(|| bad("parent-id is not 16 hex digits"))?;
        let flags = hex::<1>(&b[53..55]).ok_or_else(|| bad("flags are not two hex digits"))?[0];
        Self::new(trace_id, parent_id, flags).ok_or_else(|| bad("an id is all zero"))
    }
}

/// `2 * N` lower-case hex digits as bytes.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

tokio::task_local! {
    static TRACE: TraceContext;
}

/// The context a call or cast made here now carries: the one set by the
/// innermost [`with_trace`] (the node sets it around the delivery of every
/// message that carried one), else the trace hook's (the current span's,
/// see [`set_trace_hook`]) when one is installed. `None` outside any trace.
pub fn current_trace() -> Option<TraceContext> {
    TRACE
        .try_with(|t| *t)
        .ok()
        .or_else(|| HOOK.get().and_then(|h| h.outgoing()))
}

/// Run `f` with `ctx` as the [`current_trace`]: the calls and casts it
/// makes carry `ctx`. `None` runs `f` as it is (in the trace around it, if
/// any).
pub async fn with_trace<F: Future>(ctx: impl Into<Option<TraceContext>>, f: F) -> F::Output {
    match ctx.into() {
        Some(ctx) => TRACE.scope(ctx, f).await,
        None => f.await,
    }
}

/// Synchronous form of [`with_trace`].
pub fn with_trace_sync<R>(ctx: impl Into<Option<TraceContext>>, f: impl FnOnce() -> R) -> R {
    match ctx.into() {
        Some(ctx) => TRACE.sync_scope(ctx, f),
        None => f(),
    }
}

/// What a tracing system plugs into the node, with [`set_trace_hook`].
pub trait TraceHook: Send + Sync + 'static {
    /// The context of the caller's current span, for an outgoing call or
    /// cast made outside any [`with_trace`]; `None`: it carries none.
    fn outgoing(&self) -> Option<TraceContext>;

    /// A span for delivering one message that came over a link with the
    /// context `remote` (`kind` is `"call"` or `"cast"`, `server` the name
    /// it is for, a local server or one on a node further on), and the
    /// context the delivery runs with: `remote` with the span as parent.
    fn deliver(
        &self,
        kind: &'static str,
        server: &str,
        remote: TraceContext,
    ) -> (tracing::Span, TraceContext);
}

static HOOK: OnceLock<Box<dyn TraceHook>> = OnceLock::new();

/// Install the process's trace hook (once: a second one is refused, and
/// handed back).
pub fn set_trace_hook(hook: Box<dyn TraceHook>) -> Result<(), Box<dyn TraceHook>> {
    HOOK.set(hook)
}

/// Run the delivery `f` of a message from a link that carried `remote`:
/// inside the hook's span, with the context it gives, or with `remote`
/// itself when there is no hook.
pub(crate) async fn deliver<F: Future>(
    kind: &'static str,
    server: &str,
    remote: Option<TraceContext>,
    f: F,
) -> F::Output {
    use tracing::Instrument;
    let Some(remote) = remote else {
        return f.await;
    };
    match HOOK.get() {
        Some(hook) => {
            let (span, ctx) = hook.deliver(kind, server, remote);
            with_trace(ctx, f).instrument(span).await
        }
        None => with_trace(remote, f).await,
    }
}

/// Synchronous form of [`deliver`].
pub(crate) fn deliver_sync<R>(
    kind: &'static str,
    server: &str,
    remote: Option<TraceContext>,
    f: impl FnOnce() -> R,
) -> R {
    let Some(remote) = remote else {
        return f();
    };
    match HOOK.get() {
        Some(hook) => {
            let (span, ctx) = hook.deliver(kind, server, remote);
            span.in_scope(|| with_trace_sync(ctx, f))
        }
        None => with_trace_sync(remote, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_roundtrips() {
        let t: TraceContext = TP.parse().unwrap();
        assert_eq!(t.trace_id()[0], 0x4b);
        assert_eq!(t.parent_id(), [0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(t.flags(), 1);
        assert_eq!(t.traceparent(), TP);
        assert_eq!(TraceContext::from_bytes(&t.to_bytes()), Some(t));
        // A later version: the first four fields, more after a '-'.
        let later = format!("cc{}-what-comes-later", &TP[2..]);
        assert_eq!(later.parse::<TraceContext>().unwrap(), t);
    }

    #[test]
    fn bad_traceparents_are_refused() {
        for bad in [
            "",
            &TP[..54],
            &format!("{TP}-"),
            &format!("ff{}", &TP[2..]),
            &TP.to_uppercase(),
            &TP.replace('-', "_"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            &format!("cc{}x", &TP[2..]),
        ] {
            assert!(
                matches!(
                    bad.parse::<TraceContext>(),
                    Err(Error::BadTraceparent { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wire_bytes_of_the_wrong_size_or_with_zero_ids_are_none() {
        assert_eq!(TraceContext::from_bytes(&[1; 24]), None);
        assert_eq!(TraceContext::from_bytes(&[1; 26]), None);
        let mut zero_parent = [1; 25];
        zero_parent[16..24].fill(0);
        assert_eq!(TraceContext::from_bytes(&zero_parent), None);
        assert!(TraceContext::from_bytes(&[1; 25]).is_some());
        assert!(!TraceContext::new([1; 16], [1; 8], 0).unwrap().sampled());
    }

    proptest::proptest! {
        #[test]
        fn any_context_roundtrips_as_text_and_bytes(
            trace_id in proptest::prelude::any::<[u8; 16]>(),
            parent_id in proptest::prelude::any::<[u8; 8]>(),
            flags in proptest::prelude::any::<u8>(),
        ) {
            if let Some(t) = TraceContext::new(trace_id, parent_id, flags) {
                proptest::prop_assert_eq!(t.traceparent().parse::<TraceContext>().unwrap(), t);
                proptest::prop_assert_eq!(TraceContext::from_bytes(&t.to_bytes()), Some(t));
            }
        }

        #[test]
        fn any_text_parses_or_fails_cleanly(text in "\\PC{0,70}") {
            let _ = text.parse::<TraceContext>();
        }
    }
}
