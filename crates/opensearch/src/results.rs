//! Anomaly results from the AD plugin into trailhound anomalies.
//!
//! Each poll asks the results API for the results of every synced
//! detector with `anomaly_grade > 0` since that detector's watermark
//! (oldest first), turns each into an [`Anomaly`] — the entity gives the
//! account and region, `feature_data` the actual values and
//! `expected_values` what the model expected — adds the account's
//! metadata and the top contributors of the window from an aggregation
//! over the event indices (against the previous week as the baseline), and
//! hands the batch to the same sink the embedded engine feeds (insights →
//! notify). Only after the sink accepted them are the ids and the
//! watermark written to the checkpoint (redb), so a restart neither loses
//! nor repeats an anomaly. A result whose entity names no account is
//! skipped with an error that names the detector and the fix.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use opensearch::http::Method;
use redb::{ReadableTable, TableDefinition};
use serde_json::{Value, json};
use trailhound_core::pipeline::AnomalySink;
use trailhound_core::{
    AccountMetadata, Anomaly, AnomalyKind, Contributor, DetectorSpec, Environment, FeatureValue,
};
use trailhound_runtime::store::{Db, Failure};

use crate::client::{Client, OsError};
use crate::config::OpenSearchConfig;
use crate::detectors::AD;

const WATERMARKS: TableDefinition<&str, i64> = TableDefinition::new("watermarks");
const EMITTED: TableDefinition<&str, i64> = TableDefinition::new("emitted");

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    OpenSearch(#[from] OsError),
    #[error("opensearch checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error(
        "detector {detector}: result {result} has entity {entity} without a 12-digit recipientAccountId; keep recipientAccountId among the detector's category fields so anomalies can be tied to an account"
    )]
    UnknownEntity {
        detector: String,
        result: String,
        entity: String,
    },
    #[error("downstream did not accept {count} anomalies of detector {detector}: {message}")]
    Sink {
        detector: String,
        count: usize,
        message: String,
    },
}

/// What was already emitted, across restarts.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    db: Db,
}

impl From<Failure> for PollError {
    fn from(Failure { path, message }: Failure) -> Self {
        PollError::Checkpoint { path, message }
    }
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self, PollError> {
        let db = Db::open(path, |w| {
            w.open_table(WATERMARKS)?;
            w.open_table(EMITTED)?;
            Ok(())
        })?;
        Ok(Self { db })
    }

    pub fn watermark(&self, detector: &str) -> Result<i64, PollError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(WATERMARKS).map_err(|e| self.db.fail(e))?;
        Ok(t.get(detector)
            .map_err(|e| self.db.fail(e))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    pub fn emitted(&self, id: &str) -> Result<bool, PollError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(EMITTED).map_err(|e| self.db.fail(e))?;
        Ok(t.get(id).map_err(|e| self.db.fail(e))?.is_some())
    }

    /// Records emitted ids and moves the watermark on, in one transaction;
    /// forgets ids more than a day behind the watermark.
    pub fn record(&self, detector: &str, ids: &[String], watermark: i64) -> Result<(), PollError> {
        let w = self.db.begin_write().map_err(|e| self.db.fail(e))?;
        {
            let mut marks = w.open_table(WATERMARKS).map_err(|e| self.db.fail(e))?;
            marks
                .insert(detector, watermark)
                .map_err(|e| self.db.fail(e))?;
            let mut t = w.open_table(EMITTED).map_err(|e| self.db.fail(e))?;
            for id in ids {
                t.insert(id.as_str(), watermark)
                    .map_err(|e| self.db.fail(e))?;
            }
            let horizon = watermark - 86_400_000;
            let old: Vec<String> = t
                .iter()
                .map_err(|e| self.db.fail(e))?
                .filter_map(|r| r.ok())
                .filter(|(k, v)| v.value() < horizon && k.value().starts_with(detector))
                .map(|(k, _)| k.value().to_string())
                .collect();
            for k in old {
                t.remove(k.as_str()).map_err(|e| self.db.fail(e))?;
            }
        }
        w.commit().map_err(|e| self.db.fail(e))?;
        Ok(())
    }
}

