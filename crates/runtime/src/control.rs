//! `trailhound.common.v1.ControlService`, served by every server through
//! the bootstrap: the levers the health service pulls. `SetServing` flips
//! the server's own grpc.health status (so an orchestrator restarts a
//! service that keeps failing); `Recover` runs a named action the service
//! registered (ingest's replay, notify's dead-letter retry).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use trailhound_proto::common::v1 as pb;
use trailhound_proto::common::v1::control_service_server::ControlService;

type RecoverFuture = Pin<Box<dyn Future<Output = Result<String, RecoverError>> + Send>>;

/// Why a recovery action did not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("this service has no recovery action {0:?}")]
    Unknown(String),
    #[error("{0}")]
    Failed(String),
}

/// A service's recovery actions: action name in, what happened out.
#[derive(Clone)]
pub struct RecoverHandle(Arc<dyn Fn(String) -> RecoverFuture + Send + Sync>);

impl RecoverHandle {
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, RecoverError>> + Send + 'static,
    {
        Self(Arc::new(move |a| Box::pin(f(a))))
    }

    /// The actions `act` runs on a service shared behind an `Arc`, which
    /// each call gets its own handle on.
    pub fn on<T, F, Fut>(service: Arc<T>, act: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, RecoverError>> + Send + 'static,
    {
        Self::new(move |action| act(service.clone(), action))
    }
}

impl std::fmt::Debug for RecoverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoverHandle")
    }
}

pub(crate) struct Control {
    pub reporter: HealthReporter,
    pub names: Vec<String>,
    pub recover: Option<RecoverHandle>,
    pub stats: Option<crate::stats::StatsHandle>,
}

#[tonic::async_trait]
impl ControlService for Control {
    async fn set_serving(
        &self,
        req: Request<pb::SetServingRequest>,
    ) -> Result<Response<pb::SetServingResponse>, Status> {
        let r = req.into_inner();
        let status = if r.serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // The reason is the caller's text: one plain line in the log.
        let reason = trailhound_core::text::clean_line(&r.reason);
        tracing::warn!(serving = r.serving, %reason, "serving status set by control");
        self.reporter.set_service_status("", status).await;
        for n in &self.names {
            self.reporter.set_service_status(n.as_str(), status).await;
        }
        Ok(Response::new(pb::SetServingResponse {}))
    }

    async fn stats(
        &self,
        _req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::ServiceStats>, Status> {
        match &self.stats {
            Some(s) => crate::stats::reply(s.get()),
            None => Err(Status::unimplemented(
                "this server reports no figures through ControlService.Stats",
            )),
        }
    }

    async fn recover(
        &self,
        req: Request<pb::RecoverRequest>,
    ) -> Result<Response<pb::RecoverResponse>, Status> {
        let r = req.into_inner();
        let Some(h) = &self.recover else {
            return Err(Status::unimplemented(format!(
                "this service has no recovery action {:?}",
                r.action
            )));
        };
        tracing::info!(
            action = %trailhound_core::text::clean_line(&r.action),
            reason = %trailhound_core::text::clean_line(&r.reason),
            "recovery requested"
        );
        match (h.0)(r.action.clone()).await {
            Ok(detail) => {
                tracing::info!(action = %r.action, %detail, "recovery done");
                Ok(Response::new(pb::RecoverResponse { detail }))
            }
            Err(e @ RecoverError::Unknown(_)) => Err(Status::unimplemented(e.to_string())),
            Err(RecoverError::Failed(m)) => {
                tracing::warn!(action = %r.action, error = %m, "recovery failed");
                Err(Status::unavailable(m))
            }
        }
    }
}
