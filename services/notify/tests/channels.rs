//! What each channel kind sends, checked at a real HTTP listener, and the
//! start-up errors of a bad channel configuration.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::{Arc, Mutex};

use crate::testing::sample_insight;
use common::{Hook, channel, config, route};
use trailhound_core::Severity;
use trailhound_notify::{
    Backends, ChannelConfig, ChannelKind, DeliveryStatus, Publisher, SendError, SnsMessage,
};

#[tokio::test]
async fn slack_gets_block_kit() {
    let (hook, _dir, n) = common::one_channel("slack", ChannelKind::Slack, vec![]).await;
    let d = n
        .notify(&sample_insight("w1", "inc", Severity::Critical))
        .await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].status, DeliveryStatus::Delivered, "{:?}", d[0]);
    assert_eq!(d[0].channel_kind, ChannelKind::Slack);

    let got = hook.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("content-type"), "application/json");
    assert_eq!(got[0].path, format!("/services/{}", common::URL_SECRET));
    let v = got[0].json();
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("CRITICAL · ec2-run-instances spike")
    );
    let blocks = v["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50);
    let types: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "header");
    assert_eq!(types[1], "section");
    assert!(types.contains(&"divider"));
    assert_eq!(*types.last().unwrap(), "context");

    let header = &blocks[0]["text"];
    assert_eq!(header["type"], "plain_text");
    assert!(header["text"].as_str().unwrap().chars().count() <= 150);
    assert!(header["text"].as_str().unwrap().contains("CRITICAL"));

    let fields = blocks[2]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 10);
    for f in fields {
        assert_eq!(f["type"], "mrkdwn");
    }
    let labels: Vec<String> = fields
        .iter()
        .map(|f| {
            f["text"]
                .as_str()
                .unwrap()
                .split('\n')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        labels,
        [
            "*Account*",
            "*OU*",
            "*Environment*",
            "*Region*",
            "*Detector*",
            "*Window (UTC)*",
            "*Actual vs expected*",
            "*Grade / confidence*",
            "*Severity*",
            "*Cost impact*"
        ]
    );
    for b in blocks.iter().filter(|b| b["type"] == "section") {
        if let Some(t) = b.get("text") {
            assert_eq!(t["type"], "mrkdwn");
            assert!(t["text"].as_str().unwrap().chars().count() <= 3000);
        }
    }
    let ctx = &blocks.last().unwrap()["elements"][0];
    assert_eq!(ctx["type"], "mrkdwn");
    assert!(ctx["text"].as_str().unwrap().contains("incident inc"));

    let text = v.to_string();
    for want in [
        "payments-prod (111122223333)",
        "Root / Workloads / Production",
        "us-east-1",
        "2026-01-12 10:00 → 10:10 UTC",
        "40 instances vs 1.5 expected",
        "grade 0.97 · confidence 0.82",
        "*Why CRITICAL*",
        "$1,310.72/h · $31,457.28/day · $943,718.40/30 days",
        "*Root cause*",
        "*Correlation*",
        "data-staging (444455556666)",
        "*Recommended: Check the launches by a new principal*",
        "*Investigate*",
        "trailhound detect --org org.json",
    ] {
        assert!(text.contains(want), "Slack message lacks {want}");
    }
}

