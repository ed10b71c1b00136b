//! What notify remembers across restarts, and its dead letters.
//!
//! One redb file holds the incident records (who was told what about which
//! incident — without them a restart would re-alert every open incident),
//! the delivery history behind ListDeliveries (bounded), and the
//! WatchInsights watermark to resume from. Writes go through one writer
//! thread in arrival order, batched into a transaction per burst, so the
//! async delivery path never blocks on an fsync and a later state never
//! loses to an earlier one. Dropping the [`Store`] drains the queue and
//! closes the file.
//!
//! Dead letters are a JSON Lines file: one object per delivery that failed
//! after its last attempt, with the payload, so an operator can see what
//! was lost and re-send it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use trailhound_runtime::jsonl::JsonLines;

use crate::delivery::Delivery;
use crate::incident::IncidentRecord;

const INCIDENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("incidents");
/// "{created_ms, offset, zero-padded}|{id}" → Delivery JSON, oldest first.
const DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("deliveries");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const WATERMARK: &str = "watch_since";

trailhound_runtime::store_error!(StoreError, "notify store");

/// What the store held at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    pub incidents: Vec<IncidentRecord>,
    /// The newest deliveries, oldest first.
    pub deliveries: Vec<Delivery>,
    pub watermark: Option<DateTime<Utc>>,
}

pub(crate) enum Op {
    Incident(Box<IncidentRecord>),
    Forget(Vec<String>),
    Delivery(Box<Delivery>),
    Watermark(DateTime<Utc>),
    Flush(mpsc::Sender<()>),
}

/// The redb file and its writer thread.
pub struct Store {
    path: String,
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
}

trailhound_core::debug_fields!(Store { path });

fn delivery_key(d: &Delivery) -> String {
    trailhound_runtime::store::time_key(d.created_at.timestamp_millis(), &d.id)
}

impl Store {
    /// Opens (or creates) the file, reads what it holds — incidents last
    /// seen before `forget_before` are dropped, and at most `recent`
    /// deliveries are returned — and starts the writer, which keeps at most
    /// `max_deliveries` deliveries.
    pub fn open(
        path: &Path,
        forget_before: DateTime<Utc>,
        recent: usize,
        max_deliveries: usize,
    ) -> Result<(Self, Loaded), StoreError> {
        let p = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| StoreError {
            path: p.clone(),
            message: e.to_string(),
        };
        let db = trailhound_runtime::store::open(path, |w| {
            for t in [INCIDENTS, DELIVERIES, STATE] {
                w.open_table(t)?;
            }
            Ok(())
        })
        .map_err(|e| err(&e))?;

        let mut loaded = Loaded::default();
        let mut stale = Vec::new();
        let stored_deliveries;
        {
            let r = db.begin_read().map_err(|e| err(&e))?;
            let t = r.open_table(INCIDENTS).map_err(|e| err(&e))?;
            for row in t.iter().map_err(|e| err(&e))? {
                let (k, v) = row.map_err(|e| err(&e))?;
                match serde_json::from_slice::<IncidentRecord>(v.value()) {
                    Ok(rec) if rec.last_seen_at >= forget_before => loaded.incidents.push(rec),
                    Ok(_) => stale.push(k.value().to_string()),
                    Err(e) => {
                        tracing::warn!(path = %p, incident = k.value(), error = %e, "dropping an unreadable incident record");
                        stale.push(k.value().to_string());
                    }
                }
            }
            let t = r.open_table(DELIVERIES).map_err(|e| err(&e))?;
            stored_deliveries = t.len().map_err(|e| err(&e))?;
            for row in t.iter().map_err(|e| err(&e))?.rev().take(recent) {
                let (_, v) = row.map_err(|e| err(&e))?;
                if let Ok(d) = serde_json::from_slice::<Delivery>(v.value()) {
                    loaded.deliveries.push(d);
                }
            }
            loaded.deliveries.reverse();
            let t = r.open_table(STATE).map_err(|e| err(&e))?;
            if let Some(v) = t.get(WATERMARK).map_err(|e| err(&e))? {
                loaded.watermark = std::str::from_utf8(v.value())
                    .ok()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc));
            }
        }

        let (tx, rx) = mpsc::channel();
        let thread_path = p.clone();
        let thread = std::thread::Builder::new()
            .name("notify-store".into())
            .spawn(move || {
                writer(
                    db,
                    rx,
                    thread_path,
                    stored_deliveries,
                    max_deliveries as u64,
                )
            })
            .map_err(|e| err(&e))?;
        let store = Self {
            path: p,
            tx: Some(tx),
            thread: Some(thread),
        };
        if !stale.is_empty() {
            store.send(Op::Forget(stale));
        }
        Ok((store, loaded))
    }

    pub(crate) fn send(&self, op: Op) {
        if let Some(tx) = &self.tx
            && tx.send(op).is_err()
        {
            tracing::error!(path = %self.path, "notify store writer has stopped; state is not being saved");
        }
    }

    /// Blocks until everything sent so far is committed.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Op::Flush(tx));
        let _ = rx.recv();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn writer(db: Database, rx: mpsc::Receiver<Op>, path: String, mut stored: u64, max: u64) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < 512 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let w = db.begin_write()?;
            {
                let mut incidents = w.open_table(INCIDENTS)?;
                let mut deliveries = w.open_table(DELIVERIES)?;
                let mut state = w.open_table(STATE)?;
                for op in ops {
                    match op {
                        Op::Incident(rec) => {
                            let bytes = serde_json::to_vec(&*rec)?;
                            incidents.insert(rec.incident_id.as_str(), bytes.as_slice())?;
                        }
                        Op::Forget(ids) => {
                            for id in ids {
                                incidents.remove(id.as_str())?;
                            }
                        }
                        Op::Delivery(d) => {
                            let bytes = serde_json::to_vec(&*d)?;
                            if deliveries
                                .insert(delivery_key(&d).as_str(), bytes.as_slice())?
                                .is_none()
                            {
                                stored += 1;
                            }
                            while stored > max.max(1) {
                                if deliveries.pop_first()?.is_none() {
                                    break;
                                }
                                stored -= 1;
                            }
                        }
                        Op::Watermark(t) => {
                            let s = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                            state.insert(WATERMARK, s.as_bytes())?;
                        }
                        Op::Flush(ack) => acks.push(ack),
                    }
                }
            }
            w.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(path = %path, error = %e, "failed to save notify state");
        }
        for a in acks {
            let _ = a.send(());
        }
    }
}

