//! Amazon SNS as a channel kind. The client comes in as a [`Publisher`]
//! ([`crate::aws_sns::SnsPublisher`] over aws-sdk-sns in production, fakes
//! in unit tests), so routing and delivery do not depend on the SDK.
//!
//! Each message is published with `MessageStructure=json`: e-mail and SMS
//! subscribers (and the `default` key) get the plain-text rendering,
//! programmatic subscribers (SQS, Lambda, HTTP/S, Firehose) get the
//! webhook's JSON (see `crate::render::json`). The subject is at most 100
//! ASCII characters, and message attributes carry severity, environment,
//! account, detector, region and event so that subscription filter
//! policies can route on them. SNS refuses anything over 256 KiB (message
//! and attributes together); a message that would be larger is shrunk in
//! steps (the JSON loses the insight's raw detail, then the text is cut)
//! and, if it still does not fit, fails permanently with its size.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::{Channel, Payload, SendError, payload};
use crate::config::ChannelKind;
use crate::render::{Message, json, text};

/// One SNS Publish call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnsMessage {
    pub topic_arn: String,
    pub subject: String,
    /// The plain-text rendering (e-mail, SMS, `default`).
    pub message: String,
    /// The JSON rendering for programmatic subscribers; `None` publishes
    /// `message` alone without a message structure.
    #[serde(default)]
    pub json: Option<String>,
    /// String message attributes.
    pub attributes: BTreeMap<String, String>,
}

/// SNS's limit on one Publish: message plus attribute names, types and
/// values, in bytes.
pub const MAX_PUBLISH_BYTES: usize = 262_144;

/// Protocols that receive the JSON rendering under `MessageStructure=json`.
const JSON_PROTOCOLS: [&str; 5] = ["sqs", "lambda", "http", "https", "firehose"];

impl SnsMessage {
    /// The `Message` parameter: the per-protocol JSON document when there
    /// is a JSON rendering, else the text.
    pub fn body(&self) -> String {
        let Some(json) = &self.json else {
            return self.message.clone();
        };
        let mut doc = serde_json::Map::new();
        doc.insert("default".into(), self.message.clone().into());
        doc.insert("email".into(), self.message.clone().into());
        doc.insert("sms".into(), self.message.clone().into());
        for p in JSON_PROTOCOLS {
            doc.insert(p.into(), json.clone().into());
        }
        serde_json::Value::Object(doc).to_string()
    }

    /// Bytes SNS counts against [`MAX_PUBLISH_BYTES`].
    pub fn size(&self) -> usize {
        let attrs: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum();
        self.body().len() + attrs
    }

    /// Checks the size before a call SNS would refuse.
    pub fn check_size(&self) -> Result<(), SendError> {
        let size = self.size();
        if size > MAX_PUBLISH_BYTES {
            return Err(SendError::permanent(format!(
                "message to {} is {size} bytes, over SNS's {MAX_PUBLISH_BYTES}-byte limit; \
                 shorten the insight's text or route this incident to a webhook",
                self.topic_arn
            )));
        }
        Ok(())
    }

    /// Shrinks the message until it fits: first the JSON keeps only the
    /// headline facts (each at most 1,000 characters), then the text is
    /// cut with a pointer to the incident. Leaves it as is when it
    /// already fits.
    fn fit(&mut self, incident_id: &str) {
        if self.size() <= MAX_PUBLISH_BYTES {
            return;
        }
        if let Some(j) = &self.json
            && let Ok(mut v) = serde_json::from_str::<serde_json::Value>(j)
        {
            if let Some(insight) = v.get_mut("insight").and_then(|i| i.as_object_mut()) {
                insight.retain(|k, _| {
                    matches!(
                        k.as_str(),
                        "id" | "incident_id" | "severity" | "title" | "summary" | "cost"
                    )
                });
                for value in insight.values_mut() {
                    if let serde_json::Value::String(s) = value {
                        *s = crate::render::truncate(s, 1000);
                    }
                }
                insight.insert("truncated".into(), true.into());
            }
            self.json = Some(v.to_string());
        }
        // The text appears three times in the structure (default, email,
        // sms), JSON-escaped: cut a third of the excess from it, plus
        // room for the note, until it fits (escapes can need a second cut).
        let note = format!("\n… cut to fit SNS; see incident {incident_id}");
        for _ in 0..4 {
            let over = self.size().saturating_sub(MAX_PUBLISH_BYTES);
            if over == 0 {
                break;
            }
            let keep = self
                .message
                .len()
                .saturating_sub(over.div_ceil(3) + note.len() + 64);
            let mut cut = keep.min(self.message.len());
            while !self.message.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Some(at) = self.message.find(note.as_str()) {
                cut = cut.min(at);
            }
            self.message.truncate(cut);
            self.message.push_str(&note);
        }
    }
}

/// Publishes to SNS: implemented over `aws-sdk-sns` by
/// [`crate::aws_sns::SnsPublisher`], and by fakes in tests. Map throttling
/// and 5xx to [`SendError::Retryable`] and the rest to
/// [`SendError::Permanent`].
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, message: &SnsMessage) -> Result<(), SendError>;
}

pub struct SnsChannel {
    topic_arn: String,
    publisher: Arc<dyn Publisher>,
}

impl SnsChannel {
    pub fn new(topic_arn: String, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            topic_arn,
            publisher,
        }
    }
}

#[async_trait]
impl Channel for SnsChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sns
    }

    fn target(&self) -> String {
        self.topic_arn.clone()
    }

    fn render(&self, m: &Message<'_>) -> Payload {
        let a = &m.insight.anomaly;
        let attributes = BTreeMap::from([
            ("event".to_string(), m.event().to_string()),
            (
                "severity".to_string(),
                m.insight.severity.as_str().to_string(),
            ),
            ("environment".to_string(), a.environment.to_string()),
            ("account_id".to_string(), a.account_id.clone()),
            ("detector".to_string(), a.detector.clone()),
            ("region".to_string(), a.region.clone()),
            ("incident_id".to_string(), m.insight.incident_id.clone()),
        ]);
        let mut msg = SnsMessage {
            topic_arn: self.topic_arn.clone(),
            subject: text::subject(m),
            message: text::body(m),
            json: Some(json::render(m).to_string()),
            attributes,
        };
        msg.fit(&m.insight.incident_id);
        payload(m, serde_json::to_value(&msg).unwrap_or_default())
    }

    async fn send(&self, p: &Payload) -> Result<(), SendError> {
        let msg: SnsMessage = serde_json::from_value(p.body.clone())
            .map_err(|e| SendError::permanent(format!("not an SNS message: {e}")))?;
        msg.check_size()?;
        self.publisher.publish(&msg).await
    }
}
