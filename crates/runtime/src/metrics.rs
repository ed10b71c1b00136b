//! Metrics from [`ServiceStats`]: Prometheus text for scraping (`/metrics`
//! on every service's port) and OpenTelemetry instruments exported over
//! OTLP when an endpoint is configured. Both read the same figures the
//! `Stats` RPC returns, so a dashboard, an alarm and the health service
//! never disagree.
//!
//! Names follow OpenTelemetry semantic conventions where one exists
//! (`process.uptime`), otherwise `trailhound.<thing>` with the unit as a
//! suffix in Prometheus form (`trailhound_pipeline_lag_seconds`). The text
//! renderer is hand-written: the format is small and stable, and a
//! Prometheus client crate would keep a second copy of every figure.

use std::fmt::Write as _;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use trailhound_proto::common::v1::{LatencySummary, ServiceStats};

use crate::stats::StatsHandle;

/// The Prometheus text exposition content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape(v: &str) -> String {
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
    type Get = fn(&ServiceStats) -> f64;
    let simple: [(&str, &str, &str, Get); 11] = [
        (
            "process_uptime_seconds",
            "gauge",
            "Seconds since the service started.",
            |s| s.uptime_seconds,
        ),
        (
            "trailhound_events_in_total",
            "counter",
            "Events (or anomalies, insights) received since start.",
            |s| s.events_in as f64,
        ),
        (
            "trailhound_events_out_total",
            "counter",
            "Events handed on downstream since start.",
            |s| s.events_out as f64,
        ),
        (
            "trailhound_events_in_per_second",
            "gauge",
            "Events received per second over the last minute.",
            |s| s.events_in_per_second,
        ),
        (
            "trailhound_events_out_per_second",
            "gauge",
            "Events handed on per second over the last minute.",
            |s| s.events_out_per_second,
        ),
        (
            "trailhound_dead_letters_total",
            "counter",
            "Records or deliveries set aside since start.",
            |s| s.dead_letters as f64,
        ),
        (
            "trailhound_backend_calls_total",
            "counter",
            "Calls to an outside backend since start.",
            |s| s.backend_calls as f64,
        ),
        (
            "trailhound_backend_throttles_total",
            "counter",
            "Backend calls refused for rate since start.",
            |s| s.backend_throttles as f64,
        ),
        (
            "trailhound_pipeline_lag_seconds",
            "gauge",
            "Age of the oldest event received but not yet handed on.",
            |s| s.lag_seconds,
        ),
        (
            "trailhound_batch_duration_seconds_count",
            "counter",
            "Batches handled since start.",
            |s| s.batch_latency.as_ref().map_or(0, |l| l.count) as f64,
        ),
        (
            "trailhound_backend_duration_seconds_count",
            "counter",
            "Backend calls timed since start.",
            |s| s.backend_latency.as_ref().map_or(0, |l| l.count) as f64,
        ),
    ];
    for (name, kind, help, get) in simple {
        f.header(name, kind, help);
        for s in all {
            f.sample(name, &[("service", &s.service)], get(s));
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
    f.header(
        "trailhound_cache_hit_ratio",
        "gauge",
        "Share of lookups served from a cache.",
    );
    for s in all {
        if let Some(r) = s.cache_hit_rate {
            f.sample("trailhound_cache_hit_ratio", &[("service", &s.service)], r);
        }
    }
    f.header(
        "trailhound_freshness_seconds",
        "gauge",
        "From an event's time to its evaluation (or the next step's).",
    );
    for s in all {
        if let Some(v) = s.freshness_seconds {
            f.sample(
                "trailhound_freshness_seconds",
                &[("service", &s.service)],
                v,
            );
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

/// Registers OpenTelemetry instruments that read `stats` at each export.
/// The meter comes from the global provider, which is a no-op unless
/// telemetry was initialised with an OTLP endpoint.
pub fn register_otel(stats: StatsHandle) {
    let meter: Meter = opentelemetry::global::meter("trailhound");
    type Get = fn(&ServiceStats) -> f64;
    let counters: [(&'static str, &'static str, Get); 5] = [
        ("trailhound.events.in", "{event}", |s| s.events_in as f64),
        ("trailhound.events.out", "{event}", |s| s.events_out as f64),
        ("trailhound.dead_letters", "{record}", |s| {
            s.dead_letters as f64
        }),
        ("trailhound.backend.calls", "{call}", |s| {
            s.backend_calls as f64
        }),
        ("trailhound.backend.throttles", "{call}", |s| {
            s.backend_throttles as f64
        }),
    ];
    for (name, unit, get) in counters {
        let h = stats.clone();
        let _ = meter
            .f64_observable_counter(name)
            .with_unit(unit)
            .with_callback(move |o| {
                let s = h.get();
                o.observe(finite(get(&s)), &[KeyValue::new("service", s.service)]);
            })
            .build();
    }
    let gauges: [(&'static str, &'static str, Get); 6] = [
        ("process.uptime", "s", |s| s.uptime_seconds),
        ("trailhound.events.in.rate", "{event}/s", |s| {
            s.events_in_per_second
        }),
        ("trailhound.events.out.rate", "{event}/s", |s| {
            s.events_out_per_second
        }),
        ("trailhound.pipeline.lag", "s", |s| s.lag_seconds),
        ("trailhound.batch.duration.p99", "s", |s| {
            s.batch_latency.as_ref().map_or(0.0, |l| l.p99_ms / 1000.0)
        }),
        ("trailhound.cache.hit_ratio", "1", |s| {
            s.cache_hit_rate.unwrap_or(0.0)
        }),
    ];
    for (name, unit, get) in gauges {
        let h = stats.clone();
        let _ = meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_callback(move |o| {
                let s = h.get();
                o.observe(finite(get(&s)), &[KeyValue::new("service", s.service)]);
            })
            .build();
    }
    let h = stats;
    let _ = meter
        .u64_observable_counter("trailhound.errors")
        .with_unit("{error}")
        .with_callback(move |o| {
            let s = h.get();
            for (kind, n) in &s.errors {
                o.observe(
                    *n,
                    &[
                        KeyValue::new("service", s.service.clone()),
                        KeyValue::new("error.type", kind.clone()),
                    ],
                );
            }
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

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
