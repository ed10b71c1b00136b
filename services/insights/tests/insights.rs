//! insights on a generated organization: the anomalies detect finds in a
//! trail with injected incidents are explained — cost, root cause,
//! severity, recommendations — and the example questions are answered
//! from them. Plus correlation, suppression and incident grouping on
//! hand-made anomalies.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use trailhound_core::anomaly::testing::spike;
use trailhound_core::{
    AccountMetadata, Anomaly, AnomalyKind, Contributor, Environment, FeatureValue, Insight,
    Severity,
};
use trailhound_generate::{GenerateConfig, IncidentKind, Labels};
use trailhound_insights::ask::{AskBackend, BuiltinAsk};
use trailhound_insights::config::SuppressionRule;
use trailhound_insights::store::InsightStore;
use trailhound_insights::{Insights, InsightsConfig};

/// The first incident of `kind` the generator injected.
fn incident(labels: &Labels, kind: IncidentKind) -> &trailhound_generate::Incident {
    labels
        .incidents
        .iter()
        .find(|i| i.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} incident"))
}

/// Generates an organization and runs detect's engine over it, as the
/// services do: parse, enrich from the snapshot, detect.
async fn anomalies_of_generated_org(dir: &std::path::Path) -> (Labels, Vec<Anomaly>) {
    let cfg = GenerateConfig {
        days: 6,
        accounts: 6,
        seed: 3,
        noise_per_account_hour: 10,
        ..Default::default()
    };
    trailhound_generate::generate(&cfg, dir).unwrap();
    let labels = trailhound_generate::read_labels(&dir.join("labels.json")).unwrap();
    let source = Arc::new(trailhound_enrich::SnapshotSource::load(&dir.join("org.json")).unwrap());
    let enricher = trailhound_enrich::Enricher::new(
        source,
        None,
        Default::default(),
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(3600),
    );
    let detect_cfg = trailhound_detect::DetectConfig::default();
    let mut engine = trailhound_detect::Engine::new(detect_cfg.detectors, detect_cfg.engine);
    let mut results = Vec::new();
    for g in trailhound_trail::files::delivery_groups(&dir.join("trail")).unwrap() {
        let parsed = trailhound_trail::read::parse_group(&g.files, &Default::default());
        for e in enricher.enrich(parsed.events).await {
            engine.observe(&e, &mut results);
        }
    }
    engine.flush(&mut results);
    let anomalies = results.into_iter().filter_map(|r| r.anomaly).collect();
    (labels, anomalies)
}

