//! One trace id crosses ingest → enrich → detect over real gRPC hops: the
//! three servers run in this process (so an in-memory exporter can see
//! every span) but talk through loopback gRPC with W3C trace context in
//! the metadata, exactly as separate deployments do. A second test follows
//! a burst on through insights (AnalyzeBatch from detect) and notify
//! (WatchInsights, where the traceparent travels in each message).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::trace::InMemorySpanExporter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use trailhound_runtime::telemetry::{TelemetryOptions, init_with_exporter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_crosses_every_service() {
    let exporter = InMemorySpanExporter::default();
    let guard = init_with_exporter(
        &TelemetryOptions {
            log_filter: "info".into(),
            ..Default::default()
        },
        Some(exporter.clone()),
    )
    .expect("telemetry");
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = CancellationToken::new();

    let ingest_addr = start_pipeline(
        dir.path(),
        trailhound_enrich::EnrichConfig::default(),
        None,
        &stop,
    )
    .await;

    let record = r#"{"eventVersion":"1.09","eventID":"0f0e0d0c-0000-4000-8000-000000000001","eventTime":"2026-03-01T10:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"us-east-1","recipientAccountId":"111122223333"}"#;
    let mut client = IngestServiceClient::connect(format!("http://{ingest_addr}"))
        .await
        .expect("connect");
    let resp = client
        .push_events(tokio_stream::iter(vec![PushEventsRequest {
            json: record.into(),
            source: "trace-test".into(),
        }]))
        .await
        .expect("push")
        .into_inner();
    assert_eq!(resp.accepted, 1);
    // Server spans close when their response has been sent, which can be
    // just after the client sees it: flush until all three have arrived.
    let names = [
        "trailhound.ingest.v1.IngestService/PushEvents",
        "trailhound.enrich.v1.EnrichService/Process",
        "trailhound.detect.v1.DetectService/Observe",
    ];
    let mut spans = Vec::new();
    for _ in 0..50 {
        guard.flush();
        spans = exporter.get_finished_spans().expect("spans");
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name}; have {:?}",
                spans.iter().map(|s| s.name.to_string()).collect::<Vec<_>>()
            )
        })
    };
    let ingest_span = find("trailhound.ingest.v1.IngestService/PushEvents");
    let enrich_span = find("trailhound.enrich.v1.EnrichService/Process");
    let detect_span = find("trailhound.detect.v1.DetectService/Observe");
    let trace = ingest_span.span_context.trace_id();
    assert_eq!(enrich_span.span_context.trace_id(), trace);
    assert_eq!(detect_span.span_context.trace_id(), trace);
    // Each hop is a child of the previous service's work, not a new root.
    assert_ne!(
        enrich_span.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
    assert_ne!(
        detect_span.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
    one_trace_follows_a_burst_from_ingest_to_notify(&exporter, &guard).await;
    batched_hops_link_every_contributing_trace(&exporter, &guard).await;
}

/// The second half of the test above (telemetry is process-global, so
/// both share one exporter): a burst from ingest to notify in one trace.
async fn one_trace_follows_a_burst_from_ingest_to_notify(
    exporter: &InMemorySpanExporter,
    guard: &trailhound_runtime::telemetry::TelemetryGuard,
) {
    exporter.reset();
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = CancellationToken::new();

    // insights, served; notify following it over gRPC with its log channel.
    let insights = trailhound_insights::build(
        &trailhound_insights::InsightsConfig::default(),
        &dir.path().join("insights"),
    )
    .expect("insights");
    let l_insights = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let insights_addr = l_insights.local_addr().expect("addr");
    tokio::spawn(trailhound_insights::serve(
        l_insights,
        insights,
        stop.clone(),
    ));
    let notify_dir = dir.path().join("notify");
    std::fs::create_dir_all(&notify_dir).expect("dir");
    let notifier =
        trailhound_notify::build(&trailhound_notify::NotifyConfig::default(), &notify_dir)
            .expect("notify");
    tokio::spawn(trailhound_notify::follow_grpc(
        notifier.clone(),
        format!("http://{insights_addr}"),
        stop.clone(),
    ));

    let sink = Arc::new(
        trailhound_detect::insights_sink::GrpcInsightsSink::new(&format!("http://{insights_addr}"))
            .expect("sink"),
    );
    let org_dir = dir.path().join("org");
    let labels = crate::harness::generated_org(&org_dir, 3, 1, 5, 10);
    let enrich_cfg = trailhound_enrich::EnrichConfig {
        org_snapshot: Some(org_dir.join("org.json")),
        ..Default::default()
    };
    let ingest_addr = start_pipeline(dir.path(), enrich_cfg, Some(sink), &stop).await;

    // The whole trail in one PushEvents call: one trace. Windows close as
    // later events arrive, so the burst's anomaly is made inside it.
    let records = crate::harness::trail_records(&org_dir.join("trail"));
    let mut client = IngestServiceClient::connect(format!("http://{ingest_addr}"))
        .await
        .expect("connect");
    client
        .push_events(tokio_stream::iter(records.into_iter().map(|json| {
            PushEventsRequest {
                json,
                source: "trace-test".into(),
            }
        })))
        .await
        .expect("push");
    let burst = crate::harness::cryptomining(&labels);

    let mut spans = Vec::new();
    let mut delivered = false;
    for _ in 0..100 {
        guard.flush();
        spans = exporter.get_finished_spans().expect("spans");
        delivered = spans.iter().any(|s| s.name == "trailhound.notify/Deliver");
        if delivered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let names: Vec<String> = spans.iter().map(|s| s.name.to_string()).collect();
    assert!(delivered, "notify delivered nothing in a trace: {names:?}");
    let ingest_span = spans
        .iter()
        .find(|s| s.name == "trailhound.ingest.v1.IngestService/PushEvents")
        .expect("ingest span");
    let trace = ingest_span.span_context.trace_id();
    let in_trace = |name: &str| {
        spans
            .iter()
            .filter(|s| s.name == name && s.span_context.trace_id() == trace)
            .count()
    };
    for hop in [
        "trailhound.enrich.v1.EnrichService/Process",
        "trailhound.detect.v1.DetectService/Observe",
        "trailhound.insights.v1.InsightsService/AnalyzeBatch",
        "trailhound.notify/Deliver",
    ] {
        assert!(
            in_trace(hop) > 0,
            "no {hop} span in the push's trace: {names:?}"
        );
    }
    // The delivery that joined the trace is the burst's.
    let deliver = spans
        .iter()
        .filter(|s| s.name == "trailhound.notify/Deliver" && s.span_context.trace_id() == trace)
        .flat_map(|s| s.attributes.iter())
        .any(|kv| {
            kv.key.as_str() == "incident_id" && kv.value.as_str().contains(&burst.account_id)
        });
    assert!(
        deliver,
        "no delivery span names the burst's account {}",
        burst.account_id
    );
}

/// The third part: a trail pushed in several calls is several traces. An
/// anomaly is handed on inside the trace of the batch that closed its
/// window; the other traces whose events filled that window are linked.
async fn batched_hops_link_every_contributing_trace(
    exporter: &InMemorySpanExporter,
    guard: &trailhound_runtime::telemetry::TelemetryGuard,
) {
    exporter.reset();
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = CancellationToken::new();
    let org_dir = dir.path().join("org");
    // Four days: an entity's rhythm is judged once it has three.
    crate::harness::generated_org(&org_dir, 4, 1, 5, 10);
    let enrich_cfg = trailhound_enrich::EnrichConfig {
        org_snapshot: Some(org_dir.join("org.json")),
        ..Default::default()
    };
    let ingest_addr = start_pipeline(dir.path(), enrich_cfg, None, &stop).await;
    let records = crate::harness::trail_records(&org_dir.join("trail"));
    let mut client = IngestServiceClient::connect(format!("http://{ingest_addr}"))
        .await
        .expect("connect");
    let calls = 12;
    for chunk in records.chunks(records.len() / calls + 1) {
        client
            .push_events(tokio_stream::iter(
                chunk
                    .iter()
                    .map(|json| PushEventsRequest {
                        json: json.clone(),
                        source: "trace-test".into(),
                    })
                    .collect::<Vec<_>>(),
            ))
            .await
            .expect("push");
    }
    guard.flush();
    let mut spans = exporter.get_finished_spans().expect("spans");
    for _ in 0..50 {
        if spans
            .iter()
            .filter(|s| s.name == "trailhound.ingest.v1.IngestService/PushEvents")
            .count()
            >= calls
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        guard.flush();
        spans = exporter.get_finished_spans().expect("spans");
    }
    stop.cancel();
    let pushes: std::collections::HashSet<_> = spans
        .iter()
        .filter(|s| s.name == "trailhound.ingest.v1.IngestService/PushEvents")
        .map(|s| s.span_context.trace_id())
        .collect();
    assert!(
        pushes.len() >= calls,
        "one trace per push: {}",
        pushes.len()
    );
    let forwards: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "trailhound.detect/Forward")
        .collect();
    assert!(!forwards.is_empty(), "the trail raised no anomaly");
    let mut linked = 0;
    for f in &forwards {
        let own = f.span_context.trace_id();
        assert!(pushes.contains(&own), "Forward runs in a push's trace");
        for l in f.links.iter() {
            let t = l.span_context.trace_id();
            assert_ne!(t, own, "the closing trace is the parent, not a link");
            assert!(pushes.contains(&t), "links point at pushes' traces");
            linked += 1;
        }
    }
    assert!(
        linked > 0,
        "no anomaly window was linked to the other traces that filled it"
    );
}

/// Serves detect (forwarding to `insights` when given), enrich and ingest
/// on loopback, wired to each other over gRPC; returns ingest's address.
async fn start_pipeline(
    dir: &std::path::Path,
    enrich_cfg: trailhound_enrich::EnrichConfig,
    insights: Option<Arc<trailhound_detect::insights_sink::GrpcInsightsSink>>,
    stop: &CancellationToken,
) -> std::net::SocketAddr {
    let detect_cfg = trailhound_detect::DetectConfig::default();
    let detect = trailhound_detect::build(
        &detect_cfg,
        &dir.join("detect"),
        insights.map(|s| s as Arc<dyn trailhound_core::pipeline::AnomalySink>),
    )
    .expect("detect");
    let l_detect = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let detect_addr = l_detect.local_addr().expect("addr");
    let s = stop.clone();
    tokio::spawn(async move { trailhound_detect::serve(l_detect, detect, &detect_cfg, s).await });

    let enricher =
        trailhound_enrich::build_enricher(&enrich_cfg, &dir.join("enrich")).expect("enrich");
    let to_detect = Arc::new(
        trailhound_enrich::grpc::GrpcDetectSink::new(
            &format!("http://{detect_addr}"),
            Duration::from_secs(5),
        )
        .expect("sink"),
    );
    let l_enrich = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let enrich_addr = l_enrich.local_addr().expect("addr");
    tokio::spawn(trailhound_enrich::serve(
        l_enrich,
        enricher,
        to_detect,
        stop.clone(),
    ));

    let to_enrich = Arc::new(
        trailhound_ingest::grpc::GrpcEnrichSink::new(&format!("http://{enrich_addr}"))
            .expect("sink"),
    );
    let ingest = trailhound_ingest::build(
        &trailhound_ingest::IngestConfig::default(),
        &dir.join("ingest"),
        to_enrich,
    )
    .expect("ingest");
    let l_ingest = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ingest_addr = l_ingest.local_addr().expect("addr");
    tokio::spawn(trailhound_ingest::serve(
        l_ingest,
        ingest,
        100,
        stop.clone(),
    ));
    ingest_addr
}
