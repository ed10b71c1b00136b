//! Channels: where a message goes, behind one trait.
//!
//! A [`Channel`] renders a message into a [`Payload`] once per delivery and
//! makes single attempts to send it; retries, backoff, timeouts, rate
//! limits and dead letters are the delivery code's (see `crate::retry` and
//! `crate::notifier`), written once for every kind. A channel classifies
//! each failure as retryable (429, 5xx, connection errors, timeouts) or
//! permanent, and may pass on the server's `Retry-After`.
//!
//! Kinds: Slack and Teams incoming webhooks, a generic HMAC-signed webhook,
//! the log (tracing and an optional JSON Lines file), and SNS, whose client
//! is a [`Publisher`] handed in by whoever has AWS credentials.

pub mod chat;
mod http;
pub mod log;
pub mod sns;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::config::{ChannelConfig, ChannelKind};
use crate::render::Message;
use crate::secret::{EnvLookup, Source, parse_url};

pub use sns::{Publisher, SnsMessage};
pub use webhook::{sign, verify};

/// A message rendered for one channel: what is sent, retried, and written
/// to the dead-letter file when it cannot be delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    /// `insight.opened` or `insight.follow_up`.
    pub event: &'static str,
    pub delivery_id: String,
    /// One line for logs.
    pub summary: String,
    pub body: Value,
}

/// Why an attempt failed. Reasons never contain secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// May succeed later: 429, 5xx, connection errors, timeouts.
    #[error("{reason}")]
    Retryable {
        reason: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Will not succeed as is: other 4xx, an unusable payload.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl SendError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        SendError::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        SendError::Permanent {
            reason: reason.into(),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            SendError::Retryable { reason, .. } | SendError::Permanent { reason } => reason,
        }
    }
}

/// Somewhere messages can go.
#[async_trait]
pub trait Channel: Send + Sync {
    fn kind(&self) -> ChannelKind;
    /// Where messages go, safe to show (secrets redacted).
    fn target(&self) -> String;
    /// The payload for a message; called once per delivery.
    fn render(&self, message: &Message<'_>) -> Payload;
    /// One attempt. The caller bounds it with the channel's timeout.
    async fn send(&self, payload: &Payload) -> Result<(), SendError>;
    /// `text` with this channel's secrets removed; applied to every failure
    /// reason before it is stored or logged.
    fn scrub(&self, text: &str) -> String {
        text.to_string()
    }
}

/// What opening a channel may need besides its configuration.
#[derive(Clone)]
pub struct OpenContext {
    pub http: reqwest::Client,
    pub env: EnvLookup,
    /// The SNS client; `None` until the AWS backend exists.
    pub sns: Option<Arc<dyn Publisher>>,
}

fn payload(m: &Message<'_>, body: Value) -> Payload {
    let f = crate::render::Facts::of(m);
    Payload {
        event: m.event(),
        delivery_id: m.delivery_id.to_string(),
        summary: match m.follow_up {
            Some(fu) => crate::render::FollowUpFacts::of(m, fu).title,
            None => format!("{}: {}", f.title, f.summary),
        },
        body,
    }
}

/// Opens the channel a (validated) configuration describes, resolving its
/// secrets. Errors name the channel's key, never a secret.
pub fn open(cfg: &ChannelConfig, ctx: &OpenContext) -> Result<Arc<dyn Channel>, String> {
    let url_source = Source {
        what: "url",
        literal: cfg.url.as_ref().map(|s| s.0.as_str()),
        env: cfg.url_env.as_deref(),
        file: cfg.url_file.as_deref(),
    };
    let endpoint = || -> Result<http::Endpoint, String> {
        let secret = url_source
            .resolve(&ctx.env)?
            .ok_or_else(|| "no url configured".to_string())?;
        let url = parse_url(&secret, &url_source)?;
        Ok(http::Endpoint {
            client: ctx.http.clone(),
            url,
            secret,
        })
    };
    Ok(match cfg.kind() {
        ChannelKind::Slack => Arc::new(chat::ChatChannel::slack(endpoint()?)),
        ChannelKind::Teams => Arc::new(chat::ChatChannel::teams(endpoint()?)),
        ChannelKind::Webhook => {
            let secret = Source {
                what: "secret",
                literal: cfg.secret.as_ref().map(|s| s.0.as_str()),
                env: cfg.secret_env.as_deref(),
                file: cfg.secret_file.as_deref(),
            }
            .resolve(&ctx.env)?;
            Arc::new(webhook::WebhookChannel::new(endpoint()?, secret))
        }
        ChannelKind::Log => Arc::new(log::LogChannel::open(&cfg.name, cfg.jsonl_path.as_deref())?),
        ChannelKind::Sns => {
            let Some(publisher) = ctx.sns.clone() else {
                return Err("sns channels need AWS: start notify with an [aws] section (trailhound notify, trailhound up) or pass an SNS publisher to build_with".into());
            };
            let arn = cfg.topic_arn.clone().unwrap_or_default();
            Arc::new(sns::SnsChannel::new(arn, publisher))
        }
    })
}