fn open(dir: &std::path::Path, config: InsightsConfig) -> Insights {
    let store = InsightStore::open(&dir.join("insights.redb")).unwrap();
    Insights::open(
        config,
        store,
        trailhound_pricing::PriceTable::builtin().unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_org_is_explained_and_questions_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (labels, anomalies) = anomalies_of_generated_org(&dir.path().join("org")).await;
    assert!(!anomalies.is_empty());
    let insights = open(dir.path(), InsightsConfig::default());
    let all = insights.analyze(&anomalies).unwrap();
    assert_eq!(all.len(), anomalies.len());

    // The cryptomining burst: the attacker, the IP, the region and the GPU
    // type are the first factors, priced, critical, with the playbook.
    let burst = incident(&labels, IncidentKind::Cryptomining);
    let found: Vec<&Insight> = all
        .iter()
        .filter(|i| {
            i.anomaly.account_id == burst.account_id
                && i.anomaly.detector == "ec2-run-instances"
                && i.anomaly.region == burst.region
        })
        .collect();
    let i = found.first().expect("the burst is an insight");
    let first_of = |dim: &str| {
        i.root_cause
            .factors
            .iter()
            .find(|f| f.dimension == dim)
            .map(|f| f.value.clone())
    };
    assert_eq!(first_of("principal"), burst.principal_arn);
    assert_eq!(first_of("source_ip"), burst.source_ip);
    assert_eq!(first_of("instance_type"), burst.instance_type);
    let region_first =
        i.anomaly.kind != AnomalyKind::NewRegion || i.root_cause.factors[0].dimension == "region";
    assert!(region_first, "{:?}", i.root_cause.factors);
    let itype = burst.instance_type.clone().unwrap();
    let e = &i.root_cause.explanation;
    assert!(
        e.contains(&itype) && e.contains(&burst.region) && e.contains("new"),
        "{e}"
    );
    assert!(i.cost.usd_per_hour > 1.0, "{:?}", i.cost);
    assert!(
        i.cost.lines.iter().any(|l| l.item.contains(&itype)),
        "{:?}",
        i.cost
    );
    assert!(!i.cost.assumptions.is_empty());
    assert_eq!(i.severity, Severity::Critical, "{:?}", i.severity_reasons);
    assert!(
        i.recommendations.iter().any(|r| r.rule == "cryptomining"),
        "{:?}",
        i.recommendations
    );
    assert!(i.summary.contains("$"), "{}", i.summary);
    assert!(!i.investigate.is_empty());

    // Consecutive windows of one entity share an incident.
    let storm = incident(&labels, IncidentKind::InvokeStorm);
    let storm_windows: Vec<&Insight> = all
        .iter()
        .filter(|i| {
            i.anomaly.account_id == storm.account_id
                && i.anomaly.detector == "lambda-invoke"
                && i.anomaly.region == storm.region
                && i.anomaly.window_start >= storm.start - Duration::minutes(10)
                && i.anomaly.window_start < storm.end
        })
        .collect();
    assert!(storm_windows.len() >= 2, "{}", storm_windows.len());
    assert!(
        storm_windows
            .iter()
            .all(|w| w.incident_id == storm_windows[0].incident_id)
    );

    // Questions, with "now" just after the burst's day.
    let now = burst.start + Duration::hours(20);
    let ask = BuiltinAsk::with_clock(insights.store().clone(), now);
    let visible: Vec<&Insight> = all.iter().filter(|i| !i.is_suppressed()).collect();

    let a = ask
        .ask("Show me EC2 anomalies from production accounts", 1000)
        .await
        .unwrap();
    assert!(a.fully_understood, "{a:?}");
    let expected_incidents: std::collections::BTreeSet<&str> = visible
        .iter()
        .filter(|i| i.anomaly.service == "ec2" && i.anomaly.environment == Environment::Production)
        .map(|i| i.incident_id.as_str())
        .collect();
    assert_eq!(a.results.len(), expected_incidents.len(), "{}", a.answer);
    assert!(a.results.iter().all(|i| i.anomaly.service == "ec2"
        && i.anomaly.environment == Environment::Production));

    let a = ask
        .ask("Show me EC2 anomalies from the last 24 hours", 1000)
        .await
        .unwrap();
    assert!(
        a.results
            .iter()
            .any(|r| r.id == i.id || r.incident_id == i.incident_id),
        "{}",
        a.answer
    );
    assert!(
        a.results
            .iter()
            .all(|r| r.anomaly.window_end > now - Duration::hours(24))
    );

    let a = ask
        .ask("What accounts had the highest cost impact this week?", 20)
        .await
        .unwrap();
    assert_eq!(
        a.account_costs.first().map(|c| c.account_id.as_str()),
        Some(burst.account_id.as_str()),
        "{}",
        a.answer
    );
    assert!(
        a.account_costs
            .windows(2)
            .all(|w| w[0].usd_per_30_days >= w[1].usd_per_30_days)
    );

    let a = ask
        .ask(
            "Are there any security concerns with recent Lambda anomalies?",
            20,
        )
        .await
        .unwrap();
    assert!(
        a.results.iter().all(|r| r.anomaly.service == "lambda"),
        "{}",
        a.answer
    );
    assert!(
        a.results
            .iter()
            .any(|r| r.anomaly.account_id == storm.account_id),
        "the storm comes from a principal new to the account: {}",
        a.answer
    );

    let a = ask
        .ask(
            "Compare anomaly patterns between production and staging accounts",
            20,
        )
        .await
        .unwrap();
    let names: Vec<&str> = a.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["production", "staging"]);
    for g in &a.groups {
        let env: Environment = g.name.parse().unwrap();
        let n: std::collections::BTreeSet<&str> = visible
            .iter()
            .filter(|i| i.anomaly.environment == env)
            .map(|i| i.incident_id.as_str())
            .collect();
        assert_eq!(g.insights as usize, n.len(), "{}", a.answer);
    }

    let q = format!("Why was account {} flagged yesterday?", burst.account_id);
    let ask_next_day = BuiltinAsk::with_clock(
        insights.store().clone(),
        Utc.from_utc_datetime(
            &(burst.start.date_naive() + chrono::Days::new(1))
                .and_hms_opt(9, 0, 0)
                .unwrap(),
        ),
    );
    let a = ask_next_day.ask(&q, 20).await.unwrap();
    assert!(
        a.results
            .iter()
            .all(|r| r.anomaly.account_id == burst.account_id)
    );
    assert!(
        a.results.iter().any(|r| r.incident_id == i.incident_id),
        "{}",
        a.answer
    );
    assert!(a.answer.contains(&itype), "{}", a.answer);

    let a = ask
        .ask("what is the airspeed velocity of an unladen swallow?", 20)
        .await
        .unwrap();
    assert!(!a.fully_understood);
    assert!(a.results.is_empty());
    assert!(a.answer.contains("Why was account"), "{}", a.answer);
    assert!(ask.ask(&"x".repeat(100_000), 20).await.is_err());
}

