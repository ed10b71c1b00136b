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
            // The date again when the window ends on another day.
            a.window_end.format(
                if a.window_end.date_naive() == a.window_start.date_naive() {
                    "%H:%M"
                } else {
                    "%Y-%m-%d %H:%M"
                }
            )
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

trailhound_core::debug_fields!(Connector {
    application_id: config.application_id,
    index_id: config.index_id
});

impl Connector {
    pub fn new(aws: &trailhound_aws::Aws, config: QBusinessConfig) -> Self {
        Self {
            client: Client::new(&aws.sdk_config("qbusiness")),
            config,
            limiter: aws.limiter(),
        }
    }

    /// A failed call to `action` on this index, explained.
    fn call_failed<E, R>(
        &self,
        e: &aws_sdk_qbusiness::error::SdkError<E, R>,
        action: &str,
    ) -> QBusinessError
    where
        E: aws_sdk_qbusiness::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        QBusinessError::Call(trailhound_aws::explain(e, action, &self.resource()))
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
            .map_err(|e| self.call_failed(&e, "qbusiness:UpdateIndex"))?;
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
                .map_err(|e| self.call_failed(&e, "qbusiness:BatchPutDocument"))?;
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
                .map_err(|e| self.call_failed(&e, "qbusiness:BatchDeleteDocument"))?;
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

trailhound_core::debug_fields!(QBusinessAsk {
    application_id: config.application_id
});

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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use trailhound_core::insight::{Correlation, CostImpact, Recommendation, RootCause};
    use trailhound_core::{AccountMetadata, Anomaly, AnomalyKind, Severity};

