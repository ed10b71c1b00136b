//! Every request's way in: who is calling ([`crate::auth`]), whether they
//! may ([`crate::auth::requirement`]), whether they are over their limits,
//! and the audit record of what happened. One [`Security`] per process,
//! shared by all the servers it runs (so `trailhound up` limits a caller
//! across the six ports, not per port), applied by the server bootstrap as
//! a tower layer in front of every route: gRPC and the HTTP pages alike.
//!
//! The caller's [`Principal`](crate::auth::Principal) travels to the
//! handlers in the request's extensions; handlers read its scope with
//! [`principal`] and filter the data they read by it.
//!
//! Defaults stay easy and safe: with no `[tls]` and no `[auth]`, everything
//! works on loopback; binding any other address without both is refused at
//! start-up with the fix named, unless `--insecure` (then a warning every
//! minute, and health shows it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::auth::{AuthConfig, Authenticator, Secret};
use crate::tls::{Tls, TlsConfig};

mod audit;
mod caller;
mod layer;
mod limits;
mod sessions;

pub use audit::AuditRecord;
pub use caller::{ON_BEHALF_SCOPE, on_behalf, principal, scope_of, scoped};
pub use layer::{SecurityLayer, SecurityService};
use sessions::Session;
pub use sessions::{SESSION_COOKIE, cookie};

/// The `[limits]` section: per caller, per process.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained requests per second per caller (person or token).
    pub requests_per_second: f64,
    /// Requests a caller may make at once above the sustained rate.
    pub burst: u32,
    /// Streams (Watch*, PushEvents) open at once per caller.
    pub streams: u32,
    /// The same for each service identity (the pipeline's own hops).
    pub service_requests_per_second: f64,
    pub service_burst: u32,
    pub service_streams: u32,
    /// Largest decoded gRPC message any service accepts, in bytes.
    pub max_message_size: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 20.0,
            burst: 100,
            streams: 8,
            service_requests_per_second: 2000.0,
            service_burst: 4000,
            service_streams: 64,
            max_message_size: 16 << 20,
        }
    }
}

/// Why start-up was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    File(#[from] crate::config::ConfigError),
    #[error("failed to open the audit log {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
}

/// The process's security: TLS, authentication, limits, audit.
pub struct Security {
    pub tls: Option<Arc<Tls>>,
    pub auth: Arc<Authenticator>,
    pub limits: LimitsConfig,
    pub insecure: bool,
    audit: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    audit_path: Option<PathBuf>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    streams: Mutex<HashMap<String, u32>>,
    denied: AtomicU64,
    rate_limited: AtomicU64,
    insecure_reason: RwLock<Option<String>>,
    warning_started: AtomicBool,
    sessions: Mutex<HashMap<String, Session>>,
    internal_token: Secret,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth)
            .field("insecure", &self.insecure)
            .finish()
    }
}

static INSTALLED: RwLock<Option<Arc<Security>>> = RwLock::new(None);

/// Makes `security` the process's: servers started afterwards use it.
pub fn install(security: Arc<Security>) {
    if let Ok(mut g) = INSTALLED.write() {
        *g = Some(security);
    }
}

/// The installed security, or the default (no TLS, auth off).
pub fn installed() -> Arc<Security> {
    if let Some(s) = INSTALLED.read().ok().and_then(|g| g.clone()) {
        return s;
    }
    let s = Arc::new(Security::open_default());
    install(s.clone());
    s
}

/// `stats` with the process's security figures (denied and rate-limited
/// requests, insecure listening): what every `Stats` RPC answers.
pub fn with_figures(
    mut stats: trailhound_proto::common::v1::ServiceStats,
) -> trailhound_proto::common::v1::ServiceStats {
    installed().decorate(&mut stats);
    stats
}

