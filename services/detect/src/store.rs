//! The embedded store: anomalies, per-entity usage series, detector
//! definitions, engine checkpoints and the write-ahead log since the last
//! checkpoint in one redb file, so a restart keeps what was found, does
//! not re-learn from zero, and (with the log) loses no acknowledged batch.

use std::path::Path;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use trailhound_core::{Anomaly, DetectorSpec};

use crate::engine::{
    AccountChunk, Checkpoint, CheckpointHeader, EntityChunk, LateEvent, WindowResult,
};

const ANOMALIES: TableDefinition<&str, &[u8]> = TableDefinition::new("anomalies");
/// "{window_start_ms:020}|{id}" → (), for newest-first listing.
const BY_TIME: TableDefinition<&str, ()> = TableDefinition::new("anomalies_by_time");
/// "{detector}\u{1f}{entity}\u{1f}{window_start_ms:020}" → SeriesPoint.
const SERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("series");
const DETECTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("detectors");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// The write-ahead log: sequence number → entry (see [`crate::wal`]).
const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("wal");
/// Fingerprints of recently acknowledged batches: sequence number →
/// fingerprint, to recognise a batch sent again.
const BATCHES: TableDefinition<u64, u128> = TableDefinition::new("wal_batches");
/// In STATE: the last log entry the checkpoint includes (u64, LE).
const CHECKPOINT_SEQ: &str = "checkpoint_wal_seq";
/// In STATE: the checkpoint's header (see [`Checkpoint`]).
const CHECKPOINT_HEADER: &str = "checkpoint_header";
/// The checkpoint's entities: "{detector}\u{1f}{entity}" → state.
const CHECKPOINT_ENTITIES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("checkpoint_entities");
/// The checkpoint's account histories: account id → history.
const CHECKPOINT_ACCOUNTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("checkpoint_accounts");
/// Late events: "{event time}|{detector}|{event id}" → JSON. Keyed by the
/// event, so the log's replay records each once.
const LATE: TableDefinition<&str, &[u8]> = TableDefinition::new("late_events");
/// Late events kept; older ones are dropped (they stay counted).
pub const LATE_RETAINED: u64 = 100_000;

trailhound_runtime::store_error!(StoreError, "detect store");

/// One stored point of a usage series (first feature).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub window_start_ms: i64,
    pub actual: f64,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
    pub grade: f64,
}

/// Filters for listing anomalies; empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct AnomalyFilter {
    pub account_id: String,
    pub environment: Option<trailhound_core::Environment>,
    pub ou: String,
    pub detector: String,
    pub service: String,
    pub region: String,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub min_grade: f64,
    /// What the caller may see: anomalies outside it are skipped like
    /// absent ones, before paging, so pages and tokens reveal nothing.
    pub scope: trailhound_core::Scope,
}

impl AnomalyFilter {
    pub fn matches(&self, a: &Anomaly) -> bool {
        self.scope.allows(&a.account_id, &a.ou_path, a.environment)
            && (self.account_id.is_empty() || a.account_id == self.account_id)
            && self.environment.is_none_or(|e| a.environment == e)
            && (self.ou.is_empty() || a.ou_path.iter().any(|o| o.eq_ignore_ascii_case(&self.ou)))
            && (self.detector.is_empty() || a.detector == self.detector)
            && (self.service.is_empty() || a.service.eq_ignore_ascii_case(&self.service))
            && (self.region.is_empty() || a.region == self.region)
            && self
                .start_ms
                .is_none_or(|s| a.window_start.timestamp_millis() >= s)
            && self
                .end_ms
                .is_none_or(|e| a.window_start.timestamp_millis() < e)
            && a.grade >= self.min_grade
    }
}

#[derive(Clone, Debug)]
pub struct DetectStore {
    db: Db,
}

use trailhound_runtime::store::{Db, time_key};

fn series_key(detector: &str, entity: &str, ms: i64) -> String {
    format!(
        "{detector}\u{1f}{entity}\u{1f}{}",
        trailhound_runtime::store::sortable_ms(ms)
    )
}

