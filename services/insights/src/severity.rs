//! Severity (LOW … CRITICAL, with the reasons) and suppression.
//!
//! Points add up from how far the window was from normal, how sure the
//! model is, what it costs, how critical the account is (per environment,
//! OU or account) and security signals (a principal, IP or region new to
//! the account, GPU instances, other accounts seeing the same). Points
//! rather than a formula, so every level can say exactly why.

use chrono::{Datelike, Timelike};
use trailhound_core::insight::{CostImpact, Severity};
use trailhound_core::{Anomaly, AnomalyKind};

use crate::config::{SeverityConfig, SuppressionRule, parse_hhmm, parse_until, parse_weekday};
use crate::instance::is_accelerated;

/// Security signals of an anomaly, as reasons.
pub fn security_signals(a: &Anomaly) -> Vec<String> {
    let mut out = Vec::new();
    let new_of = |dim: &str| {
        a.top_contributors
            .iter()
            .find(|c| c.dimension == dim && c.is_new && c.share >= 0.2)
    };
    if let Some(p) = new_of("principal") {
        out.push(format!("principal new to this account ({})", p.value));
    }
    if let Some(ip) = new_of("source_ip") {
        out.push(format!("source IP new to this account ({})", ip.value));
    }
    if a.kind == AnomalyKind::NewRegion {
        out.push(format!(
            "first activity in {}, a region this account never used",
            a.region
        ));
    }
    if let Some(t) = a
        .top_contributors
        .iter()
        .find(|c| c.dimension == "instance_type" && is_accelerated(&c.value))
    {
        out.push(format!("GPU/accelerated instances ({})", t.value));
    }
    if let Some(e) = a
        .top_contributors
        .iter()
        .find(|c| c.dimension == "error_code" && c.share >= 0.5)
    {
        out.push(format!("mostly failing calls ({})", e.value));
    }
    out
}

/// The severity of an anomaly and why, most weighty reason first.
pub fn assess(
    a: &Anomaly,
    cost: &CostImpact,
    correlated_accounts: usize,
    cfg: &SeverityConfig,
) -> (Severity, Vec<String>) {
    let mut reasons: Vec<(i32, String)> = Vec::new();
    let grade_points = if a.grade >= 0.9 {
        3
    } else if a.grade >= 0.7 {
        2
    } else if a.grade >= 0.4 {
        1
    } else {
        0
    };
    reasons.push((
        grade_points,
        format!(
            "anomaly grade {:.2} ({:.0} vs {:.1} expected)",
            a.grade, a.actual, a.expected
        ),
    ));
    if a.confidence < 0.3 && a.kind != AnomalyKind::NewRegion {
        reasons.push((
            -1,
            format!(
                "low confidence {:.2}: little history for this entity",
                a.confidence
            ),
        ));
    }
    let monthly = cost.usd_per_30_days;
    let cost_points = if monthly >= cfg.critical_usd_per_30_days {
        3
    } else if monthly >= cfg.high_usd_per_30_days {
        2
    } else if monthly >= cfg.medium_usd_per_30_days {
        1
    } else {
        0
    };
    if cost_points > 0 {
        reasons.push((
            cost_points,
            format!(
                "cost impact ${:.2}/hour (${:.0} over 30 days{})",
                cost.usd_per_hour,
                monthly,
                if cost.estimated { ", estimated" } else { "" }
            ),
        ));
    }
    let (env_points, env_reason) = criticality(a, cfg);
    reasons.push((env_points, env_reason));
    for s in security_signals(a) {
        reasons.push((1, s));
    }
    if correlated_accounts > 1 {
        reasons.push((
            1,
            format!("the same pattern in {correlated_accounts} accounts"),
        ));
    }
    let total: i32 = reasons.iter().map(|(p, _)| p).sum();
    let level = cfg.level(total);
    reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<String> = reasons
        .into_iter()
        .filter(|(p, _)| *p != 0)
        .map(|(p, r)| format!("{r} ({p:+})"))
        .collect();
    out.push(format!(
        "{total} points: {} starts at {}",
        level.label(),
        match level {
            Severity::Low => 0,
            Severity::Medium => cfg.medium_at,
            Severity::High => cfg.high_at,
            Severity::Critical => cfg.critical_at,
        }
    ));
    (level, out)
}

