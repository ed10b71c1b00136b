//! The detection scorer.
//!
//! The original figures (kept for the default profile's table and
//! `tests/integration/quality.rs`): recall counts injected incidents found
//! within two intervals of their start; precision counts reported incidents
//! (consecutive anomalous windows of one entity) that are injected ones.
//!
//! The evaluation ([`Evaluation`], also for the hard profile): an anomaly
//! matches an incident when it is of one of the incident's accounts and
//! regions, of its detector or of the service it names (a coordinated
//! anomaly matches a coordinated incident whatever its service), its window
//! overlaps the incident widened by one interval on each side, and, when
//! the anomaly's entity is finer than account × region (a function, a
//! principal, an IP), that entity names the incident's. An incident is
//! found when a matching anomaly exists (a coordinated one when anomalies
//! of at least three of its accounts do); its delay runs from its start to
//! the `observed_until` of the first matching anomaly (the window's end
//! when absent; for a coordinated incident, of the anomaly that brings the
//! third account). Precision is matched anomalies over all anomalies;
//! false alarms are unmatched anomalies merged per entity into alarms, per
//! day per 100 accounts, each attributed to the benign trap it overlaps
//! (weekly job, first region call, …) or `unexplained`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::labels::{Incident, IncidentKind, Labels};

/// What the scorer reads of a contributor.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReportedContributor {
    #[serde(default)]
    pub dimension: String,
    #[serde(default)]
    pub value: String,
}

/// The minimum the scorer needs from a reported anomaly (a trailhound
/// anomaly's JSON deserializes into it).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReportedAnomaly {
    pub detector: String,
    pub account_id: String,
    pub region: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    #[serde(default)]
    pub service: String,
    /// spike, drop, new_region, coordinated.
    #[serde(default)]
    pub kind: String,
    /// The detector's entity fields and values, as (field, value).
    #[serde(default)]
    pub entity: Vec<(String, String)>,
    /// When the anomaly was raised, in event time; the window's end when
    /// absent (or the epoch, as older output has it).
    #[serde(default)]
    pub observed_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub top_contributors: Vec<ReportedContributor>,
}

impl ReportedAnomaly {
    /// The event time this anomaly was known at.
    pub fn observed(&self) -> DateTime<Utc> {
        match self.observed_until {
            Some(t) if t.timestamp() > 0 => t,
            _ => self.window_end,
        }
    }

    /// Entity values finer than account × region.
    fn fine_entity(&self) -> impl Iterator<Item = &str> {
        self.entity
            .iter()
            .filter(|(k, _)| !is_account_or_region(k))
            .map(|(_, v)| v.as_str())
    }
}

fn is_account_or_region(field: &str) -> bool {
    matches!(
        field,
        "recipientAccountId" | "awsRegion" | "account" | "account_id" | "region"
    )
}

