//! trailhound's detector configuration as Anomaly Detection plugin
//! detectors, through `_plugins/_anomaly_detection/detectors`.
//!
//! Each `DetectorSpec` becomes one high-cardinality detector with the same
//! name: features are `sum` aggregations over the per-detector fields the
//! indexer writes (a count feature sums 1 per event), the filter is the
//! detector's name in `th.detectors`, the category fields are the spec's
//! (account and region by default), the interval and window delay are the
//! spec's interval and lateness. Syncing is idempotent: detectors are found
//! by name, updated only when their definition differs (stopping and
//! restarting the job around the update, as the plugin requires), and
//! started when enabled. The plugin's limits are checked before it is
//! asked — at most 5 features, at most `max_hc_detectors` high-cardinality
//! detectors — and its own refusals are mapped to the same clear errors.

use opensearch::http::Method;
use serde_json::{Value, json};
use trailhound_core::DetectorSpec;
use trailhound_core::detector::MAX_FEATURES;

use crate::client::{Client, OsError};
use crate::config::OpenSearchConfig;
use crate::mapping;

pub const AD: &str = "_plugins/_anomaly_detection/detectors";

/// Marks detectors trailhound manages, so it never touches others'.
const MARK: &str = "[trailhound]";

/// A detector as the plugin knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Remote {
    pub id: String,
    pub name: String,
    pub body: Value,
    pub seq_no: Option<u64>,
    pub primary_term: Option<u64>,
}

/// What a sync did to one detector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncAction {
    Created,
    Updated,
    Unchanged,
}

