//! notify over gRPC: its own server (validation, ListDeliveries,
//! ListChannels, GetStats) and its follower of insights' WatchInsights,
//! against a fake insights server that breaks the stream once.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::testing::sample_insight;
use common::Hook;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use trailhound_core::Severity;
use trailhound_core::convert::insight_to_pb;
use trailhound_notify::{ChannelKind, DeliveryFilter, DeliveryStatus};
use trailhound_proto::insights::v1 as ipb;
use trailhound_proto::insights::v1::insights_service_server::{
    InsightsService, InsightsServiceServer,
};
use trailhound_proto::notify::v1 as pb;
use trailhound_proto::notify::v1::notify_service_client::NotifyServiceClient;

#[tokio::test]
async fn grpc_validates_notifies_and_lists() {
    let (hook, _dir, n) = common::one_channel("slack", ChannelKind::Slack, vec![]).await;
    let (url, stop, task) = common::serve(n).await;
    let mut client = NotifyServiceClient::connect(url).await.unwrap();

    let err = client
        .notify(pb::NotifyRequest { insight: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("insight"), "{}", err.message());

    // An insight broken in one field is refused, naming the field.
    type Break = fn(&mut ipb::Insight);
    let breaks: [(&str, Break); 2] = [
        ("insight.analyzed_at", |i| i.analyzed_at = None),
        ("insight.anomaly.grade", |i| {
            if let Some(a) = i.anomaly.as_mut() {
                a.grade = 2.0;
            }
        }),
    ];
    for (field, break_it) in breaks {
        let mut bad = insight_to_pb(&sample_insight("w1", "inc", Severity::High));
        break_it(&mut bad);
        let err = client
            .notify(pb::NotifyRequest { insight: Some(bad) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{}", err.message());
    }

    let good = insight_to_pb(&sample_insight("w1", "inc", Severity::High));
    let resp = client
        .notify(pb::NotifyRequest {
            insight: Some(good),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.deliveries.len(), 1);
    let d = &resp.deliveries[0];
    assert_eq!(d.status, pb::DeliveryStatus::Delivered as i32);
    assert_eq!(
        (d.channel.as_str(), d.channel_kind.as_str()),
        ("slack", "slack")
    );
    assert_eq!(d.rule, "everything");
    assert!(d.created_at.is_some() && d.finished_at.is_some());
    assert_eq!(hook.received().len(), 1);

    let list = client
        .list_deliveries(pb::ListDeliveriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.deliveries.len(), 1);
    assert_eq!(list.deliveries[0].insight_id, "w1");
    let none = client
        .list_deliveries(pb::ListDeliveriesRequest {
            status: pb::DeliveryStatus::Failed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.deliveries.is_empty());
    let err = client
        .list_deliveries(pb::ListDeliveriesRequest {
            status: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("status"), "{}", err.message());

    let channels = client
        .list_channels(pb::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    assert_eq!(channels.len(), 1);
    assert_eq!(
        channels[0].target,
        format!("http://{}/services/***", hook.addr)
    );
    assert_eq!(channels[0].rate_limit_per_minute, 30);

    let stats = client
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.insights_received, stats.delivered), (1, 1));

    stop.cancel();
    task.await.unwrap();
}

/// A fake insights server: each WatchInsights call plays the next session
/// (its insights, then either the end of the stream or an open stream).
#[derive(Default)]
struct FakeInsights {
    sessions: Mutex<VecDeque<(Vec<ipb::Insight>, bool)>>,
    sinces: Mutex<Vec<Option<prost_types_ts::Timestamp>>>,
    open: Mutex<Vec<tokio::sync::mpsc::Sender<Result<ipb::Insight, Status>>>>,
}

mod prost_types_ts {
    pub use trailhound_proto::prost_types::Timestamp;
}

type InsightStream = Pin<Box<dyn futures::Stream<Item = Result<ipb::Insight, Status>> + Send>>;

impl FakeInsights {
    /// WatchInsights: plays the next session.
    async fn watch(&self, r: Request<ipb::WatchInsightsRequest>) -> Result<InsightStream, Status> {
        self.sinces.lock().unwrap().push(r.into_inner().since);
        let (insights, keep_open) = self
            .sessions
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((Vec::new(), true));
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for i in insights {
            tx.send(Ok(i)).await.unwrap();
        }
        if keep_open {
            self.open.lock().unwrap().push(tx);
        }
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// The fake's InsightsService: WatchInsights, and UNIMPLEMENTED for each
/// RPC listed (the rest of the service, which notify never calls).
macro_rules! insights_service_watching_only {
    ($($rpc:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl InsightsService for FakeInsights {
            $(
                async fn $rpc(&self, _r: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented("fake"))
                }
            )*
            type WatchInsightsStream = InsightStream;
            async fn watch_insights(
                &self,
                r: Request<ipb::WatchInsightsRequest>,
            ) -> Result<Response<InsightStream>, Status> {
                self.watch(r).await.map(Response::new)
            }
        }
    };
}

insights_service_watching_only! {
    stats(trailhound_proto::common::v1::StatsRequest) -> trailhound_proto::common::v1::ServiceStats;
    analyze(ipb::AnalyzeRequest) -> ipb::Insight;
    analyze_batch(ipb::AnalyzeBatchRequest) -> ipb::AnalyzeBatchResponse;
    get_insight(ipb::GetInsightRequest) -> ipb::Insight;
    list_insights(ipb::ListInsightsRequest) -> ipb::ListInsightsResponse;
    ask(ipb::AskRequest) -> ipb::AskResponse;
    get_stats(ipb::GetStatsRequest) -> ipb::InsightsStats;
}

/// `fake` served over gRPC, and a notifier with one webhook channel
/// following its WatchInsights.
struct Following {
    fake: Arc<FakeInsights>,
    hook: Hook,
    _dir: tempfile::TempDir,
    n: Arc<trailhound_notify::Notifier>,
    server: (CancellationToken, tokio::task::JoinHandle<()>),
    follower: (CancellationToken, tokio::task::JoinHandle<()>),
}

impl Following {
    async fn start(fake: Arc<FakeInsights>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let routes = tonic::service::Routes::new(InsightsServiceServer::from_arc(fake.clone()));
        let options = trailhound_runtime::ServerOptions::default();
        let s = stop.clone();
        let server = tokio::spawn(async move {
            trailhound_runtime::serve(listener, routes, &[], options, s)
                .await
                .unwrap();
        });
        let (hook, dir, n) = common::one_channel("hook", ChannelKind::Webhook, vec![]).await;
        let follow_stop = CancellationToken::new();
        let follower = tokio::spawn(trailhound_notify::follow_grpc(
            n.clone(),
            format!("http://{addr}"),
            follow_stop.clone(),
        ));
        Self {
            fake,
            hook,
            _dir: dir,
            n,
            server: (stop, server),
            follower: (follow_stop, follower),
        }
    }

    /// Stops the follower, then ends the open streams and the server.
    async fn stop(self) {
        self.follower.0.cancel();
        self.follower.1.await.unwrap();
        self.fake.open.lock().unwrap().clear();
        self.server.0.cancel();
        self.server.1.await.unwrap();
    }
}

#[tokio::test]
async fn follows_watch_insights_and_resumes_after_a_break() {
    let a = sample_insight("a", "inc-a", Severity::High);
    let mut b = sample_insight("b", "inc-b", Severity::High);
    b.analyzed_at = a.analyzed_at + chrono::Duration::seconds(30);
    let fake = Arc::new(FakeInsights::default());
    fake.sessions.lock().unwrap().extend([
        // The stream breaks after A...
        (vec![insight_to_pb(&a)], false),
        // ...and the resumed one replays A (analyzed at `since`) before B.
        (vec![insight_to_pb(&a), insight_to_pb(&b)], true),
    ]);
    let f = Following::start(fake.clone()).await;
    let (hook, n) = (&f.hook, f.n.clone());

    let got = hook.wait_for(2).await;
    assert_eq!(got.len(), 2);
    // Let a wrongly duplicated delivery of A show up if there were one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids: Vec<String> = hook
        .received()
        .iter()
        .map(|r| r.json()["insight"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["a", "b"]);

    let sinces = fake.sinces.lock().unwrap().clone();
    assert_eq!(sinces.len(), 2);
    assert_eq!(sinces[0], None);
    assert_eq!(
        sinces[1],
        Some(trailhound_core::convert::timestamp(a.analyzed_at))
    );
    assert_eq!(n.watermark(), Some(b.analyzed_at));

    let dup = n.deliveries(&DeliveryFilter {
        insight_id: Some("a".into()),
        status: Some(DeliveryStatus::Skipped),
        ..Default::default()
    });
    assert_eq!(
        dup.len(),
        1,
        "the replayed A is recorded as a skipped duplicate"
    );

    f.stop().await;
}

#[tokio::test]
async fn reconnect_drops_the_open_stream_and_watches_again() {
    let a = sample_insight("a", "inc-a", Severity::High);
    let fake = Arc::new(FakeInsights::default());
    // One insight on a stream that stays open; later sessions are open
    // and empty.
    fake.sessions
        .lock()
        .unwrap()
        .push_back((vec![insight_to_pb(&a)], true));
    let f = Following::start(fake.clone()).await;
    let (hook, n) = (&f.hook, f.n.clone());
    assert_eq!(hook.wait_for(1).await.len(), 1);
    assert_eq!(fake.sinces.lock().unwrap().len(), 1);

    let detail = n.reconnect();
    assert!(detail.contains("reconnecting"), "{detail}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fake.sinces.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sinces = fake.sinces.lock().unwrap().clone();
    assert_eq!(sinces.len(), 2, "a second WatchInsights after reconnect");
    assert_eq!(
        sinces[1],
        Some(trailhound_core::convert::timestamp(a.analyzed_at))
    );

    f.stop().await;
    assert!(n.reconnect().contains("nothing to reconnect"));
}
