//! The Anomaly Detection plugin half of the backend. Nothing installable
//! implements the plugin, so these tests run against a strict wire-format
//! server: every `_plugins/_anomaly_detection` request is checked against
//! the plugin's documented request shapes (unknown or missing keys, wrong
//! types, more than 5 features, more than 2 category fields, bad units
//! are a 400 like the plugin's), answered with the documented response
//! shapes, and recorded. Everything else is forwarded to a real osmem-server,
//! so contributors and account metadata come from real aggregations over
//! an indexed generated trail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is its failure report

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trailhound_core::detector::default_detectors;
use trailhound_core::pipeline::{AnomalySink, SinkError};
use trailhound_core::{Anomaly, DetectorSpec};
use trailhound_opensearch::detectors::SyncAction;
use trailhound_opensearch::{Backend, Client, Detectors, OpenSearchConfig, OsError, PollError};
use trailhound_testkit::Osmem;

const AD: &str = "/_plugins/_anomaly_detection/detectors";
const ISM: &str = "/_plugins/_ism/policies/";

#[derive(Default)]
struct Plugin {
    detectors: BTreeMap<String, (Value, bool, u64)>, // id → (definition, running, version)
    results: Vec<Value>,
    log: Vec<(String, String)>,
    max_hc: usize,
    next_id: u64,
    /// ISM policies by id.
    policies: BTreeMap<String, Value>,
}

/// `PUT _plugins/_ism/policies/<id>` as the ISM plugin documents it: a
/// `policy` with `default_state` naming one of `states`, each action one
/// known action with its documented condition keys, and `ism_template`
/// index patterns; creating an existing id without `if_seq_no` is a 409.
fn ism(p: &mut Plugin, method: &str, id: &str, query: &str, body: &Value) -> Response {
    if method != "PUT" {
        return bad(&format!("no handler for {method} {ISM}{id}"));
    }
    let Some(policy) = body.get("policy").and_then(Value::as_object) else {
        return bad("[policy] is missing");
    };
    let allowed = [
        "description",
        "default_state",
        "states",
        "ism_template",
        "error_notification",
    ];
    if let Some(k) = unknown(policy.keys(), &allowed) {
        return bad(&format!("unknown field [{k}] in policy"));
    }
    let states = policy["states"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = states.iter().filter_map(|s| s["name"].as_str()).collect();
    if !names.contains(&policy["default_state"].as_str().unwrap_or("")) {
        return bad("default_state must name one of the states");
    }
    for state in &states {
        for action in state["actions"].as_array().cloned().unwrap_or_default() {
            if let Some(r) = action.get("rollover") {
                let conditions = [
                    "min_index_age",
                    "min_doc_count",
                    "min_size",
                    "min_primary_shard_size",
                ];
                if let Some(k) = r.as_object().and_then(|o| unknown(o.keys(), &conditions)) {
                    return bad(&format!("unknown rollover condition [{k}]"));
                }
            } else {
                return bad(&format!("unexpected action {action}"));
            }
        }
    }
    let templates = policy["ism_template"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if templates.is_empty() || templates.iter().any(|t| !t["index_patterns"].is_array()) {
        return bad("ism_template needs index_patterns");
    }
    if p.policies.contains_key(id) && !query.contains("if_seq_no") {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({"error": {"root_cause": [], "type": "version_conflict_engine_exception",
                "reason": format!("[{id}]: version conflict, document already exists (current version [1])")},
                "status": 409})),
        )
            .into_response();
    }
    p.policies.insert(id.to_string(), body["policy"].clone());
    (
        StatusCode::CREATED,
        axum::Json(
            json!({"_id": id, "_version": 1, "_primary_term": 1, "_seq_no": 0,
                          "policy": body}),
        ),
    )
        .into_response()
}

type Shared = Arc<Mutex<Plugin>>;

/// The first of `keys` not among `allowed`: what the plugin refuses as an
/// unknown field.
fn unknown<'a>(keys: impl IntoIterator<Item = &'a String>, allowed: &[&str]) -> Option<&'a String> {
    keys.into_iter().find(|k| !allowed.contains(&k.as_str()))
}

