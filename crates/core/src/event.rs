//! The normalized CloudTrail event.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::account::AccountMetadata;

/// Who made a call. Empty strings where CloudTrail said nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserIdentity {
    pub kind: String,
    pub arn: String,
    pub account_id: String,
    pub invoked_by: String,
    pub principal_id: String,
    pub user_name: String,
    pub access_key_id: String,
    pub session_issuer_arn: String,
}

impl UserIdentity {
    /// The most specific human-readable name of the principal: the ARN, else
    /// the invoking service, else the principal id, else the identity type.
    pub fn principal(&self) -> &str {
        [
            self.arn.as_str(),
            self.invoked_by.as_str(),
            self.principal_id.as_str(),
            self.kind.as_str(),
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("unknown")
    }
}

/// One validated CloudTrail record. Required fields are plain values; the
/// JSON sub-documents stay as text and are parsed only by the detectors that
/// need them, which keeps the replay path fast.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub event_id: String,
    /// Milliseconds since the Unix epoch.
    pub event_time_ms: i64,
    pub event_source: String,
    pub event_name: String,
    pub aws_region: String,
    pub recipient_account_id: String,
    pub user_identity: UserIdentity,
    pub source_ip_address: String,
    pub user_agent: String,
    pub error_code: String,
    pub error_message: String,
    pub read_only: Option<bool>,
    pub management_event: Option<bool>,
    pub event_category: String,
    pub event_type: String,
    pub event_version: String,
    /// requestParameters as JSON text; empty when absent or null.
    pub request_parameters: String,
    /// responseElements as JSON text; empty when absent or null.
    pub response_elements: String,
    /// The record exactly as received.
    #[serde(skip)]
    pub raw: String,
}

impl Event {
    /// The event time as a chrono timestamp.
    pub fn event_time(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.event_time_ms)
            .single()
            .unwrap_or_default()
    }

    /// True when the call failed.
    pub fn is_error(&self) -> bool {
        !self.error_code.is_empty()
    }
}

/// An event joined with its account's metadata. Metadata is shared: every
/// event of an account points at the same `Arc`.
#[derive(Clone, Debug, PartialEq)]
pub struct EnrichedEvent {
    pub event: Event,
    pub account: Arc<AccountMetadata>,
}

/// Events for tests (this crate's, and other crates' with the `testsuite`
/// feature), so every test starts from the same call and varies only the
/// fields it is about.
#[cfg(any(test, feature = "testsuite"))]
pub mod testing {
    use super::Event;

    /// An EC2 RunInstances management call in account 111122223333,
    /// us-east-1, at time 0, by an unnamed principal from 198.51.100.7,
    /// with no parameters: the call tests vary field by field.
    pub fn run_instances() -> Event {
        Event {
            event_id: "id".into(),
            event_time_ms: 0,
            event_source: "ec2.amazonaws.com".into(),
            event_name: "RunInstances".into(),
            aws_region: "us-east-1".into(),
            recipient_account_id: "111122223333".into(),
            user_identity: Default::default(),
            source_ip_address: "198.51.100.7".into(),
            user_agent: "Boto3/1.34".into(),
            error_code: String::new(),
            error_message: String::new(),
            read_only: Some(false),
            management_event: Some(true),
            event_category: "Management".into(),
            event_type: "AwsApiCall".into(),
            event_version: "1.09".into(),
            request_parameters: String::new(),
            response_elements: String::new(),
            raw: String::new(),
        }
    }
}
