//! Ends open gRPC response streams when the server shuts down.
//!
//! A graceful HTTP/2 shutdown waits for every stream in flight to finish,
//! and a `Watch*` stream never finishes on its own: without this layer a
//! single follower (notify on insights, a dashboard, grpcurl) would hold
//! the drain until the deadline and then see its connection cut. Here,
//! once the shutdown token is cancelled, a response body that has nothing
//! more ready ends with `grpc-status: 0`, so every client sees a clean end
//! of stream (and reconnects to the next instance, as notify does).
//!
//! Unary replies are ready as soon as their headers are, so they are
//! never cut; a stream gets every message already produced before its
//! end. Only gRPC responses are touched: `/metrics` and the dashboard keep
//! their own bodies.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::layer::{BoxFuture, With, WithLayer, is_grpc};

/// The tower layer that ends gRPC response streams on shutdown: it holds
/// the server's shutdown token.
pub type DrainLayer = WithLayer<CancellationToken>;

/// A service whose gRPC response streams end on shutdown.
pub type DrainService<S> = With<S, CancellationToken>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for DrainService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body + Unpin + Send + 'static,
{
    type Response = http::Response<DrainBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let stop = is_grpc(&req).then(|| Box::pin(self.value.clone().cancelled_owned()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|inner| DrainBody {
                inner,
                stop,
                ended: false,
            }))
        })
    }
}

/// A response body that ends cleanly once the server shuts down.
pub struct DrainBody<B> {
    inner: B,
    /// Resolves on shutdown; `None` for bodies left alone (not gRPC).
    stop: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// The body has ended (its own trailers, or ours).
    ended: bool,
}

/// The trailers of a stream ended by shutdown: OK, with the reason.
fn shutdown_trailers() -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", http::HeaderValue::from_static("0"));
    t.insert(
        "grpc-message",
        http::HeaderValue::from_static("server%20shutting%20down"),
    );
    t
}

impl<B: Body + Unpin> Body for DrainBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_trailers() {
                    this.ended = true;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            other => {
                this.ended = true;
                return other;
            }
        }
        let stopping = this
            .stop
            .as_mut()
            .is_some_and(|stop| stop.as_mut().poll(cx).is_ready());
        if stopping {
            this.ended = true;
            return Poll::Ready(Some(Ok(Frame::trailers(shutdown_trailers()))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, Instant};

    use tokio_stream::StreamExt;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use crate::ServerOptions;

    /// grpc.health's Watch is a stream that never ends by itself: the
    /// shape of every `Watch*` RPC.
    #[tokio::test]
    async fn an_open_watch_stream_ends_cleanly_and_the_server_stops_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(crate::serve(
            listener,
            tonic::service::Routes::default(),
            &["test.v1.Thing"],
            ServerOptions {
                drain_deadline: Duration::from_secs(30),
                ..Default::default()
            },
            shutdown.clone(),
        ));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut stream = HealthClient::new(channel)
            .watch(HealthCheckRequest {
                service: "test.v1.Thing".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.status, 1, "SERVING first");

        let started = Instant::now();
        shutdown.cancel();
        // The NOT_SERVING update may or may not get out before the end;
        // what matters is that the stream ends with OK, not an error.
        while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream did not end within 10s of shutdown")
        {
            match item {
                Ok(update) => assert_eq!(update.status, 2, "only NOT_SERVING may follow"),
                Err(status) => panic!("the stream ended with an error: {status:?}"),
            }
        }
        let served = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server did not stop within 10s")
            .unwrap();
        assert!(served.is_ok(), "{served:?}");
        // Far below the 30 s deadline: the stream did not hold the drain.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}