/// One dead letter.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    pub time: String,
    pub channel: &'a str,
    pub channel_kind: &'a str,
    pub delivery_id: &'a str,
    pub insight_id: &'a str,
    pub incident_id: &'a str,
    pub rule: &'a str,
    pub follow_up: bool,
    pub reason: &'a str,
    pub attempts: u32,
    pub payload: &'a serde_json::Value,
}

/// A dead letter read back to re-send it: the fields that takes.
#[derive(Debug, Deserialize)]
pub struct StoredDeadLetter {
    pub channel: String,
    #[serde(default)]
    pub delivery_id: String,
    #[serde(default)]
    pub insight_id: String,
    #[serde(default)]
    pub incident_id: String,
    #[serde(default)]
    pub rule: String,
    #[serde(default)]
    pub follow_up: bool,
    pub payload: serde_json::Value,
}

/// The dead-letter JSON Lines file.
#[derive(Debug)]
pub struct DeadLetters {
    file: JsonLines,
    count: AtomicU64,
}

impl DeadLetters {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: JsonLines::open(path)?,
            count: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn write(&self, entry: &DeadLetter<'_>) {
        let mut out = self.file.lock();
        if out.push(entry) && out.flush().is_ok() {
            self.count.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::error!(path = %self.path().display(), channel = entry.channel, insight_id = entry.insight_id, "failed to write dead letter");
        }
    }

    /// The file's lines now, and how many bytes they were: hand both to
    /// [`DeadLetters::replace`] after re-sending them.
    pub fn read_lines(&self) -> std::io::Result<(Vec<String>, u64)> {
        self.file.read_lines()
    }

    /// Rewrites the file atomically as `keep` followed by whatever was
    /// appended since [`DeadLetters::read_lines`].
    pub fn replace(&self, keep: &[String], read: u64) -> std::io::Result<()> {
        self.file.replace(keep, read)
    }

    /// Entries written since start.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
