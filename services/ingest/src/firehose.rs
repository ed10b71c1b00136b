//! CloudWatch Logs through Amazon Data Firehose: an HTTP endpoint that
//! speaks Firehose's HTTP endpoint delivery protocol, so a CloudWatch Logs
//! subscription filter → Firehose stream → "HTTP endpoint" destination
//! delivers CloudTrail here without a Lambda in between.
//!
//! What was checked against AWS's documentation ("Understand HTTP endpoint
//! delivery request and response specifications", Firehose developer
//! guide; "Send CloudWatch Logs to Firehose"):
//! - Firehose POSTs `application/json` `{"requestId", "timestamp",
//!   "records": [{"data": "<base64>"}]}` with the headers
//!   `X-Amz-Firehose-Protocol-Version: 1.0`, `X-Amz-Firehose-Request-Id`
//!   (the same on every retry of a request), optionally
//!   `X-Amz-Firehose-Access-Key` (the key configured on the stream, copied
//!   verbatim) and `Content-Encoding: gzip` when body compression is on.
//! - The endpoint answers 200 with `{"requestId", "timestamp"}`, the
//!   request id echoed; any other status (with `errorMessage` in the body)
//!   is a failed delivery that Firehose retries for its retry duration,
//!   then backs up to S3. So this endpoint answers 200 only once
//!   `Ingest::submit` accepted the events downstream, and 503 while the
//!   downstream is unavailable.
//! - CloudWatch Logs hands Firehose gzip-compressed subscription payloads
//!   (`{"messageType","logGroup","logStream","logEvents":[{"id",
//!   "timestamp","message"}]}`, `CONTROL_MESSAGE` when a subscription is
//!   created), several log events per record; Firehose base64-encodes each
//!   record's bytes once in `data`. With Firehose's CloudWatch Logs
//!   decompression on, the data is the JSON itself, and with message
//!   extraction also on it is the log messages, one per line. All three
//!   shapes are read here.
//!
//! Bad records are dead-lettered (source `firehose:<requestId>#<record>`)
//! and do not fail the request: retrying cannot fix them, and the good
//! records around them go on. A body that is not a Firehose request at all
//! gets 400 with the reason; a body over the size limit 413. Firehose only
//! sends to HTTPS on port 443: run this behind a TLS-terminating load
//! balancer or proxy.
//!
//! The access key is compared in constant time and never logged.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use trailhound_core::Rejection;
use trailhound_core::cloudtrail::{self, Collect, ParseLimits};

use crate::ingest::Ingest;
use crate::source::SourceError;

const REQUEST_ID: &str = "x-amz-firehose-request-id";
const ACCESS_KEY: &str = "x-amz-firehose-access-key";

/// Tunables of the endpoint.
#[derive(Clone)]
pub struct FirehoseOptions {
    /// The key Firehose must send in `X-Amz-Firehose-Access-Key`; `None`
    /// accepts any request.
    pub access_key: Option<String>,
    /// Largest body accepted, bytes (after gzip content decoding too).
    pub max_body_bytes: usize,
    /// Requests read and parsed at once.
    pub max_concurrent_requests: usize,
}

impl std::fmt::Debug for FirehoseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirehoseOptions")
            .field("access_key", &self.access_key.as_ref().map(|_| "<set>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .finish()
    }
}

impl Default for FirehoseOptions {
    fn default() -> Self {
        Self {
            access_key: None,
            max_body_bytes: 128 << 20,
            max_concurrent_requests: 4,
        }
    }
}

/// Reads the access key from an environment variable or a file, trimmed;
/// an empty key is refused (it would accept anything).
pub fn load_access_key(
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, SourceError> {
    let key = match (env, file) {
        (Some(var), _) => std::env::var(var).map_err(|_| {
            SourceError::Config(format!(
                "ingest.firehose_access_key_env names {var}, which is not set in the environment"
            ))
        })?,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            SourceError::Config(format!(
                "failed to read ingest.firehose_access_key_file {}: {e}",
                path.display()
            ))
        })?,
        (None, None) => return Ok(None),
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err(SourceError::Config(
            "the Firehose access key is empty: set a key, or leave both firehose_access_key_env and firehose_access_key_file unset".into(),
        ));
    }
    Ok(Some(key))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryRequest {
    request_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    timestamp: Option<i64>,
    records: Vec<DeliveryRecord>,
}

