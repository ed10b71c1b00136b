//! Writing an account's events the way an organization trail lands in S3:
//! one gzipped file per region and delivery period, named as CloudTrail names it.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Datelike, TimeZone, Timelike, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::GenerateError;
use crate::org::{Account, REGIONS};

/// Events of one account, grouped by (region, delivery period).
pub(crate) struct Sink {
    pub(crate) files: std::collections::BTreeMap<(usize, i64), Vec<(i64, Value)>>,
    /// A delivery period, ms.
    pub(crate) period_ms: i64,
}

impl Sink {
    pub(crate) fn push(&mut self, region: usize, t: i64, v: Value) {
        self.files
            .entry((region, t.div_euclid(self.period_ms)))
            .or_default()
            .push((t, v));
    }
}

pub(crate) fn region_index(r: &str) -> usize {
    REGIONS.iter().position(|x| *x == r).unwrap_or(0)
}

/// CloudTrail names each file with the time it was delivered, minutes
/// after the last event in it: this one covers the period from `start_ms`
/// and is delivered five minutes after that period ends.
fn file_name(
    rng: &mut ChaCha8Rng,
    account: &str,
    region: &str,
    start_ms: i64,
    period_ms: i64,
) -> (PathBuf, String) {
    let t = Utc
        .timestamp_millis_opt(start_ms + period_ms + 5 * 60_000)
        .single()
        .unwrap_or_default();
    let suffix: String = (0..16)
        .map(|_| {
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                    [rng.random_range(0..62)],
            )
        })
        .collect();
    let dir = PathBuf::from(format!("{:04}/{:02}/{:02}", t.year(), t.month(), t.day()));
    (
        dir,
        format!(
            "{account}_CloudTrail_{region}_{:04}{:02}{:02}T{:02}{:02}Z_{suffix}.json.gz",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute()
        ),
    )
}

/// Writes one account's files; returns (events, files, bytes).
pub(crate) fn write_account(
    out: &Path,
    org_id: &str,
    a: &Account,
    sink: Sink,
    rng: &mut ChaCha8Rng,
) -> Result<(u64, u64, u64), GenerateError> {
    let (mut events, mut files, mut bytes) = (0, 0, 0);
    let mut buf = Vec::with_capacity(1 << 20);
    let period_ms = sink.period_ms;
    for ((rx, period), mut recs) in sink.files {
        recs.sort_by_key(|(t, _)| *t);
        let region = REGIONS[rx];
        let (dir, name) = file_name(rng, &a.id, region, period * period_ms, period_ms);
        let dir = out
            .join("trail/AWSLogs")
            .join(org_id)
            .join(&a.id)
            .join("CloudTrail")
            .join(region)
            .join(dir);
        std::fs::create_dir_all(&dir).map_err(|e| GenerateError::io(&dir, e))?;
        buf.clear();
        buf.extend_from_slice(b"{\"Records\":[");
        for (i, (_, v)) in recs.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            serde_json::to_writer(&mut buf, v).map_err(|e| GenerateError::io(&dir, e))?;
        }
        buf.extend_from_slice(b"]}");
        let path = dir.join(name);
        let f = std::fs::File::create(&path).map_err(|e| GenerateError::io(&path, e))?;
        let mut gz =
            flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast());
        gz.write_all(&buf)
            .map_err(|e| GenerateError::io(&path, e))?;
        let mut w = gz.finish().map_err(|e| GenerateError::io(&path, e))?;
        w.flush().map_err(|e| GenerateError::io(&path, e))?;
        bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        events += recs.len() as u64;
        files += 1;
    }
    Ok((events, files, bytes))
}
