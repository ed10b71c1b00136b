//! The generic webhook's JSON body (also the log channel's JSON line):
//!
//! ```json
//! {"event": "insight.opened" | "insight.follow_up",
//!  "delivery_id": "…", "rule": "…", "sent_at": "2026-01-12T10:10:07Z",
//!  "follow_up": null | {"reason": "escalated", "from": "medium", "to": "high", "totals": {…}, …},
//!  "insight": {…the insight, as trailhound's JSON…}}
//! ```

use serde_json::{Value, json};

use super::Message;

pub fn render(m: &Message<'_>) -> Value {
    json!({
        "event": m.event(),
        "delivery_id": m.delivery_id,
        "rule": m.rule,
        "sent_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "follow_up": m.follow_up,
        "insight": m.insight,
    })
}
