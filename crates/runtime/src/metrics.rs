//! Metrics from [`ServiceStats`]: Prometheus text for scraping (`/metrics`
//! on every service's port) and OpenTelemetry instruments exported over
//! OTLP when an endpoint is configured. Both read the same figures the
//! `Stats` RPC returns, so a dashboard, an alarm and the health service
//! never disagree.
//!
//! Names follow OpenTelemetry semantic conventions where one exists
//! (`process.uptime` in seconds, `error.type` for the kind of an error),
//! otherwise `trailhound.<thing>` with the unit in the instrument's UCUM
//! unit, never in the name; the Prometheus form carries the unit as a
//! suffix instead (`trailhound_pipeline_lag_seconds`). The OTLP names:
//!
//! | Stats field | OpenTelemetry instrument | Prometheus family |
//! |---|---|---|
//! | uptime_seconds | `process.uptime` (gauge, s) | `process_uptime_seconds` |
//! | events_in / events_out | `trailhound.events.in` / `.out` (counter) | `trailhound_events_{in,out}_total` |
//! | events_*_per_second | `trailhound.events.in.rate` / `.out.rate` (gauge) | `trailhound_events_{in,out}_per_second` |
//! | dead_letters | `trailhound.dead_letters` (counter) | `trailhound_dead_letters_total` |
//! | input_rejected (summed over kinds) | `trailhound.input.rejected` (counter) | `trailhound_input_rejected_total` |
//! | backend_calls / backend_throttles | `trailhound.backend.calls` / `.throttles` (counter) | `trailhound_backend_{calls,throttles}_total` |
//! | errors | `trailhound.errors` (counter, `error.type`) | `trailhound_errors_total{kind}` |
//! | queues | `trailhound.queue.depth` (gauge, `queue`) | `trailhound_queue_depth{queue}` |
//! | lag_seconds | `trailhound.pipeline.lag` (gauge, s) | `trailhound_pipeline_lag_seconds` |
//! | batch_latency | `trailhound.batch.duration` (gauge, s, `quantile`) + `trailhound.batch.count` | `trailhound_batch_duration_seconds{quantile}` + `_count` |
//! | backend_latency | `trailhound.backend.duration` (gauge, s, `quantile`) + `trailhound.backend.count` | `trailhound_backend_duration_seconds{quantile}` + `_count` |
//! | cache_hit_rate | `trailhound.cache.hit_ratio` (gauge, 1) | `trailhound_cache_hit_ratio` |
//! | freshness_seconds | `trailhound.freshness` (gauge, s) | `trailhound_freshness_seconds` |
//! | gauges\[name\] | `trailhound.<name>` (gauge) | `trailhound_<name>` |
//! | (every gRPC call, not in Stats) | `rpc.server.duration` (histogram, ms) | `rpc_server_duration_milliseconds` (histogram) |
//!
//! Batch and backend latencies are percentiles of the service's own
//! histogram (what `Stats` carries), so they are gauges by quantile; the
//! per-call `rpc.server.duration` is a true histogram, recorded by the
//! server layer in [`crate::rpc_metrics`]. The text
//! renderer is hand-written: the format is small and stable, and a
//! Prometheus client crate would keep a second copy of every figure.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use trailhound_proto::common::v1::{LatencySummary, ServiceStats};

use crate::stats::StatsHandle;

/// Input refused as bad, over every kind.
fn input_rejected(s: &ServiceStats) -> u64 {
    s.input_rejected
        .values()
        .fold(0u64, |a, b| a.saturating_add(*b))
}

/// Whether a figure only grows (since start) or is read as it stands.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn prom(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One figure of `Stats` with one value per service, under its Prometheus
/// and its OpenTelemetry name: both exports read this one table, so they
/// cannot drift apart. (Figures by label — errors by kind, queues,
/// latency quantiles, service gauges — are written out below.)
struct Scalar {
    prom: &'static str,
    otel: &'static str,
    /// UCUM unit of the OpenTelemetry instrument.
    unit: &'static str,
    kind: Kind,
    help: &'static str,
    /// None: not reported (a service without a cache has no hit ratio).
    get: fn(&ServiceStats) -> Option<f64>,
}

