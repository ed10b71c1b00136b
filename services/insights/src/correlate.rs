//! Org-wide correlation: the same principal, source IP or pattern in
//! several accounts within a window is one incident, and every insight of
//! it names all the accounts.
//!
//! Principals are compared without their account ("user/ci-deployer",
//! "assumed-role/Admin/mallory"), because the same actor in another
//! account has another ARN. AWS service principals and addresses, and
//! private IPs, are not evidence of a shared actor and are skipped.
//! Patterns are deliberately narrow (GPU launches of one type, first use
//! of one region) so that ordinary busy hours do not correlate.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use trailhound_core::insight::Correlation;
use trailhound_core::{Anomaly, AnomalyKind};

use crate::instance::is_accelerated;

#[derive(Clone, Debug)]
struct Seen {
    anomaly_id: String,
    account_id: String,
    account_name: String,
    window_start: DateTime<Utc>,
    keys: Vec<(&'static str, String)>,
}

/// Recent anomalies' keys, bounded by time and count.
#[derive(Debug)]
pub struct Correlator {
    window: Duration,
    recent: VecDeque<Seen>,
    cap: usize,
}

/// The account-independent name of a principal, if it names an actor.
pub fn actor(principal: &str) -> Option<String> {
    let rest = principal.strip_prefix("arn:aws")?;
    let resource = rest.splitn(5, ':').nth(4)?;
    if resource.is_empty() || resource == "root" {
        return None;
    }
    Some(resource.to_string())
}

fn is_private_or_service(ip: &str) -> bool {
    if ip.ends_with(".amazonaws.com") || ip == "AWS Internal" {
        return true;
    }
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        Ok(std::net::IpAddr::V6(v6)) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => true,
    }
}

/// What an anomaly could share with another account's, strongest first.
pub fn keys(a: &Anomaly) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for c in a.top_contributors.iter().filter(|c| c.share >= 0.2) {
        match c.dimension.as_str() {
            "principal" => {
                if let Some(actor) = actor(&c.value) {
                    out.push(("principal", actor));
                }
            }
            "source_ip" if !is_private_or_service(&c.value) => {
                out.push(("source_ip", c.value.clone()));
            }
            "instance_type" if is_accelerated(&c.value) => {
                out.push(("pattern", format!("{} of {}", a.detector, c.value)));
            }
            _ => {}
        }
    }
    if a.kind == AnomalyKind::NewRegion {
        out.push(("pattern", format!("first {} in {}", a.detector, a.region)));
    }
    out
}

fn rank(kind: &str) -> usize {
    match kind {
        "principal" => 0,
        "source_ip" => 1,
        _ => 2,
    }
}

impl Correlator {
    pub fn new(window: std::time::Duration) -> Self {
        Self {
            window: Duration::from_std(window).unwrap_or(Duration::hours(1)),
            recent: VecDeque::new(),
            cap: 50_000,
        }
    }