/// Consecutive anomalous windows of one entity.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReportedIncident {
    pub detector: String,
    pub account_id: String,
    pub region: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Entity values finer than account × region (a function, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Score {
    pub incidents: usize,
    pub detected: usize,
    pub recall: f64,
    pub reported_incidents: usize,
    pub true_reported: usize,
    pub precision: f64,
    /// Ids of injected incidents not found in time.
    pub missed: Vec<String>,
    pub false_alarms: Vec<ReportedIncident>,
    /// The evaluation (per kind, anomaly precision, false alarms per day
    /// per 100 accounts, delays).
    pub eval: Evaluation,
}

/// Merges anomalies of one (detector, account, region, finer entity) whose
/// windows touch or are at most one interval apart.
pub fn merge(anomalies: &[ReportedAnomaly], interval: Duration) -> Vec<ReportedIncident> {
    let key = |a: &ReportedAnomaly| {
        (
            a.detector.clone(),
            a.account_id.clone(),
            a.region.clone(),
            a.fine_entity().map(String::from).collect::<Vec<_>>(),
        )
    };
    let mut sorted: Vec<&ReportedAnomaly> = anomalies.iter().collect();
    sorted.sort_by(|a, b| (key(a), a.window_start).cmp(&(key(b), b.window_start)));
    let mut out: Vec<ReportedIncident> = Vec::new();
    for a in sorted {
        let (detector, account_id, region, entity) = key(a);
        if let Some(last) = out.last_mut()
            && last.detector == detector
            && last.account_id == account_id
            && last.region == region
            && last.entity == entity
            && a.window_start <= last.end + interval
        {
            last.end = last.end.max(a.window_end);
            continue;
        }
        out.push(ReportedIncident {
            detector,
            account_id,
            region,
            start: a.window_start,
            end: a.window_end,
            entity,
        });
    }
    out
}

/// Whether `value` names `want` (equal, or an ARN or path ending in it).
fn names(value: &str, want: &str) -> bool {
    !want.is_empty()
        && (value == want
            || value.ends_with(&format!(":{want}"))
            || value.ends_with(&format!("/{want}")))
}

/// The values that identify an incident's entity: its entity, principal
/// (also without the account part) and source IP.
fn identifiers(inc: &Incident) -> Vec<String> {
    let mut ids: Vec<String> = inc.entity.iter().map(|(_, v)| v.clone()).collect();
    if let Some(p) = &inc.principal_arn {
        ids.push(p.clone());
        if let Some(rest) = p.split_once(":assumed-role/").map(|(_, r)| r) {
            ids.push(rest.to_string());
        } else if let Some(rest) = p.split_once(":user/").map(|(_, r)| r) {
            ids.push(rest.to_string());
        }
    }
    if let Some(ip) = &inc.source_ip {
        ids.push(ip.clone());
    }
    ids
}

/// Whether the anomaly is of the incident's kind of activity, account and
/// region, and entity (time aside).
fn same_entity(a: &ReportedAnomaly, inc: &Incident) -> bool {
    let of_kind = a.detector == inc.detector
        || inc.service.as_deref().is_some_and(|s| s == a.service)
        || (inc.kind == IncidentKind::CoordinatedLaunch && a.kind == "coordinated");
    if !of_kind {
        return false;
    }
    let place = inc.targets().iter().any(|t| {
        t.account_id == a.account_id
            && (t.region == a.region || a.region.is_empty() || a.region == "global")
    });
    if !place {
        return false;
    }
    let fine: Vec<&str> = a.fine_entity().collect();
    if fine.is_empty() || inc.service.is_none() {
        return true;
    }
    let ids = identifiers(inc);
    fine.iter().any(|v| ids.iter().any(|w| names(v, w)))
}

/// Whether the anomaly names the incident's entity (in its entity or its
/// top contributors); true for incidents of account × region.
fn names_entity(a: &ReportedAnomaly, inc: &Incident) -> bool {
    if inc.entity.is_empty() {
        return true;
    }
    inc.entity.iter().all(|(_, want)| {
        a.entity.iter().any(|(_, v)| names(v, want))
            || a.top_contributors.iter().any(|c| names(&c.value, want))
    })
}

fn matches(a: &ReportedAnomaly, inc: &Incident, slack: Duration) -> bool {
    same_entity(a, inc) && a.window_start < inc.end + slack && a.window_end > inc.start - slack
}

/// One incident kind's figures.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct KindScore {
    pub kind: String,
    pub total: usize,
    pub found: usize,
    /// Found with the entity named (the function, the principal); equal to
    /// `found` for kinds whose entity is account × region.
    pub named: usize,
    pub missed: Vec<String>,
    /// Delays of the found ones, seconds.
    pub delays_s: Vec<f64>,
}