const SCALARS: [Scalar; 14] = [
    Scalar {
        prom: "process_uptime_seconds",
        otel: "process.uptime",
        unit: "s",
        kind: Kind::Gauge,
        help: "Seconds since the service started.",
        get: |s| Some(s.uptime_seconds),
    },
    Scalar {
        prom: "trailhound_events_in_total",
        otel: "trailhound.events.in",
        unit: "{event}",
        kind: Kind::Counter,
        help: "Events (or anomalies, insights) received since start.",
        get: |s| Some(s.events_in as f64),
    },
    Scalar {
        prom: "trailhound_events_out_total",
        otel: "trailhound.events.out",
        unit: "{event}",
        kind: Kind::Counter,
        help: "Events handed on downstream since start.",
        get: |s| Some(s.events_out as f64),
    },
    Scalar {
        prom: "trailhound_events_in_per_second",
        otel: "trailhound.events.in.rate",
        unit: "{event}/s",
        kind: Kind::Gauge,
        help: "Events received per second over the last minute.",
        get: |s| Some(s.events_in_per_second),
    },
    Scalar {
        prom: "trailhound_events_out_per_second",
        otel: "trailhound.events.out.rate",
        unit: "{event}/s",
        kind: Kind::Gauge,
        help: "Events handed on per second over the last minute.",
        get: |s| Some(s.events_out_per_second),
    },
    Scalar {
        prom: "trailhound_dead_letters_total",
        otel: "trailhound.dead_letters",
        unit: "{record}",
        kind: Kind::Counter,
        help: "Records or deliveries set aside since start.",
        get: |s| Some(s.dead_letters as f64),
    },
    Scalar {
        prom: "trailhound_input_rejected_total",
        otel: "trailhound.input.rejected",
        unit: "{record}",
        kind: Kind::Counter,
        help: "Input refused as bad since start (invalid, late or quarantined records).",
        get: |s| Some(input_rejected(s) as f64),
    },
    Scalar {
        prom: "trailhound_backend_calls_total",
        otel: "trailhound.backend.calls",
        unit: "{call}",
        kind: Kind::Counter,
        help: "Calls to an outside backend since start.",
        get: |s| Some(s.backend_calls as f64),
    },
    Scalar {
        prom: "trailhound_backend_throttles_total",
        otel: "trailhound.backend.throttles",
        unit: "{call}",
        kind: Kind::Counter,
        help: "Backend calls refused for rate since start.",
        get: |s| Some(s.backend_throttles as f64),
    },
    Scalar {
        prom: "trailhound_pipeline_lag_seconds",
        otel: "trailhound.pipeline.lag",
        unit: "s",
        kind: Kind::Gauge,
        help: "Age of the oldest event received but not yet handed on.",
        get: |s| Some(s.lag_seconds),
    },
    Scalar {
        prom: "trailhound_batch_duration_seconds_count",
        otel: "trailhound.batch.count",
        unit: "{batch}",
        kind: Kind::Counter,
        help: "Batches handled since start.",
        get: |s| Some(s.batch_latency.as_ref().map_or(0, |l| l.count) as f64),
    },
    Scalar {
        prom: "trailhound_backend_duration_seconds_count",
        otel: "trailhound.backend.count",
        unit: "{call}",
        kind: Kind::Counter,
        help: "Backend calls timed since start.",
        get: |s| Some(s.backend_latency.as_ref().map_or(0, |l| l.count) as f64),
    },
    Scalar {
        prom: "trailhound_cache_hit_ratio",
        otel: "trailhound.cache.hit_ratio",
        unit: "1",
        kind: Kind::Gauge,
        help: "Share of lookups served from a cache.",
        get: |s| s.cache_hit_rate,
    },
    Scalar {
        prom: "trailhound_freshness_seconds",
        otel: "trailhound.freshness",
        unit: "s",
        kind: Kind::Gauge,
        help: "From an event's time to its evaluation (or the next step's).",
        get: |s| s.freshness_seconds,
    },
];

/// The Prometheus text exposition content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus metric names allow `[a-zA-Z0-9_:]`; anything else becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Non-finite values would break scrapers' parsers; report them as 0.
fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {}", labels.join(","), finite(value));
    }
}

