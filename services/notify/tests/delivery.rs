//! Delivery behaviour against real HTTP listeners: retries, Retry-After,
//! dead letters, timeouts that do not block other channels, rate limits,
//! one message per incident, and dedup state that survives a restart.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use crate::testing::sample_insight;
use common::{Hook, Reply, channel, config, route};
use trailhound_core::Severity;
use trailhound_notify::{ChannelKind, DeliveryFilter, DeliveryStatus};

#[tokio::test]
async fn retries_a_500_then_succeeds() {
    let (hook, _dir, n) = common::one_channel(
        "hook",
        ChannelKind::Webhook,
        vec![Reply::Status(500), Reply::Status(502)],
    )
    .await;
    let d = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    assert_eq!(d[0].status, DeliveryStatus::Delivered, "{:?}", d[0]);
    assert_eq!(d[0].attempts, 3);
    let got = hook.received();
    assert_eq!(got.len(), 3);
    // The same delivery (and body) on every attempt, so receivers can dedup.
    assert!(
        got.iter()
            .all(|r| r.header("x-trailhound-delivery") == d[0].id)
    );
    assert_eq!(got[0].body, got[2].body);
    let s = n.stats();
    assert_eq!((s.delivered, s.retries, s.failed), (1, 2, 0));
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after() {
    let (hook, _dir, n) = common::one_channel(
        "slack",
        ChannelKind::Slack,
        vec![Reply::RetryAfter(429, "1")],
    )
    .await;
    let d = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    assert_eq!(d[0].status, DeliveryStatus::Delivered, "{:?}", d[0]);
    assert_eq!(d[0].attempts, 2);
    let got = hook.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    // The jittered backoff alone would be ≤ 50 ms; Retry-After says 1 s.
    assert!(
        gap >= Duration::from_secs(1),
        "second attempt after {gap:?}"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_fails_at_once() {
    let (_hook, _dir, n) = common::one_channel(
        "slack",
        ChannelKind::Slack,
        vec![Reply::RetryAfter(503, "3600")],
    )
    .await;
    let d = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    assert_eq!(d[0].status, DeliveryStatus::Failed);
    assert_eq!(d[0].attempts, 1);
    assert!(d[0].detail.contains("max_retry_after"), "{}", d[0].detail);
}

#[tokio::test]
async fn exhausted_retries_fail_and_write_a_dead_letter() {
    let (hook, dir, n) =
        common::one_channel("hook", ChannelKind::Webhook, vec![Reply::Status(503); 5]).await;
    let d = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    assert_eq!(d[0].status, DeliveryStatus::Failed);
    assert_eq!(d[0].attempts, 3);
    assert!(
        d[0].detail.contains("503") && d[0].detail.contains("gave up after 3 attempts"),
        "{}",
        d[0].detail
    );
    assert_eq!(hook.received().len(), 3);

    let text = std::fs::read_to_string(dir.path().join("notify-dead-letters.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    let dl = &lines[0];
    assert_eq!(dl["channel"], "hook");
    assert_eq!(dl["channel_kind"], "webhook");
    assert_eq!(dl["insight_id"], "w1");
    assert_eq!(dl["incident_id"], "inc");
    assert_eq!(dl["attempts"], 3);
    assert_eq!(dl["delivery_id"], d[0].id.as_str());
    assert!(dl["reason"].as_str().unwrap().contains("503"));
    assert_eq!(dl["payload"]["insight"]["id"], "w1");
    let s = n.stats();
    assert_eq!((s.failed, s.dead_letters, s.retries), (1, 1, 2));

    // A failed first message leaves the incident un-notified: the next
    // window goes out in full once the endpoint is back.
    let d2 = n.notify(&sample_insight("w2", "inc", Severity::High)).await;
    assert_eq!(d2[0].status, DeliveryStatus::Delivered, "{:?}", d2[0]);
    assert!(!d2[0].follow_up);
}

#[tokio::test]
async fn a_hanging_webhook_does_not_hold_up_other_channels() {
    let hanging = Hook::start(vec![Reply::Hang, Reply::Hang]).await;
    let fine = Hook::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut slow = channel("slow", ChannelKind::Webhook, &hanging.url());
    slow.timeout = Some(Duration::from_secs(2));
    slow.max_attempts = Some(2);
    let mut c = config(
        dir.path(),
        vec![slow, channel("fast", ChannelKind::Slack, &fine.url())],
    );
    // Insight "a" goes to both channels; insight "b" only to the fast one.
    let mut only_fast = route("only-fast", &["fast"]);
    only_fast.detectors = vec!["lambda-invoke".into()];
    let mut both = route("both", &["slow", "fast"]);
    both.detectors = vec!["ec2-run-instances".into()];
    c.routes = vec![both, only_fast];
    let n = trailhound_notify::build(&c, dir.path()).unwrap();

    let a = Arc::new(sample_insight("a", "inc-a", Severity::High));
    let mut b = sample_insight("b", "inc-b", Severity::High);
    b.anomaly.detector = "lambda-invoke".into();
    let b = Arc::new(b);

    // The pipeline path: follow a stream of insights.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let follower = tokio::spawn(trailhound_notify::follow(
        n.clone(),
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
        shutdown.clone(),
    ));
    tx.send(a).await.unwrap();
    tx.send(b).await.unwrap();

    // Both insights reach the fast channel while the slow one still hangs.
    let got = fine.wait_for(2).await;
    assert_eq!(got.len(), 2);
    let slow_state = n.deliveries(&DeliveryFilter {
        channel: Some("slow".into()),
        ..Default::default()
    });
    assert_eq!(slow_state.len(), 1);
    assert_eq!(
        slow_state[0].status,
        DeliveryStatus::Pending,
        "{slow_state:?}"
    );

    // The slow one times out on each attempt, then fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let d = n.deliveries(&DeliveryFilter {
            channel: Some("slow".into()),
            ..Default::default()
        });
        if d[0].status != DeliveryStatus::Pending || std::time::Instant::now() > deadline {
            break d[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.attempts, 2);
    assert!(
        failed.detail.contains("timed out after 2s"),
        "{}",
        failed.detail
    );
    shutdown.cancel();
    follower.await.unwrap();
}

#[tokio::test]
async fn one_message_per_incident_with_escalation_follow_ups() {
    let (hook, _dir, n) = common::one_channel("slack", ChannelKind::Slack, vec![]).await;
    let w1 = n
        .notify(&sample_insight("w1", "inc", Severity::Medium))
        .await;
    assert_eq!(w1[0].status, DeliveryStatus::Delivered);

    // A later window of the same incident, same severity: skipped.
    let mut second = sample_insight("w2", "inc", Severity::Medium);
    second.anomaly.window_start += chrono::Duration::minutes(10);
    second.anomaly.window_end += chrono::Duration::minutes(10);
    let w2 = n.notify(&second).await;
    assert_eq!(w2[0].status, DeliveryStatus::Skipped);
    assert!(
        w2[0].detail.contains("already notified"),
        "{}",
        w2[0].detail
    );

    // The same insight again: never sent twice.
    let again = n
        .notify(&sample_insight("w1", "inc", Severity::Medium))
        .await;
    assert_eq!(again[0].status, DeliveryStatus::Skipped);
    assert!(
        again[0].detail.contains("already sent"),
        "{}",
        again[0].detail
    );
    assert_eq!(hook.received().len(), 1);

    // Severity rises: a short follow-up with the running totals.
    let mut third = sample_insight("w3", "inc", Severity::Critical);
    third.anomaly.window_start += chrono::Duration::minutes(20);
    third.anomaly.window_end += chrono::Duration::minutes(20);
    let w3 = n.notify(&third).await;
    assert_eq!(w3[0].status, DeliveryStatus::Delivered, "{:?}", w3[0]);
    assert!(w3[0].follow_up);
    assert!(
        w3[0].detail.contains("MEDIUM → CRITICAL"),
        "{}",
        w3[0].detail
    );
    let got = hook.received();
    assert_eq!(got.len(), 2);
    let v = got[1].json();
    let header = v["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(header.contains("Escalated MEDIUM → CRITICAL"), "{header}");
    let text = v.to_string();
    assert!(
        text.contains("*Windows so far*\\n3"),
        "follow-up lacks the totals: {text}"
    );
    assert!(text.contains("2026-01-12 10:00 → 10:30 UTC"), "{text}");

    // Another incident is its own message.
    let other = n
        .notify(&sample_insight("x1", "other", Severity::Low))
        .await;
    assert_eq!(other[0].status, DeliveryStatus::Delivered);
    assert!(!other[0].follow_up);

    let skipped = n.deliveries(&DeliveryFilter {
        incident_id: Some("inc".into()),
        status: Some(DeliveryStatus::Skipped),
        ..Default::default()
    });
    assert_eq!(skipped.len(), 2);
    assert_eq!(n.stats().skipped, 2);
}

#[tokio::test]
async fn a_follow_up_goes_out_after_the_interval() {
    let hook = Hook::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(
        dir.path(),
        vec![channel("hook", ChannelKind::Webhook, &hook.url())],
    );
    c.follow_up_interval = Duration::from_millis(300);
    let n = trailhound_notify::build(&c, dir.path()).unwrap();
    n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    let early = n.notify(&sample_insight("w2", "inc", Severity::High)).await;
    assert_eq!(early[0].status, DeliveryStatus::Skipped);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let late = n.notify(&sample_insight("w3", "inc", Severity::High)).await;
    assert_eq!(late[0].status, DeliveryStatus::Delivered);
    assert!(late[0].follow_up);
    assert!(
        late[0].detail.contains("still ongoing"),
        "{}",
        late[0].detail
    );
    let got = hook.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].header("x-trailhound-event"), "insight.follow_up");
    let v = got[1].json();
    assert_eq!(v["follow_up"]["reason"], "still_ongoing");
    assert_eq!(v["follow_up"]["totals"]["windows"], 3);
    assert_eq!(v["follow_up"]["previous_messages"], 1);
}

#[tokio::test]
async fn over_the_rate_limit_is_skipped_with_the_reason() {
    let hook = Hook::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ch = channel("slack", ChannelKind::Slack, &hook.url());
    ch.rate_limit_per_minute = Some(2);
    let n = trailhound_notify::build(&config(dir.path(), vec![ch]), dir.path()).unwrap();
    let mut statuses = Vec::new();
    for k in 0..3 {
        let d = n
            .notify(&sample_insight(
                &format!("w{k}"),
                &format!("inc{k}"),
                Severity::High,
            ))
            .await;
        statuses.push(d[0].clone());
    }
    assert_eq!(statuses[0].status, DeliveryStatus::Delivered);
    assert_eq!(statuses[1].status, DeliveryStatus::Delivered);
    assert_eq!(statuses[2].status, DeliveryStatus::Skipped);
    assert!(
        statuses[2]
            .detail
            .contains("rate limited: channel slack allows 2 messages per minute"),
        "{}",
        statuses[2].detail
    );
    assert_eq!(hook.received().len(), 2);
    assert_eq!(n.channels()[0].rate_limit_per_minute, 2);
}

#[tokio::test]
async fn a_restart_keeps_dedup_state() {
    let hook = Hook::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        vec![channel("hook", ChannelKind::Webhook, &hook.url())],
    );
    let first_id = {
        let n = trailhound_notify::build(&c, dir.path()).unwrap();
        let d = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
        assert_eq!(d[0].status, DeliveryStatus::Delivered);
        n.advance_watermark(chrono::Utc::now());
        d[0].id.clone()
        // Dropped here: the store drains and closes.
    };
    let n = trailhound_notify::build(&c, dir.path()).unwrap();
    // The delivery history survived.
    let history = n.deliveries(&DeliveryFilter::default());
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].id, first_id);
    assert_eq!(history[0].status, DeliveryStatus::Delivered);
    assert!(n.watermark().is_some());

    // The same insight, and a later window of the same incident: no re-alert.
    let again = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    assert_eq!(again[0].status, DeliveryStatus::Skipped);
    let later = n.notify(&sample_insight("w2", "inc", Severity::High)).await;
    assert_eq!(later[0].status, DeliveryStatus::Skipped);
    assert!(later[0].detail.contains("already notified"));
    // A rise in severity is still news.
    let worse = n
        .notify(&sample_insight("w3", "inc", Severity::Critical))
        .await;
    assert_eq!(worse[0].status, DeliveryStatus::Delivered);
    assert!(worse[0].follow_up);
    assert_eq!(hook.received().len(), 2);
}
