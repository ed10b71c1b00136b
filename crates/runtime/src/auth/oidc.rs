//! OIDC tokens: JWT verification against the issuer's signing keys,
//! fetched (discovery, JWKS) and cached.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{AuthError, Authenticator, Principal, PrincipalKind};

/// The issuer's signing keys, cached; fetched again when a token names a
/// key id not in the cache (key rotation), at most every
/// [`JWKS_MIN_REFRESH`].
pub(super) struct Jwks {
    pub(super) keys: HashMap<String, jsonwebtoken::DecodingKey>,
    /// Keys without a `kid` (single-key issuers).
    pub(super) anonymous: Vec<jsonwebtoken::DecodingKey>,
    pub(super) fetched: Option<Instant>,
    pub(super) url: Option<String>,
}

pub(super) const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);

impl Authenticator {
    pub(super) async fn verify_jwt(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        use jsonwebtoken::{Algorithm, Validation};
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("not a JWT".into()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted (RS256 or ES256)",
                header.alg
            )));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let issuer = self.config.issuer.clone().unwrap_or_default();
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[issuer.as_str()]);
        v.validate_aud = false;
        v.validate_nbf = true;
        v.leeway = self.config.leeway.as_secs();
        v.set_required_spec_claims(&["exp", "iss"]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v)
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind as K;
                    AuthError::Invalid(
                        match e.kind() {
                            K::ExpiredSignature => "expired",
                            K::ImmatureSignature => "not valid yet (nbf)",
                            K::InvalidIssuer => "wrong issuer",
                            K::InvalidSignature => "bad signature",
                            K::MissingRequiredClaim(_) => "missing exp or iss",
                            _ => "rejected",
                        }
                        .to_string(),
                    )
                })?;
        let claims = data.claims;
        let str_claim = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let audiences: Vec<String> = match claims.get("aud") {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            // Cognito access tokens carry the app client in client_id.
            _ => str_claim("client_id").into_iter().collect(),
        };
        if !audiences.iter().any(|a| self.config.audience.contains(a)) {
            return Err(AuthError::Invalid("wrong audience".into()));
        }
        let subject = str_claim("sub").ok_or_else(|| AuthError::Invalid("no sub".into()))?;
        let name = str_claim("email")
            .or_else(|| str_claim("preferred_username"))
            .or_else(|| str_claim("cognito:username"))
            .or_else(|| str_claim("username"));
        let groups: Vec<String> = match claims.get(&self.config.groups_claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => s
                .split([',', ' '])
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let mut subjects = vec![subject.clone()];
        subjects.extend(name.clone());
        let (role, scope) = self.grants_for(&subjects, &groups);
        let exp = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok((
            Principal {
                subject,
                name,
                kind: PrincipalKind::User,
                role,
                scope,
            },
            exp,
        ))
    }

    /// The key `kid` names, fetching the JWKS when it is not cached.
    async fn key_for(&self, kid: Option<&str>) -> Result<jsonwebtoken::DecodingKey, AuthError> {
        let mut jwks = self.jwks.lock().await;
        // A token without a kid may use a set's only key; a set whose keys
        // carry no kid serves any kid (single-key issuers).
        let lookup = |j: &Jwks| match kid {
            Some(k) => j
                .keys
                .get(k)
                .cloned()
                .or_else(|| j.anonymous.first().cloned()),
            None => j.anonymous.first().cloned().or_else(|| {
                (j.keys.len() == 1)
                    .then(|| j.keys.values().next().cloned())
                    .flatten()
            }),
        };
        if let Some(k) = lookup(&jwks) {
            return Ok(k);
        }
        let may_refresh = jwks.fetched.is_none_or(|t| t.elapsed() >= JWKS_MIN_REFRESH);
        if may_refresh {
            self.refresh(&mut jwks).await?;
            if let Some(k) = lookup(&jwks) {
                return Ok(k);
            }
        }
        Err(AuthError::Invalid("unknown signing key".into()))
    }

    async fn refresh(&self, jwks: &mut Jwks) -> Result<(), AuthError> {
        jwks.fetched = Some(Instant::now());
        let url = match &jwks.url {
            Some(u) => u.clone(),
            None => {
                let issuer = self.config.issuer.clone().unwrap_or_default();
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc: serde_json::Value = self.get_json(&discovery).await?;
                let u = doc
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        AuthError::Unavailable(format!("{discovery} names no jwks_uri"))
                    })?
                    .to_string();
                jwks.url = Some(u.clone());
                u
            }
        };
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(self.get_json(&url).await?)
            .map_err(|e| AuthError::Unavailable(format!("{url} is not a JWK set: {e}")))?;
        let mut keys = HashMap::new();
        let mut anonymous = Vec::new();
        for jwk in &set.keys {
            let Ok(key) = jsonwebtoken::DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.insert(kid.clone(), key);
                }
                None => anonymous.push(key),
            }
        }
        tracing::info!(
            url,
            keys = keys.len() + anonymous.len(),
            "fetched the issuer's signing keys"
        );
        jwks.keys = keys;
        jwks.anonymous = anonymous;
        Ok(())
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, AuthError> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("failed to fetch {url}: {e}")))?;
        if !r.status().is_success() {
            return Err(AuthError::Unavailable(format!(
                "failed to fetch {url}: HTTP {}",
                r.status()
            )));
        }
        r.json()
            .await
            .map_err(|e| AuthError::Unavailable(format!("failed to read {url}: {e}")))
    }
}
