//! Test harness: real HTTP listeners on 127.0.0.1:0 (axum) standing in for
//! Slack, Teams and webhooks, scripted per request, recording what they got.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use trailhound_notify::{ChannelConfig, ChannelKind, NotifyConfig, RetryConfig, RouteConfig};

/// What the fake endpoint answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    /// A status with a `Retry-After` header.
    RetryAfter(u16, &'static str),
    /// Never answers.
    Hang,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct HookState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
}

/// A fake webhook endpoint.
pub struct Hook {
    pub addr: SocketAddr,
    state: Arc<HookState>,
    task: tokio::task::JoinHandle<()>,
}

/// The secret-looking part of every fake webhook URL.
pub const URL_SECRET: &str = "T0SECRET/B0SECRET/XyZsecretToken";

impl Hook {
    /// Starts a listener; requests get `script` replies in order, then 200.
    pub async fn start(script: Vec<Reply>) -> Self {
        let state = Arc::new(HookState::default());
        state.script.lock().unwrap().extend(script);
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/services/<URL_SECRET>`: shaped like a Slack
    /// webhook URL, whose path is the credential.
    pub fn url(&self) -> String {
        format!("http://{}/services/{URL_SECRET}", self.addr)
    }

    /// Queues more replies after those not used yet.
    pub fn script(&self, replies: Vec<Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(state): State<Arc<HookState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.received.lock().unwrap().push(Received {
        at: Instant::now(),
        path: uri.path().to_string(),
        headers,
        body,
    });
    let reply = state.script.lock().unwrap().pop_front();
    match reply {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Reply::Status(s)) => {
            (StatusCode::from_u16(s).unwrap(), format!("status {s}")).into_response()
        }
        Some(Reply::RetryAfter(s, after)) => (
            StatusCode::from_u16(s).unwrap(),
            [("retry-after", after)],
            "slow down",
        )
            .into_response(),
        Some(Reply::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Retries fast enough for tests: 3 attempts, backoff ≤ 50 ms, 2 s timeout.
pub fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        max_retry_after: Duration::from_secs(5),
    }
}

pub fn channel(name: &str, kind: ChannelKind, url: &str) -> ChannelConfig {
    ChannelConfig::with_url(name, kind, url)
}

pub fn route(name: &str, channels: &[&str]) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        ..RouteConfig::default()
    }
}

/// A notifier with its files in a fresh temp dir and one channel, `name`
/// of `kind`, posting to a [`Hook`] that answers with `script`.
pub async fn one_channel(
    name: &str,
    kind: ChannelKind,
    script: Vec<Reply>,
) -> (Hook, tempfile::TempDir, Arc<trailhound_notify::Notifier>) {
    let hook = Hook::start(script).await;
    let dir = tempfile::tempdir().unwrap();
    let n = trailhound_notify::build(
        &config(dir.path(), vec![channel(name, kind, &hook.url())]),
        dir.path(),
    )
    .unwrap();
    (hook, dir, n)
}

/// Serves `n` over gRPC on a loopback port: its URL, the token that
/// stops it, and the server's task.
pub async fn serve(
    n: Arc<trailhound_notify::Notifier>,
) -> (
    String,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        trailhound_notify::serve(listener, n, s).await.unwrap();
    });
    (format!("http://{addr}"), stop, task)
}

/// A config with these channels, one rule sending everything to all of
/// them, fast retries, and files under `dir`.
pub fn config(dir: &Path, channels: Vec<ChannelConfig>) -> NotifyConfig {
    let names: Vec<String> = channels.iter().map(|c| c.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    NotifyConfig {
        store_path: Some(dir.join("notify.redb")),
        dead_letter_path: Some(dir.join("notify-dead-letters.jsonl")),
        retry: fast_retry(),
        routes: vec![route("everything", &names)],
        channels,
        ..NotifyConfig::default()
    }
}
