//! What a message says, independent of where it goes.
//!
//! [`Facts`] turns an insight into the readable pieces every channel shows
//! — account, OU, environment, region, detector, window, actual vs
//! expected, grade and confidence, severity and why, cost, root cause,
//! correlation, recommendations, investigate commands — so Slack, Teams,
//! SNS and the log say the same thing in their own layout. The renderers
//! are pure functions of a [`Message`], unit-tested for shape and limits.

pub mod json;
pub mod slack;
pub mod teams;
pub mod text;

use chrono::{DateTime, Utc};
use trailhound_core::{AnomalyKind, Insight};

use crate::incident::{FollowUp, FollowUpReason};

/// One message to render: the insight, and the follow-up context when the
/// channel was already told about its incident.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub insight: &'a Insight,
    pub follow_up: Option<&'a FollowUp>,
    /// The delivery's id (receivers may use it to drop duplicates).
    pub delivery_id: &'a str,
    /// The rule that chose the channel.
    pub rule: &'a str,
}

impl Message<'_> {
    /// `insight.opened` or `insight.follow_up`.
    pub fn event(&self) -> &'static str {
        if self.follow_up.is_some() {
            "insight.follow_up"
        } else {
            "insight.opened"
        }
    }
}

/// Cuts `s` to at most `max` characters, ending with "…" when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(1);
    let mut out: String = s.chars().take(keep).collect();
    out.push('…');
    out
}

/// `$1,234.56`.
pub fn money(v: f64) -> String {
    let cents = (v * 100.0).round();
    if !cents.is_finite() {
        return "$?".into();
    }
    let neg = cents < 0.0;
    let cents = cents.abs() as u128;
    let mut s = format!("{}.{:02}", group(cents / 100), cents % 100);
    if neg {
        s.insert(0, '-');
    }
    s.insert(0, '$');
    s
}

fn group(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count or measurement: whole numbers without decimals, others with up
/// to two.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if (v - v.round()).abs() < 1e-9 && v.abs() < 1e15 {
        let s = group(v.abs().round() as u128);
        return if v < 0.0 { format!("-{s}") } else { s };
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `2026-01-12 10:00 → 10:10 UTC` (the date repeated when it changes).
pub fn window(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let s = start.format("%Y-%m-%d %H:%M");
    if start.date_naive() == end.date_naive() {
        format!("{s} → {} UTC", end.format("%H:%M"))
    } else {
        format!("{s} → {} UTC", end.format("%Y-%m-%d %H:%M"))
    }
}

fn kind(k: AnomalyKind) -> &'static str {
    match k {
        AnomalyKind::Spike => "spike",
        AnomalyKind::Drop => "drop",
        AnomalyKind::NewRegion => "new region",
        AnomalyKind::Coordinated => "several accounts at once",
    }
}

/// The readable pieces of an insight.
#[derive(Clone, Debug)]
pub struct Facts {
    pub title: String,
    pub summary: String,
    pub account: String,
    pub ou: String,
    pub environment: String,
    pub region: String,
    pub detector: String,
    pub window: String,
    pub actual_vs_expected: String,
    pub grade: String,
    pub severity: String,
    pub severity_reasons: Vec<String>,
    pub cost: String,
    pub cost_lines: Vec<String>,
    pub cost_assumptions: Vec<String>,
    pub root_cause: String,
    pub factors: Vec<String>,
    pub correlation: Option<String>,
    pub recommendations: Vec<(String, Vec<String>)>,
    pub investigate: Vec<String>,
    pub suppressed: Option<String>,
    pub footer: String,
}

impl Facts {
    /// The pieces of `m`, each on one line with control characters, ANSI
    /// escapes and bidirectional overrides removed and URLs defanged:
    /// values from CloudTrail and the org snapshot can forge nothing in
    /// any channel. Channels with markup escape further (Slack's mrkdwn,
    /// Teams' Markdown).
    pub fn of(m: &Message<'_>) -> Self {
        Self::raw(m)
            .map_text(|s| trailhound_core::text::defang_urls(&trailhound_core::text::clean_line(s)))
    }

