//! The Amazon Q Business connector and ChatSync backend against a local
//! server that speaks Q Business's documented REST-JSON wire format for
//! the operations used (UpdateIndex, BatchPutDocument, BatchDeleteDocument,
//! ChatSync) and validates every request strictly: shapes, limits, enum
//! values, base64 blobs, typed attribute values, SigV4 signing.
//!
//! Nothing emulates Q Business; this verifies trailhound against the
//! documented format, not against the live service.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};
use trailhound_core::anomaly::testing::spike;
use trailhound_core::{AccountMetadata, Anomaly, Environment, FeatureValue};
use trailhound_insights::ask::AskBackend;
use trailhound_insights::qbusiness::{Connector, QBusinessAsk, QBusinessConfig};
use trailhound_insights::store::InsightStore;
use trailhound_insights::{Insights, InsightsConfig};

const APP: &str = "a1b2c3d4-0000-4000-8000-00000000app1";
const INDEX: &str = "a1b2c3d4-0000-4000-8000-0000000index";

#[derive(Default)]
struct Q {
    docs: BTreeMap<String, Value>,
    configured: Vec<String>,
    requests: Vec<(String, Value)>,
}

type Shared = Arc<Mutex<Q>>;

fn err(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response {
    (
        status,
        [("x-amzn-ErrorType", kind.to_string())],
        Json(json!({ "message": msg.into() })),
    )
        .into_response()
}

fn invalid(msg: impl Into<String>) -> Response {
    err(StatusCode::BAD_REQUEST, "ValidationException", msg)
}

fn signed(h: &HeaderMap) -> Result<(), Box<Response>> {
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.starts_with("AWS4-HMAC-SHA256 Credential=")
        || !auth.contains("/qbusiness/aws4_request")
    {
        return Err(Box::new(err(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "request is not SigV4-signed for qbusiness",
        )));
    }
    Ok(())
}

/// [`signed`], and addressed to the one application and index there is.
fn signed_to_the_index(h: &HeaderMap, app: &str, index: &str) -> Result<(), Box<Response>> {
    signed(h)?;
    if app != APP || index != INDEX {
        return Err(Box::new(err(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "no such application or index",
        )));
    }
    Ok(())
}

/// A signed call to the one application and index there is, and its JSON
/// body; anything else is refused the way Q Business refuses it.
struct IndexCall(Value);

impl<S: Send + Sync> axum::extract::FromRequest<S> for IndexCall {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = req.into_parts();
        let Path((app, index)) = Path::<(String, String)>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        signed_to_the_index(&parts.headers, &app, &index).map_err(|r| *r)?;
        let req = axum::extract::Request::from_parts(parts, body);
        let Json(v) = Json::<Value>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(IndexCall(v))
    }
}

fn only_keys(v: &Value, allowed: &[&str], what: &str) -> Result<(), String> {
    let obj = v.as_object().ok_or(format!("{what} must be an object"))?;
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("{what} has unknown member {k}"));
        }
    }
    Ok(())
}

/// A DocumentAttributeValue: exactly one member, of the right JSON type.
fn check_value(v: &Value, what: &str) -> Result<(), String> {
    only_keys(
        v,
        &["stringValue", "stringListValue", "longValue", "dateValue"],
        what,
    )?;
    let obj = v.as_object().unwrap();
    if obj.len() != 1 {
        return Err(format!(
            "{what} must set exactly one of stringValue, stringListValue, longValue, dateValue"
        ));
    }
    let (k, x) = obj.iter().next().unwrap();
    let ok = match k.as_str() {
        "stringValue" => x.as_str().is_some_and(|s| s.chars().count() <= 2048),
        "stringListValue" => x.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        "longValue" => x.as_i64().is_some(),
        // Epoch seconds on the wire, not an ISO string.
        "dateValue" => x.is_number(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{what}.{k} has the wrong type: {x}"))
    }
}

fn check_attribute(a: &Value, what: &str, configured: &[String]) -> Result<(), String> {
    only_keys(a, &["name", "value"], what)?;
    let name = a["name"]
        .as_str()
        .ok_or(format!("{what}.name is required"))?;
    let valid_name = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        return Err(format!(
            "{what}.name {name:?} is not a valid attribute name"
        ));
    }
    if let Some(reserved) = name.strip_prefix('_') {
        let known = [
            "source_uri",
            "created_at",
            "last_updated_at",
            "category",
            "document_title",
            "authors",
            "version",
        ];
        if !known.contains(&reserved) {
            return Err(format!("{what}.name {name} is not a reserved attribute"));
        }
        if matches!(reserved, "created_at" | "last_updated_at")
            && a["value"].get("dateValue").is_none()
        {
            return Err(format!("{what}: {name} must be a dateValue"));
        }
    } else if !configured.is_empty() && !configured.iter().any(|c| c == name) {
        return Err(format!(
            "{what}: attribute {name} is not configured in the index"
        ));
    }
    check_value(&a["value"], &format!("{what}.value"))
}