fn minutes(d: std::time::Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

/// The plugin's request body for a spec.
pub fn detector_body(spec: &DetectorSpec, config: &OpenSearchConfig) -> Result<Value, OsError> {
    let invalid = |reason: String| OsError::InvalidDetector {
        detector: spec.name.clone(),
        reason,
    };
    spec.validate().map_err(invalid)?;
    if spec.features.len() > MAX_FEATURES {
        return Err(invalid(format!(
            "has {} features; the Anomaly Detection plugin allows at most {MAX_FEATURES} per detector — split it into two detectors",
            spec.features.len()
        )));
    }
    let category = if mapping::keyed(spec) {
        // The whole entity as one keyword the indexer writes.
        vec![mapping::key_field(&spec.name)]
    } else {
        spec.category_fields
            .iter()
            .map(|f| mapping::category_field(&spec.name, f.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?
    };
    let features: Vec<Value> = spec
        .features
        .iter()
        .map(|f| {
            // Count and sum both read the per-event value the indexer
            // wrote: 1 for a count, the summed field for a sum.
            json!({
                "feature_name": f.name,
                "feature_enabled": true,
                "aggregation_query": {
                    f.name.clone(): {"sum": {"field": mapping::feature_field(&spec.name, &f.name)}}
                }
            })
        })
        .collect();
    let description = if spec.description.is_empty() {
        MARK.to_string()
    } else {
        format!("{} {MARK}", spec.description)
    };
    let mut body = json!({
        "name": spec.name,
        "description": description,
        "time_field": "@timestamp",
        "indices": [config.index_pattern()],
        "feature_attributes": features,
        "filter_query": {"bool": {"filter": [{"term": {"th.detectors": spec.name}}]}},
        "detection_interval": {"period": {"interval": minutes(spec.interval), "unit": "Minutes"}},
        "window_delay": {"period": {"interval": minutes(spec.lateness), "unit": "Minutes"}},
        "shingle_size": config.shingle_size,
        "category_field": category,
    });
    if let Some(r) = &config.result_index {
        body["result_index"] = json!(r);
    }
    Ok(body)
}

/// Whether the definition the plugin holds matches the one wanted (ids
/// the plugin assigns to features are ignored).
fn same_definition(remote: &Value, wanted: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(fs) = v["feature_attributes"].as_array_mut() {
            for f in fs {
                if let Some(o) = f.as_object_mut() {
                    o.remove("feature_id");
                }
            }
        }
        v
    };
    let r = strip(remote);
    let w = strip(wanted);
    [
        "description",
        "time_field",
        "indices",
        "feature_attributes",
        "detection_interval",
        "window_delay",
        "shingle_size",
        "category_field",
        "result_index",
    ]
    .iter()
    .all(|k| r.get(*k) == w.get(*k) || (w.get(*k).is_none() && r.get(*k).is_none()))
        && r["filter_query"]["bool"]["filter"] == w["filter_query"]["bool"]["filter"]
}

/// Maps the plugin's refusals to clear errors.
fn plugin_error(e: OsError, detector: &str, limit: usize) -> OsError {
    match e {
        OsError::Status { reason, .. }
            if reason.contains("more than") && reason.contains("detectors") =>
        {
            OsError::DetectorLimit {
                detector: detector.to_string(),
                limit,
                reason,
            }
        }
        OsError::Status {
            status: 400,
            reason,
            ..
        } => OsError::InvalidDetector {
            detector: detector.to_string(),
            reason: format!("the Anomaly Detection plugin refused it: {reason}"),
        },
        e => e,
    }
}

/// The detector API.
#[derive(Clone, Debug)]
pub struct Detectors {
    client: Client,
    config: OpenSearchConfig,
}

impl Detectors {
    pub fn new(client: Client, config: OpenSearchConfig) -> Self {
        Self { client, config }
    }

    /// Finds a detector by name.
    pub async fn find(&self, name: &str) -> Result<Option<Remote>, OsError> {
        let q = json!({"query": {"term": {"name.keyword": name}}, "size": 10});
        let what = format!("search for detector {name}");
        let r = match self
            .client
            .json(Method::Post, &format!("{AD}/_search"), Some(&q), &what)
            .await
        {
            Ok(r) => r,
            // No detector was ever created: the config index is missing.
            Err(OsError::Status { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let hits = r.hits();
        Ok(hits
            .into_iter()
            .find(|h| h["_source"]["name"] == name)
            .map(|h| Remote {
                id: h["_id"].as_str().unwrap_or_default().to_string(),
                name: name.to_string(),
                body: h["_source"].clone(),
                seq_no: h["_seq_no"].as_u64(),
                primary_term: h["_primary_term"].as_u64(),
            }))
    }

    /// High-cardinality detectors on the cluster (anyone's).
    pub async fn count_hc(&self) -> Result<usize, OsError> {
        let q = json!({"query": {"exists": {"field": "category_field"}}, "size": 0, "track_total_hits": true});
        match self
            .client
            .search(
                &format!("{AD}/_search"),
                &q,
                "count of high-cardinality detectors",
            )
            .await
        {
            Ok(r) => Ok(r.body["hits"]["total"]["value"].as_u64().unwrap_or(0) as usize),
            Err(OsError::Status { status: 404, .. }) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Creates or updates the detector of a spec, then starts or stops its
    /// job as the spec says. Returns the detector id and what was done.
    pub async fn sync(&self, spec: &DetectorSpec) -> Result<(String, SyncAction), OsError> {
        let body = detector_body(spec, &self.config)?;
        let limit = self.config.max_hc_detectors;
        let (id, action) = match self.find(&spec.name).await? {
            Some(remote) if same_definition(&remote.body, &body) => {
                (remote.id, SyncAction::Unchanged)
            }
            Some(remote) => {
                // The plugin refuses to update a running detector.
                self.stop(&remote.id, &spec.name).await?;
                let mut path = format!("{AD}/{}", remote.id);
                if let (Some(s), Some(p)) = (remote.seq_no, remote.primary_term) {
                    path.push_str(&format!("?if_seq_no={s}&if_primary_term={p}"));
                }
                self.client
                    .json(
                        Method::Put,
                        &path,
                        Some(&body),
                        &format!("update of detector {}", spec.name),
                    )
                    .await
                    .map_err(|e| plugin_error(e, &spec.name, limit))?;
                (remote.id, SyncAction::Updated)
            }
            None => {
                let n = self.count_hc().await?;
                if n >= limit {
                    return Err(OsError::DetectorLimit {
                        detector: spec.name.clone(),
                        limit,
                        reason: format!("{n} already exist"),
                    });
                }
                let r = self
                    .client
                    .json(
                        Method::Post,
                        AD,
                        Some(&body),
                        &format!("creation of detector {}", spec.name),
                    )
                    .await
                    .map_err(|e| plugin_error(e, &spec.name, limit))?;
                let id = r.body["_id"]
                    .as_str()
                    .ok_or_else(|| OsError::Protocol {
                        what: format!("creation of detector {}", spec.name),
                        message: "no _id in the response".into(),
                    })?
                    .to_string();
                (id, SyncAction::Created)
            }
        };
        if spec.enabled {
            self.start(&id, &spec.name).await?;
        } else {
            self.stop(&id, &spec.name).await?;
        }
        Ok((id, action))
    }

    /// Starts a detector's job; starting a running job is not an error.
    pub async fn start(&self, id: &str, name: &str) -> Result<(), OsError> {
        match self
            .client
            .json(
                Method::Post,
                &format!("{AD}/{id}/_start"),
                None,
                &format!("start of detector {name}"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(OsError::Status { reason, .. }) if reason.contains("already running") => Ok(()),
            Err(e) => Err(plugin_error(e, name, self.config.max_hc_detectors)),
        }
    }

    /// Stops a detector's job; stopping a stopped job is not an error.
    pub async fn stop(&self, id: &str, name: &str) -> Result<(), OsError> {
        match self
            .client
            .json(
                Method::Post,
                &format!("{AD}/{id}/_stop"),
                None,
                &format!("stop of detector {name}"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(OsError::Status { status: 404, .. }) => Ok(()),
            Err(OsError::Status { reason, .. })
                if reason.contains("not running") || reason.contains("No Job") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Stops and deletes a detector by name; false when there was none.
    pub async fn delete(&self, name: &str) -> Result<bool, OsError> {
        let Some(remote) = self.find(name).await? else {
            return Ok(false);
        };
        self.stop(&remote.id, name).await?;
        self.client
            .json(
                Method::Delete,
                &format!("{AD}/{}", remote.id),
                None,
                &format!("deletion of detector {name}"),
            )
            .await?;
        Ok(true)
    }

    /// Syncs every spec, then deletes detectors trailhound created that
    /// the configuration no longer names. Returns name → id of the synced.
    pub async fn sync_all(&self, specs: &[DetectorSpec]) -> Result<Vec<(String, String)>, OsError> {
        let mut ids = Vec::new();
        for s in specs {
            let (id, action) = self.sync(s).await?;
            tracing::info!(detector = %s.name, id = %id, ?action, "synced OpenSearch detector");
            ids.push((s.name.clone(), id));
        }
        let q = json!({"query": {"match_phrase": {"description": MARK}}, "size": 100});
        if let Ok(r) = self
            .client
            .search(
                &format!("{AD}/_search"),
                &q,
                "search for trailhound detectors",
            )
            .await
        {
            for h in r.hits() {
                let name = h["_source"]["name"].as_str().unwrap_or_default();
                let ours = h["_source"]["description"]
                    .as_str()
                    .is_some_and(|d| d.ends_with(MARK));
                if ours && !specs.iter().any(|s| s.name == name) {
                    self.delete(name).await?;
                    tracing::info!(
                        detector = name,
                        "deleted OpenSearch detector no longer configured"
                    );
                }
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailhound_core::detector::default_detectors;

    #[test]
    fn bodies_follow_the_spec() {
        let cfg = OpenSearchConfig::default();
        let ebs = default_detectors().remove(2);
        let b = detector_body(&ebs, &cfg).unwrap();
        assert_eq!(
            b["category_field"],
            json!(["recipientAccountId", "awsRegion"])
        );
        assert_eq!(b["feature_attributes"].as_array().unwrap().len(), 2);
        assert_eq!(
            b["feature_attributes"][1]["aggregation_query"]["gib"]["sum"]["field"],
            "th.features.ebs-create-volume.gib"
        );
        assert_eq!(b["detection_interval"]["period"]["interval"], 10);
        assert_eq!(b["window_delay"]["period"]["interval"], 2);
        assert!(same_definition(&b, &b));
        let mut other = ebs.clone();
        other.interval = std::time::Duration::from_secs(300);
        assert!(!same_definition(&b, &detector_body(&other, &cfg).unwrap()));

        // A field that is no top-level keyword (or a third field): the
        // whole entity is indexed as one keyword of its own.
        let mut keyed = ebs;
        keyed.category_fields = vec![
            "recipientAccountId".parse().unwrap(),
            "awsRegion".parse().unwrap(),
            "requestParameters.volumeType".parse().unwrap(),
        ];
        let b = detector_body(&keyed, &cfg).unwrap();
        assert_eq!(b["category_field"], json!(["th.keys.ebs-create-volume"]));
    }
}
