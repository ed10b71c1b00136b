//! Signing people in to the dashboard: the OIDC authorization-code flow
//! with PKCE (S256), a `state` bound to the browser by a cookie (no login
//! CSRF), a `nonce` checked in the ID token, and a server-side session
//! whose id is the only thing the browser keeps (`HttpOnly; Secure;
//! SameSite=Lax`). The ID token is verified like any bearer token
//! ([`trailhound_runtime::auth`]): issuer, audience, signature, expiry.
//! The security layer sends browsers without a session here; the pages
//! then show only the signed-in person's scope.
//!
//! Enabled by `[auth] mode = "oidc"` with `public_url` (the dashboard's
//! external URL; the redirect URI is `<public_url>/auth/callback`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use trailhound_runtime::security::{SESSION_COOKIE, Security, cookie, random_id};

/// A login under way: the PKCE verifier, the nonce, when it started.
type Pending = (String, String, Instant);

/// Logins under way, by `state`.
static PENDING: LazyLock<Mutex<HashMap<String, Pending>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

const LOGIN_COOKIE: &str = "trailhound_login";
/// How long a started login may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Longest session, whatever the token's expiry.
const MAX_SESSION: Duration = Duration::from_secs(8 * 3600);

/// The sign-in routes (public: the security layer lets `/auth/*` through).
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/auth/login", axum::routing::get(login))
        .route("/auth/callback", axum::routing::get(callback))
        .route("/auth/logout", axum::routing::get(logout))
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
<body><h1>{t}</h1><p>{b}</p><p><a href=\"/auth/login\">Sign in</a></p></body></html>",
        t = crate::html::esc(title),
        b = crate::html::esc(body)
    );
    (status, Html(html)).into_response()
}

fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// The provider's endpoints, from its discovery document.
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
}

fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// The page of a sign-in this browser cannot finish as it is: 400, `why`.
fn failed(why: &str) -> Response {
    page(StatusCode::BAD_REQUEST, "Sign-in failed", why)
}

/// The page of a sign-in the identity provider did not complete: 502.
fn provider_failed(why: &str) -> Response {
    page(StatusCode::BAD_GATEWAY, "Sign-in failed", why)
}

/// [`provider`], or the page saying the provider is unreachable (with
/// `hint`), the failure logged.
async fn reach(issuer: &str, hint: &str) -> Result<Provider, Response> {
    provider(issuer).await.map_err(|e| {
        tracing::warn!(error = %e, "sign-in: the identity provider is unreachable");
        page(
            StatusCode::BAD_GATEWAY,
            "The identity provider is unreachable",
            hint,
        )
    })
}

async fn provider(issuer: &str) -> Result<Provider, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc: serde_json::Value = http()?
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("failed to fetch {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("failed to read {url}: {e}"))?;
    let field = |k: &str| {
        doc.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{url} has no {k}"))
    };
    Ok(Provider {
        authorization_endpoint: field("authorization_endpoint")?,
        token_endpoint: field("token_endpoint")?,
    })
}

struct Settings {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
    scopes: String,
}

fn settings(security: &Security) -> Option<Settings> {
    if !security.sign_in_enabled() {
        return None;
    }
    let c = security.auth.config();
    Some(Settings {
        issuer: c.issuer.clone()?,
        client_id: c
            .client_id
            .clone()
            .or_else(|| c.audience.first().cloned())?,
        client_secret: c
            .client_secret_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok())
            .or_else(|| {
                c.client_secret_file
                    .as_deref()
                    .and_then(|f| std::fs::read_to_string(f).ok())
                    .map(|s| s.trim().to_string())
            })
            .filter(|s| !s.is_empty()),
        redirect_uri: format!(
            "{}/auth/callback",
            c.public_url.as_deref()?.trim_end_matches('/')
        ),
        scopes: c.oidc_scopes.join(" "),
    })
}

