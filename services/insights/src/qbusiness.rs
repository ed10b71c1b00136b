//! Amazon Q Business as insights' second backend: a connector that keeps a
//! Q Business index in sync with insights (BatchPutDocument with typed
//! attributes, BatchDeleteDocument for expired ones), and an
//! [`AskBackend`] that answers with ChatSync, narrowed by attribute filters
//! taken from the question.
//!
//! Q Business closed to new customers on 2026-07-31; existing customers
//! still use it, so the built-in engine stays the default and this is
//! chosen by configuration (`[insights.qbusiness]`). Nothing emulates Q
//! Business locally: the tests check every request against the documented
//! REST-JSON wire format with a strict local server, not a live service.
//!
//! Documents: id = the insight id; title = its summary; content = the
//! insight in plain text (PLAIN_TEXT, base64 on the wire); attributes, all
//! typed: `account_id`, `account_name`, `environment`, `ou_path`,
//! `detector`, `service`, `region`, `severity` (strings), `severity_rank`
//! and `cost_usd_per_30_days` (longs), `window_start` and `window_end`
//! (dates), `incident_id`, plus the reserved `_source_uri`
//! (`trailhound://insights/<id>`) and `_created_at`. Custom attributes must
//! exist in the index: `configure_index = true` adds them with UpdateIndex.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_qbusiness::Client;
use aws_sdk_qbusiness::primitives::{Blob, DateTime as AwsDateTime};
use aws_sdk_qbusiness::types::{
    AttributeFilter, AttributeType, ContentType, DeleteDocument, Document, DocumentAttribute,
    DocumentAttributeConfiguration, DocumentAttributeValue, DocumentContent,
    Status as SearchStatus,
};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use trailhound_core::{Environment, Insight};

use crate::ask::{Answer, AskBackend, AskError, filters, validate};
use crate::service::Insights;
use crate::store::InsightStore;

pub use crate::config::QBusinessConfig;

#[derive(Debug, thiserror::Error)]
pub enum QBusinessError {
    #[error("{0}")]
    Call(String),
    #[error("Q Business refused {failed} of {total} documents: {reasons}")]
    Failed {
        failed: usize,
        total: usize,
        reasons: String,
    },
}

/// Documents per BatchPutDocument / BatchDeleteDocument call (the API's
/// limit).
const BATCH: usize = 10;

/// The custom attributes trailhound writes, with their index types.
pub const ATTRIBUTES: [(&str, &str); 13] = [
    ("account_id", "STRING"),
    ("account_name", "STRING"),
    ("environment", "STRING"),
    ("ou_path", "STRING"),
    ("detector", "STRING"),
    ("service", "STRING"),
    ("region", "STRING"),
    ("severity", "STRING"),
    ("severity_rank", "NUMBER"),
    ("cost_usd_per_30_days", "NUMBER"),
    ("window_start", "DATE"),
    ("window_end", "DATE"),
    ("incident_id", "STRING"),
];

fn aws_time(t: DateTime<Utc>) -> AwsDateTime {
    AwsDateTime::from_secs(t.timestamp())
}

fn attr(name: &str, value: DocumentAttributeValue) -> Option<DocumentAttribute> {
    DocumentAttribute::builder()
        .name(name)
        .value(value)
        .build()
        .ok()
}

fn text(i: &Insight) -> String {
    let a = &i.anomaly;
    let mut out = vec![
        i.summary.clone(),
        format!(
            "Account {} ({}), environment {}, OU {}, region {}, detector {}, window {} to {} UTC.",
            a.account_name,
            a.account_id,
            a.environment,
            a.ou_path.join("/"),
            a.region,
            a.detector,
            a.window_start.format("%Y-%m-%d %H:%M"),
            a.window_end.format("%H:%M")
        ),
        format!("Root cause: {}", i.root_cause.explanation),
        format!(
            "Cost impact: ${:.2} per hour, ${:.0} per 30 days{}. Assumptions: {}",
            i.cost.usd_per_hour,
            i.cost.usd_per_30_days,
            if i.cost.estimated { " (estimated)" } else { "" },
            i.cost.assumptions.join("; ")
        ),
        format!(
            "Severity {} because: {}",
            i.severity.label(),
            i.severity_reasons.join("; ")
        ),
    ];
    if let Some(c) = &i.correlation {
        out.push(format!(
            "Also seen in accounts {} (same {} {}).",
            c.account_ids.join(", "),
            c.kind,
            c.value
        ));
    }
    for r in &i.recommendations {
        out.push(format!(
            "Recommendation: {}: {}",
            r.title,
            r.actions.join(" ")
        ));
    }
    out.join("\n")
}

