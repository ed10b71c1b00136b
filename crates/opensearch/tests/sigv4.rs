//! SigV4 for Amazon OpenSearch Service: requests the client sends are
//! captured by a local server and their signature is recomputed with the
//! AWS SDK's own signer (aws-sigv4) from the captured method, path,
//! signed headers and body. A match proves the request was signed for the
//! right service, region, credentials and payload — no hand-written
//! expected string involved.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is its failure report

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::body::Bytes;
use axum::extract::{Request, State};
use opensearch::http::Method;
use serde_json::json;
use trailhound_opensearch::{Auth, Client, OpenSearchConfig};

#[derive(Clone, Debug)]
struct Captured {
    method: String,
    path_and_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn capture_server() -> (String, Arc<Mutex<Vec<Captured>>>) {
    let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
    let app = axum::Router::new()
        .fallback(
            |State(seen): State<Arc<Mutex<Vec<Captured>>>>, req: Request| async move {
                let method = req.method().to_string();
                let path_and_query = req.uri().to_string();
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                    .collect();
                let body: Bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
                    .await
                    .unwrap();
                seen.lock().unwrap().push(Captured {
                    method,
                    path_and_query,
                    headers,
                    body: body.to_vec(),
                });
                axum::Json(json!({"status": "green", "number_of_nodes": 3}))
            },
        )
        .with_state(seen.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}"), seen)
}

fn header<'a>(c: &'a Captured, name: &str) -> Option<&'a str> {
    c.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Recomputes the request's signature with aws-sigv4 and checks it is the
/// one the request carries.
fn verify(c: &Captured, base: &str, creds: Credentials, service: &str, region: &str) {
    let auth = header(c, "authorization").expect("Authorization header");
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential="), "{auth}");
    let scope = format!("/{region}/{service}/aws4_request");
    assert!(auth.contains(&scope), "{auth} lacks {scope}");
    let date = header(c, "x-amz-date").expect("X-Amz-Date header");
    let sha = header(c, "x-amz-content-sha256").expect("x-amz-content-sha256 header");
    assert_eq!(sha.len(), 64);
    let time: SystemTime = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc()
        .into();
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .split(';')
        .collect();
    // The signer adds host, date, payload hash and token itself.
    let own = [
        "host",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
    ];
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .filter(|h| !own.contains(h))
        .map(|h| (*h, header(c, h).unwrap()))
        .collect();
    let identity = Identity::new(creds.clone(), None);
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let url = format!("{base}{}", c.path_and_query);
    let req = SignableRequest::new(
        &c.method,
        &url,
        headers.into_iter(),
        SignableBody::Bytes(&c.body),
    )
    .unwrap();
    let (instructions, signature) = sign(req, &params).unwrap().into_parts();
    assert!(
        auth.ends_with(&format!("Signature={signature}")),
        "signature mismatch:\n carried  {auth}\n expected {signature}"
    );
    let (new_headers, _) = instructions.into_parts();
    for h in new_headers {
        if h.name() == "x-amz-security-token" {
            assert_eq!(header(c, "x-amz-security-token"), Some(h.value()));
        }
    }
    if let Some(token) = creds.session_token() {
        assert_eq!(header(c, "x-amz-security-token"), Some(token));
    }
}

#[tokio::test]
async fn requests_signed_for_es_with_the_aws_chain_verify_with_the_sdk_signer() {
    let (url, seen) = capture_server().await;
    // The [aws] loader in emulator mode: fixed test credentials, no
    // network look-ups.
    let aws_cfg = trailhound_aws::AwsConfig {
        region: Some("eu-west-1".into()),
        endpoint_url: Some(url.clone()),
        emulator: true,
        ..Default::default()
    };
    let aws = trailhound_aws::Aws::load(&aws_cfg).await.unwrap();
    let creds = aws
        .sdk_config("opensearch")
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .unwrap();
    let cfg = OpenSearchConfig {
        urls: vec![url.clone()],
        auth: Auth::Sigv4 {
            service: "es".into(),
            region: None,
        },
        ..Default::default()
    };
    let client = Client::new(&cfg, Some(&aws)).unwrap();
    client
        .json(
            Method::Post,
            "cwl-multiaccounts-*/_search",
            Some(&json!({"size": 0, "query": {"term": {"recipientAccountId": "111122223333"}}})),
            "search",
        )
        .await
        .unwrap();
    client
        .send(
            Method::Post,
            "_bulk",
            Some(b"{\"index\":{\"_index\":\"x\",\"_id\":\"1\"}}\n{\"a\":1}\n".to_vec()),
            true,
            "bulk",
        )
        .await
        .unwrap();
    assert_eq!(client.health().await.status, "green");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for c in &seen {
        verify(c, &url, creds.clone(), "es", "eu-west-1");
    }
    // A tampered body no longer verifies: the check is not vacuous.
    let mut t = seen[0].clone();
    t.body = b"{}".to_vec();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        verify(&t, &url, creds.clone(), "es", "eu-west-1")
    }));
    assert!(r.is_err());
}

#[tokio::test]
async fn temporary_credentials_carry_the_session_token_and_aoss_is_signed_as_aoss() {
    let (url, seen) = capture_server().await;
    let creds = Credentials::new(
        "ASIAEXAMPLE",
        "secret/key",
        Some("the-session-token".into()),
        None,
        "test",
    );
    let provider = SharedCredentialsProvider::new(creds.clone());
    let transport = opensearch::http::transport::TransportBuilder::new(
        opensearch::http::transport::SingleNodeConnectionPool::new(url.parse().unwrap()),
    )
    .auth(opensearch::auth::Credentials::AwsSigV4(
        provider,
        aws_types::region::Region::new("us-west-2"),
    ))
    .service_name("aoss")
    .build()
    .unwrap();
    let cfg = OpenSearchConfig {
        urls: vec![url.clone()],
        ..Default::default()
    };
    let client = Client::from_transport(opensearch::OpenSearch::new(transport), &cfg);
    client
        .json(
            Method::Put,
            "_index_template/cwl-multiaccounts-template",
            Some(&json!({"index_patterns": ["cwl-multiaccounts-*"]})),
            "template",
        )
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        header(&seen[0], "x-amz-security-token"),
        Some("the-session-token")
    );
    verify(&seen[0], &url, creds, "aoss", "us-west-2");
}
