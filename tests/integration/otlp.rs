//! OTLP export against a real collector. rotel (PyPI's `rotel`, installed
//! into .cache/venv by scripts/test-tools.sh) listens on free loopback
//! ports; ingest, enrich and detect run as separate `trailhound` processes
//! configured the normal way (`--otlp-endpoint`, plus the standard
//! `OTEL_METRIC_EXPORT_INTERVAL` / `OTEL_BSP_SCHEDULE_DELAY` to export
//! quickly); rotel prints everything it receives (its detailed debug log)
//! to stdout, which this test parses. It checks that the figures of the
//! Stats RPC arrive as metrics under their OpenTelemetry names, with
//! `service.name` on the resource and the same values Stats returns, and
//! that the server spans of one push arrive with one trace id across the
//! three processes. Skipped, with a message, when rotel is not installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trailhound_proto::common::v1::{ServiceStats, StatsRequest};
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;

use crate::harness::{Service, free_port, run_ok, trailhound_bin, wait_ready};

/// rotel's binary: `TRAILHOUND_ROTEL`, else the link scripts/test-tools.sh
/// makes in .cache/venv/bin, else the binary inside the installed wheel.
fn rotel() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TRAILHOUND_ROTEL") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv");
    let bin = venv.join("bin/rotel");
    if bin.exists() {
        return Some(bin);
    }
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
        .find(|p| p.exists())
}

/// A rotel collector printing what it receives; killed on drop.
struct Rotel {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    grpc_port: u16,
}