/// Polls results and emits anomalies.
pub struct Poller {
    client: Client,
    config: OpenSearchConfig,
    specs: Vec<DetectorSpec>,
    checkpoint: Checkpoint,
    sink: Option<Arc<dyn AnomalySink>>,
}

trailhound_core::debug_fields!(Poller { checkpoint, .. });

/// What one poll did.
#[derive(Debug, Default)]
pub struct PollOutcome {
    pub anomalies: Vec<Anomaly>,
    /// Results that could not become anomalies, with why.
    pub skipped: Vec<PollError>,
}

fn ms_of(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

impl Poller {
    pub fn new(
        client: Client,
        config: OpenSearchConfig,
        specs: Vec<DetectorSpec>,
        checkpoint: Checkpoint,
        sink: Option<Arc<dyn AnomalySink>>,
    ) -> Self {
        Self {
            client,
            config,
            specs,
            checkpoint,
            sink,
        }
    }

    fn results_path(&self) -> String {
        match &self.config.result_index {
            Some(r) => format!("{AD}/results/_search/{r}"),
            None => format!("{AD}/results/_search"),
        }
    }

    /// One poll over the given detectors (name → plugin id).
    pub async fn poll(&self, ids: &[(String, String)]) -> Result<PollOutcome, PollError> {
        let mut out = PollOutcome::default();
        for (name, id) in ids {
            let Some(spec) = self.specs.iter().find(|s| &s.name == name) else {
                continue;
            };
            let wm = self.checkpoint.watermark(name)?;
            let q = json!({
                "query": {"bool": {"filter": [
                    {"term": {"detector_id": id}},
                    {"range": {"anomaly_grade": {"gt": 0}}},
                    {"range": {"execution_end_time": {"gte": wm}}},
                ]}},
                "sort": [{"execution_end_time": {"order": "asc"}}],
                "size": 500,
            });
            let r = self
                .client
                .search(
                    &self.results_path(),
                    &q,
                    &format!("anomaly results of detector {name}"),
                )
                .await?;
            let hits = r.hits();
            let mut batch = Vec::new();
            let mut new_wm = wm;
            let mut accounts: HashMap<String, AccountMetadata> = HashMap::new();
            for h in &hits {
                let src = &h["_source"];
                if src["detector_id"].as_str() != Some(id.as_str()) {
                    continue;
                }
                let end = ms_of(&src["execution_end_time"]).unwrap_or(wm);
                new_wm = new_wm.max(end);
                let grade = src["anomaly_grade"].as_f64().unwrap_or(0.0);
                if grade <= 0.0 || grade < spec.min_grade {
                    continue;
                }
                match self.convert(spec, h, &mut accounts).await {
                    Ok(a) => {
                        if !self.checkpoint.emitted(&a.id)?
                            && !batch.iter().any(|b: &Anomaly| b.id == a.id)
                        {
                            batch.push(a);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "skipped an OpenSearch anomaly result");
                        out.skipped.push(e);
                    }
                }
            }
            if !batch.is_empty() {
                if let Some(sink) = &self.sink {
                    sink.send(batch.clone())
                        .await
                        .map_err(|e| PollError::Sink {
                            detector: name.clone(),
                            count: batch.len(),
                            message: e.to_string(),
                        })?;
                }
                self.store_anomalies(&batch).await?;
            }
            let ids: Vec<String> = batch.iter().map(|a| a.id.clone()).collect();
            if new_wm != wm || !ids.is_empty() {
                self.checkpoint.record(name, &ids, new_wm)?;
            }
            out.anomalies.extend(batch);
        }
        Ok(out)
    }

    /// Writes emitted anomalies to the anomaly index (ListAnomalies).
    async fn store_anomalies(&self, anomalies: &[Anomaly]) -> Result<(), OsError> {
        let mut body = String::new();
        for a in anomalies {
            let mut doc = serde_json::to_value(a).map_err(|e| OsError::Protocol {
                what: "anomaly".into(),
                message: e.to_string(),
            })?;
            doc["window_start_ms"] = json!(a.window_start.timestamp_millis());
            body.push_str(
                &json!({"index": {"_index": self.config.anomaly_index, "_id": a.id}}).to_string(),
            );
            body.push('\n');
            body.push_str(&doc.to_string());
            body.push('\n');
        }
        let what = format!("_bulk into {}", self.config.anomaly_index);
        let r = self
            .client
            .send(
                Method::Post,
                "_bulk?refresh=wait_for",
                Some(body.into_bytes()),
                true,
                &what,
            )
            .await?;
        if r.body["errors"].as_bool() == Some(true) {
            return Err(OsError::Protocol {
                what,
                message: r.body["items"].to_string(),
            });
        }
        Ok(())
    }

    async fn convert(
        &self,
        spec: &DetectorSpec,
        hit: &Value,
        accounts: &mut HashMap<String, AccountMetadata>,
    ) -> Result<Anomaly, PollError> {
        let src = &hit["_source"];
        let result_id = hit["_id"].as_str().unwrap_or_default().to_string();
        let entity: Vec<(String, String)> = src["entity"]
            .as_array()
            .map(|es| {
                es.iter()
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap_or_default().to_string(),
                            e["value"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A keyed detector's entity comes back as one value: its fields
        // joined by '/', in category-field order.
        let key_field = crate::mapping::key_field(&spec.name);
        let entity: Vec<(String, String)> = match entity.iter().find(|(n, _)| *n == key_field) {
            Some((_, key)) => spec
                .category_fields
                .iter()
                .zip(key.split('/'))
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect(),
            None => entity,
        };
        let get = |k: &str| {
            entity
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let account_id = get("recipientAccountId");
        if !trailhound_core::is_account_id(&account_id) {
            return Err(PollError::UnknownEntity {
                detector: spec.name.clone(),
                result: result_id,
                entity: src["entity"].to_string(),
            });
        }
        let region = get("awsRegion");
        // Entity in the spec's category-field order.
        let ordered: Vec<(String, String)> = spec
            .category_fields
            .iter()
            .map(|f| (f.to_string(), get(f.as_str())))
            .collect();
        let start = ms_of(&src["data_start_time"]).unwrap_or(0);
        let end = ms_of(&src["data_end_time"]).unwrap_or(start + spec.interval_ms());
        let expected_of = |feature_id: &str| -> Option<f64> {
            src["expected_values"].as_array()?.iter().max_by(|a, b| {
                let la = a["likelihood"].as_f64().unwrap_or(0.0);
                let lb = b["likelihood"].as_f64().unwrap_or(0.0);
                la.total_cmp(&lb)
            })?["value_list"]
                .as_array()?
                .iter()
                .find(|v| v["feature_id"] == feature_id)?["data"]
                .as_f64()
        };
        let mut features = Vec::new();
        for f in &spec.features {
            let fd = src["feature_data"]
                .as_array()
                .and_then(|a| a.iter().find(|d| d["feature_name"] == f.name.as_str()));
            let actual = fd.and_then(|d| d["data"].as_f64()).unwrap_or(0.0);
            let expected = fd
                .and_then(|d| d["feature_id"].as_str())
                .and_then(expected_of)
                .unwrap_or(0.0);
            features.push(FeatureValue {
                name: f.name.clone(),
                actual,
                expected,
            });
        }
        let (actual, expected) = features
            .first()
            .map(|f| (f.actual, f.expected))
            .unwrap_or((0.0, 0.0));
        let account = match accounts.get(&account_id) {
            Some(a) => a.clone(),
            None => {
                let a = self.account(&account_id).await?;
                accounts.insert(account_id.clone(), a.clone());
                a
            }
        };
        let (contributors, event_count) = self.contributors(spec, &ordered, start, end).await?;
        let ts = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        Ok(Anomaly {
            id: Anomaly::make_id(&spec.name, &ordered, start),
            detector: spec.name.clone(),
            service: spec.service.clone(),
            kind: if actual >= expected {
                AnomalyKind::Spike
            } else {
                AnomalyKind::Drop
            },
            account_id: account_id.clone(),
            account_name: account.name.clone(),
            environment: account.environment,
            ou_path: account.ou_path.clone(),
            region,
            entity: ordered,
            window_start: ts(start),
            window_end: ts(end),
            observed_until: ts(end),
            actual,
            expected,
            features,
            grade: src["anomaly_grade"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0),
            confidence: src["confidence"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0),
            score: src["anomaly_score"].as_f64().unwrap_or(0.0),
            event_count,
            top_contributors: contributors,
            detected_at: Utc::now(),
            account,
        })
    }

    /// The account's metadata as the newest indexed event has it.
    async fn account(&self, account_id: &str) -> Result<AccountMetadata, OsError> {
        let q = json!({
            "size": 1,
            "query": {"term": {"recipientAccountId": account_id}},
            "sort": [{"@timestamp": {"order": "desc"}}],
            "_source": ["accountName", "environment", "ouPath", "team", "costCenter"],
        });
        let pattern = self.config.index_pattern();
        let r = self
            .client
            .search_in(&pattern, &q, &format!("account {account_id}"))
            .await?;
        let mut a = AccountMetadata::external(account_id);
        if let Some(s) = r.body["hits"]["hits"][0]["_source"].as_object() {
            let text = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            a.name = text("accountName");
            a.team = text("team");
            a.cost_center = text("costCenter");
            a.ou_path = s
                .get("ouPath")
                .and_then(|v| v.as_array())
                .map(|v| {
                    v.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            a.environment = text("environment")
                .parse::<Environment>()
                .unwrap_or(Environment::Unknown);
            if !a.name.is_empty() {
                a.known = true;
                a.status = "ACTIVE".into();
                a.environment_reason = "from the indexed events".into();
            }
        }
        Ok(a)
    }

    /// Top contributors of the window against the previous week, and the
    /// window's event count.
    async fn contributors(
        &self,
        spec: &DetectorSpec,
        entity: &[(String, String)],
        start: i64,
        end: i64,
    ) -> Result<(Vec<Contributor>, u64), OsError> {
        let mut dims: Vec<(String, String)> = vec![
            ("principal".into(), "principalArn".into()),
            ("source_ip".into(), "sourceIPAddress".into()),
            ("user_agent".into(), "userAgent".into()),
            ("event_name".into(), "eventName".into()),
        ];
        for c in &spec.contributors {
            dims.push((
                c.name.clone(),
                format!("th.contrib.{}.{}", spec.name, c.name),
            ));
        }
        let mut filter = vec![json!({"term": {"th.detectors": spec.name}})];
        for (field, value) in entity {
            filter.push(json!({"term": {field: value}}));
        }
        let search = |from: i64, to: i64, size: u32| {
            let mut f = filter.clone();
            f.push(
                json!({"range": {"@timestamp": {"gte": from, "lt": to, "format": "epoch_millis"}}}),
            );
            let aggs: serde_json::Map<String, Value> = dims
                .iter()
                .map(|(d, field)| (d.clone(), json!({"terms": {"field": field, "size": size}})))
                .collect();
            json!({"size": 0, "track_total_hits": true, "query": {"bool": {"filter": f}}, "aggs": aggs})
        };
        let pattern = self.config.index_pattern();
        let what = format!("contributors of detector {} in {pattern}", spec.name);
        let path = format!("{pattern}/_search");
        let window = self
            .client
            .json(Method::Post, &path, Some(&search(start, end, 5)), &what)
            .await?;
        let base = self
            .client
            .json(
                Method::Post,
                &path,
                Some(&search(start - 7 * 86_400_000, start, 500)),
                &what,
            )
            .await?;
        let total = window.body["hits"]["total"]["value"].as_u64().unwrap_or(0);
        let mut out = Vec::new();
        for (d, _) in &dims {
            let buckets = window.body["aggregations"][d]["buckets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let base_buckets = base.body["aggregations"][d]["buckets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for b in buckets {
                let value = match &b["key"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let count = b["doc_count"].as_u64().unwrap_or(0);
                let baseline_count = base_buckets
                    .iter()
                    .find(|x| x["key"] == b["key"])
                    .and_then(|x| x["doc_count"].as_u64())
                    .unwrap_or(0);
                out.push(Contributor {
                    dimension: d.clone(),
                    value,
                    count,
                    share: if total > 0 {
                        count as f64 / total as f64
                    } else {
                        0.0
                    },
                    baseline_count,
                    is_new: baseline_count == 0,
                });
            }
        }
        Ok((out, total))
    }
}
