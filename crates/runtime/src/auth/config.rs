//! The `[auth]` section: the mode, the OIDC issuer, grants and tokens, and
//! its validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trailhound_core::ScopeRule;

use super::Role;

/// How callers authenticate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Nobody is asked: every caller is an anonymous admin. Accepted only
    /// when every listener is on loopback (or with `--insecure`).
    #[default]
    None,
    /// OIDC bearer tokens (plus static tokens and service certificates).
    Oidc,
    /// Static API tokens and service certificates only.
    Tokens,
}

/// One `[[auth.grants]]` entry: who (an OIDC group, or a subject — a
/// token's `sub`, `email` or username, or a client certificate's name)
/// gets which role over which part of the organization.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub group: Option<String>,
    pub subject: Option<String>,
    pub role: Role,
    #[serde(default)]
    pub ous: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub environments: Vec<trailhound_core::Environment>,
}

impl Grant {
    pub(super) fn rule(&self) -> ScopeRule {
        ScopeRule {
            ous: self.ous.clone(),
            accounts: self.accounts.clone(),
            environments: self.environments.clone(),
        }
    }
}

/// One `[[auth.tokens]]` entry: a static API token, by its SHA-256 (hex).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenGrant {
    pub name: String,
    pub sha256: String,
    pub role: Role,
    #[serde(default)]
    pub ous: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub environments: Vec<trailhound_core::Environment>,
}

/// The `[auth]` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The OIDC issuer (`iss`), e.g.
    /// `https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC`.
    pub issuer: Option<String>,
    /// Accepted audiences: the token's `aud`, or for Cognito access tokens
    /// (which carry none) its `client_id`.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// The JWKS URL; default: `jwks_uri` from the issuer's discovery
    /// document.
    pub jwks_url: Option<String>,
    /// A CA bundle (PEM) trusted for the discovery document and the JWKS
    /// besides the system's roots: for an issuer on a private PKI.
    pub jwks_ca: Option<PathBuf>,
    /// The claim listing the caller's groups (`cognito:groups` for
    /// Cognito).
    pub groups_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The audit log (JSON lines), relative to the data dir.
    pub audit_log: PathBuf,
    pub grants: Vec<Grant>,
    pub tokens: Vec<TokenGrant>,
    /// Client-certificate names (DNS or URI SANs) that identify services,
    /// each as the service it is. Default: the six service names, as
    /// `trailhound certs` issues them.
    pub services: Vec<String>,
    /// For the dashboard's sign-in (authorization code + PKCE): the OIDC
    /// client id (default: the first audience) …
    pub client_id: Option<String>,
    /// … its secret, from this environment variable (none for a public
    /// client) …
    pub client_secret_env: Option<String>,
    /// … or from this file (a mounted secret); sent with HTTP Basic
    /// (`client_secret_basic`).
    pub client_secret_file: Option<PathBuf>,
    /// … and the dashboard's external URL, for the redirect URI
    /// (`<public_url>/auth/callback`).
    pub public_url: Option<String>,
    /// Scopes the dashboard asks for.
    pub oidc_scopes: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            issuer: None,
            audience: Vec::new(),
            jwks_url: None,
            jwks_ca: None,
            groups_claim: "groups".into(),
            leeway: Duration::from_secs(60),
            audit_log: PathBuf::from("audit.jsonl"),
            grants: Vec::new(),
            tokens: Vec::new(),
            services: SERVICE_NAMES.iter().map(|s| s.to_string()).collect(),
            client_id: None,
            client_secret_env: None,
            client_secret_file: None,
            public_url: None,
            oidc_scopes: vec!["openid".into(), "email".into(), "profile".into()],
        }
    }
}

/// The six services, as `trailhound certs` names their certificates.
pub const SERVICE_NAMES: [&str; 6] = ["ingest", "enrich", "detect", "insights", "notify", "health"];

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl AuthConfig {
    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        if self.mode == AuthMode::Oidc {
            if self.issuer.as_deref().is_none_or(str::is_empty) {
                return Err("[auth] mode = \"oidc\" needs issuer".into());
            }
            if self.audience.is_empty() {
                return Err("[auth] mode = \"oidc\" needs audience".into());
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let ok = t.sha256.len() == 64 && t.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(format!(
                    "[[auth.tokens]] #{} ({}): sha256 must be 64 hex digits (sha256sum of the token)",
                    i + 1,
                    t.name
                ));
            }
        }
        for (i, g) in self.grants.iter().enumerate() {
            if g.group.is_some() == g.subject.is_some() {
                return Err(format!(
                    "[[auth.grants]] #{}: set exactly one of group or subject",
                    i + 1
                ));
            }
        }
        Ok(())
    }
}
