//! A fault-injecting HTTP proxy between an AWS SDK client and the emulator.
//!
//! moto answers every call it understands, so on its own it cannot show
//! what a backend does when AWS throttles, fails with a 5xx or denies
//! access. [`FaultProxy`] sits in front of it: requests are forwarded
//! unchanged, except that the first N requests of a chosen action get an
//! AWS-shaped error instead. The action is read the way AWS routes it: the
//! `X-Amz-Target` header of the JSON protocols (`AWSOrganizationsV20161128.
//! ListAccounts` → `ListAccounts`) or the `Action=` field of the query
//! protocols (in the query string or the form body). Every request is
//! counted per action, so a test can assert that a throttled call was
//! retried, or that a cache spared the backend.
//!
//! Rules can be added and cleared while the proxy runs, so one test can
//! fill a cache through a healthy backend and then break it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

/// One injected failure: requests for `action` get `status` and `body`
/// instead of the upstream's answer, `times` times (or always).
#[derive(Clone, Debug)]
pub struct FaultRule {
    /// The operation name, e.g. "ListAccounts", "PutItem", "Publish".
    pub action: String,
    pub status: u16,
    pub content_type: String,
    pub body: String,
    /// How many matching requests fail; `None`: every one.
    pub times: Option<usize>,
}

impl FaultRule {
    /// An error in the shape of the JSON protocols (Organizations,
    /// DynamoDB, CloudWatch Logs, …): `{"__type": …, "message": …}`.
    pub fn json(action: &str, status: u16, error_type: &str, message: &str) -> Self {
        let body = format!(
            "{{\"__type\":{},\"message\":{}}}",
            json_string(error_type),
            json_string(message)
        );
        Self {
            action: action.into(),
            status,
            content_type: "application/x-amz-json-1.1".into(),
            body,
            times: None,
        }
    }

    /// An error in the shape of the query protocols (SNS, SQS, STS):
    /// an XML `ErrorResponse`.
    pub fn query(action: &str, status: u16, code: &str, message: &str) -> Self {
        let kind = if status >= 500 { "Receiver" } else { "Sender" };
        let body = format!(
            "<ErrorResponse><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>",
            xml_escape(code),
            xml_escape(message)
        );
        Self {
            action: action.into(),
            status,
            content_type: "text/xml".into(),
            body,
            times: None,
        }
    }

    /// Throttling as Organizations reports it (400 TooManyRequestsException).
    pub fn throttle(action: &str) -> Self {
        Self::json(action, 400, "TooManyRequestsException", "Rate exceeded")
    }

    /// A server-side failure (500 InternalFailure).
    pub fn internal_error(action: &str) -> Self {
        Self::json(
            action,
            500,
            "InternalFailure",
            "The request processing has failed because of an unknown error",
        )
    }

    /// Missing permission (400 AccessDeniedException).
    pub fn access_denied(action: &str) -> Self {
        Self::json(
            action,
            400,
            "AccessDeniedException",
            "You don't have permissions to access this resource.",
        )
    }

