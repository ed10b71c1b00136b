//! gRPC client channels that carry W3C trace context on every call, and
//! the process's credentials: TLS (verifying the server against `[tls] ca`,
//! presenting `[tls] cert` for mTLS) and an optional bearer token.
//!
//! The credentials are installed once at start-up ([`install`]) because
//! every client a service opens — to the next hop, health's probes, its
//! dashboard's reads — must present the same identity; `connect` picks
//! them up, so no call site can forget them.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::tls::Tls;

/// What clients of this process present.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    /// TLS to every server (and the client certificate, with mTLS).
    pub tls: Option<Arc<Tls>>,
    /// `authorization: Bearer …` on every call.
    pub token: Option<crate::auth::Secret>,
}

static INSTALLED: RwLock<Option<ClientSecurity>> = RwLock::new(None);

/// Makes `security` what [`connect`] uses from now on in this process.
pub fn install(security: ClientSecurity) {
    if let Ok(mut g) = INSTALLED.write() {
        *g = Some(security);
    }
}

/// The installed client credentials (none by default).
pub fn installed() -> ClientSecurity {
    INSTALLED
        .read()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_default()
}

/// Adds the caller's trace context (and the bearer token) to each
/// request's metadata.
#[derive(Clone, Debug, Default)]
pub struct TraceInjector {
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl TraceInjector {
    fn new(token: Option<&crate::auth::Secret>) -> Self {
        let authorization = token.and_then(|t| {
            let mut v = MetadataValue::try_from(format!("Bearer {}", t.expose())).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        Self { authorization }
    }
}

impl tonic::service::Interceptor for TraceInjector {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        crate::telemetry::inject(req.metadata_mut());
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        Ok(req)
    }
}

/// A channel whose calls carry trace context.
pub type TracedChannel = InterceptedService<Channel, TraceInjector>;

/// A lazily connecting channel to `uri` (e.g. `http://127.0.0.1:50052`)
/// with the installed credentials: the first call connects, a lost
/// connection reconnects on the next call, so a downstream restart needs no
/// restart upstream.
pub fn connect(uri: &str, timeout: Duration) -> Result<TracedChannel, tonic::transport::Error> {
    connect_with(uri, timeout, &installed())
}

/// [`connect`] with explicit credentials. With a TLS client configuration
/// every connection is TLS, `http://` endpoints included, verified for the
/// endpoint's host name; certificates reloaded on disk apply to the next
/// connection.
pub fn connect_with(
    uri: &str,
    timeout: Duration,
    security: &ClientSecurity,
) -> Result<TracedChannel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(uri.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let channel = channel(&endpoint, security);
    Ok(InterceptedService::new(
        channel,
        TraceInjector::new(security.token.as_ref()),
    ))
}

/// A lazy channel on `endpoint` through the TLS of `security` (plain TCP
/// without it). For callers that tune the endpoint themselves.
pub fn channel(endpoint: &Endpoint, security: &ClientSecurity) -> Channel {
    let tls = security.tls.clone();
    let connector = tower::service_fn(move |uri: http::Uri| {
        let config = tls.as_ref().and_then(|t| t.client_config());
        async move {
            crate::tls::connect_io(uri, config)
                .await
                .map(hyper_util::rt::TokioIo::new)
        }
    });
    endpoint.connect_with_connector_lazy(connector)
}

/// A channel with the installed credentials, and the interceptor adding
/// trace context and the token, for callers building their own endpoint.
pub fn traced(endpoint: &Endpoint) -> TracedChannel {
    let security = installed();
    InterceptedService::new(
        channel(endpoint, &security),
        TraceInjector::new(security.token.as_ref()),
    )
}
