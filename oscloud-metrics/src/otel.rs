//! OpenTelemetry traces across nodes (feature `otel`): spans recorded with
//! `tracing`, linked from node to node by the trace context that calls and
//! casts carry (`docs/PROTOCOL.md` §4.2), exported over OTLP/HTTP
//! (protobuf).
//!
//! [`Otlp::start`] builds the exporter and installs oscloud-core's trace
//! hook ([`oscloud_core::trace::set_trace_hook`]); add [`Otlp::layer`] to
//! the process's `tracing` subscriber. Then:
//!
//! - a call or cast made outside any
//!   [`with_trace`](oscloud_core::trace::with_trace) (a caller that is not
//!   itself handling a traced message) carries the context of the caller's
//!   current `tracing` span, when that span is recorded;
//! - every call or cast that arrives over a link with a context is
//!   delivered in a span `oscloud.deliver` (OpenTelemetry kind server,
//!   named `call NAME` or `cast NAME`) whose parent is the remote span; a
//!   node that forwards the message (routing) records one too, and the
//!   message goes on with that span as its parent; a server handling the
//!   message, and the calls it makes, are in that span's context.
//!
//! Without [`Otlp::start`] (export off) none of this runs: no hook, no
//! span, nothing added to the node's paths. `docs/TRACING.md` has the
//! details.
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! # fn main() -> Result<(), oscloud_metrics::Error> {
//! let otlp = oscloud_metrics::otel::Otlp::start("http://127.0.0.1:4318", "my-node")?;
//! tracing_subscriber::registry().with(otlp.layer()).init();
//! // … run the node; at the end, send what is still buffered:
//! otlp.shutdown();
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use oscloud_core::trace::{TraceContext, TraceHook, set_trace_hook};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::Error;

/// The path OTLP/HTTP receivers take traces on.
pub const TRACES_PATH: &str = "/v1/traces";

/// How often buffered spans are sent.
const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// An OTLP/HTTP span exporter and the trace hook that feeds it; see the
/// [module documentation](self).
#[derive(Debug)]
pub struct Otlp {
    provider: SdkTracerProvider,
}

impl Otlp {
    /// Export spans to the OTLP/HTTP receiver at `endpoint` (`http://` only:
    /// a base URL such as `http://127.0.0.1:4318`, to which
    /// [`TRACES_PATH`] is added, or a URL ending in it), as the service
    /// `service` (the `service.name` resource attribute), and install the
    /// trace hook. Once per process: a second call fails with
    /// [`Error::Otlp`].
    pub fn start(endpoint: &str, service: &str) -> Result<Self, Error> {
        let url = traces_url(endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .map_err(|e| Error::Otlp(e.to_string()))?;
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_DELAY)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        set_trace_hook(Box::new(OtelHook))
            .map_err(|_| Error::Otlp("a trace hook is installed already".into()))?;
        Ok(Self { provider })
    }

    /// The `tracing` layer that records spans for the exporter: the
    /// `oscloud.deliver` spans and the application's own spans at `INFO`
    /// and above (whatever level other layers log at); not the long-lived
    /// spans of the node's links, transports and actors (targets
    /// `oscloud_core`, `oscloud_transport*`, `oscloud_actors`, `ractor`).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let targets = [
            "oscloud_core",
            "oscloud_transport",
            "oscloud_actors",
            "ractor",
        ]
        .into_iter()
        .fold(Targets::new().with_default(LevelFilter::INFO), |t, name| {
            t.with_target(name, LevelFilter::OFF)
        });
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("oscloud"))
            .with_filter(targets)
    }

    /// Send the spans still buffered and stop exporting (waits for the
    /// receiver, a few seconds at most).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!("OTLP export: {e}");
        }
    }
}

/// The URL spans are posted to, from what the user gave.
fn traces_url(endpoint: &str) -> Result<String, Error> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err(Error::Otlp(format!(
            "{endpoint:?}: the OTLP endpoint must be an http:// URL"
        )));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(Error::Otlp(format!("{endpoint:?}: no host")));
    }
    Ok(if endpoint.ends_with(TRACES_PATH) {
        endpoint.to_owned()
    } else {
        format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/'))
    })
}

/// The trace hook: OpenTelemetry span contexts in and out of messages.
struct OtelHook;

impl TraceHook for OtelHook {
    fn outgoing(&self) -> Option<TraceContext> {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then_some(())?;
        TraceContext::new(
            sc.trace_id().to_bytes(),
            sc.span_id().to_bytes(),
            sc.trace_flags().to_u8(),
        )
    }

    fn deliver(
        &self,
        kind: &'static str,
        server: &str,
        remote: TraceContext,
    ) -> (tracing::Span, TraceContext) {
        let span = tracing::info_span!(
            "oscloud.deliver",
            otel.name = format!("{kind} {server}"),
            otel.kind = "server",
            oscloud.server = server,
            oscloud.kind = kind,
        );
        let parent = SpanContext::new(
            TraceId::from_bytes(remote.trace_id()),
            SpanId::from_bytes(remote.parent_id()),
            TraceFlags::new(remote.flags()),
            true,
            TraceState::default(),
        );
        // Fails only when the span is not recorded (filtered out): the
        // message then goes on with the remote context unchanged.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        let own = span.context().span().span_context().span_id().to_bytes();
        let ctx = remote.with_parent(own).unwrap_or(remote);
        (span, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_trace_urls() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:1/v1/traces").unwrap(),
            "http://c:1/v1/traces"
        );
        for bad in ["https://c:4318", "c:4318", "http://", "http:///x"] {
            assert!(matches!(traces_url(bad), Err(Error::Otlp(_))), "{bad}");
        }
    }
}