impl DetectStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, |w| {
            for t in [ANOMALIES, SERIES, DETECTORS, STATE] {
                w.open_table(t)?;
            }
            w.open_table(BY_TIME)?;
            for t in [CHECKPOINT_ENTITIES, CHECKPOINT_ACCOUNTS, LATE] {
                w.open_table(t)?;
            }
            w.open_table(WAL)?;
            w.open_table(BATCHES)?;
            Ok(())
        })?;
        Ok(Self { db })
    }

    /// Persists closed windows: their series points and any anomalies, in
    /// one transaction.
    pub fn record(&self, results: &[WindowResult], late: &[LateEvent]) -> Result<(), StoreError> {
        if results.is_empty() && late.is_empty() {
            return Ok(());
        }
        let mut w = self.db.begin_write().map_err(|e| self.db.fail(e))?;
        // Without the write-ahead log (`[detect] wal = false`) these need
        // no particular durability: the engine resumes from its last
        // checkpoint after a crash, and windows closed again overwrite
        // their points. (redb 2 on Linux syncs Eventual commits like
        // Immediate ones; on macOS they are cheaper barriers.)
        w.set_durability(redb::Durability::Eventual);
        self.write_results(&w, results, false)?;
        self.write_late(&w, late)?;
        w.commit().map_err(|e| self.db.fail(e).into())
    }

    /// Appends one write-ahead log entry and persists what applying it
    /// produced, durably, in one transaction: when this returns, the
    /// change survives a kill of the process (and of the machine).
    pub fn commit_logged(
        &self,
        seq: u64,
        entry: &[u8],
        fingerprint: Option<u128>,
        results: &[WindowResult],
        late: &[LateEvent],
    ) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(|e| self.db.fail(e))?;
        w.set_durability(redb::Durability::Immediate);
        {
            let mut wal = w.open_table(WAL).map_err(|e| self.db.fail(e))?;
            wal.insert(seq, entry).map_err(|e| self.db.fail(e))?;
            if let Some(fp) = fingerprint {
                let mut batches = w.open_table(BATCHES).map_err(|e| self.db.fail(e))?;
                batches.insert(seq, fp).map_err(|e| self.db.fail(e))?;
            }
        }
        self.write_results(&w, results, false)?;
        self.write_late(&w, late)?;
        w.commit().map_err(|e| self.db.fail(e).into())
    }

    /// Persists windows closed again while replaying the log. Anomalies
    /// already stored are kept as they are (with their first detection
    /// time); the ones returned were not stored before.
    pub fn record_replayed(
        &self,
        results: &[WindowResult],
        late: &[LateEvent],
    ) -> Result<Vec<Anomaly>, StoreError> {
        if results.is_empty() && late.is_empty() {
            return Ok(Vec::new());
        }
        let w = self.db.begin_write().map_err(|e| self.db.fail(e))?;
        let fresh = self.write_results(&w, results, true)?;
        self.write_late(&w, late)?;
        w.commit().map_err(|e| self.db.fail(e))?;
        Ok(fresh)
    }

    /// One closed window's point of its entity's series.
    fn write_point(
        &self,
        series: &mut redb::Table<'_, &'static str, &'static [u8]>,
        r: &WindowResult,
    ) -> Result<(), StoreError> {
        let p = SeriesPoint {
            window_start_ms: r.window_start_ms,
            actual: r.actual.first().copied().unwrap_or(0.0),
            expected: r.expected.first().copied().unwrap_or(0.0),
            lower: r.lower.first().copied().unwrap_or(0.0),
            upper: r.upper.first().copied().unwrap_or(0.0),
            grade: r.grade,
        };
        let bytes = postcard::to_stdvec(&p).map_err(|e| self.db.fail(e))?;
        series
            .insert(
                series_key(&r.detector, &r.entity_key, r.window_start_ms).as_str(),
                bytes.as_slice(),
            )
            .map_err(|e| self.db.fail(e))?;
        Ok(())
    }

    /// Writes series points and anomalies; with `keep_existing`, an anomaly
    /// whose id is stored already is left alone. Returns the anomalies
    /// written.
    fn write_results(
        &self,
        w: &redb::WriteTransaction,
        results: &[WindowResult],
        keep_existing: bool,
    ) -> Result<Vec<Anomaly>, StoreError> {
        let mut written = Vec::new();
        let mut series = w.open_table(SERIES).map_err(|e| self.db.fail(e))?;
        let mut anomalies = w.open_table(ANOMALIES).map_err(|e| self.db.fail(e))?;
        let mut by_time = w.open_table(BY_TIME).map_err(|e| self.db.fail(e))?;
        for r in results {
            if !r.extra {
                self.write_point(&mut series, r)?;
            }
            if let Some(a) = &r.anomaly {
                if keep_existing
                    && anomalies
                        .get(a.id.as_str())
                        .map_err(|e| self.db.fail(e))?
                        .is_some()
                {
                    continue;
                }
                let json = serde_json::to_vec(a).map_err(|e| self.db.fail(e))?;
                anomalies
                    .insert(a.id.as_str(), json.as_slice())
                    .map_err(|e| self.db.fail(e))?;
                by_time
                    .insert(
                        time_key(a.window_start.timestamp_millis(), &a.id).as_str(),
                        (),
                    )
                    .map_err(|e| self.db.fail(e))?;
                if keep_existing {
                    written.push(a.clone());
                }
            }
        }
        Ok(written)
    }

    /// Records late events (idempotently: keyed by the event), dropping
    /// the oldest past [`LATE_RETAINED`].
    fn write_late(&self, w: &redb::WriteTransaction, late: &[LateEvent]) -> Result<(), StoreError> {
        if late.is_empty() {
            return Ok(());
        }
        let mut t = w.open_table(LATE).map_err(|e| self.db.fail(e))?;
        for l in late {
            let json = serde_json::to_vec(l).map_err(|e| self.db.fail(e))?;
            let key = time_key(l.event_time_ms, &format!("{}|{}", l.detector, l.event_id));
            t.insert(key.as_str(), json.as_slice())
                .map_err(|e| self.db.fail(e))?;
        }
        let len = t.len().map_err(|e| self.db.fail(e))?;
        if len > LATE_RETAINED {
            let drop: Vec<String> = t
                .iter()
                .map_err(|e| self.db.fail(e))?
                .take((len - LATE_RETAINED) as usize)
                .filter_map(|item| item.ok().map(|(k, _)| k.value().to_string()))
                .collect();
            for k in drop {
                t.remove(k.as_str()).map_err(|e| self.db.fail(e))?;
            }
        }
        Ok(())
    }

    /// Late events by event time, newest first, optionally of one
    /// detector or account; `after` is the previous page's token.
    pub fn late_events(
        &self,
        detector: &str,
        account_id: &str,
        page_size: usize,
        after: Option<&str>,
    ) -> Result<(Vec<LateEvent>, Option<String>), StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(LATE).map_err(|e| self.db.fail(e))?;
        let upper = after.unwrap_or("~").to_string();
        let mut out = Vec::new();
        let mut last_key = None;
        for item in t
            .range(..upper.as_str())
            .map_err(|e| self.db.fail(e))?
            .rev()
        {
            let (k, v) = item.map_err(|e| self.db.fail(e))?;
            let Ok(l) = serde_json::from_slice::<LateEvent>(v.value()) else {
                continue;
            };
            if (!detector.is_empty() && l.detector != detector)
                || (!account_id.is_empty() && l.account_id != account_id)
            {
                continue;
            }
            if out.len() == page_size {
                return Ok((out, last_key));
            }
            last_key = Some(k.value().to_string());
            out.push(l);
        }
        Ok((out, None))
    }

    pub fn anomaly(&self, id: &str) -> Result<Option<Anomaly>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(ANOMALIES).map_err(|e| self.db.fail(e))?;
        match t.get(id).map_err(|e| self.db.fail(e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| self.db.fail(e).into()),
        }
    }

    /// Anomalies newest window first. `after` is the previous page's token.
    pub fn list(
        &self,
        filter: &AnomalyFilter,
        page_size: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Anomaly>, Option<String>), StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let by_time = r.open_table(BY_TIME).map_err(|e| self.db.fail(e))?;
        let anomalies = r.open_table(ANOMALIES).map_err(|e| self.db.fail(e))?;
        let upper = match (after, filter.end_ms) {
            (Some(tok), _) => tok.to_string(),
            (None, Some(end)) => time_key(end, ""),
            (None, None) => "~".to_string(),
        };
        let lower = filter.start_ms.map(|s| time_key(s, "")).unwrap_or_default();
        let index = by_time
            .range(lower.as_str()..upper.as_str())
            .map_err(|e| self.db.fail(e))?;
        Ok(
            trailhound_runtime::store::newest_first(index, &anomalies, page_size, |a| {
                filter.matches(a)
            })
            .map_err(|e| self.db.fail(e))?,
        )
    }

    /// Every stored anomaly detected at or after `since_ms`, oldest first.
    pub fn detected_since(&self, since_ms: i64) -> Result<Vec<Anomaly>, StoreError> {
        let (mut all, _) = self.list(&AnomalyFilter::default(), usize::MAX, None)?;
        all.retain(|a| a.detected_at.timestamp_millis() >= since_ms);
        all.reverse();
        Ok(all)
    }

    pub fn series(
        &self,
        detector: &str,
        entity: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(SERIES).map_err(|e| self.db.fail(e))?;
        let lo = series_key(detector, entity, start_ms);
        let hi = series_key(detector, entity, end_ms);
        let mut out = Vec::new();
        for item in t
            .range(lo.as_str()..hi.as_str())
            .map_err(|e| self.db.fail(e))?
        {
            let (_, v) = item.map_err(|e| self.db.fail(e))?;
            if let Ok(p) = postcard::from_bytes::<SeriesPoint>(v.value()) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Start of the entity's newest stored window, if it has any.
    pub fn series_latest(&self, detector: &str, entity: &str) -> Result<Option<i64>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(SERIES).map_err(|e| self.db.fail(e))?;
        let lo = series_key(detector, entity, i64::MIN / 4);
        let hi = series_key(detector, entity, i64::MAX / 4);
        let last = t
            .range(lo.as_str()..hi.as_str())
            .map_err(|e| self.db.fail(e))?
            .next_back();
        match last {
            Some(item) => {
                let (_, v) = item.map_err(|e| self.db.fail(e))?;
                Ok(postcard::from_bytes::<SeriesPoint>(v.value())
                    .ok()
                    .map(|p| p.window_start_ms))
            }
            None => Ok(None),
        }
    }

    /// Makes every earlier commit durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db
            .begin_write()
            .map_err(|e| self.db.fail(e))?
            .commit()
            .map_err(|e| self.db.fail(e).into())
    }

    pub fn save_detectors(&self, specs: &[DetectorSpec]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(|e| self.db.fail(e))?;
        {
            let mut t = w.open_table(DETECTORS).map_err(|e| self.db.fail(e))?;
            t.retain(|_, _| false).map_err(|e| self.db.fail(e))?;
            for s in specs {
                let json = serde_json::to_vec(s).map_err(|e| self.db.fail(e))?;
                t.insert(s.name.as_str(), json.as_slice())
                    .map_err(|e| self.db.fail(e))?;
            }
        }
        w.commit().map_err(|e| self.db.fail(e).into())
    }

    /// Stored detector definitions, or None when none were ever saved.
    pub fn load_detectors(&self) -> Result<Option<Vec<DetectorSpec>>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(DETECTORS).map_err(|e| self.db.fail(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.db.fail(e))? {
            let (_, v) = item.map_err(|e| self.db.fail(e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| self.db.fail(e))?);
        }
        Ok((!out.is_empty()).then_some(out))
    }

    pub fn save_checkpoint(&self, c: &Checkpoint) -> Result<usize, StoreError> {
        self.save_checkpoint_at(c, None, 0)
    }

    /// Saves a checkpoint that includes every log entry up to `wal_seq`
    /// and drops those entries, and the batch fingerprints older than
    /// `keep_batches_from`, in the same transaction. Each entity and each
    /// account history is a value of its own, so no value grows with the
    /// organization (redb refuses values past 3 GiB). Returns the bytes
    /// written.
    pub fn save_checkpoint_at(
        &self,
        c: &Checkpoint,
        wal_seq: Option<u64>,
        keep_batches_from: u64,
    ) -> Result<usize, StoreError> {
        let header = postcard::to_stdvec(&c.header).map_err(|e| self.db.fail(e))?;
        let mut total = header.len();
        let w = self.db.begin_write().map_err(|e| self.db.fail(e))?;
        {
            let mut t = w.open_table(STATE).map_err(|e| self.db.fail(e))?;
            t.insert(CHECKPOINT_HEADER, header.as_slice())
                .map_err(|e| self.db.fail(e))?;
            // The single-value checkpoint of earlier versions, if any.
            t.remove("checkpoint").map_err(|e| self.db.fail(e))?;
            let mut entities = w
                .open_table(CHECKPOINT_ENTITIES)
                .map_err(|e| self.db.fail(e))?;
            entities.retain(|_, _| false).map_err(|e| self.db.fail(e))?;
            for (detector, key, state) in &c.entities {
                let bytes = postcard::to_stdvec(state).map_err(|e| self.db.fail(e))?;
                total += bytes.len();
                entities
                    .insert(format!("{detector}\u{1f}{key}").as_str(), bytes.as_slice())
                    .map_err(|e| self.db.fail(e))?;
            }
            let mut accounts = w
                .open_table(CHECKPOINT_ACCOUNTS)
                .map_err(|e| self.db.fail(e))?;
            accounts.retain(|_, _| false).map_err(|e| self.db.fail(e))?;
            for (account, history) in &c.accounts {
                let bytes = postcard::to_stdvec(history).map_err(|e| self.db.fail(e))?;
                total += bytes.len();
                accounts
                    .insert(account.as_str(), bytes.as_slice())
                    .map_err(|e| self.db.fail(e))?;
            }
            if let Some(seq) = wal_seq {
                t.insert(CHECKPOINT_SEQ, seq.to_le_bytes().as_slice())
                    .map_err(|e| self.db.fail(e))?;
                let mut wal = w.open_table(WAL).map_err(|e| self.db.fail(e))?;
                wal.retain_in(..=seq, |_, _| false)
                    .map_err(|e| self.db.fail(e))?;
            }
            let mut batches = w.open_table(BATCHES).map_err(|e| self.db.fail(e))?;
            batches
                .retain_in(..keep_batches_from, |_, _| false)
                .map_err(|e| self.db.fail(e))?;
        }
        w.commit().map_err(|e| self.db.fail(e))?;
        Ok(total)
    }

    /// The last log entry the stored checkpoint includes (0: none).
    pub fn checkpoint_wal_seq(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(STATE).map_err(|e| self.db.fail(e))?;
        Ok(match t.get(CHECKPOINT_SEQ).map_err(|e| self.db.fail(e))? {
            Some(v) => <[u8; 8]>::try_from(v.value())
                .map(u64::from_le_bytes)
                .unwrap_or(0),
            None => 0,
        })
    }

    /// Up to `limit` log entries after `after`, in order.
    pub fn wal_entries(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(WAL).map_err(|e| self.db.fail(e))?;
        let mut out = Vec::new();
        let Some(from) = after.checked_add(1) else {
            return Ok(out);
        };
        for item in t.range(from..).map_err(|e| self.db.fail(e))?.take(limit) {
            let (k, v) = item.map_err(|e| self.db.fail(e))?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The newest log entry's sequence number, if the log has any.
    pub fn wal_last_seq(&self) -> Result<Option<u64>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(WAL).map_err(|e| self.db.fail(e))?;
        let last = t.last().map_err(|e| self.db.fail(e))?;
        Ok(last.map(|(k, _)| k.value()))
    }

    /// Fingerprints of the batches remembered, oldest first.
    pub fn recent_batches(&self) -> Result<Vec<(u64, u128)>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(BATCHES).map_err(|e| self.db.fail(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.db.fail(e))? {
            let (k, v) = item.map_err(|e| self.db.fail(e))?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
    }

    /// The stored checkpoint, if there is one that this build can read.
    /// An unreadable entity or account is skipped (and said so), not the
    /// whole checkpoint: the rest still resumes.
    pub fn load_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(STATE).map_err(|e| self.db.fail(e))?;
        let header: CheckpointHeader = match t
            .get(CHECKPOINT_HEADER)
            .map_err(|e| self.db.fail(e))?
        {
            None => return Ok(None),
            Some(v) => match postcard::from_bytes(v.value()) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring unreadable detector checkpoint; learning afresh");
                    return Ok(None);
                }
            },
        };
        let mut unreadable = 0u64;
        let mut entities = Vec::new();
        let table = r
            .open_table(CHECKPOINT_ENTITIES)
            .map_err(|e| self.db.fail(e))?;
        for item in table.iter().map_err(|e| self.db.fail(e))? {
            let (k, v) = item.map_err(|e| self.db.fail(e))?;
            let key = k.value();
            let Some((detector, entity)) = key.split_once('\u{1f}') else {
                unreadable += 1;
                continue;
            };
            match postcard::from_bytes::<EntityChunk>(v.value()) {
                Ok(state) => entities.push((detector.to_string(), entity.to_string(), state)),
                Err(_) => unreadable += 1,
            }
        }
        let mut accounts = Vec::new();
        let table = r
            .open_table(CHECKPOINT_ACCOUNTS)
            .map_err(|e| self.db.fail(e))?;
        for item in table.iter().map_err(|e| self.db.fail(e))? {
            let (k, v) = item.map_err(|e| self.db.fail(e))?;
            match postcard::from_bytes::<AccountChunk>(v.value()) {
                Ok(h) => accounts.push((k.value().to_string(), h)),
                Err(_) => unreadable += 1,
            }
        }
        if unreadable > 0 {
            tracing::warn!(
                unreadable,
                "skipped unreadable entities in the detector checkpoint; they learn afresh"
            );
        }
        Ok(Some(Checkpoint {
            header,
            entities,
            accounts,
        }))
    }
}