fn check_document(d: &Value, i: usize, configured: &[String]) -> Result<(), String> {
    let what = format!("documents[{i}]");
    only_keys(
        d,
        &[
            "id",
            "title",
            "content",
            "contentType",
            "attributes",
            "accessConfiguration",
            "documentEnrichmentConfiguration",
            "mediaExtractionConfiguration",
        ],
        &what,
    )?;
    let id = d["id"].as_str().ok_or(format!("{what}.id is required"))?;
    if id.is_empty() || id.len() > 1825 {
        return Err(format!("{what}.id must be 1 to 1825 characters"));
    }
    let content = &d["content"];
    only_keys(content, &["blob", "s3"], &format!("{what}.content"))?;
    let obj = content.as_object().unwrap();
    if obj.len() != 1 {
        return Err(format!(
            "{what}.content must set exactly one of blob and s3"
        ));
    }
    if let Some(blob) = obj.get("blob") {
        let b = blob
            .as_str()
            .ok_or(format!("{what}.content.blob must be a base64 string"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| format!("{what}.content.blob is not valid base64: {e}"))?;
        if bytes.is_empty() || bytes.len() > 10 << 20 {
            return Err(format!("{what}.content.blob must hold 1 byte to 10 MB"));
        }
        let types = [
            "PDF",
            "HTML",
            "MS_WORD",
            "PLAIN_TEXT",
            "PPT",
            "RTF",
            "XML",
            "XSLT",
            "MS_EXCEL",
            "CSV",
            "JSON",
            "MD",
        ];
        let ct = d["contentType"]
            .as_str()
            .ok_or(format!("{what}.contentType is required with a blob"))?;
        if !types.contains(&ct) {
            return Err(format!("{what}.contentType {ct} is not a content type"));
        }
    }
    if let Some(attrs) = d.get("attributes") {
        let list = attrs
            .as_array()
            .ok_or(format!("{what}.attributes must be an array"))?;
        for (j, a) in list.iter().enumerate() {
            check_attribute(a, &format!("{what}.attributes[{j}]"), configured)?;
        }
    }
    Ok(())
}

async fn update_index(State(q): State<Shared>, IndexCall(body): IndexCall) -> Response {
    if let Err(e) = only_keys(
        &body,
        &[
            "displayName",
            "description",
            "capacityConfiguration",
            "documentAttributeConfigurations",
        ],
        "UpdateIndex",
    ) {
        return invalid(e);
    }
    let mut names = Vec::new();
    for (i, c) in body["documentAttributeConfigurations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ty = c["type"].as_str().unwrap_or("");
        let search = c["search"].as_str().unwrap_or("ENABLED");
        if !["STRING", "STRING_LIST", "NUMBER", "DATE"].contains(&ty)
            || !["ENABLED", "DISABLED"].contains(&search)
        {
            return invalid(format!(
                "documentAttributeConfigurations[{i}] has type {ty:?} / search {search:?}"
            ));
        }
        names.push(c["name"].as_str().unwrap_or("").to_string());
    }
    let mut g = q.lock().unwrap();
    g.configured = names;
    g.requests.push(("UpdateIndex".into(), body));
    Json(json!({})).into_response()
}

async fn put_documents(State(q): State<Shared>, IndexCall(body): IndexCall) -> Response {
    if let Err(e) = only_keys(
        &body,
        &["documents", "roleArn", "dataSourceSyncId"],
        "BatchPutDocument",
    ) {
        return invalid(e);
    }
    let Some(docs) = body["documents"].as_array() else {
        return invalid("documents is required");
    };
    if docs.is_empty() || docs.len() > 10 {
        return invalid(format!(
            "documents must hold 1 to 10 documents, not {}",
            docs.len()
        ));
    }
    let mut g = q.lock().unwrap();
    let configured = g.configured.clone();
    for (i, d) in docs.iter().enumerate() {
        if let Err(e) = check_document(d, i, &configured) {
            return invalid(e);
        }
    }
    for d in docs {
        g.docs
            .insert(d["id"].as_str().unwrap().to_string(), d.clone());
    }
    g.requests.push(("BatchPutDocument".into(), body.clone()));
    Json(json!({ "failedDocuments": [] })).into_response()
}

async fn delete_documents(State(q): State<Shared>, IndexCall(body): IndexCall) -> Response {
    let Some(docs) = body["documents"].as_array() else {
        return invalid("documents is required");
    };
    if docs.is_empty() || docs.len() > 10 {
        return invalid("documents must hold 1 to 10 entries");
    }
    let mut g = q.lock().unwrap();
    for (i, d) in docs.iter().enumerate() {
        let Some(id) = d["documentId"].as_str() else {
            return invalid(format!("documents[{i}].documentId is required"));
        };
        g.docs.remove(id);
    }
    g.requests
        .push(("BatchDeleteDocument".into(), body.clone()));
    Json(json!({ "failedDocuments": [] })).into_response()
}

fn attr_of<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| &a["value"])
}

