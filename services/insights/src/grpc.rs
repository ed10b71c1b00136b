//! The gRPC face of insights: decode, call the logic, map errors. Nothing
//! here decides anything about an anomaly.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use trailhound_core::Insight;
use trailhound_core::convert::{anomaly_from_pb, insight_to_pb, severity_from_pb};
use trailhound_proto::insights::v1 as pb;
use trailhound_proto::insights::v1::insights_service_server::InsightsService;
use trailhound_runtime::status::{self, check};

use crate::ask::MAX_QUESTION_CHARS;
use crate::service::{InsightFilter, Insights, InsightsError};

pub struct InsightsGrpc {
    insights: Arc<Insights>,
}

impl InsightsGrpc {
    pub fn new(insights: Arc<Insights>) -> Self {
        Self { insights }
    }
}

fn to_status(e: InsightsError) -> Status {
    status::of(&e)
}

type InsightStream = Pin<Box<dyn Stream<Item = Result<pb::Insight, Status>> + Send>>;

fn decode_anomalies(
    list: Vec<trailhound_proto::common::v1::Anomaly>,
    field: &str,
) -> Result<Vec<trailhound_core::Anomaly>, Status> {
    list.into_iter()
        .enumerate()
        .map(|(i, a)| {
            anomaly_from_pb(a).map_err(|e| {
                status::invalid(
                    &format!("{field}[{i}].{}", e.field.trim_start_matches("anomaly.")),
                    &e.reason,
                )
            })
        })
        .collect()
}

#[tonic::async_trait]
impl InsightsService for InsightsGrpc {
    async fn analyze(
        &self,
        req: Request<pb::AnalyzeRequest>,
    ) -> Result<Response<pb::Insight>, Status> {
        let a = req
            .into_inner()
            .anomaly
            .ok_or_else(|| status::invalid("anomaly", "missing"))?;
        let anomaly = anomaly_from_pb(a).map_err(|e| status::invalid(&e.field, &e.reason))?;
        let mut out = self
            .insights
            .analyze_off_thread(vec![anomaly])
            .await
            .map_err(to_status)?;
        let one = out
            .pop()
            .ok_or_else(|| Status::internal("analysis produced no insight"))?;
        Ok(Response::new(insight_to_pb(&one)))
    }

