//! The shared loader against a local AWS emulator (moto): endpoints,
//! emulator credentials, and the assumed role actually being used.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report
use trailhound_aws::{Aws, AwsConfig, AwsError};
use trailhound_testkit::Emulator;

async fn topic_arn(aws: &Aws) -> String {
    aws_sdk_sns::Client::new(&aws.sdk_config("sns"))
        .create_topic()
        .name("who-am-i")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn calls_run_as_the_assumed_role() {
    let emu = Emulator::start().await;
    // moto keeps each account's resources apart and files a call under
    // the account of the credentials that signed it.
    let base = Aws::load(&emu.aws_config()).await.unwrap();
    assert!(topic_arn(&base).await.contains(":123456789012:"));

    let assumed = Aws::load(&AwsConfig {
        assume_role_arn: Some("arn:aws:iam::111111111111:role/trailhound-read-org".into()),
        external_id: Some("trailhound-test".into()),
        ..emu.aws_config()
    })
    .await
    .unwrap();
    let arn = topic_arn(&assumed).await;
    assert!(
        arn.contains(":111111111111:"),
        "the role's account owns what the role creates: {arn}"
    );
}

#[tokio::test]
async fn per_service_endpoints_win_over_the_shared_one() {
    let emu = Emulator::start().await;
    let aws = Aws::load(&AwsConfig {
        endpoint_url: Some("http://127.0.0.1:9".into()),
        endpoints: [("sns".to_string(), emu.endpoint().to_string())].into(),
        ..emu.aws_config()
    })
    .await
    .unwrap();
    assert_eq!(aws.endpoint("sns"), Some(emu.endpoint()));
    assert_eq!(aws.endpoint("sqs"), Some("http://127.0.0.1:9"));
    // SNS reaches the emulator; SQS would go to the dead port.
    assert!(topic_arn(&aws).await.starts_with("arn:aws:sns:us-east-1:"));
}

#[tokio::test]
async fn mistakes_are_refused_with_the_key_named() {
    let e = Aws::load(&AwsConfig {
        region: Some("us-east-1".into()),
        emulator: true,
        ..AwsConfig::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&e, AwsError::Config(m) if m.contains("emulator = true needs endpoint_url")),
        "{e}"
    );
    let e = Aws::load(&AwsConfig {
        region: Some("us-east-1".into()),
        endpoints: [("ec2".to_string(), "http://127.0.0.1:1".to_string())].into(),
        ..AwsConfig::default()
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("endpoints.ec2"), "{e}");
    let e = Aws::load(&AwsConfig {
        region: Some("us-east-1".into()),
        max_attempts: 0,
        ..AwsConfig::default()
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("max_attempts"), "{e}");
}
