//! What can go wrong in detect, and how each failure is told to a gRPC
//! caller and to enrich.

use trailhound_core::pipeline::SinkError;

use crate::store::StoreError;
use crate::wal;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("detector {0} not found")]
    NotFound(String),
    #[error("detector {0} already exists")]
    AlreadyExists(String),
    #[error("invalid detector: {0}")]
    InvalidDetector(String),
    #[error("the detection engine failed: {0}")]
    Internal(String),
    /// The OpenSearch backend failed; `retryable` when the cluster is
    /// down or overloaded rather than misconfigured.
    #[error("{message}")]
    Backend { message: String, retryable: bool },
}

/// How detect's adapter answers each failure.
impl trailhound_runtime::status::ServiceError for DetectError {
    fn error_code(&self) -> trailhound_runtime::status::ErrorCode {
        use trailhound_runtime::status::ErrorCode;
        match self {
            DetectError::NotFound(_) => ErrorCode::NotFound,
            DetectError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            DetectError::InvalidDetector(_) => ErrorCode::InvalidArgument,
            // A cluster that is down or overloaded, or one misconfigured.
            DetectError::Backend {
                retryable: true, ..
            } => ErrorCode::Unavailable,
            DetectError::Backend { .. } => ErrorCode::FailedPrecondition,
            DetectError::Store(_) | DetectError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn status_message(&self) -> String {
        match self {
            DetectError::InvalidDetector(reason) => format!("detector: {reason}"),
            e => e.to_string(),
        }
    }
}

/// What enrich is told when a batch cannot be taken: an OpenSearch cluster
/// that is down is retryable (ingest keeps the events), anything else not.
impl From<DetectError> for SinkError {
    fn from(e: DetectError) -> Self {
        match e {
            DetectError::Backend { message, retryable } => SinkError {
                downstream: "opensearch".into(),
                message,
                retryable,
            },
            e => SinkError {
                downstream: "detect".into(),
                message: e.to_string(),
                retryable: false,
            },
        }
    }
}

pub(super) fn wal_error(e: wal::WalError) -> DetectError {
    DetectError::Internal(e.to_string())
}

pub(super) fn backend_error(e: trailhound_opensearch::OsError) -> DetectError {
    DetectError::Backend {
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}