    async fn analyze_batch(
        &self,
        req: Request<pb::AnalyzeBatchRequest>,
    ) -> Result<Response<pb::AnalyzeBatchResponse>, Status> {
        let anomalies = decode_anomalies(req.into_inner().anomalies, "anomalies")?;
        let out = self
            .insights
            .analyze_off_thread(anomalies)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AnalyzeBatchResponse {
            insights: out.iter().map(insight_to_pb).collect(),
        }))
    }

    async fn get_insight(
        &self,
        req: Request<pb::GetInsightRequest>,
    ) -> Result<Response<pb::Insight>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        let id = r.id;
        check::not_empty("id", &id)?;
        // Out of scope reads exactly like absent.
        match self.insights.get(&id).map_err(to_status)? {
            Some(i) if visible(&scope, &i) => {
                Ok(Response::new(scoped_pb(&self.insights, &scope, &i)))
            }
            _ => Err(Status::not_found(format!("insight {id} not found"))),
        }
    }

    async fn list_insights(
        &self,
        req: Request<pb::ListInsightsRequest>,
    ) -> Result<Response<pb::ListInsightsResponse>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        check::account_filter(&r.account_id)?;
        let environment = check::environment(&r.environment)?;
        if !r.page_token.is_empty() && !r.page_token.contains('|') {
            return Err(status::invalid(
                "page_token",
                "not a token this service returned",
            ));
        }
        let min_severity = severity_from_pb(r.min_severity)
            .map_err(|e| status::invalid("min_severity", &e.reason))?;
        let filter = InsightFilter {
            account_id: (!r.account_id.is_empty()).then_some(r.account_id),
            environment,
            min_severity,
            detector: (!r.detector.is_empty()).then_some(r.detector),
            incident_id: (!r.incident_id.is_empty()).then_some(r.incident_id),
            start: check::time("start_time", r.start_time.as_ref())?,
            end: check::time("end_time", r.end_time.as_ref())?,
            include_suppressed: r.include_suppressed,
            scope: scope.clone(),
        };
        let size = check::page_size(r.page_size);
        let token = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let (page, next) = self
            .insights
            .list(&filter, size, token)
            .map_err(to_status)?;
        Ok(Response::new(pb::ListInsightsResponse {
            // Filtered again as the caller sees them: a scoped view can
            // lower a severity (see `ScopedView`).
            insights: page
                .iter()
                .map(|i| self.insights.scoped(&scope, i))
                .filter(|i| min_severity.is_none_or(|s| i.severity >= s))
                .map(|i| insight_to_pb(&i))
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    type WatchInsightsStream = InsightStream;

    async fn watch_insights(
        &self,
        req: Request<pb::WatchInsightsRequest>,
    ) -> Result<Response<Self::WatchInsightsStream>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        let since = check::time("since", r.since.as_ref())?;
        let include_suppressed = r.include_suppressed;
        // Subscribe before reading the store, so nothing falls between.
        let mut live = self.insights.subscribe();
        let insights = self.insights.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::Insight, Status>>(256);
        tokio::spawn(async move {
            let keep =
                |i: &Insight| (include_suppressed || !i.is_suppressed()) && visible(&scope, i);
            let mut sent: HashSet<String> = HashSet::new();
            let mut last = since;
            let mut catch_up = since;
            loop {
                if let Some(from) = catch_up.take() {
                    let missed = match insights.analyzed_since(from, 100_000) {
                        Ok(m) => m,
                        Err(e) => {
                            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                            return;
                        }
                    };
                    for i in missed {
                        last = Some(last.map_or(i.analyzed_at, |l| l.max(i.analyzed_at)));
                        if keep(&i)
                            && sent.insert(i.id.clone())
                            && tx.send(Ok(scoped_pb(&insights, &scope, &i))).await.is_err()
                        {
                            return;
                        }
                    }
                }
                match live.recv().await {
                    Ok(i) => {
                        last = Some(i.analyzed_at);
                        // Seen in the catch-up: skip; afterwards ids only
                        // repeat when an anomaly is re-analyzed, which is
                        // news again.
                        if sent.remove(&i.id) && since.is_some() {
                            continue;
                        }
                        if keep(&i) && tx.send(Ok(scoped_pb(&insights, &scope, &i))).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "insight watcher fell behind; catching up from the store"
                        );
                        catch_up = last.or(Some(chrono::Utc::now()));
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ask(&self, req: Request<pb::AskRequest>) -> Result<Response<pb::AskResponse>, Status> {
        let (scope, r) = trailhound_runtime::security::scoped(req);
        // Checked here too, before anything is allocated for it.
        if r.question.len() > MAX_QUESTION_CHARS * 4 {
            return Err(status::invalid(
                "question",
                &format!(
                    "is {} bytes; at most {MAX_QUESTION_CHARS} characters are accepted",
                    r.question.len()
                ),
            ));
        }
        let limit = if r.limit == 0 { 20 } else { r.limit as usize };
        let a = self
            .insights
            .ask_in(&r.question, limit, &scope)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AskResponse {
            answer: a.answer,
            understood: a.understood,
            fully_understood: a.fully_understood,
            results: a
                .results
                .iter()
                .map(|i| scoped_pb(&self.insights, &scope, i))
                .collect(),
            account_costs: a
                .account_costs
                .into_iter()
                .map(|c| pb::AccountCost {
                    account_id: c.account_id,
                    account_name: c.account_name,
                    environment: c.environment,
                    usd_per_30_days: c.usd_per_30_days,
                    insights: c.insights,
                })
                .collect(),
            groups: a
                .groups
                .into_iter()
                .map(|g| pb::GroupSummary {
                    name: g.name,
                    insights: g.insights,
                    accounts: g.accounts,
                    usd_per_30_days: g.usd_per_30_days,
                    by_detector: g.by_detector.into_iter().collect(),
                    by_severity: g.by_severity.into_iter().collect(),
                })
                .collect(),
            backend: a.backend,
        }))
    }

    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::InsightsStats>, Status> {
        let s = self.insights.stats();
        Ok(Response::new(pb::InsightsStats {
            anomalies_analyzed: s.analyzed.load(Ordering::Relaxed),
            suppressed: s.suppressed.load(Ordering::Relaxed),
            correlated: s.correlated.load(Ordering::Relaxed),
            questions: s.questions.load(Ordering::Relaxed),
            watchers: self.insights.watchers() as u64,
        }))
    }

    async fn stats(
        &self,
        _req: Request<trailhound_proto::common::v1::StatsRequest>,
    ) -> Result<Response<trailhound_proto::common::v1::ServiceStats>, Status> {
        trailhound_runtime::stats::reply(self.insights.service_stats())
    }
}

/// Whether a caller with `scope` may see insight `i`.
fn visible(scope: &trailhound_core::Scope, i: &Insight) -> bool {
    let a = &i.anomaly;
    scope.allows(&a.account_id, &a.ou_path, a.environment)
}

/// `i` as a caller with `scope` may see it: an org-wide incident names
/// only the other accounts the scope allows, and counts only those.
fn scoped_pb(insights: &Insights, scope: &trailhound_core::Scope, i: &Insight) -> pb::Insight {
    if scope.is_unrestricted() {
        return insight_to_pb(i);
    }
    insight_to_pb(&insights.scoped(scope, i))
}
