//! `trailhound push`: sends CloudTrail files to a running ingest service
//! over gRPC, one file per message, in delivery order — what a shipper of
//! an S3 export would do, and how the services path is benchmarked.

use std::path::PathBuf;
use std::time::Instant;

use trailhound_proto::detect::v1::FlushRequest;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;

#[derive(Clone, Debug, clap::Args)]
pub struct PushArgs {
    /// CloudTrail file or AWSLogs tree to send.
    #[arg(long)]
    pub input: PathBuf,
    /// ingest's endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub ingest: String,
    /// detect's endpoint: when given, detect closes its open windows once
    /// everything is sent (the end of a replay), and the time includes it.
    #[arg(long)]
    pub flush_detect: Option<String>,
    #[command(flatten)]
    pub client: trailhound_runtime::args::ClientArgs,
}

/// What a push did.
#[derive(Clone, Debug, Default)]
pub struct PushSummary {
    pub files: usize,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub seconds: f64,
}

pub async fn run(args: &PushArgs) -> anyhow::Result<PushSummary> {
    let groups = trailhound_ingest::files::delivery_groups(&args.input)
        .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", args.input.display()))?;
    let files: Vec<PathBuf> = groups.into_iter().flat_map(|g| g.files).collect();
    let security = args.client.security()?;
    let channel = |endpoint: &str| {
        trailhound_runtime::client::connect_with(
            endpoint,
            std::time::Duration::from_secs(3600),
            &security,
        )
        .map_err(|e| anyhow::anyhow!("bad endpoint {endpoint}: {e}"))
    };
    let mut ingest =
        IngestServiceClient::new(channel(&args.ingest)?).max_encoding_message_size(64 << 20);
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<PushEventsRequest>(16);
    let count = files.len();
    // Files are read and decompressed on a blocking thread while the
    // stream sends; the bounded channel keeps reading just ahead.
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for f in files {
            let bytes = std::fs::read(&f)
                .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", f.display()))?;
            let body = trailhound_core::cloudtrail::maybe_gunzip(bytes, 1 << 30)
                .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", f.display()))?;
            let json = String::from_utf8(body)
                .map_err(|e| anyhow::anyhow!("{} is not UTF-8: {e}", f.display()))?;
            let msg = PushEventsRequest {
                json,
                source: f.display().to_string(),
            };
            if tx.blocking_send(msg).is_err() {
                break;
            }
        }
        Ok(())
    });
    let response = ingest
        .push_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| anyhow::anyhow!("ingest refused the stream: {e}"))?
        .into_inner();
    reader.await??;
    if let Some(endpoint) = &args.flush_detect {
        DetectServiceClient::new(channel(endpoint)?)
            .max_decoding_message_size(64 << 20)
            .flush(FlushRequest {})
            .await
            .map_err(|e| anyhow::anyhow!("detect flush failed: {e}"))?;
    }
    Ok(PushSummary {
        files: count,
        accepted: response.accepted,
        rejected: response.rejected,
        duplicates: response.duplicates,
        seconds: started.elapsed().as_secs_f64(),
    })
}
