//! Root cause: which principals, source IPs, user agents, regions, instance
//! types, event names and error codes account for an anomalous window,
//! what is new to the account, ranked and told in a sentence a person can
//! act on.
//!
//! detect hands over each window's top contributors per dimension with
//! their share of the window and whether they are new to the account; this
//! module ranks them (the dimensions that identify an actor first, then
//! what was done, each by share) and writes the explanation.

use trailhound_core::insight::{Factor, RootCause};
use trailhound_core::{Anomaly, AnomalyKind, Contributor};

/// Order in which dimensions explain a window: who, from where, with what,
/// then what was done.
const DIMENSION_ORDER: [&str; 5] = [
    "principal",
    "source_ip",
    "user_agent",
    "event_name",
    "error_code",
];

/// Service principals and hostnames CloudTrail puts in sourceIPAddress:
/// not an address anyone came from.
fn is_service_address(v: &str) -> bool {
    v.ends_with(".amazonaws.com") || v == "AWS Internal"
}

/// A principal ARN in words: "IAM user ci-deployer", "role app (session
/// x)", "the root user", "AWS service lambda.amazonaws.com".
pub fn describe_principal(p: &str) -> String {
    if let Some(rest) = p.strip_prefix("arn:aws") {
        let resource = rest.splitn(5, ':').nth(4).unwrap_or("");
        if resource == "root" {
            return "the root user".into();
        }
        if let Some(name) = resource.strip_prefix("user/") {
            return format!("IAM user {}", name.rsplit('/').next().unwrap_or(name));
        }
        if let Some(rest) = resource.strip_prefix("assumed-role/") {
            let mut parts = rest.splitn(2, '/');
            let role = parts.next().unwrap_or(rest);
            return match parts.next() {
                Some(session) if !session.is_empty() => {
                    format!("role {role} (session {session})")
                }
                _ => format!("role {role}"),
            };
        }
        if let Some(name) = resource.strip_prefix("role/") {
            return format!("role {name}");
        }
        return p.to_string();
    }
    if p.ends_with(".amazonaws.com") {
        return format!("AWS service {p}");
    }
    p.to_string()
}

/// The product token of a user agent ("Boto3/1.34.2 md/Botocore#…" →
/// "Boto3/1.34.2"), enough to tell tools apart in a sentence.
pub fn short_user_agent(ua: &str) -> &str {
    ua.split_whitespace().next().unwrap_or(ua)
}

/// The unit the detector's first feature counts, for sentences.
pub fn unit(a: &Anomaly) -> &str {
    a.features
        .first()
        .map(|f| f.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("events")
}

fn rank(dimension: &str) -> usize {
    DIMENSION_ORDER
        .iter()
        .position(|d| *d == dimension)
        // Detector-specific dimensions (instance_type, function, …) say
        // what was done: after who, before event names.
        .unwrap_or(3)
}

fn factor(c: &Contributor) -> Factor {
    Factor {
        dimension: c.dimension.clone(),
        value: c.value.clone(),
        count: c.count,
        share: c.share,
        is_new: c.is_new,
        baseline_count: c.baseline_count,
    }
}

/// Ranks the window's contributors and explains the anomaly.
pub fn explain(a: &Anomaly) -> RootCause {
    let mut factors: Vec<Factor> = Vec::new();
    if a.kind == AnomalyKind::NewRegion {
        factors.push(Factor {
            dimension: "region".into(),
            value: a.region.clone(),
            count: a.event_count,
            share: 1.0,
            is_new: true,
            baseline_count: 0,
        });
    }
    let mut contributors: Vec<&Contributor> = a
        .top_contributors
        .iter()
        .filter(|c| !(c.dimension == "source_ip" && is_service_address(&c.value)))
        .collect();
    contributors.sort_by(|x, y| {
        rank(&x.dimension)
            .cmp(&rank(&y.dimension))
            .then(x.dimension.cmp(&y.dimension))
            .then(y.share.total_cmp(&x.share))
            .then(y.is_new.cmp(&x.is_new))
            .then(x.value.cmp(&y.value))
    });
    // The first value of each dimension, then any other value that is new
    // or holds at least a fifth of the window.
    let mut seen_dims: Vec<&str> = Vec::new();
    for c in &contributors {
        let first = !seen_dims.contains(&c.dimension.as_str());
        if first || c.is_new || c.share >= 0.2 {
            factors.push(factor(c));
        }
        if first {
            seen_dims.push(&c.dimension);
        }
    }
    RootCause {
        explanation: sentence(a, &factors),
        factors,
    }
}

fn top<'a>(factors: &'a [Factor], dim: &str) -> Option<&'a Factor> {
    factors.iter().find(|f| f.dimension == dim)
}

