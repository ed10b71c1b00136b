//! The gRPC face of detect: decode, call [`Detect`], map errors in one
//! place.

use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use trailhound_core::EnrichedEvent;
use trailhound_core::convert::{
    InvalidField, account_from_pb, anomaly_to_pb, detector_from_pb, detector_to_pb, event_from_pb,
    timestamp_ms,
};
use trailhound_proto::common::v1 as common;
use trailhound_proto::detect::v1 as pb;
use trailhound_proto::detect::v1::detect_service_server::DetectService;
use trailhound_proto::time::to_millis;
use trailhound_runtime::status::{self, check};

use crate::engine::SharedRising;
use crate::service::{Detect, DetectError};
use crate::store::AnomalyFilter;

fn to_status(e: DetectError) -> Status {
    status::of(&e)
}

fn invalid(e: InvalidField) -> Status {
    status::invalid(&e.field, &e.reason)
}

pub struct DetectGrpc {
    detect: Arc<Detect>,
}

impl DetectGrpc {
    /// Whether a caller with `scope` may see `account_id`'s series. Series
    /// carry no account metadata: the account's OU and environment come
    /// from its latest anomaly, else from what the engine learned from its
    /// events; an account known to neither is visible only to scopes that
    /// name it.
    async fn account_visible(
        &self,
        scope: &trailhound_core::Scope,
        account_id: &str,
    ) -> Result<bool, Status> {
        if scope.is_unrestricted() {
            return Ok(true);
        }
        let filter = AnomalyFilter {
            account_id: account_id.to_string(),
            ..Default::default()
        };
        let (latest, _) = self
            .detect
            .list_any(&filter, 1, None)
            .await
            .map_err(to_status)?;
        Ok(match latest.first() {
            Some(a) => scope.allows(&a.account_id, &a.ou_path, a.environment),
            None => match self.detect.account(account_id) {
                Some(a) => scope.allows(account_id, &a.ou_path, a.environment),
                None => scope.allows(account_id, &[], trailhound_core::Environment::Unknown),
            },
        })
    }

    pub fn new(detect: Arc<Detect>) -> Self {
        Self { detect }
    }
}

/// The wire form of a rising account a replica reports.
pub fn shared_to_pb(r: &SharedRising) -> pb::SharedRising {
    pb::SharedRising {
        detector: r.detector.clone(),
        window_start: Some(trailhound_proto::time::from_millis(r.window_start_ms)),
        account_id: r.account_id.clone(),
        keys: r.keys.clone(),
    }
}

fn shared_from_pb(field: &str, list: Vec<pb::SharedRising>) -> Result<Vec<SharedRising>, Status> {
    list.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let window_start_ms =
                r.window_start.as_ref().map(to_millis).ok_or_else(|| {
                    status::invalid(&format!("{field}[{i}].window_start"), "missing")
                })?;
            if !trailhound_core::is_account_id(&r.account_id) {
                return Err(status::invalid(
                    &format!("{field}[{i}].account_id"),
                    &format!("{:?} is not a 12-digit account id", r.account_id),
                ));
            }
            Ok(SharedRising {
                detector: r.detector,
                window_start_ms,
                account_id: r.account_id,
                keys: r.keys,
            })
        })
        .collect()
}

/// Refuses events of accounts another replica owns: enrich routing them
/// here means its endpoint list and the replicas' `--shard` disagree, and
/// counting them would split an account's history over two replicas.
fn check_owned(shard: trailhound_core::Shard, events: &[EnrichedEvent]) -> Result<(), Status> {
    if shard.is_all() {
        return Ok(());
    }
    match events
        .iter()
        .position(|e| !shard.owns(&e.event.recipient_account_id))
    {
        None => Ok(()),
        Some(i) => {
            let account = &events[i].event.recipient_account_id;
            Err(status::invalid(
                &format!("events[{i}].event.recipient_account_id"),
                &format!(
                    "account {account} belongs to shard {}/{} and this replica is shard {shard}: list the detect replicas in shard order in enrich's detect_endpoint",
                    trailhound_core::shard_of(account, shard.count),
                    shard.count
                ),
            ))
        }
    }
}

