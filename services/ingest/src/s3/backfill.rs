//! The backfill: a bucket prefix listed and replayed in delivery order.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use trailhound_core::cloudtrail::Collect;
use trailhound_trail::files::{delivery_time, group_by_delivery};

use super::{ObjectError, ObjectReader, ObjectRef, looks_like_trail_file, not_event_records};
use crate::config::S3Location;
use crate::ingest::Outcome;
use crate::source::{BackfillStop, SourceError};

/// What a backfill did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackfillOutcome {
    /// Objects read.
    pub objects: u64,
    /// Objects skipped: delivered before `since`, or not trail files.
    pub skipped_objects: u64,
    /// Events in the objects read that happened before `since`.
    pub skipped_events: u64,
    pub outcome: Outcome,
}

/// Every trail file under `location` delivered from `since` on, grouped by
/// delivery period, oldest first; and how many objects were skipped.
/// `page_size` is ListObjectsV2's MaxKeys (default 1,000).
pub async fn list_trail_objects(
    s3: &aws_sdk_s3::Client,
    location: &S3Location,
    since: Option<DateTime<Utc>>,
    page_size: Option<i32>,
) -> Result<(Vec<(String, Vec<ObjectRef>)>, u64), SourceError> {
    let mut objects = Vec::new();
    let mut skipped = 0u64;
    let mut token: Option<String> = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(&location.bucket)
            .prefix(&location.prefix)
            .set_max_keys(page_size)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| SourceError::aws(&e, "s3:ListObjectsV2", &location.to_string()))?;
        for o in out.contents() {
            let Some(key) = o.key() else { continue };
            if not_event_records(key) || !looks_like_trail_file(key) {
                skipped += 1;
                continue;
            }
            let obj = ObjectRef {
                bucket: location.bucket.clone(),
                key: key.to_string(),
                size: o.size().and_then(|s| u64::try_from(s).ok()),
            };
            if let Some(since) = since {
                // The delivery time in the name, else when it was written.
                let delivered = delivery_time(obj.file_name()).or_else(|| {
                    o.last_modified()
                        .and_then(|t| DateTime::from_timestamp(t.secs(), 0))
                });
                if delivered.is_some_and(|t| t < since) {
                    skipped += 1;
                    continue;
                }
            }
            objects.push(obj);
        }
        match out.next_continuation_token() {
            Some(t) if out.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
            _ => break,
        }
    }
    let groups = group_by_delivery(objects, |o| o.file_name());
    Ok((groups, skipped))
}

/// Replays a bucket prefix in delivery order, each delivery period's
/// events sorted by time, skipping what happened before `since`. Stops at
/// the first object that cannot be read or delivered, saying where to
/// resume.
pub async fn backfill(
    reader: &ObjectReader,
    location: &S3Location,
    since: Option<DateTime<Utc>>,
    concurrency: usize,
    shutdown: &CancellationToken,
) -> Result<BackfillOutcome, SourceError> {
    use futures::StreamExt;
    let (groups, skipped) = list_trail_objects(&reader.s3, location, since, None).await?;
    let total: usize = groups.iter().map(|(_, g)| g.len()).sum();
    tracing::info!(location = %location, objects = total, skipped, "backfill listed");
    let since_ms = since.map(|s| s.timestamp_millis());
    let mut out = BackfillOutcome {
        skipped_objects: skipped,
        ..BackfillOutcome::default()
    };
    for (delivery, objects) in groups {
        if shutdown.is_cancelled() {
            tracing::info!(location = %location, objects = out.objects, "backfill interrupted by shutdown");
            break;
        }
        let stop = |obj: &ObjectRef, message: String, done: u64| {
            SourceError::Backfill(Box::new(BackfillStop {
                location: location.to_string(),
                key: obj.url(),
                delivery: if delivery.is_empty() {
                    "at an unknown time".into()
                } else {
                    delivery.clone()
                },
                resume: delivery_time(&delivery)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .or_else(|| since.map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                    .unwrap_or_else(|| "<the same since>".into()),
                done,
                message,
            }))
        };
        let fetched: Vec<(ObjectRef, Result<Collect, ObjectError>)> =
            futures::stream::iter(objects)
                .map(|obj| async move {
                    let r = reader.fetch(&obj).await;
                    (obj, r)
                })
                .buffered(concurrency.max(1))
                .collect()
                .await;
        let mut group = Collect::default();
        let first_obj = fetched.first().map(|(o, _)| o.clone());
        for (obj, r) in fetched {
            match r {
                Ok(c) => {
                    group.events.extend(c.events);
                    group.rejections.extend(c.rejections);
                    out.objects += 1;
                }
                Err(e) => return Err(stop(&obj, e.to_string(), out.objects)),
            }
        }
        if let Some(since_ms) = since_ms {
            let before = group.events.len();
            group.events.retain(|e| e.event_time_ms >= since_ms);
            out.skipped_events += (before - group.events.len()) as u64;
        }
        group.events.sort_by_key(|e| e.event_time_ms);
        match reader.ingest.submit(group).await {
            Ok(o) => out.outcome.merge(o),
            Err(e) => {
                let obj = first_obj.unwrap_or_else(|| ObjectRef {
                    bucket: location.bucket.clone(),
                    key: location.prefix.clone(),
                    size: None,
                });
                return Err(stop(&obj, e.to_string(), out.objects));
            }
        }
    }
    Ok(out)
}