    /// The labelled facts a chat alert shows as a table (Slack's fields,
    /// Teams' FactSet), in the order both show them.
    pub fn table(&self) -> Vec<(String, String)> {
        [
            ("Account", &self.account),
            ("OU", &self.ou),
            ("Environment", &self.environment),
            ("Region", &self.region),
            ("Detector", &self.detector),
            ("Window (UTC)", &self.window),
            ("Actual vs expected", &self.actual_vs_expected),
            ("Grade / confidence", &self.grade),
            ("Severity", &self.severity),
            ("Cost impact", &self.cost),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }

    /// Every piece of text passed through `f`.
    pub fn map_text(self, f: impl Fn(&str) -> String) -> Self {
        let v = |x: Vec<String>| x.iter().map(|s| f(s)).collect::<Vec<_>>();
        Self {
            title: f(&self.title),
            summary: f(&self.summary),
            account: f(&self.account),
            ou: f(&self.ou),
            environment: f(&self.environment),
            region: f(&self.region),
            detector: f(&self.detector),
            window: f(&self.window),
            actual_vs_expected: f(&self.actual_vs_expected),
            grade: f(&self.grade),
            severity: f(&self.severity),
            severity_reasons: v(self.severity_reasons),
            cost: f(&self.cost),
            cost_lines: v(self.cost_lines),
            cost_assumptions: v(self.cost_assumptions),
            root_cause: f(&self.root_cause),
            factors: v(self.factors),
            correlation: self.correlation.as_deref().map(&f),
            recommendations: self
                .recommendations
                .iter()
                .map(|(t, a)| (f(t), a.iter().map(|s| f(s)).collect()))
                .collect(),
            investigate: v(self.investigate),
            suppressed: self.suppressed.as_deref().map(&f),
            footer: f(&self.footer),
        }
    }

    fn raw(m: &Message<'_>) -> Self {
        let i = m.insight;
        let a = &i.anomaly;
        let account = if a.account.account_id.is_empty() {
            a.account_id.clone()
        } else {
            a.account.display_name()
        };
        let unit = a
            .features
            .first()
            .map(|f| f.name.as_str())
            .filter(|n| !n.is_empty());
        let actual_vs_expected = match unit {
            Some(u) => format!(
                "{} {u} vs {} expected",
                number(a.actual),
                number(a.expected)
            ),
            None => format!("{} vs {} expected", number(a.actual), number(a.expected)),
        };
        let mut extra: Vec<String> = a
            .features
            .iter()
            .skip(1)
            .map(|f| {
                format!(
                    "{} {} vs {} expected",
                    number(f.actual),
                    f.name,
                    number(f.expected)
                )
            })
            .collect();
        extra.insert(0, actual_vs_expected);
        let c = &i.cost;
        let cost = format!(
            "{}/h · {}/day · {}/30 days{}",
            money(c.usd_per_hour),
            money(c.usd_per_day),
            money(c.usd_per_30_days),
            if c.estimated { " (estimated)" } else { "" }
        );
        let cost_lines = c
            .lines
            .iter()
            .map(|l| {
                let mut s = format!(
                    "{} {} {}: {}/h",
                    number(l.quantity),
                    l.unit,
                    l.item,
                    money(l.usd_per_hour)
                );
                if l.estimated {
                    s.push_str(" (estimated)");
                }
                if !l.basis.is_empty() {
                    s.push_str(&format!(" — {}", l.basis));
                }
                s
            })
            .collect();
        let factors = i
            .root_cause
            .factors
            .iter()
            .map(|f| {
                format!(
                    "{} {}: {} ({:.0}%{})",
                    f.dimension,
                    f.value,
                    f.count,
                    f.share * 100.0,
                    if f.is_new { ", new" } else { "" }
                )
            })
            .collect();
        let correlation = i.correlation.as_ref().map(|c| {
            let others: Vec<String> = c
                .account_ids
                .iter()
                .enumerate()
                .filter(|(_, id)| **id != a.account_id)
                .map(
                    |(n, id)| match c.account_names.get(n).filter(|s| !s.is_empty()) {
                        Some(name) => format!("{name} ({id})"),
                        None => id.clone(),
                    },
                )
                .collect();
            let what = match c.kind.as_str() {
                "source_ip" => "source IP",
                other => other,
            };
            format!(
                "Same {what} {} in {} other account(s): {}",
                c.value,
                others.len(),
                others.join(", ")
            )
        });
        let ou = if a.ou_path.is_empty() {
            "—".to_string()
        } else {
            a.ou_path.join(" / ")
        };
        Self {
            title: format!(
                "{} · {} {} in {}",
                i.severity.label(),
                a.detector,
                kind(a.kind),
                account
            ),
            summary: if i.summary.is_empty() {
                format!(
                    "{} {} in {} ({}): {}",
                    a.detector,
                    kind(a.kind),
                    account,
                    a.region,
                    extra[0]
                )
            } else {
                i.summary.clone()
            },
            account,
            ou,
            environment: a.environment.to_string(),
            region: if a.region.is_empty() {
                "—".into()
            } else {
                a.region.clone()
            },
            detector: if a.service.is_empty() {
                a.detector.clone()
            } else {
                format!("{} ({})", a.detector, a.service)
            },
            window: window(a.window_start, a.window_end),
            actual_vs_expected: extra.join("; "),
            grade: format!("grade {:.2} · confidence {:.2}", a.grade, a.confidence),
            severity: i.severity.label().to_string(),
            severity_reasons: i.severity_reasons.clone(),
            cost,
            cost_lines,
            cost_assumptions: c.assumptions.clone(),
            root_cause: i.root_cause.explanation.clone(),
            factors,
            correlation,
            recommendations: i
                .recommendations
                .iter()
                .map(|r| (r.title.clone(), r.actions.clone()))
                .collect(),
            investigate: i.investigate.clone(),
            suppressed: i.suppressed_by.clone(),
            footer: format!(
                "trailhound · insight {} · incident {} · rule {} · analyzed {}",
                i.id,
                i.incident_id,
                m.rule,
                i.analyzed_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        }
    }
}

/// The readable pieces of a follow-up.
#[derive(Clone, Debug)]
pub struct FollowUpFacts {
    pub title: String,
    pub lead: String,
    /// (label, value) pairs of the running totals.
    pub totals: Vec<(String, String)>,
}

impl FollowUpFacts {
    pub fn of(m: &Message<'_>, f: &FollowUp) -> Self {
        let base = Facts::of(m);
        let i = m.insight;
        let a = &i.anomaly;
        let t = &f.totals;
        let (title, lead) = match &f.reason {
            FollowUpReason::Escalated { from, to } => (
                format!(
                    "Escalated {from} → {to} · {} {} in {}",
                    a.detector,
                    kind(a.kind),
                    base.account
                ),
                format!(
                    "The incident notified at {} rose to {to}: {}",
                    f.first_notified_at.format("%Y-%m-%d %H:%M UTC"),
                    base.summary
                ),
            ),
            FollowUpReason::StillOngoing { since_last_message } => (
                format!(
                    "Still ongoing ({}) · {} {} in {}",
                    i.severity.label(),
                    a.detector,
                    kind(a.kind),
                    base.account
                ),
                format!(
                    "Still anomalous {} after the last message: {}",
                    humantime::format_duration(*since_last_message),
                    base.summary
                ),
            ),
        };
        let totals: Vec<(String, String)> = vec![
            ("Windows so far".into(), t.windows.to_string()),
            (
                "Incident span".into(),
                window(t.first_window_start, t.last_window_end),
            ),
            ("Latest window".into(), base.window.clone()),
            ("Latest".into(), base.actual_vs_expected.clone()),
            (
                "Peak".into(),
                format!(
                    "{} vs {} expected",
                    number(t.peak_actual),
                    number(t.expected_at_peak)
                ),
            ),
            (
                "Severity".into(),
                format!("{} (max {})", i.severity.label(), t.max_severity.label()),
            ),
            (
                "Cost now".into(),
                format!(
                    "{}/h{}",
                    money(t.latest_usd_per_hour),
                    if i.cost.estimated { " (estimated)" } else { "" }
                ),
            ),
            (
                "Cost so far".into(),
                format!(
                    "{}{}",
                    money(t.cost_so_far_usd),
                    if t.cost_estimated { " (estimated)" } else { "" }
                ),
            ),
            ("Account".into(), base.account.clone()),
            ("Region".into(), base.region.clone()),
        ];
        let clean =
            |s: &str| trailhound_core::text::defang_urls(&trailhound_core::text::clean_line(s));
        Self {
            title: clean(&title),
            lead: clean(&lead),
            totals: totals.iter().map(|(l, v)| (l.clone(), clean(v))).collect(),
        }
    }

    /// Every piece of text passed through `f`.
    pub fn map_text(self, f: impl Fn(&str) -> String) -> Self {
        Self {
            title: f(&self.title),
            lead: f(&self.lead),
            totals: self.totals.iter().map(|(l, v)| (f(l), f(v))).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_money_numbers_and_windows() {
        assert_eq!(money(1310.724), "$1,310.72");
        assert_eq!(money(0.0), "$0.00");
        assert_eq!(money(1_234_567.891), "$1,234,567.89");
        assert_eq!(number(40.0), "40");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(0.126), "0.13");
        assert_eq!(number(12_000.0), "12,000");
        let s = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 12, 23, 50, 0).unwrap();
        assert_eq!(
            window(s, s + chrono::Duration::minutes(10)),
            "2026-01-12 23:50 → 2026-01-13 00:00 UTC"
        );
    }

    #[test]
    fn truncates_on_characters_with_an_ellipsis() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("ééééé", 3).chars().count(), 3);
    }

