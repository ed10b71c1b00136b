//! The tower layer in front of every route: authenticates, authorizes,
//! limits and audits each request, refusing in gRPC's or the browser's terms.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::audit::{AuditBody, code_name};
use super::limits::limit_key;
use super::{AuditRecord, ON_BEHALF_SCOPE, SESSION_COOKIE, Security, cookie};
use crate::auth::{Principal, Requirement};
use crate::layer::{BoxFuture, With, WithLayer, is_grpc};
use crate::tls::PeerInfo;

/// The tower layer the server bootstrap puts in front of every route.
pub type SecurityLayer = WithLayer<Arc<Security>>;

/// A route behind the security checks.
pub type SecurityService<S> = With<S, Arc<Security>>;
type Resp = http::Response<tonic::body::Body>;

fn refuse(grpc: bool, code: tonic::Code, message: String, browser_login: bool) -> Resp {
    if grpc {
        return tonic::Status::new(code, message).into_http();
    }
    if browser_login {
        let mut r = http::Response::new(tonic::body::Body::empty());
        *r.status_mut() = http::StatusCode::SEE_OTHER;
        r.headers_mut().insert(
            http::header::LOCATION,
            http::HeaderValue::from_static("/auth/login"),
        );
        return r;
    }
    let status = match code {
        tonic::Code::Unauthenticated => http::StatusCode::UNAUTHORIZED,
        tonic::Code::ResourceExhausted => http::StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
        _ => http::StatusCode::FORBIDDEN,
    };
    let mut r = http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
        bytes::Bytes::from(format!("{message}\n")),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == http::StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for SecurityService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = Resp> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Resp;
    type Error = S::Error;
    type Future = BoxFuture<Result<Resp, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let security = self.value.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let requirement = crate::auth::requirement(&path);
            if requirement == Requirement::Public {
                return inner.call(req).await;
            }
            let grpc = is_grpc(&req);
            let peer = req.extensions().get::<PeerInfo>().cloned();
            let peer_addr = peer.as_ref().and_then(|p| p.remote).map(|a| a.to_string());
            let browser = !grpc
                && req.method() == http::Method::GET
                && req
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("text/html"));
            let authorization = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let session = (!grpc && authorization.is_none())
                .then(|| cookie(req.headers(), SESSION_COOKIE))
                .flatten()
                .and_then(|id| security.session(id));
            let trace_id = crate::telemetry::current_trace_id();
            let audited = security.auth.is_enabled();
            let record =
                |p: Option<&Principal>, outcome: String, reason: Option<String>| AuditRecord {
                    time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    subject: p.map(|p| p.subject.clone()).unwrap_or_else(|| "-".into()),
                    name: p.and_then(|p| p.name.clone()),
                    kind: p
                        .map(|p| {
                            serde_json::to_value(p.kind)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        })
                        .unwrap_or_else(|| "unauthenticated".into()),
                    role: p.and_then(|p| p.role.map(|r| r.as_str().to_string())),
                    method: path.clone(),
                    scope: p.map(|p| p.scope.describe()).unwrap_or_else(|| "-".into()),
                    outcome,
                    reason,
                    peer: peer_addr.clone(),
                    trace_id: trace_id.clone(),
                };
            let principal = match session {
                Some(p) => Ok(p),
                None => {
                    security
                        .auth
                        .authenticate(authorization.as_deref(), peer.as_ref())
                        .await
                }
            };
            let mut principal = match principal {
                Ok(p) => p,
                Err(e) => {
                    let code = match e {
                        crate::auth::AuthError::Unavailable(_) => tonic::Code::Unavailable,
                        _ => tonic::Code::Unauthenticated,
                    };
                    security.denied.fetch_add(1, Ordering::Relaxed);
                    let message = e.to_string();
                    tracing::info!(method = %path, peer = peer_addr.as_deref().unwrap_or("-"), reason = %message, "request refused: unauthenticated");
                    security.audit(&record(None, code_name(code as i32), Some(message.clone())));
                    let login = browser && security.sign_in_enabled();
                    return Ok(refuse(grpc, code, message, login));
                }
            };
            if principal.is_service()
                && let Some(v) = req.headers().get(ON_BEHALF_SCOPE)
            {
                // A narrowed read for the person the service serves; one
                // that cannot be read is refused, never widened to all.
                match v
                    .to_str()
                    .ok()
                    .and_then(|s| serde_json::from_str::<trailhound_core::Scope>(s).ok())
                {
                    Some(scope) => principal.scope = scope,
                    None => {
                        let message = format!("{ON_BEHALF_SCOPE}: not a scope (JSON)");
                        security.audit(&record(
                            Some(&principal),
                            "invalid_argument".into(),
                            Some(message.clone()),
                        ));
                        return Ok(refuse(grpc, tonic::Code::InvalidArgument, message, false));
                    }
                }
            }
            crate::telemetry::record_caller(&principal);
            if let Err(message) = principal.check(requirement) {
                security.denied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(method = %path, subject = %principal.display(), reason = %message, "request refused: permission denied");
                security.audit(&record(
                    Some(&principal),
                    "permission_denied".into(),
                    Some(message.clone()),
                ));
                return Ok(refuse(grpc, tonic::Code::PermissionDenied, message, false));
            }
            // Limits: per caller, not per connection.
            let (who, service_budget) = limit_key(
                &principal,
                requirement,
                peer.as_ref().and_then(|p| p.remote),
            );
            let mut permit = None;
            {
                let method = path.rsplit('/').next().unwrap_or_default();
                let result = security.take(&who, service_budget).and_then(|_| {
                    if method.starts_with("Watch") || method == "PushEvents" {
                        permit = Some(security.open_stream(&who, service_budget)?);
                    }
                    Ok(())
                });
                if let Err(message) = result {
                    security.rate_limited.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(method = %path, subject = %principal.display(), reason = %message, "request refused: over its limit");
                    security.audit(&record(
                        Some(&principal),
                        "resource_exhausted".into(),
                        Some(message.clone()),
                    ));
                    return Ok(refuse(grpc, tonic::Code::ResourceExhausted, message, false));
                }
            }
            req.extensions_mut().insert(principal.clone());
            let response = inner.call(req).await?;
            let pending = audited.then(|| {
                (
                    security.clone(),
                    record(Some(&principal), String::new(), None),
                )
            });
            if pending.is_none() && permit.is_none() {
                return Ok(response);
            }
            let header_code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok());
            let http_status = response.status();
            let (parts, body) = response.into_parts();
            let body = AuditBody {
                inner: body,
                pending,
                grpc,
                code: header_code,
                http_status,
                _permit: permit,
            };
            Ok(http::Response::from_parts(
                parts,
                tonic::body::Body::new(body),
            ))
        })
    }
}