#[derive(Deserialize)]
struct DeliveryRecord {
    data: String,
}

/// The success body, and the error body with `error_message`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryResponse {
    pub request_id: String,
    pub timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_message: Option<String>,
}

struct AppState {
    ingest: Arc<Ingest>,
    options: FirehoseOptions,
    permits: Semaphore,
}

/// The endpoint as an axum router (POST on any path: Firehose sends to the
/// URL configured on the stream, path included).
pub fn router(ingest: Arc<Ingest>, options: FirehoseOptions) -> Router {
    let state = Arc::new(AppState {
        ingest,
        permits: Semaphore::new(options.max_concurrent_requests.max(1)),
        options,
    });
    Router::new()
        .route("/", post(deliver))
        .route("/{*path}", post(deliver))
        .with_state(state)
}

/// Serves the endpoint until `shutdown`, then finishes the requests in
/// progress.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    options: FirehoseOptions,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if options.access_key.is_none() {
        tracing::warn!(
            addr,
            "the Firehose endpoint accepts requests without an access key: set firehose_access_key_env or firehose_access_key_file"
        );
    }
    let security = trailhound_runtime::security::installed();
    if let Ok(a) = listener.local_addr() {
        security
            .check_bind(a, "ingest's Firehose endpoint")
            .map_err(|e| SourceError::Listen {
                addr: addr.clone(),
                source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()),
            })?;
    }
    // TLS when [tls] serves it; never a client certificate: Firehose
    // presents none, its access key is the credential.
    let listener = trailhound_runtime::tls::Listener::new(
        listener,
        security.tls.clone(),
        trailhound_runtime::tls::ClientAuth::None,
    )
    .map_err(|source| SourceError::Listen {
        addr: addr.clone(),
        source,
    })?;
    tracing::info!(addr, "Firehose HTTP endpoint listening");
    axum::serve(listener, router(ingest, options))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| SourceError::Listen { addr, source })
}

/// Binds the endpoint's address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, SourceError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SourceError::Listen {
            addr: addr.to_string(),
            source,
        })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn reply(status: StatusCode, request_id: &str, error: Option<String>) -> Response {
    let body = DeliveryResponse {
        request_id: request_id.to_string(),
        timestamp: now_ms(),
        error_message: error,
    };
    (status, axum::Json(body)).into_response()
}

/// Constant-time equality, so the key cannot be guessed byte by byte from
/// response times.
fn same_key(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ e);
    }
    diff == 0
}

async fn deliver(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let header_id = parts
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some(expected) = &state.options.access_key {
        let given = parts
            .headers
            .get(ACCESS_KEY)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if !same_key(given, expected.as_bytes()) {
            tracing::warn!(
                request_id = header_id,
                "Firehose request refused: wrong or missing access key"
            );
            return reply(
                StatusCode::UNAUTHORIZED,
                &header_id,
                Some("missing or wrong X-Amz-Firehose-Access-Key: set the stream's access key to the one trailhound is configured with".into()),
            );
        }
    }
    let Ok(_permit) = state.permits.acquire().await else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &header_id,
            Some("ingest is shutting down".into()),
        );
    };
    let limit = state.options.max_body_bytes;
    let raw = match read_body(body, &parts.headers, limit).await {
        Ok(b) => b,
        Err((status, msg)) => {
            tracing::warn!(
                request_id = header_id,
                error = msg,
                "Firehose request refused"
            );
            return reply(status, &header_id, Some(msg));
        }
    };
    let request: DeliveryRequest = match serde_json::from_slice(&raw) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!(
                "the body is not a Firehose delivery request (JSON {{\"requestId\", \"timestamp\", \"records\": [{{\"data\": base64}}]}}): {e}"
            );
            tracing::warn!(
                request_id = header_id,
                error = msg,
                "Firehose request refused"
            );
            return reply(StatusCode::BAD_REQUEST, &header_id, Some(msg));
        }
    };
    drop(raw);
    let request_id = if request.request_id.is_empty() {
        header_id
    } else {
        request.request_id.clone()
    };
    let rid = request_id.clone();
    let parsed = state
        .ingest
        .parse_blocking(move |ingest| {
            parse_request(&request, &rid, ingest.limits(), ingest.max_request_bytes())
        })
        .await;
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, &request_id, Some(e));
        }
    };
    match state.ingest.submit(parsed).await {
        Ok(o) => {
            tracing::debug!(
                request_id,
                accepted = o.accepted,
                rejected = o.rejected,
                duplicates = o.duplicates,
                "Firehose delivery accepted"
            );
            reply(StatusCode::OK, &request_id, None)
        }
        Err(e) => {
            tracing::warn!(request_id, error = %e, "Firehose delivery not accepted downstream; Firehose will retry");
            let status = if e.retryable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            reply(status, &request_id, Some(format!("{e}; retry later")))
        }
    }
}