/// An insight as a Q Business document.
pub fn document(i: &Insight) -> Result<Document, QBusinessError> {
    let a = &i.anomaly;
    let s = |v: &str| DocumentAttributeValue::StringValue(v.to_string());
    let attributes: Vec<DocumentAttribute> = [
        attr("account_id", s(&a.account_id)),
        attr("account_name", s(&a.account_name)),
        attr("environment", s(a.environment.as_str())),
        attr("ou_path", s(&a.ou_path.join("/"))),
        attr("detector", s(&a.detector)),
        attr("service", s(&a.service)),
        attr("region", s(&a.region)),
        attr("severity", s(i.severity.as_str())),
        attr(
            "severity_rank",
            DocumentAttributeValue::LongValue(i.severity as i64 + 1),
        ),
        attr(
            "cost_usd_per_30_days",
            DocumentAttributeValue::LongValue(
                i.cost.usd_per_30_days.round().clamp(0.0, 1e15) as i64
            ),
        ),
        attr(
            "window_start",
            DocumentAttributeValue::DateValue(aws_time(a.window_start)),
        ),
        attr(
            "window_end",
            DocumentAttributeValue::DateValue(aws_time(a.window_end)),
        ),
        attr("incident_id", s(&i.incident_id)),
        attr("_source_uri", s(&format!("trailhound://insights/{}", i.id))),
        attr(
            "_created_at",
            DocumentAttributeValue::DateValue(aws_time(i.analyzed_at)),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    Document::builder()
        .id(&i.id)
        .title(i.summary.chars().take(500).collect::<String>())
        .content_type(ContentType::PlainText)
        .content(DocumentContent::Blob(Blob::new(text(i).into_bytes())))
        .set_attributes(Some(attributes))
        .build()
        .map_err(|e| QBusinessError::Call(format!("failed to build document {}: {e}", i.id)))
}

/// Keeps a Q Business index in sync with insights.
#[derive(Clone)]
pub struct Connector {
    client: Client,
    config: QBusinessConfig,
    limiter: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("application_id", &self.config.application_id)
            .field("index_id", &self.config.index_id)
            .finish()
    }
}

impl Connector {
    pub fn new(aws: &trailhound_aws::Aws, config: QBusinessConfig) -> Self {
        Self {
            client: Client::new(&aws.sdk_config("qbusiness")),
            config,
            limiter: aws.limiter(),
        }
    }

    fn resource(&self) -> String {
        format!(
            "application {} index {}",
            self.config.application_id, self.config.index_id
        )
    }

    /// Adds trailhound's attributes to the index, searchable.
    pub async fn configure_index(&self) -> Result<(), QBusinessError> {
        let configs: Vec<DocumentAttributeConfiguration> = ATTRIBUTES
            .iter()
            .map(|(name, ty)| {
                DocumentAttributeConfiguration::builder()
                    .name(*name)
                    .r#type(AttributeType::from(*ty))
                    .search(SearchStatus::Enabled)
                    .build()
            })
            .collect();
        self.client
            .update_index()
            .application_id(&self.config.application_id)
            .index_id(&self.config.index_id)
            .set_document_attribute_configurations(Some(configs))
            .send()
            .await
            .map_err(|e| {
                QBusinessError::Call(trailhound_aws::explain(
                    &e,
                    "qbusiness:UpdateIndex",
                    &self.resource(),
                ))
            })?;
        Ok(())
    }

    /// Puts insights into the index, ten per call; documents the service
    /// refuses are reported together with why.
    pub async fn put(&self, insights: &[Insight]) -> Result<usize, QBusinessError> {
        let mut refused: Vec<String> = Vec::new();
        let mut sent = 0;
        for chunk in insights.chunks(BATCH) {
            let docs = chunk.iter().map(document).collect::<Result<Vec<_>, _>>()?;
            let _permit = self.limiter.acquire().await;
            let out = self
                .client
                .batch_put_document()
                .application_id(&self.config.application_id)
                .index_id(&self.config.index_id)
                .set_documents(Some(docs))
                .send()
                .await
                .map_err(|e| {
                    QBusinessError::Call(trailhound_aws::explain(
                        &e,
                        "qbusiness:BatchPutDocument",
                        &self.resource(),
                    ))
                })?;
            for f in out.failed_documents() {
                refused.push(format!(
                    "{}: {}",
                    f.id().unwrap_or("?"),
                    f.error()
                        .and_then(|e| e.error_message())
                        .unwrap_or("no reason given")
                ));
            }
            sent += chunk.len();
        }
        if refused.is_empty() {
            Ok(sent)
        } else {
            Err(QBusinessError::Failed {
                failed: refused.len(),
                total: sent,
                reasons: refused.join("; "),
            })
        }
    }

    /// Deletes documents by insight id, ten per call.
    pub async fn delete(&self, ids: &[String]) -> Result<usize, QBusinessError> {
        for chunk in ids.chunks(BATCH) {
            let docs: Vec<DeleteDocument> = chunk
                .iter()
                .filter_map(|id| DeleteDocument::builder().document_id(id).build().ok())
                .collect();
            let _permit = self.limiter.acquire().await;
            let out = self
                .client
                .batch_delete_document()
                .application_id(&self.config.application_id)
                .index_id(&self.config.index_id)
                .set_documents(Some(docs))
                .send()
                .await
                .map_err(|e| {
                    QBusinessError::Call(trailhound_aws::explain(
                        &e,
                        "qbusiness:BatchDeleteDocument",
                        &self.resource(),
                    ))
                })?;
            if !out.failed_documents().is_empty() {
                return Err(QBusinessError::Failed {
                    failed: out.failed_documents().len(),
                    total: chunk.len(),
                    reasons: out
                        .failed_documents()
                        .iter()
                        .map(|f| f.id().unwrap_or("?").to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(ids.len())
    }

    /// Ids of stored insights whose window ended before `cutoff`.
    pub fn expired(store: &InsightStore, cutoff: DateTime<Utc>) -> Result<Vec<String>, String> {
        let (old, _) = store
            .scan(None, 100_000, |i| i.anomaly.window_end < cutoff)
            .map_err(|e| e.to_string())?;
        Ok(old.into_iter().map(|i| i.id).collect())
    }
}

/// Follows the insight stream into the index until `shutdown`, and deletes
/// documents past the retention. Failures are logged and retried with the
/// next batch; nothing here can stall analysis.
pub async fn sync(insights: Arc<Insights>, connector: Connector, shutdown: CancellationToken) {
    let mut feed = insights.subscribe();
    let mut cleanup =
        tokio::time::interval(connector.config.cleanup_every.max(Duration::from_secs(1)));
    let mut deleted: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = feed.recv() => match got {
                Ok(first) => {
                    let mut batch = vec![(*first).clone()];
                    while batch.len() < BATCH {
                        match feed.try_recv() {
                            Ok(i) => batch.push((*i).clone()),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = connector.put(&batch).await {
                        tracing::warn!(error = %e, documents = batch.len(), "failed to sync insights to Q Business");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "Q Business sync fell behind; missed insights reach the index on their next update");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = cleanup.tick() => {
                let retention = chrono::Duration::from_std(connector.config.retention).unwrap_or(chrono::Duration::days(30));
                match Connector::expired(insights.store(), Utc::now() - retention) {
                    Ok(ids) => {
                        let fresh: Vec<String> = ids.into_iter().filter(|id| !deleted.contains(id)).collect();
                        if !fresh.is_empty() {
                            match connector.delete(&fresh).await {
                                Ok(n) => {
                                    tracing::info!(documents = n, "deleted expired insights from Q Business");
                                    deleted.extend(fresh);
                                }
                                Err(e) => tracing::warn!(error = %e, "failed to delete expired insights from Q Business"),
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "failed to list expired insights"),
                }
            }
        }
    }
}

/// Answers with Q Business ChatSync over the synced index.
pub struct QBusinessAsk {
    client: Client,
    config: QBusinessConfig,
    store: InsightStore,
}

impl std::fmt::Debug for QBusinessAsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QBusinessAsk")
            .field("application_id", &self.config.application_id)
            .finish()
    }
}

impl QBusinessAsk {
    pub fn new(aws: &trailhound_aws::Aws, config: QBusinessConfig, store: InsightStore) -> Self {
        Self {
            client: Client::new(&aws.sdk_config("qbusiness")),
            config,
            store,
        }
    }
}

fn equals(name: &str, value: DocumentAttributeValue) -> Option<AttributeFilter> {
    attr(name, value).map(|a| AttributeFilter::builder().equals_to(a).build())
}

fn any_of(name: &str, values: &[String]) -> Option<AttributeFilter> {
    let filters: Vec<AttributeFilter> = values
        .iter()
        .filter_map(|v| equals(name, DocumentAttributeValue::StringValue(v.clone())))
        .collect();
    match filters.len() {
        0 => None,
        1 => filters.into_iter().next(),
        _ => Some(
            AttributeFilter::builder()
                .set_or_all_filters(Some(filters))
                .build(),
        ),
    }
}

/// The attribute filter a question's filters make, if any.
pub fn attribute_filter(f: &crate::ask::Filters) -> Option<AttributeFilter> {
    let mut all: Vec<AttributeFilter> = Vec::new();
    all.extend(any_of("service", &f.services));
    all.extend(any_of(
        "environment",
        &f.environments
            .iter()
            .map(|e: &Environment| e.as_str().to_string())
            .collect::<Vec<_>>(),
    ));
    all.extend(any_of("account_id", &f.account_ids));
    all.extend(any_of("region", &f.regions));
    if let Some(s) = f.min_severity
        && let Some(a) = attr(
            "severity_rank",
            DocumentAttributeValue::LongValue(s as i64 + 1),
        )
    {
        all.push(AttributeFilter::builder().greater_than_or_equals(a).build());
    }
    if let Some(since) = f.since
        && let Some(a) = attr(
            "window_start",
            DocumentAttributeValue::DateValue(aws_time(since)),
        )
    {
        all.push(AttributeFilter::builder().greater_than_or_equals(a).build());
    }
    if let Some(until) = f.until
        && let Some(a) = attr(
            "window_start",
            DocumentAttributeValue::DateValue(aws_time(until)),
        )
    {
        all.push(AttributeFilter::builder().less_than(a).build());
    }
    match all.len() {
        0 => None,
        1 => all.into_iter().next(),
        _ => Some(
            AttributeFilter::builder()
                .set_and_all_filters(Some(all))
                .build(),
        ),
    }
}

#[async_trait]
impl AskBackend for QBusinessAsk {
    fn name(&self) -> &'static str {
        "qbusiness"
    }

    async fn ask(&self, question: &str, limit: usize) -> Result<Answer, AskError> {
        let q = validate(question)?;
        let f = filters(q, &[], Utc::now());
        let mut req = self
            .client
            .chat_sync()
            .application_id(&self.config.application_id)
            .user_message(q)
            .set_attribute_filter(attribute_filter(&f));
        if let Some(mode) = &self.config.chat_mode {
            req = req.chat_mode(aws_sdk_qbusiness::types::ChatMode::from(mode.as_str()));
        }
        if let Some(user) = &self.config.user_id {
            req = req.user_id(user);
        }
        let out = req.send().await.map_err(|e| AskError::Backend {
            backend: "Amazon Q Business".into(),
            message: trailhound_aws::explain(
                &e,
                "qbusiness:ChatSync",
                &format!("application {}", self.config.application_id),
            ),
        })?;
        // The documents Q cites are insights: answer with them.
        let mut ids: BTreeMap<i32, String> = BTreeMap::new();
        for (n, s) in out.source_attributions().iter().flatten().enumerate() {
            let id = s.document_id().map(str::to_string).or_else(|| {
                s.url()
                    .and_then(|u| u.strip_prefix("trailhound://insights/"))
                    .map(str::to_string)
            });
            if let Some(id) = id {
                ids.insert(s.citation_number().unwrap_or(n as i32), id);
            }
        }
        let mut results = Vec::new();
        for id in ids.values().take(limit) {
            if let Some(i) = self.store.get(id)? {
                results.push(i);
            }
        }
        Ok(Answer {
            answer: out.system_message().unwrap_or("").to_string(),
            understood: format!(
                "{} (asked Amazon Q Business with these as attribute filters)",
                f.understood
            ),
            fully_understood: true,
            results,
            backend: "qbusiness".into(),
            ..Default::default()
        })
    }
}
