//! Routing: which channels an insight goes to, and which rule chose each.
//!
//! All matching rules apply, in configuration order; a channel named by
//! several matching rules gets one message, credited to the first rule. A
//! rule with `stop = true` ends the evaluation when it matches. See
//! [`crate::NotifyConfig::routes`].

use trailhound_core::Insight;

use crate::config::RouteConfig;

/// A channel chosen for an insight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The rule that chose it.
    pub rule: String,
    /// The channel's name.
    pub channel: String,
}

/// The configured rules, in order.
#[derive(Clone, Debug)]
pub struct Router {
    rules: Vec<RouteConfig>,
}

impl Router {
    /// Rules are expected to be validated (their channels exist).
    pub fn new(rules: Vec<RouteConfig>) -> Self {
        Self { rules }
    }

    /// The channels `insight` goes to, each once, in rule order.
    pub fn route(&self, insight: &Insight) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        for rule in &self.rules {
            if !rule.matches(insight) {
                continue;
            }
            for ch in &rule.channels {
                if !out.iter().any(|r| &r.channel == ch) {
                    out.push(Route {
                        rule: rule.name.clone(),
                        channel: ch.clone(),
                    });
                }
            }
            if rule.stop {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OuPattern;
    use crate::testing::sample_insight as insight;
    use trailhound_core::{Environment, Severity};

    fn rule(name: &str, channels: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            ..RouteConfig::default()
        }
    }

    fn channels(r: &Router, i: &Insight) -> Vec<(String, String)> {
        r.route(i)
            .into_iter()
            .map(|r| (r.rule, r.channel))
            .collect()
    }

    #[test]
    fn all_matching_rules_apply_each_channel_once() {
        let r = Router::new(vec![
            RouteConfig {
                min_severity: Severity::High,
                ..rule("high", &["pager", "log"])
            },
            rule("all", &["log", "siem"]),
        ]);
        let high = insight("a", "a", Severity::High);
        assert_eq!(
            channels(&r, &high),
            vec![
                ("high".into(), "pager".into()),
                ("high".into(), "log".into()),
                ("all".into(), "siem".into())
            ]
        );
        let low = insight("b", "b", Severity::Low);
        assert_eq!(
            channels(&r, &low),
            vec![("all".into(), "log".into()), ("all".into(), "siem".into())]
        );
    }

    #[test]
    fn stop_gives_first_match() {
        let r = Router::new(vec![
            RouteConfig {
                environments: vec![Environment::Sandbox],
                stop: true,
                ..rule("sandbox", &["log"])
            },
            rule("all", &["slack"]),
        ]);
        let mut i = insight("a", "a", Severity::Critical);
        i.anomaly.environment = Environment::Sandbox;
        assert_eq!(channels(&r, &i), vec![("sandbox".into(), "log".into())]);
        i.anomaly.environment = Environment::Production;
        assert_eq!(channels(&r, &i), vec![("all".into(), "slack".into())]);
    }

    #[test]
    fn every_condition_must_hold() {
        let base = insight("a", "a", Severity::Medium);
        let cases: Vec<(RouteConfig, bool)> = vec![
            (
                RouteConfig {
                    ous: vec![OuPattern::parse("Workloads/Production")],
                    ..rule("ou", &["c"])
                },
                true,
            ),
            (
                RouteConfig {
                    ous: vec![OuPattern::parse("Sandbox")],
                    ..rule("ou", &["c"])
                },
                false,
            ),
            (
                RouteConfig {
                    accounts: vec!["111122223333".into()],
                    ..rule("acct", &["c"])
                },
                true,
            ),
            (
                RouteConfig {
                    accounts: vec!["999999999999".into()],
                    ..rule("acct", &["c"])
                },
                false,
            ),
            (
                RouteConfig {
                    detectors: vec!["lambda-invoke".into()],
                    ..rule("det", &["c"])
                },
                false,
            ),
            (
                RouteConfig {
                    detectors: vec!["ec2-run-instances".into()],
                    regions: vec!["us-east-1".into()],
                    environments: vec![Environment::Production],
                    ..rule("det", &["c"])
                },
                true,
            ),
            (
                RouteConfig {
                    min_severity: Severity::High,
                    ..rule("sev", &["c"])
                },
                false,
            ),
        ];
        for (cfg, want) in cases {
            let name = cfg.name.clone();
            let r = Router::new(vec![cfg]);
            assert_eq!(!r.route(&base).is_empty(), want, "rule {name}");
        }
    }

    #[test]
    fn suppressed_insights_need_an_opt_in() {
        let mut i = insight("a", "a", Severity::High);
        i.suppressed_by = Some("known-batch-job".into());
        let r = Router::new(vec![rule("all", &["log"])]);
        assert!(r.route(&i).is_empty());
        let r = Router::new(vec![RouteConfig {
            include_suppressed: true,
            ..rule("all", &["log"])
        }]);
        assert_eq!(r.route(&i).len(), 1);
    }
}
