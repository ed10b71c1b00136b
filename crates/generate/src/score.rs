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
    sorted.sort_by_key(|a| (key(a), a.window_start));
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
    // Any detector of the incident's service finds it (a storm of one
    // function is the per-account and the per-function detector's alike);
    // labels without a service name it by their detector's prefix.
    let service = inc
        .service
        .as_deref()
        .or_else(|| inc.detector.split('-').next());
    let of_kind = a.detector == inc.detector
        || service.is_some_and(|s| s == a.service)
        || (inc.kind == IncidentKind::CoordinatedLaunch && a.kind == "coordinated");
    if !of_kind {
        return false;
    }
    // Hard-profile labels: a drop incident is found by a drop (or an
    // anomaly of no stated kind), the others by anything but a drop.
    if inc.service.is_some() && !a.kind.is_empty() {
        let drop = matches!(
            inc.kind,
            IncidentKind::LambdaStopped | IncidentKind::DropToZero
        );
        if drop != (a.kind == "drop") {
            return false;
        }
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
                service: None,
                entity: Vec::new(),
                targets: Vec::new(),
            }],
            profile: None,
            accounts: None,
            benign: Vec::new(),
        }
    }

    fn a(detector: &str, region: &str, start: i64) -> ReportedAnomaly {
        ReportedAnomaly {
            detector: detector.into(),
            account_id: "111122223333".into(),
            region: region.into(),
            window_start: t(start),
            window_end: t(start + 10),
            ..Default::default()
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

    fn inc(
        id: &str,
        kind: IncidentKind,
        detector: &str,
        service: &str,
        account: &str,
        start: i64,
        end: i64,
    ) -> Incident {
        Incident {
            id: id.into(),
            kind,
            detector: detector.into(),
            account_id: account.into(),
            region: "eu-west-1".into(),
            start: t(start),
            end: t(end),
            description: String::new(),
            principal_arn: None,
            source_ip: None,
            user_agent: None,
            instance_type: None,
            service: Some(service.into()),
            entity: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// An anomaly of `account` in eu-west-1 over [start, start + 10) minutes.
    fn an(detector: &str, service: &str, account: &str, start: i64) -> ReportedAnomaly {
        ReportedAnomaly {
            detector: detector.into(),
            service: service.into(),
            kind: "spike".into(),
            account_id: account.into(),
            region: "eu-west-1".into(),
            window_start: t(start),
            window_end: t(start + 10),
            entity: vec![
                ("recipientAccountId".into(), account.into()),
                ("awsRegion".into(), "eu-west-1".into()),
            ],
            ..Default::default()
        }
    }

    fn with_function(mut a: ReportedAnomaly, f: &str) -> ReportedAnomaly {
        a.entity.push((
            "requestParameters.functionName".into(),
            format!("arn:aws:lambda:eu-west-1:{}:function:{f}", a.account_id),
        ));
        a
    }

    fn hard_labels() -> Labels {
        let mut storm = inc(
            "storm",
            IncidentKind::InvokeStorm,
            "lambda-invoke",
            "lambda",
            "A",
            0,
            40,
        );
        storm.entity = vec![("function".into(), "orders-handler".into())];
        let mut stop = inc(
            "stop",
            IncidentKind::LambdaStopped,
            "lambda-invoke",
            "lambda",
            "A",
            120,
            480,
        );
        stop.entity = vec![("function".into(), "ledger-sync".into())];
        let mut coord = inc(
            "coord",
            IncidentKind::CoordinatedLaunch,
            "ec2-run-instances",
            "ec2",
            "B1",
            0,
            60,
        );
        coord.targets = ["B1", "B2", "B3", "B4", "B5"]
            .iter()
            .map(|a| crate::labels::Target {
                account_id: a.to_string(),
                region: "eu-west-1".into(),
            })
            .collect();
        coord.entity = vec![(
            "principal".into(),
            "OrganizationAccountAccessRole/ops-1".into(),
        )];
        let failed = inc(
            "failed",
            IncidentKind::FailedRunInstances,
            "failed-calls",
            "ec2",
            "C",
            0,
            20,
        );
        Labels {
            seed: 1,
            start: t(-7 * 1440),
            end: t(3 * 1440),
            interval_seconds: 600,
            incidents: vec![storm, stop, coord, failed],
            profile: Some("hard".into()),
            accounts: Some(20),
            benign: vec![crate::labels::Benign {
                kind: "weekly_batch".into(),
                account_id: "D".into(),
                region: "eu-west-1".into(),
                start: t(300),
                end: t(305),
                description: String::new(),
            }],
        }
    }

    #[test]
    fn evaluation_matches_by_service_entity_and_accounts_and_counts_false_alarms() {
        let labels = hard_labels();
        let mut storm_hit =
            with_function(an("lambda-function", "lambda", "A", 10), "orders-handler");
        storm_hit.observed_until = Some(t(13));
        let other_function =
            with_function(an("lambda-function", "lambda", "A", 10), "images-resizer");
        // Coarse (account × region) anomaly: matches, does not name the function.
        let mut stop_hit = an("lambda-invoke", "lambda", "A", 200);
        stop_hit.kind = "drop".into();
        let mut c1 = an("cross-account", "", "B1", 0);
        c1.kind = "coordinated".into();
        c1.observed_until = Some(t(5));
        let mut c2 = an("cross-account", "", "B2", 10);
        c2.kind = "coordinated".into();
        c2.observed_until = Some(t(12));
        let mut c3 = an("ec2-run-instances", "ec2", "B3", 20);
        c3.observed_until = Some(t(30));
        // Epoch observed_until (old output) falls back to the window end.
        c3.observed_until = Some(DateTime::<Utc>::default());
        let late_failed = an("failed-calls", "ec2", "C", 60);
        let weekly = an("ec2-run-instances", "ec2", "D", 300);
        let weekly_next = an("ec2-run-instances", "ec2", "D", 310);
        let stray = an("ebs-create-volume", "ebs", "E", 900);
        let all = vec![
            storm_hit.clone(),
            other_function.clone(),
            stop_hit,
            c1.clone(),
            c2.clone(),
            c3.clone(),
            late_failed,
            weekly,
            weekly_next,
            stray,
        ];
        let e = evaluate(&labels, &all, None);
        let k = |name: &str| {
            e.by_kind
                .iter()
                .find(|k| k.kind == name)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!((k("invoke_storm").found, k("invoke_storm").named), (1, 1));
        assert_eq!(
            (k("lambda_stopped").found, k("lambda_stopped").named),
            (1, 0)
        );
        assert_eq!(k("coordinated_launch").found, 1);
        assert_eq!(
            (
                k("failed_run_instances").found,
                k("failed_run_instances").missed.clone()
            ),
            (0, vec!["failed".to_string()])
        );
        assert_eq!((e.found, e.incidents), (3, 4));
        assert!((e.recall - 0.75).abs() < 1e-12);
        // storm_hit, stop_hit, c1, c2, c3 are true; the other function, the
        // late failed-call window, the weekly batch (two windows) and the
        // stray one are not.
        assert_eq!((e.true_anomalies, e.anomalies), (5, 10));
        assert!((e.precision - 0.5).abs() < 1e-12);
        // Four false alarms (the weekly batch's two windows are one).
        assert_eq!(e.false_alarms, 4);
        assert_eq!(e.false_alarms_by_cause.get("weekly_batch"), Some(&1));
        assert_eq!(e.false_alarms_by_cause.get("unexplained"), Some(&3));
        // 10 days × 20 accounts = 200 account-days: 4 alarms = 2 per day per 100.
        assert!((e.account_days - 200.0).abs() < 1e-9);
        assert!((e.false_alarms_per_day_per_100_accounts - 2.0).abs() < 1e-9);
        // Delays: storm 13 min (observed_until); stop 90 min (window end
        // 210 - start 120); coordinated 30 min (c3, the third account,
        // window end). Median 30 min, p90 90 min.
        let mut d: Vec<f64> = e.by_kind.iter().flat_map(|k| k.delays_s.clone()).collect();
        d.sort_by(f64::total_cmp);
        assert_eq!(d, vec![780.0, 1800.0, 5400.0]);
        assert_eq!(
            (e.delay_median_s, e.delay_p90_s),
            (Some(1800.0), Some(5400.0))
        );

        // Two of five coordinated accounts are not enough, but their
        // anomalies are still true positives.
        let e = evaluate(&labels, &[c1, c2], None);
        let coord = e
            .by_kind
            .iter()
            .find(|k| k.kind == "coordinated_launch")
            .cloned()
            .unwrap_or_default();
        assert_eq!(coord.found, 0);
        assert_eq!((e.true_anomalies, e.anomalies, e.false_alarms), (2, 2, 0));

        // A spike in the stopped function's account and time is no find.
        let spike_in_gap = an("lambda-invoke", "lambda", "A", 300);
        let e = evaluate(&labels, &[spike_in_gap], None);
        assert_eq!((e.found, e.true_anomalies, e.false_alarms), (0, 0, 1));

        // Only the other function's anomaly: the storm is missed.
        let e = evaluate(&labels, &[other_function], None);
        assert_eq!((e.found, e.true_anomalies), (0, 0));
        let e1 = evaluate(&labels, &[storm_hit], None);
        let both = Evaluation::combine(&[e.clone(), e1]);
        assert_eq!(
            (
                both.found,
                both.incidents,
                both.anomalies,
                both.true_anomalies,
                both.false_alarms
            ),
            (1, 8, 2, 1, 1)
        );
        assert!((both.account_days - 400.0).abs() < 1e-9);
        assert_eq!(both.delay_median_s, Some(780.0));
    }

    #[test]
    fn accounts_come_from_the_caller_when_labels_do_not_say_and_full_anomalies_parse() {
        let e = evaluate(
            &labels(),
            &[a("ec2-run-instances", "us-east-1", 0)],
            Some(50),
        );
        // 20000 minutes ≈ 13.9 days × 50 accounts.
        assert!((e.account_days - 20_000.0 / 1440.0 * 50.0).abs() < 1e-9);
        assert_eq!(e.false_alarms, 1);
        let line = r#"{"id":"x","detector":"ec2-run-instances","service":"ec2","kind":"spike","account_id":"111122223333","account_name":"n","environment":"sandbox","ou_path":[],"region":"ap-southeast-1","entity":[["recipientAccountId","111122223333"],["awsRegion","ap-southeast-1"]],"window_start":"2026-01-08T12:00:00Z","window_end":"2026-01-08T12:10:00Z","observed_until":"2026-01-08T12:03:00Z","actual":40.0,"expected":0.1,"features":[],"grade":1.0,"confidence":1.0,"score":3.0,"event_count":4,"top_contributors":[{"dimension":"principal","value":"p","count":4,"share":1.0,"baseline_count":0,"is_new":true}],"detected_at":"2026-01-08T12:03:01Z"}"#;
        let parsed: ReportedAnomaly = serde_json::from_str(line).expect("an anomaly line parses");
        assert_eq!(parsed.observed(), t(3));
        let s = score(&labels(), &[parsed]);
        assert_eq!(
            (s.detected, s.eval.found, s.eval.delay_median_s),
            (1, 1, Some(180.0))
        );
    }
}
