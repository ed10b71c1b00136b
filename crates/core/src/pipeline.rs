//! The hand-offs between services, as traits. Each service is given its
//! downstream as one of these handles, so the same code runs in one process
//! (`trailhound up`, the CLI replay) or across processes over gRPC, and tests
//! can hand in whatever they need.

use async_trait::async_trait;

use crate::event::{EnrichedEvent, Event};

/// Why a downstream did not accept a batch. `retryable` says whether the
/// same batch may succeed later (the downstream is restarting, overloaded).
#[derive(Debug, Clone, thiserror::Error)]
#[error("downstream {downstream} did not accept the batch: {message}")]
pub struct SinkError {
    pub downstream: String,
    pub message: String,
    pub retryable: bool,
}

/// A queued batch's acknowledgement (see [`EventSink::queue`]).
pub type Ack = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, SinkError>> + Send>>;

/// Where ingest sends validated events (enrich).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Returns once the batch is accepted downstream.
    async fn send(&self, events: Vec<Event>) -> Result<u64, SinkError>;

    /// A pipelined hop (a gRPC stream): queues the batch now, behind
    /// every batch queued before it, and returns its acknowledgement, so
    /// several batches are on the way at once and still applied in order.
    /// None (the default): one batch at a time, through `send`.
    fn queue(&self, _events: &[Event]) -> Option<Ack> {
        None
    }
}

/// Where enrich sends enriched events (detect).
#[async_trait]
pub trait EnrichedSink: Send + Sync {
    async fn send(&self, events: Vec<EnrichedEvent>) -> Result<u64, SinkError>;

    /// As [`EventSink::queue`].
    fn queue(&self, _events: &[EnrichedEvent]) -> Option<Ack> {
        None
    }
}

/// Where detect sends anomalies (insights).
#[async_trait]
pub trait AnomalySink: Send + Sync {
    async fn send(&self, anomalies: Vec<crate::anomaly::Anomaly>) -> Result<u64, SinkError>;
}
