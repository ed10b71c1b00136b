//! Zero trust on every port, with real handshakes and real tokens: the
//! real grpcurl over TLS and mTLS against all six services of `trailhound
//! up` (plaintext refused, a certificate from another CA refused, a valid
//! one accepted), certificates rotated on disk, the pipeline's hops over
//! mTLS as separate processes, OIDC tokens minted here and verified against
//! a JWKS served here (no token, expired, wrong audience, wrong issuer,
//! unknown key), roles, forged Notify calls, per-caller rate limits, the
//! audit log, and the loopback rule.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Service, free_port, trailhound_bin};

fn grpcurl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TRAILHOUND_GRPCURL") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv/bin/grpcurl")
}

/// grpcurl's success and what it printed.
fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new(grpcurl_bin())
        // A refused handshake is retried by grpc-go until the deadline.
        .args(["-max-time", "10", "-connect-timeout", "1"])
        .args(args)
        .output()
        .expect("run grpcurl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn certs(dir: &Path) {
    let st = Command::new(trailhound_bin())
        .args(["certs", "--out"])
        .arg(dir)
        .status()
        .expect("run trailhound certs");
    assert!(st.success());
}

/// A TLS client's grpcurl flags with `name`'s certificate from `dir`.
fn mtls(ca: &Path, dir: &Path, name: &str) -> Vec<String> {
    vec![
        "-cacert".into(),
        ca.display().to_string(),
        "-cert".into(),
        dir.join(format!("{name}.pem")).display().to_string(),
        "-key".into(),
        dir.join(format!("{name}-key.pem")).display().to_string(),
    ]
}

fn call(flags: &[String], extra: &[&str]) -> (bool, String) {
    let mut a: Vec<&str> = flags.iter().map(String::as_str).collect();
    a.extend_from_slice(extra);
    grpcurl(&a)
}

/// Waits until grpcurl with `flags` lists the services at `addr`.
fn wait_tls(service: &mut Service, flags: &[String], addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = service.child.try_wait() {
            panic!("{} exited with {st}:\n{}", service.name, service.logs());
        }
        if call(flags, &[addr, "list"]).0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready over TLS:\n{}",
            service.name,
            service.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const NAMES: [&str; 6] = ["ingest", "enrich", "detect", "insights", "notify", "health"];

fn ports() -> Vec<u16> {
    NAMES.iter().map(|_| free_port()).collect()
}

fn up_args(ports: &[u16]) -> Vec<String> {
    let mut a = vec!["up".to_string()];
    for (n, p) in NAMES.iter().zip(ports) {
        a.push(format!("--{n}-port"));
        a.push(p.to_string());
    }
    a
}

/// An OIDC issuer in a test: an EC P-256 key, its JWKS and discovery
/// document served on loopback, and tokens minted on demand.
struct Issuer {
    url: String,
    key: jsonwebtoken::EncodingKey,
    _server: tokio::task::JoinHandle<()>,
}

impl Issuer {
    async fn start() -> Issuer {
        use base64::Engine;
        let kp = rcgen::KeyPair::generate().unwrap();
        let raw = kp.public_key_raw().to_vec();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]});
        let key = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let discovery = serde_json::json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let d = discovery.clone();
                    async move { axum::Json(d) }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let j = jwks.clone();
                    async move { axum::Json(j) }
                }),
            );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer {
            url,
            key,
            _server: server,
        }
    }

    /// A token with these claims over sensible defaults.
    fn token(&self, kid: &str, overrides: serde_json::Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = serde_json::json!({
            "iss": self.url, "aud": "trailhound", "sub": "u-1", "email": "ana@example.com",
            "exp": now + 600, "nbf": now - 10, "iat": now, "groups": ["secops"],
        });
        if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                c.insert(k.clone(), v.clone());
            }
        }
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.to_string());
        jsonwebtoken::encode(&h, &claims, &self.key).unwrap()
    }
}

