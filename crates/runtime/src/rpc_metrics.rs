//! `rpc.server.duration`: how long each inbound gRPC call took, by service,
//! method and status, as the OpenTelemetry RPC semantic conventions name it
//! (a histogram in milliseconds with `rpc.system`, `rpc.service`,
//! `rpc.method` and `rpc.grpc.status_code`, the same attributes the server
//! spans carry). It is exported over OTLP when telemetry is configured and
//! rendered on `/metrics` as the Prometheus histogram
//! `rpc_server_duration_milliseconds`.
//!
//! `Stats` summarises a service's own batches; this covers every call,
//! including the ones that failed before reaching the service's logic, so
//! an operator sees a method's error rate and tail latency from outside.
//!
//! A call lasts until its response body ends: for a unary call that is the
//! reply, for a stream its end. Its status is the `grpc-status` of the
//! trailers (or of the headers, for an error without a body); a body
//! dropped before it ended (the client went away) counts as CANCELLED.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};

use crate::layer::{BoxFuture, With, WithLayer, grpc_status, is_grpc};

/// Bucket upper bounds in milliseconds: OpenTelemetry's default explicit
/// boundaries, so the OTLP and Prometheus forms bucket alike.
pub const BOUNDS_MS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// Distinct (service, method, status) series kept for `/metrics`; calls
/// beyond it count under `_OTHER`, so a client sending made-up method
/// paths cannot grow the table without bound.
const MAX_SERIES: usize = 256;

/// gRPC status codes: CANCELLED, UNKNOWN.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    service: String,
    method: String,
    code: i32,
}

#[derive(Clone, Debug, Default)]
struct Series {
    /// Calls at or under each bound of [`BOUNDS_MS`] (not cumulative),
    /// then those over the last.
    buckets: [u64; BOUNDS_MS.len() + 1],
    sum_ms: f64,
    count: u64,
}

/// One server's call durations.
pub struct RpcMetrics {
    otel: Histogram<f64>,
    series: Mutex<BTreeMap<Key, Series>>,
}

impl std::fmt::Debug for RpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcMetrics")
    }
}

impl RpcMetrics {
    /// Records on `meter` (the global one is a no-op until telemetry is
    /// initialised with an OTLP endpoint) and for `/metrics`.
    pub fn new(meter: &Meter) -> Self {
        let otel = meter
            .f64_histogram("rpc.server.duration")
            .with_unit("ms")
            .with_description("Measures the duration of inbound RPC.")
            .with_boundaries(BOUNDS_MS.to_vec())
            .build();
        Self {
            otel,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one finished call.
    pub fn record(&self, service: &str, method: &str, code: i32, ms: f64) {
        self.otel.record(
            ms,
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_string()),
                KeyValue::new("rpc.method", method.to_string()),
                KeyValue::new("rpc.grpc.status_code", i64::from(code)),
            ],
        );
        let mut key = Key {
            service: service.to_string(),
            method: method.to_string(),
            code,
        };
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        if !series.contains_key(&key) && series.len() >= MAX_SERIES {
            key.service = "_OTHER".into();
            key.method = "_OTHER".into();
        }
        let s = series.entry(key).or_default();
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        s.buckets[i] += 1;
        s.sum_ms += ms;
        s.count += 1;
    }

    /// Calls recorded for `service`/`method` with status `code`.
    pub fn count(&self, service: &str, method: &str, code: i32) -> u64 {
        let key = Key {
            service: service.into(),
            method: method.into(),
            code,
        };
        self.series
            .lock()
            .ok()
            .and_then(|s| s.get(&key).map(|s| s.count))
            .unwrap_or(0)
    }

    /// The Prometheus text of the histogram; empty before the first call.
    pub fn render(&self) -> String {
        let series = match self.series.lock() {
            Ok(s) => s.clone(),
            Err(_) => return String::new(),
        };
        let mut out = String::new();
        if series.is_empty() {
            return out;
        }
        let name = "rpc_server_duration_milliseconds";
        let _ = writeln!(out, "# HELP {name} Measures the duration of inbound RPC.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (k, s) in &series {
            let labels = format!(
                "rpc_system=\"grpc\",rpc_service=\"{}\",rpc_method=\"{}\",rpc_grpc_status_code=\"{}\"",
                crate::metrics::escape(&k.service),
                crate::metrics::escape(&k.method),
                k.code
            );
            let mut cumulative = 0;
            for (i, bound) in BOUNDS_MS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.sum_ms);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.count);
        }
        out
    }
}

/// The tower layer that times every gRPC call a server answers.
pub type RpcMetricsLayer = WithLayer<Arc<RpcMetrics>>;

/// A service whose gRPC calls are timed into the metrics it holds.
pub type RpcMetricsService<S> = With<S, Arc<RpcMetrics>>;

/// A call being timed.
struct Pending {
    metrics: Arc<RpcMetrics>,
    service: String,
    method: String,
    started: Instant,
}

impl Pending {
    fn finish(self, code: i32) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.metrics.record(&self.service, &self.method, code, ms);
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body + Unpin + Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let pending = is_grpc(&req).then(|| {
            let path = req.uri().path().trim_start_matches('/');
            let (service, method) = path.split_once('/').unwrap_or((path, ""));
            Pending {
                metrics: self.value.clone(),
                service: service.to_string(),
                method: method.to_string(),
                started: Instant::now(),
            }
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(res) => {
                    let status = grpc_status(res.headers());
                    Ok(res.map(|body| MeteredBody {
                        inner: body,
                        pending,
                        status,
                    }))
                }
                Err(e) => {
                    if let Some(p) = pending {
                        p.finish(UNKNOWN);
                    }
                    Err(e)
                }
            }
        })
    }
}

