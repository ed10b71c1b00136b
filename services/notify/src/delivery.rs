//! A delivery: one insight on one channel, what was sent where and how it
//! went. Its own module because both the notifier (which makes them) and
//! the store (which keeps them) need it, and neither should import the
//! other for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::ChannelKind;

/// How a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Still being tried.
    Pending,
    /// Accepted by the channel.
    Delivered,
    /// Gave up after retries; written to the dead-letter file.
    Failed,
    /// Not sent: a duplicate, a later window within the follow-up
    /// interval, or over the rate limit. `detail` says which.
    Skipped,
}

/// One insight on one channel: what was sent where and how it went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub insight_id: String,
    pub incident_id: String,
    pub channel: String,
    pub channel_kind: ChannelKind,
    /// The routing rule that chose the channel.
    pub rule: String,
    pub status: DeliveryStatus,
    /// An update to an incident the channel was already told about.
    pub follow_up: bool,
    pub attempts: u32,
    /// Why it failed or was skipped; what kind of follow-up it was.
    pub detail: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The insight's account, so ListDeliveries shows a scoped caller only
    /// its accounts' deliveries (empty: visible to unrestricted callers
    /// only).
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub ou_path: Vec<String>,
    #[serde(default = "unknown_environment")]
    pub environment: trailhound_core::Environment,
}

fn unknown_environment() -> trailhound_core::Environment {
    trailhound_core::Environment::Unknown
}