fn bad(reason: &str) -> Response {
    let body = json!({
        "error": {
            "root_cause": [{"type": "illegal_argument_exception", "reason": reason}],
            "type": "illegal_argument_exception",
            "reason": reason,
        },
        "status": 400,
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn not_found(id: &str) -> Response {
    let reason = format!("AnomalyDetector is not found with id: {id}");
    let body = json!({"error": {"root_cause": [{"type": "status_exception", "reason": reason}], "type": "status_exception", "reason": reason}, "status": 404});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

fn period_ok(v: &Value) -> bool {
    let p = &v["period"];
    v.as_object().is_some_and(|o| o.len() == 1)
        && p.as_object().is_some_and(|o| o.len() == 2)
        && p["interval"].as_u64().is_some_and(|i| i > 0)
        && ["Minutes", "Hours", "Days", "Seconds"].contains(&p["unit"].as_str().unwrap_or(""))
}

/// The create/update request body as the plugin documents it.
fn validate_detector(b: &Value) -> Result<(), String> {
    const KEYS: &[&str] = &[
        "name",
        "description",
        "time_field",
        "indices",
        "feature_attributes",
        "filter_query",
        "detection_interval",
        "window_delay",
        "shingle_size",
        "category_field",
        "result_index",
        "ui_metadata",
    ];
    let o = b.as_object().ok_or("body is not an object")?;
    if let Some(k) = unknown(o.keys(), KEYS) {
        return Err(format!("unknown field [{k}]"));
    }
    for k in ["name", "description", "time_field"] {
        if !b[k].is_string() {
            return Err(format!("{k} must be a string"));
        }
    }
    let indices = b["indices"].as_array().ok_or("indices must be a list")?;
    if indices.is_empty() || !indices.iter().all(Value::is_string) {
        return Err("indices must list index names".into());
    }
    let features = b["feature_attributes"]
        .as_array()
        .ok_or("feature_attributes must be a list")?;
    if features.is_empty() {
        return Err("Detector should have at least one feature".into());
    }
    if features.len() > 5 {
        return Err("Can't create more than 5 features".into());
    }
    for f in features {
        let fo = f.as_object().ok_or("feature must be an object")?;
        let fields = [
            "feature_id",
            "feature_name",
            "feature_enabled",
            "aggregation_query",
        ];
        if let Some(k) = unknown(fo.keys(), &fields) {
            return Err(format!("unknown feature field [{k}]"));
        }
        if !f["feature_name"].is_string() || !f["feature_enabled"].is_boolean() {
            return Err("feature_name and feature_enabled are required".into());
        }
        let q = f["aggregation_query"]
            .as_object()
            .ok_or("aggregation_query must be an object")?;
        if q.len() != 1 {
            return Err("aggregation_query must hold exactly one aggregation".into());
        }
        let agg = q
            .values()
            .next()
            .unwrap()
            .as_object()
            .ok_or("bad aggregation")?;
        let (kind, body) = agg.iter().next().ok_or("empty aggregation")?;
        if !["sum", "avg", "min", "max", "value_count", "cardinality"].contains(&kind.as_str())
            || !body["field"].is_string()
        {
            return Err(format!("unsupported aggregation {kind}"));
        }
    }
    if !period_ok(&b["detection_interval"]) {
        return Err("detection_interval must be {\"period\": {\"interval\", \"unit\"}}".into());
    }
    if b.get("window_delay").is_some() && !period_ok(&b["window_delay"]) {
        return Err("window_delay must be {\"period\": {\"interval\", \"unit\"}}".into());
    }
    if let Some(s) = b.get("shingle_size")
        && !s.as_u64().is_some_and(|s| (1..=60).contains(&s))
    {
        return Err("shingle_size must be within 1..60".into());
    }
    if let Some(c) = b.get("category_field") {
        let c = c.as_array().ok_or("category_field must be a list")?;
        if c.len() > 2 || !c.iter().all(Value::is_string) {
            return Err("We only support filtering data by one categorical variable or two".into());
        }
    }
    if let Some(f) = b.get("filter_query")
        && !f.is_object()
    {
        return Err("filter_query must be a query object".into());
    }
    if let Some(r) = b.get("result_index")
        && !r
            .as_str()
            .is_some_and(|r| r.starts_with("opensearch-ad-plugin-result-"))
    {
        return Err("Result index must start with opensearch-ad-plugin-result-".into());
    }
    Ok(())
}

fn with_feature_ids(b: &Value, id: &str) -> Value {
    let mut b = b.clone();
    if let Some(fs) = b["feature_attributes"].as_array_mut() {
        for (i, f) in fs.iter_mut().enumerate() {
            f["feature_id"] = json!(format!("{id}-f{i}"));
        }
    }
    b
}

fn search_detectors(p: &Plugin, q: &Value) -> Result<Value, String> {
    let query = &q["query"];
    let hits: Vec<Value> = p
        .detectors
        .iter()
        .filter(|(_, (d, _, _))| {
            if let Some(name) = query["term"]["name.keyword"].as_str() {
                d["name"] == name
            } else if query["exists"]["field"] == "category_field" {
                d.get("category_field").is_some()
            } else if let Some(m) = query["match_phrase"]["description"].as_str() {
                d["description"].as_str().unwrap_or("").contains(m)
            } else {
                false
            }
        })
        .map(|(id, (d, _, v))| {
            json!({"_index": ".opendistro-anomaly-detectors", "_id": id, "_version": v,
                   "_seq_no": v, "_primary_term": 1, "_score": 1.0, "_source": d})
        })
        .collect();
    if !(query["term"].is_object()
        || query["exists"].is_object()
        || query["match_phrase"].is_object())
    {
        return Err(format!("unsupported detector query {query}"));
    }
    let n = hits.len();
    let size = q["size"].as_u64().unwrap_or(10) as usize;
    Ok(json!({
        "took": 1, "timed_out": false,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": n, "relation": "eq"}, "max_score": 1.0,
                 "hits": hits.into_iter().take(size).collect::<Vec<_>>()},
    }))
}

fn search_results(p: &Plugin, q: &Value) -> Result<Value, String> {
    let filters = q["query"]["bool"]["filter"]
        .as_array()
        .ok_or("results query must be a bool filter")?;
    let mut id = None;
    let mut min_grade = None;
    let mut since = None;
    for f in filters {
        if let Some(d) = f["term"]["detector_id"].as_str() {
            id = Some(d.to_string());
        } else if let Some(g) = f["range"]["anomaly_grade"]["gt"].as_f64() {
            min_grade = Some(g);
        } else if let Some(t) = f["range"]["execution_end_time"]["gte"].as_i64() {
            since = Some(t);
        } else {
            return Err(format!("unsupported filter {f}"));
        }
    }
    let mut hits: Vec<&Value> = p
        .results
        .iter()
        .filter(|r| id.as_deref().is_none_or(|i| r["detector_id"] == i))
        .filter(|r| min_grade.is_none_or(|g| r["anomaly_grade"].as_f64().unwrap_or(0.0) > g))
        .filter(|r| since.is_none_or(|t| r["execution_end_time"].as_i64().unwrap_or(0) >= t))
        .collect();
    hits.sort_by_key(|r| r["execution_end_time"].as_i64());
    let n = hits.len();
    Ok(json!({
        "took": 2, "timed_out": false,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": n, "relation": "eq"}, "max_score": null,
                 "hits": hits.iter().enumerate().map(|(i, r)| json!({
                     "_index": ".opendistro-anomaly-results-history-2026.01.05-1",
                     "_id": format!("result-{i}-{}", r["execution_end_time"]),
                     "_score": null, "_source": r,
                 })).collect::<Vec<_>>()},
    }))
}

fn plugin(p: &mut Plugin, method: &str, path: &str, body: &Value) -> Response {
    let rest = path.trim_start_matches(AD);
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", [""]) => {
            if let Err(e) = validate_detector(body) {
                return bad(&e);
            }
            let name = body["name"].as_str().unwrap_or_default();
            if let Some((id, _)) = p.detectors.iter().find(|(_, (d, _, _))| d["name"] == name) {
                return bad(&format!(
                    "Cannot create anomaly detector with name [{name}] as it's already used by detector [{id}]"
                ));
            }
            let hc = p
                .detectors
                .values()
                .filter(|(d, _, _)| d.get("category_field").is_some())
                .count();
            if body.get("category_field").is_some() && hc >= p.max_hc {
                return bad(&format!(
                    "Can't create more than {} multi-entity anomaly detectors.",
                    p.max_hc
                ));
            }
            p.next_id += 1;
            let id = format!("VEHKTXwBwf_U8gjUXY2s{}", p.next_id);
            let stored = with_feature_ids(body, &id);
            p.detectors.insert(id.clone(), (stored.clone(), false, 1));
            (
                StatusCode::CREATED,
                axum::Json(
                    json!({"_id": id, "_version": 1, "_seq_no": 5, "_primary_term": 1,
                                  "anomaly_detector": stored}),
                ),
            )
                .into_response()
        }
        ("POST", ["_search"]) => match search_detectors(p, body) {
            Ok(v) => axum::Json(v).into_response(),
            Err(e) => bad(&e),
        },
        ("POST", ["results", "_search"]) => match search_results(p, body) {
            Ok(v) => axum::Json(v).into_response(),
            Err(e) => bad(&e),
        },
        ("PUT", [id]) => {
            if let Err(e) = validate_detector(body) {
                return bad(&e);
            }
            let Some((_, running, version)) = p.detectors.get(*id).cloned() else {
                return not_found(id);
            };
            if running {
                return bad(&format!("Detector job is running: {id}"));
            }
            let stored = with_feature_ids(body, id);
            p.detectors
                .insert(id.to_string(), (stored.clone(), false, version + 1));
            axum::Json(json!({"_id": id, "_version": version + 1, "_seq_no": 10,
                              "_primary_term": 1, "anomaly_detector": stored}))
            .into_response()
        }
        ("POST", [id, "_start"]) => match p.detectors.get_mut(*id) {
            None => not_found(id),
            Some(d) => {
                d.1 = true;
                axum::Json(json!({"_id": id, "_version": 1, "_seq_no": 6, "_primary_term": 1}))
                    .into_response()
            }
        },
        ("POST", [id, "_stop"]) => match p.detectors.get_mut(*id) {
            None => not_found(id),
            Some(d) => {
                d.1 = false;
                axum::Json(json!({"_id": id, "_version": 0, "_seq_no": 0, "_primary_term": 0}))
                    .into_response()
            }
        },
        ("DELETE", [id]) => match p.detectors.get(*id).cloned() {
            None => not_found(id),
            Some((_, true, _)) => bad(&format!("Detector job is running: {id}")),
            Some((_, false, v)) => {
                p.detectors.remove(*id);
                axum::Json(json!({"_index": ".opendistro-anomaly-detectors", "_id": id,
                    "_version": v + 1, "result": "deleted", "forced_refresh": true,
                    "_shards": {"total": 2, "successful": 2, "failed": 0},
                    "_seq_no": 6, "_primary_term": 1}))
                .into_response()
            }
        },
        _ => bad(&format!(
            "no handler found for uri [{path}] and method [{method}]"
        )),
    }
}