fn b64std(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

async fn login() -> Response {
    let security = trailhound_runtime::security::installed();
    let Some(s) = settings(&security) else {
        return page(
            StatusCode::NOT_FOUND,
            "Sign-in is not configured",
            "Set [auth] mode = \"oidc\" and public_url, or send a bearer token.",
        );
    };
    let p = match reach(&s.issuer, "Try again in a moment.").await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (state, verifier, nonce) = (random_id(), random_id(), random_id());
    let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
    if let Ok(mut m) = PENDING.lock() {
        m.retain(|_, (_, _, t)| t.elapsed() < LOGIN_TTL);
        if m.len() > 10_000 {
            m.clear();
        }
        m.insert(state.clone(), (verifier, nonce.clone(), Instant::now()));
    }
    let mut url = match reqwest::Url::parse(&p.authorization_endpoint) {
        Ok(u) => u,
        Err(_) => {
            return page(
                StatusCode::BAD_GATEWAY,
                "The identity provider's discovery document is invalid",
                "authorization_endpoint is not a URL.",
            );
        }
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &s.client_id)
        .append_pair("redirect_uri", &s.redirect_uri)
        .append_pair("scope", &s.scopes)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    redirect(
        url.as_str(),
        &[format!(
            "{LOGIN_COOKIE}={state}; Path=/auth; HttpOnly; Secure; SameSite=Lax; Max-Age=600"
        )],
    )
}

#[derive(Debug, serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(headers: HeaderMap, Query(q): Query<CallbackQuery>) -> Response {
    let security = trailhound_runtime::security::installed();
    let Some(s) = settings(&security) else {
        return page(StatusCode::NOT_FOUND, "Sign-in is not configured", "");
    };
    if let Some(e) = &q.error {
        return page(
            StatusCode::FORBIDDEN,
            "Sign-in was refused",
            &format!("The identity provider answered {e}."),
        );
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return failed("code and state are required.");
    };
    // The state must be the one this browser started with.
    if cookie(&headers, LOGIN_COOKIE) != Some(state.as_str()) {
        return failed("This sign-in was not started in this browser.");
    }
    let Some((verifier, nonce, started)) = PENDING.lock().ok().and_then(|mut m| m.remove(&state))
    else {
        return failed("Unknown or used state.");
    };
    if started.elapsed() > LOGIN_TTL {
        return failed("The sign-in took too long.");
    }
    let p = match reach(&s.issuer, "").await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code),
        ("redirect_uri", s.redirect_uri.clone()),
        ("code_verifier", verifier),
    ];
    // A confidential client authenticates with HTTP Basic
    // (client_secret_basic, what Cognito and most providers expect); a
    // public one names itself in the body.
    let basic = s.client_secret.as_ref().map(|secret| {
        let enc = |v: &str| {
            let mut u = reqwest::Url::parse("http://x.invalid/").ok();
            if let Some(u) = u.as_mut() {
                u.query_pairs_mut().append_pair("v", v);
            }
            u.and_then(|u| u.query().map(|q| q.trim_start_matches("v=").to_string()))
                .unwrap_or_default()
        };
        b64std(format!("{}:{}", enc(&s.client_id), enc(secret)).as_bytes())
    });
    if basic.is_none() {
        form.push(("client_id", s.client_id.clone()));
    }
    let body = {
        let mut u = reqwest::Url::parse("http://form.invalid/").map_err(|e| e.to_string());
        if let Ok(u) = u.as_mut() {
            u.query_pairs_mut().extend_pairs(&form);
        }
        u.map(|u| u.query().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let token: serde_json::Value = match async {
        http()?
            .post(&p.token_endpoint)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(
                header::AUTHORIZATION,
                basic
                    .as_deref()
                    .map(|b| format!("Basic {b}"))
                    .unwrap_or_default(),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .error_for_status()
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }
    .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in: the code exchange failed");
            return provider_failed("The code exchange failed.");
        }
    };
    let Some(id_token) = token.get("id_token").and_then(|v| v.as_str()) else {
        return provider_failed("No ID token was returned.");
    };
    let principal = match security
        .auth
        .authenticate(Some(&format!("Bearer {id_token}")), None)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(reason = %e, "sign-in: ID token refused");
            return page(
                StatusCode::FORBIDDEN,
                "Sign-in failed",
                "The ID token was refused.",
            );
        }
    };
    // Verified above; the nonce ties it to this login.
    let claims: Option<serde_json::Value> = id_token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok());
    let token_nonce = claims
        .as_ref()
        .and_then(|c| c.get("nonce"))
        .and_then(|n| n.as_str());
    if token_nonce.is_some_and(|n| n != nonce) {
        return page(
            StatusCode::FORBIDDEN,
            "Sign-in failed",
            "The ID token's nonce does not match.",
        );
    }
    let Some(role) = principal.role else {
        return page(
            StatusCode::FORBIDDEN,
            "No access",
            &format!(
                "Signed in as {}, but no [[auth.grants]] gives you a role.",
                principal.display()
            ),
        );
    };
    let ttl = claims
        .as_ref()
        .and_then(|c| c.get("exp"))
        .and_then(|e| e.as_i64())
        .map(|exp| Duration::from_secs((exp - chrono::Utc::now().timestamp()).max(60) as u64))
        .unwrap_or(MAX_SESSION)
        .min(MAX_SESSION);
    tracing::info!(subject = %principal.display(), %role, "signed in to the dashboard");
    let id = security.start_session(principal, ttl);
    redirect(
        "/",
        &[
            format!(
                "{SESSION_COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
                ttl.as_secs()
            ),
            format!("{LOGIN_COOKIE}=; Path=/auth; HttpOnly; Secure; SameSite=Lax; Max-Age=0"),
        ],
    )
}

async fn logout(headers: HeaderMap) -> Response {
    let security: Arc<Security> = trailhound_runtime::security::installed();
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        security.end_session(id);
    }
    let mut r = page(
        StatusCode::OK,
        "Signed out",
        "Your dashboard session has ended.",
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
