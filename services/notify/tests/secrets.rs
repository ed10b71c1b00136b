//! Webhook URLs and signing secrets never show: not in logs (captured
//! here from a global subscriber at TRACE), not in ListChannels, not in
//! delivery details or dead letters, not in start-up errors, not in the
//! configuration's Debug output.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::testing::sample_insight;
use common::{Hook, Reply, URL_SECRET, config};
use trailhound_core::Severity;
use trailhound_notify::{Backends, ChannelConfig, ChannelKind, DeliveryFilter, DeliveryStatus};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

const HMAC_SECRET: &str = "hmac-Secret-Value-42";

#[tokio::test]
async fn secrets_stay_out_of_logs_api_and_errors() {
    let logs = Capture::default();
    // try_init also forwards `log` records (reqwest logs through `log`).
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .try_init()
        .unwrap();

    // Slack answers 500 then 404 (permanent), the webhook hangs past its
    // timeout, Teams refuses connections: every error path runs.
    let slack = Hook::start(vec![Reply::Status(500), Reply::Status(404)]).await;
    let hook = Hook::start(vec![Reply::Hang, Reply::Hang, Reply::Hang]).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("slack-url");
    std::fs::write(&url_file, format!("{}\n", slack.url())).unwrap();
    let teams_url = format!("http://{closed}/webhookb2/{URL_SECRET}");
    let hook_url = hook.url();

    let env: trailhound_notify::secret::EnvLookup = {
        let (teams_url, hook_url) = (teams_url.clone(), hook_url.clone());
        Arc::new(move |k: &str| match k {
            "TEAMS_URL" => Some(teams_url.clone()),
            "HOOK_URL" => Some(hook_url.clone()),
            "HOOK_SECRET" => Some(HMAC_SECRET.to_string()),
            _ => None,
        })
    };
    let channels = vec![
        ChannelConfig {
            name: "slack".into(),
            kind: Some(ChannelKind::Slack),
            url_file: Some(url_file.clone()),
            ..Default::default()
        },
        ChannelConfig {
            name: "teams".into(),
            kind: Some(ChannelKind::Teams),
            url_env: Some("TEAMS_URL".into()),
            ..Default::default()
        },
        ChannelConfig {
            name: "hook".into(),
            kind: Some(ChannelKind::Webhook),
            url_env: Some("HOOK_URL".into()),
            secret_env: Some("HOOK_SECRET".into()),
            timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        },
    ];
    let c = config(dir.path(), channels);
    let n = trailhound_notify::build_with(
        &c,
        dir.path(),
        Backends {
            env: env.clone(),
            ..Backends::default()
        },
    )
    .unwrap();

    let d = n.notify(&sample_insight("w1", "inc", Severity::High)).await;
    assert_eq!(d.len(), 3);
    assert!(
        d.iter().all(|d| d.status == DeliveryStatus::Failed),
        "{d:?}"
    );
    // The hook received the signed requests and nothing leaked into them
    // but the signature.
    assert!(!hook.received().is_empty());

    let mut shown = Vec::new();
    for ch in n.channels() {
        shown.push(format!("{ch:?}"));
    }
    let targets: Vec<String> = n.channels().into_iter().map(|c| c.target).collect();
    assert_eq!(
        targets,
        [
            format!("http://{}/services/***", slack.addr),
            format!("http://{closed}/webhookb2/***"),
            format!("http://{}/services/*** (signed)", hook.addr),
        ]
    );
    for d in n.deliveries(&DeliveryFilter::default()) {
        shown.push(format!("{d:?}"));
    }
    shown.push(std::fs::read_to_string(dir.path().join("notify-dead-letters.jsonl")).unwrap());
    shown.push(format!("{c:?}"));
    shown.push(format!("{n:?}"));

    // Start-up errors: a URL that is not one, and a missing variable.
    std::fs::write(&url_file, format!("not a url {URL_SECRET}")).unwrap();
    let bad = trailhound_notify::build_with(
        &c,
        dir.path().join("other").as_path(),
        Backends {
            env: env.clone(),
            ..Backends::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("slack") && bad.contains("url_file"), "{bad}");
    shown.push(bad);
    let missing =
        trailhound_notify::build_with(&c, dir.path().join("other2").as_path(), Backends::default())
            .unwrap_err()
            .to_string();
    shown.push(missing);

    // A literal URL in the file is not printed either.
    let literal = config(
        dir.path(),
        vec![common::channel(
            "lit",
            ChannelKind::Slack,
            &format!("https://hooks.slack.com/services/{URL_SECRET}"),
        )],
    );
    shown.push(format!("{literal:?}"));
    shown.push(serde_json::to_string(&literal).unwrap());

    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        log_text.contains("delivery failed"),
        "expected failure logs, got: {log_text}"
    );
    shown.push(log_text);

    for text in &shown {
        for secret in ["T0SECRET", "B0SECRET", "XyZsecretToken", HMAC_SECRET] {
            assert!(!text.contains(secret), "{secret} leaked in: {text}");
        }
    }
}
