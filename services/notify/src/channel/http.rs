//! One HTTP POST and what its outcome means for retrying: 2xx is success;
//! 429 and 5xx are retryable with the server's `Retry-After`; connection
//! errors are retryable; other statuses are permanent. Nothing returned
//! here contains the URL: reqwest's errors are stripped of it and every
//! text is scrubbed of the secret URL.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::SendError;
use crate::secret::{Secret, redact_url};

/// A webhook URL and the client that posts to it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub client: reqwest::Client,
    pub url: reqwest::Url,
    /// The URL as a secret, for scrubbing.
    pub secret: Secret,
}

impl Endpoint {
    pub fn target(&self) -> String {
        redact_url(&self.url)
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut t = self.secret.scrub(text);
        // reqwest may normalize the URL (a trailing slash); scrub that too.
        let normalized = self.url.as_str();
        if !normalized.is_empty() {
            t = t.replace(normalized, "***");
        }
        t
    }

    /// POSTs `body` as JSON with extra `headers`.
    pub async fn post(&self, body: Vec<u8>, headers: HeaderMap) -> Result<(), SendError> {
        let result = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .headers(headers)
            .body(body)
            .send()
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => return Err(self.classify_error(e)),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = parse_retry_after(resp.headers(), chrono::Utc::now());
        let body = resp.text().await.unwrap_or_default();
        let snippet: String = body.trim().chars().take(200).collect();
        let reason = self.scrub(&if snippet.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {snippet}")
        });
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(SendError::Retryable {
                reason,
                retry_after,
            })
        } else {
            Err(SendError::Permanent { reason })
        }
    }

    fn classify_error(&self, e: reqwest::Error) -> SendError {
        let kind = if e.is_timeout() {
            "request timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_builder() {
            return SendError::permanent(self.scrub(&chain(&e.without_url())));
        } else {
            "request failed"
        };
        SendError::retryable(self.scrub(&format!("{kind}: {}", chain(&e.without_url()))))
    }
}

/// An error and its sources, "a: b: c".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// `Retry-After` as seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`); a date in the past means now.
pub(crate) fn parse_retry_after(
    headers: &HeaderMap,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(1e9)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(60)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h, now), None);
    }
}
