//! Where records that cannot be accepted go, with the reason, so nothing
//! disappears silently and an operator can fix and replay them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use trailhound_core::Rejection;

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
pub struct JsonlDeadLetter {
    path: PathBuf,
    out: Mutex<(BufWriter<File>, u64)>,
}

impl std::fmt::Debug for JsonlDeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlDeadLetter")
            .field("path", &self.path)
            .finish()
    }
}

impl JsonlDeadLetter {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let f = trailhound_runtime::private::append(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            out: Mutex::new((BufWriter::new(f), 0)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl DeadLetterSink for JsonlDeadLetter {
    fn write(&self, rejections: &[Rejection]) {
        if rejections.is_empty() {
            return;
        }
        let mut g = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for r in rejections {
            let line = Line {
                time: time.clone(),
                source: &r.source,
                reason: &r.reason,
                record: &r.record,
            };
            let ok = serde_json::to_writer(&mut g.0, &line).is_ok() && g.0.write_all(b"\n").is_ok();
            if !ok {
                tracing::error!(path = %self.path.display(), reason = %r.reason, "failed to write dead letter");
            }
            g.1 += 1;
        }
        if let Err(e) = g.0.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "failed to flush dead letters");
        }
    }

    fn count(&self) -> u64 {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).1
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