/// The evaluation figures; several organizations combine with
/// [`Evaluation::combine`].
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Evaluation {
    pub by_kind: Vec<KindScore>,
    pub incidents: usize,
    pub found: usize,
    pub recall: f64,
    pub anomalies: usize,
    pub true_anomalies: usize,
    pub precision: f64,
    /// Unmatched anomalies merged per entity (consecutive windows are one).
    pub false_alarms: usize,
    /// Sum over organizations of days × active accounts.
    pub account_days: f64,
    pub false_alarms_per_day_per_100_accounts: f64,
    /// What the false alarms fell on: a benign trap's kind, or
    /// `unexplained`.
    pub false_alarms_by_cause: BTreeMap<String, usize>,
    pub delay_median_s: Option<f64>,
    pub delay_p90_s: Option<f64>,
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl Evaluation {
    /// Figures over several organizations: counts add up, delays pool.
    pub fn combine(parts: &[Evaluation]) -> Evaluation {
        let mut kinds: BTreeMap<String, KindScore> = BTreeMap::new();
        let mut out = Evaluation::default();
        for p in parts {
            for k in &p.by_kind {
                let e = kinds.entry(k.kind.clone()).or_insert_with(|| KindScore {
                    kind: k.kind.clone(),
                    ..Default::default()
                });
                e.total += k.total;
                e.found += k.found;
                e.named += k.named;
                e.missed.extend(k.missed.iter().cloned());
                e.delays_s.extend(k.delays_s.iter().copied());
            }
            out.anomalies += p.anomalies;
            out.true_anomalies += p.true_anomalies;
            out.false_alarms += p.false_alarms;
            out.account_days += p.account_days;
            for (c, n) in &p.false_alarms_by_cause {
                *out.false_alarms_by_cause.entry(c.clone()).or_default() += n;
            }
        }
        out.by_kind = kinds.into_values().collect();
        out.finish();
        out
    }

    fn finish(&mut self) {
        self.incidents = self.by_kind.iter().map(|k| k.total).sum();
        self.found = self.by_kind.iter().map(|k| k.found).sum();
        self.recall = if self.incidents == 0 {
            1.0
        } else {
            self.found as f64 / self.incidents as f64
        };
        self.precision = if self.anomalies == 0 {
            1.0
        } else {
            self.true_anomalies as f64 / self.anomalies as f64
        };
        self.false_alarms_per_day_per_100_accounts = if self.account_days > 0.0 {
            self.false_alarms as f64 / self.account_days * 100.0
        } else {
            0.0
        };
        let mut d: Vec<f64> = self
            .by_kind
            .iter()
            .flat_map(|k| k.delays_s.iter().copied())
            .collect();
        d.sort_by(f64::total_cmp);
        self.delay_median_s = quantile(&d, 0.5);
        self.delay_p90_s = quantile(&d, 0.9);
    }
}

/// The evaluation of one organization; `accounts` is its number of active
/// accounts when the labels do not say.
pub fn evaluate(
    labels: &Labels,
    anomalies: &[ReportedAnomaly],
    accounts: Option<u32>,
) -> Evaluation {
    let slack = Duration::seconds(i64::from(labels.interval_seconds.max(1)));
    let mut kinds: BTreeMap<&'static str, KindScore> = BTreeMap::new();
    for inc in &labels.incidents {
        let k = kinds.entry(inc.kind.as_str()).or_insert_with(|| KindScore {
            kind: inc.kind.as_str().into(),
            ..Default::default()
        });
        k.total += 1;
        let mut hits: Vec<&ReportedAnomaly> = anomalies
            .iter()
            .filter(|a| matches(a, inc, slack))
            .collect();
        hits.sort_by_key(|a| a.observed());
        let needed = if inc.targets.is_empty() {
            1
        } else {
            inc.targets.len().min(3)
        };
        let mut seen: Vec<&str> = Vec::new();
        let mut when = None;
        for a in &hits {
            if !seen.contains(&a.account_id.as_str()) {
                seen.push(&a.account_id);
            }
            if seen.len() >= needed {
                when = Some(a.observed());
                break;
            }
        }
        match when {
            Some(t) => {
                k.found += 1;
                if hits.iter().any(|a| names_entity(a, inc)) {
                    k.named += 1;
                }
                k.delays_s
                    .push(((t - inc.start).num_milliseconds() as f64 / 1000.0).max(0.0));
            }
            None => k.missed.push(inc.id.clone()),
        }
    }
    let false_anomalies: Vec<ReportedAnomaly> = anomalies
        .iter()
        .filter(|a| !labels.incidents.iter().any(|inc| matches(a, inc, slack)))
        .cloned()
        .collect();
    let alarms = merge(&false_anomalies, slack);
    let mut by_cause: BTreeMap<String, usize> = BTreeMap::new();
    for f in &alarms {
        let cause = labels
            .benign
            .iter()
            .find(|b| {
                b.account_id == f.account_id && f.start < b.end + slack && f.end > b.start - slack
            })
            .map(|b| b.kind.clone())
            .unwrap_or_else(|| "unexplained".into());
        *by_cause.entry(cause).or_default() += 1;
    }
    let days = (labels.end - labels.start).num_seconds() as f64 / 86_400.0;
    let accounts = labels.accounts.or(accounts).unwrap_or(0);
    let mut e = Evaluation {
        by_kind: kinds.into_values().collect(),
        anomalies: anomalies.len(),
        true_anomalies: anomalies.len() - false_anomalies.len(),
        false_alarms: alarms.len(),
        account_days: days * f64::from(accounts),
        false_alarms_by_cause: by_cause,
        ..Default::default()
    };
    e.finish();
    e
}

pub fn score(labels: &Labels, anomalies: &[ReportedAnomaly]) -> Score {
    score_with_accounts(labels, anomalies, None)
}

/// [`score`] with the organization's number of active accounts (for false
/// alarms per day per 100 accounts) when the labels do not say.
pub fn score_with_accounts(
    labels: &Labels,
    anomalies: &[ReportedAnomaly],
    accounts: Option<u32>,
) -> Score {
    let interval = Duration::seconds(i64::from(labels.interval_seconds.max(1)));
    let mut missed = Vec::new();
    for inc in &labels.incidents {
        let found = anomalies.iter().any(|a| {
            same_entity(a, inc)
                && a.window_start >= inc.start - interval
                && a.window_start <= inc.start + interval * 2
        });
        if !found {
            missed.push(inc.id.clone());
        }
    }
    let reported = merge(anomalies, interval);
    let mut false_alarms = Vec::new();
    for r in &reported {
        let real = labels.incidents.iter().any(|inc| {
            anomalies.iter().any(|a| {
                a.detector == r.detector
                    && a.account_id == r.account_id
                    && a.region == r.region
                    && a.window_start >= r.start
                    && a.window_end <= r.end
                    && same_entity(a, inc)
            }) && r.start < inc.end + interval
                && r.end > inc.start - interval
        });
        if !real {
            false_alarms.push(r.clone());
        }
    }
    let incidents = labels.incidents.len();
    let detected = incidents - missed.len();
    let true_reported = reported.len() - false_alarms.len();
    Score {
        incidents,
        detected,
        recall: if incidents == 0 {
            1.0
        } else {
            detected as f64 / incidents as f64
        },
        reported_incidents: reported.len(),
        true_reported,
        precision: if reported.is_empty() {
            1.0
        } else {
            true_reported as f64 / reported.len() as f64
        },
        missed,
        false_alarms,
        eval: evaluate(labels, anomalies, accounts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{Incident, IncidentKind};
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 8, 12, 0, 0).single().unwrap() + Duration::minutes(min)
    }

    fn labels() -> Labels {
        Labels {
            seed: 1,
            start: t(-10_000),
            end: t(10_000),
            interval_seconds: 600,
            incidents: vec![Incident {
                id: "i1".into(),
                kind: IncidentKind::Cryptomining,
                detector: "ec2-run-instances".into(),
                account_id: "111122223333".into(),
                region: "ap-southeast-1".into(),
                start: t(0),
                end: t(30),
                description: String::new(),
                principal_arn: None,
                source_ip: None,
                user_agent: None,
                instance_type: None,
            }],
        }
    }

    fn a(detector: &str, region: &str, start: i64) -> ReportedAnomaly {
        ReportedAnomaly {
            detector: detector.into(),
            account_id: "111122223333".into(),
            region: region.into(),
            window_start: t(start),
            window_end: t(start + 10),
        }
    }

    #[test]
    fn found_within_two_intervals_counts_later_does_not() {
        let s = score(&labels(), &[a("ec2-run-instances", "ap-southeast-1", 20)]);
        assert_eq!((s.detected, s.recall), (1, 1.0));
        let s = score(&labels(), &[a("ec2-run-instances", "ap-southeast-1", 30)]);
        assert_eq!(s.detected, 0);
        assert_eq!(s.missed, vec!["i1".to_string()]);
        // ...though a late find still overlaps the incident, so it is no false alarm.
        assert_eq!(s.false_alarms.len(), 0);
        let s = score(&labels(), &[a("ec2-run-instances", "us-east-1", 0)]);
        assert_eq!(
            (s.detected, s.true_reported, s.false_alarms.len()),
            (0, 0, 1)
        );
    }

    #[test]
    fn consecutive_windows_are_one_incident() {
        let found = [
            a("ec2-run-instances", "ap-southeast-1", 0),
            a("ec2-run-instances", "ap-southeast-1", 10),
            a("ec2-run-instances", "ap-southeast-1", 20),
            a("lambda-invoke", "us-east-1", 500),
        ];
        let s = score(&labels(), &found);
        assert_eq!(s.reported_incidents, 2);
        assert_eq!(s.true_reported, 1);
        assert!((s.precision - 0.5).abs() < 1e-12);
        // Two windows with a one-window gap still merge; a wider gap does not.
        assert_eq!(
            merge(&[a("x", "r", 0), a("x", "r", 20)], Duration::minutes(10)).len(),
            1
        );
        assert_eq!(
            merge(&[a("x", "r", 0), a("x", "r", 30)], Duration::minutes(10)).len(),
            2
        );
    }

    #[test]
    fn empty_cases_are_perfect() {
        let mut l = labels();
        l.incidents.clear();
        let s = score(&l, &[]);
        assert_eq!((s.recall, s.precision), (1.0, 1.0));
    }
}
