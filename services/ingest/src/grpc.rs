//! The gRPC face of ingest, and the client that forwards to enrich.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use trailhound_core::Event;
use trailhound_core::cloudtrail::Collect;
use trailhound_core::convert::event_to_pb_lean;
use trailhound_core::pipeline::{Ack, EventSink, SinkError};
use trailhound_proto::enrich::v1::ProcessResponse;
use trailhound_proto::enrich::v1::enrich_service_client::EnrichServiceClient;
use trailhound_proto::ingest::v1 as pb;
use trailhound_proto::ingest::v1::ingest_service_server::IngestService;
use trailhound_runtime::pipelined::{Pipelined, open_with};
use trailhound_runtime::{TracedChannel, status};

use crate::ingest::{Ingest, Outcome};
use crate::order::{self, Stream};

pub struct IngestGrpc {
    ingest: Arc<Ingest>,
    batch_size: usize,
}

impl IngestGrpc {
    pub fn new(ingest: Arc<Ingest>, batch_size: usize) -> Self {
        Self { ingest, batch_size }
    }
}

fn to_pb(o: Outcome) -> pb::PushEventsResponse {
    pb::PushEventsResponse {
        accepted: o.accepted,
        rejected: o.rejected,
        duplicates: o.duplicates,
        rejections: o
            .rejections
            .into_iter()
            .map(|r| pb::Rejection {
                source: r.source,
                reason: r.reason,
            })
            .collect(),
        reasons: o
            .reasons
            .top(20)
            .into_iter()
            .map(|(count, example)| pb::ReasonCount { count, example })
            .collect(),
    }
}

fn downstream_status(e: SinkError) -> Status {
    status::of(&e)
}

#[tonic::async_trait]
impl IngestService for IngestGrpc {
    async fn push_events(
        &self,
        req: Request<Streaming<pb::PushEventsRequest>>,
    ) -> Result<Response<pb::PushEventsResponse>, Status> {
        let mut stream = req.into_inner();
        let _pending = self.ingest.track_pending();
        // Files named with their delivery period go through the sequencer,
        // which merges concurrent streams into delivery order; anything
        // else is forwarded as it comes, in batches.
        let ordered = Stream::open(self.ingest.clone());
        let mut loose = Collect::default();
        let mut total = Outcome::default();
        let mut forward_error = None;
        let mut broke = None;
        let mut n = 0u64;
        loop {
            let msg = match stream.next().await {
                None => break,
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    broke = Some(e);
                    break;
                }
            };
            let source = if msg.source.is_empty() {
                format!("push#{n}")
            } else {
                msg.source
            };
            n += 1;
            let period = order::period_of(&source).map(str::to_string);
            if let Some(p) = &period {
                ordered.touch(p);
            }
            let parsed = self
                .ingest
                .parse_blocking(move |ingest| ingest.parse_json(&msg.json, &source))
                .await
                .map_err(Status::internal)?;
            match period {
                Some(p) => {
                    let (fresh, o) = self.ingest.screen(parsed);
                    total.merge(o);
                    ordered.add(&p, fresh).await;
                }
                None => {
                    loose.events.extend(parsed.events);
                    loose.rejections.extend(parsed.rejections);
                    if loose.events.len() >= self.batch_size {
                        match self.ingest.submit(std::mem::take(&mut loose)).await {
                            Ok(o) => total.merge(o),
                            Err(e) => {
                                forward_error = Some(e);
                                break;
                            }
                        }
                    }
                }
            }
        }
        if forward_error.is_none() {
            match self.ingest.submit(loose).await {
                Ok(o) => total.merge(o),
                Err(e) => forward_error = Some(e),
            }
        }
        match ordered.finish().await {
            Ok(accepted) => total.accepted += accepted,
            Err(e) => {
                forward_error.get_or_insert(e);
            }
        }
        if let Some(e) = broke {
            // A broken stream (or an oversized message) ends the call, but
            // the records that arrived before it are kept: accepted
            // downstream, and the error says so.
            return Err(Status::new(
                e.code(),
                format!(
                    "{} (the stream broke after {n} messages; {} records before it were accepted, {} rejected)",
                    e.message(),
                    total.accepted,
                    total.rejected
                ),
            ));
        }
        if let Some(e) = forward_error {
            return Err(downstream_status(e));
        }
        Ok(Response::new(to_pb(total)))
    }

    async fn push_cloud_watch_logs(
        &self,
        req: Request<pb::PushCloudWatchLogsRequest>,
    ) -> Result<Response<pb::PushEventsResponse>, Status> {
        let r = req.into_inner();
        if r.data.trim().is_empty() {
            return Err(status::invalid(
                "data",
                "must hold the base64 subscription payload",
            ));
        }
        let source = if r.source.is_empty() {
            "cloudwatch-logs".to_string()
        } else {
            r.source
        };
        let parsed = self
            .ingest
            .parse_blocking(move |ingest| ingest.parse_cloudwatch(&r.data, &source))
            .await
            .map_err(Status::internal)?;
        let out = self
            .ingest
            .submit(parsed)
            .await
            .map_err(downstream_status)?;
        Ok(Response::new(to_pb(out)))
    }

    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::IngestStats>, Status> {
        let s = self.ingest.stats();
        Ok(Response::new(pb::IngestStats {
            records_read: s.records_read.load(Ordering::Relaxed),
            accepted: s.accepted.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            batches_forwarded: s.batches_forwarded.load(Ordering::Relaxed),
            forward_errors: s.forward_errors.load(Ordering::Relaxed),
        }))
    }

    async fn stats(
        &self,
        _req: Request<trailhound_proto::common::v1::StatsRequest>,
    ) -> Result<Response<trailhound_proto::common::v1::ServiceStats>, Status> {
        trailhound_runtime::stats::reply(self.ingest.service_stats())
    }
}

