//! The detection scorer: recall (injected incidents found within two
//! intervals of their start) and precision (reported incidents that are
//! injected ones), where consecutive anomalous windows of one entity count
//! as one reported incident.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::labels::Labels;

/// The minimum the scorer needs from a reported anomaly (a trailhound
/// anomaly's JSON deserializes into it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReportedAnomaly {
    pub detector: String,
    pub account_id: String,
    pub region: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
}

/// Consecutive anomalous windows of one entity.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReportedIncident {
    pub detector: String,
    pub account_id: String,
    pub region: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
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
}

/// Merges anomalies of one (detector, account, region) whose windows touch
/// or are at most one interval apart.
pub fn merge(anomalies: &[ReportedAnomaly], interval: Duration) -> Vec<ReportedIncident> {
    let mut sorted: Vec<&ReportedAnomaly> = anomalies.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.detector, &a.account_id, &a.region, a.window_start).cmp(&(
            &b.detector,
            &b.account_id,
            &b.region,
            b.window_start,
        ))
    });
    let mut out: Vec<ReportedIncident> = Vec::new();
    for a in sorted {
        if let Some(last) = out.last_mut()
            && last.detector == a.detector
            && last.account_id == a.account_id
            && last.region == a.region
            && a.window_start <= last.end + interval
        {
            last.end = last.end.max(a.window_end);
            continue;
        }
        out.push(ReportedIncident {
            detector: a.detector.clone(),
            account_id: a.account_id.clone(),
            region: a.region.clone(),
            start: a.window_start,
            end: a.window_end,
        });
    }
    out
}

pub fn score(labels: &Labels, anomalies: &[ReportedAnomaly]) -> Score {
    let interval = Duration::seconds(i64::from(labels.interval_seconds.max(1)));
    let same = |d: &str, a: &str, r: &str, i: &crate::labels::Incident| {
        i.detector == d && i.account_id == a && i.region == r
    };
    let mut missed = Vec::new();
    for inc in &labels.incidents {
        let found = anomalies.iter().any(|a| {
            same(&a.detector, &a.account_id, &a.region, inc)
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
            same(&r.detector, &r.account_id, &r.region, inc)
                && r.start < inc.end + interval
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
