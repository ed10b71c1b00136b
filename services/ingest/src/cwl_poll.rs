//! CloudWatch Logs without a subscription: a poller that reads a log group
//! (the one a trail delivers to) with FilterLogEvents, every page, each log
//! message one CloudTrail record.
//!
//! For organizations that cannot add a subscription filter (quota of two
//! per group, owned by another team). It is slower than a subscription
//! (one poll per interval, FilterLogEvents' low request rate) and costs API
//! calls, but needs only `logs:FilterLogEvents`.
//!
//! Neither gaps nor duplicates: the checkpoint holds the newest event
//! timestamp seen (the high water) and the ids of the events seen from
//! `lookback` before it. Each poll asks from `high water − lookback`
//! (inclusive: FilterLogEvents' startTime is) and skips ids already seen,
//! so an event sharing the newest timestamp is neither lost nor read twice,
//! and one that reaches CloudWatch Logs late (CloudTrail delivers each
//! region's stream on its own schedule) is still read if it is within the
//! lookback. With `lookback = 0` the checkpoint is exactly "the last
//! timestamp and the ids seen at it". The checkpoint is written atomically
//! (temporary file, fsync, rename) after a whole poll's events were
//! accepted downstream; a poll that fails part-way is read again from the
//! old checkpoint, and ingest's eventID deduplication drops what had
//! already gone through. A restart resumes from the file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use trailhound_core::Rejection;
use trailhound_core::cloudtrail::{self, Collect};

use crate::ingest::{Ingest, Outcome};
use crate::source::{Backoff, SourceError, sleep_or_stop};

/// What to read and how often.
#[derive(Clone, Debug)]
pub struct PollerOptions {
    pub log_group: String,
    pub stream_prefix: Option<String>,
    pub filter_pattern: Option<String>,
    pub interval: Duration,
    pub lookback: Duration,
    /// Where the first poll starts when there is no checkpoint; default
    /// `lookback` before now.
    pub start: Option<DateTime<Utc>>,
    pub checkpoint_path: PathBuf,
    /// Events per FilterLogEvents page (the service's maximum is 10,000).
    pub page_limit: Option<i32>,
}

impl PollerOptions {
    pub fn new(log_group: impl Into<String>, checkpoint_path: impl Into<PathBuf>) -> Self {
        Self {
            log_group: log_group.into(),
            stream_prefix: None,
            filter_pattern: None,
            interval: Duration::from_secs(60),
            lookback: Duration::from_secs(300),
            start: None,
            checkpoint_path: checkpoint_path.into(),
            page_limit: None,
        }
    }
}

/// Where the poller is: persisted after every poll.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub log_group: String,
    /// Newest event timestamp read, ms since epoch.
    pub high_water_ms: Option<i64>,
    /// Ids of the events read, by timestamp, from `lookback` before the
    /// high water.
    pub seen: BTreeMap<i64, BTreeSet<String>>,
}

impl Checkpoint {
    fn new(log_group: &str) -> Self {
        Self {
            version: 1,
            log_group: log_group.to_string(),
            high_water_ms: None,
            seen: BTreeMap::new(),
        }
    }

