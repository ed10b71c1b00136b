//! Reads of detect's store and engine for the query RPCs: anomalies,
//! series, late events, accounts, and the watchers' channel.

use std::sync::Arc;

use tokio::sync::broadcast;
use trailhound_core::Anomaly;

use super::{Detect, DetectError};
use crate::engine::LateEvent;
use crate::store::{AnomalyFilter, SeriesPoint};

impl Detect {
    /// Late events recorded, newest first (see
    /// [`DetectStore::late_events`](crate::store::DetectStore::late_events)).
    pub fn late_events(
        &self,
        detector: &str,
        account_id: &str,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<LateEvent>, Option<String>), DetectError> {
        Ok(self
            .store
            .late_events(detector, account_id, page_size, token)?)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Anomaly>> {
        self.watchers.subscribe()
    }

    pub fn list(
        &self,
        filter: &AnomalyFilter,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<Anomaly>, Option<String>), DetectError> {
        Ok(self.store.list(filter, page_size, token)?)
    }

    pub fn get(&self, id: &str) -> Result<Option<Anomaly>, DetectError> {
        Ok(self.store.anomaly(id)?)
    }

    pub fn detected_since(&self, since_ms: i64) -> Result<Vec<Anomaly>, DetectError> {
        Ok(self.store.detected_since(since_ms)?)
    }

    /// An entity's series; the entity key is the category values joined by '/'.
    pub fn series(
        &self,
        detector: &str,
        entity_key: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesPoint>, DetectError> {
        if self.detector(detector).is_none() {
            return Err(DetectError::NotFound(detector.to_string()));
        }
        Ok(self.store.series(detector, entity_key, start_ms, end_ms)?)
    }

    /// Start of the entity's newest window in the store.
    pub fn series_latest(
        &self,
        detector: &str,
        entity_key: &str,
    ) -> Result<Option<i64>, DetectError> {
        Ok(self.store.series_latest(detector, entity_key)?)
    }

    /// What the engine knows of `account_id` (see
    /// [`Engine::account`](crate::engine::Engine::account)).
    pub fn account(&self, account_id: &str) -> Option<trailhound_core::AccountMetadata> {
        self.engine().account(account_id).map(|a| (*a).clone())
    }
}