fn compare(doc: &Value, a: &Value) -> Option<std::cmp::Ordering> {
    let ours = attr_of(doc, a["name"].as_str()?)?;
    let theirs = &a["value"];
    for k in ["longValue", "dateValue"] {
        if let (Some(x), Some(y)) = (ours[k].as_f64(), theirs[k].as_f64()) {
            return x.partial_cmp(&y);
        }
    }
    Some(
        ours["stringValue"]
            .as_str()?
            .cmp(theirs["stringValue"].as_str()?),
    )
}

/// Applies an AttributeFilter, rejecting malformed ones (exactly one
/// operator per filter object).
fn matches(doc: &Value, f: &Value) -> Result<bool, String> {
    let obj = f.as_object().ok_or("attributeFilter must be an object")?;
    if obj.len() != 1 {
        return Err(format!(
            "an attributeFilter sets exactly one operator, not {}",
            obj.len()
        ));
    }
    let (op, v) = obj.iter().next().unwrap();
    Ok(match op.as_str() {
        "andAllFilters" => {
            let mut ok = true;
            for x in v.as_array().ok_or("andAllFilters must be an array")? {
                ok &= matches(doc, x)?;
            }
            ok
        }
        "orAllFilters" => {
            let mut ok = false;
            for x in v.as_array().ok_or("orAllFilters must be an array")? {
                ok |= matches(doc, x)?;
            }
            ok
        }
        "notFilter" => !matches(doc, v)?,
        "equalsTo" | "greaterThan" | "greaterThanOrEquals" | "lessThan" | "lessThanOrEquals" => {
            check_attribute(v, op, &[])?;
            let c = compare(doc, v);
            match op.as_str() {
                "equalsTo" => c == Some(std::cmp::Ordering::Equal),
                "greaterThan" => c == Some(std::cmp::Ordering::Greater),
                "greaterThanOrEquals" => matches!(
                    c,
                    Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
                ),
                "lessThan" => c == Some(std::cmp::Ordering::Less),
                _ => matches!(
                    c,
                    Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                ),
            }
        }
        other => return Err(format!("unknown attributeFilter operator {other}")),
    })
}

