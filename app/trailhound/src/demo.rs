//! `trailhound demo`: the first thing a newcomer runs. Generates a small
//! organization with injected incidents, starts all six services on free
//! ports, replays the trail through ingest's gRPC PushEvents like any
//! client would, and prints what detect found next to what was injected.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use trailhound_core::convert::{anomaly_from_pb, insight_from_pb};
use trailhound_core::{Anomaly, Insight};
use trailhound_proto::detect::v1::FlushRequest;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::insights::v1::insights_service_client::InsightsServiceClient;
use trailhound_proto::insights::v1::{AskRequest, ListInsightsRequest};
use trailhound_proto::notify::v1::ListDeliveriesRequest;
use trailhound_proto::notify::v1::notify_service_client::NotifyServiceClient;
use trailhound_runtime::CommonArgs;

#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to write the generated organization and the services' data.
    #[arg(long, default_value = "trailhound-demo")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub days: u32,
    #[arg(long, default_value_t = 8)]
    pub accounts: u32,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Keep the six services running after the report, until Ctrl-C, to
    /// explore what they found: the health dashboard, grpcurl, `trailhound
    /// ask`.
    #[arg(long)]
    pub keep_running: bool,
}

pub async fn run(
    common: &CommonArgs,
    args: &DemoArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .map_err(|e| anyhow::anyhow!("failed to clear {}: {e}", args.out.display()))?;
    }
    let gen_cfg = trailhound_generate::GenerateConfig {
        days: args.days,
        accounts: args.accounts,
        seed: args.seed,
        noise_per_account_hour: 20,
        ..Default::default()
    };
    let out = args.out.clone();
    let summary =
        tokio::task::spawn_blocking(move || trailhound_generate::generate(&gen_cfg, &out))
            .await??;
    println!(
        "generated {} accounts, {} days: {} CloudTrail events in {} files, {} injected incidents ({:.1}s)",
        summary.accounts,
        args.days,
        summary.events,
        summary.files,
        summary.incidents,
        started.elapsed().as_secs_f64()
    );

    let mut common = common.clone();
    common.data_dir = args.out.join("data");
    let up_args = crate::up::UpArgs {
        host: "127.0.0.1".into(),
        ingest_port: 0,
        enrich_port: 0,
        detect_port: 0,
        insights_port: 0,
        notify_port: 0,
        health_port: 0,
        org: Some(args.out.join("org.json")),
        read: vec![],
    };
    let services = shutdown.child_token();
    let (running, mut tasks) = crate::up::start(&common, &up_args, services.clone()).await?;
    println!(
        "started ingest, enrich, detect, insights, notify, health on {}",
        running
            .addrs
            .iter()
            .map(|(n, a)| format!("{n}={}", a.port()))
            .collect::<Vec<_>>()
            .join(" ")
    );

    let ingest_addr = format!("http://{}", running.addrs["ingest"]);
    let detect_addr = format!("http://{}", running.addrs["detect"]);
    let mut detect = DetectServiceClient::connect(detect_addr.clone())
        .await?
        .max_decoding_message_size(64 << 20);

    // Push the trail as any shipper would: its files in delivery order.
    let push_started = Instant::now();
    let pushed = crate::push::run(&crate::push::PushArgs {
        input: args.out.join("trail"),
        ingest: ingest_addr,
        flush_detect: None,
        max_document_bytes: trailhound_core::ParseLimits::default().max_document_bytes,
        client: Default::default(),
    })
    .await?;
    if !pushed.failed_files.is_empty() {
        eprint!("{}", pushed.report());
    }
    let flushed = detect.flush(FlushRequest {}).await?.into_inner();
    let push_secs = push_started.elapsed().as_secs_f64();
    println!(
        "pushed the trail through ingest over gRPC: {} accepted, {} rejected, {} duplicates in {:.1}s ({:.0} events/s); flushed {} final windows",
        pushed.accepted,
        pushed.rejected,
        pushed.duplicates,
        push_secs,
        pushed.accepted as f64 / push_secs.max(1e-9),
        flushed.anomalies.len()
    );

    let anomalies: Vec<Anomaly> = trailhound_detect::grpc::all_anomalies(&mut detect)
        .await?
        .into_iter()
        .map(|a| {
            anomaly_from_pb(a).map_err(|e| anyhow::anyhow!("detect returned a bad anomaly: {e}"))
        })
        .collect::<Result<_, _>>()?;

    // Every anomaly was explained by insights as detect found it; notify
    // follows insights' stream and alerts once per incident.
    let insights_addr = format!("http://{}", running.addrs["insights"]);
    let mut insights = InsightsServiceClient::connect(insights_addr.clone())
        .await?
        .max_decoding_message_size(64 << 20);
    let mut explained: Vec<Insight> = Vec::new();
    let mut token = String::new();
    loop {
        let page = insights
            .list_insights(ListInsightsRequest {
                page_size: 1000,
                page_token: token.clone(),
                include_suppressed: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        for i in page.insights {
            explained.push(
                insight_from_pb(i)
                    .map_err(|e| anyhow::anyhow!("insights returned a bad insight: {e}"))?,
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut notify =
        NotifyServiceClient::connect(format!("http://{}", running.addrs["notify"])).await?;
    let incidents = incidents_of(&explained);
    // notify works from a stream: give it a moment to catch up.
    let wait = Instant::now();
    let mut deliveries = Vec::new();
    while wait.elapsed() < Duration::from_secs(10) {
        deliveries = notify
            .list_deliveries(ListDeliveriesRequest {
                limit: 1000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .deliveries;
        let done = incidents.iter().all(|inc| {
            inc.is_suppressed() || deliveries.iter().any(|d| d.incident_id == inc.incident_id)
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let labels = trailhound_generate::read_labels(&args.out.join("labels.json"))?;
    let reported: Vec<_> = anomalies
        .iter()
        .map(|a| trailhound_generate::score::ReportedAnomaly {
            detector: a.detector.clone(),
            account_id: a.account_id.clone(),
            region: a.region.clone(),
            window_start: a.window_start,
            window_end: a.window_end,
            service: a.service.clone(),
            kind: a.kind.as_str().into(),
            entity: a.entity.clone(),
            observed_until: Some(a.observed_until),
            top_contributors: a
                .top_contributors
                .iter()
                .map(|c| trailhound_generate::score::ReportedContributor {
                    dimension: c.dimension.clone(),
                    value: c.value.clone(),
                })
                .collect(),
        })
        .collect();
    let score = trailhound_generate::score::score(&labels, &reported);

    println!();
    println!(
        "{} incidents ({} anomalous windows), as alerted (notify's text rendering):",
        incidents.len(),
        explained.len()
    );
    for inc in &incidents {
        print_incident(inc, &explained, &deliveries);
    }
    println!();
    println!(
        "caught {} of {} injected incidents within two intervals of their start; {} of {} reported incidents were injected ones",
        score.detected, score.incidents, score.true_reported, score.reported_incidents
    );
    if !score.missed.is_empty() {
        println!("missed: {}", score.missed.join(", "));
    }
    for q in [
        "What accounts had the highest cost impact this week?",
        "Are there any security concerns with recent Lambda anomalies?",
    ] {
        let a = insights
            .ask(AskRequest {
                question: q.into(),
                limit: 5,
            })
            .await?
            .into_inner();
        println!();
        println!("$ trailhound ask \"{q}\"");
        println!("{}", a.answer);
    }
    println!();
    if args.keep_running {
        let addr = |n: &str| running.addrs[n];
        println!(
            "total {:.1}s. The services keep running until Ctrl-C; explore them:",
            started.elapsed().as_secs_f64()
        );
        println!("  dashboard   http://{}/", addr("health"));
        // As the configuration serves them: -plaintext only without TLS.
        let security = trailhound_runtime::security::installed();
        let flags = trailhound_insights::config::grpcurl_flags(
            security.tls.as_ref().map(|t| t.config()),
            security.auth.is_enabled(),
        );
        println!(
            "  anomalies   grpcurl {flags} {} trailhound.detect.v1.DetectService/ListAnomalies",
            addr("detect")
        );
        println!(
            "  questions   trailhound ask --insights http://{} \"What did anomalies cost this week?\"",
            addr("insights")
        );
        shutdown.cancelled().await;
    } else {
        println!(
            "total {:.1}s. To explore the services afterwards (dashboard, grpcurl, trailhound ask): trailhound demo --keep-running",
            started.elapsed().as_secs_f64()
        );
    }
    services.cancel();
    let stop = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if stop.is_err() {
        tracing::warn!("services did not stop within 10s");
    }
    Ok(())
}

/// The first insight of each incident (what opened the alert), in the
/// order every incident list has: most severe, costliest, most recent.
fn incidents_of(all: &[Insight]) -> Vec<Insight> {
    trailhound_core::incident::incidents(all)
        .into_iter()
        .map(|r| r.first.clone())
        .collect()
}

fn print_incident(
    first: &Insight,
    all: &[Insight],
    deliveries: &[trailhound_proto::notify::v1::Delivery],
) {
    let windows = all
        .iter()
        .filter(|i| i.incident_id == first.incident_id)
        .count();
    println!();
    println!("{}", "─".repeat(78));
    let text = trailhound_notify::render::text::body(&trailhound_notify::render::Message {
        insight: first,
        follow_up: None,
        delivery_id: "demo",
        rule: "demo",
    });
    println!("{text}");
    let mine: Vec<&trailhound_proto::notify::v1::Delivery> = deliveries
        .iter()
        .filter(|d| d.incident_id == first.incident_id)
        .collect();
    let skipped = mine
        .iter()
        .filter(|d| d.status == trailhound_proto::notify::v1::DeliveryStatus::Skipped as i32)
        .count();
    let mut sent: Vec<String> = mine
        .iter()
        .filter(|d| d.status != trailhound_proto::notify::v1::DeliveryStatus::Skipped as i32)
        .map(|d| {
            let status = trailhound_proto::notify::v1::DeliveryStatus::try_from(d.status)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("DELIVERY_STATUS_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            format!(
                "{} {} ({status})",
                if d.follow_up {
                    "follow-up to"
                } else {
                    "sent to"
                },
                d.channel
            )
        })
        .collect();
    if skipped > 0 {
        sent.push(format!(
            "{skipped} later window{} folded into it",
            if skipped == 1 { "" } else { "s" }
        ));
    }
    println!(
        "[{} window{} in this incident; alert: {}]",
        windows,
        if windows == 1 { "" } else { "s" },
        match (&first.suppressed_by, sent.is_empty()) {
            (Some(rule), _) => format!("suppressed by {rule}"),
            (None, true) => "not sent yet".to_string(),
            (None, false) => sent.join(", "),
        }
    );
}
