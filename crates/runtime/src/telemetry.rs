//! Logging, tracing and metrics. Logs go to stderr (text or JSON). Traces
//! and metrics (see `metrics`) go over OTLP/gRPC to a collector when an
//! endpoint is configured (`--otlp-endpoint`, `TRAILHOUND_OTLP_ENDPOINT`
//! or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), and nowhere otherwise;
//! `OTEL_SDK_DISABLED=true` turns export off whatever else says. The
//! resource carries `service.name` (`trailhound-<service>`, or
//! `trailhound` for `up`). The standard batching variables apply:
//! `OTEL_METRIC_EXPORT_INTERVAL` (ms, default 60000) and
//! `OTEL_BSP_SCHEDULE_DELAY` (ms, default 5000). `tests/integration/otlp.rs`
//! checks all of this against a real collector (rotel).
//!
//! W3C trace context crosses every gRPC hop: [`inject`] on the client side
//! (see `client`), [`server_span`] on the server side (see `server`). This is
//! the only module that touches the propagator.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How to observe a process.
#[derive(Clone, Debug)]
pub struct TelemetryOptions {
    /// `service.name` on exported spans.
    pub service_name: String,
    /// A tracing filter such as `info` or `trailhound_detect=debug`;
    /// `RUST_LOG` wins when set.
    pub log_filter: String,
    /// Log as JSON lines instead of text.
    pub json_logs: bool,
    /// OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        Self {
            service_name: "trailhound".into(),
            log_filter: "info".into(),
            json_logs: false,
            otlp_endpoint: None,
        }
    }
}

/// Flushes and shuts the tracer down when dropped.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meters: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// Exports every finished span now, without stopping export: for a
    /// process about to hand its work on, and for tests that read spans.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
        if let Some(m) = &self.meters {
            let _ = m.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
        if let Some(m) = self.meters.take() {
            let _ = m.shutdown();
        }
    }
}

fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED")
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

/// Installs logging and, when configured, OTLP trace export. Call once per
/// process; a second call keeps the first subscriber.
pub fn init(opts: &TelemetryOptions) -> anyhow::Result<TelemetryGuard> {
    let endpoint = opts
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty() && !sdk_disabled());
    let exporter = match &endpoint {
        Some(ep) => Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(ep.clone())
                .build()?,
        ),
        None => None,
    };
    let mut guard = init_with_exporter(opts, exporter)?;
    // Metrics go to the same collector: the figures of `Stats`, read by the
    // instruments `metrics::register_otel` installs, every 60 s (the SDK's
    // default) or every OTEL_METRIC_EXPORT_INTERVAL milliseconds.
    if let Some(ep) = endpoint {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(ep)
            .build()?;
        let meters = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_periodic_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(opts.service_name.clone())
                    .build(),
            )
            .build();
        opentelemetry::global::set_meter_provider(meters.clone());
        guard.meters = Some(meters);
    }
    Ok(guard)
}

/// Like [`init`] but with any span exporter: tests pass an in-memory one.
pub fn init_with_exporter<E: SpanExporter + 'static>(
    opts: &TelemetryOptions,
    exporter: Option<E>,
) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&opts.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if opts.json_logs {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed()
    };
    let provider = exporter.map(|exporter| {
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(opts.service_name.clone())
                    .build(),
            )
            .build()
    });
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_tracer_provider(p.clone());
        // Only spans reach the exporter; log lines stay logs.
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("trailhound"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(TelemetryGuard {
        provider,
        meters: None,
    })
}

struct HeaderInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's trace context into outgoing gRPC metadata.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(metadata))
    });
}