fn part_of(share: f64, total: f64, unit: &str) -> String {
    let total_r = total.round().max(0.0);
    let n = (share * total).round().min(total_r);
    if share >= 0.995 {
        format!("all {total_r:.0} {unit}")
    } else {
        format!("{n:.0} of {total_r:.0} {unit}")
    }
}

fn mix(factors: &[Factor], dim: &str) -> Option<String> {
    let values: Vec<&Factor> = factors.iter().filter(|f| f.dimension == dim).collect();
    let first = values.first()?;
    if first.share >= 0.995 {
        return Some(format!("all {}", first.value));
    }
    Some(
        values
            .iter()
            .map(|f| format!("{} ({:.0}%)", f.value, f.share * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

fn sentence(a: &Anomaly, factors: &[Factor]) -> String {
    let unit = unit(a);
    let account = if a.account_name.is_empty() {
        a.account_id.clone()
    } else {
        format!("{} ({})", a.account_name, a.account_id)
    };
    if a.kind == AnomalyKind::Drop {
        return format!(
            "{} fell to {:.0} {unit} in {account} {} against about {:.0} expected for this window, after steady activity: the workload stopped, its trigger was disabled, or its permissions changed.",
            a.detector, a.actual, a.region, a.expected
        );
    }
    let mut parts: Vec<String> = Vec::new();
    let lead = match top(factors, "principal") {
        Some(p) => format!(
            "{} came from {}{}",
            part_of(p.share, a.actual, unit),
            describe_principal(&p.value),
            if p.is_new {
                " (new to this account)"
            } else {
                ""
            }
        ),
        None => format!("{:.0} {unit} against {:.1} expected", a.actual, a.expected),
    };
    let mut lead = lead;
    if let Some(ip) = top(factors, "source_ip") {
        lead.push_str(&format!(
            " at {}{}",
            ip.value,
            if ip.is_new { " (new IP)" } else { "" }
        ));
    }
    if let Some(ua) = top(factors, "user_agent") {
        lead.push_str(&format!(
            " with user agent {}{}",
            short_user_agent(&ua.value),
            if ua.is_new { " (new)" } else { "" }
        ));
    }
    parts.push(lead);
    // What was done: the detector's own dimensions (instance types,
    // functions, volume types), then errors.
    let mut what: Vec<String> = Vec::new();
    let mut dims: Vec<&str> = factors
        .iter()
        .map(|f| f.dimension.as_str())
        .filter(|d| {
            !matches!(
                *d,
                "principal" | "source_ip" | "user_agent" | "event_name" | "region"
            )
        })
        .collect();
    dims.dedup();
    for d in dims {
        if let Some(m) = mix(factors, d) {
            if d == "error_code" {
                what.push(format!("failing with {m}"));
            } else {
                what.push(m);
            }
        }
    }
    let region = if a.kind == AnomalyKind::NewRegion {
        format!("in {}, a region this account has never used", a.region)
    } else {
        format!("in {}", a.region)
    };
    what.push(region);
    parts.push(what.join(" "));
    let mut s = parts.join("; ");
    s.push('.');
    if a.kind == AnomalyKind::Spike && a.expected > 0.0 {
        s.push_str(&format!(
            " That is {:.1}× the {:.1} expected for this time of day.",
            a.actual / a.expected,
            a.expected
        ));
    }
    // Sentence case.
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().collect::<String>() + chars.as_str(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_read_as_words() {
        assert_eq!(
            describe_principal("arn:aws:iam::111122223333:user/ci-deployer"),
            "IAM user ci-deployer"
        );
        assert_eq!(
            describe_principal("arn:aws:sts::111122223333:assumed-role/app/i-0abc"),
            "role app (session i-0abc)"
        );
        assert_eq!(
            describe_principal("arn:aws:iam::111122223333:root"),
            "the root user"
        );
        assert_eq!(
            describe_principal("lambda.amazonaws.com"),
            "AWS service lambda.amazonaws.com"
        );
        assert_eq!(
            short_user_agent("Boto3/1.34.2 md/Botocore#1.34.2"),
            "Boto3/1.34.2"
        );
    }
}
