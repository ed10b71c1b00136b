//! The gRPC face of enrich: a thin adapter over [`Enricher`], and the
//! client that sends enriched batches to detect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tonic::{Request, Response, Status};
use trailhound_core::convert::{account_to_pb, event_from_pb, event_to_pb, event_to_pb_lean};
use trailhound_core::pipeline::{EnrichedSink, EventSink, SinkError};
use trailhound_core::{EnrichedEvent, Event};
use trailhound_proto::common::v1 as common;
use trailhound_proto::detect::v1::ObserveRequest;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::enrich::v1 as pb;
use trailhound_proto::enrich::v1::enrich_service_server::EnrichService;
use trailhound_proto::ingest::v1::EventBatch;
use trailhound_runtime::{TracedChannel, status};

use crate::{EnrichSink, Enricher};

/// Serves EnrichService: `Process` is the same [`EnrichSink`] `trailhound
/// up` hands ingest's batches to.
pub struct EnrichGrpc {
    stage: EnrichSink,
}

impl EnrichGrpc {
    pub fn new(enricher: Arc<Enricher>, downstream: Arc<dyn EnrichedSink>) -> Self {
        Self {
            stage: EnrichSink {
                enricher,
                downstream,
            },
        }
    }

    fn decode(batch: EventBatch) -> Result<Vec<Event>, Status> {
        batch
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                event_from_pb(e).map_err(|e| {
                    status::invalid(
                        &format!("events[{i}].{}", e.field.trim_start_matches("event.")),
                        &e.reason,
                    )
                })
            })
            .collect()
    }
}

pub fn enriched_to_pb(e: &EnrichedEvent) -> common::EnrichedEvent {
    common::EnrichedEvent {
        event: Some(event_to_pb(&e.event)),
        account: Some(account_to_pb(&e.account)),
    }
}

/// An enriched event on its way to detect: without its raw record (see
/// [`trailhound_core::convert::event_to_pb_lean`]).
pub fn enriched_to_pb_lean(e: &EnrichedEvent) -> common::EnrichedEvent {
    common::EnrichedEvent {
        event: Some(event_to_pb_lean(&e.event)),
        account: Some(account_to_pb(&e.account)),
    }
}

#[tonic::async_trait]
impl EnrichService for EnrichGrpc {
    async fn process(
        &self,
        req: Request<EventBatch>,
    ) -> Result<Response<pb::ProcessResponse>, Status> {
        let events = Self::decode(req.into_inner())?;
        let accepted = self.stage.send(events).await.map_err(|e| status::of(&e))?;
        Ok(Response::new(pb::ProcessResponse { accepted }))
    }

    async fn enrich(
        &self,
        req: Request<EventBatch>,
    ) -> Result<Response<pb::EnrichedBatch>, Status> {
        let events = Self::decode(req.into_inner())?;
        let enriched = self.stage.enricher.enrich(events).await;
        Ok(Response::new(pb::EnrichedBatch {
            events: enriched.iter().map(enriched_to_pb).collect(),
        }))
    }

    async fn get_account(
        &self,
        req: Request<pb::GetAccountRequest>,
    ) -> Result<Response<common::AccountMetadata>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        let id = r.account_id;
        if !trailhound_core::is_account_id(&id) {
            return Err(status::invalid(
                "account_id",
                &format!("{id:?} is not a 12-digit account id"),
            ));
        }
        let account = self.stage.enricher.account(&id).await;
        // Out of scope answers exactly what an unknown account does.
        if !scope.allows_account(&account) {
            return Ok(Response::new(account_to_pb(
                &trailhound_core::AccountMetadata::external(&id),
            )));
        }
        Ok(Response::new(account_to_pb(&account)))
    }

    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let scope = trailhound_runtime::security::scope_of(&req);
        let accounts = self
            .stage
            .enricher
            .accounts()
            .await
            .map_err(|e| status::of(&e))?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: accounts
                .iter()
                .filter(|a| scope.allows_account(a))
                .map(account_to_pb)
                .collect(),
        }))
    }

    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::EnrichStats>, Status> {
        let s = self.stage.enricher.stats();
        Ok(Response::new(pb::EnrichStats {
            events: s.events.load(Ordering::Relaxed),
            cache_hits: s.cache_hits.load(Ordering::Relaxed),
            cache_misses: s.cache_misses.load(Ordering::Relaxed),
            backend_calls: s.backend_calls.load(Ordering::Relaxed),
            unknown_accounts: s.unknown_accounts.load(Ordering::Relaxed),
        }))
    }

    async fn stats(
        &self,
        _req: Request<common::StatsRequest>,
    ) -> Result<Response<common::ServiceStats>, Status> {
        trailhound_runtime::stats::reply(self.stage.enricher.service_stats())
    }
}

/// Sends enriched batches to a detect server, retrying while it is
/// unavailable (restarting) for up to `patience`.
#[derive(Clone)]
pub struct GrpcDetectSink {
    client: DetectServiceClient<TracedChannel>,
    patience: Duration,
}

impl GrpcDetectSink {
    pub fn new(endpoint: &str, patience: Duration) -> Result<Self, tonic::transport::Error> {
        let channel = trailhound_runtime::connect(endpoint, Duration::from_secs(60))?;
        Ok(Self {
            client: DetectServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            patience,
        })
    }
}

#[async_trait]
impl EnrichedSink for GrpcDetectSink {
    async fn send(&self, events: Vec<EnrichedEvent>) -> Result<u64, SinkError> {
        let req = ObserveRequest {
            events: events.iter().map(enriched_to_pb_lean).collect(),
            peer_rising: Vec::new(),
        };
        trailhound_runtime::retry::hop("detect", self.patience, || {
            let mut client = self.client.clone();
            let req = req.clone();
            async move { client.observe(req).await }
        })
        .await
        .map(|r| r.into_inner().accepted)
    }
}
