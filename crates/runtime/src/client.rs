//! gRPC client channels that carry W3C trace context on every call.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Adds the caller's trace context to each request's metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceInjector;

impl tonic::service::Interceptor for TraceInjector {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        crate::telemetry::inject(req.metadata_mut());
        Ok(req)
    }
}

/// A channel whose calls carry trace context.
pub type TracedChannel = InterceptedService<Channel, TraceInjector>;

/// A lazily connecting channel to `uri` (e.g. `http://127.0.0.1:50052`):
/// the first call connects, a lost connection reconnects on the next call,
/// so a downstream restart needs no restart upstream.
pub fn connect(uri: &str, timeout: Duration) -> Result<TracedChannel, tonic::transport::Error> {
    let channel = Endpoint::from_shared(uri.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(InterceptedService::new(channel, TraceInjector))
}
