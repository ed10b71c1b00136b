//! health's recovery actions on notify, through the ControlService every
//! server registers: `retry_dead_letters` re-sends the dead-letter file,
//! `reconnect` asks the insights follower to reconnect.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;

use crate::testing::sample_insight;
use common::{Hook, Reply, channel, config};
use tonic::Code;
use trailhound_core::Severity;
use trailhound_notify::{ChannelKind, DeliveryFilter, DeliveryStatus, Notifier, RetrySummary};
use trailhound_proto::common::v1 as cpb;
use trailhound_proto::common::v1::control_service_client::ControlServiceClient;

async fn recover(
    client: &mut ControlServiceClient<tonic::transport::Channel>,
    action: &str,
) -> Result<String, tonic::Status> {
    client
        .recover(cpb::RecoverRequest {
            action: action.into(),
            reason: "test".into(),
        })
        .await
        .map(|r| r.into_inner().detail)
}

fn dead_letter_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("notify-dead-letters.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn w1_deliveries(n: &Notifier) -> Vec<trailhound_notify::Delivery> {
    n.deliveries(&DeliveryFilter {
        insight_id: Some("w1".into()),
        ..Default::default()
    })
}

#[tokio::test]
async fn retry_dead_letters_resends_once_the_endpoint_is_back() {
    // 500 on all three fast attempts: the delivery dead-letters; then 200.
    let hook = Hook::start(vec![Reply::Status(500); 3]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        vec![channel("hook", ChannelKind::Webhook, &hook.url())],
    );
    let n = trailhound_notify::build(&cfg, dir.path()).unwrap();
    let d = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    assert_eq!(d[0].status, DeliveryStatus::Failed);
    assert_eq!(dead_letter_lines(dir.path()).len(), 1);
    assert_eq!(hook.received().len(), 3);

    let (url, stop, task) = common::serve(n.clone()).await;
    let mut client = ControlServiceClient::connect(url).await.unwrap();
    let detail = recover(&mut client, "retry_dead_letters").await.unwrap();
    assert_eq!(
        detail,
        "retried 1 dead letters: 1 delivered, 0 still failing"
    );

    let got = hook.received();
    assert_eq!(got.len(), 4);
    let last = &got[3];
    assert_eq!(last.json()["insight"]["id"], "w1");
    assert_eq!(last.header("x-trailhound-event"), "insight.opened");
    assert_eq!(last.header("x-trailhound-delivery"), d[0].id);
    assert!(dead_letter_lines(dir.path()).is_empty());
    let log = w1_deliveries(&n);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].id, d[0].id);
    assert_eq!(log[0].status, DeliveryStatus::Delivered);
    assert_eq!(log[0].attempts, 4);
    assert_eq!(n.stats().delivered, 1);

    // Nothing left: a second call sends nothing.
    let detail = recover(&mut client, "retry_dead_letters").await.unwrap();
    assert_eq!(
        detail,
        "retried 0 dead letters: 0 delivered, 0 still failing"
    );
    assert_eq!(hook.received().len(), 4);

    // Not following insights over gRPC here: reconnect says so.
    let detail = recover(&mut client, "reconnect").await.unwrap();
    assert!(detail.contains("nothing to reconnect"), "{detail}");
    let err = recover(&mut client, "reboot").await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // The store has it delivered across a restart.
    stop.cancel();
    task.await.unwrap();
    drop(n);
    let n = trailhound_notify::build(&cfg, dir.path()).unwrap();
    let log = w1_deliveries(&n);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status, DeliveryStatus::Delivered);
}

#[tokio::test]
async fn dead_letters_still_failing_stay_and_new_ones_are_kept() {
    let (hook, dir, n) =
        common::one_channel("hook", ChannelKind::Webhook, vec![Reply::Status(503); 6]).await;
    n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    let before = std::fs::read_to_string(dir.path().join("notify-dead-letters.jsonl")).unwrap();

    // Still 503 for all three retry attempts: it stays, unchanged.
    let s = n.retry_dead_letters().await.unwrap();
    assert_eq!(
        s,
        RetrySummary {
            retried: 1,
            delivered: 0,
            still_failing: 1
        }
    );
    let after = std::fs::read_to_string(dir.path().join("notify-dead-letters.jsonl")).unwrap();
    assert_eq!(before, after);

    // Now 200: delivered and gone; a later failure still reaches the file.
    let s = n.retry_dead_letters().await.unwrap();
    assert_eq!((s.retried, s.delivered, s.still_failing), (1, 1, 0));
    assert!(dead_letter_lines(dir.path()).is_empty());
    hook.script(vec![Reply::Status(500); 3]);
    n.notify(&sample_insight("w2", "inc2", Severity::High))
        .await;
    let lines = dead_letter_lines(dir.path());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["insight_id"], "w2");
}
