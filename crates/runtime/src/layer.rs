//! What the server's own tower layers share. Each (drain, RPC metrics,
//! security) wraps every route with one value — the shutdown token, the
//! metrics, the security settings — so the layer and the service type are
//! written once here, generic over that value, and each module implements
//! only `tower::Service` for its own.

use std::pin::Pin;

/// A tower layer wrapping each service with a clone of `T`.
#[derive(Clone, Debug)]
pub struct WithLayer<T> {
    value: T,
}

impl<T> WithLayer<T> {
    pub fn new(value: T) -> Self {
        Self { value }
    }
}

impl<S, T: Clone> tower::Layer<S> for WithLayer<T> {
    type Service = With<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        With {
            inner,
            value: self.value.clone(),
        }
    }
}

/// A service wrapped by a [`WithLayer`], holding its value.
#[derive(Clone, Debug)]
pub struct With<S, T> {
    pub(crate) inner: S,
    pub(crate) value: T,
}

/// The future a wrapping service answers with.
pub(crate) type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Whether `req` is a gRPC call (rather than `/metrics`, the dashboard or
/// a browser's request).
pub(crate) fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The `grpc-status` of a response's headers or trailers, when it has one.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
