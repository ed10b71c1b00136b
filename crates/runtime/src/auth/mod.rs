//! Who is calling, and what they may do.
//!
//! Callers are identified three ways: humans and tools by an OIDC access or
//! ID token (`authorization: Bearer …`, verified against the issuer's JWKS:
//! RS256/ES256 signature, issuer, audience, expiry, not-before), automation
//! by a static API token (only its SHA-256 is configured), and services by
//! the client certificate their mTLS handshake verified (its SAN names the
//! service). Each identity maps to a role (viewer < analyst < operator <
//! admin) and a [`Scope`] through `[[auth.grants]]` and `[[auth.tokens]]`;
//! a caller's role is the highest of its grants and its scope their union.
//!
//! What each method needs is one table ([`requirement`]); methods it does
//! not name need admin, so a new RPC is closed until someone opens it.
//! Service-internal calls (the pipeline's hops) need a service identity or
//! admin; `Notify` and `Analyze` a service identity only, so forged alerts
//! cannot spend the alert budget. With `mode = "none"` (loopback only, see
//! [`crate::security`]) every caller is an anonymous admin.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trailhound_core::{Scope, ScopeRule};

use crate::tls::PeerInfo;

mod config;
mod oidc;
mod requirements;

pub use config::{AuthConfig, AuthMode, Grant, SERVICE_NAMES, TokenGrant};
use oidc::Jwks;
pub use requirements::{Requirement, requirement};

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(Arc::from(s.into()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// What a caller may do; each includes the ones before it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads anomalies, insights, series, accounts, deliveries, the
    /// dashboard and Ask, within its scope.
    #[default]
    Viewer,
    /// Also triage actions.
    Analyst,
    /// Also detector management and ControlService.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a caller was identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// Auth is off.
    Anonymous,
    /// An OIDC token.
    User,
    /// A static API token.
    Token,
    /// A service's client certificate.
    Service,
    /// Another client certificate (a tool), granted by subject.
    Certificate,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The token's `sub`, the API token's name, or the certificate's name.
    pub subject: String,
    /// A readable name (e-mail, username) when the token has one.
    pub name: Option<String>,
    pub kind: PrincipalKind,
    /// None: authenticated but granted nothing.
    pub role: Option<Role>,
    pub scope: Scope,
}

impl Principal {
    /// Auth off: anyone may do anything.
    pub fn anonymous() -> Self {
        Self {
            subject: "anonymous".into(),
            name: None,
            kind: PrincipalKind::Anonymous,
            role: Some(Role::Admin),
            scope: Scope::all(),
        }
    }

    fn service(name: &str) -> Self {
        Self {
            subject: name.to_string(),
            name: None,
            kind: PrincipalKind::Service,
            role: None,
            scope: Scope::all(),
        }
    }

    pub fn is_service(&self) -> bool {
        self.kind == PrincipalKind::Service
    }

    /// Whether this caller meets `req`; on refusal, why (naming the role
    /// needed).
    pub fn check(&self, req: Requirement) -> Result<(), String> {
        let has = |r: Role| self.role.is_some_and(|mine| mine >= r);
        let you = || match (self.kind, self.role) {
            (PrincipalKind::Service, _) => format!("you are the service {}", self.subject),
            (_, Some(r)) => format!("you have {r}"),
            (_, None) => "you have no role".to_string(),
        };
        match req {
            Requirement::Public => Ok(()),
            Requirement::Authenticated => Ok(()),
            Requirement::Role(r) => {
                // Services read what the pipeline needs (Stats, streams,
                // anomalies for the dashboard) but manage nothing.
                if has(r) || (self.is_service() && r == Role::Viewer) {
                    Ok(())
                } else {
                    Err(format!("this requires the {r} role ({})", you()))
                }
            }
            Requirement::WholeOrg(r) => {
                self.check(Requirement::Role(r))?;
                if self.is_service() || self.scope.is_unrestricted() {
                    Ok(())
                } else {
                    Err(format!(
                        "this reports on the whole organization (counters over every account); it requires the {r} role without an account scope ({}, scoped to some accounts)",
                        you()
                    ))
                }
            }
            Requirement::ServiceOrAdmin => {
                if self.is_service() || has(Role::Admin) {
                    Ok(())
                } else {
                    Err(format!(
                        "this is a service-internal call: it requires a service identity (mTLS client certificate) or the admin role ({})",
                        you()
                    ))
                }
            }
            Requirement::Service => {
                if self.is_service() || self.kind == PrincipalKind::Anonymous {
                    Ok(())
                } else {
                    Err(format!(
                        "only trailhound services may call this (a service identity from an mTLS client certificate); {}",
                        you()
                    ))
                }
            }
        }
    }

    /// The caller for log lines: one plain line (token claims are the
    /// issuer's, certificate names the CA's, neither ours).
    pub fn display(&self) -> String {
        let s = match &self.name {
            Some(n) if *n != self.subject => format!("{n} ({})", self.subject),
            _ => self.subject.clone(),
        };
        trailhound_core::text::clean_line(&s)
    }
}

/// Why a caller was not identified.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send authorization: Bearer <token> or a client certificate")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token issuer unreachable: {0}")]
    Unavailable(String),
}

