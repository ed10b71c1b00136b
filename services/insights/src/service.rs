//! The insights logic, without gRPC: anomalies in, insights out (stored,
//! broadcast to watchers), questions answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use trailhound_core::insight::Correlation;
use trailhound_core::pipeline::{AnomalySink, SinkError};
use trailhound_core::{Anomaly, AnomalyKind, Environment, Insight, Severity};
use trailhound_pricing::PriceTable;

use crate::ask::{Answer, AskBackend, AskError, BuiltinAsk};
use crate::config::InsightsConfig;
use crate::correlate::Correlator;
use crate::recommend::{Context, RecommendationRule, recommend};
use crate::rootcause::{explain, unit};
use crate::severity::{assess, suppression};
use crate::store::{InsightStore, OpenIncident, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum InsightsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Ask(#[from] AskError),
    #[error("{0}")]
    Internal(String),
}

/// How insights' adapter answers each failure.
impl trailhound_runtime::status::ServiceError for InsightsError {
    fn error_code(&self) -> trailhound_runtime::status::ErrorCode {
        use trailhound_runtime::status::ErrorCode;
        match self {
            InsightsError::Ask(AskError::Invalid(_)) => ErrorCode::InvalidArgument,
            InsightsError::Ask(AskError::Backend { .. }) => ErrorCode::Unavailable,
            InsightsError::Config(_) => ErrorCode::FailedPrecondition,
            InsightsError::Store(_) | InsightsError::Ask(AskError::Store(_)) => ErrorCode::Internal,
            InsightsError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn status_message(&self) -> String {
        match self {
            // "question: …" already names the field.
            InsightsError::Ask(AskError::Backend { backend, message }) => {
                format!("{backend}: {message}")
            }
            InsightsError::Config(e) | InsightsError::Internal(e) => e.clone(),
            e => e.to_string(),
        }
    }
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct InsightsStats {
    pub analyzed: AtomicU64,
    pub suppressed: AtomicU64,
    pub correlated: AtomicU64,
    pub questions: AtomicU64,
}

/// Filters of ListInsights.
#[derive(Clone, Debug, Default)]
pub struct InsightFilter {
    pub account_id: Option<String>,
    pub environment: Option<Environment>,
    pub min_severity: Option<Severity>,
    pub detector: Option<String>,
    pub incident_id: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub include_suppressed: bool,
    /// What the caller may see; out of scope is skipped like absent,
    /// before paging.
    pub scope: trailhound_core::Scope,
}

impl InsightFilter {
    pub fn matches(&self, i: &Insight) -> bool {
        let a = &i.anomaly;
        self.scope.allows(&a.account_id, &a.ou_path, a.environment)
            && (self.include_suppressed || !i.is_suppressed())
            && self.account_id.as_ref().is_none_or(|x| *x == a.account_id)
            && self.environment.is_none_or(|e| e == a.environment)
            && self.min_severity.is_none_or(|s| i.severity >= s)
            && self.detector.as_ref().is_none_or(|d| *d == a.detector)
            && self
                .incident_id
                .as_ref()
                .is_none_or(|x| *x == i.incident_id)
            && self.start.is_none_or(|s| a.window_start >= s)
            && self.end.is_none_or(|e| a.window_start < e)
    }
}

struct State {
    correlator: Correlator,
    /// Entity key → open incident; a write-through cache of the store's.
    incidents: HashMap<String, OpenIncident>,
}

pub struct Insights {
    config: InsightsConfig,
    prices: PriceTable,
    rules: Vec<RecommendationRule>,
    store: InsightStore,
    state: Mutex<State>,
    watchers: broadcast::Sender<Arc<Insight>>,
    ask: std::sync::RwLock<Arc<dyn AskBackend>>,
    /// Answers scoped callers when the configured engine cannot filter by
    /// scope (Amazon Q Business).
    builtin: Arc<BuiltinAsk>,
    view: crate::correlate::ScopedView,
    stats: InsightsStats,
    figures: Figures,
}

/// Figures beyond the counters, for the `Stats` RPC.
#[derive(Debug)]
struct Figures {
    common: trailhound_runtime::stats::Common,
    received: AtomicU64,
    errors: AtomicU64,
    batch: trailhound_runtime::stats::Histogram,
    pending: trailhound_runtime::stats::Pending,
    /// Milliseconds from detection to explanation of the latest anomaly.
    freshness_ms: std::sync::atomic::AtomicI64,
}

trailhound_core::debug_fields!(Insights { store, .. });

fn entity_key(a: &Anomaly) -> String {
    let mut k = a.detector.clone();
    for (_, v) in &a.entity {
        k.push('/');
        k.push_str(v);
    }
    k
}

impl Insights {
    pub fn open(
        config: InsightsConfig,
        store: InsightStore,
        prices: PriceTable,
    ) -> Result<Self, InsightsError> {
        config.validate().map_err(InsightsError::Config)?;
        let (watchers, _) = broadcast::channel(4096);
        let rules = config.recommendation_rules();
        let view =
            crate::correlate::ScopedView::new(store.clone(), &rules, config.severity.clone());
        let builtin = Arc::new(BuiltinAsk::new(store.clone()).with_view(view.clone()));
        Ok(Self {
            rules,
            state: Mutex::new(State {
                correlator: Correlator::new(config.correlation_window),
                incidents: HashMap::new(),
            }),
            ask: std::sync::RwLock::new(builtin.clone()),
            builtin,
            view,
            config,
            prices,
            store,
            watchers,
            stats: InsightsStats::default(),
            figures: Figures {
                common: trailhound_runtime::stats::Common::new("insights"),
                received: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                batch: Default::default(),
                pending: Default::default(),
                freshness_ms: std::sync::atomic::AtomicI64::new(-1),
            },
        })
    }

    /// Replaces the question-answering engine (Amazon Q Business).
    pub fn set_ask_backend(&self, backend: Arc<dyn AskBackend>) {
        *self.ask.write().unwrap_or_else(|p| p.into_inner()) = backend;
    }

    pub fn stats(&self) -> &InsightsStats {
        &self.stats
    }

    pub fn watchers(&self) -> usize {
        self.watchers.receiver_count()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Insight>> {
        self.watchers.subscribe()
    }

    pub fn store(&self) -> &InsightStore {
        &self.store
    }

    /// Explains anomalies in order, stores the insights and tells watchers.
    pub fn analyze(&self, anomalies: &[Anomaly]) -> Result<Vec<Insight>, InsightsError> {
        let f = &self.figures;
        let _pending = f.pending.begin();
        let started = std::time::Instant::now();
        f.received
            .fetch_add(anomalies.len() as u64, Ordering::Relaxed);
        let out = self.analyze_inner(anomalies);
        f.batch.record(started.elapsed());
        match &out {
            Ok(_) => {
                if let Some(a) = anomalies.last() {
                    let ms = (Utc::now() - a.detected_at).num_milliseconds().max(0);
                    f.freshness_ms.store(ms, Ordering::Relaxed);
                }
            }
            Err(_) => {
                f.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        out
    }

    /// The figures every service reports alike (the `Stats` RPC).
    /// Freshness is detection to explanation of the latest anomaly.
    pub fn service_stats(&self) -> trailhound_proto::common::v1::ServiceStats {
        let f = &self.figures;
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = f.common.stats(load(&f.received), load(&s.analyzed));
        out.queues = vec![
            trailhound_runtime::stats::queue("batches_pending", f.pending.depth(), 0),
            trailhound_runtime::stats::queue("watchers", self.watchers() as u64, 0),
        ];
        out.batch_latency = Some(f.batch.summary());
        out.errors.insert("analyze".into(), load(&f.errors));
        out.lag_seconds = f.pending.oldest_age_seconds();
        let fresh = f.freshness_ms.load(Ordering::Relaxed);
        out.freshness_seconds = (fresh >= 0).then(|| fresh as f64 / 1000.0);
        for (k, v) in [
            ("suppressed", load(&s.suppressed)),
            ("correlated", load(&s.correlated)),
            ("questions", load(&s.questions)),
        ] {
            out.gauges.insert(k.into(), v as f64);
        }
        out
    }

    fn analyze_inner(&self, anomalies: &[Anomaly]) -> Result<Vec<Insight>, InsightsError> {
        let now = Utc::now();
        let mut out = Vec::with_capacity(anomalies.len());
        let mut touched: HashMap<String, OpenIncident> = HashMap::new();
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for a in anomalies {
                let key = entity_key(a);
                let open = match state.incidents.get(&key) {
                    Some(o) => Some(o.clone()),
                    None => self.store.incident(&key)?,
                };
                let interval = (a.window_end - a.window_start)
                    .num_milliseconds()
                    .max(60_000);
                let start = a.window_start.timestamp_millis();
                let end = a.window_end.timestamp_millis();
                let incident = match open {
                    Some(o)
                        if o.last_end_ms >= start - interval && o.last_end_ms <= end + interval =>
                    {
                        OpenIncident {
                            incident_id: o.incident_id,
                            last_end_ms: o.last_end_ms.max(end),
                        }
                    }
                    _ => OpenIncident {
                        incident_id: a.id.clone(),
                        last_end_ms: end,
                    },
                };
                state.incidents.insert(key.clone(), incident.clone());
                touched.insert(key, incident.clone());
                let correlation = state.correlator.observe(a);
                out.push(self.explain(a, incident.incident_id, correlation, now));
            }
        }
        let incidents: Vec<(String, OpenIncident)> = touched.into_iter().collect();
        self.store.put(&out, &incidents)?;
        for i in &out {
            self.stats.analyzed.fetch_add(1, Ordering::Relaxed);
            if i.is_suppressed() {
                self.stats.suppressed.fetch_add(1, Ordering::Relaxed);
            }
            if i.correlation.is_some() {
                self.stats.correlated.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(
                insight = %i.id, incident = %i.incident_id, severity = %i.severity,
                usd_per_hour = i.cost.usd_per_hour, suppressed = i.is_suppressed(),
                "insight"
            );
            // No watcher is fine.
            let _ = self.watchers.send(Arc::new(i.clone()));
        }
        Ok(out)
    }

    fn explain(
        &self,
        a: &Anomaly,
        incident_id: String,
        correlation: Option<Correlation>,
        now: DateTime<Utc>,
    ) -> Insight {
        let cost = trailhound_pricing::cost_impact(a, &self.prices);
        let root_cause = explain(a);
        let accounts = correlation.as_ref().map_or(1, |c| c.account_ids.len());
        let (severity, severity_reasons) = assess(a, &cost, accounts, &self.config.severity);
        let suppressed_by = suppression(a, severity, &self.config.suppress, &self.config.severity);
        let recommendations = recommend(
            &self.rules,
            &Context {
                anomaly: a,
                usd_per_30_days: cost.usd_per_30_days,
                correlation: correlation.as_ref(),
            },
            self.config.max_recommendations,
        );
        let account = if a.account_name.is_empty() {
            a.account_id.clone()
        } else {
            format!("{} ({})", a.account_name, a.account_id)
        };
        let what = match a.kind {
            AnomalyKind::Spike => format!("{} spike", a.detector),
            AnomalyKind::Drop => format!("{} stopped", a.detector),
            AnomalyKind::NewRegion => format!("first {} in a region never used", a.detector),
            AnomalyKind::Coordinated => {
                format!("{} rising in several accounts at once", a.detector)
            }
        };
        let summary = format!(
            "{}: {what} in {account} [{}] {}: {:.0} {} vs {:.1} expected{}{}",
            severity.label(),
            a.environment,
            a.region,
            a.actual,
            unit(a),
            a.expected,
            if cost.usd_per_hour > 0.0 {
                format!(
                    ", ~${:.2}/hour{}",
                    cost.usd_per_hour,
                    if cost.estimated { " (estimated)" } else { "" }
                )
            } else {
                String::new()
            },
            correlation
                .as_ref()
                .map(|c| format!(
                    ", also in {} other accounts",
                    c.account_ids.len().saturating_sub(1)
                ))
                .unwrap_or_default()
        );
        let detect = &self.config.detect_address;
        let flags = self
            .config
            .detect_grpcurl_flags
            .as_deref()
            .unwrap_or("-plaintext");
        // Every value is quoted for the shell (the JSON bodies as one
        // word, built as JSON so a quote in a value stays data).
        use trailhound_core::text::shell_quote;
        let id_body = serde_json::json!({ "id": a.id }).to_string();
        let series_body = serde_json::json!({
            "detector": a.detector, "account_id": a.account_id, "region": a.region,
        })
        .to_string();
        let mut investigate = vec![
            format!(
                "grpcurl {flags} -d {} {detect} trailhound.detect.v1.DetectService/GetAnomaly",
                shell_quote(&id_body)
            ),
            format!(
                "grpcurl {flags} -d {} {detect} trailhound.detect.v1.DetectService/GetUsageSeries",
                shell_quote(&series_body)
            ),
            format!(
                "trailhound ask \"Why was account {} flagged {}?\"",
                a.account_id,
                a.window_start.format("on %Y-%m-%d")
            ),
        ];
        if let Some(event) = a
            .top_contributors
            .iter()
            .find(|c| c.dimension == "event_name")
        {
            investigate.push(format!(
                "aws cloudtrail lookup-events --region {} --lookup-attributes {} --start-time {} --end-time {}",
                shell_quote(&a.region),
                shell_quote(&format!("AttributeKey=EventName,AttributeValue={}", event.value)),
                a.window_start.format("%Y-%m-%dT%H:%M:%SZ"),
                a.window_end.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        Insight {
            id: a.id.clone(),
            anomaly: a.clone(),
            incident_id,
            summary,
            cost,
            root_cause,
            severity,
            severity_reasons,
            recommendations,
            correlation,
            suppressed_by,
            analyzed_at: now,
            investigate,
            trace_parent: trailhound_runtime::telemetry::traceparent(),
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<Insight>, InsightsError> {
        Ok(self.store.get(id)?)
    }

    pub fn list(
        &self,
        filter: &InsightFilter,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<Insight>, Option<String>), InsightsError> {
        Ok(self
            .store
            .scan(token, page_size.clamp(1, 1000), |i| filter.matches(i))?)
    }

    /// Stored insights analyzed at or after `since`, oldest first (what a
    /// reconnecting watcher missed).
    pub fn analyzed_since(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Insight>, InsightsError> {
        Ok(self.store.analyzed_since(since.timestamp_millis(), limit)?)
    }

    pub async fn ask(&self, question: &str, limit: usize) -> Result<Answer, InsightsError> {
        self.ask_in(question, limit, &trailhound_core::Scope::all())
            .await
    }

    /// [`Insights::ask`] over only what `scope` allows.
    pub async fn ask_in(
        &self,
        question: &str,
        limit: usize,
        scope: &trailhound_core::Scope,
    ) -> Result<Answer, InsightsError> {
        self.stats.questions.fetch_add(1, Ordering::Relaxed);
        let backend = self.ask.read().unwrap_or_else(|p| p.into_inner()).clone();
        if scope.is_unrestricted() || backend.filters_by_scope() {
            return Ok(backend.ask_in(question, limit, scope).await?);
        }
        // The engine would answer over the whole organization: a scoped
        // caller is answered by the built-in one, over its scope, and told.
        let mut a = self.builtin.ask_in(question, limit, scope).await?;
        a.understood.push_str(&format!(
            "; answered by the built-in engine over your scope ({} answers only callers who may see the whole organization)",
            backend.name()
        ));
        Ok(a)
    }

    /// `i` as a caller with `scope` may see it (its correlation's accounts
    /// and counts; see [`crate::correlate::ScopedView`]).
    pub fn scoped(&self, scope: &trailhound_core::Scope, i: &Insight) -> Insight {
        self.view.apply(scope, i)
    }
}

impl Insights {
    /// [`Insights::analyze`] on a blocking thread (it writes the store),
    /// inside the caller's span so each insight records the trace it was
    /// made in: the one way anomalies come in, over gRPC (`Analyze`,
    /// `AnalyzeBatch`) or in process ([`InsightsSink`]).
    #[tracing::instrument(name = "trailhound.insights/Analyze", skip_all, fields(anomalies = anomalies.len()))]
    pub async fn analyze_off_thread(
        self: &Arc<Self>,
        anomalies: Vec<Anomaly>,
    ) -> Result<Vec<Insight>, InsightsError> {
        let insights = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| insights.analyze(&anomalies)))
            .await
            .map_err(|e| InsightsError::Internal(format!("analysis failed: {e}")))?
    }
}

/// detect → insights in one process (`trailhound up`): the same
/// [`Insights::analyze_off_thread`] the gRPC adapter serves.
pub struct InsightsSink(pub Arc<Insights>);

#[async_trait]
impl AnomalySink for InsightsSink {
    async fn send(&self, anomalies: Vec<Anomaly>) -> Result<u64, SinkError> {
        let n = anomalies.len() as u64;
        self.0
            .analyze_off_thread(anomalies)
            .await
            .map_err(|e| SinkError {
                downstream: "insights".into(),
                message: e.to_string(),
                retryable: false,
            })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use trailhound_core::{AccountMetadata, Contributor, Scope, ScopeRule};

    use crate::config::SuppressionRule;

    fn open(dir: &std::path::Path, config: InsightsConfig) -> Insights {
        let store = InsightStore::open(&dir.join("insights.redb")).unwrap();
        Insights::open(config, store, PriceTable::builtin().unwrap()).unwrap()
    }

    fn start(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).single().unwrap() + Duration::minutes(minute)
    }

    /// A ten-minute EBS spike in a production account starting `minute`
    /// after 02:00, by an actor of that account only and a private IP, so
    /// nothing correlates across accounts.
    fn anomaly(account: &str, minute: i64) -> Anomaly {
        let mut meta = AccountMetadata::external(account);
        meta.name = format!("acct-{}", &account[..4]);
        meta.environment = Environment::Production;
        meta.known = true;
        meta.ou_path = vec!["Root".into(), "Workloads".into()];
        let contributor = |dimension: &str, value: &str| Contributor {
            dimension: dimension.into(),
            value: value.into(),
            count: 5,
            share: 1.0,
            baseline_count: 0,
            is_new: true,
        };
        let entity = vec![
            ("recipientAccountId".to_string(), account.to_string()),
            ("awsRegion".to_string(), "us-east-1".to_string()),
        ];
        Anomaly {
            id: Anomaly::make_id(
                "ebs-create-volume",
                &entity,
                start(minute).timestamp_millis(),
            ),
            detector: "ebs-create-volume".into(),
            service: "ebs".into(),
            kind: AnomalyKind::Spike,
            account_id: account.into(),
            account_name: meta.name.clone(),
            environment: Environment::Production,
            ou_path: meta.ou_path.clone(),
            region: "us-east-1".into(),
            entity,
            window_start: start(minute),
            window_end: start(minute + 10),
            observed_until: start(minute + 10),
            actual: 20.0,
            expected: 1.0,
            features: Vec::new(),
            grade: 0.8,
            confidence: 0.9,
            score: 3.0,
            event_count: 20,
            top_contributors: vec![
                contributor(
                    "principal",
                    &format!("arn:aws:iam::{account}:user/backup-{account}"),
                ),
                contributor("source_ip", "10.0.0.1"),
            ],
            detected_at: start(minute + 10),
            account: meta,
        }
    }

    /// What the store keeps: everything but the (unstored) trace.
    fn stored(i: &Insight) -> Insight {
        Insight {
            trace_parent: String::new(),
            ..i.clone()
        }
    }

    #[test]
    fn an_analyzed_anomaly_is_stored_as_an_insight_under_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        let a = anomaly("111122223333", 0);
        let out = insights.analyze(std::slice::from_ref(&a)).unwrap();
        assert_eq!(out.len(), 1);
        let i = &out[0];
        assert_eq!(i.id, a.id);
        assert_eq!(i.anomaly, a);
        // The first window of an entity opens its incident.
        assert_eq!(i.incident_id, a.id);
        assert_eq!(insights.get(&a.id).unwrap(), Some(stored(i)));
        assert_eq!(insights.get("no-such-anomaly").unwrap(), None);
        assert_eq!(insights.stats().analyzed.load(Ordering::Relaxed), 1);
    }

    /// detect raises a window again as it grows (same id): the insight is
    /// replaced, in the store and in both of its indexes, not duplicated.
    #[test]
    fn re_analyzing_an_anomaly_replaces_its_insight() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        let first = anomaly("111122223333", 0);
        insights.analyze(std::slice::from_ref(&first)).unwrap();
        let mut grown = first.clone();
        grown.actual = 60.0;
        grown.event_count = 60;
        grown.detected_at = first.detected_at + Duration::minutes(1);
        let again = insights.analyze(&[grown]).unwrap().pop().unwrap();
        assert_eq!(again.incident_id, first.id, "still its own incident");

        let (listed, next) = insights.list(&InsightFilter::default(), 100, None).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].anomaly.actual, 60.0);
        assert_eq!(next, None);
        let replayed = insights
            .analyzed_since(DateTime::<Utc>::UNIX_EPOCH, 100)
            .unwrap();
        assert_eq!(replayed.len(), 1, "{replayed:?}");
        assert_eq!(replayed[0].anomaly.actual, 60.0);
    }

    /// Adjacent windows of one entity (detector + entity values) are one
    /// incident named after its first window; a gap, another entity or
    /// another detector starts a new one.
    #[test]
    fn consecutive_windows_of_one_entity_share_the_first_windows_incident() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        let a = anomaly("111122223333", 0);
        assert_eq!(entity_key(&a), "ebs-create-volume/111122223333/us-east-1");
        let next = anomaly("111122223333", 10);
        let elsewhere = anomaly("444455556666", 10);
        let mut other_detector = anomaly("111122223333", 10);
        other_detector.detector = "ebs-delete-volume".into();
        other_detector.id = "ebs-delete-volume:111122223333:us-east-1:x".into();
        let out = insights
            .analyze(&[a.clone(), next, elsewhere.clone(), other_detector.clone()])
            .unwrap();
        let incidents: Vec<&str> = out.iter().map(|i| i.incident_id.as_str()).collect();
        assert_eq!(
            incidents,
            [
                a.id.as_str(),
                a.id.as_str(),
                elsewhere.id.as_str(),
                other_detector.id.as_str()
            ]
        );

        // Two hours later, in another batch: a new incident, which its
        // own next window then joins.
        let late = anomaly("111122223333", 120);
        let out = insights
            .analyze(&[late.clone(), anomaly("111122223333", 130)])
            .unwrap();
        assert!(out.iter().all(|i| i.incident_id == late.id), "{out:?}");
    }

    /// Open incidents live in the store, so a restart does not split an
    /// incident that spans it.
    #[test]
    fn an_incident_continues_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = anomaly("111122223333", 0);
        {
            let insights = open(dir.path(), InsightsConfig::default());
            insights.analyze(std::slice::from_ref(&a)).unwrap();
        }
        let insights = open(dir.path(), InsightsConfig::default());
        let next = insights
            .analyze(&[anomaly("111122223333", 10)])
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(next.incident_id, a.id);
    }

    #[test]
    fn watchers_receive_every_insight_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        // Nobody watching is fine.
        insights.analyze(&[anomaly("999988887777", 0)]).unwrap();
        let mut one = insights.subscribe();
        let mut two = insights.subscribe();
        assert_eq!(insights.watchers(), 2);
        let a = anomaly("111122223333", 0);
        let b = anomaly("444455556666", 0);
        insights.analyze(&[a.clone(), b.clone()]).unwrap();
        for rx in [&mut one, &mut two] {
            assert_eq!(rx.try_recv().unwrap().id, a.id);
            assert_eq!(rx.try_recv().unwrap().id, b.id);
            assert!(rx.try_recv().is_err(), "only what came after subscribing");
        }
        drop(two);
        assert_eq!(insights.watchers(), 1);
    }

    /// Suppressed insights are kept (and announced: WatchInsights and
    /// notify decide), counted, and listed only when asked for.
    #[test]
    fn suppressed_insights_are_stored_and_announced_but_listed_only_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let config = InsightsConfig {
            suppress: vec![SuppressionRule {
                name: "known backups".into(),
                accounts: vec!["111122223333".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let insights = open(dir.path(), config);
        let mut watch = insights.subscribe();
        let quiet = anomaly("111122223333", 0);
        let loud = anomaly("444455556666", 0);
        let out = insights.analyze(&[quiet.clone(), loud.clone()]).unwrap();
        assert_eq!(out[0].suppressed_by.as_deref(), Some("known backups"));
        assert_eq!(out[1].suppressed_by, None);
        assert_eq!(insights.stats().suppressed.load(Ordering::Relaxed), 1);
        assert_eq!(insights.stats().analyzed.load(Ordering::Relaxed), 2);
        assert!(watch.try_recv().unwrap().is_suppressed());

        let ids = |f: &InsightFilter| -> Vec<String> {
            insights
                .list(f, 100, None)
                .unwrap()
                .0
                .into_iter()
                .map(|i| i.id)
                .collect()
        };
        assert_eq!(
            ids(&InsightFilter::default()),
            std::slice::from_ref(&loud.id)
        );
        let mut all = ids(&InsightFilter {
            include_suppressed: true,
            ..Default::default()
        });
        all.sort();
        let mut expected = vec![quiet.id, loud.id];
        expected.sort();
        assert_eq!(all, expected);
    }

    /// Out of scope is skipped before paging: pages are full of what the
    /// caller may see, newest window first, and the last has no token.
    #[test]
    fn listing_pages_through_the_callers_scope_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        let mine = "111122223333";
        let theirs = "444455556666";
        insights
            .analyze(&[
                anomaly(mine, 0),
                anomaly(theirs, 10),
                anomaly(mine, 20),
                anomaly(theirs, 30),
                anomaly(mine, 40),
            ])
            .unwrap();
        let filter = InsightFilter {
            scope: Scope::union([ScopeRule {
                accounts: vec![mine.into()],
                ..Default::default()
            }]),
            ..Default::default()
        };
        let starts = |page: &[Insight]| -> Vec<DateTime<Utc>> {
            page.iter().map(|i| i.anomaly.window_start).collect()
        };
        let (page, token) = insights.list(&filter, 2, None).unwrap();
        assert_eq!(starts(&page), [start(40), start(20)]);
        let token = token.expect("a second page");
        let (page, token) = insights.list(&filter, 2, Some(&token)).unwrap();
        assert_eq!(starts(&page), [start(0)]);
        assert_eq!(token, None);
        // A page size of zero still makes progress.
        let (page, token) = insights.list(&filter, 0, None).unwrap();
        assert_eq!(starts(&page), [start(40)]);
        assert!(token.is_some());
    }

    /// Each criterion of ListInsights narrows on its own; times select by
    /// the window's start, from `start` inclusive to `end` exclusive.
    #[test]
    fn an_insight_filter_checks_every_criterion() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        let mut i = insights
            .analyze(&[anomaly("111122223333", 0)])
            .unwrap()
            .pop()
            .unwrap();
        i.severity = Severity::Medium;
        let pass = |f: InsightFilter, i: &Insight| assert!(f.matches(i), "{f:?} must match");
        let fail = |f: InsightFilter, i: &Insight| assert!(!f.matches(i), "{f:?} must not match");
        let any = InsightFilter::default;
        pass(any(), &i);
        pass(
            InsightFilter {
                account_id: Some("111122223333".into()),
                environment: Some(Environment::Production),
                min_severity: Some(Severity::Medium),
                detector: Some("ebs-create-volume".into()),
                incident_id: Some(i.incident_id.clone()),
                start: Some(start(0)),
                end: Some(start(1)),
                ..any()
            },
            &i,
        );
        fail(
            InsightFilter {
                account_id: Some("444455556666".into()),
                ..any()
            },
            &i,
        );
        fail(
            InsightFilter {
                environment: Some(Environment::Staging),
                ..any()
            },
            &i,
        );
        fail(
            InsightFilter {
                min_severity: Some(Severity::High),
                ..any()
            },
            &i,
        );
        fail(
            InsightFilter {
                detector: Some("ec2-run-instances".into()),
                ..any()
            },
            &i,
        );
        fail(
            InsightFilter {
                incident_id: Some("another".into()),
                ..any()
            },
            &i,
        );
        fail(
            InsightFilter {
                start: Some(start(1)),
                ..any()
            },
            &i,
        );
        fail(
            InsightFilter {
                end: Some(start(0)),
                ..any()
            },
            &i,
        );
        fail(
            InsightFilter {
                scope: Scope::union([ScopeRule {
                    environments: vec![Environment::Sandbox],
                    ..Default::default()
                }]),
                ..any()
            },
            &i,
        );
        i.suppressed_by = Some("rule".into());
        fail(any(), &i);
        pass(
            InsightFilter {
                include_suppressed: true,
                ..any()
            },
            &i,
        );
    }

    /// What a reconnecting watcher missed: analyses at or after the time,
    /// oldest first, however old their windows.
    #[test]
    fn analyzed_since_returns_later_analyses_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        insights.analyze(&[anomaly("111122223333", 0)]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let since = Utc::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let newer_window = anomaly("444455556666", 60);
        let older_window = anomaly("555566667777", 0);
        insights
            .analyze(std::slice::from_ref(&newer_window))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        insights
            .analyze(std::slice::from_ref(&older_window))
            .unwrap();
        let ids: Vec<String> = insights
            .analyzed_since(since, 100)
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, [newer_window.id.clone(), older_window.id]);
        let ids: Vec<String> = insights
            .analyzed_since(since, 1)
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, [newer_window.id]);
    }

    /// The Stats RPC: anomalies in and insights out, freshness from the
    /// latest anomaly's detection (none before any), the gauges.
    #[test]
    fn service_stats_report_throughput_freshness_and_gauges() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        assert_eq!(insights.service_stats().freshness_seconds, None);
        let mut a = anomaly("111122223333", 0);
        a.detected_at = Utc::now() - Duration::seconds(90);
        let _watch = insights.subscribe();
        insights.analyze(&[anomaly("444455556666", 0), a]).unwrap();
        let s = insights.service_stats();
        assert_eq!((s.events_in, s.events_out), (2, 2));
        let fresh = s.freshness_seconds.unwrap();
        assert!((90.0..150.0).contains(&fresh), "{fresh}");
        assert_eq!(s.errors.get("analyze"), Some(&0));
        assert_eq!(s.gauges.get("suppressed"), Some(&0.0));
        let watchers = s.queues.iter().find(|q| q.name == "watchers").unwrap();
        assert_eq!(watchers.depth, 1);
    }

    /// The summary leads with the severity and says what happened in
    /// words for each kind of anomaly.
    #[test]
    fn the_summary_says_what_kind_of_anomaly_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        for (n, (kind, words)) in [
            (AnomalyKind::Spike, "ebs-create-volume spike"),
            (AnomalyKind::Drop, "ebs-create-volume stopped"),
            (
                AnomalyKind::NewRegion,
                "first ebs-create-volume in a region never used",
            ),
            (
                AnomalyKind::Coordinated,
                "ebs-create-volume rising in several accounts at once",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            // Hours apart, so no two are one incident or correlate.
            let mut a = anomaly("111122223333", 120 * n as i64);
            a.kind = kind;
            let i = insights.analyze(&[a]).unwrap().pop().unwrap();
            let s = &i.summary;
            assert!(s.starts_with(i.severity.label()), "{s}");
            assert!(
                s.contains(&format!(
                    "{words} in acct-1111 (111122223333) [production] us-east-1"
                )),
                "{s}"
            );
        }
    }

    /// The investigate commands are ready to paste: JSON bodies quoted as
    /// one shell word, and CloudTrail's lookup of the top event name over
    /// the window when there is one.
    #[test]
    fn investigate_commands_quote_their_bodies_and_look_up_the_top_event() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        let plain = anomaly("111122223333", 0);
        let i = insights
            .analyze(std::slice::from_ref(&plain))
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(i.investigate.len(), 3, "{:?}", i.investigate);
        assert_eq!(
            i.investigate[0],
            format!(
                "grpcurl -plaintext -d '{{\"id\":\"{}\"}}' localhost:50053 trailhound.detect.v1.DetectService/GetAnomaly",
                plain.id
            )
        );
        assert!(!i.investigate.iter().any(|c| c.contains("cloudtrail")));

        let mut with_event = anomaly("444455556666", 0);
        with_event.top_contributors.push(Contributor {
            dimension: "event_name".into(),
            value: "CreateVolume".into(),
            count: 20,
            share: 1.0,
            baseline_count: 0,
            is_new: false,
        });
        let i = insights.analyze(&[with_event]).unwrap().pop().unwrap();
        assert_eq!(
            i.investigate.last().unwrap(),
            "aws cloudtrail lookup-events --region us-east-1 --lookup-attributes AttributeKey=EventName,AttributeValue=CreateVolume --start-time 2026-03-02T02:00:00Z --end-time 2026-03-02T02:10:00Z"
        );
    }

    /// An engine that limits answers to a scope itself.
    struct Scoped;

    #[async_trait]
    impl AskBackend for Scoped {
        fn name(&self) -> &'static str {
            "scoped-engine"
        }
        fn filters_by_scope(&self) -> bool {
            true
        }
        async fn ask(&self, _question: &str, _limit: usize) -> Result<Answer, AskError> {
            Ok(Answer {
                understood: "everything".into(),
                backend: "scoped-engine".into(),
                ..Default::default()
            })
        }
        async fn ask_in(
            &self,
            _question: &str,
            _limit: usize,
            scope: &Scope,
        ) -> Result<Answer, AskError> {
            Ok(Answer {
                understood: scope.describe(),
                backend: "scoped-engine".into(),
                ..Default::default()
            })
        }
    }

    /// Only engines that cannot filter by scope are bypassed for scoped
    /// callers; one that can answers them itself, with their scope.
    #[tokio::test]
    async fn an_engine_that_filters_by_scope_answers_scoped_callers_itself() {
        let dir = tempfile::tempdir().unwrap();
        let insights = open(dir.path(), InsightsConfig::default());
        insights.set_ask_backend(Arc::new(Scoped));
        let scope = Scope::union([ScopeRule {
            accounts: vec!["111122223333".into()],
            ..Default::default()
        }]);
        let a = insights
            .ask_in("Show me EC2 anomalies", 20, &scope)
            .await
            .unwrap();
        assert_eq!(a.backend, "scoped-engine");
        assert_eq!(a.understood, scope.describe());
        let a = insights.ask("Show me EC2 anomalies", 20).await.unwrap();
        assert_eq!(a.backend, "scoped-engine");
        assert_eq!(insights.stats().questions.load(Ordering::Relaxed), 2);
    }
}
