//! Sending events to detect split across replicas (`detect --shard I/N`).
//!
//! Each replica owns the accounts whose stable hash falls in its share
//! ([`trailhound_core::shard_of`]); [`ShardedDetectSink`] sends every
//! replica its accounts' events, in the order they came, all replicas at
//! once. A replica that stays down past `patience` holds back only its own
//! share: its sub-batches go to a durable spool under enrich's data dir
//! (written and synced before the batch is acknowledged upstream), the
//! other replicas go on, and a drainer sends the spool on, oldest first,
//! once the replica answers again; until the spool is empty new sub-batches
//! for that replica join its end, so each account's events stay in order.
//!
//! The replicas' coordination rule counts accounts rising across the whole
//! organization: each answer carries the accounts a replica saw rising, and
//! the sink hands them to every other replica with its next request (alone,
//! when that replica has no events in the batch).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use prost::Message;
use trailhound_core::EnrichedEvent;
use trailhound_core::pipeline::{EnrichedSink, SinkError};
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::detect::v1::{ObserveRequest, SharedRising};
use trailhound_runtime::TracedChannel;

use crate::grpc::enriched_to_pb_lean;

/// One replica: its client, the reports waiting for it, its spool.
struct Replica {
    endpoint: String,
    client: DetectServiceClient<TracedChannel>,
    /// Other replicas' rising accounts not yet delivered here.
    inbox: std::sync::Mutex<Vec<SharedRising>>,
    /// Held while sending or spooling, so sub-batches reach the replica
    /// (or its spool) in the order they came.
    lane: tokio::sync::Mutex<Lane>,
    spool: PathBuf,
    spooled: AtomicU64,
}

#[derive(Default)]
struct Lane {
    /// The spool holds sub-batches not yet delivered: new ones go after.
    backlog: bool,
    draining: bool,
    /// Orders spool files written within one nanosecond.
    seq: u64,
}

/// Sends each detect replica its share of every batch (see the module doc).
#[derive(Clone)]
pub struct ShardedDetectSink {
    shards: Arc<Shards>,
}

struct Shards {
    replicas: Vec<Replica>,
    patience: Duration,
}

impl ShardedDetectSink {
    /// `endpoints[i]` is the replica started with `--shard i/N`; spools
    /// live under `spool_root/shard-i-of-N/`. Sub-batches spooled by an
    /// earlier run are sent on first.
    pub fn new(
        endpoints: &[String],
        spool_root: &Path,
        patience: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let n = endpoints.len();
        let mut replicas = Vec::with_capacity(n);
        for (i, endpoint) in endpoints.iter().enumerate() {
            let channel = trailhound_runtime::connect(endpoint, Duration::from_secs(60))?;
            let spool = spool_root.join(format!("shard-{i}-of-{n}"));
            let backlog = !spool_files(&spool).is_empty();
            replicas.push(Replica {
                endpoint: endpoint.clone(),
                client: DetectServiceClient::new(channel)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
                inbox: Default::default(),
                lane: tokio::sync::Mutex::new(Lane {
                    backlog,
                    ..Default::default()
                }),
                spool,
                spooled: AtomicU64::new(0),
            });
        }
        let shards = Arc::new(Shards { replicas, patience });
        for i in 0..n {
            shards.clone().drain_if_needed(i);
        }
        Ok(Self { shards })
    }