/// Renders the figures of one or more services (health renders every
/// service it watches, each labelled `service=`).
pub fn render(all: &[ServiceStats]) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    for m in SCALARS {
        f.header(m.prom, m.kind.prom(), m.help);
        for s in all {
            if let Some(v) = (m.get)(s) {
                f.sample(m.prom, &[("service", &s.service)], v);
            }
        }
    }
    f.header(
        "trailhound_errors_total",
        "counter",
        "Errors since start by kind.",
    );
    for s in all {
        for (kind, n) in &s.errors {
            f.sample(
                "trailhound_errors_total",
                &[("service", &s.service), ("kind", kind)],
                *n as f64,
            );
        }
    }
    f.header(
        "trailhound_queue_depth",
        "gauge",
        "Items waiting or in flight in a queue.",
    );
    for s in all {
        for q in &s.queues {
            f.sample(
                "trailhound_queue_depth",
                &[("service", &s.service), ("queue", &q.name)],
                q.depth as f64,
            );
        }
    }
    for (name, help, get) in [
        (
            "trailhound_batch_duration_seconds",
            "Time to handle one batch.",
            (|s: &ServiceStats| s.batch_latency) as fn(&ServiceStats) -> _,
        ),
        (
            "trailhound_backend_duration_seconds",
            "Time of one backend call.",
            |s: &ServiceStats| s.backend_latency,
        ),
    ] {
        f.header(name, "gauge", help);
        for s in all {
            let l: LatencySummary = get(s).unwrap_or_default();
            for (q, v) in [("0.5", l.p50_ms), ("0.95", l.p95_ms), ("0.99", l.p99_ms)] {
                f.sample(
                    name,
                    &[("service", &s.service), ("quantile", q)],
                    v / 1000.0,
                );
            }
        }
    }
    // Service-specific gauges, one family per name.
    let mut names: Vec<&String> = all.iter().flat_map(|s| s.gauges.keys()).collect();
    names.sort();
    names.dedup();
    for g in names {
        let name = format!("trailhound_{}", sanitize(g));
        f.header(&name, "gauge", "A service-specific figure.");
        for s in all {
            if let Some(v) = s.gauges.get(g) {
                f.sample(&name, &[("service", &s.service)], *v);
            }
        }
    }
    out
}

/// The instrumentation scope of every trailhound instrument.
pub const METER_NAME: &str = "trailhound";

/// One read of a service's figures shared by all of its instruments: the
/// SDK runs every callback one after another at each collection, so a
/// read younger than this serves them all. The figures of one export are
/// then consistent with each other, and the stats are read once, not once
/// per instrument.
const SNAPSHOT_TTL: Duration = Duration::from_millis(250);

struct Snapshot {
    stats: StatsHandle,
    last: Mutex<Option<(Instant, Arc<ServiceStats>)>>,
}

impl Snapshot {
    fn get(&self) -> Arc<ServiceStats> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, s)) = last.as_ref()
            && at.elapsed() < SNAPSHOT_TTL
        {
            return s.clone();
        }
        let s = Arc::new(self.stats.get());
        *last = Some((Instant::now(), s.clone()));
        s
    }
}

fn service(s: &ServiceStats) -> KeyValue {
    KeyValue::new("service", s.service.clone())
}

/// Registers OpenTelemetry instruments that read `stats` at each export,
/// on the global meter provider, which is a no-op unless telemetry was
/// initialised with an OTLP endpoint.
pub fn register_otel(stats: StatsHandle) {
    register_otel_on(&opentelemetry::global::meter(METER_NAME), stats);
}

