//! Domain types shared by trailhound's services, and the CloudTrail parsers.
//!
//! Services validate protobuf messages into these types at their boundary
//! and convert back in one place (`convert`), so domain logic never sees an
//! `Option` where a value is required, and never sees gRPC. The parsers live
//! here rather than in ingest because the CLI's replay path and the tests use
//! exactly the same code.

pub mod account;
pub mod anomaly;
pub mod cloudtrail;
pub mod convert;
pub mod debug;
pub mod detector;
pub mod event;
pub mod fieldpath;
pub mod incident;
pub mod insight;
pub mod pipeline;
pub mod reasons;
pub mod regions;
pub mod scope;
pub mod shard;
pub mod text;

pub use account::{AccountMetadata, Environment, EnvironmentRules, OrgSnapshot};
pub use anomaly::{Anomaly, AnomalyKind, Contributor, FeatureValue};
pub use cloudtrail::{ParseLimits, Rejection};
pub use detector::{Aggregation, DetectorSpec, ErrorFilter, FeatureSpec};
pub use event::{EnrichedEvent, Event, UserIdentity};
pub use insight::{CostImpact, Insight, Severity};
pub use scope::{Scope, ScopeRule};
pub use shard::{Shard, shard_of};

/// Checks a 12-digit AWS account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}
