//! Finding CloudTrail files and putting them in delivery order.
//!
//! CloudTrail writes one file per account × region every few minutes, and
//! the S3 layout (`AWSLogs/<org>/<account>/CloudTrail/<region>/YYYY/MM/DD/`)
//! groups by account first. Replaying in path order would feed one
//! account's whole history before the next, and every other account's
//! events would arrive "late". So files are grouped by the delivery time in
//! their names (`..._CloudTrail_<region>_20260105T1000Z_<id>.json.gz`) and
//! groups are replayed oldest first, each group's events sorted by time.
//! The same order serves the S3 backfill, over object keys.

use std::path::{Path, PathBuf};

/// Files delivered for the same period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryGroup {
    /// `YYYYMMDDTHHMMZ` from the file names, or "" when unknown.
    pub key: String,
    pub files: Vec<PathBuf>,
}

/// The delivery timestamp in a CloudTrail file name, if it has one.
pub fn delivery_key(name: &str) -> Option<&str> {
    name.split('_').find(|part| {
        part.len() == 14
            && part.as_bytes()[8] == b'T'
            && part.ends_with('Z')
            && part[..8].bytes().all(|b| b.is_ascii_digit())
            && part[9..13].bytes().all(|b| b.is_ascii_digit())
    })
}

fn is_trail_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".json")
        || name.ends_with(".jsonl")
        || name.ends_with(".json.gz")
        || name.ends_with(".gz")
}

/// Whether a path or S3 key is one of the files CloudTrail writes beside
/// the event records: digest files (integrity validation) and Insights
/// events, which are not records of API calls.
pub fn not_event_records(path: &str) -> Option<NotRecords> {
    if path.contains("/CloudTrail-Digest/") || path.contains("_CloudTrail-Digest_") {
        Some(NotRecords::Digest)
    } else if path.contains("/CloudTrail-Insight/") || path.contains("_CloudTrail-Insight_") {
        Some(NotRecords::Insight)
    } else {
        None
    }
}

/// Files of a trail that hold no event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotRecords {
    Digest,
    Insight,
}

/// What a walk of a trail found besides event files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// CloudTrail digest files (integrity validation), skipped.
    pub digest: usize,
    /// CloudTrail Insights files, skipped.
    pub insight: usize,
}

impl Skipped {
    pub fn total(&self) -> usize {
        self.digest + self.insight
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "skipped {} digest and {} Insights files (not event records)",
            self.digest, self.insight
        )
    }
}

/// Every CloudTrail file under `path` (or `path` itself), grouped by
/// delivery time, oldest group first. Files without a delivery time come
/// first, in path order.
pub fn delivery_groups(path: &Path) -> std::io::Result<Vec<DeliveryGroup>> {
    trail_files(path).map(|(groups, _)| groups)
}

/// [`delivery_groups`], and what was skipped: digest and Insights files,
/// which a synced bucket holds beside the event files.
pub fn trail_files(path: &Path) -> std::io::Result<(Vec<DeliveryGroup>, Skipped)> {
    let mut files = Vec::new();
    let mut skipped = Skipped::default();
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let p = entry?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if is_trail_file(&p) {
                    match not_event_records(&p.to_string_lossy()) {
                        Some(NotRecords::Digest) => skipped.digest += 1,
                        Some(NotRecords::Insight) => skipped.insight += 1,
                        None => files.push(p),
                    }
                }
            }
        }
    } else {
        // A single named file is read whatever its extension.
        std::fs::metadata(path)?;
        files.push(path.to_path_buf());
    }
    let groups = group_by_delivery(files, |p| {
        p.file_name().and_then(|n| n.to_str()).unwrap_or("")
    });
    Ok((
        groups
            .into_iter()
            .map(|(key, files)| DeliveryGroup { key, files })
            .collect(),
        skipped,
    ))
}

/// The clock a file's events are checked against: the wall clock, or the
/// file's delivery time when its name carries one, which is earlier for
/// history. An event cannot be newer than the file that delivers it, so
/// in a replay of history one event with a wrong clock is quarantined
/// instead of moving time on by hours or years.
pub fn receiving_clock(name: &str, wall_ms: i64) -> i64 {
    match delivery_time(name.rsplit('/').next().unwrap_or(name)) {
        Some(t) => wall_ms.min(t.timestamp_millis()),
        None => wall_ms,
    }
}

/// The delivery time in a CloudTrail file name, as a time.
pub fn delivery_time(name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let key = delivery_key(name)?;
    chrono::NaiveDateTime::parse_from_str(key, "%Y%m%dT%H%MZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Puts items (local files, S3 keys) in delivery order and groups those
/// delivered in the same period: sorted by the delivery time in their file
/// names, then by name; items without a delivery time first (key "").
/// `file_name` gives the name the delivery time is read from.
pub fn group_by_delivery<T: Ord>(
    items: Vec<T>,
    file_name: impl Fn(&T) -> &str,
) -> Vec<(String, Vec<T>)> {
    let mut keyed: Vec<(String, T)> = items
        .into_iter()
        .map(|item| {
            let key = delivery_key(file_name(&item)).unwrap_or("").to_string();
            (key, item)
        })
        .collect();
    keyed.sort();
    let mut groups: Vec<(String, Vec<T>)> = Vec::new();
    for (key, item) in keyed {
        match groups.last_mut() {
            Some((k, g)) if *k == key => g.push(item),
            _ => groups.push((key, vec![item])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_delivery_time_from_names() {
        assert_eq!(
            delivery_key("111122223333_CloudTrail_us-east-1_20260105T1000Z_abc.json.gz"),
            Some("20260105T1000Z")
        );
        assert_eq!(
            delivery_key("aws.defense-evasion.cloudtrail-stop.json"),
            None
        );
    }

    #[test]
    fn groups_across_accounts_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |rel: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "{}").unwrap();
        };
        mk(
            "AWSLogs/o-1/111111111111/CloudTrail/us-east-1/2026/01/05/111111111111_CloudTrail_us-east-1_20260105T1100Z_a.json.gz",
        );
        mk(
            "AWSLogs/o-1/111111111111/CloudTrail/us-east-1/2026/01/05/111111111111_CloudTrail_us-east-1_20260105T1000Z_b.json.gz",
        );
        mk(
            "AWSLogs/o-1/222222222222/CloudTrail/eu-west-1/2026/01/05/222222222222_CloudTrail_eu-west-1_20260105T1000Z_c.json.gz",
        );
        mk("AWSLogs/o-1/README.txt");
        let groups = delivery_groups(dir.path()).unwrap();
        let keys: Vec<_> = groups
            .iter()
            .map(|g| (g.key.as_str(), g.files.len()))
            .collect();
        assert_eq!(keys, vec![("20260105T1000Z", 2), ("20260105T1100Z", 1)]);
    }
}
