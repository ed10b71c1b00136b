//! The one way every trailhound server starts and stops: a bound listener
//! and a cancellation token come in; gRPC health and reflection (v1 and
//! v1alpha, for grpcurl 1.8) are always on; requests run in a span parented
//! on the caller's trace; a timeout and a concurrency limit protect the
//! process; on cancel the health status turns NOT_SERVING, open response
//! streams end cleanly ([`crate::drain`]) and in-flight requests drain for
//! at most [`ServerOptions::drain_deadline`]. Plain HTTP shares the port: `/metrics` when the service
//! hands in its stats, and any routes the service adds (health's dashboard).
//! Every gRPC call is timed into `rpc.server.duration` (see
//! [`crate::rpc_metrics`]). Every route, gRPC and HTTP, sits behind the
//! process's [`crate::security::Security`]: TLS (mTLS with a client CA) on
//! the listener, then who is calling, what they may do, their limits and
//! the audit record.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::control::{Control, RecoverHandle};
use crate::rpc_metrics::{RpcMetrics, RpcMetricsLayer};
use crate::stats::StatsHandle;

/// Limits applied to every request.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Longest a unary call or a stream's setup may take.
    pub request_timeout: Duration,
    /// Requests in flight per connection.
    pub concurrency_limit: usize,
    /// The service's figures: when set, `GET /metrics` on the same port
    /// serves them as Prometheus text and OpenTelemetry instruments read
    /// them at each export.
    pub stats: Option<StatsHandle>,
    /// The service's recovery actions, run through ControlService/Recover.
    pub recover: Option<RecoverHandle>,
    /// Longest the drain may take once shutdown is requested; requests
    /// still running then are abandoned (their clients see the connection
    /// close and retry elsewhere). Default: the process's share of
    /// `--shutdown-deadline` ([`crate::shutdown::drain_deadline`]).
    pub drain_deadline: Duration,
    /// TLS, authentication, limits and audit; default: the process's
    /// ([`crate::security::installed`]).
    pub security: Option<Arc<crate::security::Security>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(300),
            concurrency_limit: 256,
            stats: None,
            recover: None,
            drain_deadline: crate::shutdown::drain_deadline(),
            security: None,
        }
    }
}

impl ServerOptions {
    /// The defaults, with the service's figures (served as `/metrics` and
    /// `Stats`).
    pub fn with_stats(stats: StatsHandle) -> Self {
        Self {
            stats: Some(stats),
            ..Default::default()
        }
    }
}

/// Binds the address a service listens on; the error names it, since the
/// OS's alone ("address in use") does not say which of the services failed.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("failed to listen on {addr}: {e}"))
}

/// [`serve`] for a server of one gRPC service, reported SERVING under the
/// service's own name: what five of the six services are.
pub async fn serve_one<S>(
    listener: TcpListener,
    svc: S,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    serve(listener, Routes::new(svc), &[S::NAME], options, shutdown).await
}

/// Serves `routes` plus health and reflection on `listener` until `shutdown`
/// is cancelled. `names` are the fully qualified gRPC service names reported
/// SERVING (and the empty name, meaning the whole server).
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    names: &[&str],
    options: ServerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let security = options
        .security
        .clone()
        .unwrap_or_else(crate::security::installed);
    security.check_bind(addr, names.first().copied().unwrap_or("a server"))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    for name in names {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trailhound_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trailhound_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let control =
        trailhound_proto::common::v1::control_service_server::ControlServiceServer::new(Control {
            reporter: reporter.clone(),
            names: names.iter().map(|s| s.to_string()).collect(),
            recover: options.recover.clone(),
            stats: options.stats.clone(),
        });

    let mut routes = routes.into_axum_router();
    routes = Routes::from(routes)
        .add_service(health)
        .add_service(control)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router();

    let rpc = Arc::new(RpcMetrics::new(&opentelemetry::global::meter(
        crate::metrics::METER_NAME,
    )));
    if let Some(stats) = options.stats.clone() {
        crate::metrics::register_otel(stats.clone());
        let rpc = rpc.clone();
        routes = routes.route(
            "/metrics",
            axum::routing::get(move || {
                let (stats, rpc) = (stats.clone(), rpc.clone());
                async move {
                    let mut figures = stats.get();
                    crate::security::installed().decorate(&mut figures);
                    let mut text = crate::metrics::render(&[figures]);
                    text.push_str(&rpc.render());
                    (
                        [(http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                        text,
                    )
                }
            }),
        );
    }

    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let deadline = options.drain_deadline;
    let stop = shutdown.clone();
    let drain = async move {
        stop.cancelled().await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in &names {
            reporter
                .set_service_status(name.as_str(), ServingStatus::NotServing)
                .await;
        }
        tracing::info!(%addr, "draining");
    };
    tracing::info!(%addr, "serving");
    let serving = Server::builder()
        // HTTP/1.1 too, for Prometheus scrapes and browsers on the same port.
        .accept_http1(true)
        .timeout(options.request_timeout)
        .concurrency_limit_per_connection(options.concurrency_limit)
        .trace_fn(crate::telemetry::server_span)
        .layer(RpcMetricsLayer::new(rpc))
        // Inside the metrics layer, so a stream ended by shutdown is timed
        // with the status it ended with.
        .layer(crate::drain::DrainLayer::new(shutdown.clone()))
        .layer(crate::security::SecurityLayer::new(security.clone()))
        .add_routes(Routes::from(routes))
        // Accepted sockets get NODELAY (and a TLS handshake) in
        // `tls::incoming`.
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(crate::tls::incoming(
                listener,
                security.tls.clone(),
                crate::tls::ClientAuth::AsConfigured,
            )),
            drain,
        );
    tokio::pin!(serving);
    let late = async {
        shutdown.cancelled().await;
        tokio::time::sleep(deadline).await;
    };
    tokio::select! {
        served = &mut serving => served?,
        _ = late => {
            // Dropping the server stops accepting; the connections left
            // end with the process.
            tracing::warn!(%addr, ?deadline, "drain deadline passed with requests still running; abandoning them");
            return Ok(());
        }
    }
    tracing::info!(%addr, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;
    use std::time::Instant;

    use tonic::body::Body;

    /// A gRPC service whose every call hangs: a request the drain cannot
    /// finish.
    #[derive(Clone)]
    struct Hang;

    impl tonic::server::NamedService for Hang {
        const NAME: &'static str = "test.v1.Hang";
    }

    impl tower::Service<http::Request<Body>> for Hang {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
        >;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(http::Response::new(Body::empty()))
            })
        }
    }

    #[tokio::test]
    async fn a_request_that_never_ends_holds_the_drain_only_until_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Routes::new(Hang),
            &[],
            ServerOptions {
                drain_deadline: Duration::from_millis(1500),
                ..Default::default()
            },
            shutdown.clone(),
        ));
        let mut channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/test.v1.Hang/Call"))
            .header("content-type", "application/grpc")
            .body(Body::empty())
            .unwrap();
        let call = tokio::spawn(async move {
            use tower::ServiceExt;
            channel.ready().await?;
            tower::Service::call(&mut channel, request).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!call.is_finished(), "the call should be hanging");

        let started = Instant::now();
        shutdown.cancel();
        let served = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server ignored its drain deadline")
            .unwrap();
        let took = started.elapsed();
        assert!(served.is_ok(), "{served:?}");
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
            "stopped after {took:?}, not at the 1.5 s deadline"
        );
    }
}
