//! Chat incoming webhooks: Slack (Block Kit JSON) and Microsoft Teams (an
//! Adaptive Card in a `message` envelope, which Workflows' "post to a
//! channel when a webhook request is received" takes too). Both POST the
//! rendered JSON to a URL whose path is the credential, so one channel
//! serves both; only the renderer differs.

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::http::Endpoint;
use super::{Channel, Payload, SendError, payload};
use crate::config::ChannelKind;
use crate::render::{Message, slack, teams};

pub struct ChatChannel {
    kind: ChannelKind,
    endpoint: Endpoint,
    render: fn(&Message<'_>) -> Value,
}

impl ChatChannel {
    pub(crate) fn slack(endpoint: Endpoint) -> Self {
        Self {
            kind: ChannelKind::Slack,
            endpoint,
            render: slack::render,
        }
    }

    pub(crate) fn teams(endpoint: Endpoint) -> Self {
        Self {
            kind: ChannelKind::Teams,
            endpoint,
            render: teams::render,
        }
    }
}

#[async_trait]
impl Channel for ChatChannel {
    fn kind(&self) -> ChannelKind {
        self.kind
    }

    fn target(&self) -> String {
        self.endpoint.target()
    }

    fn render(&self, m: &Message<'_>) -> Payload {
        payload(m, (self.render)(m))
    }

    async fn send(&self, p: &Payload) -> Result<(), SendError> {
        let body = serde_json::to_vec(&p.body)
            .map_err(|e| SendError::permanent(format!("failed to encode the message: {e}")))?;
        self.endpoint.post(body, HeaderMap::new()).await
    }

    fn scrub(&self, text: &str) -> String {
        self.endpoint.scrub(text)
    }
}