/// Verifies credentials and maps them to principals.
pub struct Authenticator {
    config: AuthConfig,
    tokens: Vec<([u8; 32], TokenGrant)>,
    jwks: tokio::sync::Mutex<Jwks>,
    http: reqwest::Client,
    /// Principals of recently verified tokens (by token hash), so a busy
    /// client costs one signature check per token, not one per call.
    verified: Mutex<HashMap<[u8; 32], (Principal, u64)>>,
    /// The digest of this process's own token: its in-process clients
    /// (health inside `trailhound up`) identify as a service with it when
    /// they have no client certificate. Random per process, never written.
    internal: Option<[u8; 32]>,
}

trailhound_core::debug_fields!(Authenticator {
    mode: config.mode,
    issuer: config.issuer
});

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn hex_to_bytes(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Constant-time equality of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Result<Self, String> {
        config.validate()?;
        let tokens = config
            .tokens
            .iter()
            .map(|t| {
                hex_to_bytes(&t.sha256.to_ascii_lowercase())
                    .map(|h| (h, t.clone()))
                    .ok_or_else(|| format!("[[auth.tokens]] {}: sha256 is not hex", t.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The issuer is verified against the system's roots (the platform
        // verifier reads SSL_CERT_FILE or the distribution's bundle; the
        // images copy Debian's ca-certificates and set SSL_CERT_FILE) plus
        // `jwks_ca`.
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(path) = &config.jwks_ca {
            let pem = std::fs::read(path)
                .map_err(|e| format!("[auth] jwks_ca: failed to read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!(
                    "[auth] jwks_ca: {} is not a PEM bundle: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                return Err(format!(
                    "[auth] jwks_ca: {} holds no certificate",
                    path.display()
                ));
            }
            http = http.tls_certs_merge(certs);
        }
        let http = http
            .build()
            .map_err(|e| format!("failed to build the JWKS client: {e}"))?;
        Ok(Self {
            jwks: tokio::sync::Mutex::new(Jwks {
                keys: HashMap::new(),
                anonymous: Vec::new(),
                fetched: None,
                url: config.jwks_url.clone(),
            }),
            config,
            tokens,
            http,
            verified: Mutex::new(HashMap::new()),
            internal: None,
        })
    }

    /// Accepts `token` as this process's own service identity.
    pub fn with_internal_token(mut self, token: &Secret) -> Self {
        self.internal = Some(sha256(token.expose()));
        self
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn is_enabled(&self) -> bool {
        self.config.mode != AuthMode::None
    }

    /// Identifies the caller from its `authorization` header and its
    /// connection. A bearer token wins over a certificate: the certificate
    /// may be a shared tool's, the token names the person.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<&PeerInfo>,
    ) -> Result<Principal, AuthError> {
        let bearer = authorization.and_then(|a| {
            let (scheme, rest) = a.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
        if self.config.mode == AuthMode::None {
            // Still tell services apart, so service-only methods hold when
            // certificates are there, and this process's own clients spend
            // the service budget, not their address's anonymous one.
            if let Some(p) = peer.and_then(|p| self.service_of(p)) {
                return Ok(p);
            }
            if let Some(token) = bearer
                && self
                    .internal
                    .as_ref()
                    .is_some_and(|h| same(h, &sha256(token)))
            {
                // Everyone is an admin with auth off; so is this process.
                return Ok(Principal {
                    role: Some(Role::Admin),
                    ..Principal::service("trailhound")
                });
            }
            return Ok(Principal::anonymous());
        }
        if let Some(token) = bearer.filter(|t| !t.is_empty()) {
            return self.verify_bearer(token).await;
        }
        if let Some(peer) = peer {
            if let Some(p) = self.service_of(peer) {
                return Ok(p);
            }
            // A tool's certificate authenticates the connection; it names
            // a caller only when a grant gives it a role.
            if let Some(name) = peer.certificate_names.first()
                && let (Some(role), scope) = self.grants_for(std::slice::from_ref(name), &[])
            {
                return Ok(Principal {
                    subject: name.clone(),
                    name: None,
                    kind: PrincipalKind::Certificate,
                    role: Some(role),
                    scope,
                });
            }
        }
        Err(AuthError::Missing)
    }

    fn service_of(&self, peer: &PeerInfo) -> Option<Principal> {
        peer.certificate_names
            .iter()
            .find(|n| self.config.services.iter().any(|s| s == *n))
            .map(|n| Principal::service(n))
    }

    /// The highest role and the union of scopes of the grants matching
    /// these subjects or groups.
    fn grants_for(&self, subjects: &[String], groups: &[String]) -> (Option<Role>, Scope) {
        let matching: Vec<&Grant> = self
            .config
            .grants
            .iter()
            .filter(|g| {
                g.group.as_ref().is_some_and(|x| groups.contains(x))
                    || g.subject.as_ref().is_some_and(|x| subjects.contains(x))
            })
            .collect();
        let role = matching.iter().map(|g| g.role).max();
        let scope = Scope::union(matching.iter().map(|g| g.rule()));
        (role, scope)
    }

    async fn verify_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = sha256(token);
        if self.internal.as_ref().is_some_and(|h| same(h, &digest)) {
            return Ok(Principal::service("trailhound"));
        }
        if let Some((_, t)) = self.tokens.iter().find(|(h, _)| same(h, &digest)) {
            return Ok(Principal {
                subject: t.name.clone(),
                name: None,
                kind: PrincipalKind::Token,
                role: Some(t.role),
                scope: Scope::union([ScopeRule {
                    ous: t.ous.clone(),
                    accounts: t.accounts.clone(),
                    environments: t.environments.clone(),
                }]),
            });
        }
        if self.config.mode != AuthMode::Oidc {
            return Err(AuthError::Invalid("unknown API token".into()));
        }
        let now = now_secs();
        if let Ok(cache) = self.verified.lock()
            && let Some((p, exp)) = cache.get(&digest)
            && *exp > now
        {
            return Ok(p.clone());
        }
        let (principal, exp) = self.verify_jwt(token).await?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() > 10_000 {
                cache.retain(|_, (_, e)| *e > now);
                if cache.len() > 10_000 {
                    cache.clear();
                }
            }
            cache.insert(digest, (principal.clone(), exp));
        }
        Ok(principal)
    }
}

/// The hex SHA-256 of a token, as `[[auth.tokens]] sha256` wants it.
pub fn token_sha256(token: &str) -> String {
    sha256(token).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn refusals_name_the_role_needed() {
        let viewer = Principal {
            subject: "u".into(),
            name: None,
            kind: PrincipalKind::User,
            role: Some(super::Role::Viewer),
            scope: Scope::all(),
        };
        let e = viewer
            .check(Requirement::Role(super::Role::Operator))
            .unwrap_err();
        assert!(e.contains("operator") && e.contains("viewer"), "{e}");
        let admin = Principal {
            role: Some(super::Role::Admin),
            ..viewer.clone()
        };
        assert!(admin.check(Requirement::ServiceOrAdmin).is_ok());
        // Not even an admin forges alerts.
        assert!(admin.check(Requirement::Service).is_err());
        let svc = Principal::service("detect");
        assert!(svc.check(Requirement::Service).is_ok());
        assert!(svc.check(Requirement::Role(super::Role::Viewer)).is_ok());
        assert!(svc.check(Requirement::Role(super::Role::Operator)).is_err());
        // Counters over every account are for callers who see every account.
        assert_eq!(
            requirement("/trailhound.insights.v1.InsightsService/GetStats"),
            Requirement::WholeOrg(super::Role::Viewer)
        );
        assert!(
            viewer
                .check(Requirement::WholeOrg(super::Role::Viewer))
                .is_ok()
        );
        assert!(
            svc.check(Requirement::WholeOrg(super::Role::Viewer))
                .is_ok()
        );
        let scoped = Principal {
            scope: Scope::union([ScopeRule {
                ous: vec!["Root/Sandbox".into()],
                ..Default::default()
            }]),
            ..viewer.clone()
        };
        assert!(!scoped.scope.is_unrestricted());
        assert!(scoped.check(Requirement::Role(super::Role::Viewer)).is_ok());
        let e = scoped
            .check(Requirement::WholeOrg(super::Role::Viewer))
            .unwrap_err();
        assert!(e.contains("whole organization"), "{e}");
    }

    #[tokio::test]
    async fn static_tokens_by_hash_and_service_certificates() {
        let config = AuthConfig {
            mode: AuthMode::Tokens,
            tokens: vec![TokenGrant {
                name: "siem".into(),
                sha256: token_sha256("s3cret"),
                role: super::Role::Viewer,
                ous: vec!["Root/Sandbox".into()],
                ..Default::default()
            }],
            grants: vec![Grant {
                subject: Some("client".into()),
                role: super::Role::Admin,
                ..Default::default()
            }],
            ..Default::default()
        };
        let a = Authenticator::new(config).unwrap();
        let p = a.authenticate(Some("Bearer s3cret"), None).await.unwrap();
        assert_eq!(p.kind, PrincipalKind::Token);
        assert_eq!(p.role, Some(super::Role::Viewer));
        assert!(!p.scope.is_unrestricted());
        assert!(matches!(
            a.authenticate(Some("Bearer nope"), None).await,
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            a.authenticate(None, None).await,
            Err(AuthError::Missing)
        ));
        let peer = |n: &str| PeerInfo {
            remote: None,
            certificate_names: Arc::from(vec![n.to_string()]),
        };
        let p = a.authenticate(None, Some(&peer("detect"))).await.unwrap();
        assert!(p.is_service());
        let p = a.authenticate(None, Some(&peer("client"))).await.unwrap();
        assert_eq!(
            (p.kind, p.role),
            (PrincipalKind::Certificate, Some(super::Role::Admin))
        );
        assert!(matches!(
            a.authenticate(None, Some(&peer("stranger"))).await,
            Err(AuthError::Missing)
        ));
        assert!(
            format!("{:?}", Secret::new("s3cret"))
                .find("s3cret")
                .is_none()
        );
    }

    /// URL-safe base64 without padding, for the JWK's coordinates.
    fn b64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// A JWKS served over https by a server whose certificate comes from a
    /// private CA: verified with `jwks_ca` naming that CA, refused without
    /// it (the system's roots do not know it).
    #[tokio::test]
    async fn jwks_over_https_from_a_private_ca() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();

        // The issuer's signing key and its JWKS.
        let signing = KeyPair::generate().unwrap();
        let raw = signing.public_key_raw().to_vec();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]),
        }]})
        .to_string();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, jwks) = (acceptor.clone(), jwks.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                        jwks.len()
                    );
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });

        let now = now_secs();
        let claims = serde_json::json!({
            "iss": "https://issuer.test", "aud": "trailhound", "sub": "u-1",
            "exp": now + 600, "iat": now, "groups": ["secops"],
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(signing.serialize_pem().as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let config = |jwks_ca: Option<PathBuf>| AuthConfig {
            mode: AuthMode::Oidc,
            issuer: Some("https://issuer.test".into()),
            audience: vec!["trailhound".into()],
            jwks_url: Some(format!("https://localhost:{port}/jwks")),
            jwks_ca,
            grants: vec![Grant {
                group: Some("secops".into()),
                role: super::Role::Admin,
                ..Default::default()
            }],
            ..Default::default()
        };
        let bearer = format!("Bearer {token}");

        let trusting = Authenticator::new(config(Some(ca_file))).unwrap();
        let p = trusting.authenticate(Some(&bearer), None).await.unwrap();
        assert_eq!(
            (p.subject.as_str(), p.role),
            ("u-1", Some(super::Role::Admin))
        );

        let system_roots_only = Authenticator::new(config(None)).unwrap();
        match system_roots_only.authenticate(Some(&bearer), None).await {
            Err(AuthError::Unavailable(e)) => assert!(e.contains("/jwks"), "{e}"),
            other => panic!("a JWKS from an unknown CA was trusted: {other:?}"),
        }

        let missing = AuthConfig {
            jwks_ca: Some(dir.path().join("nope.pem")),
            ..config(None)
        };
        let e = Authenticator::new(missing).unwrap_err();
        assert!(e.contains("jwks_ca"), "{e}");
    }
}
