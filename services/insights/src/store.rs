//! The embedded insight store (redb): insights by id, a time index for
//! listing and questions, and the open incident of each entity, so a
//! restart keeps grouping windows into the same incidents.

use std::path::Path;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use trailhound_core::Insight;

const INSIGHTS: TableDefinition<&str, &[u8]> = TableDefinition::new("insights");
/// "{window_start_ms:020}|{id}" → ().
const BY_TIME: TableDefinition<&str, ()> = TableDefinition::new("insights_by_time");
/// "{analyzed_at_ms:020}|{id}" → (): what WatchInsights replays.
const BY_ANALYSIS: TableDefinition<&str, ()> = TableDefinition::new("insights_by_analysis");
/// entity key → postcard(OpenIncident).
const INCIDENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("incidents");

trailhound_runtime::store_error!(StoreError, "insight store");

/// The latest incident of one entity: its id and where its last window
/// ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenIncident {
    pub incident_id: String,
    pub last_end_ms: i64,
}

#[derive(Clone, Debug)]
pub struct InsightStore {
    db: Db,
}

use trailhound_runtime::store::{Db, time_key};

impl InsightStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, |w| {
            w.open_table(INSIGHTS)?;
            w.open_table(BY_TIME)?;
            w.open_table(BY_ANALYSIS)?;
            w.open_table(INCIDENTS)?;
            Ok(())
        })?;
        Ok(Self { db })
    }

    /// Saves insights and the entities' open incidents in one transaction.
    pub fn put(
        &self,
        insights: &[Insight],
        incidents: &[(String, OpenIncident)],
    ) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(|e| self.db.fail(e))?;
        // Not fsynced per batch (analysis sits in detect's forwarding
        // path); `sync` makes it durable, every few seconds and at
        // shutdown. A crash loses at most that much, and detect still has
        // the anomalies.
        w.set_durability(redb::Durability::Eventual);
        {
            let mut t = w.open_table(INSIGHTS).map_err(|e| self.db.fail(e))?;
            let mut by_time = w.open_table(BY_TIME).map_err(|e| self.db.fail(e))?;
            let mut by_analysis = w.open_table(BY_ANALYSIS).map_err(|e| self.db.fail(e))?;
            for i in insights {
                // A re-analysis replaces the old entry and its index keys.
                let old: Option<Insight> = t
                    .get(i.id.as_str())
                    .map_err(|e| self.db.fail(e))?
                    .and_then(|v| serde_json::from_slice(v.value()).ok());
                if let Some(old) = old {
                    by_analysis
                        .remove(time_key(old.analyzed_at.timestamp_millis(), &old.id).as_str())
                        .map_err(|e| self.db.fail(e))?;
                }
                let json = serde_json::to_vec(i).map_err(|e| self.db.fail(e))?;
                t.insert(i.id.as_str(), json.as_slice())
                    .map_err(|e| self.db.fail(e))?;
                by_time
                    .insert(
                        time_key(i.anomaly.window_start.timestamp_millis(), &i.id).as_str(),
                        (),
                    )
                    .map_err(|e| self.db.fail(e))?;
                by_analysis
                    .insert(
                        time_key(i.analyzed_at.timestamp_millis(), &i.id).as_str(),
                        (),
                    )
                    .map_err(|e| self.db.fail(e))?;
            }
            let mut inc = w.open_table(INCIDENTS).map_err(|e| self.db.fail(e))?;
            for (entity, open) in incidents {
                let bytes = postcard::to_stdvec(open).map_err(|e| self.db.fail(e))?;
                inc.insert(entity.as_str(), bytes.as_slice())
                    .map_err(|e| self.db.fail(e))?;
            }
        }
        w.commit().map_err(|e| self.db.fail(e).into())
    }

    /// Makes every earlier commit durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db
            .begin_write()
            .map_err(|e| self.db.fail(e))?
            .commit()
            .map_err(|e| self.db.fail(e).into())
    }

    pub fn get(&self, id: &str) -> Result<Option<Insight>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(INSIGHTS).map_err(|e| self.db.fail(e))?;
        match t.get(id).map_err(|e| self.db.fail(e))? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| self.db.fail(e).into()),
            None => Ok(None),
        }
    }

    pub fn incident(&self, entity: &str) -> Result<Option<OpenIncident>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(INCIDENTS).map_err(|e| self.db.fail(e))?;
        Ok(t.get(entity)
            .map_err(|e| self.db.fail(e))?
            .and_then(|v| postcard::from_bytes(v.value()).ok()))
    }

    /// Insights newest window first, those `keep` accepts, after the
    /// position `after` (a page token: the last time key returned), at
    /// most `limit`. Returns the page and the next token.
    pub fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl FnMut(&Insight) -> bool,
    ) -> Result<(Vec<Insight>, Option<String>), StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let idx = r.open_table(BY_TIME).map_err(|e| self.db.fail(e))?;
        let t = r.open_table(INSIGHTS).map_err(|e| self.db.fail(e))?;
        let index = match after {
            Some(k) => idx.range(..k).map_err(|e| self.db.fail(e))?,
            None => idx.range::<&str>(..).map_err(|e| self.db.fail(e))?,
        };
        Ok(
            trailhound_runtime::store::newest_first(index, &t, limit, keep)
                .map_err(|e| self.db.fail(e))?,
        )
    }

    /// Insights analyzed at or after `since_ms`, oldest first.
    pub fn analyzed_since(&self, since_ms: i64, limit: usize) -> Result<Vec<Insight>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let idx = r.open_table(BY_ANALYSIS).map_err(|e| self.db.fail(e))?;
        let t = r.open_table(INSIGHTS).map_err(|e| self.db.fail(e))?;
        let from = time_key(since_ms, "");
        let mut out = Vec::new();
        for item in idx.range(from.as_str()..).map_err(|e| self.db.fail(e))? {
            let (k, _) = item.map_err(|e| self.db.fail(e))?;
            let key = k.value().to_string();
            let Some((_, id)) = key.split_once('|') else {
                continue;
            };
            if let Some(v) = t.get(id).map_err(|e| self.db.fail(e))?
                && let Ok(i) = serde_json::from_slice::<Insight>(v.value())
            {
                out.push(i);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The end of the newest window stored, if any: "now" for questions
    /// about replayed history.
    pub fn newest_window_end(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let (page, _) = self.scan(None, 1, |_| true)?;
        Ok(page.first().map(|i| i.anomaly.window_end))
    }
}
