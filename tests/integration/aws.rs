//! `trailhound up` pointed at AWS by configuration alone — every backend
//! on a local AWS emulator (moto), reached with the real SDK clients:
//! accounts come from Organizations (OU path and tags), the metadata
//! cache is a DynamoDB table trailhound creates, the trail arrives as S3
//! objects announced through SQS, and the alert goes out on SNS to a
//! subscribed HTTP listener. A cryptomining burst in a sandbox account
//! must come out the other end, explained with the account's real name.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_organizations::types::{OrganizationFeatureSet, Tag};
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;
use trailhound_aws::Aws;
use trailhound_proto::detect::v1::FlushRequest;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_testkit::Emulator;

use crate::harness::{Service, free_port, generated_org, trail_records, wait_ready};

type Inbox = Arc<Mutex<Vec<Value>>>;

async fn subscriber(State(inbox): State<Inbox>, body: String) -> &'static str {
    if let Ok(v) = serde_json::from_str(&body) {
        inbox.lock().unwrap().push(v);
    }
    "ok"
}

/// A sandbox account in a real (emulated) organization: Root/Sandbox,
/// tagged Environment=sandbox and Team=ml-research. Returns its id.
async fn sandbox_account(aws: &Aws) -> String {
    let org = aws_sdk_organizations::Client::new(&aws.sdk_config("organizations"));
    org.create_organization()
        .feature_set(OrganizationFeatureSet::All)
        .send()
        .await
        .unwrap();
    let root = org.list_roots().send().await.unwrap().roots()[0]
        .id()
        .unwrap()
        .to_string();
    let ou = org
        .create_organizational_unit()
        .parent_id(&root)
        .name("Sandbox")
        .send()
        .await
        .unwrap();
    let ou = ou.organizational_unit().unwrap().id().unwrap().to_string();
    let created = org
        .create_account()
        .account_name("research-sandbox")
        .email("aws+research@example.com")
        .send()
        .await
        .unwrap();
    let request = created.create_account_status().unwrap().id().unwrap();
    let id = org
        .describe_create_account_status()
        .create_account_request_id(request)
        .send()
        .await
        .unwrap()
        .create_account_status()
        .unwrap()
        .account_id()
        .unwrap()
        .to_string();
    org.move_account()
        .account_id(&id)
        .source_parent_id(&root)
        .destination_parent_id(&ou)
        .send()
        .await
        .unwrap();
    org.tag_resource()
        .resource_id(&id)
        .tags(
            Tag::builder()
                .key("Environment")
                .value("sandbox")
                .build()
                .unwrap(),
        )
        .tags(
            Tag::builder()
                .key("Team")
                .value("ml-research")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    id
}

fn gz(records: &[String]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    write!(e, "{{\"Records\":[{}]}}", records.join(",")).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_aws_backends_alerts_a_burst_on_sns() {
    // Organizations and DynamoDB on moto; S3, SQS and SNS on the
    // messaging emulator, which is LocalStack when one is named (else the
    // same moto).
    let emu = Emulator::start().await;
    let separate = trailhound_testkit::containers::localstack_image().is_some();
    let messaging = if separate {
        Some(Emulator::start_messaging().await)
    } else {
        None
    };
    let msg = messaging.as_ref().unwrap_or(&emu);
    let aws = Aws::load(&emu.aws_config()).await.unwrap();
    let maws = Aws::load(&msg.aws_config()).await.unwrap();
    let account = sandbox_account(&aws).await;

    // The trail: a generated account's three days, re-addressed to the
    // emulated organization's account.
    let dir = tempfile::tempdir().unwrap();
    let org_dir = dir.path().join("org");
    let labels = generated_org(&org_dir, 3, 1, 5, 10);
    let burst = crate::harness::cryptomining(&labels);
    let records: Vec<String> = trail_records(&org_dir.join("trail"))
        .into_iter()
        .map(|r| r.replace(&burst.account_id, &account))
        .collect();

    // S3 bucket announcing new objects on an SQS queue.
    let s3 = aws_sdk_s3::Client::new(&maws.sdk_config("s3"));
    let sqs = aws_sdk_sqs::Client::new(&maws.sdk_config("sqs"));
    let queue_url = sqs
        .create_queue()
        .queue_name("trail-notifications")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .unwrap()
        .clone();
    {
        use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
        s3.create_bucket().bucket("org-trail").send().await.unwrap();
        s3.put_bucket_notification_configuration()
            .bucket("org-trail")
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(
                        QueueConfiguration::builder()
                            .queue_arn(&queue_arn)
                            .events(Event::from("s3:ObjectCreated:*"))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    // SNS topic with an HTTP subscriber that filters on the account.
    let sns = aws_sdk_sns::Client::new(&maws.sdk_config("sns"));
    let topic = sns
        .create_topic()
        .name("trailhound-alerts")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    let inbox: Inbox = Arc::default();
    let app = axum::Router::new()
        .route("/sns", post(subscriber))
        .with_state(inbox.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/sns", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("http")
        .endpoint(&hook)
        .attributes(
            "FilterPolicy",
            format!(r#"{{"account_id":["{account}"],"detector":["ec2-run-instances"]}}"#),
        )
        .send()
        .await
        .unwrap();

    // Everything above is AWS; trailhound learns of it from its config.
    let config = dir.path().join("trailhound.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
endpoints = {{ s3 = "{messaging}", sqs = "{messaging}", sns = "{messaging}", logs = "{messaging}" }}
emulator = true

[enrich]
source = "organizations"
cache = "dynamodb"
dynamodb_table = "trailhound-accounts"
create_table = true

[ingest]
s3_queue_url = "{queue_url}"
s3_wait_time = "1s"
s3_max_objects_in_flight = 1

[notify]
[[notify.channels]]
name = "security-sns"
kind = "sns"
topic_arn = "{topic}"

[[notify.routes]]
name = "all"
channels = ["security-sns"]
"#,
            endpoint = emu.endpoint(),
            messaging = msg.endpoint()
        ),
    )
    .unwrap();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let flags = [
        "--ingest-port",
        "--enrich-port",
        "--detect-port",
        "--insights-port",
        "--notify-port",
        "--health-port",
    ];
    let port_args: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let mut args = vec!["--config", config.to_str().unwrap(), "up"];
    for (f, p) in flags.iter().zip(&port_args) {
        args.extend([*f, p.as_str()]);
    }
    let mut up = Service::start("up", &dir.path().join("up"), &args);
    wait_ready(&mut up, ports[0]).await;

    // The trail lands in the bucket object by object, in delivery order.
    for (n, chunk) in records.chunks(400).enumerate() {
        let key = format!(
            "AWSLogs/{account}/CloudTrail/us-east-1/{account}_CloudTrail_us-east-1_{n:05}.json.gz"
        );
        s3.put_object()
            .bucket("org-trail")
            .key(key)
            .body(gz(chunk).into())
            .send()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = a.attributes().cloned().unwrap_or_default();
        let n = |k: aws_sdk_sqs::types::QueueAttributeName| {
            attrs
                .get(&k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
        };
        if n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages) == 0
            && n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible) == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue not drained after 120s\n{}",
            up.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    DetectServiceClient::connect(format!("http://127.0.0.1:{}", ports[2]))
        .await
        .unwrap()
        .flush(FlushRequest {})
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while inbox.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no SNS notification after 30s\n{}",
            up.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = inbox.lock().unwrap().clone();
    let body: Value = serde_json::from_str(got[0]["Message"].as_str().unwrap()).unwrap();
    let a = &body["insight"]["anomaly"];
    assert_eq!(a["account_id"], account.as_str(), "{body:#}");
    assert_eq!(
        a["account_name"], "research-sandbox",
        "name from Organizations"
    );
    assert_eq!(a["environment"], "sandbox", "environment from the tag");
    assert_eq!(a["ou_path"], serde_json::json!(["Root", "Sandbox"]));
    let text = body.to_string();
    let principal = burst.principal_arn.clone().unwrap();
    let user = principal.rsplit('/').next().unwrap();
    assert!(text.contains(user), "principal {user} missing: {text}");
    assert!(
        text.contains(&burst.instance_type.clone().unwrap()),
        "{text}"
    );

    // enrich created the cache table and keeps the account in it, with
    // the environment as a top-level attribute.
    let ddb = aws_sdk_dynamodb::Client::new(&aws.sdk_config("dynamodb"));
    let item = ddb
        .get_item()
        .table_name("trailhound-accounts")
        .key(
            "accountId",
            aws_sdk_dynamodb::types::AttributeValue::S(account.clone()),
        )
        .send()
        .await
        .unwrap();
    let item = item.item().expect("the account is cached in DynamoDB");
    assert_eq!(
        item.get("environment")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str),
        Some("sandbox")
    );
    up.stop();
}
