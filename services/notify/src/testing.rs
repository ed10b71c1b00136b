//! Fixtures for tests of notify and of what drives it: a realistic insight
//! with every section filled, so renderers and routes see the full shape.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use trailhound_core::insight::{CostLine, Factor, Recommendation, RootCause};
use trailhound_core::{
    AccountMetadata, Anomaly, AnomalyKind, Contributor, CostImpact, Environment, FeatureValue,
    Insight, Severity,
};

/// An EC2 spike in `payments-prod` (111122223333, production, OU
/// Root/Workloads/Production, us-east-1), window 2026-01-12 10:00–10:10
/// UTC, with cost, root cause, correlation, recommendations and
/// investigate commands.
pub fn sample_insight(id: &str, incident_id: &str, severity: Severity) -> Insight {
    let start = Utc
        .with_ymd_and_hms(2026, 1, 12, 10, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let end = start + chrono::Duration::minutes(10);
    let ou_path: Vec<String> = ["Root", "Workloads", "Production"]
        .into_iter()
        .map(String::from)
        .collect();
    let account = AccountMetadata {
        account_id: "111122223333".into(),
        name: "payments-prod".into(),
        email: "aws+payments-prod@example.com".into(),
        status: "ACTIVE".into(),
        ou_path: ou_path.clone(),
        tags: BTreeMap::from([("Environment".to_string(), "production".to_string())]),
        environment: Environment::Production,
        environment_reason: "tag Environment=production".into(),
        team: "payments".into(),
        cost_center: "CC-1042".into(),
        known: true,
        organization_id: "o-a1b2c3d4e5".into(),
    };
    let anomaly = Anomaly {
        id: id.into(),
        detector: "ec2-run-instances".into(),
        service: "ec2".into(),
        kind: AnomalyKind::Spike,
        account_id: account.account_id.clone(),
        account_name: account.name.clone(),
        environment: Environment::Production,
        ou_path,
        region: "us-east-1".into(),
        entity: vec![
            ("account_id".into(), account.account_id.clone()),
            ("region".into(), "us-east-1".into()),
        ],
        window_start: start,
        window_end: end,
        observed_until: end,
        actual: 40.0,
        expected: 1.5,
        features: vec![FeatureValue {
            name: "instances".into(),
            actual: 40.0,
            expected: 1.5,
        }],
        grade: 0.97,
        confidence: 0.82,
        score: 3.1,
        event_count: 42,
        top_contributors: vec![Contributor {
            dimension: "principal".into(),
            value: "arn:aws:iam::111122223333:user/ci-deployer".into(),
            count: 38,
            share: 0.95,
            baseline_count: 0,
            is_new: true,
        }],
        detected_at: end,
        account,
    };
    Insight {
        id: id.into(),
        anomaly,
        incident_id: incident_id.into(),
        summary: "40 EC2 instances launched in payments-prod (us-east-1) vs 1.5 expected; ~$1,310.72/h".into(),
        cost: CostImpact::from_lines(
            vec![CostLine {
                item: "p4d.24xlarge".into(),
                quantity: 40.0,
                unit: "instances".into(),
                usd_per_hour: 1310.72,
                estimated: false,
                basis: "us-east-1 on-demand price".into(),
            }],
            vec!["instances keep running at on-demand prices".into()],
            "2026-01-01",
        ),
        root_cause: RootCause {
            explanation: "38 of 40 launches came from IAM user ci-deployer (new to this account) at 198.51.100.7 (new IP)".into(),
            factors: vec![Factor {
                dimension: "principal".into(),
                value: "arn:aws:iam::111122223333:user/ci-deployer".into(),
                count: 38,
                share: 0.95,
                is_new: true,
                baseline_count: 0,
            }],
        },
        severity,
        severity_reasons: vec![
            "production account".into(),
            "new principal and new source IP".into(),
            "cost above $1,000/h".into(),
        ],
        recommendations: vec![Recommendation {
            rule: "new-principal-launch".into(),
            title: "Check the launches by a new principal".into(),
            actions: vec![
                "Confirm with the payments team that ci-deployer should launch p4d.24xlarge".into(),
                "If not, stop the instances and disable the user's access keys".into(),
            ],
        }],
        correlation: Some(trailhound_core::insight::Correlation {
            id: "corr-1".into(),
            kind: "source_ip".into(),
            value: "198.51.100.7".into(),
            account_ids: vec!["111122223333".into(), "444455556666".into()],
            account_names: vec!["payments-prod".into(), "data-staging".into()],
            anomaly_ids: vec![id.into(), "other-anomaly".into()],
        }),
        suppressed_by: None,
        analyzed_at: end + chrono::Duration::seconds(5),
        investigate: vec![
            "grpcurl -plaintext -d '{\"id\":\"x\"}' localhost:50054 trailhound.insights.v1.InsightsService/GetInsight".into(),
            "trailhound detect --org org.json --input AWSLogs/".into(),
        ],
        trace_parent: String::new(),
    }
}