fn decode_events(req: Vec<common::EnrichedEvent>) -> Result<Vec<EnrichedEvent>, Status> {
    req.into_iter()
        .enumerate()
        .map(|(i, e)| {
            let event = e
                .event
                .ok_or_else(|| status::invalid(&format!("events[{i}].event"), "missing"))
                .and_then(|ev| {
                    event_from_pb(ev).map_err(|e| {
                        status::invalid(&format!("events[{i}].{}", e.field), &e.reason)
                    })
                })?;
            let account = e.account.map(account_from_pb).unwrap_or_else(|| {
                trailhound_core::AccountMetadata::external(&event.recipient_account_id)
            });
            Ok(EnrichedEvent {
                event,
                account: Arc::new(account),
            })
        })
        .collect()
}

/// One Observe, unary or from a stream.
async fn observe_one(
    detect: &Arc<Detect>,
    req: pb::ObserveRequest,
) -> Result<pb::ObserveResponse, Status> {
    let events = decode_events(req.events)?;
    check_owned(detect.shard(), &events)?;
    let peers = shared_from_pb("peer_rising", req.peer_rising)?;
    let outcome = detect
        .accept_shared(events, peers)
        .await
        .map_err(to_status)?;
    Ok(pb::ObserveResponse {
        accepted: outcome.accepted,
        late: outcome.late,
        anomalies: outcome.anomalies.len() as u32,
        quarantined: outcome.quarantined,
        rising: detect.take_shared().iter().map(shared_to_pb).collect(),
    })
}

const MAX_PAGE: u32 = 1000;

type AnomalyStream = Pin<Box<dyn Stream<Item = Result<common::Anomaly, Status>> + Send>>;

#[tonic::async_trait]
impl DetectService for DetectGrpc {
    async fn observe(
        &self,
        req: Request<pb::ObserveRequest>,
    ) -> Result<Response<pb::ObserveResponse>, Status> {
        observe_one(&self.detect, req.into_inner())
            .await
            .map(Response::new)
    }

    type ObserveStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::ObserveResponse, Status>> + Send>>;