fn bearer(t: &str) -> String {
    format!("authorization: Bearer {t}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mtls_tokens_roles_limits_and_audit_on_every_port() {
    let dir = tempfile::tempdir().unwrap();
    let (good, other) = (dir.path().join("certs"), dir.path().join("other"));
    certs(&good);
    certs(&other);
    let issuer = Issuer::start().await;
    let ci_token = "ci-token-0123456789";
    let config = dir.path().join("trailhound.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[tls]
cert = "{g}/detect.pem"
key = "{g}/detect-key.pem"
ca = "{g}/ca.pem"
client_ca = "{g}/ca.pem"
reload_interval = "200ms"
[auth]
mode = "oidc"
issuer = "{iss}"
audience = "trailhound"
[[auth.grants]]
group = "secops"
role = "admin"
[[auth.grants]]
group = "sandbox-team"
role = "viewer"
ous = ["Root/Sandbox"]
[[auth.tokens]]
name = "ci"
sha256 = "{sha}"
role = "operator"
[limits]
requests_per_second = 2
burst = 6
"#,
            g = good.display(),
            iss = issuer.url,
            sha = trailhound_runtime::auth::token_sha256(ci_token),
        ),
    )
    .unwrap();
    let ports = ports();
    let args = up_args(&ports);
    let mut cmd: Vec<&str> = vec!["--config", config.to_str().unwrap()];
    cmd.extend(args.iter().map(String::as_str));
    let mut up = Service::start("up", &dir.path().join("data"), &cmd);
    let ca = good.join("ca.pem");
    let admin = issuer.token("k1", serde_json::json!({}));
    let client = mtls(&ca, &good, "client");
    let mut authed = client.clone();
    authed.extend(["-H".to_string(), bearer(&admin)]);
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    wait_tls(&mut up, &authed, &addr(2));

    // Every port: TLS only, a client certificate from this CA only.
    for (i, name) in NAMES.iter().enumerate() {
        let a = addr(i);
        let (ok, out) = grpcurl(&["-plaintext", &a, "list"]);
        assert!(!ok, "{name}: plaintext accepted:\n{out}");
        let (ok, out) = call(
            &mtls(&ca, &other, "client"),
            &["-H", &bearer(&admin), &a, "list"],
        );
        assert!(
            !ok,
            "{name}: a certificate from another CA accepted:\n{out}"
        );
        let (ok, out) = grpcurl(&[
            "-cacert",
            ca.to_str().unwrap(),
            "-H",
            &bearer(&admin),
            &a,
            "list",
        ]);
        assert!(!ok, "{name}: no client certificate accepted:\n{out}");
        let (ok, out) = call(&authed, &[&a, "list"]);
        assert!(
            ok && out.contains(&format!("trailhound.{name}.v1")),
            "{name}:\n{out}"
        );
        // The container health check: `trailhound probe` with the same
        // configuration speaks mTLS; without it, it cannot connect.
        let probe = |with_config: bool| {
            let mut c = std::process::Command::new(trailhound_bin());
            if with_config {
                c.args(["--config", config.to_str().unwrap()]);
            }
            c.args(["probe", "--service", name, &a])
                .env("RUST_BACKTRACE", "0")
                .output()
                .unwrap()
        };
        let out = probe(true);
        assert!(
            out.status.success(),
            "{name}: probe over mTLS: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !probe(false).status.success(),
            "{name}: plaintext probe answered"
        );
    }

    // Tokens: each broken one is UNAUTHENTICATED.
    let detect = addr(2);
    let list = "trailhound.detect.v1.DetectService/ListAnomalies";
    let now = chrono::Utc::now().timestamp();
    let broken = [
        ("no token", None),
        (
            "expired",
            Some(issuer.token("k1", serde_json::json!({"exp": now - 3600}))),
        ),
        (
            "not yet valid",
            Some(issuer.token("k1", serde_json::json!({"nbf": now + 3600}))),
        ),
        (
            "wrong audience",
            Some(issuer.token("k1", serde_json::json!({"aud": "other-app"}))),
        ),
        (
            "wrong issuer",
            Some(issuer.token("k1", serde_json::json!({"iss": "https://evil.example"}))),
        ),
        (
            "unknown key",
            Some(issuer.token("k9", serde_json::json!({}))),
        ),
        ("not a token", Some("garbage".to_string())),
    ];
    for (what, token) in &broken {
        let mut a = client.clone();
        if let Some(t) = token {
            a.extend(["-H".to_string(), bearer(t)]);
        }
        let (ok, out) = call(&a, &[&detect, list]);
        assert!(!ok && out.contains("Unauthenticated"), "{what}:\n{out}");
    }
    let (ok, out) = call(&authed, &[&detect, list]);
    assert!(ok, "a valid admin token refused:\n{out}");

    // Roles: a viewer reads but pulls no lever, naming the role needed.
    let viewer = issuer.token(
        "k1",
        serde_json::json!({"sub": "u-2", "email": "vic@example.com", "groups": ["sandbox-team"]}),
    );
    let mut v = client.clone();
    v.extend(["-H".to_string(), bearer(&viewer)]);
    let (ok, out) = call(
        &v,
        &[
            "-d",
            r#"{"serving":false,"reason":"x"}"#,
            &detect,
            "trailhound.common.v1.ControlService/SetServing",
        ],
    );
    assert!(
        !ok && out.contains("PermissionDenied") && out.contains("operator"),
        "{out}"
    );
    let (ok, out) = call(
        &v,
        &[
            "-d",
            r#"{"name":"x"}"#,
            &detect,
            "trailhound.detect.v1.DetectService/CreateDetector",
        ],
    );
    assert!(
        !ok && out.contains("PermissionDenied") && out.contains("operator"),
        "{out}"
    );
    let (ok, out) = call(&v, &[&detect, list]);
    assert!(ok, "{out}");
    // Counters over every account are not for a viewer scoped to some.
    let (ok, out) = call(&v, &[&detect, "trailhound.detect.v1.DetectService/Stats"]);
    assert!(
        !ok && out.contains("PermissionDenied") && out.contains("whole organization"),
        "{out}"
    );

    // Forged alerts: not even an operator token may call Notify.
    let mut ci = client.clone();
    ci.extend(["-H".to_string(), bearer(ci_token)]);
    let notify = addr(4);
    for _ in 0..3 {
        let (ok, out) = call(
            &ci,
            &[
                "-d",
                r#"{"insight":{}}"#,
                &notify,
                "trailhound.notify.v1.NotifyService/Notify",
            ],
        );
        assert!(
            !ok && out.contains("PermissionDenied") && out.contains("only trailhound services"),
            "{out}"
        );
    }

    // Per-caller limits: the viewer runs out, the CI token is still served.
    let mut limited = None;
    for _ in 0..30 {
        let (ok, out) = call(&v, &[&detect, list]);
        if !ok {
            limited = Some(out);
            break;
        }
    }
    let out = limited.expect("a caller hammering ListAnomalies was never limited");
    assert!(
        out.contains("ResourceExhausted") && out.contains("requests_per_second"),
        "{out}"
    );
    let (ok, out) = call(
        &ci,
        &[&detect, "trailhound.detect.v1.DetectService/ListDetectors"],
    );
    assert!(
        ok,
        "another caller was refused while one was limited:\n{out}"
    );

    // Denied attempts are counted in Stats. The CI token has spent most
    // of its own burst above: let its bucket refill first (2/s).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (ok, out) = call(&ci, &[&detect, "trailhound.detect.v1.DetectService/Stats"]);
    assert!(ok && out.contains("deniedRequests"), "{out}");

    // Audit: one JSON line per request, refusals included.
    let audit = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["subject"] == "u-2"
        && l["outcome"] == "permission_denied"
        && l["method"] == "/trailhound.common.v1.ControlService/SetServing"
        && l["role"] == "viewer"
        && l["scope"] == "ous=Root/Sandbox"));
    assert!(
        lines.iter().any(|l| l["subject"] == "u-1"
            && l["outcome"] == "ok"
            && l["name"] == "ana@example.com")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["outcome"] == "unauthenticated" && l["peer"].is_string())
    );
    // Health's in-process probes are a service identity.
    assert!(lines.iter().any(|l| l["kind"] == "service"));
    // `trailhound audit` reads it back, by subject.
    let out = Command::new(trailhound_bin())
        .args(["--config", config.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["audit", "--since", "1h", "--subject", "u-2", "--denied"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("SetServing permission_denied")
            && text.contains("vic@example.com")
            && !text.contains("ana@example.com"),
        "{text}"
    );

    // Rotation: new files on disk, new certificate served, no restart.
    let rotated = dir.path().join("rotated");
    certs(&rotated);
    for f in [
        "detect.pem",
        "detect-key.pem",
        "ca.pem",
        "client.pem",
        "client-key.pem",
    ] {
        std::fs::copy(rotated.join(f), good.join(format!("{f}.new"))).unwrap();
    }
    for f in ["detect.pem", "detect-key.pem", "ca.pem"] {
        std::fs::rename(good.join(format!("{f}.new")), good.join(f)).unwrap();
    }
    let new_client = mtls(&rotated.join("ca.pem"), &rotated, "client");
    let mut new_authed = new_client.clone();
    new_authed.extend(["-H".to_string(), bearer(ci_token)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !call(&new_authed, &[&detect, "list"]).0 {
        assert!(
            Instant::now() < deadline,
            "rotated certificates not picked up:\n{}",
            up.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, _) = call(
        &mtls(&other.join("ca.pem"), &other, "client"),
        &[&detect, "list"],
    );
    assert!(!ok);
    up.stop();
    // No secret reaches the logs.
    let logs = up.logs();
    for secret in [ci_token, admin.as_str(), viewer.as_str()] {
        assert!(!logs.contains(secret), "a token reached the logs");
    }
    let key = std::fs::read_to_string(rotated.join("detect-key.pem")).unwrap();
    let key_body = key.lines().nth(1).unwrap_or("-");
    assert!(!logs.contains(key_body));
}

/// ingest → enrich → detect as three processes, each with its own
/// certificate: the hops are mTLS and each service identity is allowed its
/// internal calls; `trailhound push` takes --ca/--cert/--key/--token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_hops_over_mtls_as_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("certs");
    certs(&good);
    let token = "push-admin-token";
    let config = |name: &str| {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                r#"
[tls]
cert = "{g}/{name}.pem"
key = "{g}/{name}-key.pem"
ca = "{g}/ca.pem"
client_ca = "{g}/ca.pem"
[auth]
mode = "tokens"
[[auth.tokens]]
name = "pusher"
sha256 = "{sha}"
role = "admin"
"#,
                g = good.display(),
                sha = trailhound_runtime::auth::token_sha256(token),
            ),
        )
        .unwrap();
        p.display().to_string()
    };
    let (pi, pe, pd) = (free_port(), free_port(), free_port());
    let data = dir.path().join("data");
    // `trailhound --config <its config> <service> <flags>`, its data in
    // data/<service>.
    let start = |service: &str, flags: &[&str]| {
        let config = config(service);
        let mut args = vec!["--config", config.as_str(), service];
        args.extend_from_slice(flags);
        Service::start(service, &data.join(service), &args)
    };
    let mut detect = start("detect", &["--detect-listen", &format!("127.0.0.1:{pd}")]);
    let mut enrich = start(
        "enrich",
        &[
            "--enrich-listen",
            &format!("127.0.0.1:{pe}"),
            "--detect-endpoint",
            &format!("https://localhost:{pd}"),
        ],
    );
    let mut ingest = start(
        "ingest",
        &[
            "--ingest-listen",
            &format!("127.0.0.1:{pi}"),
            "--enrich-endpoint",
            &format!("http://127.0.0.1:{pe}"),
        ],
    );
    let ca = good.join("ca.pem");
    let mut flags = mtls(&ca, &good, "client");
    flags.extend(["-H".to_string(), bearer(token)]);
    wait_tls(&mut detect, &flags, &format!("127.0.0.1:{pd}"));
    wait_tls(&mut enrich, &flags, &format!("127.0.0.1:{pe}"));
    wait_tls(&mut ingest, &flags, &format!("127.0.0.1:{pi}"));

    let trail = dir.path().join("trail.json");
    let records: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"eventVersion":"1.09","eventID":"0f0e0d0c-0000-4000-8000-{i:012}","eventTime":"2026-03-01T10:{i:02}:00Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"us-east-1","recipientAccountId":"111122223333"}}"#
            )
        })
        .collect();
    std::fs::write(&trail, format!(r#"{{"Records":[{}]}}"#, records.join(","))).unwrap();
    let ingest_url = format!("http://127.0.0.1:{pi}");
    let push = |extra: &[&str]| {
        Command::new(trailhound_bin())
            .args(["push", "--input"])
            .arg(&trail)
            .args(["--ingest", &ingest_url])
            .args(extra)
            .output()
            .unwrap()
    };
    // Without credentials the push is refused …
    let out = push(&[]);
    assert!(!out.status.success());
    // … with them it goes through every hop.
    let cert = good.join("client.pem");
    let key = good.join("client-key.pem");
    let out = push(&[
        "--ca",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--token",
        token,
    ]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "push failed: {text}\n{}\n{}",
        enrich.logs(),
        detect.logs()
    );
    assert!(!text.contains(" 0 accepted"), "{text}");
    let (ok, stats) = call(
        &flags,
        &[
            &format!("127.0.0.1:{pd}"),
            "trailhound.detect.v1.DetectService/Stats",
        ],
    );
    assert!(ok && stats.contains("\"eventsIn\""), "{stats}");
    // A tool's certificate is not a service: Observe is refused to it.
    let (ok, out) = call(
        &mtls(&ca, &good, "client"),
        &[
            "-d",
            "{}",
            &format!("127.0.0.1:{pd}"),
            "trailhound.detect.v1.DetectService/Observe",
        ],
    );
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
}

/// Binding beyond loopback without TLS and auth is refused, naming the fix;
/// `--insecure` runs anyway and says so in Stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_without_tls_and_auth_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = Command::new(trailhound_bin())
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["detect", "--detect-listen", &format!("0.0.0.0:{port}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("[tls]") && err.contains("[auth]") && err.contains("--insecure"),
        "{err}"
    );

    let mut detect = Service::start(
        "detect",
        dir.path(),
        &[
            "--insecure",
            "detect",
            "--detect-listen",
            &format!("0.0.0.0:{port}"),
        ],
    );
    crate::harness::wait_ready(&mut detect, port).await;
    let (ok, out) = grpcurl(&[
        "-plaintext",
        &format!("127.0.0.1:{port}"),
        "trailhound.detect.v1.DetectService/Stats",
    ]);
    assert!(
        ok && out.contains("\"insecure\"") && out.contains("--insecure"),
        "{out}"
    );
}

/// A service run as its own process with `[auth]` but without mTLS could
/// not prove who it is to the others (nor they to it): refused at
/// start-up, naming what is missing and the fix. With [tls] complete it
/// starts (the pipeline test above runs three such processes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_service_with_auth_but_without_mtls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir);
    let config = dir.path().join("trailhound.toml");
    let run = |tls: &str| {
        std::fs::write(&config, format!("{tls}\n[auth]\nmode = \"tokens\"\n")).unwrap();
        Command::new(trailhound_bin())
            .args(["--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .args([
                "enrich",
                "--enrich-listen",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .output()
            .unwrap()
    };
    let out = run("");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for needle in [
        "[auth]",
        "enrich",
        "cert, key, ca, client_ca",
        "trailhound certs",
        "trailhound up",
    ] {
        assert!(err.contains(needle), "{needle} not named: {err}");
    }
    // Server TLS without client certificates is not enough either.
    let out = run(&format!(
        "[tls]\ncert = \"{d}/enrich.pem\"\nkey = \"{d}/enrich-key.pem\"\nca = \"{d}/ca.pem\"",
        d = certs_dir.display()
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("client_ca"), "{err}");
    // The same configuration under `trailhound up` is fine: its services
    // share one process and its token.
    let ports = ports();
    std::fs::write(&config, "[auth]\nmode = \"tokens\"\n").unwrap();
    let mut cmd: Vec<String> = vec!["--config".into(), config.display().to_string()];
    cmd.extend(up_args(&ports));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let mut up = Service::start("up", &dir.path().join("up-data"), &cmd);
    crate::harness::wait_ready(&mut up, ports[2]).await;
}

/// A viewer scoped to `Root/Sandbox` sees only sandbox data, wherever it
/// reads: ListAnomalies, WatchAnomalies, GetAnomaly, ListInsights, Ask,
/// ListAccounts, GetAccount and the dashboard; an admin sees the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_viewer_sees_only_its_scope_everywhere_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org");
    let st = Command::new(trailhound_bin())
        .args(["generate", "--out"])
        .arg(&org)
        .args([
            "--days",
            "5",
            "--accounts",
            "9",
            "--seed",
            "1",
            "--noise",
            "20",
        ])
        .output()
        .unwrap();
    assert!(st.status.success());
    let (admin, viewer) = ("admin-token-1", "sandbox-viewer-token");
    // A real OIDC provider for the dashboard's sign-in (PyPI's
    // oidc-provider-mock, installed by scripts/test-tools.sh).
    let provider = OidcProvider::start(dir.path());
    let secret_file = dir.path().join("oidc-client-secret");
    std::fs::write(&secret_file, "dashboard-client-secret-42\n").unwrap();
    // A webhook that refuses connections: its failures must not print its
    // URL (the path is the secret) or its signing secret.
    let (hook_file, hook_secret_file) =
        (dir.path().join("hook-url"), dir.path().join("hook-secret"));
    std::fs::write(&hook_file, "http://127.0.0.1:9/hooks/T0P-SECRET-PATH").unwrap();
    std::fs::write(&hook_secret_file, "hmac-secret-77").unwrap();
    let ports = ports();
    let config = dir.path().join("trailhound.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
mode = "oidc"
issuer = "{issuer}"
audience = "trailhound-dashboard"
public_url = "http://localhost:{hp}"
client_secret_file = "{secret}"
[[auth.grants]]
group = "sandbox-team"
role = "viewer"
ous = ["Root/Sandbox"]
[[auth.tokens]]
name = "admin"
sha256 = "{a}"
role = "admin"
[[notify.channels]]
name = "siem"
kind = "webhook"
url_file = "{hook}"
secret_file = "{hook_secret}"
[[notify.channels]]
name = "log"
kind = "log"
[[notify.routes]]
name = "all"
channels = ["log", "siem"]
[[auth.tokens]]
name = "sandbox"
sha256 = "{v}"
role = "viewer"
ous = ["Root/Sandbox"]
"#,
            a = trailhound_runtime::auth::token_sha256(admin),
            v = trailhound_runtime::auth::token_sha256(viewer),
            issuer = provider.url,
            hp = ports[5],
            secret = secret_file.display(),
            hook = hook_file.display(),
            hook_secret = hook_secret_file.display(),
        ),
    )
    .unwrap();
    let args = up_args(&ports);
    let org_json = org.join("org.json");
    let mut cmd: Vec<&str> = vec!["--config", config.to_str().unwrap()];
    cmd.extend(args.iter().map(String::as_str));
    cmd.extend(["--org", org_json.to_str().unwrap()]);
    let mut up = Service::start("up", &dir.path().join("data"), &cmd);
    crate::harness::wait_ready(&mut up, ports[2]).await;
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    // 35 forged alerts, even with an admin token: all refused, none spends
    // a channel's budget; the real ones below still go out.
    for _ in 0..35 {
        let (ok, out) = grpcurl(&[
            "-plaintext",
            "-H",
            &bearer(admin),
            "-d",
            r#"{"insight":{}}"#,
            &addr(4),
            "trailhound.notify.v1.NotifyService/Notify",
        ]);
        assert!(!ok && out.contains("PermissionDenied"), "{out}");
    }
    let out = Command::new(trailhound_bin())
        .args(["push", "--input"])
        .arg(org.join("trail"))
        .args(["--ingest", &format!("http://{}", addr(0))])
        .args(["--flush-detect", &format!("http://{}", addr(2))])
        .args(["--token", admin])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let snapshot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&org_json).unwrap()).unwrap();
    let mut sandbox = Vec::new();
    let mut others = Vec::new();
    for a in snapshot["accounts"].as_array().unwrap() {
        let ou: Vec<&str> = a["ou_path"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let id = a["id"].as_str().unwrap().to_string();
        if ou.get(1) == Some(&"Sandbox") {
            sandbox.push((id, a["name"].as_str().unwrap().to_string()));
        } else {
            others.push((id, a["name"].as_str().unwrap().to_string()));
        }
    }
    assert!(!sandbox.is_empty() && !others.is_empty());
    let as_ = |t: &str, a: &str, method: &str, body: &str| {
        let (ok, out) = grpcurl(&["-plaintext", "-H", &bearer(t), "-d", body, a, method]);
        assert!(ok, "{method}: {out}");
        out
    };
    // Records name their account as "accountId"; text and pages as
    // "name (id…)". (Contributors may name foreign principals' ARNs: that
    // is the in-scope account's own trail.)
    let names_other = |text: &str| {
        others
            .iter()
            .find(|(id, _)| {
                text.contains(&format!("\"accountId\": \"{id}\""))
                    || text.contains(&format!("({id}"))
            })
            .cloned()
    };
    let anomalies = "trailhound.detect.v1.DetectService/ListAnomalies";
    let everything = as_(admin, &addr(2), anomalies, r#"{"page_size":500}"#);
    assert!(
        names_other(&everything).is_some(),
        "the admin sees other OUs' anomalies"
    );
    let scoped = as_(viewer, &addr(2), anomalies, r#"{"page_size":500}"#);
    assert!(
        sandbox.iter().any(|(id, _)| scoped.contains(id.as_str())),
        "{scoped}"
    );
    assert_eq!(names_other(&scoped), None, "ListAnomalies leaked");
    // An out-of-scope anomaly by id is NOT_FOUND, like a missing one.
    let v: serde_json::Value = serde_json::from_str(&everything).unwrap();
    let foreign = v["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| others.iter().any(|(id, _)| a["accountId"] == id.as_str()))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        &bearer(viewer),
        "-d",
        &format!(r#"{{"id":"{foreign}"}}"#),
        &addr(2),
        "trailhound.detect.v1.DetectService/GetAnomaly",
    ]);
    assert!(!ok && out.contains("NotFound"), "{out}");
    let watched = {
        let out = Command::new(grpcurl_bin())
            .args([
                "-plaintext",
                "-max-time",
                "3",
                "-H",
                &bearer(viewer),
                "-d",
                r#"{"since":"2000-01-01T00:00:00Z"}"#,
                &addr(2),
                "trailhound.detect.v1.DetectService/WatchAnomalies",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        sandbox.iter().any(|(id, _)| watched.contains(id.as_str())),
        "{watched}"
    );
    assert_eq!(names_other(&watched), None, "WatchAnomalies leaked");
    let insights = as_(
        viewer,
        &addr(3),
        "trailhound.insights.v1.InsightsService/ListInsights",
        r#"{"page_size":100}"#,
    );
    assert_eq!(names_other(&insights), None, "ListInsights leaked");
    let q = r#"{"question":"What accounts had the highest cost impact this week?"}"#;
    let answer = as_(
        viewer,
        &addr(3),
        "trailhound.insights.v1.InsightsService/Ask",
        q,
    );
    assert_eq!(names_other(&answer), None, "Ask leaked:\n{answer}");
    let answer_all = as_(
        admin,
        &addr(3),
        "trailhound.insights.v1.InsightsService/Ask",
        q,
    );
    assert!(names_other(&answer_all).is_some(), "{answer_all}");
    let accounts = as_(
        viewer,
        &addr(1),
        "trailhound.enrich.v1.EnrichService/ListAccounts",
        "{}",
    );
    assert!(
        !others.iter().any(|(id, _)| accounts.contains(id.as_str())),
        "ListAccounts leaked"
    );
    assert!(accounts.contains(sandbox[0].0.as_str()));
    let one = as_(
        viewer,
        &addr(1),
        "trailhound.enrich.v1.EnrichService/GetAccount",
        &format!(r#"{{"account_id":"{}"}}"#, others[0].0),
    );
    assert!(
        !one.contains(others[0].1.as_str()),
        "GetAccount leaked: {one}"
    );
    let page = reqwest::Client::new()
        .get(format!("http://{}/", addr(5)))
        .bearer_auth(viewer)
        .send()
        .await
        .unwrap();
    assert!(page.status().is_success());
    let html = page.text().await.unwrap();
    let linked = |html: &str| {
        others
            .iter()
            .any(|(id, _)| html.contains(&format!("account={id}&")))
    };
    assert!(!linked(&html), "the dashboard leaked");
    assert!(
        sandbox
            .iter()
            .any(|(id, _)| html.contains(&format!("account={id}&"))),
        "{html}"
    );
    let all = reqwest::Client::new()
        .get(format!("http://{}/", addr(5)))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(linked(&all), "the admin's dashboard shows other OUs");
    // Counters over every account: refused to the scoped viewer on every
    // port, figures left out of its health view; the admin has them.
    for i in [2, 5] {
        let metrics = |t: &str| {
            reqwest::Client::new()
                .get(format!("http://{}/metrics", addr(i)))
                .bearer_auth(t)
                .send()
        };
        let refused = metrics(viewer).await.unwrap();
        assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
        let why = refused.text().await.unwrap();
        assert!(why.contains("whole organization"), "{why}");
        let ok = metrics(admin).await.unwrap();
        assert!(ok.status().is_success());
        assert!(
            ok.text()
                .await
                .unwrap()
                .contains("trailhound_events_in_total")
        );
    }
    let health = "trailhound.health.v1.HealthService/GetSystemHealth";
    let scoped_health = as_(viewer, &addr(5), health, "{}");
    assert!(
        scoped_health.contains("\"name\": \"detect\"") && !scoped_health.contains("eventsIn"),
        "{scoped_health}"
    );
    assert!(as_(admin, &addr(5), health, "{}").contains("eventsIn"));
    let scoped_json = reqwest::Client::new()
        .get(format!("http://{}/health.json", addr(5)))
        .bearer_auth(viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scoped_json.contains("\"events_in_per_second\":null"),
        "{scoped_json}"
    );
    let deliveries = as_(
        admin,
        &addr(4),
        "trailhound.notify.v1.NotifyService/ListDeliveries",
        r#"{"channel":"log","limit":500}"#,
    );
    assert!(
        // Skipped ones are an incident's later windows; none for budget.
        deliveries.contains("DELIVERY_STATUS_DELIVERED")
            && !deliveries.to_lowercase().contains("rate limit"),
        "{deliveries}"
    );
    // A real critical alert went out despite the forgeries.
    let critical = as_(
        admin,
        &addr(3),
        "trailhound.insights.v1.InsightsService/ListInsights",
        r#"{"min_severity":"SEVERITY_CRITICAL","page_size":100}"#,
    );
    let critical: serde_json::Value = serde_json::from_str(&critical).unwrap();
    let delivered: serde_json::Value = serde_json::from_str(&deliveries).unwrap();
    let ids: Vec<&str> = critical["insights"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert!(!ids.is_empty(), "the trail has a critical incident");
    assert!(
        delivered["deliveries"].as_array().unwrap().iter().any(|d| {
            d["status"] == "DELIVERY_STATUS_DELIVERED"
                && ids.contains(&d["insightId"].as_str().unwrap_or_default())
        }),
        "no critical alert delivered: {deliveries}"
    );
    // Without a session or a token a browser is sent to sign in; a
    // script gets 401.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let anonymous = no_redirects
        .get(format!("http://{}/", addr(5)))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()["location"], "/auth/login");
    let script = no_redirects
        .get(format!("http://{}/metrics", addr(5)))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), reqwest::StatusCode::UNAUTHORIZED);
    let login = no_redirects
        .get(format!("http://{}/auth/login", addr(5)))
        .send()
        .await
        .unwrap();
    let to = login.headers()["location"].to_str().unwrap().to_string();
    assert!(
        to.starts_with(&provider.url)
            && to.contains("code_challenge_method=S256")
            && to.contains("state="),
        "{to}"
    );
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite"),
        "{cookie}"
    );

    // A person signs in through the provider in a real browser and sees
    // the sandbox only.
    match Browser::start(dir.path()).await {
        None => eprintln!(
            "skipped the browser sign-in: chromium or chromedriver is missing (scripts/test-tools.sh installs them)"
        ),
        Some(b) => {
            let home = format!("http://localhost:{}/", ports[5]);
            b.go(&home).await;
            let url = b.url().await;
            assert!(
                url.starts_with(&provider.url) && url.contains("/oauth2/authorize"),
                "not sent to sign in: {url}"
            );
            b.type_into("input[name=sub]", "vic").await;
            b.click("button[type=submit]").await;
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut html = b.source().await;
            while !html.contains("signed-in") {
                assert!(
                    Instant::now() < deadline,
                    "not signed in: {} {html}\n{}",
                    b.url().await,
                    up.logs()
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
                html = b.source().await;
            }
            assert!(
                html.contains("vic@example.com") && html.contains("ous=Root/Sandbox"),
                "{html}"
            );
            assert!(
                sandbox
                    .iter()
                    .any(|(id, _)| html.contains(&format!("account={id}&amp;"))
                        || html.contains(&format!("account={id}&"))),
                "{html}"
            );
            assert!(
                !others
                    .iter()
                    .any(|(id, _)| html.contains(&format!("account={id}&"))),
                "the signed-in page leaked"
            );
            // Logout ends the session: the next visit signs in again.
            b.go(&format!("{home}auth/logout")).await;
            b.go(&home).await;
            let url = b.url().await;
            assert!(
                url.contains("/oauth2/authorize"),
                "still signed in after logout: {url}"
            );
            b.quit().await;
        }
    }
    // The refused webhook has failed (and said so) by now, or soon.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !up.logs().contains("delivery failed") {
        assert!(
            Instant::now() < deadline,
            "the webhook never failed:\n{}",
            up.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    up.stop();
    let logs = up.logs();
    for secret in [
        admin,
        viewer,
        "dashboard-client-secret-42",
        "T0P-SECRET-PATH",
        "hmac-secret-77",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

/// oidc-provider-mock on a free loopback port, with a sandbox viewer.
struct OidcProvider {
    url: String,
    child: std::process::Child,
}

impl OidcProvider {
    fn start(dir: &Path) -> OidcProvider {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.cache/venv/bin/oidc-provider-mock");
        assert!(
            bin.exists(),
            "oidc-provider-mock missing: run scripts/test-tools.sh"
        );
        let port = free_port();
        let log = std::fs::File::create(dir.join("oidc.log")).unwrap();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--user-claims"])
            .arg(r#"{"sub":"vic","email":"vic@example.com","groups":["sandbox-team"]}"#)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "oidc-provider-mock did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        OidcProvider { url, child }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless chromium driven through chromedriver (WebDriver over HTTP).
struct Browser {
    base: String,
    http: reqwest::Client,
    driver: std::process::Child,
}

impl Browser {
    async fn start(dir: &Path) -> Option<Browser> {
        let ok = |b: &str| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !ok("chromium") || !ok("chromedriver") {
            return None;
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let profile = dir.join("chromium-profile");
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", format!("--user-data-dir={}", profile.display())],
        }}}});
        let deadline = Instant::now() + Duration::from_secs(20);
        let session = loop {
            if let Ok(r) = http
                .post(format!("{base}/session"))
                .json(&caps)
                .send()
                .await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && let Some(id) = v["value"]["sessionId"].as_str()
            {
                break id.to_string();
            }
            assert!(Instant::now() < deadline, "chromedriver gave no session");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        Some(Browser {
            base: format!("{base}/session/{session}"),
            http,
            driver,
        })
    }

    async fn cmd(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let v: serde_json::Value = self
            .http
            .post(format!("{}/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v["value"].get("error").is_none(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd("url", serde_json::json!({"url": url})).await;
    }

    async fn url(&self) -> String {
        self.get("url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn source(&self) -> String {
        self.get("source")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn element(&self, css: &str) -> String {
        let e = self
            .cmd(
                "element",
                serde_json::json!({"using": "css selector", "value": css}),
            )
            .await;
        e.as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .unwrap()
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.cmd(
            &format!("element/{e}/value"),
            serde_json::json!({"text": text}),
        )
        .await;
    }

    /// Ends the session, which closes chromium.
    async fn quit(&self) {
        let _ = self.http.delete(&self.base).send().await;
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.cmd(&format!("element/{e}/click"), serde_json::json!({}))
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (closing chromium) even when the test failed
        // half-way: a plain blocking HTTP DELETE.
        use std::io::{Read, Write};
        if let Some(rest) = self.base.strip_prefix("http://")
            && let Some((host, path)) = rest.split_once('/')
            && let Ok(mut s) = std::net::TcpStream::connect(host)
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(
                s,
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