fn anomaly(account: &str, env: Environment, principal: &str, ip: &str, minute: i64) -> Anomaly {
    let start =
        Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).single().unwrap() + Duration::minutes(minute);
    let mut meta = AccountMetadata::external(account);
    meta.name = format!("acct-{}", &account[..4]);
    meta.environment = env;
    meta.known = true;
    meta.ou_path = vec!["Root".into(), "Workloads".into()];
    let contributor = |dim: &str, v: &str| Contributor {
        dimension: dim.into(),
        value: v.into(),
        count: 5,
        share: 1.0,
        baseline_count: 0,
        is_new: true,
    };
    Anomaly {
        actual: 20.0,
        expected: 1.0,
        features: vec![
            FeatureValue {
                name: "volumes".into(),
                actual: 20.0,
                expected: 1.0,
            },
            FeatureValue {
                name: "gib".into(),
                actual: 2000.0,
                expected: 100.0,
            },
        ],
        grade: 0.8,
        event_count: 20,
        top_contributors: vec![
            contributor("principal", principal),
            contributor("source_ip", ip),
            contributor("volume_type", "gp3"),
        ],
        ..spike("ebs-create-volume", "ebs", meta, minute, start)
    }
}

/// The same role name (mallory's) rising in a production account, then
/// 20 minutes later in a staging one, from two addresses.
fn mallory_in_two_accounts() -> (Anomaly, Anomaly) {
    let a = anomaly(
        "111122223333",
        Environment::Production,
        "arn:aws:sts::111122223333:assumed-role/Admin/mallory",
        "203.0.113.9",
        0,
    );
    let b = anomaly(
        "444455556666",
        Environment::Staging,
        "arn:aws:sts::444455556666:assumed-role/Admin/mallory",
        "198.51.100.1",
        20,
    );
    (a, b)
}

#[test]
fn the_same_actor_in_two_accounts_is_one_correlated_incident() {
    let dir = tempfile::tempdir().unwrap();
    let insights = open(dir.path(), InsightsConfig::default());
    let (a, b) = mallory_in_two_accounts();
    let first = insights.analyze(&[a]).unwrap().pop().unwrap();
    assert!(first.correlation.is_none());
    let second = insights.analyze(&[b]).unwrap().pop().unwrap();
    let c = second.correlation.expect("correlated");
    assert_eq!(c.kind, "principal");
    assert_eq!(c.value, "assumed-role/Admin/mallory");
    assert_eq!(c.account_ids, ["111122223333", "444455556666"]);
    assert!(
        second.summary.contains("also in 1 other"),
        "{}",
        second.summary
    );
    assert!(second.recommendations.iter().any(|r| r.rule == "org-wide"));
    assert!(
        second
            .severity_reasons
            .iter()
            .any(|r| r.contains("2 accounts")),
        "{:?}",
        second.severity_reasons
    );
}

