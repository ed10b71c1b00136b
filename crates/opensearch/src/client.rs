//! One way to call the cluster: the `opensearch` crate's transport (node
//! list, basic auth or SigV4, custom CA, timeouts) plus what it leaves to
//! the caller — retries with backoff on 429/502/503/504 and connection
//! errors, and errors that say which index or detector failed and what to
//! do about it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opensearch::OpenSearch;
use opensearch::auth::Credentials;
use opensearch::cert::{Certificate, CertificateValidation};
pub use opensearch::http::Method;
use opensearch::http::Url;
use opensearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use opensearch::http::transport::{Connection, ConnectionPool, TransportBuilder};
use serde_json::Value;

use crate::config::{Auth, OpenSearchConfig};

/// What went wrong talking to the cluster. Every message names what was
/// being done (`what`: an index, a template, a detector) and the fix.
#[derive(Debug, thiserror::Error)]
pub enum OsError {
    #[error("invalid [opensearch] configuration: {0}")]
    Config(String),
    #[error(
        "OpenSearch is unreachable while {what} ({message}); check [opensearch] urls, the network path and that the cluster is up — events wait and are retried"
    )]
    Unreachable { what: String, message: String },
    #[error(
        "OpenSearch refused {what} with 403 ({reason}); grant the role mapped to trailhound's user or IAM role this permission in fine-grained access control (Security → Roles), e.g. indices:data/write/bulk* and indices:admin/create on {pattern}, cluster:admin/opendistro/ad/* for detectors"
    )]
    Forbidden {
        what: String,
        reason: String,
        pattern: String,
    },
    #[error(
        "mapping conflict on {index}: {reason}; an existing index maps a trailhound field with another type — delete or reindex {index}, or set [opensearch] index_prefix to a fresh prefix"
    )]
    MappingConflict { index: String, reason: String },
    #[error(
        "detector {detector}: the cluster allows at most {limit} high-cardinality detectors ({reason}); delete unused detectors or raise plugins.anomaly_detection.max_multi_entity_anomaly_detectors and [opensearch] max_hc_detectors"
    )]
    DetectorLimit {
        detector: String,
        limit: usize,
        reason: String,
    },
    #[error("detector {detector}: {reason}")]
    InvalidDetector { detector: String, reason: String },
    #[error("OpenSearch answered {status} to {what}: {kind}: {reason}")]
    Status {
        what: String,
        status: u16,
        kind: String,
        reason: String,
    },
    #[error("OpenSearch sent an unexpected answer to {what}: {message}")]
    Protocol { what: String, message: String },
}

impl OsError {
    /// Whether the same call may work later without anyone changing
    /// anything (the cluster is down or overloaded).
    pub fn is_retryable(&self) -> bool {
        match self {
            OsError::Unreachable { .. } => true,
            OsError::Status { status, .. } => retryable_status(*status),
            OsError::Config(_)
            | OsError::Forbidden { .. }
            | OsError::MappingConflict { .. }
            | OsError::DetectorLimit { .. }
            | OsError::InvalidDetector { .. }
            | OsError::Protocol { .. } => false,
        }
    }

    /// The HTTP status, when the cluster answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            OsError::Status { status, .. } => Some(*status),
            OsError::Forbidden { .. } => Some(403),
            _ => None,
        }
    }
}

/// Statuses worth a retry: throttling and a node or gateway in trouble.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Round robin over the configured nodes: a retry after a connection error
/// goes to the next node.
#[derive(Clone, Debug)]
struct RoundRobin {
    nodes: Arc<Vec<Connection>>,
    next: Arc<AtomicUsize>,
}

impl ConnectionPool for RoundRobin {
    fn next(&self) -> Connection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        self.nodes[i].clone()
    }
}

/// The cluster's health as the health service shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionHealth {
    /// "green", "yellow", "red", or "unreachable".
    pub status: String,
    pub nodes: u64,
    pub message: String,
}

/// A handle on the cluster; cheap to clone.
#[derive(Clone)]
pub struct Client {
    os: OpenSearch,
    max_attempts: u32,
    initial_backoff: Duration,
    pattern: String,
}

