//! The SNS channel over the real aws-sdk-sns client against a local AWS
//! emulator (moto): subscribers get the text or the JSON rendering by
//! protocol, message attributes are set (filter policies route on them),
//! oversized messages are cut to fit, throttling is retried and a missing
//! topic is explained.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report
use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::testing::sample_insight;
use aws_sdk_sns::Client as Sns;
use aws_sdk_sqs::Client as Sqs;
use axum::extract::State;
use axum::routing::post;
use common::config;
use serde_json::Value;
use trailhound_aws::{Aws, AwsConfig};
use trailhound_core::Severity;
use trailhound_notify::{ChannelConfig, ChannelKind, DeliveryStatus};
use trailhound_testkit::{Emulator, FaultProxy, FaultRule};

type Inbox = Arc<Mutex<Vec<Value>>>;

/// An HTTP subscriber. moto posts the notification envelope as JSON with
/// `Content-Type: text/plain`, like SNS itself, so the body is parsed by
/// hand.
async fn listener() -> (String, Inbox) {
    async fn receive(State(inbox): State<Inbox>, body: String) -> &'static str {
        if let Ok(v) = serde_json::from_str(&body) {
            inbox.lock().unwrap().push(v);
        }
        "ok"
    }
    let inbox: Inbox = Arc::default();
    let app = axum::Router::new()
        .route("/sns", post(receive))
        .with_state(inbox.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sns", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, inbox)
}

async fn clients(config: &AwsConfig) -> (Sns, Sqs) {
    let aws = Aws::load(config).await.unwrap();
    (
        Sns::new(&aws.sdk_config("sns")),
        Sqs::new(&aws.sdk_config("sqs")),
    )
}

async fn topic(sns: &Sns, name: &str) -> String {
    sns.create_topic()
        .name(name)
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string()
}

async fn subscribe_http(sns: &Sns, topic: &str, url: &str, filter: Option<&str>) {
    let mut req = sns
        .subscribe()
        .topic_arn(topic)
        .protocol("http")
        .endpoint(url);
    if let Some(f) = filter {
        req = req.attributes("FilterPolicy", f);
    }
    req.send().await.unwrap();
}

/// A queue subscribed to `topic`; returns its URL.
async fn subscribe_queue(sns: &Sns, sqs: &Sqs, topic: &str, name: &str) -> String {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    // Asked, not assumed: moto and LocalStack use different accounts.
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .unwrap()
        .clone();
    sns.subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(arn)
        .send()
        .await
        .unwrap();
    url
}

async fn receive_one(sqs: &Sqs, url: &str) -> Value {
    for _ in 0..50 {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(m) = out.messages().first() {
            return serde_json::from_str(m.body().unwrap()).unwrap();
        }
    }
    panic!("nothing arrived on {url}");
}

fn sns_channel(topic: &str) -> ChannelConfig {
    ChannelConfig {
        name: "oncall".into(),
        kind: Some(ChannelKind::Sns),
        topic_arn: Some(topic.into()),
        ..ChannelConfig::default()
    }
}

async fn wait_for(inbox: &Inbox, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        if inbox.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inbox.lock().unwrap().clone()
}

