//! The gRPC face of notify: decode, call [`Notifier`], encode. Validation
//! failures become INVALID_ARGUMENT naming the field, in one place.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trailhound_core::convert::{insight_from_pb, timestamp};
use trailhound_proto::notify::v1 as pb;
use trailhound_proto::notify::v1::notify_service_server::NotifyService;
use trailhound_runtime::status::{self, check};

use crate::notifier::{ChannelInfo, Delivery, DeliveryFilter, DeliveryStatus, Notifier};

const MAX_LIMIT: u32 = 1000;

pub struct NotifyGrpc {
    notifier: Arc<Notifier>,
}

impl NotifyGrpc {
    pub fn new(notifier: Arc<Notifier>) -> Self {
        Self { notifier }
    }
}

fn status_to_pb(s: DeliveryStatus) -> pb::DeliveryStatus {
    match s {
        DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
        DeliveryStatus::Delivered => pb::DeliveryStatus::Delivered,
        DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
        DeliveryStatus::Skipped => pb::DeliveryStatus::Skipped,
    }
}

fn status_from_pb(v: i32) -> Result<Option<DeliveryStatus>, Status> {
    match pb::DeliveryStatus::try_from(v) {
        Ok(pb::DeliveryStatus::Unspecified) => Ok(None),
        Ok(pb::DeliveryStatus::Pending) => Ok(Some(DeliveryStatus::Pending)),
        Ok(pb::DeliveryStatus::Delivered) => Ok(Some(DeliveryStatus::Delivered)),
        Ok(pb::DeliveryStatus::Failed) => Ok(Some(DeliveryStatus::Failed)),
        Ok(pb::DeliveryStatus::Skipped) => Ok(Some(DeliveryStatus::Skipped)),
        Err(_) => Err(status::invalid("status", &format!("unknown value {v}"))),
    }
}

pub fn delivery_to_pb(d: &Delivery) -> pb::Delivery {
    pb::Delivery {
        id: d.id.clone(),
        insight_id: d.insight_id.clone(),
        incident_id: d.incident_id.clone(),
        channel: d.channel.clone(),
        channel_kind: d.channel_kind.as_str().to_string(),
        rule: d.rule.clone(),
        status: status_to_pb(d.status) as i32,
        follow_up: d.follow_up,
        attempts: d.attempts,
        detail: d.detail.clone(),
        created_at: Some(timestamp(d.created_at)),
        finished_at: d.finished_at.map(timestamp),
    }
}

fn channel_to_pb(c: ChannelInfo) -> pb::Channel {
    pb::Channel {
        name: c.name,
        kind: c.kind.as_str().to_string(),
        target: c.target,
        rate_limit_per_minute: c.rate_limit_per_minute,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl NotifyService for NotifyGrpc {
    async fn notify(
        &self,
        req: Request<pb::NotifyRequest>,
    ) -> Result<Response<pb::NotifyResponse>, Status> {
        let insight = req
            .into_inner()
            .insight
            .ok_or_else(|| status::invalid("insight", "missing"))?;
        let insight = insight_from_pb(insight).map_err(|e| status::invalid(&e.field, &e.reason))?;
        let deliveries = self.notifier.notify(&insight).await;
        Ok(Response::new(pb::NotifyResponse {
            deliveries: deliveries.iter().map(delivery_to_pb).collect(),
        }))
    }

    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        check::at_most("limit", r.limit, MAX_LIMIT)?;
        let filter = DeliveryFilter {
            channel: non_empty(r.channel),
            insight_id: non_empty(r.insight_id),
            incident_id: non_empty(r.incident_id),
            status: status_from_pb(r.status)?,
            limit: r.limit as usize,
            scope,
        };
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: self
                .notifier
                .deliveries(&filter)
                .iter()
                .map(delivery_to_pb)
                .collect(),
        }))
    }

    async fn list_channels(
        &self,
        _req: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        Ok(Response::new(pb::ListChannelsResponse {
            channels: self
                .notifier
                .channels()
                .into_iter()
                .map(channel_to_pb)
                .collect(),
        }))
    }

    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::NotifyStats>, Status> {
        let s = self.notifier.stats();
        Ok(Response::new(pb::NotifyStats {
            delivered: s.delivered,
            failed: s.failed,
            skipped: s.skipped,
            retries: s.retries,
            dead_letters: s.dead_letters,
            insights_received: s.insights_received,
        }))
    }

    async fn stats(
        &self,
        _req: Request<trailhound_proto::common::v1::StatsRequest>,
    ) -> Result<Response<trailhound_proto::common::v1::ServiceStats>, Status> {
        trailhound_runtime::stats::reply(self.notifier.service_stats())
    }
}