#[test]
fn suppression_rules_and_environment_criticality() {
    let dir = tempfile::tempdir().unwrap();
    let config = InsightsConfig {
        suppress: vec![SuppressionRule {
            name: "nightly backup".into(),
            detectors: vec!["ebs-create-volume".into()],
            accounts: vec!["111122223333".into()],
            from: Some("01:30".into()),
            to: Some("03:00".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let insights = open(dir.path(), config);
    let p = "arn:aws:iam::111122223333:user/backup";
    let inside = anomaly("111122223333", Environment::Production, p, "10.0.0.1", 0);
    let outside = anomaly("111122223333", Environment::Production, p, "10.0.0.1", 120);
    let other = anomaly("999988887777", Environment::Sandbox, p, "10.0.0.1", 0);
    let out = insights.analyze(&[inside, outside, other]).unwrap();
    assert_eq!(out[0].suppressed_by.as_deref(), Some("nightly backup"));
    assert_eq!(out[1].suppressed_by, None);
    assert_eq!(out[2].suppressed_by, None);
    // The same anomaly weighs more in production than in a sandbox.
    assert!(
        out[1].severity > out[2].severity,
        "{:?} vs {:?}",
        out[1].severity_reasons,
        out[2].severity_reasons
    );
    assert!(
        out[1]
            .severity_reasons
            .iter()
            .any(|r| r.contains("production"))
    );
    // A gap of more than one window starts a new incident.
    assert_ne!(out[0].incident_id, out[1].incident_id);
    // Bad rules are refused at start-up with the rule named.
    let bad = InsightsConfig {
        suppress: vec![SuppressionRule {
            name: "typo".into(),
            from: Some("25:00".into()),
            to: Some("26:00".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let store = InsightStore::open(&dir.path().join("other.redb")).unwrap();
    let err = Insights::open(
        bad,
        store,
        trailhound_pricing::PriceTable::builtin().unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("typo") && err.contains("25:00"), "{err}");
}

#[test]
fn an_anomaly_of_an_account_outside_the_organization_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let insights = open(dir.path(), InsightsConfig::default());
    let mut a = anomaly(
        "000011112222",
        Environment::Unknown,
        "arn:aws:iam::000011112222:user/x",
        "203.0.113.1",
        0,
    );
    a.account = AccountMetadata::external("000011112222");
    a.account_name.clear();
    let i = insights.analyze(&[a]).unwrap().pop().unwrap();
    assert!(i.summary.contains("000011112222"), "{}", i.summary);
    assert!(
        i.severity_reasons.iter().any(|r| r.contains("unknown")),
        "{:?}",
        i.severity_reasons
    );
}

fn scope_of_accounts(accounts: &[&str]) -> trailhound_core::Scope {
    trailhound_core::Scope::union([trailhound_core::ScopeRule {
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }])
}

/// An org-wide correlation seen by a caller scoped to one of its accounts:
/// the other accounts, their anomalies and even their number are absent —
/// from the correlation, the summary, the severity reasons, the
/// recommendations and Ask's answers. A scope that covers both (here by
/// OU, learned from the other anomaly's insight) sees it whole.
#[tokio::test]
async fn a_scoped_caller_sees_no_count_of_correlated_accounts_outside_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let insights = open(dir.path(), InsightsConfig::default());
    let (a, b) = mallory_in_two_accounts();
    insights.analyze(&[a]).unwrap();
    let whole = insights.analyze(&[b]).unwrap().pop().unwrap();
    assert!(whole.correlation.is_some());

    let own = scope_of_accounts(&["444455556666"]);
    let seen = insights.scoped(&own, &whole);
    assert_eq!(seen.correlation, None);
    assert!(!seen.summary.contains("other account"), "{}", seen.summary);
    assert!(
        !seen.severity_reasons.iter().any(|r| r.contains("accounts")),
        "{:?}",
        seen.severity_reasons
    );
    assert!(!seen.recommendations.iter().any(|r| r.rule == "org-wide"));
    // The point the hidden account added is gone from the severity too,
    // and from the summary that leads with it.
    let points = |i: &trailhound_core::Insight| -> i32 {
        let last = i.severity_reasons.last().unwrap();
        last.split(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        points(&seen),
        points(&whole) - 1,
        "{:?}",
        seen.severity_reasons
    );
    assert!(seen.severity <= whole.severity);
    assert!(
        seen.summary.starts_with(seen.severity.label()),
        "{}",
        seen.summary
    );
    let text = format!("{seen:?}");
    assert!(!text.contains("111122223333"), "{text}");

    // Ask over the scope: the correlation's count is not there either.
    let answer = insights
        .ask_in("Which incidents look like a security problem?", 20, &own)
        .await
        .unwrap();
    let text = format!("{answer:?}");
    assert!(!text.contains("111122223333"), "{text}");
    assert!(!text.contains("in 2 accounts"), "{text}");

    // Both accounts in scope (by OU: the other account's OU comes from
    // its anomaly): the correlation is whole.
    let workloads = trailhound_core::Scope::union([trailhound_core::ScopeRule {
        ous: vec!["Root/Workloads".into()],
        ..Default::default()
    }]);
    assert_eq!(insights.scoped(&workloads, &whole), whole);
    assert_eq!(
        insights.scoped(&trailhound_core::Scope::all(), &whole),
        whole
    );
}

/// A question engine that answers over the whole organization (as Amazon
/// Q Business does): it must never answer a scoped caller.
struct WholeOrg;

#[async_trait::async_trait]
impl AskBackend for WholeOrg {
    fn name(&self) -> &'static str {
        "whole-org"
    }
    async fn ask(
        &self,
        _question: &str,
        _limit: usize,
    ) -> Result<trailhound_insights::ask::Answer, trailhound_insights::ask::AskError> {
        Ok(trailhound_insights::ask::Answer {
            answer: "111122223333 and 444455556666".into(),
            backend: "whole-org".into(),
            ..Default::default()
        })
    }
}

/// With an engine that cannot filter by scope (Amazon Q Business), a
/// scoped caller is answered by the built-in engine over its scope and
/// told so; unrestricted callers still get the configured engine.
#[tokio::test]
async fn ask_through_an_engine_without_scopes_answers_scoped_callers_over_their_scope() {
    let dir = tempfile::tempdir().unwrap();
    let insights = open(dir.path(), InsightsConfig::default());
    let p = |a: &str| format!("arn:aws:iam::{a}:user/x");
    insights
        .analyze(&[
            anomaly(
                "111122223333",
                Environment::Production,
                &p("111122223333"),
                "203.0.113.1",
                0,
            ),
            anomaly(
                "444455556666",
                Environment::Sandbox,
                &p("444455556666"),
                "203.0.113.2",
                200,
            ),
        ])
        .unwrap();
    insights.set_ask_backend(Arc::new(WholeOrg));
    let q = "What accounts had the highest cost impact this week?";
    let all = insights
        .ask_in(q, 20, &trailhound_core::Scope::all())
        .await
        .unwrap();
    assert_eq!(all.backend, "whole-org");
    let scoped = insights
        .ask_in(q, 20, &scope_of_accounts(&["444455556666"]))
        .await
        .unwrap();
    assert_eq!(scoped.backend, "builtin");
    assert!(
        scoped.understood.contains("whole-org"),
        "{}",
        scoped.understood
    );
    let text = format!("{scoped:?}");
    assert!(!text.contains("111122223333"), "{text}");
    assert!(text.contains("444455556666"), "{text}");
}

/// The investigate commands reach detect as the deployment serves it:
/// `-plaintext` without TLS, `-cacert` with it, `-cert`/`-key` with mTLS,
/// and the token with auth — never `-plaintext` against a TLS port.
#[test]
fn investigate_commands_carry_the_deployments_tls_flags() {
    use trailhound_insights::config::grpcurl_flags;
    use trailhound_runtime::tls::TlsConfig;
    assert_eq!(grpcurl_flags(None, false), "-plaintext");
    let tls = TlsConfig {
        cert: Some("certs/insights.pem".into()),
        key: Some("certs/insights-key.pem".into()),
        ca: Some("certs/ca.pem".into()),
        ..Default::default()
    };
    assert_eq!(grpcurl_flags(Some(&tls), false), "-cacert certs/ca.pem");
    let mtls = TlsConfig {
        client_ca: Some("certs/ca.pem".into()),
        ..tls.clone()
    };
    assert_eq!(
        grpcurl_flags(Some(&mtls), true),
        "-cacert certs/ca.pem -cert certs/client.pem -key certs/client-key.pem -H \"authorization: Bearer $TRAILHOUND_TOKEN\""
    );
    let spaced = TlsConfig {
        ca: Some("/etc/my certs/ca.pem".into()),
        ..tls
    };
    assert_eq!(
        grpcurl_flags(Some(&spaced), false),
        "-cacert '/etc/my certs/ca.pem'"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = InsightsConfig {
        detect_address: "detect.internal:50053".into(),
        detect_grpcurl_flags: Some(grpcurl_flags(Some(&mtls), false)),
        ..Default::default()
    };
    let insights = open(dir.path(), config);
    let p = "arn:aws:iam::111122223333:user/x";
    // One anomaly by `p`, analyzed.
    let analyzed = |insights: &Insights| {
        let a = anomaly("111122223333", Environment::Production, p, "203.0.113.1", 0);
        insights.analyze(&[a]).unwrap().pop().unwrap()
    };
    let i = analyzed(&insights);
    let grpcurl: Vec<&String> = i
        .investigate
        .iter()
        .filter(|c| c.starts_with("grpcurl"))
        .collect();
    assert_eq!(grpcurl.len(), 2, "{:?}", i.investigate);
    for c in grpcurl {
        assert!(
            c.starts_with(
                "grpcurl -cacert certs/ca.pem -cert certs/client.pem -key certs/client-key.pem -d "
            ) && c.contains("detect.internal:50053")
                && !c.contains("-plaintext"),
            "{c}"
        );
    }
    // Without TLS configured the default stays -plaintext.
    let plain = tempfile::tempdir().unwrap();
    let insights = open(plain.path(), InsightsConfig::default());
    let i = analyzed(&insights);
    assert!(
        i.investigate[0].starts_with("grpcurl -plaintext -d "),
        "{:?}",
        i.investigate
    );
}

/// detect → insights in one process (`trailhound up`) goes through
/// `InsightsSink`: the anomalies are analysed (off the async workers, as
/// `AnalyzeBatch` does), stored and announced to watchers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_sink_analyses_stores_and_announces() {
    use trailhound_core::pipeline::AnomalySink;
    let dir = tempfile::tempdir().unwrap();
    let insights = std::sync::Arc::new(open(dir.path(), InsightsConfig::default()));
    let mut watch = insights.subscribe();
    let a = anomaly(
        "111122223333",
        Environment::Production,
        "arn:aws:sts::111122223333:assumed-role/Admin/mallory",
        "203.0.113.9",
        0,
    );
    let sink = trailhound_insights::InsightsSink(insights.clone());
    assert_eq!(sink.send(vec![a.clone()]).await.unwrap(), 1);
    let stored = insights.get(&a.id).unwrap().expect("stored");
    assert_eq!(stored.anomaly.id, a.id);
    let announced = watch.recv().await.unwrap();
    assert_eq!(announced.id, a.id);
}