/// Reads the body up to `limit` bytes, decoding `Content-Encoding: gzip`.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Vec<u8>, (StatusCode, String)> {
    use futures::StreamExt;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body over the {limit} byte limit: lower the stream's buffer size or raise ingest.firehose_max_body_bytes"
            ),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("failed to read the request body: {e}"),
            )
        })?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    if gzip {
        use std::io::Read;
        let mut plain = Vec::new();
        let read = flate2::read::MultiGzDecoder::new(out.as_slice())
            .take(limit as u64 + 1)
            .read_to_end(&mut plain)
            .map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("Content-Encoding is gzip but the body is not valid gzip: {e}"),
                )
            })?;
        if read > limit {
            return Err(too_large());
        }
        return Ok(plain);
    }
    Ok(out)
}

/// Parses every record of a delivery; decompressed, they may add up to
/// `budget` bytes, and the records past it are refused with the reason.
fn parse_request(
    request: &DeliveryRequest,
    request_id: &str,
    limits: &ParseLimits,
    budget: usize,
) -> Collect {
    let mut sink = Collect::default();
    let now = now_ms();
    let mut left = budget;
    for (i, record) in request.records.iter().enumerate() {
        let source = format!("firehose:{request_id}#{i}");
        if left == 0 {
            sink.rejections.push(Rejection::new(
                source,
                format!(
                    "the request's decompression budget ({budget} bytes, max_request_bytes) is used up: record refused"
                ),
                "",
            ));
            continue;
        }
        let record_limits = ParseLimits {
            max_document_bytes: limits.max_document_bytes.min(left),
            ..limits.clone()
        };
        let used = parse_record_data(&record.data, &source, &record_limits, now, &mut sink);
        left = left.saturating_sub(used);
    }
    sink
}

/// Reads one Firehose record's `data`: base64 of a gzip CloudWatch Logs
/// payload (one or several concatenated), of the payload's JSON
/// (decompression on), or of log messages one per line (message extraction
/// on).
pub fn parse_record_data(
    data: &str,
    source: &str,
    limits: &ParseLimits,
    now_ms: i64,
    sink: &mut Collect,
) -> usize {
    let bytes = match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
        Ok(b) => b,
        Err(e) => {
            sink.rejections.push(Rejection::new(
                source,
                format!("record data is not valid base64: {e}"),
                data,
            ));
            return 0;
        }
    };
    let body = match cloudtrail::maybe_gunzip(bytes, limits.max_document_bytes) {
        Ok(b) => b,
        Err(reason) => {
            sink.rejections
                .push(Rejection::new(source, format!("record data: {reason}"), ""));
            // A refused bomb used up what it was allowed.
            return limits.max_document_bytes;
        }
    };
    let used = body.len();
    let Ok(text) = std::str::from_utf8(&body) else {
        sink.rejections.push(Rejection::new(
            source,
            "record data is neither gzip nor UTF-8 text: not a CloudWatch Logs delivery",
            "",
        ));
        return used;
    };
    if is_cloudwatch_payload(text) {
        // One payload, or several back to back (concatenated gzip members).
        let mut stream =
            serde_json::Deserializer::from_str(text).into_iter::<&serde_json::value::RawValue>();
        let mut n = 0;
        loop {
            match stream.next() {
                None => break,
                Some(Ok(raw)) => {
                    let src = if n == 0 {
                        source.to_string()
                    } else {
                        format!("{source}.{n}")
                    };
                    cloudtrail::parse_cloudwatch_json(
                        raw.get().as_bytes(),
                        &src,
                        limits,
                        now_ms,
                        sink,
                    );
                    n += 1;
                }
                Some(Err(e)) => {
                    sink.rejections.push(Rejection::new(
                        source,
                        format!("malformed CloudWatch Logs payload after {n} payloads: {e}"),
                        text,
                    ));
                    break;
                }
            }
        }
        return used;
    }
    // Message extraction: the CloudTrail records themselves, one per line.
    let mut any = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        any = true;
        cloudtrail::parse_document(line, &format!("{source}:{i}"), limits, now_ms, sink);
    }
    if !any {
        sink.rejections
            .push(Rejection::new(source, "record data is empty", ""));
    }
    used
}

