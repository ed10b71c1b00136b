//! What the AWS sources (S3 through SQS, the backfill, the Firehose
//! endpoint, the CloudWatch Logs poller) share: their error type and the
//! backoff they use when AWS or the downstream is unavailable.

use trailhound_core::pipeline::SinkError;

/// Why a source stopped or a step of it failed. AWS failures carry the
/// message of [`trailhound_aws::explain`]: the action, the resource and
/// the likely fix.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `retryable`: the same call may pass later (throttling, 5xx,
    /// network).
    #[error("{message}")]
    Aws { message: String, retryable: bool },
    #[error(transparent)]
    Downstream(#[from] SinkError),
    #[error("failed to {action} checkpoint {path}: {source}")]
    Checkpoint {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is unreadable ({reason}); delete it to start again from `since`")]
    BadCheckpoint { path: String, reason: String },
    #[error("{0}")]
    Backfill(Box<BackfillStop>),
    #[error("failed to start the Firehose endpoint on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid ingest configuration: {0}")]
    Config(String),
    #[error("ingest failed: {0}")]
    Internal(String),
}

/// Where a backfill stopped, and how to resume it.
#[derive(Debug, thiserror::Error)]
#[error(
    "backfill of {location} stopped at {key} (delivered {delivery}): {message}; \
     {done} objects before it were read. Rerun with --since {resume} to go on from there"
)]
pub struct BackfillStop {
    pub location: String,
    pub key: String,
    pub delivery: String,
    pub resume: String,
    pub done: u64,
    pub message: String,
}

impl SourceError {
    /// An AWS SDK failure, explained.
    pub fn aws<E, R>(e: &aws_sdk_sqs::error::SdkError<E, R>, action: &str, resource: &str) -> Self
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        SourceError::Aws {
            message: trailhound_aws::explain(e, action, resource),
            retryable: trailhound_aws::is_retryable(e),
        }
    }

    /// Whether waiting may make the failure pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Aws { retryable, .. } => *retryable,
            SourceError::Downstream(e) => e.retryable,
            _ => false,
        }
    }
}

pub use trailhound_runtime::retry::{Backoff, sleep_or_stop};
