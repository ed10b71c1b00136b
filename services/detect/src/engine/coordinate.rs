//! Who is rising in several accounts at once: principal names with the account removed, for the coordination rule.

#[allow(unused_imports)]
use super::*;

/// An account rising in a window, remembered for a few windows to find
/// accounts rising together (see [`EngineConfig::coordinated_min_accounts`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Rising {
    pub(super) window_start: i64,
    pub(super) account_id: String,
    pub(super) entity_key: String,
    /// What accounts acting together share: `principal:NAME` and `ip:ADDR`
    /// for an account rising, `actor:ROLE@ADDR` for an address new to the
    /// account acting in it.
    pub(super) keys: Vec<String>,
    /// The coordinated anomaly to raise if others join; None once raised,
    /// or when the window was anomalous on its own.
    pub(super) candidate: Option<Anomaly>,
}

/// A role's name without its session (`assumed-role/Ops/alice` →
/// `assumed-role/Ops`): sessions are named per run, the role is the actor.
pub(super) fn role_name(name: &str) -> &str {
    match name.strip_prefix("assumed-role/") {
        Some(rest) => match rest.find('/') {
            Some(i) => &name[..("assumed-role/".len() + i)],
            None => name,
        },
        None => name,
    }
}

/// A principal's name without the account it lives in:
/// `arn:aws:sts::111122223333:assumed-role/Ops/alice` → `assumed-role/Ops/alice`,
/// the same name in every account.
pub(super) fn principal_name(p: &str) -> &str {
    if p.starts_with("arn:") {
        p.splitn(6, ':').nth(5).unwrap_or(p)
    } else {
        p
    }
}
