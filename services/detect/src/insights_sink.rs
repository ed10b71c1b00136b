//! detect → insights over gRPC: every anomaly detect finds is handed to
//! insights' AnalyzeBatch, so it is explained and notified without anyone
//! asking.

use std::time::Duration;

use async_trait::async_trait;
use trailhound_core::Anomaly;
use trailhound_core::convert::anomaly_to_pb;
use trailhound_core::pipeline::{AnomalySink, SinkError};
use trailhound_proto::insights::v1::AnalyzeBatchRequest;
use trailhound_proto::insights::v1::insights_service_client::InsightsServiceClient;
use trailhound_runtime::TracedChannel;

/// How long a batch of anomalies waits for insights to come back (a
/// restart) before the hand-off gives up and counts a forward error.
const INSIGHTS_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct GrpcInsightsSink {
    client: InsightsServiceClient<TracedChannel>,
}

impl GrpcInsightsSink {
    pub fn new(endpoint: &str) -> Result<Self, tonic::transport::Error> {
        let channel = trailhound_runtime::connect(endpoint, Duration::from_secs(60))?;
        Ok(Self {
            client: InsightsServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        })
    }
}

#[async_trait]
impl AnomalySink for GrpcInsightsSink {
    async fn send(&self, anomalies: Vec<Anomaly>) -> Result<u64, SinkError> {
        let n = anomalies.len() as u64;
        let req = AnalyzeBatchRequest {
            anomalies: anomalies.iter().map(anomaly_to_pb).collect(),
        };
        // Unavailable insights (restarting) gets a few seconds; detect
        // keeps every anomaly in its own store whatever happens here.
        trailhound_runtime::retry::hop("insights", INSIGHTS_PATIENCE, || {
            let mut client = self.client.clone();
            let req = req.clone();
            async move { client.analyze_batch(req).await }
        })
        .await?;
        Ok(n)
    }
}