/// The largest decoded message the process's services accept.
pub fn max_message_size() -> usize {
    installed().limits.max_message_size
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Security {
    fn open_default() -> Self {
        Self::new(
            None,
            AuthConfig::default(),
            LimitsConfig::default(),
            false,
            None,
        )
        .unwrap_or_else(|_| unreachable_default())
    }

    fn new(
        tls: Option<Arc<Tls>>,
        auth: AuthConfig,
        limits: LimitsConfig,
        insecure: bool,
        audit_path: Option<PathBuf>,
    ) -> Result<Self, SecurityError> {
        let audit = match &audit_path {
            Some(p) => {
                let audit_error = |source| SecurityError::Audit {
                    path: p.display().to_string(),
                    source,
                };
                // Who did what to which account: private like the stores.
                crate::private::parent(p).map_err(audit_error)?;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(audit_error)?;
                crate::private::file(p).map_err(audit_error)?;
                Some(Mutex::new(std::io::BufWriter::new(f)))
            }
            None => None,
        };
        let internal_token = Secret::new(random_id());
        Ok(Self {
            tls,
            auth: Arc::new(
                Authenticator::new(auth)
                    .map_err(SecurityError::Config)?
                    .with_internal_token(&internal_token),
            ),
            internal_token,
            limits,
            insecure,
            audit,
            audit_path,
            buckets: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            denied: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            insecure_reason: RwLock::new(None),
            warning_started: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Reads `[tls]`, `[auth]` and `[limits]` from the config file; the
    /// audit log goes under `data_dir` when auth is on.
    pub fn from_file(
        config: Option<&std::path::Path>,
        data_dir: &std::path::Path,
        insecure: bool,
    ) -> Result<Self, SecurityError> {
        let tls_cfg: TlsConfig = crate::config::load_section(config, "tls")?;
        let auth: AuthConfig = crate::config::load_section(config, "auth")?;
        let limits: LimitsConfig = crate::config::load_section(config, "limits")?;
        Self::from_parts(&tls_cfg, auth, limits, data_dir, insecure)
    }

    /// [`Security::from_file`] for a process started with `common`: its
    /// `--tls-cert` / `--tls-key` over the file's `[tls]`.
    pub fn from_args(common: &crate::CommonArgs) -> Result<Self, SecurityError> {
        let config = common.config.as_deref();
        let auth: AuthConfig = crate::config::load_section(config, "auth")?;
        let limits: LimitsConfig = crate::config::load_section(config, "limits")?;
        Self::from_parts(
            &common.tls_config()?,
            auth,
            limits,
            &common.data_dir,
            common.insecure,
        )
    }

    /// The same from sections already read.
    pub fn from_parts(
        tls_cfg: &TlsConfig,
        auth: AuthConfig,
        limits: LimitsConfig,
        data_dir: &std::path::Path,
        insecure: bool,
    ) -> Result<Self, SecurityError> {
        if limits.max_message_size < 1024 {
            return Err(SecurityError::Config(
                "[limits] max_message_size: at least 1024 bytes".into(),
            ));
        }
        let tls = Tls::load(tls_cfg)?;
        let audit_path = (auth.mode != crate::auth::AuthMode::None).then(|| {
            if auth.audit_log.is_absolute() {
                auth.audit_log.clone()
            } else {
                data_dir.join(&auth.audit_log)
            }
        });
        Self::new(tls, auth, limits, insecure, audit_path)
    }

    /// What this process's own clients present: its TLS (with the client
    /// certificate for mTLS) or, without a client certificate, its
    /// internal service token.
    pub fn client_security(&self) -> crate::client::ClientSecurity {
        let has_identity = self.tls.as_ref().is_some_and(|t| t.serves_tls());
        // Sent with auth off too: in-process hops then spend the service
        // budget rather than the anonymous one of their loopback address.
        crate::client::ClientSecurity {
            tls: self.tls.clone(),
            token: (!has_identity).then(|| self.internal_token.clone()),
        }
    }

    /// Refuses `[auth]` in a service run as its own process without mTLS.
    ///
    /// Services prove who they are to each other only with client
    /// certificates (a process's internal token is known to that process
    /// alone), so without them every hop between separate processes would
    /// be refused at run time. Failing at start-up names the fix instead.
    pub fn check_service_identity(&self, service: &str) -> Result<(), SecurityError> {
        if !self.auth.is_enabled() {
            return Ok(());
        }
        let missing: Vec<&str> = match &self.tls {
            None => vec!["cert", "key", "ca", "client_ca"],
            Some(t) => {
                let c = t.config();
                [
                    ("cert", c.cert.is_some()),
                    ("key", c.key.is_some()),
                    ("ca", c.ca.is_some()),
                    ("client_ca", c.client_ca.is_some()),
                ]
                .into_iter()
                .filter(|(_, set)| !set)
                .map(|(k, _)| k)
                .collect()
            }
        };
        if missing.is_empty() {
            return Ok(());
        }
        Err(SecurityError::Config(format!(
            "[auth] is on but {service} runs as its own process without mTLS ([tls] {} not set): services prove who they are to each other only with client certificates, so its calls to the other services, and theirs to it, would be refused. Set [tls] cert, key, ca and client_ca for every service (`trailhound certs --out certs` writes a development CA and a certificate per service; see the README's Security section), or run all six in one process with `trailhound up`",
            missing.join(", ")
        )))
    }

    /// Where the audit log is, when auth is on.
    pub fn audit_path(&self) -> Option<&std::path::Path> {
        self.audit_path.as_deref()
    }

    /// Refuses a listener on a non-loopback address unless TLS and auth are
    /// both configured (or `--insecure`, which warns every minute).
    pub fn check_bind(&self, addr: SocketAddr, what: &str) -> Result<(), SecurityError> {
        if is_loopback(&addr) {
            return Ok(());
        }
        let tls = self.tls.as_ref().is_some_and(|t| t.serves_tls());
        let auth = self.auth.is_enabled();
        if tls && auth {
            return Ok(());
        }
        let missing = match (tls, auth) {
            (false, false) => "TLS and authentication",
            (false, true) => "TLS",
            _ => "authentication",
        };
        let reason =
            format!("{what} listens on {addr}, reachable from other machines, without {missing}");
        if !self.insecure {
            return Err(SecurityError::Config(format!(
                "{reason}: configure [tls] cert/key (and client_ca for mTLS; `trailhound certs --out certs` writes a development CA) and [auth] mode = \"oidc\" or \"tokens\" (see the README's Security section), listen on 127.0.0.1, or pass --insecure to accept the risk"
            )));
        }
        if let Ok(mut r) = self.insecure_reason.write() {
            *r = Some(format!("insecure: {reason} (--insecure)"));
        }
        if !self.warning_started.swap(true, Ordering::SeqCst) {
            let reason = reason.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    tracing::warn!(
                        "{reason}: anyone who can reach it can read every account's anomalies and pull the pipeline's levers (--insecure)"
                    );
                }
            });
        }
        Ok(())
    }

    /// Why this process runs insecurely, if it does (shown by health).
    pub fn insecure_reason(&self) -> Option<String> {
        self.insecure_reason.read().ok().and_then(|r| r.clone())
    }

    /// Requests refused as unauthenticated or not permitted.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Requests refused for a caller's limits.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Adds the security figures to a service's stats.
    pub fn decorate(&self, stats: &mut trailhound_proto::common::v1::ServiceStats) {
        stats.denied_requests = self.denied();
        stats.rate_limited_requests = self.rate_limited();
        stats.insecure = self.insecure_reason().unwrap_or_default();
    }
}

fn unreachable_default() -> Security {
    // AuthConfig::default() always validates; this only satisfies types.
    Security {
        tls: None,
        auth: Arc::new(match Authenticator::new(AuthConfig::default()) {
            Ok(a) => a,
            Err(_) => std::process::abort(),
        }),
        limits: LimitsConfig::default(),
        insecure: false,
        audit: None,
        audit_path: None,
        buckets: Mutex::new(HashMap::new()),
        streams: Mutex::new(HashMap::new()),
        denied: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        insecure_reason: RwLock::new(None),
        warning_started: AtomicBool::new(false),
        sessions: Mutex::new(HashMap::new()),
        internal_token: Secret::new(random_id()),
    }
}

/// 128 random bits, hex: session ids, PKCE verifiers, states.
pub fn random_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `Secret` type, re-exported for client flags.
pub type Token = Secret;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::tls::PeerInfo;
    use tower::{Service, ServiceExt};

    fn request(path: &str, from: &str, token: Option<&str>) -> http::Request<tonic::body::Body> {
        let mut req = http::Request::builder()
            .uri(format!("http://x{path}"))
            .header(http::header::CONTENT_TYPE, "application/grpc");
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut req = req.body(tonic::body::Body::empty()).unwrap();
        req.extensions_mut().insert(PeerInfo {
            remote: Some(from.parse().unwrap()),
            certificate_names: Arc::from(Vec::<String>::new()),
        });
        req
    }

    /// With auth off, callers are anonymous: they are limited by their
    /// address, one hammering client is refused while another is served,
    /// and the pipeline's hops have a budget of their own.
    #[tokio::test]
    async fn anonymous_callers_are_limited_by_their_address() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LimitsConfig {
            requests_per_second: 0.001,
            burst: 3,
            service_requests_per_second: 0.001,
            service_burst: 5,
            ..Default::default()
        };
        let security = Arc::new(
            Security::from_parts(
                &TlsConfig::default(),
                AuthConfig::default(),
                limits,
                dir.path(),
                false,
            )
            .unwrap(),
        );
        let ok = tower::service_fn(|_req: http::Request<tonic::body::Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut svc = tower::Layer::layer(&SecurityLayer::new(security.clone()), ok);
        // The gRPC code the layer answered with ("0": it let the call in).
        let mut code = async |path: &str, from: &str, token: Option<&str>| {
            let r = svc
                .ready()
                .await
                .unwrap()
                .call(request(path, from, token))
                .await
                .unwrap();
            r.headers()
                .get("grpc-status")
                .map_or("0".to_string(), |v| v.to_str().unwrap().to_string())
        };
        let list = "/trailhound.detect.v1.DetectService/ListAnomalies";
        for _ in 0..3 {
            assert_eq!(code(list, "10.0.0.1:4000", None).await, "0");
        }
        // Another connection from the same address shares the budget.
        assert_eq!(code(list, "10.0.0.1:4001", None).await, "8");
        // Another address is served.
        assert_eq!(code(list, "10.0.0.2:4000", None).await, "0");
        // The pipeline's hops from the hammering address still go through,
        // on the service budget.
        let process = "/trailhound.enrich.v1.EnrichService/Process";
        for _ in 0..5 {
            assert_eq!(code(process, "10.0.0.1:4002", None).await, "0");
        }
        assert_eq!(code(process, "10.0.0.1:4002", None).await, "8");
        // This process's own clients present its token and spend the
        // service budget, not their loopback address's.
        let token = security.client_security().token.unwrap();
        for _ in 0..5 {
            let t = Some(token.expose());
            assert_eq!(code(list, "127.0.0.1:5000", t).await, "0");
        }
        assert_eq!(code(list, "127.0.0.1:5001", None).await, "0");
        assert_eq!(security.rate_limited(), 2);
    }

    /// A service run as its own process with `[auth]` but without mTLS
    /// cannot prove who it is to the others: refused at start-up, naming
    /// what is missing and the fix.
    #[test]
    fn auth_without_mtls_is_refused_for_a_standalone_service() {
        let dir = tempfile::tempdir().unwrap();
        let auth = AuthConfig {
            mode: crate::auth::AuthMode::Tokens,
            ..Default::default()
        };
        let build = |tls: &TlsConfig, auth: AuthConfig| {
            Security::from_parts(tls, auth, LimitsConfig::default(), dir.path(), false).unwrap()
        };
        let plain = build(&TlsConfig::default(), auth.clone());
        let e = plain
            .check_service_identity("enrich")
            .unwrap_err()
            .to_string();
        for needle in [
            "enrich",
            "cert, key, ca, client_ca",
            "trailhound certs",
            "trailhound up",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        // Auth off needs nothing.
        assert!(
            build(&TlsConfig::default(), AuthConfig::default())
                .check_service_identity("enrich")
                .is_ok()
        );
    }

    /// A service may narrow its read to the scope of the person it reads
    /// for; anyone else's header changes nothing, and a header that is no
    /// scope is refused rather than read as "everything".
    #[tokio::test]
    async fn a_service_reads_on_behalf_of_a_scope() {
        let dir = tempfile::tempdir().unwrap();
        let security = Arc::new(
            Security::from_parts(
                &TlsConfig::default(),
                AuthConfig::default(),
                LimitsConfig::default(),
                dir.path(),
                false,
            )
            .unwrap(),
        );
        let seen = Arc::new(Mutex::new(None::<trailhound_core::Scope>));
        let record = seen.clone();
        let inner = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
            let record = record.clone();
            async move {
                if let Ok(mut s) = record.lock() {
                    *s = req.extensions().get::<Principal>().map(|p| p.scope.clone());
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
            }
        });
        let mut svc = tower::Layer::layer(&SecurityLayer::new(security.clone()), inner);
        let sandbox = trailhound_core::Scope::union([trailhound_core::ScopeRule {
            ous: vec!["Root/Sändbox".into()],
            ..Default::default()
        }]);
        let mut grpc_req = tonic::Request::new(());
        on_behalf(&mut grpc_req, &sandbox).unwrap();
        let header = grpc_req
            .metadata()
            .get(ON_BEHALF_SCOPE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let token = security.client_security().token.unwrap();
        let list = "/trailhound.insights.v1.InsightsService/ListInsights";
        let mut call = async |token: Option<&str>, scope: &str| {
            let mut req = request(list, "127.0.0.1:5000", token);
            req.headers_mut()
                .insert(ON_BEHALF_SCOPE, http::HeaderValue::from_str(scope).unwrap());
            let r = svc.ready().await.unwrap().call(req).await.unwrap();
            let code = r
                .headers()
                .get("grpc-status")
                .map_or("0".to_string(), |v| v.to_str().unwrap().to_string());
            (code, seen.lock().unwrap().take())
        };
        // This process's own client (a service): narrowed, non-ASCII intact.
        assert_eq!(
            call(Some(token.expose()), &header).await,
            ("0".into(), Some(sandbox.clone()))
        );
        // An anonymous caller's header is ignored.
        assert_eq!(
            call(None, &header).await,
            ("0".into(), Some(trailhound_core::Scope::all()))
        );
        // Garbage from a service: refused, not read as everything.
        assert_eq!(call(Some(token.expose()), "{").await.0, "3");
    }
}
