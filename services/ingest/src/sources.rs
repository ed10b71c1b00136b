//! Starts the event sources the configuration names, next to the gRPC
//! server: S3 notifications through SQS, the S3 backfill, the Firehose
//! HTTP endpoint and the CloudWatch Logs poller. The same function serves
//! `trailhound ingest` and `trailhound up`, so both start the same things
//! from the same `[ingest]` and `[aws]` sections.
//!
//! Everything that can be checked at start is checked here (addresses,
//! URLs, the access key, the `[aws]` section), so a typo fails the start
//! with its key named rather than a task later.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trailhound_aws::{Aws, AwsConfig};

use crate::config::IngestConfig;
use crate::cwl_poll::{CwlPoller, PollerOptions};
use crate::firehose::{self, FirehoseOptions};
use crate::ingest::Ingest;
use crate::s3::{ObjectReader, SqsS3Source, SqsSourceOptions, backfill, s3_client};
use crate::source::SourceError;

/// What [`start_sources`] started.
#[derive(Clone, Debug, Default)]
pub struct StartedSources {
    /// Where the Firehose endpoint listens (the port, when 0 was asked).
    pub firehose_addr: Option<SocketAddr>,
    /// The S3 notification source, for its counters.
    pub s3: Option<Arc<SqsS3Source>>,
    /// Names of the sources started, for the log.
    pub names: Vec<&'static str>,
}

/// Starts the sources `config` names, reading `[aws]` from the config file
/// when one of them calls AWS. Tasks go into `set` and stop on `shutdown`;
/// returns once the Firehose endpoint (if any) is listening.
pub async fn start_sources(
    config: &IngestConfig,
    common: &trailhound_runtime::CommonArgs,
    ingest: Arc<Ingest>,
    set: &mut JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<StartedSources> {
    let aws: Option<AwsConfig> = if config.needs_aws() {
        Some(trailhound_runtime::load_section(
            common.config.as_deref(),
            "aws",
        )?)
    } else {
        None
    };
    Ok(start_sources_with(
        config,
        aws.as_ref(),
        &common.data_dir,
        ingest,
        set,
        shutdown,
    )
    .await?)
}

/// [`start_sources`] with the `[aws]` settings given directly.
pub async fn start_sources_with(
    config: &IngestConfig,
    aws: Option<&AwsConfig>,
    data_dir: &Path,
    ingest: Arc<Ingest>,
    set: &mut JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> Result<StartedSources, SourceError> {
    config.validate().map_err(SourceError::Config)?;
    let backfill_at = config.backfill_location().map_err(SourceError::Config)?;
    let mut started = StartedSources::default();

    if let Some(addr) = config.firehose_listen {
        let options = FirehoseOptions {
            access_key: firehose::load_access_key(
                config.firehose_access_key_env.as_deref(),
                config.firehose_access_key_file.as_deref(),
            )?,
            max_body_bytes: config.firehose_max_body_bytes.max(1024),
            max_concurrent_requests: config.firehose_max_concurrent_requests.max(1),
        };
        let listener = firehose::bind(addr).await?;
        started.firehose_addr = listener.local_addr().ok();
        let (ingest, stop) = (ingest.clone(), shutdown.clone());
        set.spawn(async move { Ok(firehose::serve(listener, ingest, options, stop).await?) });
        started.names.push("firehose");
    }

    if !config.needs_aws() {
        return Ok(started);
    }
    let aws_config = aws.cloned().unwrap_or_default();
    let aws = Aws::load(&aws_config)
        .await
        .map_err(|e| SourceError::Config(format!("[aws]: {e}")))?;
    let reader = ObjectReader::new(s3_client(&aws), ingest.clone(), aws.limiter());

    if let Some(queue_url) = &config.s3_queue_url {
        let options = SqsSourceOptions {
            max_objects_in_flight: config.s3_max_objects_in_flight.max(1),
            visibility_timeout: config.s3_visibility_timeout,
            wait_time: config.s3_wait_time,
            retry_delay: config.s3_retry_delay,
            ..SqsSourceOptions::new(queue_url.clone())
        };
        let sqs = aws_sdk_sqs::Client::new(&aws.sdk_config("sqs"));
        let source = Arc::new(SqsS3Source::new(sqs, reader.clone(), options));
        started.s3 = Some(source.clone());
        let stop = shutdown.clone();
        set.spawn(async move { Ok(source.run(stop).await?) });
        started.names.push("s3-notifications");
    }

    if let Some(location) = backfill_at {
        let since = config.since;
        let concurrency = config.s3_max_objects_in_flight.max(1);
        let (reader, stop) = (reader.clone(), shutdown.clone());
        set.spawn(async move {
            let started = std::time::Instant::now();
            let out = backfill(&reader, &location, since, concurrency, &stop).await?;
            tracing::info!(
                location = %location,
                objects = out.objects,
                skipped_objects = out.skipped_objects,
                skipped_events = out.skipped_events,
                accepted = out.outcome.accepted,
                rejected = out.outcome.rejected,
                duplicates = out.outcome.duplicates,
                secs = started.elapsed().as_secs_f64(),
                "backfill finished"
            );
            Ok(())
        });
        started.names.push("s3-backfill");
    }

    if let Some(group) = &config.cloudwatch_log_group {
        let options = PollerOptions {
            stream_prefix: config.cloudwatch_stream_prefix.clone(),
            filter_pattern: config.cloudwatch_filter_pattern.clone(),
            interval: config.poll_interval.max(Duration::from_secs(1)),
            lookback: config.cloudwatch_lookback,
            start: config.since,
            ..PollerOptions::new(
                group.clone(),
                config.cloudwatch_checkpoint_path(data_dir, group),
            )
        };
        let client = aws_sdk_cloudwatchlogs::Client::new(&aws.sdk_config("logs"));
        let poller = CwlPoller::new(client, ingest.clone(), options)?;
        let stop = shutdown.clone();
        set.spawn(async move { Ok(poller.run(stop).await?) });
        started.names.push("cloudwatch-poller");
    }
    Ok(started)
}