/// Starts the strict plugin server in front of an osmem-server.
async fn start(upstream: &str, max_hc: usize) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Plugin {
        max_hc,
        ..Default::default()
    }));
    let state = (shared.clone(), upstream.to_string(), reqwest::Client::new());
    let app = axum::Router::new().fallback(
        |State((shared, up, http)): State<(Shared, String, reqwest::Client)>,
         req: Request| async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let uri = req.uri().to_string();
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let bytes: Bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            if let Some(id) = path.strip_prefix(ISM) {
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let query = uri.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
                let mut p = shared.lock().unwrap();
                p.log.push((method.clone(), path.clone()));
                return ism(&mut p, &method, id, &query, &body);
            }
            if path.starts_with(AD) {
                if !bytes.is_empty() && !ct.starts_with("application/json") {
                    return bad("Content-Type header [ ] is not supported");
                }
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    match serde_json::from_slice(&bytes) {
                        Ok(v) => v,
                        Err(e) => return bad(&format!("failed to parse request body: {e}")),
                    }
                };
                let mut p = shared.lock().unwrap();
                p.log.push((method.clone(), path.clone()));
                return plugin(&mut p, &method, &path, &body);
            }
            let r = http
                .request(method.parse().unwrap(), format!("{up}{uri}"))
                .header("content-type", ct)
                .body(bytes)
                .send()
                .await
                .unwrap();
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            (status, r.bytes().await.unwrap()).into_response()
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app.with_state(state)).await });
    (format!("http://{addr}"), shared)
}