    /// Sub-batches spooled for replica `i` since start.
    pub fn spooled(&self, i: usize) -> u64 {
        self.shards
            .replicas
            .get(i)
            .map(|r| r.spooled.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

impl Shards {
    /// Sends every replica but `except` the reports waiting for it.
    /// Reports alone close no window and raise no new reports: one round.
    async fn deliver_reports(self: &Arc<Self>, except: Option<usize>) {
        let reports = (0..self.replicas.len())
            .filter(|&i| Some(i) != except && self.has_reports(i))
            .map(|i| self.send_one(i, Vec::new()));
        for r in futures::future::join_all(reports).await {
            if let Err(e) = r {
                // Kept for the next request (send_one puts them back).
                tracing::warn!(error = %e, "failed to hand rising accounts to a detect replica");
            }
        }
    }

    fn has_reports(&self, i: usize) -> bool {
        !self.replicas[i]
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Hands replica `from`'s reports to every other replica.
    fn share(&self, from: usize, rising: Vec<SharedRising>) {
        if rising.is_empty() {
            return;
        }
        for (j, r) in self.replicas.iter().enumerate() {
            if j != from {
                r.inbox
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(rising.iter().cloned());
            }
        }
    }

    /// Sends replica `i` its sub-batch (and the reports waiting for it),
    /// or spools it; Ok once the replica or the spool holds it.
    async fn send_one(
        self: &Arc<Self>,
        i: usize,
        events: Vec<EnrichedEvent>,
    ) -> Result<u64, SinkError> {
        let r = &self.replicas[i];
        let peer_rising = std::mem::take(&mut *r.inbox.lock().unwrap_or_else(|p| p.into_inner()));
        if events.is_empty() && peer_rising.is_empty() {
            return Ok(0);
        }
        let n = events.len() as u64;
        let req = ObserveRequest {
            events: events.iter().map(enriched_to_pb_lean).collect(),
            peer_rising,
            traceparent: String::new(),
        };
        let mut lane = r.lane.lock().await;
        if !lane.backlog {
            let sent = trailhound_runtime::retry::hop("detect", self.patience, || {
                let mut client = r.client.clone();
                let req = req.clone();
                async move { client.observe(req).await }
            })
            .await;
            match sent {
                Ok(resp) => {
                    self.share(i, resp.into_inner().rising);
                    return Ok(n);
                }
                Err(e) if !e.retryable => {
                    // The reports stay for the next request.
                    r.inbox
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(req.peer_rising);
                    return Err(e);
                }
                Err(e) => tracing::warn!(
                    replica = %r.endpoint, shard = i, error = %e,
                    "detect replica unavailable: its share is spooled until it is back, the others go on"
                ),
            }
        }
        lane.seq += 1;
        write_spool(&r.spool, lane.seq, &req.encode_to_vec()).map_err(|e| SinkError {
            downstream: "detect".into(),
            message: format!("replica {} is down and its spool failed: {e}", r.endpoint),
            retryable: true,
        })?;
        r.spooled.fetch_add(1, Ordering::Relaxed);
        lane.backlog = true;
        drop(lane);
        self.clone().drain_if_needed(i);
        Ok(n)
    }

    /// Starts replica `i`'s drainer unless it runs or there is nothing to
    /// send.
    fn drain_if_needed(self: Arc<Self>, i: usize) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            {
                let mut lane = self.replicas[i].lane.lock().await;
                if lane.draining || !lane.backlog {
                    return;
                }
                lane.draining = true;
            }
            self.drain(i).await;
        });
    }

    /// Sends replica `i`'s spool on, oldest first, each file removed once
    /// the replica has it; waits (with backoff) while it is down. Ends with
    /// the spool empty and the lane open again.
    async fn drain(self: &Arc<Self>, i: usize) {
        let r = &self.replicas[i];
        let mut backoff = trailhound_runtime::retry::Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
        );
        loop {
            let files = spool_files(&r.spool);
            let Some(oldest) = files.first() else {
                let mut lane = r.lane.lock().await;
                // Checked again under the lane: a sub-batch may have
                // joined the spool meanwhile.
                if spool_files(&r.spool).is_empty() {
                    lane.backlog = false;
                    lane.draining = false;
                    tracing::info!(replica = %r.endpoint, shard = i, "detect replica's spool delivered");
                    return;
                }
                continue;
            };
            let req = match std::fs::read(oldest)
                .map_err(|e| e.to_string())
                .and_then(|b| ObserveRequest::decode(b.as_slice()).map_err(|e| e.to_string()))
            {
                Ok(req) => req,
                Err(e) => {
                    // Unreadable (a disk fault): set aside, not retried
                    // for ever, and said.
                    tracing::error!(path = %oldest.display(), error = %e, "unreadable spool file set aside");
                    let _ = std::fs::rename(oldest, oldest.with_extension("bad"));
                    continue;
                }
            };
            let mut client = r.client.clone();
            match client.observe(req).await {
                Ok(resp) => {
                    backoff.reset();
                    if let Err(e) = std::fs::remove_file(oldest) {
                        tracing::warn!(path = %oldest.display(), error = %e, "failed to remove a delivered spool file");
                    }
                    // The others hear what it saw rising now, not with a
                    // batch that may be long in coming.
                    self.share(i, resp.into_inner().rising);
                    self.deliver_reports(Some(i)).await;
                }
                Err(s) if trailhound_runtime::status::is_retryable(s.code()) => {
                    tokio::time::sleep(backoff.fail()).await;
                }
                Err(s) => {
                    tracing::error!(path = %oldest.display(), code = ?s.code(), message = s.message(), "detect replica refused a spooled sub-batch: set aside");
                    let _ = std::fs::rename(oldest, oldest.with_extension("refused"));
                }
            }
        }
    }
}

#[async_trait]
impl EnrichedSink for ShardedDetectSink {
    async fn send(&self, events: Vec<EnrichedEvent>) -> Result<u64, SinkError> {
        let shards = &self.shards;
        let n = shards.replicas.len() as u32;
        let mut parts: Vec<Vec<EnrichedEvent>> = (0..n).map(|_| Vec::new()).collect();
        for e in events {
            let i = trailhound_core::shard_of(&e.event.recipient_account_id, n);
            parts[i as usize].push(e);
        }
        let sends = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| shards.send_one(i, part));
        let mut accepted = 0;
        let mut first_error = None;
        for r in futures::future::join_all(sends).await {
            match r {
                Ok(n) => accepted += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // What the batch's windows saw rising goes to the other replicas
        // before the batch counts as done, so nothing waits for a next
        // batch that may never come (the end of a replay).
        shards.deliver_reports(None).await;
        match first_error {
            // The others' shares were accepted; a resend of the whole
            // batch is recognised by them (detect dedupes resent batches).
            Some(e) => Err(e),
            None => Ok(accepted),
        }
    }
}

fn spool_files(dir: &Path) -> Vec<PathBuf> {
    trailhound_runtime::private::files_with_extension(dir, "pb")
}

/// Writes one sub-batch whole and synced before it counts as held: the
/// batch is acknowledged upstream on the strength of it.
fn write_spool(dir: &Path, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    trailhound_runtime::private::dir(dir)?;
    let name = format!(
        "{:020}-{seq:010}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = trailhound_runtime::private::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(format!("{name}.pb")))?;
    std::fs::File::open(dir)?.sync_all()
}
