//! Enriched events into the event indices, as a sink beside detect.
//!
//! Batches become `_bulk` requests of at most `bulk_max_bytes`, each item
//! an `index` action whose `_id` is the CloudTrail eventID, so a replay or
//! a retried batch overwrites instead of duplicating. Items the cluster
//! throttles (429) or cannot place right now (5xx) are retried on their
//! own; items it refuses for good (a mapping error on one odd record) are
//! written to the dead-letter file with the reason, and the rest of the
//! batch is accepted. While the cluster is unreachable or the template is
//! not in place yet, `send` fails with a retryable error, so ingest keeps
//! the events and tries again: nothing is dropped. At most
//! `bulk_concurrency` bulks are in flight; later ones wait, which is the
//! backpressure that slows ingest to the cluster's pace.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use opensearch::http::Method;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use trailhound_core::pipeline::{EnrichedSink, SinkError};
use trailhound_core::{DetectorSpec, EnrichedEvent};

use crate::client::{Client, OsError, error_kind_reason, retryable_status};
use crate::config::{IndexMode, OpenSearchConfig};
use crate::mapping;

/// Counters for health and tests.
#[derive(Debug, Default)]
pub struct IndexStats {
    pub indexed: AtomicU64,
    pub retried_items: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub failed_batches: AtomicU64,
}

/// One item the cluster refused for good.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    pub event_id: String,
    pub index: String,
    pub status: u16,
    pub error_type: String,
    pub reason: String,
    pub document: Value,
}

/// What one `send` did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BulkOutcome {
    pub indexed: u64,
    pub dead_lettered: Vec<DeadLetter>,
}

/// Writes events to the event indices.
pub struct Indexer {
    client: Client,
    config: OpenSearchConfig,
    detectors: Vec<DetectorSpec>,
    dead_letters: PathBuf,
    ready: AtomicBool,
    permits: Semaphore,
    pub stats: IndexStats,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer")
            .field("pattern", &self.config.index_pattern())
            .finish_non_exhaustive()
    }
}

const ITEM_ATTEMPTS: u32 = 5;