fn config(url: &str) -> OpenSearchConfig {
    OpenSearchConfig {
        urls: vec![url.to_string()],
        max_attempts: 2,
        initial_backoff: std::time::Duration::from_millis(10),
        replicas: 0,
        ..Default::default()
    }
}

fn writes(p: &Shared) -> Vec<(String, String)> {
    p.lock()
        .unwrap()
        .log
        .iter()
        .filter(|(m, path)| m != "GET" && !path.ends_with("_search"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detectors_are_created_updated_started_stopped_and_deleted_idempotently() {
    let os = Osmem::start().await;
    let (url, plugin) = start(os.url(), 10).await;
    let cfg = config(&url);
    let d = Detectors::new(Client::new(&cfg, None).unwrap(), cfg.clone());
    let specs = default_detectors();

    let ids = d.sync_all(&specs).await.unwrap();
    assert_eq!(ids.len(), specs.len());
    {
        let p = plugin.lock().unwrap();
        assert_eq!(p.detectors.len(), specs.len());
        // Three entity fields: keyed by the whole entity, one keyword.
        let (function, _, _) = p
            .detectors
            .values()
            .find(|(b, _, _)| b["name"] == "lambda-function")
            .unwrap();
        assert_eq!(
            function["category_field"],
            json!(["th.keys.lambda-function"])
        );
        assert!(p.detectors.values().all(|(_, running, _)| *running));
        let (ec2, _, _) = p
            .detectors
            .values()
            .find(|(b, _, _)| b["name"] == "ec2-run-instances")
            .unwrap();
        assert_eq!(
            ec2["category_field"],
            json!(["recipientAccountId", "awsRegion"])
        );
        assert_eq!(ec2["indices"], json!(["cwl-multiaccounts-*"]));
        assert_eq!(
            ec2["detection_interval"]["period"],
            json!({"interval": 10, "unit": "Minutes"})
        );
        assert_eq!(ec2["shingle_size"], 8);
    }

    // A second sync changes nothing: no create, no update.
    let before = writes(&plugin).len();
    for s in &specs {
        let (_, action) = d.sync(s).await.unwrap();
        assert_eq!(action, SyncAction::Unchanged);
    }
    let after: Vec<_> = writes(&plugin)[before..].to_vec();
    assert!(
        after
            .iter()
            .all(|(m, p)| m == "POST" && p.ends_with("_start")),
        "{after:?}"
    );

    // A changed interval updates the same detector: stop, PUT, start.
    let mut lambda = specs[1].clone();
    lambda.interval = std::time::Duration::from_secs(300);
    let (id, action) = d.sync(&lambda).await.unwrap();
    assert_eq!(action, SyncAction::Updated);
    assert_eq!(ids[1].1, id);
    let tail: Vec<String> = writes(&plugin)
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|(m, p)| format!("{m} {}", p.rsplit('/').next().unwrap()))
        .collect();
    assert_eq!(
        tail,
        vec![
            "POST _stop".to_string(),
            format!("PUT {id}"),
            "POST _start".to_string()
        ]
    );
    {
        let p = plugin.lock().unwrap();
        assert_eq!(p.detectors.len(), specs.len());
        assert_eq!(
            p.detectors[&id].0["detection_interval"]["period"]["interval"],
            5
        );
    }

    // Disabled: stopped, kept.
    let mut off = specs[2].clone();
    off.enabled = false;
    let (ebs_id, _) = d.sync(&off).await.unwrap();
    assert!(!plugin.lock().unwrap().detectors[&ebs_id].1);

    // Removed from the configuration: stopped and deleted.
    d.sync_all(&specs[..2]).await.unwrap();
    assert!(!plugin.lock().unwrap().detectors.contains_key(&ebs_id));
    assert!(d.delete("lambda-invoke").await.unwrap());
    assert!(!d.delete("lambda-invoke").await.unwrap());
    assert_eq!(plugin.lock().unwrap().detectors.len(), 1);
}

fn spec_with(name: &str) -> DetectorSpec {
    let mut s = default_detectors().remove(1);
    s.name = name.into();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detector_limits_are_clear_errors() {
    let os = Osmem::start().await;
    // The cluster's limit is 2; trailhound is told 10 and learns from the
    // plugin's refusal.
    let (url, _plugin) = start(os.url(), 2).await;
    let cfg = config(&url);
    let d = Detectors::new(Client::new(&cfg, None).unwrap(), cfg.clone());
    d.sync(&spec_with("a")).await.unwrap();
    d.sync(&spec_with("b")).await.unwrap();
    let e = d.sync(&spec_with("c")).await.unwrap_err();
    assert!(matches!(e, OsError::DetectorLimit { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("detector c") && msg.contains("max_multi_entity_anomaly_detectors"),
        "{msg}"
    );
    // Told the limit, trailhound does not even ask.
    let cfg2 = OpenSearchConfig {
        max_hc_detectors: 2,
        ..cfg.clone()
    };
    let d2 = Detectors::new(Client::new(&cfg2, None).unwrap(), cfg2.clone());
    let e = d2.sync(&spec_with("c")).await.unwrap_err();
    assert!(e.to_string().contains("2 already exist"), "{e}");

    // Six features: refused before any request, naming the detector.
    let mut six = spec_with("six");
    six.features = (0..6)
        .map(|i| trailhound_core::FeatureSpec {
            name: format!("f{i}"),
            aggregation: Default::default(),
            fields: vec![],
        })
        .collect();
    let e = d.sync(&six).await.unwrap_err();
    assert!(matches!(e, OsError::InvalidDetector { .. }), "{e}");
    assert!(
        e.to_string().contains("six") && e.to_string().contains("5"),
        "{e}"
    );
}

#[derive(Default)]
struct Collect(Mutex<Vec<Anomaly>>);

#[async_trait]
impl AnomalySink for Collect {
    async fn send(&self, anomalies: Vec<Anomaly>) -> Result<u64, SinkError> {
        let n = anomalies.len() as u64;
        self.0.lock().unwrap().extend(anomalies);
        Ok(n)
    }
}

/// A documented high-cardinality result, for one entity and window.
fn result(
    detector_id: &str,
    account: &str,
    region: &str,
    start: i64,
    grade: f64,
    actual: f64,
) -> Value {
    json!({
        "detector_id": detector_id,
        "schema_version": 5,
        "data_start_time": start,
        "data_end_time": start + 600_000,
        "feature_data": [{"feature_id": format!("{detector_id}-f0"), "feature_name": "instances", "data": actual}],
        "execution_start_time": start + 720_000,
        "execution_end_time": start + 720_050,
        "anomaly_score": 3.2,
        "anomaly_grade": grade,
        "confidence": 0.93,
        "entity": [
            {"name": "recipientAccountId", "value": account},
            {"name": "awsRegion", "value": region},
        ],
        "model_id": format!("{detector_id}_entity_{account}_{region}"),
        "threshold": 1.1,
        "approx_anomaly_start_time": start,
        "relevant_attribution": [{"feature_id": format!("{detector_id}-f0"), "data": 1.0}],
        "expected_values": [{"likelihood": 1.0, "value_list": [{"feature_id": format!("{detector_id}-f0"), "data": 0.0}]}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_become_anomalies_once_with_contributors_and_survive_restarts() {
    let os = Osmem::start().await;
    let (url, plugin) = start(os.url(), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let events = common::generated_trail(&org);
    let labels = trailhound_generate::read_labels(&org.join("labels.json")).unwrap();
    let burst = labels
        .incidents
        .iter()
        .find(|i| i.kind == trailhound_generate::IncidentKind::Cryptomining)
        .expect("the generated org has a cryptomining burst");

    let cfg = config(&url);
    let sink = Arc::new(Collect::default());
    let backend = Backend::new(
        cfg.clone(),
        None,
        default_detectors(),
        dir.path(),
        Some(sink.clone() as Arc<dyn AnomalySink>),
    )
    .unwrap();
    let ids = backend.setup().await.unwrap();
    use trailhound_core::pipeline::EnrichedSink;
    for b in events.chunks(3000) {
        backend.send(b.to_vec()).await.unwrap();
    }
    let client = Client::new(&cfg, None).unwrap();
    client
        .json(
            opensearch::http::Method::Post,
            "cwl-multiaccounts-*/_refresh",
            None,
            "refresh",
        )
        .await
        .unwrap();

    // The plugin flags the burst's window, plus a zero-grade result and a
    // result whose entity names no account.
    let ec2 = &ids
        .iter()
        .find(|(n, _)| n == "ec2-run-instances")
        .unwrap()
        .1;
    let start = burst.start.timestamp_millis().div_euclid(600_000) * 600_000;
    {
        let mut p = plugin.lock().unwrap();
        p.results.push(result(
            ec2,
            &burst.account_id,
            &burst.region,
            start,
            0.87,
            40.0,
        ));
        p.results.push(result(
            ec2,
            &burst.account_id,
            &burst.region,
            start - 600_000,
            0.0,
            1.0,
        ));
        let mut odd = result(ec2, "x", &burst.region, start + 600_000, 0.5, 3.0);
        odd["entity"] = json!([{"name": "awsRegion", "value": burst.region}]);
        p.results.push(odd);
    }
    let got = backend.poll().await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let a = &sink.0.lock().unwrap()[0].clone();
    assert_eq!(a.detector, "ec2-run-instances");
    assert_eq!(a.account_id, burst.account_id);
    assert_eq!(a.region, burst.region);
    assert_eq!(a.actual, 40.0);
    assert_eq!(a.expected, 0.0);
    assert_eq!(a.grade, 0.87);
    assert_eq!(a.confidence, 0.93);
    assert_eq!(a.kind, trailhound_core::AnomalyKind::Spike);
    assert_eq!(a.window_start.timestamp_millis(), start);
    assert!(
        !a.account_name.is_empty(),
        "account metadata from the events"
    );
    assert!(a.event_count > 0);
    let top = |dim: &str| {
        a.top_contributors
            .iter()
            .filter(|c| c.dimension == dim)
            .max_by_key(|c| c.count)
            .map(|c| c.value.clone())
    };
    assert_eq!(top("principal"), burst.principal_arn);
    assert_eq!(top("source_ip"), burst.source_ip);
    assert_eq!(top("instance_type"), burst.instance_type);

    // Polling again emits nothing new; neither does a restarted backend
    // reading the same checkpoint.
    assert!(backend.poll().await.unwrap().is_empty());
    drop(backend);
    let again = Backend::new(
        cfg.clone(),
        None,
        default_detectors(),
        dir.path(),
        Some(sink.clone() as Arc<dyn AnomalySink>),
    )
    .unwrap();
    again.setup().await.unwrap();
    assert!(again.poll().await.unwrap().is_empty());
    assert_eq!(sink.0.lock().unwrap().len(), 1);

    // ListAnomalies and the series are answered from the cluster.
    let (listed, _) = again
        .list(
            &trailhound_opensearch::AnomalyQuery {
                account_id: burst.account_id.clone(),
                ..Default::default()
            },
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, a.id);
    let spec = default_detectors().remove(0);
    let entity = a.entity.clone();
    let points = again
        .series(&spec, &entity, start - 3_600_000, start + 3_600_000)
        .await
        .unwrap();
    let p = points.iter().find(|p| p.window_start_ms == start).unwrap();
    assert_eq!(p.grade, 0.87);
    assert!(p.actual > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_entity_is_skipped_with_an_error_naming_the_detector() {
    let os = Osmem::start().await;
    let (url, plugin) = start(os.url(), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&url);
    let backend = Backend::new(cfg.clone(), None, default_detectors(), dir.path(), None).unwrap();
    let ids = backend.setup().await.unwrap();
    let client = Client::new(&cfg, None).unwrap();
    let specs = default_detectors();
    let poller = trailhound_opensearch::Poller::new(
        client,
        cfg.clone(),
        specs,
        trailhound_opensearch::Checkpoint::open(&dir.path().join("other.redb")).unwrap(),
        None,
    );
    let ec2 = ids[0].1.clone();
    let mut odd = result(&ec2, "x", "us-east-1", 1_767_571_200_000, 0.5, 3.0);
    odd["entity"] = json!([{"name": "awsRegion", "value": "us-east-1"}]);
    plugin.lock().unwrap().results.push(odd);
    let out = poller.poll(&ids).await.unwrap();
    assert!(out.anomalies.is_empty());
    assert_eq!(out.skipped.len(), 1);
    let e = &out.skipped[0];
    assert!(matches!(e, PollError::UnknownEntity { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("ec2-run-instances") && msg.contains("category fields"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_forbidden_request_names_the_action_and_the_permission() {
    // Fine-grained access control answers 403 with a security_exception.
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": {"root_cause": [{"type": "security_exception",
                "reason": "no permissions for [cluster:admin/opendistro/ad/detector/write] and User [name=trailhound, backend_roles=[], requestedTenant=null]"}],
                "type": "security_exception",
                "reason": "no permissions for [cluster:admin/opendistro/ad/detector/write] and User [name=trailhound, backend_roles=[], requestedTenant=null]"},
                "status": 403})),
        )
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    let cfg = config(&format!("http://{addr}"));
    let d = Detectors::new(Client::new(&cfg, None).unwrap(), cfg.clone());
    let e = d.sync(&default_detectors()[0]).await.unwrap_err();
    assert!(matches!(e, OsError::Forbidden { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("ec2-run-instances")
            && msg.contains("no permissions")
            && msg.contains("fine-grained access control"),
        "{msg}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_mode_installs_its_ism_policy_before_the_first_index() {
    let os = Osmem::start().await;
    let (url, plugin) = start(os.url(), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = OpenSearchConfig {
        index_mode: trailhound_opensearch::config::IndexMode::Rollover,
        rollover_min_index_age: "12h".into(),
        ..config(&url)
    };
    let make = || {
        trailhound_opensearch::Indexer::new(
            Client::new(&cfg, None).unwrap(),
            cfg.clone(),
            default_detectors(),
            dir.path().join("dead.jsonl"),
        )
    };
    make().ensure_ready().await.unwrap();
    {
        let p = plugin.lock().unwrap();
        let policy = &p.policies["cwl-multiaccounts-rollover"];
        assert_eq!(
            policy["states"][0]["actions"][0]["rollover"]["min_index_age"],
            "12h"
        );
        assert_eq!(
            policy["ism_template"][0]["index_patterns"],
            json!(["cwl-multiaccounts-*"])
        );
        let order: Vec<&str> = p.log.iter().map(|(_, path)| path.as_str()).collect();
        assert_eq!(
            order,
            ["/_plugins/_ism/policies/cwl-multiaccounts-rollover"]
        );
    }
    // The first backing index carries the write alias.
    let alias = Client::new(&cfg, None)
        .unwrap()
        .json(
            opensearch::http::Method::Get,
            "cwl-multiaccounts-000001",
            None,
            "test",
        )
        .await
        .unwrap();
    assert_eq!(
        alias.body["cwl-multiaccounts-000001"]["aliases"]["cwl-multiaccounts-write"]["is_write_index"],
        true,
        "{}",
        alias.body
    );
    // A restart finds the policy there (409) and goes on.
    make().ensure_ready().await.unwrap();
    assert_eq!(plugin.lock().unwrap().policies.len(), 1);
}