#[tokio::test]
async fn teams_gets_an_adaptive_card_in_a_message_envelope() {
    let (hook, _dir, n) = common::one_channel("teams", ChannelKind::Teams, vec![]).await;
    let d = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    assert_eq!(d[0].status, DeliveryStatus::Delivered, "{:?}", d[0]);
    let v = hook.received()[0].json();
    assert_eq!(v["type"], "message");
    let attachments = v["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        attachments[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachments[0]["content"];
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    let body = card["body"].as_array().unwrap();
    assert_eq!(body[0]["type"], "TextBlock");
    assert_eq!(body[0]["weight"], "Bolder");
    assert!(body[0]["text"].as_str().unwrap().starts_with("HIGH · "));
    assert_eq!(body[1]["type"], "TextBlock");
    assert_eq!(body[2]["type"], "FactSet");
    let facts = body[2]["facts"].as_array().unwrap();
    assert_eq!(facts[0]["title"], "Account");
    assert_eq!(facts[0]["value"], "payments-prod (111122223333)");
    for b in body {
        let t = b["type"].as_str().unwrap();
        assert!(t == "TextBlock" || t == "FactSet", "{t}");
    }
    assert!(
        body.iter().any(
            |b| b["fontType"] == "Monospace" && b["text"].as_str().unwrap().contains("grpcurl")
        )
    );
    let text = v.to_string();
    for want in [
        "Root / Workloads / Production",
        "Why HIGH",
        "Root cause",
        "Correlation",
        "Recommended: Check the launches",
        "$943,718.40/30 days",
    ] {
        assert!(text.contains(want), "Teams card lacks {want}");
    }
}

#[tokio::test]
async fn webhook_body_is_signed_with_the_secret() {
    let hook = Hook::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hmac");
    std::fs::write(&secret_file, "wh-secret-123\n").unwrap();
    let mut ch = channel("siem", ChannelKind::Webhook, &hook.url());
    ch.secret_file = Some(secret_file);
    let n = trailhound_notify::build(&config(dir.path(), vec![ch]), dir.path()).unwrap();
    let d = n
        .notify(&sample_insight("w1", "inc", Severity::Medium))
        .await;
    assert_eq!(d[0].status, DeliveryStatus::Delivered, "{:?}", d[0]);

    let r = &hook.received()[0];
    let ts = r.header("x-trailhound-timestamp");
    let sig = r.header("x-trailhound-signature");
    assert!(ts.parse::<i64>().unwrap() > 1_700_000_000);
    assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
    // Verify independently of notify's code: HMAC-SHA256(secret, ts "." body).
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"wh-secret-123").unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sig, format!("sha256={want}"));
    assert!(trailhound_notify::channel::verify(
        b"wh-secret-123",
        &ts,
        &r.body,
        &sig
    ));
    assert!(!trailhound_notify::channel::verify(
        b"wrong", &ts, &r.body, &sig
    ));

    assert_eq!(r.header("x-trailhound-event"), "insight.opened");
    assert_eq!(r.header("x-trailhound-delivery"), d[0].id);
    let v = r.json();
    assert_eq!(v["event"], "insight.opened");
    assert_eq!(v["delivery_id"], d[0].id.as_str());
    assert_eq!(v["insight"]["id"], "w1");
    assert_eq!(v["insight"]["incident_id"], "inc");
    assert_eq!(v["insight"]["severity"], "medium");
    assert_eq!(v["insight"]["anomaly"]["account_id"], "111122223333");
    assert!(v["follow_up"].is_null());
}

#[derive(Default)]
struct FakeSns {
    published: Mutex<Vec<SnsMessage>>,
}

#[async_trait::async_trait]
impl Publisher for FakeSns {
    async fn publish(&self, m: &SnsMessage) -> Result<(), SendError> {
        let mut p = self.published.lock().unwrap();
        p.push(m.clone());
        if p.len() == 1 {
            // Throttled once: retried like an HTTP 429.
            return Err(SendError::retryable("Throttling: rate exceeded"));
        }
        Ok(())
    }
}

fn sns_channel() -> ChannelConfig {
    ChannelConfig {
        name: "oncall".into(),
        kind: Some(ChannelKind::Sns),
        topic_arn: Some("arn:aws:sns:us-east-1:111122223333:trailhound".into()),
        ..ChannelConfig::default()
    }
}

#[tokio::test]
async fn sns_publishes_through_the_plugged_in_client() {
    let dir = tempfile::tempdir().unwrap();
    let sns = Arc::new(FakeSns::default());
    let n = trailhound_notify::build_with(
        &config(dir.path(), vec![sns_channel()]),
        dir.path(),
        Backends {
            sns: Some(sns.clone()),
            ..Backends::default()
        },
    )
    .unwrap();
    let d = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    assert_eq!(d[0].status, DeliveryStatus::Delivered, "{:?}", d[0]);
    assert_eq!(d[0].attempts, 2);
    let p = sns.published.lock().unwrap();
    let m = &p[1];
    assert_eq!(m.topic_arn, "arn:aws:sns:us-east-1:111122223333:trailhound");
    assert!(
        m.subject.len() <= 100 && m.subject.is_ascii(),
        "{}",
        m.subject
    );
    assert!(m.message.contains("Root / Workloads / Production"));
    assert!(m.message.contains("Investigate:"));
    assert_eq!(m.attributes["severity"], "high");
    assert_eq!(m.attributes["environment"], "production");
    assert_eq!(
        n.channels()[0].target,
        "arn:aws:sns:us-east-1:111122223333:trailhound"
    );
}

#[tokio::test]
async fn sns_without_the_aws_backend_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = trailhound_notify::build(&config(dir.path(), vec![sns_channel()]), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("oncall") && err.contains("sns channels need AWS"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rule_naming_a_missing_channel_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), vec![ChannelConfig::log("log")]);
    c.routes.push(route("prod-critical", &["log", "pagerduty"]));
    let err = trailhound_notify::build(&c, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("route \"prod-critical\"") && err.contains("channel \"pagerduty\""),
        "{err}"
    );
}

#[tokio::test]
async fn log_channel_appends_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut ch = ChannelConfig::log("log");
    ch.jsonl_path = Some(dir.path().join("alerts/alerts.jsonl"));
    let n = trailhound_notify::build(&config(dir.path(), vec![ch]), dir.path()).unwrap();
    n.notify(&sample_insight("w1", "inc", Severity::Low)).await;
    n.notify(&sample_insight("w2", "inc2", Severity::High))
        .await;
    let text = std::fs::read_to_string(dir.path().join("alerts/alerts.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event"], "insight.opened");
    assert_eq!(lines[1]["insight"]["id"], "w2");
}