impl Indexer {
    pub fn new(
        client: Client,
        config: OpenSearchConfig,
        detectors: Vec<DetectorSpec>,
        dead_letters: PathBuf,
    ) -> Self {
        let permits = Semaphore::new(config.bulk_concurrency.max(1));
        Self {
            client,
            config,
            detectors,
            dead_letters,
            ready: AtomicBool::new(false),
            permits,
            stats: IndexStats::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &OpenSearchConfig {
        &self.config
    }

    /// Puts the index template and the anomaly index in place and creates
    /// today's (or the rollover) index with its mapping, adding fields of
    /// new detectors to existing indices. Idempotent; run at start-up and
    /// before the first bulk.
    pub async fn ensure_ready(&self) -> Result<(), OsError> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let c = &self.client;
        let template_name = format!("{}-template", self.config.index_prefix);
        let template = mapping::index_template(&self.config, &self.detectors);
        c.json(
            Method::Put,
            &format!("_index_template/{template_name}"),
            Some(&template),
            &format!("index template {template_name}"),
        )
        .await?;
        // Existing indices keep their mapping: add the fields of detectors
        // configured since (a conflict surfaces here, naming the index).
        let pattern = self.config.index_pattern();
        let existing = c
            .json(
                Method::Get,
                &format!("{pattern}/_mapping"),
                None,
                &format!("mappings of {pattern}"),
            )
            .await?;
        let mappings = mapping::event_mappings(&self.detectors);
        if let Some(indices) = existing.body.as_object() {
            for index in indices.keys() {
                c.json(
                    Method::Put,
                    &format!("{index}/_mapping"),
                    Some(&json!({"properties": mappings["properties"]})),
                    index,
                )
                .await?;
            }
        }
        if self.config.index_mode == IndexMode::Rollover {
            // Before the first index, so the policy's ism_template
            // attaches it to that index too.
            self.ensure_ism_policy().await?;
        }
        let first = match self.config.index_mode {
            IndexMode::Daily => {
                mapping::index_for(&self.config, chrono::Utc::now().timestamp_millis())
            }
            IndexMode::Rollover => mapping::first_rollover_index(&self.config),
        };
        if !existing
            .body
            .as_object()
            .is_some_and(|m| m.contains_key(&first))
        {
            let mut body = json!({});
            if self.config.index_mode == IndexMode::Rollover {
                body["aliases"] =
                    json!({ mapping::write_alias(&self.config): {"is_write_index": true} });
            }
            self.create_index(&first, &body).await?;
        }
        let anomalies = &self.config.anomaly_index;
        self.create_index(anomalies, &json!({"mappings": mapping::anomaly_mappings()}))
            .await?;
        self.ready.store(true, Ordering::Release);
        tracing::info!(pattern, "OpenSearch indices ready");
        Ok(())
    }

    /// Creates rollover mode's ISM policy unless it exists. A cluster
    /// without the ISM plugin gets a warning, not an error: events are
    /// still indexed, but the alias must then be rolled by hand
    /// (`POST <alias>/_rollover`) or by another policy.
    async fn ensure_ism_policy(&self) -> Result<(), OsError> {
        let id = mapping::ism_policy_id(&self.config);
        match self
            .client
            .json(
                Method::Put,
                &format!("_plugins/_ism/policies/{id}"),
                Some(&mapping::ism_policy(&self.config)),
                &format!("ISM policy {id}"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(OsError::Status { status: 409, .. }) => Ok(()),
            Err(OsError::Status { kind, .. })
                if kind.contains("version_conflict") || kind.contains("already_exists") =>
            {
                Ok(())
            }
            Err(OsError::Status {
                status: 400 | 404,
                reason,
                ..
            }) => {
                tracing::warn!(
                    policy = %id,
                    reason = %reason,
                    "no ISM plugin answered: {} will not roll over by itself; add an ISM policy or roll it with POST {}/_rollover",
                    mapping::write_alias(&self.config),
                    mapping::write_alias(&self.config)
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates an index unless it exists (racing creators are fine).
    async fn create_index(&self, index: &str, body: &Value) -> Result<(), OsError> {
        match self
            .client
            .json(Method::Put, index, Some(body), &format!("index {index}"))
            .await
        {
            Ok(_) => Ok(()),
            Err(OsError::Status { kind, .. })
                if kind == "resource_already_exists_exception"
                    || kind == "index_already_exists_exception" =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Indexes a batch; see the module doc for what happens to each item.
    pub async fn index(&self, events: &[EnrichedEvent]) -> Result<BulkOutcome, OsError> {
        self.ensure_ready().await?;
        let mut items: Vec<(String, String, Value)> = events
            .iter()
            .map(|e| {
                (
                    e.event.event_id.clone(),
                    mapping::index_for(&self.config, e.event.event_time_ms),
                    mapping::document(e, &self.detectors),
                )
            })
            .collect();
        let mut outcome = BulkOutcome::default();
        let mut backoff = trailhound_runtime::retry::Backoff::new(
            self.config.initial_backoff,
            Duration::from_secs(10),
        );
        for attempt in 1..=ITEM_ATTEMPTS {
            if items.is_empty() {
                break;
            }
            let mut retry = Vec::new();
            for chunk in self.chunks(&items) {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| OsError::Protocol {
                        what: "_bulk".into(),
                        message: "the indexer is shutting down".into(),
                    })?;
                let (ok, again, dead) = self.bulk(&items, &chunk).await?;
                outcome.indexed += ok;
                retry.extend(again);
                outcome.dead_lettered.extend(dead);
            }
            if retry.is_empty() {
                items.clear();
                break;
            }
            self.stats
                .retried_items
                .fetch_add(retry.len() as u64, Ordering::Relaxed);
            if attempt == ITEM_ATTEMPTS {
                let n = retry.len();
                return Err(OsError::Status {
                    what: format!("_bulk into {}", self.config.index_pattern()),
                    status: 429,
                    kind: "es_rejected_execution_exception".into(),
                    reason: format!(
                        "{n} items still throttled after {ITEM_ATTEMPTS} attempts; the batch will be sent again"
                    ),
                });
            }
            items = retry.into_iter().map(|i| items[i].clone()).collect();
            tokio::time::sleep(backoff.fail()).await;
        }
        if !outcome.dead_lettered.is_empty() {
            self.write_dead_letters(&outcome.dead_lettered);
        }
        self.stats
            .indexed
            .fetch_add(outcome.indexed, Ordering::Relaxed);
        Ok(outcome)
    }

    /// Splits items into bulk bodies of at most `bulk_max_bytes` (an item
    /// larger than that goes alone).
    fn chunks(&self, items: &[(String, String, Value)]) -> Vec<(Vec<usize>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut idx = Vec::new();
        let mut body = Vec::new();
        for (i, (id, index, doc)) in items.iter().enumerate() {
            let mut line = json!({"index": {"_index": index, "_id": id}}).to_string();
            line.push('\n');
            line.push_str(&doc.to_string());
            line.push('\n');
            if !body.is_empty() && body.len() + line.len() > self.config.bulk_max_bytes {
                out.push((std::mem::take(&mut idx), std::mem::take(&mut body)));
            }
            idx.push(i);
            body.extend_from_slice(line.as_bytes());
        }
        if !body.is_empty() {
            out.push((idx, body));
        }
        out
    }

    /// One `_bulk`: (indexed, items to retry, dead letters).
    async fn bulk(
        &self,
        items: &[(String, String, Value)],
        chunk: &(Vec<usize>, Vec<u8>),
    ) -> Result<(u64, Vec<usize>, Vec<DeadLetter>), OsError> {
        let (idx, body) = chunk;
        let what = format!("_bulk into {}", self.config.index_pattern());
        let reply = self
            .client
            .send(Method::Post, "_bulk", Some(body.clone()), true, &what)
            .await?;
        let results = reply.body["items"]
            .as_array()
            .ok_or_else(|| OsError::Protocol {
                what: what.clone(),
                message: "no items in the _bulk response".into(),
            })?;
        if results.len() != idx.len() {
            return Err(OsError::Protocol {
                what,
                message: format!("{} items sent, {} answered", idx.len(), results.len()),
            });
        }
        let mut ok = 0;
        let mut retry = Vec::new();
        let mut dead = Vec::new();
        for (&i, r) in idx.iter().zip(results) {
            let r = r
                .as_object()
                .and_then(|o| o.values().next())
                .unwrap_or(&Value::Null);
            let status = r["status"].as_u64().unwrap_or(0) as u16;
            if (200..300).contains(&status) {
                ok += 1;
            } else if retryable_status(status) {
                retry.push(i);
            } else {
                let (kind, reason) = error_kind_reason(r);
                let (id, index, doc) = &items[i];
                dead.push(DeadLetter {
                    event_id: id.clone(),
                    index: r["_index"].as_str().unwrap_or(index).to_string(),
                    status,
                    error_type: kind,
                    reason,
                    document: doc.clone(),
                });
            }
        }
        Ok((ok, retry, dead))
    }

    fn write_dead_letters(&self, dead: &[DeadLetter]) {
        self.stats
            .dead_lettered
            .fetch_add(dead.len() as u64, Ordering::Relaxed);
        for d in dead {
            tracing::warn!(
                event_id = %d.event_id, index = %d.index, status = d.status,
                error_type = %d.error_type, reason = %d.reason,
                path = %self.dead_letters.display(),
                "OpenSearch refused an event; dead-lettered"
            );
        }
        let write = || -> std::io::Result<()> {
            let mut f = trailhound_runtime::private::append(&self.dead_letters)?;
            for d in dead {
                let line = serde_json::to_string(d).map_err(std::io::Error::other)?;
                writeln!(f, "{line}")?;
            }
            f.flush()
        };
        if let Err(e) = write() {
            tracing::error!(
                error = %e, path = %self.dead_letters.display(),
                "failed to write OpenSearch dead letters"
            );
        }
    }
}

/// The indexer as enrich's downstream.
#[derive(Clone, Debug)]
pub struct IndexSink(pub Arc<Indexer>);

#[async_trait]
impl EnrichedSink for IndexSink {
    async fn send(&self, events: Vec<EnrichedEvent>) -> Result<u64, SinkError> {
        let n = events.len() as u64;
        match self.0.index(&events).await {
            Ok(_) => Ok(n),
            Err(e) => {
                self.0.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, events = n, "failed to index events into OpenSearch");
                Err(SinkError {
                    downstream: "opensearch".into(),
                    message: e.to_string(),
                    // Forbidden or a mapping conflict needs a person, but
                    // the events must not be lost meanwhile: ingest keeps
                    // them and retries, and the message says what to fix.
                    retryable: true,
                })
            }
        }
    }
}