    /// Remembers the anomaly and returns the correlation it is part of, if
    /// another account shows one of its keys within the window.
    pub fn observe(&mut self, a: &Anomaly) -> Option<Correlation> {
        let keys = keys(a);
        let horizon = a.window_start - self.window;
        while self
            .recent
            .front()
            .is_some_and(|s| s.window_start < horizon - self.window)
        {
            self.recent.pop_front();
        }
        let mut best: Option<Correlation> = None;
        for (kind, value) in &keys {
            let mut matches: Vec<&Seen> = self
                .recent
                .iter()
                .filter(|s| {
                    s.account_id != a.account_id
                        && (s.window_start - a.window_start).abs() <= self.window
                        && s.keys.iter().any(|(k, v)| k == kind && v == value)
                })
                .collect();
            if matches.is_empty() {
                continue;
            }
            matches.sort_by_key(|s| s.window_start);
            let mut accounts: Vec<(String, String)> = Vec::new();
            let mut ids: Vec<String> = Vec::new();
            for s in &matches {
                if !accounts.iter().any(|(id, _)| *id == s.account_id) {
                    accounts.push((s.account_id.clone(), s.account_name.clone()));
                }
                ids.push(s.anomaly_id.clone());
            }
            accounts.push((a.account_id.clone(), a.account_name.clone()));
            ids.push(a.id.clone());
            let first = matches
                .first()
                .map(|s| s.window_start)
                .unwrap_or(a.window_start)
                .min(a.window_start);
            let candidate = Correlation {
                id: format!("corr:{kind}:{value}:{}", first.timestamp_millis()),
                kind: kind.to_string(),
                value: value.clone(),
                account_ids: accounts.iter().map(|(id, _)| id.clone()).collect(),
                account_names: accounts.into_iter().map(|(_, n)| n).collect(),
                anomaly_ids: ids,
            };
            let better = match &best {
                None => true,
                Some(b) => {
                    (
                        rank(&candidate.kind),
                        usize::MAX - candidate.account_ids.len(),
                    ) < (rank(&b.kind), usize::MAX - b.account_ids.len())
                }
            };
            if better {
                best = Some(candidate);
            }
        }
        if !keys.is_empty() {
            if self.recent.len() >= self.cap {
                self.recent.pop_front();
            }
            self.recent.push_back(Seen {
                anomaly_id: a.id.clone(),
                account_id: a.account_id.clone(),
                account_name: a.account_name.clone(),
                window_start: a.window_start,
                keys,
            });
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_drop_the_account() {
        assert_eq!(
            actor("arn:aws:sts::111122223333:assumed-role/Admin/mallory").as_deref(),
            Some("assumed-role/Admin/mallory")
        );
        assert_eq!(
            actor("arn:aws:iam::444455556666:user/ci").as_deref(),
            Some("user/ci")
        );
        assert_eq!(actor("arn:aws:iam::444455556666:root"), None);
        assert_eq!(actor("lambda.amazonaws.com"), None);
        assert!(is_private_or_service("10.1.2.3"));
        assert!(is_private_or_service("lambda.amazonaws.com"));
        assert!(!is_private_or_service("198.51.100.7"));
    }
}

/// Insights as a scoped caller may see them.
///
/// A correlation is org-wide by nature; a caller whose scope covers part of
/// the organization sees only the accounts (and their anomalies) it may see,
/// and every count derived from the correlation — the summary's "also in N
/// other accounts", the severity reason "the same pattern in N accounts" —
/// is recounted over those, and the severity is assessed again from that
/// count (a point the hidden accounts added would otherwise show they
/// exist). With no other account left the correlation and the
/// recommendations that need one are dropped: out of scope looks like
/// absent, not even its number shows. A correlated anomaly's insight (its
/// id is the anomaly's) tells the account's OU and environment.
#[derive(Clone, Debug)]
pub struct ScopedView {
    store: crate::store::InsightStore,
    /// Rules that apply only to correlated insights.
    correlated_rules: Vec<String>,
    severity: crate::config::SeverityConfig,
}

impl ScopedView {
    pub fn new(
        store: crate::store::InsightStore,
        rules: &[crate::recommend::RecommendationRule],
        severity: crate::config::SeverityConfig,
    ) -> Self {
        Self {
            store,
            severity,
            correlated_rules: rules
                .iter()
                .filter(|r| r.when.correlated == Some(true))
                .map(|r| r.name.clone())
                .collect(),
        }
    }

    /// `i` as a caller with `scope` may see it.
    pub fn apply(
        &self,
        scope: &trailhound_core::Scope,
        i: &trailhound_core::Insight,
    ) -> trailhound_core::Insight {
        let mut out = i.clone();
        if scope.is_unrestricted() {
            return out;
        }
        let Some(c) = out.correlation.as_mut() else {
            return out;
        };
        let own = i.anomaly.account_id.clone();
        let mut seen_accounts = vec![own.clone()];
        let mut anomaly_ids = Vec::new();
        for id in &c.anomaly_ids {
            if *id == i.id {
                anomaly_ids.push(id.clone());
                continue;
            }
            // Unknown (not stored, unreadable) is treated as out of scope.
            let Ok(Some(other)) = self.store.get(id) else {
                continue;
            };
            let a = &other.anomaly;
            if scope.allows(&a.account_id, &a.ou_path, a.environment) {
                seen_accounts.push(a.account_id.clone());
                anomaly_ids.push(id.clone());
            }
        }
        let keep: Vec<bool> = c
            .account_ids
            .iter()
            .map(|id| {
                seen_accounts.contains(id)
                    || scope.allows(id, &[], trailhound_core::Environment::Unknown)
            })
            .collect();
        let before = c.account_ids.len();
        let mut k = keep.iter();
        c.account_ids.retain(|_| *k.next().unwrap_or(&false));
        let mut k = keep.iter();
        c.account_names.retain(|_| *k.next().unwrap_or(&false));
        c.anomaly_ids = anomaly_ids;
        let after = c.account_ids.len();
        if after == before {
            return out;
        }
        let others = |n: usize| format!(", also in {} other accounts", n.saturating_sub(1));
        let correlated = after > 1;
        out.summary = out.summary.replace(
            &others(before),
            &if correlated {
                others(after)
            } else {
                String::new()
            },
        );
        let was = out.severity;
        (out.severity, out.severity_reasons) =
            crate::severity::assess(&out.anomaly, &out.cost, after, &self.severity);
        // The summary leads with the severity.
        if let Some(rest) = out.summary.strip_prefix(was.label()) {
            out.summary = format!("{}{rest}", out.severity.label());
        }
        if !correlated {
            out.correlation = None;
            out.recommendations
                .retain(|r| !self.correlated_rules.contains(&r.rule));
        }
        out
    }
}