/// The span a server request runs in, parented on the caller's trace
/// context when there is one, named and described as the semantic
/// conventions say: a gRPC call is named after its method
/// (`trailhound.ingest.v1.IngestService/PushEvents`) with `rpc.system`,
/// `rpc.service` and `rpc.method`; plain HTTP on the same port
/// (`/metrics`, health's dashboard) is an HTTP server span named after
/// the method alone (a path is no low-cardinality route) with
/// `http.request.method` and `url.path`.
pub fn server_span(req: &http::Request<()>) -> tracing::Span {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let span = if grpc {
        grpc_server_span(req.uri().path().trim_start_matches('/'))
    } else {
        // Unknown methods are `_OTHER`, so a client cannot mint names.
        let method = match *req.method() {
            http::Method::GET
            | http::Method::HEAD
            | http::Method::POST
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::CONNECT
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PATCH => req.method().as_str(),
            _ => "_OTHER",
        };
        tracing::info_span!(
            "http.server",
            otel.name = %method,
            otel.kind = "server",
            http.request.method = %method,
            url.path = %req.uri().path(),
            url.scheme = "http",
        )
    };
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// The current trace id as hex, or None outside a sampled trace. Useful in
/// logs and tests.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Puts who is calling on the current (server) span, as the audit record
/// has it: `enduser.id`, `enduser.role`, and how they were identified and
/// the scope their reads are filtered by.
pub fn record_caller(p: &crate::auth::Principal) {
    let span = tracing::Span::current();
    span.set_attribute("enduser.id", p.subject.clone());
    if let Some(r) = p.role {
        span.set_attribute("enduser.role", r.as_str());
    }
    span.set_attribute(
        "trailhound.auth.kind",
        format!("{:?}", p.kind).to_lowercase(),
    );
    span.set_attribute("trailhound.auth.scope", p.scope.describe());
}

/// The current span's W3C `traceparent`, or empty outside a sampled
/// trace: for messages that cross a stream, where there is no per-message
/// metadata.
pub fn traceparent() -> String {
    context_carrier().remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of the trace a `traceparent` names (from
/// [`traceparent`] on the other side of a stream); a malformed or empty
/// value leaves the span as it was.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt;
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The span of one message on a pipelined stream (`ObserveStream`,
/// `ProcessStream`), named as the unary call it stands for (`path`, e.g.
/// `trailhound.detect.v1.DetectService/Observe`) and continuing the trace
/// the message's `traceparent` names: each batch keeps its own trace
/// although many share one stream.
pub fn message_span(path: &str, traceparent: &str) -> tracing::Span {
    let span = grpc_server_span(path);
    span.record("rpc.streamed", true);
    continue_trace(&span, traceparent);
    span
}

/// A gRPC server span for `path` (`package.Service/Method`).
fn grpc_server_span(path: &str) -> tracing::Span {
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    tracing::info_span!(
        "grpc.server",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.streamed = tracing::field::Empty,
    )
}

/// Another trace's span, for a span that merges work from several traces
/// (a batched hop): a span has one parent, so OpenTelemetry records the
/// other contributors as links.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceLink(opentelemetry::trace::SpanContext);

impl TraceLink {
    /// The current span, when it belongs to a sampled trace.
    pub fn current() -> Option<Self> {
        use opentelemetry::trace::TraceContextExt;
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        (sc.is_valid() && sc.is_sampled()).then_some(Self(sc))
    }

    /// The span a W3C `traceparent` names (as [`traceparent`] writes it),
    /// for contributors whose context was carried in data.
    pub fn from_traceparent(traceparent: &str) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt;
        let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        let cx = opentelemetry::propagation::TextMapPropagator::extract(
            &TraceContextPropagator::new(),
            &carrier,
        );
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(Self(sc))
    }

    /// The linked trace's id, as hex.
    pub fn trace_id(&self) -> String {
        self.0.trace_id().to_string()
    }
}

/// Links `span` to the spans in `links`; a span outside any trace (no
/// telemetry configured) ignores them.
pub fn add_links(span: &tracing::Span, links: impl IntoIterator<Item = TraceLink>) {
    for l in links {
        span.add_link(l.0);
    }
}

/// Trace context as plain key/value pairs, for carrying across a queue.
pub fn context_carrier() -> HashMap<String, String> {
    let mut map = HashMap::new();
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut map));
    map
}