/// Registers the instruments on `meter`: the figures of `Stats`, under
/// the names the crate doc gives. Every data point carries `service`
/// (one process may run several services; `service.name` on the resource
/// names the process). Service-specific gauges are those the service
/// reports when this is called.
pub fn register_otel_on(meter: &Meter, stats: StatsHandle) {
    let snap = Arc::new(Snapshot {
        stats,
        last: Mutex::new(None),
    });
    for m in SCALARS {
        let snap = snap.clone();
        let get = m.get;
        match m.kind {
            Kind::Counter => {
                let _ = meter
                    .u64_observable_counter(m.otel)
                    .with_unit(m.unit)
                    .with_description(m.help)
                    .with_callback(move |o| {
                        let s = snap.get();
                        if let Some(v) = get(&s) {
                            o.observe(finite(v) as u64, &[service(&s)]);
                        }
                    })
                    .build();
            }
            Kind::Gauge => {
                let _ = meter
                    .f64_observable_gauge(m.otel)
                    .with_unit(m.unit)
                    .with_description(m.help)
                    .with_callback(move |o| {
                        let s = snap.get();
                        if let Some(v) = get(&s) {
                            o.observe(finite(v), &[service(&s)]);
                        }
                    })
                    .build();
            }
        }
    }
    let h = snap.clone();
    let _ = meter
        .u64_observable_counter("trailhound.errors")
        .with_unit("{error}")
        .with_description("Errors since start, by kind (error.type).")
        .with_callback(move |o| {
            let s = h.get();
            for (kind, n) in &s.errors {
                o.observe(
                    *n,
                    &[service(&s), KeyValue::new("error.type", kind.clone())],
                );
            }
        })
        .build();

    let h = snap.clone();
    let _ = meter
        .u64_observable_gauge("trailhound.queue.depth")
        .with_unit("{item}")
        .with_description("Items waiting or in flight in a queue.")
        .with_callback(move |o| {
            let s = h.get();
            for q in &s.queues {
                o.observe(
                    q.depth,
                    &[service(&s), KeyValue::new("queue", q.name.clone())],
                );
            }
        })
        .build();

    type Latency = fn(&ServiceStats) -> Option<LatencySummary>;
    let latencies: [(&'static str, &'static str, Latency); 2] = [
        (
            "trailhound.batch.duration",
            "Time to handle one batch, by quantile.",
            |s| s.batch_latency,
        ),
        (
            "trailhound.backend.duration",
            "Time of one backend call, by quantile.",
            |s| s.backend_latency,
        ),
    ];
    for (name, help, get) in latencies {
        let snap = snap.clone();
        let _ = meter
            .f64_observable_gauge(name)
            .with_unit("s")
            .with_description(help)
            .with_callback(move |o| {
                let s = snap.get();
                let l = get(&s).unwrap_or_default();
                for (q, v) in [("0.5", l.p50_ms), ("0.95", l.p95_ms), ("0.99", l.p99_ms)] {
                    o.observe(
                        finite(v / 1000.0),
                        &[service(&s), KeyValue::new("quantile", q)],
                    );
                }
            })
            .build();
    }

    // Service-specific gauges, one instrument per name.
    let names: Vec<String> = snap.get().gauges.keys().cloned().collect();
    for g in names {
        let snap = snap.clone();
        let key = g.clone();
        let _ = meter
            .f64_observable_gauge(format!("trailhound.{g}"))
            .with_description("A service-specific figure.")
            .with_callback(move |o| {
                let s = snap.get();
                if let Some(v) = s.gauges.get(&key) {
                    o.observe(finite(*v), &[service(&s)]);
                }
            })
            .build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every point of every instrument: (name, unit, attributes, value).
    type Point = (String, String, Vec<(String, String)>, f64);

    /// Registers the instruments for `stats` on a private provider and
    /// returns what one export of it holds.
    fn points(stats: ServiceStats) -> Vec<Point> {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};

        fn add<T: Copy>(
            out: &mut Vec<Point>,
            name: &str,
            unit: &str,
            data: &MetricData<T>,
            to_f64: fn(T) -> f64,
        ) {
            let mut push = |attrs: Vec<&KeyValue>, v: T| {
                let attrs = attrs
                    .into_iter()
                    .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect();
                out.push((name.into(), unit.into(), attrs, to_f64(v)));
            };
            match data {
                MetricData::Gauge(g) => {
                    for p in g.data_points() {
                        push(p.attributes().collect(), p.value());
                    }
                }
                MetricData::Sum(s) => {
                    assert!(s.is_monotonic(), "{name} is a counter");
                    for p in s.data_points() {
                        push(p.attributes().collect(), p.value());
                    }
                }
                _ => panic!("{name}: only gauges and counters are registered"),
            }
        }

        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_periodic_exporter(exporter.clone())
            .build();
        register_otel_on(
            &provider.meter(METER_NAME),
            StatsHandle::new(move || stats.clone()),
        );
        provider.force_flush().expect("flush");
        let mut out = Vec::new();
        for rm in exporter.get_finished_metrics().expect("metrics") {
            for sm in rm.scope_metrics() {
                for m in sm.metrics() {
                    match m.data() {
                        AggregatedMetrics::F64(d) => add(&mut out, m.name(), m.unit(), d, |v| v),
                        AggregatedMetrics::U64(d) => {
                            add(&mut out, m.name(), m.unit(), d, |v| v as f64)
                        }
                        AggregatedMetrics::I64(d) => {
                            add(&mut out, m.name(), m.unit(), d, |v| v as f64)
                        }
                    }
                }
            }
        }
        let _ = provider.shutdown();
        out
    }

    #[test]
    fn otel_instruments_carry_the_stats_figures_under_their_names() {
        let mut s = ServiceStats {
            service: "ingest".into(),
            uptime_seconds: 12.0,
            events_in: 7,
            events_out: 5,
            dead_letters: 1,
            lag_seconds: f64::NAN,
            batch_latency: Some(LatencySummary {
                count: 3,
                p50_ms: 10.0,
                p95_ms: 20.0,
                p99_ms: 30.0,
                max_ms: 40.0,
            }),
            freshness_seconds: None,
            ..Default::default()
        };
        s.errors.insert("rejected".into(), 2);
        s.queues.push(trailhound_proto::common::v1::QueueDepth {
            name: "spool".into(),
            depth: 3,
            capacity: 0,
        });
        s.gauges.insert("duplicates".into(), 4.0);
        let points = points(s);
        let find = |name: &str, attr: Option<(&str, &str)>| -> (String, f64) {
            let p = points
                .iter()
                .find(|(n, _, a, _)| {
                    n == name
                        && a.iter().any(|(k, v)| k == "service" && v == "ingest")
                        && attr.is_none_or(|(ak, av)| a.iter().any(|(k, v)| k == ak && v == av))
                })
                .unwrap_or_else(|| panic!("no {name} {attr:?} in {points:?}"));
            (p.1.clone(), p.3)
        };
        assert_eq!(find("process.uptime", None), ("s".into(), 12.0));
        assert_eq!(find("trailhound.events.in", None), ("{event}".into(), 7.0));
        assert_eq!(find("trailhound.events.out", None).1, 5.0);
        assert_eq!(find("trailhound.dead_letters", None).1, 1.0);
        assert_eq!(
            find("trailhound.errors", Some(("error.type", "rejected"))),
            ("{error}".into(), 2.0)
        );
        assert_eq!(
            find("trailhound.queue.depth", Some(("queue", "spool"))).1,
            3.0
        );
        assert_eq!(find("trailhound.pipeline.lag", None), ("s".into(), 0.0));
        assert_eq!(
            find("trailhound.batch.duration", Some(("quantile", "0.99"))),
            ("s".into(), 0.03)
        );
        assert_eq!(find("trailhound.batch.count", None).1, 3.0);
        assert_eq!(find("trailhound.duplicates", None).1, 4.0);
        // Figures a service does not have are absent, not zero.
        assert!(
            !points
                .iter()
                .any(|p| p.0 == "trailhound.freshness" || p.0 == "trailhound.cache.hit_ratio"),
            "{points:?}"
        );
    }

    #[test]
    fn renders_parseable_text_with_escaped_labels_and_no_nan() {
        let mut s = ServiceStats {
            service: "in\"gest".into(),
            events_in: 10,
            lag_seconds: f64::NAN,
            cache_hit_rate: Some(0.5),
            ..Default::default()
        };
        s.errors.insert("forward".into(), 2);
        s.gauges.insert("entities.count".into(), 3.0);
        let text = render(&[s]);
        assert!(text.contains("trailhound_events_in_total{service=\"in\\\"gest\"} 10"));
        assert!(
            text.contains("trailhound_errors_total{service=\"in\\\"gest\",kind=\"forward\"} 2")
        );
        assert!(text.contains("trailhound_pipeline_lag_seconds{service=\"in\\\"gest\"} 0"));
        assert!(text.contains("trailhound_entities_count{"));
        assert!(!text.contains("NaN"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
