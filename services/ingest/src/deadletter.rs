//! Where records that cannot be accepted go, with the reason, so nothing
//! disappears silently and an operator can fix and replay them.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use trailhound_core::Rejection;
use trailhound_runtime::jsonl::JsonLines;

pub trait DeadLetterSink: Send + Sync {
    fn write(&self, rejections: &[Rejection]);
    /// Entries written since start.
    fn count(&self) -> u64;
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    source: &'a str,
    reason: &'a str,
    record: &'a str,
}

/// A JSON Lines file: one `{"time","source","reason","record"}` per line.
#[derive(Debug)]
pub struct JsonlDeadLetter {
    file: JsonLines,
    /// Rejections handed to the file since start, written or not.
    count: AtomicU64,
}

impl JsonlDeadLetter {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = JsonLines::open(path)?;
        let count = AtomicU64::default();
        Ok(Self { file, count })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

impl DeadLetterSink for JsonlDeadLetter {
    fn write(&self, rejections: &[Rejection]) {
        if rejections.is_empty() {
            return;
        }
        let mut out = self.file.lock();
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for r in rejections {
            let line = Line {
                time: time.clone(),
                source: &r.source,
                reason: &r.reason,
                record: &r.record,
            };
            if !out.push(&line) {
                tracing::error!(path = %self.path().display(), reason = %r.reason, "failed to write dead letter");
            }
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = out.flush() {
            tracing::error!(path = %self.path().display(), error = %e, "failed to flush dead letters");
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Keeps rejections in memory: for the CLI summary and tests.
#[derive(Debug, Default)]
pub struct MemoryDeadLetter {
    pub entries: Mutex<Vec<Rejection>>,
}

impl DeadLetterSink for MemoryDeadLetter {
    fn write(&self, rejections: &[Rejection]) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(rejections);
    }
    fn count(&self) -> u64 {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }
}
