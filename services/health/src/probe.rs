//! How health reaches a service: grpc.health.v1 plus the ControlService
//! every server carries (`Stats`, and the levers `SetServing` and
//! `Recover`), so one client reaches every service and a new service needs
//! nothing here. Behind a trait so the monitor's logic is tested against
//! services that are up, slow, erroring and gone without starting any.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use trailhound_proto::common::v1 as common;
use trailhound_proto::common::v1::control_service_client::ControlServiceClient;

use crate::HealthError;
use crate::evaluate::Probe;

/// Reaches the watched services.
#[async_trait]
pub trait Prober: Send + Sync {
    /// Checks one service; must return within about `timeout`.
    async fn probe(&self, name: &str, endpoint: &str, timeout: Duration) -> Probe;
    /// ControlService/SetServing.
    async fn set_serving(
        &self,
        endpoint: &str,
        serving: bool,
        reason: &str,
    ) -> Result<(), HealthError>;
    /// ControlService/Recover: what the action did.
    async fn recover(
        &self,
        endpoint: &str,
        action: &str,
        reason: &str,
    ) -> Result<String, HealthError>;
}

/// The real thing, over gRPC. Channels connect lazily and reconnect on
/// their own, so a restarted service is found again without help.
#[derive(Debug, Default)]
pub struct GrpcProber {
    channels:
        std::sync::Mutex<std::collections::HashMap<String, trailhound_runtime::TracedChannel>>,
}

impl GrpcProber {
    fn channel(
        &self,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<trailhound_runtime::TracedChannel, HealthError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(endpoint) {
            return Ok(c.clone());
        }
        let c = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| HealthError::BadEndpoint {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        // The process's TLS and service identity, like every client.
        let c = trailhound_runtime::client::traced(&c);
        map.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }
}

#[async_trait]
impl Prober for GrpcProber {
    async fn probe(&self, _name: &str, endpoint: &str, timeout: Duration) -> Probe {
        let start = Instant::now();
        let channel = match self.channel(endpoint, timeout) {
            Ok(c) => c,
            Err(e) => {
                return Probe {
                    health: Err(e.clone()),
                    stats: Err(e),
                    latency: Duration::ZERO,
                };
            }
        };
        let health = async {
            HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(HealthError::from)
                .and_then(|r| match r.into_inner().status() {
                    ServingStatus::Serving => Ok(()),
                    other => Err(HealthError::NotServing(other.as_str_name().to_string())),
                })
        };
        let stats = async {
            ControlServiceClient::new(channel.clone())
                .stats(common::StatsRequest {})
                .await
                .map(|r| r.into_inner())
                .map_err(HealthError::from)
        };
        // One deadline over both, so a service that accepts the connection
        // and then hangs costs one timeout, not two.
        let outcome = tokio::time::timeout(timeout, futures::future::join(health, stats)).await;
        let latency = start.elapsed();
        match outcome {
            Ok((health, stats)) => Probe {
                health,
                stats,
                latency,
            },
            Err(_) => {
                let why = HealthError::Deadline(timeout.as_millis());
                Probe {
                    health: Err(why.clone()),
                    stats: Err(why),
                    latency,
                }
            }
        }
    }

    async fn set_serving(
        &self,
        endpoint: &str,
        serving: bool,
        reason: &str,
    ) -> Result<(), HealthError> {
        let channel = self.channel(endpoint, Duration::from_secs(5))?;
        ControlServiceClient::new(channel)
            .set_serving(common::SetServingRequest {
                serving,
                reason: reason.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(HealthError::from)
    }

    async fn recover(
        &self,
        endpoint: &str,
        action: &str,
        reason: &str,
    ) -> Result<String, HealthError> {
        let channel = self.channel(endpoint, Duration::from_secs(60))?;
        ControlServiceClient::new(channel)
            .recover(common::RecoverRequest {
                action: action.to_string(),
                reason: reason.to_string(),
            })
            .await
            .map(|r| r.into_inner().detail)
            .map_err(HealthError::from)
    }
}