/// Points for how critical the account is: the account's own setting, else
/// the longest matching OU prefix, else its environment.
fn criticality(a: &Anomaly, cfg: &SeverityConfig) -> (i32, String) {
    if let Some(p) = cfg.account_points.get(&a.account_id) {
        return (*p, format!("account {} is rated {p:+}", a.account_id));
    }
    let path = a.ou_path.join("/");
    if let Some((prefix, p)) = cfg
        .ou_points
        .iter()
        .filter(|(prefix, _)| ou_matches(&path, prefix))
        .max_by_key(|(prefix, _)| prefix.len())
    {
        return (*p, format!("OU {prefix} is rated {p:+}"));
    }
    let points = cfg
        .environments
        .get(&a.environment)
        .map(|e| e.points)
        .unwrap_or(0);
    (points, format!("{} account", a.environment))
}

/// Whether an OU path ("Root/Workloads/Prod") is at or under a prefix;
/// whole segments only, case-insensitive, leading "Root/" optional.
pub fn ou_matches(path: &str, prefix: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim_matches('/');
        let s = s
            .strip_prefix("Root/")
            .or_else(|| (s == "Root").then_some(""))
            .unwrap_or(s);
        s.to_ascii_lowercase()
    };
    let (p, q) = (norm(path), norm(prefix));
    q.is_empty() || p == q || p.starts_with(&format!("{q}/"))
}

/// The first suppression rule that matches, or the environment's
/// sensitivity when the grade is below it.
pub fn suppression(
    a: &Anomaly,
    severity: Severity,
    rules: &[SuppressionRule],
    cfg: &SeverityConfig,
) -> Option<String> {
    if let Some(env) = cfg.environments.get(&a.environment)
        && a.grade < env.min_grade
    {
        return Some(format!(
            "{} sensitivity (grade {:.2} below {:.2})",
            a.environment, a.grade, env.min_grade
        ));
    }
    rules
        .iter()
        .find(|r| rule_matches(r, a, severity))
        .map(|r| r.name.clone())
}

fn rule_matches(r: &SuppressionRule, a: &Anomaly, severity: Severity) -> bool {
    let t = a.window_start;
    let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
    if !any(&r.detectors, &a.detector) || !any(&r.accounts, &a.account_id) {
        return false;
    }
    if !any(&r.regions, &a.region) {
        return false;
    }
    if !r.environments.is_empty() && !r.environments.contains(&a.environment) {
        return false;
    }
    if !r.kinds.is_empty() && !r.kinds.contains(&a.kind) {
        return false;
    }
    if let Some(ou) = &r.ou
        && !ou_matches(&a.ou_path.join("/"), ou)
    {
        return false;
    }
    if let Some(below) = r.below_severity
        && severity >= below
    {
        return false;
    }
    if !r.days.is_empty()
        && !r
            .days
            .iter()
            .filter_map(|d| parse_weekday(d).ok())
            .any(|d| d == t.weekday())
    {
        return false;
    }
    if let (Some(from), Some(to)) = (&r.from, &r.to) {
        let (Ok(from), Ok(to)) = (parse_hhmm(from), parse_hhmm(to)) else {
            return false;
        };
        let m = t.hour() * 60 + t.minute();
        let inside = if from <= to {
            m >= from && m < to
        } else {
            m >= from || m < to
        };
        if !inside {
            return false;
        }
    }
    if let Some(until) = &r.until {
        match parse_until(until) {
            Ok(u) if t <= u => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerated_families() {
        for t in [
            "p4d.24xlarge",
            "g5.xlarge",
            "inf2.xlarge",
            "trn1.32xlarge",
            "p5.48xlarge",
        ] {
            assert!(is_accelerated(t), "{t}");
        }
        for t in ["m5.large", "c7g.xlarge", "gp3", "r6i.2xlarge", "t3.micro"] {
            assert!(!is_accelerated(t), "{t}");
        }
    }

    #[test]
    fn ou_prefixes_match_whole_segments() {
        assert!(ou_matches("Root/Workloads/Production", "Workloads"));
        assert!(ou_matches(
            "Root/Workloads/Production",
            "Root/Workloads/production"
        ));
        assert!(!ou_matches("Root/WorkloadsX/Production", "Workloads"));
        assert!(ou_matches("Root/Sandbox", ""));
    }
}