/// Whether decoded record text is a CloudWatch Logs subscription payload
/// (rather than extracted messages).
fn is_cloudwatch_payload(text: &str) -> bool {
    let t = text.trim_start();
    if !t.starts_with('{') {
        return false;
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        message_type: Option<serde::de::IgnoredAny>,
        log_events: Option<serde::de::IgnoredAny>,
    }
    let mut de = serde_json::Deserializer::from_str(t).into_iter::<Probe>();
    matches!(de.next(), Some(Ok(p)) if p.message_type.is_some() || p.log_events.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b).unwrap_or_else(|e| panic!("{e}"));
        enc.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn record(id: u32) -> String {
        format!(
            r#"{{"eventVersion":"1.09","eventID":"0f0e0d0c-0000-4000-8000-{id:012}","eventTime":"2026-03-01T10:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"us-east-1","recipientAccountId":"111122223333"}}"#
        )
    }

    fn payload(ids: &[u32]) -> String {
        let events: Vec<serde_json::Value> = ids
            .iter()
            .map(
                |i| serde_json::json!({"id": i.to_string(), "timestamp": 1, "message": record(*i)}),
            )
            .collect();
        serde_json::json!({"messageType":"DATA_MESSAGE","owner":"111122223333","logGroup":"trail","logStream":"s","subscriptionFilters":["f"],"logEvents":events}).to_string()
    }

    fn parse(data: &str) -> Collect {
        let mut c = Collect::default();
        let _ = parse_record_data(data, "t", &ParseLimits::default(), now_ms(), &mut c);
        c
    }

    #[test]
    fn reads_the_three_shapes_of_record_data() {
        let c = parse(&b64(&gzip(payload(&[1, 2]).as_bytes())));
        assert_eq!((c.events.len(), c.rejections.len()), (2, 0));
        // Two payloads in one record: concatenated gzip members.
        let mut two = gzip(payload(&[3]).as_bytes());
        two.extend(gzip(payload(&[4, 5]).as_bytes()));
        let c = parse(&b64(&two));
        assert_eq!((c.events.len(), c.rejections.len()), (3, 0));
        // Decompression on: the JSON itself.
        let c = parse(&b64(payload(&[6]).as_bytes()));
        assert_eq!(c.events.len(), 1);
        // Message extraction on: records one per line.
        let c = parse(&b64(format!("{}\n{}\n", record(7), record(8)).as_bytes()));
        assert_eq!((c.events.len(), c.rejections.len()), (2, 0));
    }

    #[test]
    fn bad_data_is_rejected_with_reasons() {
        let c = parse("!!!");
        assert!(
            c.rejections[0].reason.contains("base64"),
            "{:?}",
            c.rejections
        );
        let mut truncated = gzip(payload(&[1]).as_bytes());
        truncated.truncate(truncated.len() / 2);
        let c = parse(&b64(&truncated));
        assert!(
            c.rejections[0].reason.contains("gzip"),
            "{:?}",
            c.rejections
        );
        let control = serde_json::json!({"messageType":"CONTROL_MESSAGE","logGroup":"","logStream":"","logEvents":[{"id":"","timestamp":1,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}).to_string();
        let c = parse(&b64(&gzip(control.as_bytes())));
        assert_eq!((c.events.len(), c.rejections.len()), (0, 0));
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(same_key(b"secret", b"secret"));
        assert!(!same_key(b"secre", b"secret"));
        assert!(!same_key(b"secret!", b"secret"));
        assert!(!same_key(b"", b"secret"));
    }
}
