//! Slack incoming webhooks: Block Kit JSON POSTed to the webhook URL.

use async_trait::async_trait;
use reqwest::header::HeaderMap;

use super::http::Endpoint;
use super::{Channel, Payload, SendError, payload};
use crate::config::ChannelKind;
use crate::render::{Message, slack};

pub struct SlackChannel {
    endpoint: Endpoint,
}

impl SlackChannel {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }
}

#[async_trait]
impl Channel for SlackChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Slack
    }

    fn target(&self) -> String {
        self.endpoint.target()
    }

    fn render(&self, m: &Message<'_>) -> Payload {
        payload(m, slack::render(m))
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
