//! Shared by the OpenSearch backend's test files: a generated trail,
//! enriched from its org snapshot the way enrich does it.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use trailhound_core::{EnrichedEvent, EnvironmentRules, OrgSnapshot};
use trailhound_generate::GenerateConfig;

/// A small generated organization: a few accounts over a day and a half,
/// with its incidents.
pub fn generated_trail(dir: &Path) -> Vec<EnrichedEvent> {
    let cfg = GenerateConfig {
        days: 2,
        accounts: 4,
        seed: 7,
        noise_per_account_hour: 4,
        ..Default::default()
    };
    trailhound_generate::generate(&cfg, dir).unwrap();
    let org = OrgSnapshot::load(&dir.join("org.json")).unwrap();
    let rules = EnvironmentRules::default();
    let accounts: HashMap<String, Arc<trailhound_core::AccountMetadata>> = org
        .accounts
        .iter()
        .map(|a| {
            (
                a.id.clone(),
                Arc::new(rules.metadata(&org.organization_id, a)),
            )
        })
        .collect();
    let mut out = Vec::new();
    for g in trailhound_trail::files::delivery_groups(&dir.join("trail")).unwrap() {
        let parsed = trailhound_trail::read::parse_group(&g.files, &Default::default());
        for e in parsed.events {
            let account = accounts
                .get(&e.recipient_account_id)
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(trailhound_core::AccountMetadata::external(
                        &e.recipient_account_id,
                    ))
                });
            out.push(EnrichedEvent { event: e, account });
        }
    }
    out
}