/// A notifier, its files in a fresh temp dir, publishing everything to
/// the topic `arn` through the AWS that `aws` reaches.
async fn notifier_on_topic(
    aws: &AwsConfig,
    arn: &str,
) -> (tempfile::TempDir, Arc<trailhound_notify::Notifier>) {
    let dir = tempfile::tempdir().unwrap();
    let n =
        trailhound_notify::build_aws(&config(dir.path(), vec![sns_channel(arn)]), dir.path(), aws)
            .await
            .unwrap();
    (dir, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_text_or_json_and_filter_on_attributes() {
    let emu = Emulator::start_messaging().await;
    let aws = emu.aws_config();
    let (sns, sqs) = clients(&aws).await;
    let arn = topic(&sns, "trailhound-alerts").await;
    let (high_url, high) = listener().await;
    let (low_url, low) = listener().await;
    subscribe_http(
        &sns,
        &arn,
        &high_url,
        Some(r#"{"severity":["high","critical"],"account_id":["111122223333"]}"#),
    )
    .await;
    subscribe_http(&sns, &arn, &low_url, Some(r#"{"severity":["low"]}"#)).await;
    let queue = subscribe_queue(&sns, &sqs, &arn, "alerts-queue").await;

    let (_dir, n) = notifier_on_topic(&aws, &arn).await;
    let d = n
        .notify(&sample_insight("w1", "inc-1", Severity::High))
        .await;
    assert_eq!(d[0].status, DeliveryStatus::Delivered, "{:?}", d[0]);

    // HTTP: the filter on severity and account matched, the JSON
    // rendering arrived as the notification's Message.
    let got = wait_for(&high, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["Type"], "Notification");
    assert_eq!(got[0]["TopicArn"], arn.as_str());
    let subject = got[0]["Subject"].as_str().unwrap();
    assert!(
        subject.starts_with("trailhound: ") && subject.len() <= 100,
        "{subject}"
    );
    let body: Value = serde_json::from_str(got[0]["Message"].as_str().unwrap())
        .expect("programmatic subscribers get JSON");
    assert_eq!(body["event"], "insight.opened");
    assert_eq!(body["insight"]["incident_id"], "inc-1");
    assert_eq!(body["insight"]["anomaly"]["account_id"], "111122223333");
    // The filter on severity "low" did not match.
    assert!(wait_for(&low, 1).await.is_empty());

    // SQS: the envelope carries the attributes as published.
    let envelope = receive_one(&sqs, &queue).await;
    let attrs = &envelope["MessageAttributes"];
    assert_eq!(attrs["severity"]["Value"], "high", "{envelope:#}");
    assert_eq!(attrs["environment"]["Value"], "production");
    assert_eq!(attrs["account_id"]["Value"], "111122223333");
    assert_eq!(attrs["detector"]["Value"], "ec2-run-instances");
    assert_eq!(attrs["region"]["Value"], "us-east-1");
    assert_eq!(attrs["event"]["Value"], "insight.opened");
    let body: Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(body["insight"]["id"], "w1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_insight_is_cut_to_fit_and_still_delivered() {
    let emu = Emulator::start_messaging().await;
    let aws = emu.aws_config();
    let (sns, sqs) = clients(&aws).await;
    let arn = topic(&sns, "big").await;
    let queue = subscribe_queue(&sns, &sqs, &arn, "big-queue").await;
    let (_dir, n) = notifier_on_topic(&aws, &arn).await;
    let mut insight = sample_insight("w-big", "inc-big", Severity::Critical);
    // 300 KB of explanation: more than SNS takes in one message.
    insight.summary = "ci-deployer launched p4d.24xlarge again. ".repeat(7500);
    let d = n.notify(&insight).await;
    assert_eq!(d[0].status, DeliveryStatus::Delivered, "{:?}", d[0]);
    let envelope = receive_one(&sqs, &queue).await;
    let message = envelope["Message"].as_str().unwrap();
    assert!(message.len() < trailhound_notify::channel::sns::MAX_PUBLISH_BYTES);
    let body: Value = serde_json::from_str(message).unwrap();
    assert_eq!(body["insight"]["truncated"], true);
    assert_eq!(body["insight"]["incident_id"], "inc-big");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_and_a_missing_topic_is_named() {
    let emu = Emulator::start_messaging().await;
    let proxy = FaultProxy::start(
        emu.endpoint(),
        vec![FaultRule::query("Publish", 400, "Throttling", "Rate exceeded").times(1)],
    )
    .await;
    let aws = AwsConfig {
        endpoint_url: Some(proxy.endpoint().to_string()),
        ..emu.aws_config()
    };
    let (sns, _) = clients(&emu.aws_config()).await;
    let arn = topic(&sns, "flaky").await;
    let missing = format!("arn:aws:sns:us-east-1:{}:no-such-topic", emu.account_id());
    let missing = missing.as_str();
    let dir = tempfile::tempdir().unwrap();
    let mut gone = sns_channel(missing);
    gone.name = "gone".into();
    let n = trailhound_notify::build_aws(
        &config(dir.path(), vec![sns_channel(&arn), gone]),
        dir.path(),
        &aws,
    )
    .await
    .unwrap();
    let d = n
        .notify(&sample_insight("w2", "inc-2", Severity::High))
        .await;
    let ok = d.iter().find(|d| d.channel == "oncall").unwrap();
    assert_eq!(ok.status, DeliveryStatus::Delivered, "{ok:?}");
    assert!(proxy.faults("Publish") >= 1, "the throttle was injected");
    let bad = d.iter().find(|d| d.channel == "gone").unwrap();
    assert_ne!(bad.status, DeliveryStatus::Delivered, "{bad:?}");
    assert!(
        bad.detail.contains("sns:Publish") && bad.detail.contains(missing),
        "{}",
        bad.detail
    );
}
