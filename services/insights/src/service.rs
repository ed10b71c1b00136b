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

impl std::fmt::Debug for Insights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Insights")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

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
            trailhound_proto::common::v1::QueueDepth {
                name: "batches_pending".into(),
                depth: f.pending.depth(),
                capacity: 0,
            },
            trailhound_proto::common::v1::QueueDepth {
                name: "watchers".into(),
                depth: self.watchers() as u64,
                capacity: 0,
            },
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