    #[test]
    fn facts_carry_the_whole_context() {
        let i = crate::testing::sample_insight("w1", "inc", trailhound_core::Severity::High);
        let m = Message {
            insight: &i,
            follow_up: None,
            delivery_id: "d1",
            rule: "prod",
        };
        let f = Facts::of(&m);
        assert_eq!(
            f.title,
            "HIGH · ec2-run-instances spike in payments-prod (111122223333)"
        );
        assert_eq!(f.ou, "Root / Workloads / Production");
        assert_eq!(f.actual_vs_expected, "40 instances vs 1.5 expected");
        assert_eq!(f.window, "2026-01-12 10:00 → 10:10 UTC");
        assert_eq!(f.cost, "$1,310.72/h · $31,457.28/day · $943,718.40/30 days");
        assert_eq!(
            f.correlation.as_deref(),
            Some("Same source IP 198.51.100.7 in 1 other account(s): data-staging (444455556666)")
        );
        assert!(f.footer.contains("incident inc"));
    }

    #[test]
    fn values_from_cloudtrail_forge_no_link_mention_line_or_colour() {
        let mut i = crate::testing::sample_insight("a1", "a1", trailhound_core::Severity::Critical);
        let evil = "Boto3 [Verify your SSO](https://evil.example/login) <!here> @channel\n2026-01-01 INFO forged\x1b[31m";
        i.root_cause.explanation = format!("All from user agent {evil}");
        i.summary = evil.to_string();
        let m = Message {
            insight: &i,
            follow_up: None,
            delivery_id: "d1",
            rule: "prod",
        };
        let teams = teams::render(&m).to_string();
        assert!(
            !teams.contains("SSO](") && !teams.contains("https://evil"),
            "{teams}"
        );
        assert!(teams.contains(r"\\[Verify your SSO\\]"), "{teams}");
        let slack = slack::render(&m);
        let text = slack.to_string();
        assert!(
            !text.contains("<!here>") && !text.contains("@channel"),
            "{text}"
        );
        // Every mrkdwn object is verbatim: no auto-links, no mentions.
        fn walk(v: &serde_json::Value, n: &mut usize) {
            match v {
                serde_json::Value::Object(o) => {
                    if o.get("type").and_then(|t| t.as_str()) == Some("mrkdwn") {
                        assert_eq!(
                            o.get("verbatim"),
                            Some(&serde_json::Value::Bool(true)),
                            "{v}"
                        );
                        *n += 1;
                    }
                    o.values().for_each(|x| walk(x, n));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, n)),
                _ => {}
            }
        }
        let mut n = 0;
        walk(&slack, &mut n);
        assert!(n > 3);
        for plain in [text::body(&m), text::subject(&m)] {
            assert!(
                !plain.contains("\x1b") && !plain.contains("https://evil"),
                "{plain}"
            );
            assert!(
                !plain
                    .lines()
                    .any(|l| l.starts_with("2026-01-01 INFO forged")),
                "{plain}"
            );
        }
    }
}
