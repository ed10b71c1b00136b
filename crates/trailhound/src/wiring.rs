//! In-process hand-offs for `trailhound up`, the demo and the replay: the
//! same service logic, connected by function calls instead of gRPC.

use std::sync::Arc;

use async_trait::async_trait;
use trailhound_core::pipeline::{EnrichedSink, EventSink, SinkError};
use trailhound_core::{EnrichedEvent, Event};
use trailhound_detect::Detect;
use trailhound_enrich::Enricher;

/// ingest → enrich → (downstream), in process.
pub struct EnrichInProcess {
    pub enricher: Arc<Enricher>,
    pub downstream: Arc<dyn EnrichedSink>,
}

#[async_trait]
impl EventSink for EnrichInProcess {
    async fn send(&self, events: Vec<Event>) -> Result<u64, SinkError> {
        let enriched = self.enricher.enrich(events).await;
        self.downstream.send(enriched).await
    }
}

/// enrich → detect, in process.
pub struct DetectInProcess {
    pub detect: Arc<Detect>,
}

#[async_trait]
impl EnrichedSink for DetectInProcess {
    async fn send(&self, events: Vec<EnrichedEvent>) -> Result<u64, SinkError> {
        if self.detect.opensearch().is_some() {
            // Indexed into OpenSearch; a cluster that is down is retryable,
            // so ingest keeps the events.
            return match self.detect.accept(events).await {
                Ok(o) => Ok(o.accepted),
                Err(trailhound_detect::DetectError::Backend { message, retryable }) => {
                    Err(SinkError {
                        downstream: "opensearch".into(),
                        message,
                        retryable,
                    })
                }
                Err(e) => Err(SinkError {
                    downstream: "detect".into(),
                    message: e.to_string(),
                    retryable: false,
                }),
            };
        }
        let detect = self.detect.clone();
        let outcome = tokio::task::spawn_blocking(move || detect.observe(&events))
            .await
            .map_err(|e| SinkError {
                downstream: "detect".into(),
                message: e.to_string(),
                retryable: false,
            })?
            .map_err(|e| SinkError {
                downstream: "detect".into(),
                message: e.to_string(),
                retryable: false,
            })?;
        self.detect.forward(&outcome.anomalies).await;
        Ok(outcome.accepted)
    }
}
