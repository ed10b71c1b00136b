//! The OpenSearch backend's side of detect: handing detection to it, and
//! reading anomalies and series from the cluster (scoped pages filled here).

use std::sync::Arc;

use trailhound_core::{Anomaly, DetectorSpec};

use super::error::backend_error;
use super::{Detect, DetectError};
use crate::store::{AnomalyFilter, SeriesPoint};

impl Detect {
    /// Hands detection to the OpenSearch backend (once).
    pub fn set_opensearch(&self, backend: Arc<trailhound_opensearch::Backend>) {
        let _ = self.opensearch.set(backend);
    }

    pub fn opensearch(&self) -> Option<Arc<trailhound_opensearch::Backend>> {
        self.opensearch.get().cloned()
    }

    /// ListAnomalies from the active backend. With OpenSearch a scoped
    /// caller's page is filled from as many reads as it takes (at most
    /// [`MAX_SCOPED_READS`]).
    pub async fn list_any(
        &self,
        filter: &AnomalyFilter,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<Anomaly>, Option<String>), DetectError> {
        let Some(os) = self.opensearch.get() else {
            return self.list(filter, page_size, token);
        };
        let q = trailhound_opensearch::AnomalyQuery {
            account_id: filter.account_id.clone(),
            environment: filter.environment,
            ou: filter.ou.clone(),
            detector: filter.detector.clone(),
            service: filter.service.clone(),
            region: filter.region.clone(),
            start_ms: filter.start_ms,
            end_ms: filter.end_ms,
            min_grade: filter.min_grade,
        };
        if filter.scope.is_unrestricted() {
            return os.list(&q, page_size, token).await.map_err(backend_error);
        }
        // The cluster's query knows no scopes: out-of-scope anomalies are
        // dropped here, and further pages read until this one is full, so
        // a scoped caller's page is as full as anyone's (a short page
        // would hint at what was dropped). Bounded: after MAX_SCOPED_READS
        // reads the page goes back short, with a token to go on from.
        let mut page: Vec<Anomaly> = Vec::new();
        let mut cursor = token.map(str::to_string);
        for _ in 0..MAX_SCOPED_READS {
            let (batch, next) = os
                .list(&q, page_size, cursor.as_deref())
                .await
                .map_err(backend_error)?;
            let read_to = batch.last().map(os_token);
            for a in batch {
                if !filter
                    .scope
                    .allows(&a.account_id, &a.ou_path, a.environment)
                {
                    continue;
                }
                page.push(a);
                if page.len() == page_size {
                    // Full: the next page starts after its last anomaly
                    // (which is where the cluster would go on, if more).
                    let after = page.last().map(os_token);
                    let more = next.is_some() || after != read_to;
                    return Ok((page, after.filter(|_| more)));
                }
            }
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok((page, None)),
            }
        }
        Ok((page, cursor))
    }

    fn os_entity(
        &self,
        detector: &str,
        entity_key: &str,
    ) -> Result<(DetectorSpec, Vec<(String, String)>), DetectError> {
        let spec = self
            .detector(detector)
            .ok_or_else(|| DetectError::NotFound(detector.to_string()))?;
        let entity = spec
            .category_fields
            .iter()
            .map(|f| f.to_string())
            .zip(entity_key.split('/').map(str::to_string))
            .collect();
        Ok((spec, entity))
    }

    /// An entity's series from the active backend.
    pub async fn series_any(
        &self,
        detector: &str,
        entity_key: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesPoint>, DetectError> {
        let Some(os) = self.opensearch.get() else {
            return self.series(detector, entity_key, start_ms, end_ms);
        };
        let (spec, entity) = self.os_entity(detector, entity_key)?;
        let points = os
            .series(&spec, &entity, start_ms, end_ms)
            .await
            .map_err(backend_error)?;
        Ok(points
            .into_iter()
            .map(|p| SeriesPoint {
                window_start_ms: p.window_start_ms,
                actual: p.actual,
                expected: p.expected,
                lower: p.lower,
                upper: p.upper,
                grade: p.grade,
            })
            .collect())
    }

    /// Start of the entity's newest window, from the active backend.
    pub async fn series_latest_any(
        &self,
        detector: &str,
        entity_key: &str,
    ) -> Result<Option<i64>, DetectError> {
        let Some(os) = self.opensearch.get() else {
            return self.series_latest(detector, entity_key);
        };
        let (spec, entity) = self.os_entity(detector, entity_key)?;
        os.series_latest(&spec, &entity)
            .await
            .map_err(backend_error)
    }
}

/// Reads of the cluster one scoped ListAnomalies page may take.
pub const MAX_SCOPED_READS: usize = 20;

/// The page token that goes on after `a` (the OpenSearch backend's
/// `search_after` key: window start, then id).
fn os_token(a: &Anomaly) -> String {
    format!("{}|{}", a.window_start.timestamp_millis(), a.id)
}