/// Forwards batches to an enrich server: one at a time with `send`
/// (Process), or pipelined over a ProcessStream with `queue` (see
/// [`trailhound_runtime::pipelined`]).
#[derive(Clone)]
pub struct GrpcEnrichSink {
    client: EnrichServiceClient<TracedChannel>,
    stream: Arc<std::sync::OnceLock<Pipelined<pb::EventBatch, ProcessResponse>>>,
}

/// ProcessStream batches in flight at once.
const ENRICH_WINDOW: usize = 4;

impl GrpcEnrichSink {
    pub fn new(endpoint: &str) -> Result<Self, tonic::transport::Error> {
        let channel = trailhound_runtime::connect(endpoint, Duration::from_secs(120))?;
        Ok(Self {
            client: EnrichServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            stream: Default::default(),
        })
    }

    /// The stream's driver, started on first use (on the runtime).
    fn stream(&self) -> &Pipelined<pb::EventBatch, ProcessResponse> {
        self.stream.get_or_init(|| {
            Pipelined::new(
                "enrich",
                ENRICH_WINDOW,
                open_with(self.client.clone(), |mut c, r| async move {
                    c.process_stream(r).await
                }),
            )
        })
    }
}

#[async_trait]
impl EventSink for GrpcEnrichSink {
    async fn send(&self, events: Vec<Event>) -> Result<u64, SinkError> {
        let batch = pb::EventBatch {
            events: events.iter().map(event_to_pb_lean).collect(),
            traceparent: String::new(),
        };
        let mut client = self.client.clone();
        client
            .process(batch)
            .await
            .map(|r| r.into_inner().accepted)
            .map_err(|s| status::to_sink_error("enrich", &s))
    }

    fn queue(&self, events: &[Event]) -> Option<Ack> {
        let answer = self.stream().enqueue(pb::EventBatch {
            events: events.iter().map(event_to_pb_lean).collect(),
            traceparent: trailhound_runtime::telemetry::traceparent(),
        });
        Some(Box::pin(async move {
            answer
                .await
                .map(|r| r.accepted)
                .map_err(|s| status::to_sink_error("enrich", &s))
        }))
    }
}
