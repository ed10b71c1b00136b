//! The events and accounts detect's tests stream, written once: a sandbox
//! account and a Lambda Invoke, which tests then vary field by field.

use std::sync::Arc;

use trailhound_core::account::{AccountMetadata, Environment};
use trailhound_core::{Event, UserIdentity};

pub const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z, a Monday
pub const MIN: i64 = 60_000;

/// A known sandbox account named `acct-<id>`.
pub fn account(id: &str) -> Arc<AccountMetadata> {
    let mut a = AccountMetadata::external(id);
    a.known = true;
    a.name = format!("acct-{id}");
    a.environment = Environment::Sandbox;
    Arc::new(a)
}

/// A Lambda Invoke by `principal` in account `acct` and `region` at `t`.
pub fn invoke_event(id: u64, t: i64, acct: &str, region: &str, principal: &str) -> Event {
    Event {
        event_id: format!("e-{id}"),
        event_time_ms: t,
        event_source: "lambda.amazonaws.com".into(),
        event_name: "Invoke".into(),
        aws_region: region.into(),
        recipient_account_id: acct.into(),
        user_identity: UserIdentity {
            kind: "AssumedRole".into(),
            arn: principal.into(),
            ..Default::default()
        },
        source_ip_address: "lambda.amazonaws.com".into(),
        user_agent: "aws-sdk-go".into(),
        error_code: String::new(),
        error_message: String::new(),
        read_only: Some(false),
        management_event: Some(false),
        event_category: "Data".into(),
        event_type: "AwsApiCall".into(),
        event_version: "1.09".into(),
        request_parameters: r#"{"functionName":"f"}"#.into(),
        response_elements: String::new(),
        raw: String::new(),
    }
}
