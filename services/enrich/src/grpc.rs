//! The gRPC face of enrich: a thin adapter over [`Enricher`], and the
//! client that sends enriched batches to detect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tonic::{Request, Response, Status};
use trailhound_core::convert::{account_to_pb, event_from_pb, event_to_pb, event_to_pb_lean};
use trailhound_core::pipeline::{Ack, EnrichedSink, EventSink, SinkError};
use trailhound_core::{EnrichedEvent, Event};
use trailhound_proto::common::v1 as common;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::detect::v1::{ObserveRequest, ObserveResponse};
use trailhound_proto::enrich::v1 as pb;
use trailhound_proto::enrich::v1::enrich_service_server::EnrichService;
use trailhound_proto::ingest::v1::EventBatch;
use trailhound_runtime::pipelined::{Pipelined, open_with};
use trailhound_runtime::{TracedChannel, status};

use crate::{EnrichSink, Enricher};

/// Batches a ProcessStream holds at once (enriched, waiting for detect).
const STREAM_WINDOW: usize = 8;

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

    type ProcessStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ProcessResponse, Status>> + Send>,
    >;

    /// Enriches each batch in the order it came and queues it downstream
    /// without waiting (when detect is reached over a stream too), so
    /// several are on the way; answers in order as detect acknowledges.
    /// A refusal ends the stream after the answers before it.
    async fn process_stream(
        &self,
        req: Request<tonic::Streaming<EventBatch>>,
    ) -> Result<Response<Self::ProcessStreamStream>, Status> {
        use futures::StreamExt;
        let mut requests = req.into_inner();
        let enricher = self.stage.enricher.clone();
        let downstream = self.stage.downstream.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut acks = futures::stream::FuturesOrdered::new();
            let mut reading = true;
            loop {
                tokio::select! {
                    biased;
                    Some(done) = acks.next(), if !acks.is_empty() => {
                        let answer: Result<pb::ProcessResponse, Status> = done;
                        let stop = answer.is_err();
                        if tx.send(answer).await.is_err() || stop {
                            return;
                        }
                    }
                    msg = requests.message(), if reading && acks.len() < STREAM_WINDOW => {
                        let ack: std::pin::Pin<Box<dyn std::future::Future<Output = Result<pb::ProcessResponse, Status>> + Send>> = match msg {
                            Ok(Some(batch)) => {
                                let span = trailhound_runtime::telemetry::message_span(
                                    "trailhound.enrich.v1.EnrichService/Process",
                                    &batch.traceparent,
                                );
                                use tracing::Instrument;
                                match EnrichGrpc::decode(batch) {
                                    Ok(events) => {
                                        let queued = enricher
                                            .process_queued(events, &*downstream)
                                            .instrument(span.clone())
                                            .await;
                                        Box::pin(async move {
                                            queued
                                                .await
                                                .map(|accepted| pb::ProcessResponse { accepted })
                                                .map_err(|e| status::of(&e))
                                        }.instrument(span))
                                    }
                                    Err(s) => {
                                        reading = false;
                                        Box::pin(std::future::ready(Err(s)))
                                    }
                                }
                            }
                            Ok(None) => {
                                reading = false;
                                continue;
                            }
                            Err(s) => {
                                reading = false;
                                Box::pin(std::future::ready(Err(s)))
                            }
                        };
                        acks.push_back(ack);
                    }
                    else => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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

/// Sends enriched batches to a detect server: one at a time with `send`
/// (retrying while it is unavailable, restarting, for up to `patience`),
/// or pipelined over an ObserveStream with `queue` (see
/// [`trailhound_runtime::pipelined`]: the stream's driver retries, in
/// order, for as long as the caller waits).
#[derive(Clone)]
pub struct GrpcDetectSink {
    client: DetectServiceClient<TracedChannel>,
    patience: Duration,
    stream: Arc<std::sync::OnceLock<Pipelined<ObserveRequest, ObserveResponse>>>,
}

/// ObserveStream requests in flight at once.
const DETECT_WINDOW: usize = 4;

impl GrpcDetectSink {
    pub fn new(endpoint: &str, patience: Duration) -> Result<Self, tonic::transport::Error> {
        let channel = trailhound_runtime::connect(endpoint, Duration::from_secs(60))?;
        Ok(Self {
            client: DetectServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            patience,
            stream: Default::default(),
        })
    }

    /// The stream's driver, started on first use (on the runtime).
    fn stream(&self) -> &Pipelined<ObserveRequest, ObserveResponse> {
        self.stream.get_or_init(|| {
            Pipelined::new(
                "detect",
                DETECT_WINDOW,
                open_with(self.client.clone(), |mut c, r| async move {
                    c.observe_stream(r).await
                }),
            )
        })
    }
}

#[async_trait]
impl EnrichedSink for GrpcDetectSink {
    async fn send(&self, events: Vec<EnrichedEvent>) -> Result<u64, SinkError> {
        let req = ObserveRequest {
            events: events.iter().map(enriched_to_pb_lean).collect(),
            peer_rising: Vec::new(),
            traceparent: String::new(),
        };
        trailhound_runtime::retry::hop("detect", self.patience, || {
            let mut client = self.client.clone();
            let req = req.clone();
            async move { client.observe(req).await }
        })
        .await
        .map(|r| r.into_inner().accepted)
    }

    fn queue(&self, events: &[EnrichedEvent]) -> Option<Ack> {
        let answer = self.stream().enqueue(ObserveRequest {
            events: events.iter().map(enriched_to_pb_lean).collect(),
            peer_rising: Vec::new(),
            traceparent: trailhound_runtime::telemetry::traceparent(),
        });
        Some(Box::pin(async move {
            answer
                .await
                .map(|r| r.accepted)
                .map_err(|s| status::to_sink_error("detect", &s))
        }))
    }
}