async fn chat_sync(
    State(q): State<Shared>,
    Path(app): Path<String>,
    RawQuery(query): RawQuery,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = signed(&h) {
        return *r;
    }
    if query
        .as_deref()
        .is_none_or(|q| !q.split('&').any(|p| p == "sync"))
    {
        return invalid("ChatSync is POST /applications/{applicationId}/conversations?sync");
    }
    if app != APP {
        return err(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "no such application",
        );
    }
    if let Err(e) = only_keys(
        &body,
        &[
            "userMessage",
            "attachments",
            "actionExecution",
            "authChallengeResponse",
            "conversationId",
            "parentMessageId",
            "attributeFilter",
            "chatMode",
            "chatModeConfiguration",
            "clientToken",
        ],
        "ChatSync",
    ) {
        return invalid(e);
    }
    let msg = body["userMessage"].as_str().unwrap_or("");
    if msg.is_empty() || msg.chars().count() > 7000 {
        return invalid("userMessage must be 1 to 7000 characters");
    }
    if let Some(mode) = body.get("chatMode")
        && !["RETRIEVAL_MODE", "CREATOR_MODE", "PLUGIN_MODE"].contains(&mode.as_str().unwrap_or(""))
    {
        return invalid(format!("chatMode {mode} is not a chat mode"));
    }
    let mut g = q.lock().unwrap();
    let mut hits = Vec::new();
    for (id, doc) in &g.docs {
        let keep = match body.get("attributeFilter") {
            Some(f) => match matches(doc, f) {
                Ok(k) => k,
                Err(e) => return invalid(e),
            },
            None => true,
        };
        if keep {
            hits.push((id.clone(), doc["title"].as_str().unwrap_or("").to_string()));
        }
    }
    g.requests.push(("ChatSync".into(), body.clone()));
    let message = if hits.is_empty() {
        "No documents matched.".to_string()
    } else {
        format!(
            "Found {} relevant anomalies: {}",
            hits.len(),
            hits.iter()
                .map(|h| h.1.clone())
                .collect::<Vec<_>>()
                .join(" | ")
        )
    };
    Json(json!({
        "conversationId": "c1b2c3d4-0000-4000-8000-000000000001",
        "systemMessageId": "m1",
        "userMessageId": "m0",
        "systemMessage": message,
        "sourceAttributions": hits.iter().enumerate().map(|(n, (id, title))| json!({
            "title": title,
            "documentId": id,
            "url": format!("trailhound://insights/{id}"),
            "citationNumber": n + 1,
            "snippet": title,
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn start_q() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/applications/{app}/indices/{index}", put(update_index))
        .route(
            "/applications/{app}/indices/{index}/documents",
            post(put_documents),
        )
        .route(
            "/applications/{app}/indices/{index}/documents/delete",
            post(delete_documents),
        )
        .route("/applications/{app}/conversations", post(chat_sync))
        .with_state(state.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}"), state)
}

fn anomaly(n: i64, env: Environment, account: &str) -> Anomaly {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).single().unwrap() + Duration::hours(n);
    let mut meta = AccountMetadata::external(account);
    meta.name = format!("acct-{n}");
    meta.environment = env;
    meta.known = true;
    Anomaly {
        ou_path: vec!["Root".into(), "Workloads".into()],
        actual: 10.0,
        expected: 1.0,
        features: vec![FeatureValue {
            name: "instances".into(),
            actual: 10.0,
            expected: 1.0,
        }],
        event_count: 10,
        ..spike("ec2-run-instances", "ec2", meta, n, start)
    }
}

async fn aws(endpoint: &str) -> trailhound_aws::Aws {
    trailhound_aws::Aws::load(&trailhound_aws::AwsConfig {
        region: Some("us-east-1".into()),
        endpoints: BTreeMap::from([("qbusiness".to_string(), endpoint.to_string())]),
        emulator: true,
        max_attempts: 1,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn config() -> QBusinessConfig {
    QBusinessConfig {
        application_id: APP.into(),
        index_id: INDEX.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_insights_and_chat_sync_answers_with_filters() {
    let (endpoint, q) = start_q().await;
    let aws = aws(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let store = InsightStore::open(&dir.path().join("i.redb")).unwrap();
    let insights = Insights::open(
        InsightsConfig::default(),
        store.clone(),
        trailhound_pricing::PriceTable::builtin().unwrap(),
    )
    .unwrap();
    let anomalies: Vec<Anomaly> = (0..12)
        .map(|n| {
            let env = if n % 2 == 0 {
                Environment::Production
            } else {
                Environment::Sandbox
            };
            anomaly(n, env, &format!("1111222233{:02}", n))
        })
        .collect();
    let made = insights.analyze(&anomalies).unwrap();

    let connector = Connector::new(&aws, config());
    connector.configure_index().await.unwrap();
    assert_eq!(connector.put(&made).await.unwrap(), 12);
    {
        let g = q.lock().unwrap();
        assert_eq!(g.docs.len(), 12);
        // Ten per call: two calls for twelve.
        assert_eq!(
            g.requests
                .iter()
                .filter(|(op, _)| op == "BatchPutDocument")
                .count(),
            2
        );
        let doc = &g.docs[&made[0].id];
        let env = attr_of(doc, "environment").unwrap();
        assert_eq!(env["stringValue"], "production");
        assert!(attr_of(doc, "window_start").unwrap()["dateValue"].is_number());
        assert!(attr_of(doc, "cost_usd_per_30_days").unwrap()["longValue"].is_i64());
        let text = base64::engine::general_purpose::STANDARD
            .decode(doc["content"]["blob"].as_str().unwrap())
            .unwrap();
        assert!(String::from_utf8(text).unwrap().contains("Root cause"));
    }

    // Questions go to ChatSync with the question's filters as attribute
    // filters; the cited documents come back as insights.
    let ask = QBusinessAsk::new(&aws, config(), store.clone());
    let a = ask
        .ask("Show me EC2 anomalies from production accounts", 20)
        .await
        .unwrap();
    assert_eq!(a.backend, "qbusiness");
    assert_eq!(a.results.len(), 6, "{}", a.answer);
    assert!(
        a.results
            .iter()
            .all(|i| i.anomaly.environment == Environment::Production)
    );
    let last = q.lock().unwrap().requests.last().cloned().unwrap();
    assert_eq!(last.0, "ChatSync");
    assert!(
        last.1["attributeFilter"]
            .to_string()
            .contains("environment"),
        "{}",
        last.1
    );

    // Expired documents are deleted.
    let expired = Connector::expired(
        &store,
        Utc.with_ymd_and_hms(2026, 3, 2, 5, 0, 0).single().unwrap(),
    )
    .unwrap();
    assert_eq!(expired.len(), 5);
    connector.delete(&expired).await.unwrap();
    assert_eq!(q.lock().unwrap().docs.len(), 7);

    // A wrong application is a clear error naming the call and the
    // resource.
    let wrong = QBusinessConfig {
        application_id: "00000000-0000-4000-8000-000000000bad".into(),
        ..config()
    };
    let e = Connector::new(&aws, wrong)
        .put(&made[..1])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("BatchPutDocument") && e.contains("00000000-0000-4000-8000-000000000bad"),
        "{e}"
    );
    assert!(e.contains("ResourceNotFound"), "{e}");
}

/// The server is strict enough to refuse the malformed payloads a
/// hand-written client (such as the reference implementation's) sends:
/// raw text for the blob, ISO dates, two-valued attributes, eleven
/// documents, a filter with two operators.
#[tokio::test]
async fn malformed_payloads_are_refused() {
    let (endpoint, _q) = start_q().await;
    let http = reqwest::Client::new();
    let auth = "AWS4-HMAC-SHA256 Credential=AKID/20260302/us-east-1/qbusiness/aws4_request, SignedHeaders=host, Signature=0";
    let put = |body: Value| {
        http.post(format!(
            "{endpoint}/applications/{APP}/indices/{INDEX}/documents"
        ))
        .header("authorization", auth)
        .json(&body)
        .send()
    };
    let doc = |extra: Value| {
        let mut d =
            json!({"id": "x", "contentType": "PLAIN_TEXT", "content": {"blob": "aGVsbG8="}});
        for (k, v) in extra.as_object().unwrap() {
            d[k] = v.clone();
        }
        d
    };
    let cases = [
        (
            json!({"documents": [doc(json!({"content": {"blob": "not base64 at all!"}}))]}),
            "base64",
        ),
        (
            json!({"documents": [doc(json!({"attributes": [{"name": "_created_at", "value": {"stringValue": "2026-03-02T00:00:00Z"}}]}))]}),
            "dateValue",
        ),
        (
            json!({"documents": [doc(json!({"attributes": [{"name": "account_id", "value": {"stringValue": "1", "longValue": 1}}]}))]}),
            "exactly one",
        ),
        (
            json!({"documents": (0..11).map(|_| doc(json!({}))).collect::<Vec<_>>()}),
            "1 to 10",
        ),
        (
            json!({"documents": [doc(json!({"contentType": "TEXT"}))]}),
            "content type",
        ),
        (json!({"Documents": []}), "unknown member"),
    ];
    for (body, needle) in cases {
        let r = put(body).await.unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let unsigned = http
        .post(format!("{endpoint}/applications/{APP}/conversations?sync"))
        .json(&json!({"userMessage": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403);
    // A filter with two operators where Q Business takes one.
    let two_ops = || {
        http.post(format!("{endpoint}/applications/{APP}/conversations?sync"))
            .header("authorization", auth)
            .json(&json!({"userMessage": "hi", "attributeFilter": {
                "equalsTo": {"name": "environment", "value": {"stringValue": "production"}},
                "lessThan": {"name": "severity_rank", "value": {"longValue": 3}}}}))
            .send()
    };
    let first = two_ops().await.unwrap();
    // Filters are checked against the stored documents; with none stored
    // the filter is not evaluated, so store one first.
    let _ = first;
    put(json!({"documents": [doc(json!({}))]})).await.unwrap();
    let two_ops = two_ops().await.unwrap();
    assert_eq!(two_ops.status(), 400);
    assert!(
        two_ops
            .text()
            .await
            .unwrap()
            .contains("exactly one operator")
    );
}