/// A response body that records its call when it ends.
pub struct MeteredBody<B> {
    inner: B,
    pending: Option<Pending>,
    /// `grpc-status` seen so far (headers, then trailers).
    status: Option<i32>,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: i32) {
        if let Some(p) = self.pending.take() {
            p.finish(code);
        }
    }
}

impl<B> Drop for MeteredBody<B> {
    /// A body dropped unfinished: an error answered in the headers alone
    /// (trailers-only) ends here with its status; anything else was cut
    /// short by the client.
    fn drop(&mut self) {
        let code = self.status.unwrap_or(CANCELLED);
        self.finish(code);
    }
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.status = Some(code);
                }
                if this.inner.is_end_stream() {
                    let code = this.status.unwrap_or(UNKNOWN);
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(UNKNOWN),
            // A gRPC response that ends without a status broke the
            // protocol.
            Poll::Ready(None) => {
                let code = this.status.unwrap_or(UNKNOWN);
                this.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use trailhound_proto::common::v1::ServiceStats;

    use crate::ServerOptions;
    use crate::stats::StatsHandle;

    const HEALTH: &str = "grpc.health.v1.Health";

    /// GET `path` over plain HTTP/1.1, as a scraper would; the body.
    async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    /// The value of one sample line of `text`.
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn a_real_server_times_each_call_by_method_and_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let options = ServerOptions {
            stats: Some(StatsHandle::new(ServiceStats::default)),
            ..Default::default()
        };
        let server = tokio::spawn(crate::serve(
            listener,
            tonic::service::Routes::default(),
            &["test.v1.Thing"],
            options,
            shutdown.clone(),
        ));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        for _ in 0..2 {
            let ok = client
                .check(HealthCheckRequest {
                    service: "test.v1.Thing".into(),
                })
                .await;
            assert!(ok.is_ok(), "{ok:?}");
        }
        // An unknown service name: NOT_FOUND, answered in the headers.
        let missing = client
            .check(HealthCheckRequest {
                service: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);

        let text = http_get(addr, "/metrics").await;
        let series = |code: i32| {
            format!(
                "rpc_server_duration_milliseconds_count{{rpc_system=\"grpc\",rpc_service=\"{HEALTH}\",rpc_method=\"Check\",rpc_grpc_status_code=\"{code}\"}}"
            )
        };
        assert_eq!(sample(&text, &series(0)), Some(2.0), "{text}");
        assert_eq!(sample(&text, &series(5)), Some(1.0), "{text}");
        assert!(
            text.contains("# TYPE rpc_server_duration_milliseconds histogram"),
            "{text}"
        );
        // Buckets are cumulative and end at the count; the scrape itself
        // is plain HTTP and not an RPC.
        let inf = format!(
            "rpc_server_duration_milliseconds_bucket{{rpc_system=\"grpc\",rpc_service=\"{HEALTH}\",rpc_method=\"Check\",rpc_grpc_status_code=\"0\",le=\"+Inf\"}}"
        );
        assert_eq!(sample(&text, &inf), Some(2.0), "{text}");
        assert!(!text.contains("rpc_method=\"metrics\""), "{text}");
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn buckets_are_cumulative_and_the_table_is_bounded() {
        let m = RpcMetrics::new(&opentelemetry::global::meter("test"));
        m.record("s", "A", 0, 3.0);
        m.record("s", "A", 0, 30.0);
        m.record("s", "A", 0, 20_000.0);
        let text = m.render();
        let b = |le: &str| {
            sample(
                &text,
                &format!(
                    "rpc_server_duration_milliseconds_bucket{{rpc_system=\"grpc\",rpc_service=\"s\",rpc_method=\"A\",rpc_grpc_status_code=\"0\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(b("0"), Some(0.0), "{text}");
        assert_eq!(b("5"), Some(1.0), "{text}");
        assert_eq!(b("50"), Some(2.0), "{text}");
        assert_eq!(b("10000"), Some(2.0), "{text}");
        assert_eq!(b("+Inf"), Some(3.0), "{text}");
        assert!(text.contains("rpc_grpc_status_code=\"0\"} 20033"), "{text}");

        for i in 0..MAX_SERIES + 10 {
            m.record("s", &format!("M{i}"), 12, 1.0);
        }
        assert_eq!(m.count("_OTHER", "_OTHER", 12), 11);
        assert_eq!(m.count("s", "A", 0), 3);
    }

    #[test]
    fn exported_as_the_semantic_convention_histogram() {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};

        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_periodic_exporter(exporter.clone())
            .build();
        let m = RpcMetrics::new(&provider.meter("test"));
        m.record("trailhound.detect.v1.DetectService", "Observe", 0, 12.5);
        m.record("trailhound.detect.v1.DetectService", "Observe", 0, 7.5);
        provider.force_flush().unwrap();
        let all = exporter.get_finished_metrics().unwrap();
        let metric = all
            .iter()
            .flat_map(|rm| rm.scope_metrics())
            .flat_map(|sm| sm.metrics())
            .find(|m| m.name() == "rpc.server.duration")
            .expect("rpc.server.duration exported");
        assert_eq!(metric.unit(), "ms");
        let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() else {
            panic!("not an f64 histogram: {:?}", metric.data());
        };
        let p = h.data_points().next().expect("one point");
        assert_eq!(p.count(), 2);
        assert!((p.sum() - 20.0).abs() < 1e-9);
        let attrs: BTreeMap<String, String> = p
            .attributes()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        assert_eq!(attrs["rpc.system"], "grpc");
        assert_eq!(attrs["rpc.service"], "trailhound.detect.v1.DetectService");
        assert_eq!(attrs["rpc.method"], "Observe");
        assert_eq!(attrs["rpc.grpc.status_code"], "0");
    }
}
