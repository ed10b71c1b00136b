//! ListAnomalies and GetUsageSeries answered from the cluster: anomalies
//! from the anomaly index the poller writes, series as a `date_histogram`
//! over the event indices summing the detector's first feature — the same
//! numbers the plugin's detector aggregates.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use trailhound_core::{Anomaly, DetectorSpec, Environment};

use crate::client::{Client, OsError, Reply};
use crate::config::OpenSearchConfig;
use crate::mapping;

/// Filters for listing anomalies; empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct AnomalyQuery {
    pub account_id: String,
    pub environment: Option<Environment>,
    pub ou: String,
    pub detector: String,
    pub service: String,
    pub region: String,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub min_grade: f64,
}

/// One window of a usage series. Windows the detector did not flag carry
/// their actual value as expected (the plugin reports expectations only
/// for anomalies).
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub window_start_ms: i64,
    pub actual: f64,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
    pub grade: f64,
}

#[derive(Clone, Debug)]
pub struct Search {
    client: Client,
    config: OpenSearchConfig,
}

impl Search {
    pub fn new(client: Client, config: OpenSearchConfig) -> Self {
        Self { client, config }
    }

    /// Newest first; the page token is `window_start_ms|id` of the last
    /// anomaly returned.
    pub async fn list(
        &self,
        q: &AnomalyQuery,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<Anomaly>, Option<String>), OsError> {
        let mut filter = Vec::new();
        let mut term = |field: &str, v: &str| {
            if !v.is_empty() {
                filter.push(json!({"term": {field: v}}));
            }
        };
        term("account_id", &q.account_id);
        term("detector", &q.detector);
        term("region", &q.region);
        term("ou_path", &q.ou);
        term("service", &q.service.to_ascii_lowercase());
        if let Some(e) = q.environment {
            filter.push(json!({"term": {"environment": e.as_str()}}));
        }
        let mut range = serde_json::Map::new();
        if let Some(s) = q.start_ms {
            range.insert("gte".into(), json!(s));
        }
        if let Some(e) = q.end_ms {
            range.insert("lt".into(), json!(e));
        }
        if !range.is_empty() {
            filter.push(json!({"range": {"window_start_ms": range}}));
        }
        if q.min_grade > 0.0 {
            filter.push(json!({"range": {"grade": {"gte": q.min_grade}}}));
        }
        let mut body = json!({
            "size": page_size,
            "query": {"bool": {"filter": filter}},
            "sort": [{"window_start_ms": {"order": "desc"}}, {"id": {"order": "desc"}}],
        });
        if let Some(t) = token {
            let (ms, id) = t.split_once('|').ok_or_else(|| OsError::Protocol {
                what: "page_token".into(),
                message: "not a token from a previous response".into(),
            })?;
            let ms: i64 = ms.parse().map_err(|_| OsError::Protocol {
                what: "page_token".into(),
                message: "not a token from a previous response".into(),
            })?;
            body["search_after"] = json!([ms, id]);
        }
        let index = &self.config.anomaly_index;
        let r = self.client.search_in(index, &body, "anomalies").await?;
        let hits = r.hits();
        let mut out = Vec::new();
        for h in &hits {
            match serde_json::from_value::<Anomaly>(h["_source"].clone()) {
                Ok(a) => out.push(a),
                Err(e) => tracing::warn!(
                    id = h["_id"].as_str().unwrap_or_default(), error = %e,
                    index = %index, "skipped an anomaly document trailhound cannot read"
                ),
            }
        }
        let next = (hits.len() == page_size && page_size > 0)
            .then(|| {
                out.last()
                    .map(|a| format!("{}|{}", a.window_start.timestamp_millis(), a.id))
            })
            .flatten();
        Ok((out, next))
    }

    /// [`Client::search_in`] the events' index pattern.
    async fn search_events(&self, body: &Value, what: &str) -> Result<Reply, OsError> {
        self.client
            .search_in(&self.config.index_pattern(), body, what)
            .await
    }

    fn entity_filter(spec: &DetectorSpec, entity: &[(String, String)]) -> Vec<Value> {
        let mut f = vec![json!({"term": {"th.detectors": spec.name}})];
        for (field, value) in entity {
            f.push(json!({"term": {field: value}}));
        }
        f
    }

    /// Start of the entity's newest window with events.
    pub async fn series_latest(
        &self,
        spec: &DetectorSpec,
        entity: &[(String, String)],
    ) -> Result<Option<i64>, OsError> {
        let body = json!({
            "size": 0,
            "query": {"bool": {"filter": Self::entity_filter(spec, entity)}},
            "aggs": {"latest": {"max": {"field": "@timestamp"}}},
        });
        let r = self
            .search_events(&body, &format!("latest event of detector {}", spec.name))
            .await?;
        let iv = spec.interval_ms();
        Ok(r.body["aggregations"]["latest"]["value"]
            .as_f64()
            .map(|ms| (ms as i64).div_euclid(iv) * iv))
    }

    /// The entity's series over [start, end), one point per interval, with
    /// the grades and expectations of emitted anomalies laid over it.
    pub async fn series(
        &self,
        spec: &DetectorSpec,
        entity: &[(String, String)],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Point>, OsError> {
        let iv = spec.interval_ms();
        let first = spec
            .features
            .first()
            .map(|f| mapping::feature_field(&spec.name, &f.name))
            .unwrap_or_default();
        let mut filter = Self::entity_filter(spec, entity);
        filter.push(json!({"range": {"@timestamp": {"gte": start_ms, "lt": end_ms, "format": "epoch_millis"}}}));
        let body = json!({
            "size": 0,
            "query": {"bool": {"filter": filter}},
            "aggs": {"series": {
                "date_histogram": {"field": "@timestamp", "fixed_interval": format!("{}m", iv / 60_000)},
                "aggs": {"value": {"sum": {"field": first}}},
            }},
        });
        let r = self
            .search_events(&body, &format!("series of detector {}", spec.name))
            .await?;
        let mut values = std::collections::BTreeMap::new();
        for b in r.body["aggregations"]["series"]["buckets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let (Some(k), Some(v)) = (b["key"].as_f64(), b["value"]["value"].as_f64()) {
                values.insert(k as i64, v);
            }
        }
        // Anomalies of the entity in range, for expectations and grades.
        let account = entity
            .iter()
            .find(|(f, _)| f == "recipientAccountId")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let region = entity
            .iter()
            .find(|(f, _)| f == "awsRegion")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let (anomalies, _) = self
            .list(
                &AnomalyQuery {
                    account_id: account,
                    region,
                    detector: spec.name.clone(),
                    start_ms: Some(start_ms),
                    end_ms: Some(end_ms),
                    ..Default::default()
                },
                1000,
                None,
            )
            .await?;
        let mut out = Vec::new();
        let mut t = start_ms.div_euclid(iv) * iv;
        while t < end_ms {
            let actual = values.get(&t).copied().unwrap_or(0.0);
            let a = anomalies
                .iter()
                .find(|a| a.window_start.timestamp_millis() == t);
            out.push(match a {
                Some(a) => Point {
                    window_start_ms: t,
                    actual,
                    expected: a.expected,
                    lower: a.expected.min(actual),
                    upper: a.expected.max(actual),
                    grade: a.grade,
                },
                None => Point {
                    window_start_ms: t,
                    actual,
                    expected: actual,
                    lower: actual,
                    upper: actual,
                    grade: 0.0,
                },
            });
            t += iv;
        }
        Ok(out)
    }
}

/// Milliseconds to a timestamp, for callers building queries.
pub fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}
