//! The generic webhook: the insight as JSON (see `crate::render::json`),
//! POSTed with headers that let the receiver authenticate it, drop
//! duplicates and refuse replays.
//!
//! # Headers
//!
//! | header | value |
//! |---|---|
//! | `Content-Type` | `application/json` |
//! | `X-Trailhound-Event` | `insight.opened` or `insight.follow_up` |
//! | `X-Trailhound-Delivery` | the delivery id; the same on every retry |
//! | `X-Trailhound-Timestamp` | Unix seconds when this attempt was signed |
//! | `X-Trailhound-Signature` | `sha256=<hex>` (only when a secret is configured) |
//!
//! # Signature
//!
//! `hex(HMAC-SHA256(secret, timestamp + "." + raw_body))`, lower-case hex,
//! where `timestamp` is the `X-Trailhound-Timestamp` value as sent and
//! `raw_body` the request body bytes exactly as received (do not re-encode
//! the JSON). The timestamp is inside the signed material so a captured
//! request cannot be replayed later with a fresh timestamp: a receiver
//! recomputes the HMAC, compares in constant time ([`verify`]), and
//! rejects timestamps more than five minutes from its clock. Each retry is
//! signed again with a new timestamp; the body and delivery id stay the same.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use super::http::Endpoint;
use super::{Channel, Payload, SendError, payload};
use crate::config::ChannelKind;
use crate::render::{Message, json};
use crate::secret::Secret;

pub const EVENT_HEADER: &str = "x-trailhound-event";
pub const DELIVERY_HEADER: &str = "x-trailhound-delivery";
pub const TIMESTAMP_HEADER: &str = "x-trailhound-timestamp";
pub const SIGNATURE_HEADER: &str = "x-trailhound-signature";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `X-Trailhound-Signature` value for a body signed at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let bytes = mac(secret, timestamp, body).finalize().into_bytes();
    let mut hex = String::with_capacity(7 + bytes.len() * 2);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Checks a signature header in constant time (for receivers and tests).
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() % 2 != 0 {
        return false;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    match bytes {
        Some(b) => mac(secret, timestamp, body).verify_slice(&b).is_ok(),
        None => false,
    }
}

pub struct WebhookChannel {
    endpoint: Endpoint,
    secret: Option<Secret>,
}

impl WebhookChannel {
    pub(crate) fn new(endpoint: Endpoint, secret: Option<Secret>) -> Self {
        Self { endpoint, secret }
    }
}

fn header(v: &str) -> Result<HeaderValue, SendError> {
    HeaderValue::from_str(v).map_err(|_| SendError::permanent("a header value is not valid"))
}

#[async_trait]
impl Channel for WebhookChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    fn target(&self) -> String {
        let t = self.endpoint.target();
        if self.secret.is_some() {
            format!("{t} (signed)")
        } else {
            t
        }
    }

    fn render(&self, m: &Message<'_>) -> Payload {
        payload(m, json::render(m))
    }

    async fn send(&self, p: &Payload) -> Result<(), SendError> {
        let body = serde_json::to_vec(&p.body)
            .map_err(|e| SendError::permanent(format!("failed to encode the message: {e}")))?;
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static(EVENT_HEADER), header(p.event)?);
        h.insert(
            HeaderName::from_static(DELIVERY_HEADER),
            header(&p.delivery_id)?,
        );
        h.insert(
            HeaderName::from_static(TIMESTAMP_HEADER),
            header(&timestamp)?,
        );
        if let Some(s) = &self.secret {
            let sig = sign(s.expose().as_bytes(), &timestamp, &body);
            h.insert(HeaderName::from_static(SIGNATURE_HEADER), header(&sig)?);
        }
        self.endpoint.post(body, h).await
    }

    fn scrub(&self, text: &str) -> String {
        let t = self.endpoint.scrub(text);
        match &self.secret {
            Some(s) => s.scrub(&t),
            None => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        let body = br#"{"event":"insight.opened"}"#;
        let sig = sign(b"s3cret", "1700000000", body);
        let mut m = HmacSha256::new_from_slice(b"s3cret").unwrap();
        m.update(b"1700000000.{\"event\":\"insight.opened\"}");
        let want: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("sha256={want}"));
        assert!(verify(b"s3cret", "1700000000", body, &sig));
        assert!(!verify(b"s3cret", "1700000001", body, &sig));
        assert!(!verify(b"other", "1700000000", body, &sig));
        assert!(!verify(b"s3cret", "1700000000", b"{}", &sig));
        assert!(!verify(b"s3cret", "1700000000", body, "sha256=zz"));
    }
}