    /// Reads the checkpoint file, if there is one.
    pub fn load(path: &Path, log_group: &str) -> Result<Option<Self>, SourceError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SourceError::Checkpoint {
                    action: "read",
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let c: Checkpoint =
            serde_json::from_str(&text).map_err(|e| SourceError::BadCheckpoint {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        if c.log_group != log_group {
            return Err(SourceError::BadCheckpoint {
                path: path.display().to_string(),
                reason: format!(
                    "it is for log group {:?}, not {log_group:?}; point cloudwatch_checkpoint_path elsewhere",
                    c.log_group
                ),
            });
        }
        Ok(Some(c))
    }

    /// Writes the checkpoint atomically: a reader (or a crash) sees the old
    /// file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), SourceError> {
        let err = |action, source| SourceError::Checkpoint {
            action,
            path: path.display().to_string(),
            source,
        };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        trailhound_runtime::private::parent(path).map_err(|e| err("create the folder of", e))?;
        let json = serde_json::to_vec(self).map_err(|e| err("encode", std::io::Error::other(e)))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = trailhound_runtime::private::create(&tmp).map_err(|e| err("write", e))?;
            f.write_all(&json).map_err(|e| err("write", e))?;
            f.sync_all().map_err(|e| err("sync", e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| err("replace", e))?;
        if let Some(dir) = dir {
            // Makes the rename itself durable; not every platform can open
            // a directory, and losing only this is harmless.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    fn has_seen(&self, ts: i64, id: &str) -> bool {
        self.seen.get(&ts).is_some_and(|ids| ids.contains(id))
    }

    fn record(&mut self, ts: i64, id: String) {
        self.seen.entry(ts).or_default().insert(id);
        self.high_water_ms = Some(self.high_water_ms.map_or(ts, |h| h.max(ts)));
    }

    fn prune(&mut self, lookback_ms: i64) {
        if let Some(hw) = self.high_water_ms {
            self.seen = self.seen.split_off(&hw.saturating_sub(lookback_ms));
        }
    }

    /// Ids remembered.
    pub fn seen_count(&self) -> usize {
        self.seen.values().map(BTreeSet::len).sum()
    }
}

/// What one poll did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollOutcome {
    pub pages: u64,
    /// Log events new to the poller.
    pub read: u64,
    /// Log events already read by an earlier poll (the lookback overlap).
    pub already_seen: u64,
    pub outcome: Outcome,
}

/// Polls one log group with FilterLogEvents.
pub struct CwlPoller {
    client: aws_sdk_cloudwatchlogs::Client,
    ingest: Arc<Ingest>,
    options: PollerOptions,
    checkpoint: Checkpoint,
}

trailhound_core::debug_fields!(CwlPoller { options, .. });

/// One page: (timestamp, event id, stream, message) per event, and the
/// next token.
type Page = (Vec<(i64, String, String, Option<String>)>, Option<String>);

impl CwlPoller {
    /// Loads the checkpoint, if any.
    pub fn new(
        client: aws_sdk_cloudwatchlogs::Client,
        ingest: Arc<Ingest>,
        options: PollerOptions,
    ) -> Result<Self, SourceError> {
        let checkpoint = Checkpoint::load(&options.checkpoint_path, &options.log_group)?
            .unwrap_or_else(|| Checkpoint::new(&options.log_group));
        Ok(Self {
            client,
            ingest,
            options,
            checkpoint,
        })
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    fn lookback_ms(&self) -> i64 {
        i64::try_from(self.options.lookback.as_millis()).unwrap_or(i64::MAX)
    }

    /// Reads everything new since the checkpoint, hands it to ingest, and
    /// saves the checkpoint once all of it was accepted.
    pub async fn poll_once(&mut self) -> Result<PollOutcome, SourceError> {
        let lookback = self.lookback_ms();
        let start = match self.checkpoint.high_water_ms {
            Some(hw) => hw.saturating_sub(lookback),
            None => self
                .options
                .start
                .map(|s| s.timestamp_millis())
                .unwrap_or_else(|| Utc::now().timestamp_millis().saturating_sub(lookback)),
        }
        .max(0);
        let group = self.options.log_group.clone();
        let mut out = PollOutcome::default();
        // Recorded in the checkpoint only once the whole poll went through:
        // pages are not ordered by time across streams.
        let mut read: Vec<(i64, String)> = Vec::new();
        let mut this_poll: BTreeSet<String> = BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            let (events, next) = self.page(start, token.clone()).await?;
            out.pages += 1;
            let mut fresh = Vec::new();
            for (ts, id, stream, message) in events {
                if self.checkpoint.has_seen(ts, &id) || !this_poll.insert(id.clone()) {
                    out.already_seen += 1;
                    continue;
                }
                read.push((ts, id.clone()));
                fresh.push((format!("cloudwatch:{group}/{stream}#{id}"), message));
            }
            out.read += fresh.len() as u64;
            if !fresh.is_empty() {
                let limits = self.ingest.limits().clone();
                let parsed = tokio::task::spawn_blocking(move || {
                    let mut sink = Collect::default();
                    let now = Utc::now().timestamp_millis();
                    for (source, message) in fresh {
                        match message {
                            Some(m) => {
                                cloudtrail::parse_document(
                                    m.trim(),
                                    &source,
                                    &limits,
                                    now,
                                    &mut sink,
                                );
                            }
                            None => sink.rejections.push(Rejection::new(
                                source,
                                "log event has no message",
                                "",
                            )),
                        }
                    }
                    sink.events.sort_by_key(|e| e.event_time_ms);
                    sink
                })
                .await
                .map_err(|e| SourceError::Internal(format!("parser failed: {e}")))?;
                out.outcome.merge(self.ingest.submit(parsed).await?);
            }
            match next {
                // The same token again would loop for ever.
                Some(t) if token.as_deref() != Some(t.as_str()) => token = Some(t),
                _ => break,
            }
        }
        if !read.is_empty() {
            for (ts, id) in read {
                self.checkpoint.record(ts, id);
            }
            self.checkpoint.prune(lookback);
            self.checkpoint.save(&self.options.checkpoint_path)?;
        }
        Ok(out)
    }

    async fn page(&self, start: i64, token: Option<String>) -> Result<Page, SourceError> {
        let r = self
            .client
            .filter_log_events()
            .log_group_name(&self.options.log_group)
            .start_time(start)
            .set_log_stream_name_prefix(self.options.stream_prefix.clone())
            .set_filter_pattern(self.options.filter_pattern.clone())
            .set_limit(self.options.page_limit)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| {
                SourceError::aws(
                    &e,
                    "logs:FilterLogEvents",
                    &format!("log group {}", self.options.log_group),
                )
            })?;
        let events = r
            .events()
            .iter()
            .filter_map(|e| {
                Some((
                    e.timestamp()?,
                    e.event_id()?.to_string(),
                    e.log_stream_name().unwrap_or("").to_string(),
                    e.message().map(str::to_string),
                ))
            })
            .collect();
        Ok((events, r.next_token().map(str::to_string)))
    }

    /// Polls every interval until `shutdown`. The first poll failing for a
    /// reason waiting will not fix (no such log group, access denied) stops
    /// the poller with the explanation; later failures are logged and
    /// retried with backoff, the checkpoint untouched.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SourceError> {
        let interval = self.options.interval;
        let mut backoff = Backoff::new(interval, (interval * 8).max(Duration::from_secs(300)));
        let mut polled_once = false;
        tracing::info!(log_group = %self.options.log_group, interval = ?interval, "polling CloudWatch Logs");
        loop {
            let wait = match self.poll_once().await {
                Ok(o) => {
                    polled_once = true;
                    backoff.reset();
                    if o.read > 0 {
                        tracing::info!(
                            log_group = %self.options.log_group,
                            read = o.read,
                            accepted = o.outcome.accepted,
                            rejected = o.outcome.rejected,
                            duplicates = o.outcome.duplicates,
                            "polled CloudWatch Logs"
                        );
                    }
                    interval
                }
                Err(e) if !polled_once && !e.is_retryable() => return Err(e),
                Err(e) => {
                    let d = backoff.fail();
                    tracing::warn!(log_group = %self.options.log_group, error = %e, wait = ?d,
                        "CloudWatch Logs poll failed; the checkpoint is unchanged, retrying");
                    d
                }
            };
            if !sleep_or_stop(wait, &shutdown).await {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_keeps_ids_within_the_lookback() {
        let mut c = Checkpoint::new("trail");
        c.record(1_000, "a".into());
        c.record(5_000, "b".into());
        c.record(5_000, "c".into());
        c.prune(0);
        assert_eq!(c.high_water_ms, Some(5_000));
        assert_eq!(c.seen_count(), 2);
        assert!(c.has_seen(5_000, "b") && !c.has_seen(1_000, "a"));
        c.record(9_000, "d".into());
        c.prune(4_000);
        assert_eq!(c.seen_count(), 3, "{c:?}");
    }

    #[test]
    fn checkpoint_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/cp.json");
        let mut c = Checkpoint::new("trail");
        c.record(7, "x".into());
        c.save(&path).unwrap_or_else(|e| panic!("{e}"));
        let back = Checkpoint::load(&path, "trail").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, Some(c));
        let err = Checkpoint::load(&path, "other").unwrap_err().to_string();
        assert!(err.contains("not \"other\""), "{err}");
        std::fs::write(&path, "{").unwrap_or_else(|e| panic!("{e}"));
        let err = Checkpoint::load(&path, "trail").unwrap_err().to_string();
        assert!(err.contains("delete it"), "{err}");
        assert!(!dir.path().join("sub/cp.json.tmp").exists());
    }
}