trailhound_core::debug_fields!(Client { pattern, .. });

/// A parsed response: the status and the JSON body (Null when empty).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The hits of a search reply (none when it has none).
    pub fn hits(&self) -> Vec<Value> {
        self.body["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Client {
    /// Builds the client. `aws` is needed for SigV4 only: its credential
    /// chain signs every request.
    pub fn new(
        config: &OpenSearchConfig,
        aws: Option<&trailhound_aws::Aws>,
    ) -> Result<Self, OsError> {
        config.validate().map_err(OsError::Config)?;
        let nodes = config
            .urls
            .iter()
            .map(|u| {
                Url::parse(u)
                    .map(Connection::new)
                    .map_err(|e| OsError::Config(format!("urls: {u:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pool = RoundRobin {
            nodes: Arc::new(nodes),
            next: Arc::new(AtomicUsize::new(0)),
        };
        let mut b = TransportBuilder::new(pool)
            .timeout(config.request_timeout)
            .disable_proxy();
        match &config.auth {
            Auth::None => {}
            Auth::Basic { username, password } => {
                b = b.auth(Credentials::Basic(username.clone(), password.clone()));
            }
            Auth::Sigv4 { service, region } => {
                let aws = aws.ok_or_else(|| {
                    OsError::Config("auth sigv4 needs the [aws] section's credentials".into())
                })?;
                let sdk = aws.sdk_config("opensearch");
                let provider = sdk.credentials_provider().ok_or_else(|| {
                    OsError::Config(
                        "auth sigv4: no AWS credentials provider (set [aws] or AWS_* variables)"
                            .into(),
                    )
                })?;
                let region = region.clone().unwrap_or_else(|| aws.region());
                b = b
                    .auth(Credentials::AwsSigV4(
                        provider,
                        aws_types::region::Region::new(region),
                    ))
                    .service_name(service);
            }
        }
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                OsError::Config(format!("ca_cert: failed to read {}: {e}", path.display()))
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                OsError::Config(format!("ca_cert: {} is not a PEM CA: {e}", path.display()))
            })?;
            b = b.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = b
            .build()
            .map_err(|e| OsError::Config(format!("failed to build the HTTP client: {e}")))?;
        Ok(Self::from_transport(OpenSearch::new(transport), config))
    }

    /// Wraps an already-built `opensearch` client (tests sign with a fixed
    /// clock this way).
    pub fn from_transport(os: OpenSearch, config: &OpenSearchConfig) -> Self {
        Self {
            os,
            max_attempts: config.max_attempts.max(1),
            initial_backoff: config.initial_backoff,
            pattern: config.index_pattern(),
        }
    }

    /// The index pattern this client writes, for error messages.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Sends one request, retrying throttling, unavailable nodes and
    /// connection errors with exponential backoff. Any status other than
    /// 2xx (and 404 when `allow_404`) is an error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        ndjson: bool,
        what: &str,
    ) -> Result<Reply, OsError> {
        let mut backoff =
            trailhound_runtime::retry::Backoff::new(self.initial_backoff, Duration::from_secs(30));
        let mut attempt = 1;
        loop {
            let r = self
                .send_once(method, path, body.as_ref(), ndjson, what)
                .await;
            match r {
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    let wait = backoff.fail();
                    tracing::debug!(error = %e, attempt, ?wait, "retrying OpenSearch request");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// A JSON request; see [`Client::send`].
    /// POSTs the query `body` to `path` (an index or pattern and
    /// `_search`, or a plugin's search endpoint).
    pub async fn search(&self, path: &str, body: &Value, what: &str) -> Result<Reply, OsError> {
        self.json(Method::Post, path, Some(body), what).await
    }

    /// [`Client::search`] of `index` (a name or a pattern); errors say
    /// "<what> in <index>".
    pub async fn search_in(&self, index: &str, body: &Value, what: &str) -> Result<Reply, OsError> {
        self.search(
            &format!("{index}/_search"),
            body,
            &format!("{what} in {index}"),
        )
        .await
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Reply, OsError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.send(method, path, bytes, false, what).await
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Vec<u8>>,
        ndjson: bool,
        what: &str,
    ) -> Result<Reply, OsError> {
        let mut headers = HeaderMap::new();
        if ndjson {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
        }
        let resp = self
            .os
            .transport()
            .send(
                method,
                path,
                headers,
                None::<&()>,
                body.map(|b| b.as_slice()),
                None,
            )
            .await
            .map_err(|e| OsError::Unreachable {
                what: what.to_string(),
                message: e.to_string(),
            })?;
        let status = resp.status_code().as_u16();
        let text = resp.text().await.map_err(|e| OsError::Unreachable {
            what: what.to_string(),
            message: format!("failed to read the response: {e}"),
        })?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if (200..300).contains(&status) {
            return Ok(Reply { status, body });
        }
        Err(self.error_of(status, &body, what))
    }

    /// Classifies an error answer.
    pub fn error_of(&self, status: u16, body: &Value, what: &str) -> OsError {
        let (kind, reason) = error_kind_reason(body);
        if status == 403 {
            return OsError::Forbidden {
                what: what.to_string(),
                reason: if reason.is_empty() { kind } else { reason },
                pattern: self.pattern.clone(),
            };
        }
        let conflict = kind == "illegal_argument_exception"
            && (reason.contains("cannot be changed from type")
                || reason.contains("mapper [")
                || reason.contains("conflicts with existing mapping"));
        if status == 400 && conflict {
            return OsError::MappingConflict {
                index: what.to_string(),
                reason,
            };
        }
        OsError::Status {
            what: what.to_string(),
            status,
            kind,
            reason,
        }
    }

    /// GET `_cluster/health`, never failing: an unreachable cluster is a
    /// status too.
    pub async fn health(&self) -> ConnectionHealth {
        match self
            .send_once(
                Method::Get,
                "_cluster/health",
                None,
                false,
                "cluster health",
            )
            .await
        {
            Ok(r) => ConnectionHealth {
                status: r.body["status"].as_str().unwrap_or("unknown").to_string(),
                nodes: r.body["number_of_nodes"].as_u64().unwrap_or(0),
                message: String::new(),
            },
            Err(e) => ConnectionHealth {
                status: if e.status().is_some() {
                    "red".into()
                } else {
                    "unreachable".into()
                },
                nodes: 0,
                message: e.to_string(),
            },
        }
    }
}

/// The `error.type` and `error.reason` of an error body (either shape:
/// the core API's object, or the plugin's plain string).
pub fn error_kind_reason(body: &Value) -> (String, String) {
    let err = &body["error"];
    match err {
        Value::Object(_) => {
            let root = &err["root_cause"][0];
            let kind = err["type"].as_str().unwrap_or("error").to_string();
            let reason = err["reason"]
                .as_str()
                .or_else(|| root["reason"].as_str())
                .unwrap_or("")
                .to_string();
            (kind, reason)
        }
        Value::String(s) => ("error".into(), s.clone()),
        _ => match body {
            Value::String(s) => ("error".into(), s.clone()),
            _ => ("error".into(), body.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_are_classified() {
        let c = Client::from_transport(
            OpenSearch::default(),
            &OpenSearchConfig {
                ..Default::default()
            },
        );
        let e = c.error_of(
            403,
            &json!({"error": {"root_cause": [{"type": "security_exception", "reason": "no permissions for [indices:data/write/bulk]"}], "type": "security_exception", "reason": "no permissions for [indices:data/write/bulk]"}, "status": 403}),
            "_bulk into cwl-multiaccounts-2026.01.05",
        );
        let msg = e.to_string();
        assert!(msg.contains("cwl-multiaccounts-2026.01.05") && msg.contains("fine-grained"));
        assert!(!e.is_retryable());
        let e = c.error_of(
            400,
            &json!({"error": {"type": "illegal_argument_exception", "reason": "mapper [sourceIP] cannot be changed from type [keyword] to [ip]"}}),
            "cwl-multiaccounts-2026.01.05",
        );
        assert!(matches!(e, OsError::MappingConflict { .. }), "{e}");
        let e = c.error_of(503, &json!({"error": "busy"}), "x");
        assert!(e.is_retryable());
    }
}