impl Rotel {
    async fn start(bin: &Path, dir: &Path) -> Rotel {
        let (grpc_port, http_port) = (free_port(), free_port());
        let out = dir.join("rotel.out");
        let err = dir.join("rotel.err");
        let child = Command::new(bin)
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            // Received data goes nowhere but the debug log on stdout.
            .args(["--exporter", "blackhole"])
            .args(["--debug-log", "traces", "--debug-log", "metrics"])
            .args(["--debug-log-verbosity", "detailed"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("rotel stdout file"))
            .stderr(std::fs::File::create(&err).expect("rotel stderr file"))
            .spawn()
            .expect("start rotel");
        let mut r = Rotel {
            child,
            out,
            err,
            grpc_port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("rotel exited with {status}:\n{}", r.logs());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", grpc_port))
                .await
                .is_ok()
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "rotel not listening after 30s:\n{}",
                r.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    fn received(&self) -> Received {
        Received::parse(&std::fs::read_to_string(&self.out).unwrap_or_default())
    }

    fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(60).collect();
        format!(
            "--- rotel stderr ---\n{}\n--- rotel stdout (last 60 lines) ---\n{}",
            std::fs::read_to_string(&self.err).unwrap_or_default(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One metric data point as rotel printed it.
#[derive(Clone, Debug, Default)]
struct Point {
    /// `service.name` of the resource it came with.
    resource: String,
    name: String,
    unit: String,
    data_type: String,
    attrs: BTreeMap<String, String>,
    value: f64,
}

/// One span as rotel printed it.
#[derive(Clone, Debug, Default)]
struct Span {
    resource: String,
    trace_id: String,
    parent_id: String,
    name: String,
    kind: String,
    attrs: BTreeMap<String, String>,
}

/// Everything rotel printed so far, in arrival order.
#[derive(Debug, Default)]
struct Received {
    points: Vec<Point>,
    spans: Vec<Span>,
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Other,
    ResourceAttrs,
    Descriptor,
    PointAttrs,
    SpanHeader,
    SpanAttrs,
}

/// `-> key: value` as (key, value), the value as printed.
fn attribute(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix("->")?;
    let (key, value) = rest.split_once(':')?;
    Some((key.trim().to_string(), value.trim().to_string()))
}

/// An attribute value as printed, `Str(ingest)` or `Int(3)`, without its
/// type.
fn untyped(value: String) -> String {
    match value.split_once('(') {
        Some((_, v)) if v.ends_with(')') => v[..v.len() - 1].to_string(),
        _ => value,
    }
}

impl Received {
    /// Parses rotel's detailed debug log (the OpenTelemetry Collector's
    /// debug exporter format); rotel's own log lines are skipped.
    fn parse(text: &str) -> Received {
        let mut r = Received::default();
        let mut section = Section::Other;
        let mut resource = BTreeMap::new();
        let mut metric = Point::default();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with("ResourceMetrics #") || t.starts_with("ResourceSpans #") {
                resource.clear();
                section = Section::Other;
            } else if t == "Resource attributes:" {
                section = Section::ResourceAttrs;
            } else if t.starts_with("Metric #") {
                let service = resource.get("service.name").cloned().unwrap_or_default();
                metric = Point {
                    resource: service,
                    ..Default::default()
                };
                section = Section::Descriptor;
            } else if t.starts_with("NumberDataPoints #") || t.starts_with("HistogramDataPoints #")
            {
                r.points.push(metric.clone());
                section = Section::PointAttrs;
            } else if let Some(v) = t.strip_prefix("Value: ") {
                if let Some(p) = r.points.last_mut() {
                    p.value = v.trim().parse().unwrap_or(f64::NAN);
                }
            } else if let Some(v) = t.strip_prefix("Count: ") {
                // A histogram point's value here is its count.
                if let Some(p) = r.points.last_mut() {
                    p.value = v.trim().parse().unwrap_or(f64::NAN);
                }
            } else if t.starts_with("Span #") {
                r.spans.push(Span {
                    resource: resource.get("service.name").cloned().unwrap_or_default(),
                    ..Default::default()
                });
                section = Section::SpanHeader;
            } else if t == "Attributes:" && section == Section::SpanHeader {
                section = Section::SpanAttrs;
            } else if t.starts_with("Events:") || t.starts_with("Links:") {
                section = Section::Other;
            } else if let Some((k, v)) = attribute(line) {
                match section {
                    Section::ResourceAttrs => {
                        resource.insert(k, untyped(v));
                    }
                    Section::Descriptor => match k.as_str() {
                        "Name" => metric.name = v,
                        "Unit" => metric.unit = v,
                        "DataType" => metric.data_type = v,
                        _ => {}
                    },
                    Section::PointAttrs => {
                        if let Some(p) = r.points.last_mut() {
                            p.attrs.insert(k, untyped(v));
                        }
                    }
                    Section::SpanAttrs => {
                        if let Some(s) = r.spans.last_mut() {
                            s.attrs.insert(k, untyped(v));
                        }
                    }
                    _ => {}
                }
            } else if section == Section::SpanHeader
                && let (Some((k, v)), Some(s)) = (t.split_once(':'), r.spans.last_mut())
            {
                let v = v.trim().to_string();
                match k.trim() {
                    "Trace ID" => s.trace_id = v,
                    "Parent ID" => s.parent_id = v,
                    "Name" => s.name = v,
                    "Kind" => s.kind = v,
                    _ => {}
                }
            }
        }
        r
    }

    /// The latest point of `name` from `resource` whose attributes
    /// include `attrs`.
    fn latest(&self, resource: &str, name: &str, attrs: &[(&str, &str)]) -> Option<&Point> {
        self.points.iter().rev().find(|p| {
            p.resource == resource
                && p.name == name
                && attrs
                    .iter()
                    .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        })
    }

    fn services(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.points.iter().map(|p| p.resource.as_str()).collect();
        s.sort();
        s.dedup();
        s
    }
}

/// Starts `trailhound <args>` exporting OTLP to `endpoint`, quickly.
fn start_exporting(name: &str, data_dir: &Path, endpoint: &str, args: &[&str]) -> Service {
    let args = [&["--otlp-endpoint", endpoint], args].concat();
    Service::start_with(name, data_dir, &args, |c| {
        c.env("OTEL_METRIC_EXPORT_INTERVAL", "500")
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    })
}

/// rotel collecting in `dir`; none, after saying the test is skipped, when
/// rotel is not installed.
async fn collector(dir: &Path) -> Option<Rotel> {
    let Some(bin) = rotel() else {
        eprintln!(
            "skipped: rotel is not installed (scripts/test-tools.sh installs it into .cache/venv; or set TRAILHOUND_ROTEL)"
        );
        return None;
    };
    Some(Rotel::start(&bin, dir).await)
}

fn record(i: u32) -> String {
    format!(
        r#"{{"eventVersion":"1.09","eventID":"0f0e0d0c-0000-4000-8000-{i:012}","eventTime":"2026-03-01T10:{:02}:00Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"us-east-1","recipientAccountId":"111122223333"}}"#,
        i % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_export_stats_metrics_and_traces_to_a_real_otlp_collector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(rotel) = collector(dir.path()).await else {
        return;
    };
    let otlp = rotel.endpoint();

    let (ip, ep, dp) = (free_port(), free_port(), free_port());
    let mut detect = start_exporting(
        "detect",
        &dir.path().join("detect"),
        &otlp,
        &["detect", "--detect-listen", &format!("127.0.0.1:{dp}")],
    );
    let mut enrich = start_exporting(
        "enrich",
        &dir.path().join("enrich"),
        &otlp,
        &[
            "enrich",
            "--enrich-listen",
            &format!("127.0.0.1:{ep}"),
            "--detect-endpoint",
            &format!("http://127.0.0.1:{dp}"),
        ],
    );
    let mut ingest = start_exporting(
        "ingest",
        &dir.path().join("ingest"),
        &otlp,
        &[
            "ingest",
            "--ingest-listen",
            &format!("127.0.0.1:{ip}"),
            "--enrich-endpoint",
            &format!("http://127.0.0.1:{ep}"),
        ],
    );
    wait_ready(&mut detect, dp).await;
    wait_ready(&mut enrich, ep).await;
    wait_ready(&mut ingest, ip).await;
    let logs = |rotel: &Rotel| {
        format!(
            "{}\n--- ingest ---\n{}\n--- enrich ---\n{}\n--- detect ---\n{}",
            rotel.logs(),
            ingest.logs(),
            enrich.logs(),
            detect.logs()
        )
    };

    // Traffic: 20 good records, one malformed (an error and a dead
    // letter), one duplicate.
    let mut records: Vec<String> = (1..=20).map(record).collect();
    records.push("{\"eventID\": truncated".into());
    records.push(record(1));
    let mut client = IngestServiceClient::connect(format!("http://127.0.0.1:{ip}"))
        .await
        .expect("connect ingest");
    let pushed = client
        .push_events(tokio_stream::iter(records.into_iter().map(|json| {
            PushEventsRequest {
                json,
                source: "otlp-test".into(),
            }
        })))
        .await
        .unwrap_or_else(|e| panic!("push failed: {e}\n{}", logs(&rotel)))
        .into_inner();
    assert_eq!((pushed.accepted, pushed.rejected), (20, 1));
    // A Prometheus scrape shares the port: plain HTTP, traced as such.
    let scrape = reqwest::get(format!("http://127.0.0.1:{ip}/metrics"))
        .await
        .expect("scrape /metrics");
    assert!(scrape.status().is_success(), "{scrape:?}");
    let is_scrape = |s: &Span| {
        s.resource == "trailhound-ingest"
            && s.attrs.get("url.path").map(String::as_str) == Some("/metrics")
    };

    // Wait until rotel holds an export of ingest taken after the traffic
    // settled (its counters equal what Stats says now) and the server
    // spans of all three hops.
    let hops = [
        (
            "trailhound-ingest",
            "trailhound.ingest.v1.IngestService/PushEvents",
        ),
        (
            "trailhound-enrich",
            "trailhound.enrich.v1.EnrichService/Process",
        ),
        (
            "trailhound-detect",
            "trailhound.detect.v1.DetectService/Observe",
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let (stats, got): (ServiceStats, Received) = loop {
        let stats = client
            .stats(StatsRequest {})
            .await
            .expect("ingest Stats")
            .into_inner();
        let got = rotel.received();
        let counter = |name| {
            got.latest("trailhound-ingest", name, &[("service", "ingest")])
                .map(|p| p.value)
        };
        let settled = counter("trailhound.events.in") == Some(stats.events_in as f64)
            && counter("trailhound.events.out") == Some(stats.events_out as f64)
            && stats.events_out >= 20;
        let spans = hops.iter().all(|(svc, name)| {
            got.spans
                .iter()
                .any(|s| s.resource == *svc && s.name == *name)
        }) && got.spans.iter().any(is_scrape);
        // Every process exports on its own clock: wait for enrich's and
        // detect's counters to have caught up with the push too.
        let all_services = [
            "trailhound-ingest",
            "trailhound-enrich",
            "trailhound-detect",
        ]
        .iter()
        .all(|s| got.services().contains(s))
            && [
                ("trailhound-enrich", "enrich"),
                ("trailhound-detect", "detect"),
            ]
            .iter()
            .all(|(svc, label)| {
                got.latest(svc, "trailhound.events.in", &[("service", label)])
                    .is_some_and(|p| p.value >= 20.0)
            });
        if settled && spans && all_services {
            break (stats, got);
        }
        assert!(
            Instant::now() < deadline,
            "rotel did not receive the expected metrics and spans in 60s (settled {settled}, spans {spans}, services {:?}); Stats: {stats:?}\n{}",
            got.services(),
            logs(&rotel)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Metrics: the figures of Stats under their OpenTelemetry names, each
    // from the ingest process (resource service.name) and labelled with
    // the service (data point `service`).
    let ingest_point = |name: &str, attrs: &[(&str, &str)]| -> Point {
        let mut all = vec![("service", "ingest")];
        all.extend_from_slice(attrs);
        got.latest("trailhound-ingest", name, &all)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "rotel got no {name} {attrs:?} from trailhound-ingest; it got {:?}",
                    got.points
                        .iter()
                        .filter(|p| p.resource == "trailhound-ingest")
                        .map(|p| (&p.name, &p.attrs))
                        .collect::<std::collections::BTreeSet<_>>()
                )
            })
    };
    let counter = |name: &str, attrs: &[(&str, &str)], unit: &str| -> f64 {
        let p = ingest_point(name, attrs);
        assert_eq!(p.data_type, "Sum", "{name} is a counter: {p:?}");
        assert_eq!(p.unit, unit, "{p:?}");
        p.value
    };
    let gauge = |name: &str, attrs: &[(&str, &str)], unit: &str| -> f64 {
        let p = ingest_point(name, attrs);
        assert_eq!(p.data_type, "Gauge", "{name} is a gauge: {p:?}");
        assert_eq!(p.unit, unit, "{p:?}");
        p.value
    };
    assert_eq!(
        counter("trailhound.events.in", &[], "{event}"),
        stats.events_in as f64
    );
    assert_eq!(
        counter("trailhound.events.out", &[], "{event}"),
        stats.events_out as f64
    );
    // A malformed record is bad input, counted apart from ingest's errors.
    let rejected: u64 = stats.input_rejected.values().sum();
    assert_eq!(rejected, 1, "{stats:?}");
    assert!(!stats.errors.contains_key("rejected"), "{stats:?}");
    assert_eq!(
        counter("trailhound.input.rejected", &[], "{record}"),
        rejected as f64
    );
    assert_eq!(
        counter("trailhound.dead_letters", &[], "{record}"),
        stats.dead_letters as f64
    );
    let batches = stats.batch_latency.map_or(0, |l| l.count);
    assert!(batches > 0, "{stats:?}");
    assert_eq!(
        counter("trailhound.batch.count", &[], "{batch}"),
        batches as f64
    );
    assert!(gauge("process.uptime", &[], "s") > 0.0);
    assert!(gauge("trailhound.pipeline.lag", &[], "s") >= 0.0);
    for q in ["0.5", "0.95", "0.99"] {
        assert!(gauge("trailhound.batch.duration", &[("quantile", q)], "s") > 0.0);
    }
    for q in &stats.queues {
        assert_eq!(
            gauge("trailhound.queue.depth", &[("queue", &q.name)], "{item}"),
            q.depth as f64,
            "{q:?}"
        );
    }
    assert!(gauge("trailhound.events.in.rate", &[], "{event}/s") >= 0.0);
    assert_eq!(
        gauge("trailhound.duplicates", &[], ""),
        stats.gauges.get("duplicates").copied().unwrap_or(-1.0)
    );
    // Every call is timed as the RPC semantic conventions say: a
    // histogram per method and status, here the one push ingest answered.
    let duration = got
        .latest(
            "trailhound-ingest",
            "rpc.server.duration",
            &[
                ("rpc.system", "grpc"),
                ("rpc.service", "trailhound.ingest.v1.IngestService"),
                ("rpc.method", "PushEvents"),
                ("rpc.grpc.status_code", "0"),
            ],
        )
        .unwrap_or_else(|| panic!("no rpc.server.duration for PushEvents\n{}", logs(&rotel)));
    assert_eq!(duration.data_type, "Histogram", "{duration:?}");
    assert_eq!(duration.unit, "ms", "{duration:?}");
    assert_eq!(duration.value, 1.0, "one push: {duration:?}");
    // The other processes export under their own service.name.
    for (svc, label) in [
        ("trailhound-enrich", "enrich"),
        ("trailhound-detect", "detect"),
    ] {
        let p = got
            .latest(svc, "trailhound.events.in", &[("service", label)])
            .unwrap_or_else(|| panic!("no trailhound.events.in from {svc}"));
        assert!(p.value >= 20.0, "{p:?}");
        assert!(got.latest(svc, "process.uptime", &[]).is_some());
    }

    // Traces: the server spans of the push, one per process, in one
    // trace, each a child of the previous hop, with the RPC semantic
    // convention attributes.
    let span = |svc: &str, name: &str| -> &Span {
        got.spans
            .iter()
            .find(|s| s.resource == svc && s.name == name)
            .unwrap_or_else(|| panic!("no span {name} from {svc}"))
    };
    let first = span(hops[0].0, hops[0].1);
    for (svc, name) in hops {
        let s = span(svc, name);
        assert_eq!(s.kind, "SPAN_KIND_SERVER", "{s:?}");
        let (service, method) = name.split_once('/').expect("service/method");
        assert_eq!(s.attrs.get("rpc.system").map(String::as_str), Some("grpc"));
        assert_eq!(
            s.attrs.get("rpc.service").map(String::as_str),
            Some(service)
        );
        assert_eq!(s.attrs.get("rpc.method").map(String::as_str), Some(method));
    }
    let scrape = got
        .spans
        .iter()
        .find(|s| is_scrape(s))
        .expect("scrape span");
    assert_eq!(scrape.name, "GET", "{scrape:?}");
    assert_eq!(scrape.kind, "SPAN_KIND_SERVER", "{scrape:?}");
    assert_eq!(
        scrape.attrs.get("http.request.method").map(String::as_str),
        Some("GET")
    );
    assert!(!scrape.attrs.contains_key("rpc.system"), "{scrape:?}");
    for (svc, name) in &hops[1..] {
        let s = got
            .spans
            .iter()
            .find(|s| s.resource == *svc && s.name == *name && s.trace_id == first.trace_id)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span from {svc} in trace {}: {:?}",
                    first.trace_id,
                    got.spans
                        .iter()
                        .map(|s| (&s.resource, &s.name, &s.trace_id))
                        .collect::<Vec<_>>()
                )
            });
        assert!(!s.parent_id.is_empty(), "{s:?} is a root span");
    }
}

/// The spans of the pipeline's own work: the push ingest serves, each hop's
/// logic (enrich's Process, detect's Accept and Forward, insights'
/// Analyze), by name, with how many there were and how many events or
/// anomalies they carried. The gRPC spans of the hops themselves are left
/// out: under `up` those hops are calls, not requests.
fn pipeline_work(got: &Received, resource: impl Fn(&str) -> bool) -> BTreeMap<String, (u64, u64)> {
    const WORK: [&str; 5] = [
        "trailhound.ingest.v1.IngestService/PushEvents",
        "trailhound.enrich/Process",
        "trailhound.detect/Accept",
        "trailhound.detect/Forward",
        "trailhound.insights/Analyze",
    ];
    let mut out = BTreeMap::new();
    for s in got
        .spans
        .iter()
        .filter(|s| resource(&s.resource) && WORK.contains(&s.name.as_str()))
    {
        let carried = ["events", "anomalies"]
            .iter()
            .find_map(|k| s.attrs.get(*k))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let e: &mut (u64, u64) = out.entry(s.name.clone()).or_default();
        e.0 += 1;
        e.1 += carried;
    }
    out
}

/// Pushes a trail with `trailhound push` and flushes detect.
async fn push_and_flush(ingest: u16, detect: u16, trail: &Path) {
    run_ok(
        Command::new(trailhound_bin())
            .args(["push", "--ingest"])
            .arg(format!("http://127.0.0.1:{ingest}"))
            .arg("--input")
            .arg(trail),
        "push",
    );
    use trailhound_proto::detect::v1::FlushRequest;
    use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
    DetectServiceClient::connect(format!("http://127.0.0.1:{detect}"))
        .await
        .expect("connect detect")
        .flush(FlushRequest {})
        .await
        .expect("flush");
}

/// Waits until what rotel holds of `resource`'s pipeline work has stopped
/// changing (and holds every kind of it); that work.
async fn settled_work(
    rotel: &Rotel,
    resource: impl Fn(&str) -> bool + Copy,
) -> BTreeMap<String, (u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = BTreeMap::new();
    let mut same = 0;
    loop {
        let now = pipeline_work(&rotel.received(), resource);
        same = if now == last { same + 1 } else { 0 };
        if now.len() == 5 && same >= 8 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "spans did not settle in 60s: {now:?}\n{}",
            rotel.logs()
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One truth on every path, in traces too: the same trail pushed to
/// `trailhound up` and to ingest, enrich, detect and insights as separate
/// processes makes the same pipeline spans, as many, carrying as many
/// events and anomalies — `up` runs the services' own hops, traced where
/// the work is, not copies of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_and_the_separate_services_trace_the_same_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(rotel) = collector(dir.path()).await else {
        return;
    };
    let otlp = rotel.endpoint();
    let org = dir.path().join("org");
    crate::harness::generated_org(&org, 2, 3, 23, 8);
    let org_json = org.join("org.json").display().to_string();

    // trailhound up.
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let mut args: Vec<String> = vec!["up".into(), "--org".into(), org_json.clone()];
    for (s, p) in ["ingest", "enrich", "detect", "insights", "notify", "health"]
        .iter()
        .zip(&ports)
    {
        args.push(format!("--{s}-port"));
        args.push(p.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut up = start_exporting("up", &dir.path().join("up"), &otlp, &args);
    wait_ready(&mut up, ports[2]).await;
    wait_ready(&mut up, ports[0]).await;
    push_and_flush(ports[0], ports[2], &org.join("trail")).await;
    let through_up = settled_work(&rotel, |r| r == "trailhound").await;
    up.stop();

    // The same services as separate processes.
    let (ip, ep, dp, sp) = (free_port(), free_port(), free_port(), free_port());
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let d = |n: &str| dir.path().join(n);
    let mut insights = start_exporting(
        "insights",
        &d("insights"),
        &otlp,
        &["insights", "--insights-listen", &listen(sp)],
    );
    let mut detect = start_exporting(
        "detect",
        &d("detect"),
        &otlp,
        &[
            "detect",
            "--detect-listen",
            &listen(dp),
            "--insights-endpoint",
            &url(sp),
        ],
    );
    let mut enrich = start_exporting(
        "enrich",
        &d("enrich"),
        &otlp,
        &[
            "enrich",
            "--enrich-listen",
            &listen(ep),
            "--detect-endpoint",
            &url(dp),
            "--org",
            &org_json,
        ],
    );
    let mut ingest = start_exporting(
        "ingest",
        &d("ingest"),
        &otlp,
        &[
            "ingest",
            "--ingest-listen",
            &listen(ip),
            "--enrich-endpoint",
            &url(ep),
        ],
    );
    wait_ready(&mut insights, sp).await;
    wait_ready(&mut detect, dp).await;
    wait_ready(&mut enrich, ep).await;
    wait_ready(&mut ingest, ip).await;
    push_and_flush(ip, dp, &org.join("trail")).await;
    let separate = settled_work(&rotel, |r| r.starts_with("trailhound-")).await;

    assert!(
        through_up
            .get("trailhound.detect/Forward")
            .is_some_and(|(n, anomalies)| *n > 0 && *anomalies > 0),
        "the trail has anomalies to forward: {through_up:?}"
    );
    assert_eq!(
        through_up,
        separate,
        "pipeline spans (count, events or anomalies) of up (left) and of the services (right)\n--- up ---\n{}\n--- detect ---\n{}",
        up.logs(),
        detect.logs()
    );
}