    /// Applies each request in the order it came, answering in that
    /// order; the first refusal ends the stream (nothing after it is
    /// applied, so the client's resend keeps the order).
    async fn observe_stream(
        &self,
        req: Request<tonic::Streaming<pb::ObserveRequest>>,
    ) -> Result<Response<Self::ObserveStreamStream>, Status> {
        let mut requests = req.into_inner();
        let detect = self.detect.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                let answer = match requests.message().await {
                    Ok(Some(m)) => {
                        let span = trailhound_runtime::telemetry::message_span(
                            "trailhound.detect.v1.DetectService/Observe",
                            &m.traceparent,
                        );
                        use tracing::Instrument;
                        observe_one(&detect, m).instrument(span).await
                    }
                    Ok(None) => return,
                    Err(s) => Err(s),
                };
                let stop = answer.is_err();
                if tx.send(answer).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_late_events(
        &self,
        req: Request<pb::ListLateEventsRequest>,
    ) -> Result<Response<pb::ListLateEventsResponse>, Status> {
        let r = req.into_inner();
        check::account_filter(&r.account_id)?;
        check::at_most("page_size", r.page_size, MAX_PAGE)?;
        let size = check::page_size(r.page_size);
        let token = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let (events, next) = self
            .detect
            .late_events(&r.detector, &r.account_id, size, token)
            .map_err(to_status)?;
        let ts = trailhound_core::convert::timestamp_ms;
        Ok(Response::new(pb::ListLateEventsResponse {
            events: events
                .into_iter()
                .map(|l| pb::LateEvent {
                    detector: l.detector,
                    event_id: l.event_id,
                    account_id: l.account_id,
                    region: l.region,
                    event_time: Some(ts(l.event_time_ms)),
                    window_start: Some(ts(l.window_start_ms)),
                    watermark: Some(ts(l.watermark_ms)),
                    reason: l.reason,
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn flush(
        &self,
        _req: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        let anomalies = self.detect.flush_and_forward().await.map_err(to_status)?;
        Ok(Response::new(pb::FlushResponse {
            anomalies: anomalies.iter().map(anomaly_to_pb).collect(),
            rising: self.detect.take_shared().iter().map(shared_to_pb).collect(),
        }))
    }

    async fn list_anomalies(
        &self,
        req: Request<pb::ListAnomaliesRequest>,
    ) -> Result<Response<pb::ListAnomaliesResponse>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        let environment = check::environment(&r.environment)?;
        check::account_filter(&r.account_id)?;
        if !(0.0..=1.0).contains(&r.min_grade) {
            return Err(status::invalid("min_grade", "must be within 0..1"));
        }
        check::at_most("page_size", r.page_size, MAX_PAGE)?;
        let filter = AnomalyFilter {
            account_id: r.account_id,
            environment,
            ou: r.ou,
            detector: r.detector,
            service: r.service,
            region: r.region,
            start_ms: r.start_time.as_ref().map(to_millis),
            end_ms: r.end_time.as_ref().map(to_millis),
            min_grade: r.min_grade,
            scope,
        };
        let page_size = check::page_size(r.page_size);
        let token = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        if let Some(t) = token
            && !t.contains('|')
        {
            return Err(status::invalid(
                "page_token",
                "not a token from a previous response",
            ));
        }
        let (anomalies, next) = self
            .detect
            .list_any(&filter, page_size, token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListAnomaliesResponse {
            anomalies: anomalies.iter().map(anomaly_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn get_anomaly(
        &self,
        req: Request<pb::GetAnomalyRequest>,
    ) -> Result<Response<common::Anomaly>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        let id = r.id;
        check::not_empty("id", &id)?;
        // Out of scope reads exactly like absent.
        match self.detect.get(&id).map_err(to_status)? {
            Some(a) if scope.allows(&a.account_id, &a.ou_path, a.environment) => {
                Ok(Response::new(anomaly_to_pb(&a)))
            }
            _ => Err(Status::not_found(format!("anomaly {id} not found"))),
        }
    }

    type WatchAnomaliesStream = AnomalyStream;

    async fn watch_anomalies(
        &self,
        req: Request<pb::WatchAnomaliesRequest>,
    ) -> Result<Response<Self::WatchAnomaliesStream>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        if !(0.0..=1.0).contains(&r.min_grade) {
            return Err(status::invalid("min_grade", "must be within 0..1"));
        }
        // Subscribe before reading the store so nothing falls in between.
        let mut live = self.detect.subscribe();
        let backlog = match &r.since {
            Some(since) => self
                .detect
                .detected_since(to_millis(since))
                .map_err(to_status)?,
            None => Vec::new(),
        };
        let wanted = move |a: &trailhound_core::Anomaly| {
            scope.allows(&a.account_id, &a.ou_path, a.environment)
                && (r.account_id.is_empty() || a.account_id == r.account_id)
                && (r.detector.is_empty() || a.detector == r.detector)
                && a.grade >= r.min_grade
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut sent = std::collections::HashSet::new();
            for a in backlog.iter().filter(|a| wanted(a)) {
                sent.insert(a.id.clone());
                if tx.send(Ok(anomaly_to_pb(a))).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(a) => {
                        if !wanted(&a) || sent.contains(&a.id) {
                            continue;
                        }
                        if tx.send(Ok(anomaly_to_pb(&a))).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            skipped = n,
                            "watcher fell behind; anomalies skipped (they are in ListAnomalies)"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_usage_series(
        &self,
        req: Request<pb::GetUsageSeriesRequest>,
    ) -> Result<Response<pb::GetUsageSeriesResponse>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        check::not_empty("detector", &r.detector)?;
        check::account_id(&r.account_id)?;
        let spec = self
            .detect
            .detector(&r.detector)
            .ok_or_else(|| Status::not_found(format!("detector {} not found", r.detector)))?;
        let mut parts = Vec::new();
        let mut entity = Vec::new();
        for f in &spec.category_fields {
            let v = match f.as_str() {
                "recipientAccountId" => r.account_id.clone(),
                "awsRegion" => {
                    if r.region.is_empty() {
                        return Err(status::invalid(
                            "region",
                            "this detector is per region: name one",
                        ));
                    }
                    r.region.clone()
                }
                other => {
                    return Err(status::invalid(
                        "detector",
                        &format!("series by {other} are not addressable through this call"),
                    ));
                }
            };
            entity.push(common::EntityValue {
                field: f.to_string(),
                value: v.clone(),
            });
            parts.push(v);
        }
        let key = parts.join("/");
        // A series not keyed by account (per region, say) sums every
        // account's activity: only the whole organization's to see.
        let per_account = spec
            .category_fields
            .iter()
            .any(|f| f.as_str() == "recipientAccountId");
        let visible = if per_account {
            self.account_visible(&scope, &r.account_id).await?
        } else {
            scope.is_unrestricted()
        };
        if !visible {
            // What an entity without data answers.
            return Ok(Response::new(pb::GetUsageSeriesResponse {
                detector: r.detector,
                entity,
                points: Vec::new(),
            }));
        }
        let end = match r.end_time.as_ref() {
            Some(t) => to_millis(t),
            None => self
                .detect
                .series_latest_any(&r.detector, &key)
                .await
                .map_err(to_status)?
                .map(|ms| ms + spec.interval_ms())
                .unwrap_or_else(|| Utc::now().timestamp_millis()),
        };
        let start = r
            .start_time
            .as_ref()
            .map(to_millis)
            .unwrap_or(end - 14 * 86_400_000);
        if start >= end {
            return Err(status::invalid("start_time", "must be before end_time"));
        }
        let points = self
            .detect
            .series_any(&r.detector, &key, start, end)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetUsageSeriesResponse {
            detector: r.detector,
            entity,
            points: points
                .into_iter()
                .map(|p| pb::SeriesPoint {
                    window_start: Some(timestamp_ms(p.window_start_ms)),
                    actual: p.actual,
                    expected: p.expected,
                    lower: p.lower,
                    upper: p.upper,
                    grade: p.grade,
                })
                .collect(),
        }))
    }

    async fn list_detectors(
        &self,
        _req: Request<pb::ListDetectorsRequest>,
    ) -> Result<Response<pb::ListDetectorsResponse>, Status> {
        Ok(Response::new(pb::ListDetectorsResponse {
            detectors: self.detect.detectors().iter().map(detector_to_pb).collect(),
        }))
    }

    async fn get_detector(
        &self,
        req: Request<pb::DetectorRef>,
    ) -> Result<Response<common::Detector>, Status> {
        let name = req.into_inner().name;
        self.detect
            .detector(&name)
            .map(|d| Response::new(detector_to_pb(&d)))
            .ok_or_else(|| Status::not_found(format!("detector {name} not found")))
    }

    async fn create_detector(
        &self,
        req: Request<common::Detector>,
    ) -> Result<Response<common::Detector>, Status> {
        let spec = detector_from_pb(req.into_inner()).map_err(invalid)?;
        let d = self.detect.create_detector(spec).map_err(to_status)?;
        Ok(Response::new(detector_to_pb(&d)))
    }

    async fn update_detector(
        &self,
        req: Request<common::Detector>,
    ) -> Result<Response<common::Detector>, Status> {
        let spec = detector_from_pb(req.into_inner()).map_err(invalid)?;
        let d = self.detect.update_detector(spec).map_err(to_status)?;
        Ok(Response::new(detector_to_pb(&d)))
    }

    async fn delete_detector(
        &self,
        req: Request<pb::DetectorRef>,
    ) -> Result<Response<pb::DeleteDetectorResponse>, Status> {
        self.detect
            .delete_detector(&req.into_inner().name)
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteDetectorResponse {}))
    }

    async fn start_detector(
        &self,
        req: Request<pb::DetectorRef>,
    ) -> Result<Response<common::Detector>, Status> {
        let d = self
            .detect
            .set_enabled(&req.into_inner().name, true)
            .map_err(to_status)?;
        Ok(Response::new(detector_to_pb(&d)))
    }

    async fn stop_detector(
        &self,
        req: Request<pb::DetectorRef>,
    ) -> Result<Response<common::Detector>, Status> {
        let d = self
            .detect
            .set_enabled(&req.into_inner().name, false)
            .map_err(to_status)?;
        Ok(Response::new(detector_to_pb(&d)))
    }

    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::DetectStats>, Status> {
        let (s, entities, watermark) = self.detect.stats();
        let lag = if watermark == i64::MIN {
            0.0
        } else {
            (Utc::now().timestamp_millis() - watermark) as f64 / 1000.0
        };
        Ok(Response::new(pb::DetectStats {
            events: s.events,
            late_events: s.late_events,
            windows_closed: s.windows_closed,
            anomalies: s.anomalies,
            entities: entities as u64,
            watermark_lag_seconds: lag,
        }))
    }

    async fn stats(
        &self,
        _req: Request<common::StatsRequest>,
    ) -> Result<Response<common::ServiceStats>, Status> {
        trailhound_runtime::stats::reply(self.detect.service_stats())
    }
}

/// Every anomaly a detect server holds, newest window first, read page by
/// page through ListAnomalies: what the demo and the end-to-end tests
/// compare.
pub async fn all_anomalies(
    client: &mut trailhound_proto::detect::v1::detect_service_client::DetectServiceClient<
        tonic::transport::Channel,
    >,
) -> Result<Vec<common::Anomaly>, Status> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_anomalies(pb::ListAnomaliesRequest {
                page_size: MAX_PAGE,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        out.extend(page.anomalies);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}
