//! Detector management: the detector set in the engine, saved to the
//! store and logged so a replay applies each change in its place.

use trailhound_core::DetectorSpec;

use super::error::wal_error;
use super::{Detect, DetectError};
use crate::engine::Engine;
use crate::wal;

impl Detect {
    pub fn detectors(&self) -> Vec<DetectorSpec> {
        self.engine().specs().cloned().collect()
    }

    pub fn detector(&self, name: &str) -> Option<DetectorSpec> {
        self.engine().specs().find(|s| s.name == name).cloned()
    }

    /// Saves the detector set; with the log, also logs it, so a replay
    /// applies the change between the same batches as the engine did.
    fn save(&self, engine: &mut Engine) -> Result<(), DetectError> {
        let specs: Vec<DetectorSpec> = engine.specs().cloned().collect();
        self.store.save_detectors(&specs)?;
        if self.wal_options.enabled {
            let entry = wal::encode_detectors(&specs).map_err(wal_error)?;
            self.commit_locked(engine, &entry, None, 0, &[], &[])?;
        }
        Ok(())
    }

    pub fn create_detector(&self, spec: DetectorSpec) -> Result<DetectorSpec, DetectError> {
        spec.validate().map_err(DetectError::InvalidDetector)?;
        let mut e = self.engine();
        if e.specs().any(|s| s.name == spec.name) {
            return Err(DetectError::AlreadyExists(spec.name));
        }
        e.upsert_detector(spec.clone());
        self.save(&mut e)?;
        Ok(spec)
    }

    pub fn update_detector(&self, spec: DetectorSpec) -> Result<DetectorSpec, DetectError> {
        spec.validate().map_err(DetectError::InvalidDetector)?;
        let mut e = self.engine();
        if !e.specs().any(|s| s.name == spec.name) {
            return Err(DetectError::NotFound(spec.name));
        }
        e.upsert_detector(spec.clone());
        self.save(&mut e)?;
        Ok(spec)
    }

    pub fn delete_detector(&self, name: &str) -> Result<(), DetectError> {
        let mut e = self.engine();
        if !e.remove_detector(name) {
            return Err(DetectError::NotFound(name.to_string()));
        }
        self.save(&mut e)
    }

    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<DetectorSpec, DetectError> {
        let mut e = self.engine();
        let mut spec = e
            .specs()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| DetectError::NotFound(name.to_string()))?;
        spec.enabled = enabled;
        e.upsert_detector(spec.clone());
        self.save(&mut e)?;
        Ok(spec)
    }
}