    /// Fails only the first `n` matching requests; later ones are forwarded.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// Sets the response's content type (DynamoDB answers
    /// `application/x-amz-json-1.0`).
    pub fn content_type(mut self, content_type: &str) -> Self {
        self.content_type = content_type.into();
        self
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[derive(Default)]
struct Counts {
    requests: BTreeMap<String, usize>,
    faults: BTreeMap<String, usize>,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<(FaultRule, usize)>>,
    counts: Mutex<Counts>,
}

/// A running fault proxy; stopped on drop.
pub struct FaultProxy {
    endpoint: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

trailhound_core::debug_fields!(FaultProxy { endpoint, .. });

impl FaultProxy {
    /// Starts a proxy on a free loopback port that forwards to `upstream`
    /// (an emulator's endpoint) and applies `rules` in order: the first
    /// rule of a request's action that still has faults to give wins.
    pub async fn start(upstream: &str, rules: Vec<FaultRule>) -> FaultProxy {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("failed to build the proxy's HTTP client");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client,
            rules: Mutex::new(rules.into_iter().map(|r| (r, 0)).collect()),
            counts: Mutex::new(Counts::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("failed to bind the fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Where clients should send their requests.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Adds a rule after those already there.
    pub fn push_rule(&self, rule: FaultRule) {
        lock(&self.shared.rules).push((rule, 0));
    }

    /// Removes every rule: from now on everything is forwarded.
    pub fn clear_rules(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Requests seen for `action` (forwarded or failed).
    pub fn requests(&self, action: &str) -> usize {
        lock(&self.shared.counts)
            .requests
            .get(action)
            .copied()
            .unwrap_or(0)
    }

    /// Requests for `action` answered with an injected fault.
    pub fn faults(&self, action: &str) -> usize {
        lock(&self.shared.counts)
            .faults
            .get(action)
            .copied()
            .unwrap_or(0)
    }

    /// Requests seen per action.
    pub fn all_requests(&self) -> BTreeMap<String, usize> {
        lock(&self.shared.counts).requests.clone()
    }

    /// Forgets the counts (not the rules).
    pub fn reset_counts(&self) {
        *lock(&self.shared.counts) = Counts::default();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The operation a request names: the `X-Amz-Target` suffix, else the
/// query protocols' `Action` field.
pub fn action_of(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    let form_action = |text: &str| {
        text.split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_string)
    };
    query
        .and_then(form_action)
        .or_else(|| std::str::from_utf8(body).ok().and_then(form_action))
        .unwrap_or_default()
}

const HOP_BY_HOP: [header::HeaderName; 4] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
];

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("fault proxy: {e}")),
    };
    let action = action_of(&parts.headers, parts.uri.query(), &body);
    *lock(&shared.counts)
        .requests
        .entry(action.clone())
        .or_default() += 1;
    let fault = {
        let mut rules = lock(&shared.rules);
        rules
            .iter_mut()
            .find(|(r, used)| r.action == action && r.times.is_none_or(|n| *used < n))
            .map(|(r, used)| {
                *used += 1;
                r.clone()
            })
    };
    if let Some(rule) = fault {
        *lock(&shared.counts).faults.entry(action).or_default() += 1;
        let mut response = Response::new(Body::from(rule.body));
        *response.status_mut() =
            StatusCode::from_u16(rule.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(v) = HeaderValue::from_str(&rule.content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        response
            .headers_mut()
            .insert("x-amzn-requestid", HeaderValue::from_static("fault-proxy"));
        return response;
    }
    forward(&shared, parts, body).await
}

async fn forward(shared: &Shared, parts: axum::http::request::Parts, body: Bytes) -> Response {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut headers = parts.headers;
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    let upstream = shared
        .client
        .request(parts.method, format!("{}{path}", shared.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("fault proxy: upstream: {e}"),
            );
        }
    };
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    let bytes = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("fault proxy: upstream: {e}"),
            );
        }
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn plain(status: StatusCode, message: String) -> Response {
    let mut r = Response::new(Body::from(message));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_from_the_target_header_or_the_action_field() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("AWSOrganizationsV20161128.ListAccounts"),
        );
        assert_eq!(action_of(&h, None, b""), "ListAccounts");
        let h = HeaderMap::new();
        assert_eq!(
            action_of(&h, None, b"Action=Publish&Version=2010-03-31"),
            "Publish"
        );
        assert_eq!(
            action_of(&h, Some("Version=1&Action=SendMessage"), b""),
            "SendMessage"
        );
        assert_eq!(action_of(&h, None, b"{}"), "");
    }

    #[test]
    fn error_bodies_are_well_formed() {
        let r = FaultRule::json("X", 400, "Bad\"Type", "a\nb");
        assert_eq!(r.body, r#"{"__type":"Bad\"Type","message":"a\u000ab"}"#);
        let q = FaultRule::query("Publish", 500, "InternalError", "x<y");
        assert!(q.body.contains("<Type>Receiver</Type>"));
        assert!(q.body.contains("x&lt;y"));
    }
}