    use crate::ask::Filters;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).single().unwrap()
    }

    /// A production GPU burst, correlated with a second account, with
    /// every part of an insight set to something recognisable.
    fn insight() -> Insight {
        let mut account = AccountMetadata::external("111122223333");
        account.name = "payments-prod".into();
        account.environment = Environment::Production;
        account.ou_path = vec!["Root".into(), "Workloads".into()];
        account.known = true;
        let anomaly = Anomaly {
            id: "ec2-run-instances:111122223333:us-east-1:1772416800000".into(),
            detector: "ec2-run-instances".into(),
            service: "ec2".into(),
            kind: AnomalyKind::Spike,
            account_id: "111122223333".into(),
            account_name: "payments-prod".into(),
            environment: Environment::Production,
            ou_path: account.ou_path.clone(),
            region: "us-east-1".into(),
            entity: vec![
                ("recipientAccountId".into(), "111122223333".into()),
                ("awsRegion".into(), "us-east-1".into()),
            ],
            window_start: at(2, 0),
            window_end: at(2, 10),
            observed_until: at(2, 10),
            actual: 40.0,
            expected: 1.0,
            features: Vec::new(),
            grade: 0.9,
            confidence: 0.9,
            score: 3.0,
            event_count: 40,
            top_contributors: Vec::new(),
            detected_at: at(2, 11),
            account,
        };
        Insight {
            id: anomaly.id.clone(),
            anomaly,
            incident_id: "ec2-run-instances:111122223333:us-east-1:1772416200000".into(),
            summary: "HIGH: ec2-run-instances spike in payments-prod (111122223333)".into(),
            cost: CostImpact {
                usd_per_hour: 12.5,
                usd_per_day: 300.0,
                usd_per_30_days: 9000.0,
                estimated: true,
                lines: Vec::new(),
                assumptions: vec![
                    "instances run all month".into(),
                    "on-demand Linux prices".into(),
                ],
                price_table_as_of: "2026-01-01".into(),
            },
            root_cause: RootCause {
                explanation: "40 g5.xlarge launched by IAM user miner".into(),
                factors: Vec::new(),
            },
            severity: Severity::High,
            severity_reasons: vec![
                "production account".into(),
                "costs $9000 per 30 days".into(),
            ],
            recommendations: vec![Recommendation {
                rule: "cryptomining".into(),
                title: "Stop the instances".into(),
                actions: vec!["Terminate them.".into(), "Rotate the keys.".into()],
            }],
            correlation: Some(Correlation {
                id: "corr:principal:user/miner:1772416800000".into(),
                kind: "principal".into(),
                value: "user/miner".into(),
                account_ids: vec!["111122223333".into(), "444455556666".into()],
                account_names: vec!["payments-prod".into(), "payments-stg".into()],
                anomaly_ids: Vec::new(),
            }),
            suppressed_by: None,
            analyzed_at: at(2, 15),
            investigate: Vec::new(),
            trace_parent: String::new(),
        }
    }

    /// A value as the tests compare it: strings bare, longs as numbers,
    /// dates as `@` epoch seconds (what goes on the wire).
    fn show_value(v: Option<&DocumentAttributeValue>) -> String {
        match v {
            Some(DocumentAttributeValue::StringValue(s)) => s.clone(),
            Some(DocumentAttributeValue::LongValue(n)) => n.to_string(),
            Some(DocumentAttributeValue::DateValue(d)) => format!("@{}", d.secs()),
            other => panic!("unexpected attribute value {other:?}"),
        }
    }

    /// A filter in a compact notation, checking on the way that every
    /// filter object sets exactly one operator (Q Business refuses more).
    fn show(f: &AttributeFilter) -> String {
        let operators = [
            !f.and_all_filters().is_empty(),
            !f.or_all_filters().is_empty(),
            f.not_filter().is_some(),
            f.equals_to().is_some(),
            f.contains_all().is_some(),
            f.contains_any().is_some(),
            f.greater_than().is_some(),
            f.greater_than_or_equals().is_some(),
            f.less_than().is_some(),
            f.less_than_or_equals().is_some(),
        ];
        assert_eq!(
            operators.iter().filter(|set| **set).count(),
            1,
            "{f:?} must set exactly one operator"
        );
        let list = |fs: &[AttributeFilter]| fs.iter().map(show).collect::<Vec<_>>().join(", ");
        let cmp =
            |a: &DocumentAttribute, op: &str| format!("{}{op}{}", a.name(), show_value(a.value()));
        if !f.and_all_filters().is_empty() {
            format!("and({})", list(f.and_all_filters()))
        } else if !f.or_all_filters().is_empty() {
            format!("or({})", list(f.or_all_filters()))
        } else if let Some(a) = f.equals_to() {
            cmp(a, "=")
        } else if let Some(a) = f.greater_than_or_equals() {
            cmp(a, ">=")
        } else if let Some(a) = f.less_than() {
            cmp(a, "<")
        } else {
            panic!("an operator attribute_filter does not use: {f:?}")
        }
    }

    fn attributes(d: &Document) -> Vec<(String, String)> {
        d.attributes()
            .iter()
            .map(|a| (a.name().to_string(), show_value(a.value())))
            .collect()
    }

    fn content(d: &Document) -> String {
        match d.content() {
            Some(DocumentContent::Blob(b)) => String::from_utf8(b.as_ref().to_vec()).unwrap(),
            other => panic!("content is not a blob: {other:?}"),
        }
    }

    /// Custom attributes must exist in the index, so the document writes
    /// exactly those `configure_index` declares, plus the two reserved
    /// ones Q Business knows.
    #[test]
    fn a_document_carries_every_configured_attribute_and_the_reserved_ones() {
        let d = document(&insight()).unwrap();
        let names: Vec<String> = attributes(&d).into_iter().map(|(n, _)| n).collect();
        let mut expected: Vec<String> = ATTRIBUTES.iter().map(|(n, _)| n.to_string()).collect();
        expected.extend(["_source_uri".to_string(), "_created_at".to_string()]);
        assert_eq!(names, expected);
    }

    /// A value of another type than the index declares is refused by Q
    /// Business, so each attribute's variant follows `ATTRIBUTES`.
    #[test]
    fn each_attribute_has_the_type_configure_index_declares() {
        let d = document(&insight()).unwrap();
        let value = |name: &str| {
            d.attributes()
                .iter()
                .find(|a| a.name() == name)
                .and_then(|a| a.value())
                .unwrap_or_else(|| panic!("no attribute {name}"))
        };
        for (name, ty) in ATTRIBUTES {
            let v = value(name);
            let ok = match ty {
                "STRING" => v.is_string_value(),
                "NUMBER" => v.is_long_value(),
                "DATE" => v.is_date_value(),
                other => panic!("{name}: unknown index type {other}"),
            };
            assert!(ok, "{name} is declared {ty} but written as {v:?}");
        }
        assert!(value("_source_uri").is_string_value());
        assert!(value("_created_at").is_date_value());
    }

    #[test]
    fn the_attributes_hold_the_insights_values() {
        let d = document(&insight()).unwrap();
        let got: BTreeMap<String, String> = attributes(&d).into_iter().collect();
        let expected: BTreeMap<String, String> = [
            ("account_id", "111122223333"),
            ("account_name", "payments-prod"),
            ("environment", "production"),
            ("ou_path", "Root/Workloads"),
            ("detector", "ec2-run-instances"),
            ("service", "ec2"),
            ("region", "us-east-1"),
            ("severity", "high"),
            ("severity_rank", "3"),
            ("cost_usd_per_30_days", "9000"),
            ("window_start", "@1772416800"),
            ("window_end", "@1772417400"),
            (
                "incident_id",
                "ec2-run-instances:111122223333:us-east-1:1772416200000",
            ),
            (
                "_source_uri",
                "trailhound://insights/ec2-run-instances:111122223333:us-east-1:1772416800000",
            ),
            // When it was analyzed, not when its window started.
            ("_created_at", "@1772417700"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, expected);
        assert_eq!(d.id(), insight().id);
        assert_eq!(d.content_type(), Some(&ContentType::PlainText));
    }

    /// A question's "high or worse" must select exactly the documents of
    /// high or critical insights: the rank documents carry and the rank
    /// filters compare against agree for every pair of severities.
    #[test]
    fn severity_ranks_of_documents_and_filters_agree() {
        for (n, s) in Severity::ALL.into_iter().enumerate() {
            let mut i = insight();
            i.severity = s;
            let d = document(&i).unwrap();
            let rank: i64 = attributes(&d)
                .into_iter()
                .find(|(k, _)| k == "severity_rank")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap();
            assert_eq!(rank, n as i64 + 1, "{s:?}");
            for min in Severity::ALL {
                let f = attribute_filter(&Filters {
                    min_severity: Some(min),
                    ..Default::default()
                })
                .unwrap();
                let a = f.greater_than_or_equals().unwrap();
                assert_eq!(a.name(), "severity_rank");
                let threshold: i64 = show_value(a.value()).parse().unwrap();
                assert_eq!(rank >= threshold, s >= min, "{s:?} vs at least {min:?}");
            }
        }
    }

    /// The index holds whole dollars: rounded, never negative (a credit
    /// is no cost), and bounded, so NaN or an absurd estimate cannot wrap.
    #[test]
    fn cost_is_whole_dollars_clamped_to_zero_and_a_ceiling() {
        let cost_of = |usd: f64| {
            let mut i = insight();
            i.cost.usd_per_30_days = usd;
            attributes(&document(&i).unwrap())
                .into_iter()
                .find(|(k, _)| k == "cost_usd_per_30_days")
                .map(|(_, v)| v)
                .unwrap()
        };
        assert_eq!(cost_of(1234.4), "1234");
        assert_eq!(cost_of(1234.5), "1235");
        assert_eq!(cost_of(0.2), "0");
        assert_eq!(cost_of(-50.0), "0");
        assert_eq!(cost_of(f64::NAN), "0");
        assert_eq!(cost_of(1e20), "1000000000000000");
        assert_eq!(cost_of(f64::INFINITY), "1000000000000000");
    }

    /// Q Business answers from the content, so it must say everything an
    /// insight says: summary, where, when, why, cost, severity,
    /// correlation and what to do.
    #[test]
    fn the_document_text_says_what_the_insight_says() {
        let text = content(&document(&insight()).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "HIGH: ec2-run-instances spike in payments-prod (111122223333)",
                "Account payments-prod (111122223333), environment production, OU Root/Workloads, region us-east-1, detector ec2-run-instances, window 2026-03-02 02:00 to 02:10 UTC.",
                "Root cause: 40 g5.xlarge launched by IAM user miner",
                "Cost impact: $12.50 per hour, $9000 per 30 days (estimated). Assumptions: instances run all month; on-demand Linux prices",
                "Severity HIGH because: production account; costs $9000 per 30 days",
                "Also seen in accounts 111122223333, 444455556666 (same principal user/miner).",
                "Recommendation: Stop the instances: Terminate them. Rotate the keys.",
            ]
        );
    }

    #[test]
    fn an_insight_without_estimate_correlation_or_recommendations_claims_none() {
        let mut i = insight();
        i.cost.estimated = false;
        i.correlation = None;
        i.recommendations.clear();
        let text = content(&document(&i).unwrap());
        assert!(!text.contains("(estimated)"), "{text}");
        assert!(!text.contains("Also seen"), "{text}");
        assert!(!text.contains("Recommendation"), "{text}");
        assert_eq!(text.lines().count(), 5, "{text}");
    }

    /// Windows run up to a day: one ending on another day names that day,
    /// or a daily window would read as ending when it started.
    #[test]
    fn a_window_ending_on_another_day_names_that_day() {
        let mut i = insight();
        i.anomaly.window_start = at(0, 0);
        i.anomaly.window_end = at(0, 0) + chrono::Duration::days(1);
        let text = content(&document(&i).unwrap());
        assert!(
            text.contains("window 2026-03-02 00:00 to 2026-03-03 00:00 UTC."),
            "{text}"
        );
    }

    /// Titles are cut by characters, so a summary of multi-byte text never
    /// splits a character; the content keeps the whole summary.
    #[test]
    fn the_title_is_the_summary_cut_to_500_characters() {
        let mut i = insight();
        i.summary = "é".repeat(600);
        let d = document(&i).unwrap();
        assert_eq!(d.title().unwrap(), "é".repeat(500));
        assert_eq!(content(&d).lines().next().unwrap(), "é".repeat(600));
        i.summary = "short".into();
        assert_eq!(document(&i).unwrap().title(), Some("short"));
    }

    #[test]
    fn a_question_without_filters_makes_no_attribute_filter() {
        assert!(attribute_filter(&Filters::default()).is_none());
        let described_only = Filters {
            understood: "anomalies".into(),
            ..Default::default()
        };
        assert!(attribute_filter(&described_only).is_none());
    }

    /// Only the shapes ChatSync takes: one value is a bare equalsTo,
    /// several of one dimension an orAllFilters of them; one dimension is
    /// not wrapped in andAllFilters.
    #[test]
    fn one_value_is_a_bare_equals_and_several_are_ored() {
        let one = Filters {
            services: vec!["ec2".into()],
            ..Default::default()
        };
        assert_eq!(show(&attribute_filter(&one).unwrap()), "service=ec2");
        let several = Filters {
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            ..Default::default()
        };
        assert_eq!(
            show(&attribute_filter(&several).unwrap()),
            "or(region=us-east-1, region=eu-west-1)"
        );
    }

    /// Every dimension narrows (AND), each with the attribute name and
    /// value spelling documents use, environments in lower case.
    #[test]
    fn every_dimension_of_a_question_is_anded_in_the_documents_terms() {
        let f = Filters {
            services: vec!["ec2".into(), "lambda".into()],
            environments: vec![Environment::Production, Environment::Staging],
            account_ids: vec!["111122223333".into()],
            regions: vec!["us-east-1".into()],
            min_severity: Some(Severity::High),
            since: Some(at(0, 0)),
            until: Some(at(6, 0)),
            understood: String::new(),
        };
        assert_eq!(
            show(&attribute_filter(&f).unwrap()),
            "and(or(service=ec2, service=lambda), \
             or(environment=production, environment=staging), \
             account_id=111122223333, region=us-east-1, severity_rank>=3, \
             window_start>=@1772409600, window_start<@1772431200)"
        );
    }

    /// Times select by the window's start, half-open like ListInsights:
    /// from `since` inclusive to `until` exclusive.
    #[test]
    fn a_time_range_is_half_open_on_the_window_start() {
        let since = Filters {
            since: Some(at(2, 0)),
            ..Default::default()
        };
        assert_eq!(
            show(&attribute_filter(&since).unwrap()),
            "window_start>=@1772416800"
        );
        let until = Filters {
            until: Some(at(2, 0)),
            ..Default::default()
        };
        assert_eq!(
            show(&attribute_filter(&until).unwrap()),
            "window_start<@1772416800"
        );
    }

    /// What `QBusinessAsk::ask` sends for one of the example questions.
    #[test]
    fn an_example_question_becomes_its_attribute_filter() {
        let f = filters(
            "Show me EC2 anomalies from production accounts",
            &[],
            at(12, 0),
        );
        assert_eq!(
            show(&attribute_filter(&f).unwrap()),
            "and(service=ec2, environment=production)"
        );
    }

    /// Retention deletes what ended before the cutoff, strictly: a window
    /// ending exactly at it stays.
    #[test]
    fn expired_lists_insights_whose_window_ended_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = InsightStore::open(&dir.path().join("i.redb")).unwrap();
        assert!(Connector::expired(&store, at(12, 0)).unwrap().is_empty());
        let ending = |id: &str, end: DateTime<Utc>| {
            let mut i = insight();
            i.id = id.into();
            i.anomaly.window_start = end - chrono::Duration::minutes(10);
            i.anomaly.window_end = end;
            i
        };
        store
            .put(
                &[
                    ending("old", at(3, 59)),
                    ending("at-cutoff", at(4, 0)),
                    ending("new", at(4, 1)),
                    ending("older", at(1, 0)),
                ],
                &[],
            )
            .unwrap();
        let mut ids = Connector::expired(&store, at(4, 0)).unwrap();
        ids.sort();
        assert_eq!(ids, ["old", "older"]);
    }

    async fn ask_backend() -> QBusinessAsk {
        // Nothing listens on port 9: a request would fail as a backend
        // error, which the tests below tell apart from a refusal.
        let aws = trailhound_aws::Aws::load(&trailhound_aws::AwsConfig {
            region: Some("us-east-1".into()),
            endpoints: BTreeMap::from([(
                "qbusiness".to_string(),
                "http://127.0.0.1:9".to_string(),
            )]),
            emulator: true,
            max_attempts: 1,
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = InsightStore::open(&dir.path().join("i.redb")).unwrap();
        QBusinessAsk::new(
            &aws,
            QBusinessConfig {
                application_id: "a1b2c3d4-0000-4000-8000-00000000app1".into(),
                ..Default::default()
            },
            store,
        )
    }

    #[tokio::test]
    async fn an_invalid_question_is_refused_before_q_business_is_called() {
        let ask = ask_backend().await;
        let long = "x".repeat(crate::ask::MAX_QUESTION_CHARS + 1);
        for q in ["", "   ", long.as_str()] {
            let e = ask.ask(q, 20).await.unwrap_err();
            assert!(matches!(e, AskError::Invalid(_)), "{q:.10}: {e}");
        }
    }

    /// Q Business sees the whole organization, so it must never answer a
    /// caller restricted to part of it (the service routes those to the
    /// built-in engine).
    #[tokio::test]
    async fn q_business_never_answers_a_scoped_caller() {
        let ask = ask_backend().await;
        assert!(!ask.filters_by_scope());
        let scope = trailhound_core::Scope::union([trailhound_core::ScopeRule {
            accounts: vec!["111122223333".into()],
            ..Default::default()
        }]);
        let e = ask
            .ask_in("Show me EC2 anomalies", 20, &scope)
            .await
            .unwrap_err();
        match e {
            AskError::Backend { message, .. } => assert!(message.contains("scope"), "{message}"),
            other => panic!("expected a refusal, got {other}"),
        }
    }
}
