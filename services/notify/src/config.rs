//! notify's configuration: the `[notify]` section of the config file.
//!
//! Channels say *where* a message can go and rules (`routes`) say *which*
//! insights go there. Everything is checked at start-up by
//! [`NotifyConfig::validate`]: a rule that names a channel that does not
//! exist, a kind-specific key on the wrong kind, or two channels with one
//! name are errors naming the rule or channel, so a typo never silently
//! drops alerts.
//!
//! Secrets (webhook URLs, signing secrets) are never stored in this struct
//! in a form that prints: [`SecretSpec`] redacts its literal in `Debug` and
//! when serialized.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trailhound_core::{Environment, Insight, Severity};

/// The `[notify]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// insights' gRPC endpoint; notify follows its WatchInsights stream.
    pub insights_endpoint: String,
    /// Delivery history and incident state (redb); default
    /// `<data-dir>/notify.redb`. Keeping incident state here is what stops a
    /// restart from re-alerting every open incident.
    pub store_path: Option<PathBuf>,
    /// Deliveries that failed after every retry, one JSON object per line;
    /// default `<data-dir>/notify-dead-letters.jsonl`.
    pub dead_letter_path: Option<PathBuf>,
    /// A later window of an incident already notified on a channel is sent
    /// as a short follow-up only when its severity is higher than anything
    /// sent there before, or when this long has passed since the last
    /// message of the incident on that channel; otherwise it is recorded as
    /// SKIPPED.
    #[serde(with = "humantime_serde")]
    pub follow_up_interval: Duration,
    /// Incident state is forgotten this long after the incident's last
    /// window was seen; a window arriving later starts a new notification.
    #[serde(with = "humantime_serde")]
    pub forget_incidents_after: Duration,
    /// Deliveries kept in memory for ListDeliveries.
    pub max_recent_deliveries: usize,
    /// Deliveries kept in the store; the oldest are dropped beyond this.
    pub max_stored_deliveries: usize,
    /// Insights being delivered at once while following a stream; a slow
    /// channel holds one slot, not the stream.
    pub max_in_flight: usize,
    /// Longest pause between reconnection attempts to insights.
    #[serde(with = "humantime_serde")]
    pub reconnect_max_backoff: Duration,
    /// Retries, backoff and the per-request timeout, for every channel
    /// unless the channel overrides `timeout` or `max_attempts`.
    pub retry: RetryConfig,
    /// Where messages can go. Default: one `log` channel.
    pub channels: Vec<ChannelConfig>,
    /// Which insights go to which channels.
    ///
    /// **All matching rules apply**, in order: an insight goes to the union
    /// of the channels of every rule it matches (each channel at most once,
    /// credited to the first rule that named it). A rule with `stop = true`
    /// ends the evaluation when it matches, which gives first-match
    /// behaviour where it is wanted (e.g. "sandbox goes to the log only").
    ///
    /// Default: one rule, `everything`, sending every unsuppressed insight
    /// (severity LOW and up) to the `log` channel. Set `routes` whenever
    /// you set `channels`.
    pub routes: Vec<RouteConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50055)),
            insights_endpoint: "http://127.0.0.1:50054".into(),
            store_path: None,
            dead_letter_path: None,
            follow_up_interval: Duration::from_secs(30 * 60),
            forget_incidents_after: Duration::from_secs(7 * 24 * 3600),
            max_recent_deliveries: 1000,
            max_stored_deliveries: 10_000,
            max_in_flight: 32,
            reconnect_max_backoff: Duration::from_secs(30),
            retry: RetryConfig::default(),
            channels: vec![ChannelConfig::log("log")],
            routes: vec![RouteConfig {
                name: "everything".into(),
                channels: vec!["log".into()],
                ..RouteConfig::default()
            }],
        }
    }
}

/// How each delivery is retried. Backoff is exponential with full jitter:
/// before attempt `n + 1` notify sleeps a random time in
/// `0..=min(max_backoff, initial_backoff × 2^(n-1))`, or exactly the
/// server's `Retry-After` when it sent one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Longest one attempt may take, connection included; a webhook that
    /// hangs fails that attempt instead of holding the delivery.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A `Retry-After` longer than this ends the retries (FAILED, dead
    /// letter) rather than holding a delivery slot for that long.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// What a channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Slack incoming webhook; Block Kit messages.
    Slack,
    /// Microsoft Teams incoming webhook; an Adaptive Card.
    Teams,
    /// Any HTTPS endpoint; the insight as JSON, HMAC-signed.
    Webhook,
    /// An Amazon SNS topic (needs the AWS backend).
    Sns,
    /// tracing, and optionally a JSON Lines file.
    Log,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Teams => "teams",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Sns => "sns",
            ChannelKind::Log => "log",
        }
    }

    /// Messages per minute when the channel does not say. Slack and Teams
    /// throttle incoming webhooks at about one message per second; the log
    /// is unlimited.
    pub fn default_rate_limit(self) -> u32 {
        match self {
            ChannelKind::Slack | ChannelKind::Teams => 30,
            ChannelKind::Webhook | ChannelKind::Sns => 120,
            ChannelKind::Log => 0,
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret given literally in the file. Never printed: `Debug` and
/// serialization show `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretSpec(pub String);

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for SecretSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// One `[[notify.channels]]` entry. Which keys apply depends on `kind`:
///
/// | kind | keys |
/// |---|---|
/// | `slack`, `teams` | exactly one of `url_env`, `url_file`, `url` |
/// | `webhook` | exactly one of `url_env`, `url_file`, `url`; at most one of `secret_env`, `secret_file`, `secret` (signs each request) |
/// | `sns` | `topic_arn` |
/// | `log` | optional `jsonl_path` |
///
/// `url_env`/`secret_env` name an environment variable, `url_file`/
/// `secret_file` a file whose trimmed content is the value (e.g. a mounted
/// secret). A literal `url`/`secret` is for local testing. Either way the
/// value never appears in logs, errors or ListChannels; URLs are shown as
/// scheme, host and first path segment followed by `***`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Name the rules refer to.
    pub name: String,
    pub kind: Option<ChannelKind>,
    pub url: Option<SecretSpec>,
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    pub secret: Option<SecretSpec>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// SNS topic.
    pub topic_arn: Option<String>,
    /// Also append each message as a JSON line to this file (log channels;
    /// a relative path is taken from the working directory).
    pub jsonl_path: Option<PathBuf>,
    /// Messages per minute (token bucket); 0 = unlimited. Default per kind:
    /// slack and teams 30, webhook and sns 120, log unlimited. A message
    /// over the limit is not queued: it is recorded SKIPPED with the reason.
    /// Queuing would deliver a storm's alerts late and in bulk; skipping
    /// keeps the channel readable, and because a skipped first message does
    /// not mark its incident as notified, the incident's next window is
    /// sent in full once tokens are back.
    pub rate_limit_per_minute: Option<u32>,
    /// Bucket size: messages that may go at once after a quiet period;
    /// default the per-minute rate.
    pub burst: Option<u32>,
    /// Overrides `retry.timeout` for this channel.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Overrides `retry.max_attempts` for this channel.
    pub max_attempts: Option<u32>,
}

impl ChannelConfig {
    /// A log channel with the given name.
    pub fn log(name: &str) -> Self {
        Self {
            name: name.into(),
            kind: Some(ChannelKind::Log),
            ..Self::default()
        }
    }

    /// A channel of `kind` posting to a literal URL (tests, local setups).
    pub fn with_url(name: &str, kind: ChannelKind, url: &str) -> Self {
        Self {
            name: name.into(),
            kind: Some(kind),
            url: Some(SecretSpec(url.into())),
            ..Self::default()
        }
    }

    /// The kind; validation has checked it is set.
    pub fn kind(&self) -> ChannelKind {
        self.kind.unwrap_or(ChannelKind::Log)
    }

    pub fn rate_limit(&self) -> u32 {
        self.rate_limit_per_minute
            .unwrap_or_else(|| self.kind().default_rate_limit())
    }

    fn validate(&self) -> Result<(), String> {
        let Some(kind) = self.kind else {
            return Err("kind is missing (slack, teams, webhook, sns or log)".into());
        };
        let urls = [
            self.url.is_some(),
            self.url_env.is_some(),
            self.url_file.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        let secrets = [
            self.secret.is_some(),
            self.secret_env.is_some(),
            self.secret_file.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        let needs_url = matches!(
            kind,
            ChannelKind::Slack | ChannelKind::Teams | ChannelKind::Webhook
        );
        if needs_url && urls != 1 {
            return Err(format!(
                "{kind} channels need exactly one of url_env, url_file or url (found {urls})"
            ));
        }
        if !needs_url && urls > 0 {
            return Err(format!(
                "url, url_env and url_file do not apply to {kind} channels"
            ));
        }
        if kind == ChannelKind::Webhook {
            if secrets > 1 {
                return Err("give at most one of secret_env, secret_file or secret".into());
            }
        } else if secrets > 0 {
            return Err(format!(
                "secret, secret_env and secret_file apply to webhook channels only, not {kind}"
            ));
        }
        match (kind, &self.topic_arn) {
            (ChannelKind::Sns, None) => return Err("sns channels need topic_arn".into()),
            (ChannelKind::Sns, Some(arn))
                if !arn.starts_with("arn:") || arn.split(':').count() != 6 =>
            {
                return Err(format!(
                    "topic_arn {arn:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
                ));
            }
            (ChannelKind::Sns, Some(_)) => {}
            (_, Some(_)) => {
                return Err(format!(
                    "topic_arn applies to sns channels only, not {kind}"
                ));
            }
            (_, None) => {}
        }
        if kind != ChannelKind::Log && self.jsonl_path.is_some() {
            return Err(format!(
                "jsonl_path applies to log channels only, not {kind}"
            ));
        }
        if self.max_attempts == Some(0) {
            return Err("max_attempts must be at least 1".into());
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err("timeout must be longer than zero".into());
        }
        Ok(())
    }
}

/// An OU path prefix: `"Workloads/Production"` or
/// `["Root", "Workloads", "Production"]`. It matches an account whose OU
/// path starts with it, with or without the leading `Root`, ignoring case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OuPattern(pub Vec<String>);

impl OuPattern {
    pub fn parse(s: &str) -> Self {
        Self(
            s.split('/')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    pub fn matches(&self, ou_path: &[String]) -> bool {
        let prefix_of = |path: &[String]| {
            self.0.len() <= path.len()
                && self
                    .0
                    .iter()
                    .zip(path)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b))
        };
        prefix_of(ou_path)
            || (ou_path
                .first()
                .is_some_and(|r| r.eq_ignore_ascii_case("root"))
                && prefix_of(&ou_path[1..]))
    }
}

impl Serialize for OuPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.join("/"))
    }
}

impl<'de> Deserialize<'de> for OuPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OuPattern;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an OU path such as "Workloads/Production" or ["Root", "Workloads"]"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OuPattern, E> {
                Ok(OuPattern::parse(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OuPattern, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    parts.push(p);
                }
                Ok(OuPattern(parts))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[[notify.routes]]` rule. Every condition that is set must hold;
/// an empty list matches anything.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Shown on each delivery as the rule that chose the channel.
    pub name: String,
    /// Lowest severity that matches; default low (everything).
    pub min_severity: Severity,
    /// production, staging, development, testing, sandbox, unknown.
    pub environments: Vec<Environment>,
    /// OU path prefixes (see [`OuPattern`]); any one may match.
    pub ous: Vec<OuPattern>,
    /// 12-digit account ids.
    pub accounts: Vec<String>,
    /// Detector names, e.g. ec2-run-instances.
    pub detectors: Vec<String>,
    /// AWS regions, e.g. us-east-1.
    pub regions: Vec<String>,
    /// Whether insights a suppression rule matched are sent too (default
    /// no: suppressed insights are stored by insights, not notified).
    pub include_suppressed: bool,
    /// Channel names.
    pub channels: Vec<String>,
    /// When this rule matches, later rules are not considered.
    pub stop: bool,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            min_severity: Severity::Low,
            environments: Vec::new(),
            ous: Vec::new(),
            accounts: Vec::new(),
            detectors: Vec::new(),
            regions: Vec::new(),
            include_suppressed: false,
            channels: Vec::new(),
            stop: false,
        }
    }
}

impl RouteConfig {
    /// Whether `insight` satisfies every condition of the rule.
    pub fn matches(&self, insight: &Insight) -> bool {
        let a = &insight.anomaly;
        insight.severity >= self.min_severity
            && (self.include_suppressed || !insight.is_suppressed())
            && (self.environments.is_empty() || self.environments.contains(&a.environment))
            && (self.ous.is_empty() || self.ous.iter().any(|o| o.matches(&a.ou_path)))
            && (self.accounts.is_empty() || self.accounts.contains(&a.account_id))
            && (self.detectors.is_empty() || self.detectors.contains(&a.detector))
            && (self.regions.is_empty() || self.regions.contains(&a.region))
    }
}

/// A configuration that cannot run, naming the rule or channel at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("channel {channel:?}: {reason}")]
    Channel { channel: String, reason: String },
    #[error("channel {0:?} is defined twice")]
    DuplicateChannel(String),
    #[error("route {route:?}: {reason}")]
    Route { route: String, reason: String },
    #[error("route {0:?} is defined twice")]
    DuplicateRoute(String),
    #[error(
        "route {route:?} names channel {channel:?}, which is not defined in [[notify.channels]] (defined: {defined})"
    )]
    UnknownChannel {
        route: String,
        channel: String,
        defined: String,
    },
    #[error("{0}")]
    Other(String),
}

impl NotifyConfig {
    pub fn store_path(&self, data_dir: &Path) -> PathBuf {
        self.store_path
            .clone()
            .unwrap_or_else(|| data_dir.join("notify.redb"))
    }

    pub fn dead_letter_path(&self, data_dir: &Path) -> PathBuf {
        self.dead_letter_path
            .clone()
            .unwrap_or_else(|| data_dir.join("notify-dead-letters.jsonl"))
    }

    /// Whether any rule wants suppressed insights (then notify asks
    /// insights for them).
    pub fn wants_suppressed(&self) -> bool {
        self.routes.iter().any(|r| r.include_suppressed)
    }

    /// Checks names, kind-specific keys and that every rule's channels
    /// exist. Secrets are resolved later, by [`crate::build`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for c in &self.channels {
            if c.name.trim().is_empty() {
                return Err(ConfigError::Channel {
                    channel: c.name.clone(),
                    reason: "name must not be empty".into(),
                });
            }
            if !names.insert(c.name.as_str()) {
                return Err(ConfigError::DuplicateChannel(c.name.clone()));
            }
            c.validate().map_err(|reason| ConfigError::Channel {
                channel: c.name.clone(),
                reason,
            })?;
        }
        let mut routes = BTreeSet::new();
        for r in &self.routes {
            let fail = |reason: String| ConfigError::Route {
                route: r.name.clone(),
                reason,
            };
            if r.name.trim().is_empty() {
                return Err(fail("name must not be empty".into()));
            }
            if !routes.insert(r.name.as_str()) {
                return Err(ConfigError::DuplicateRoute(r.name.clone()));
            }
            if r.channels.is_empty() {
                return Err(fail("names no channels".into()));
            }
            if let Some(a) = r
                .accounts
                .iter()
                .find(|a| !trailhound_core::is_account_id(a))
            {
                return Err(fail(format!("account {a:?} is not a 12-digit account id")));
            }
            if r.ous.iter().any(|o| o.0.is_empty()) {
                return Err(fail("an OU path is empty".into()));
            }
            for ch in &r.channels {
                if !names.contains(ch.as_str()) {
                    return Err(ConfigError::UnknownChannel {
                        route: r.name.clone(),
                        channel: ch.clone(),
                        defined: if names.is_empty() {
                            "none".into()
                        } else {
                            names.iter().copied().collect::<Vec<_>>().join(", ")
                        },
                    });
                }
            }
        }
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::Other(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        if self.retry.timeout.is_zero() {
            return Err(ConfigError::Other(
                "retry.timeout must be longer than zero".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::Other(
                "max_in_flight must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> NotifyConfig {
        let mut t: toml::Table = toml::from_str(toml_text).unwrap();
        t.remove("notify").unwrap().try_into().unwrap()
    }

    #[test]
    fn default_is_valid_and_logs_everything() {
        let c = NotifyConfig::default();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50055");
        assert_eq!(c.insights_endpoint, "http://127.0.0.1:50054");
        assert_eq!(c.channels.len(), 1);
        assert_eq!(c.channels[0].kind(), ChannelKind::Log);
        assert_eq!(c.routes[0].channels, vec!["log".to_string()]);
        assert_eq!(c.routes[0].min_severity, Severity::Low);
    }

    #[test]
    fn parses_the_documented_example() {
        let c = parse(
            r#"
            [notify]
            follow_up_interval = "15m"
            [notify.retry]
            max_attempts = 3
            timeout = "5s"
            [[notify.channels]]
            name = "security-slack"
            kind = "slack"
            url_env = "SLACK_WEBHOOK_URL"
            rate_limit_per_minute = 20
            timeout = "3s"
            [[notify.channels]]
            name = "siem"
            kind = "webhook"
            url_file = "/run/secrets/siem_url"
            secret_env = "SIEM_SECRET"
            [[notify.channels]]
            name = "oncall"
            kind = "sns"
            topic_arn = "arn:aws:sns:us-east-1:111122223333:alerts"
            [[notify.channels]]
            name = "log"
            kind = "log"
            [[notify.routes]]
            name = "prod"
            min_severity = "high"
            environments = ["production"]
            ous = ["Workloads/Production", ["Root", "Security"]]
            channels = ["security-slack", "oncall"]
            [[notify.routes]]
            name = "all"
            channels = ["log", "siem"]
            "#,
        );
        c.validate().unwrap();
        assert_eq!(c.follow_up_interval, Duration::from_secs(900));
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.channels[0].rate_limit(), 20);
        assert_eq!(c.channels[0].timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.channels[2].timeout, None);
        assert_eq!(c.channels[1].rate_limit(), 120);
        assert_eq!(c.routes[0].ous[1].0, vec!["Root", "Security"]);
        assert_eq!(c.routes[0].min_severity, Severity::High);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let mut t: toml::Table =
            toml::from_str("[notify]\n[[notify.channels]]\nname='x'\nkind='log'\nurl_evn='X'\n")
                .unwrap();
        let err = t
            .remove("notify")
            .unwrap()
            .try_into::<NotifyConfig>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("url_evn"), "{err}");
    }

    #[test]
    fn a_rule_naming_a_missing_channel_names_both() {
        let mut c = NotifyConfig::default();
        c.routes.push(RouteConfig {
            name: "prod-critical".into(),
            channels: vec!["pagerduty".into()],
            ..RouteConfig::default()
        });
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("prod-critical") && err.contains("pagerduty") && err.contains("log"),
            "{err}"
        );
    }

    #[test]
    fn kind_specific_keys_are_checked() {
        let bad = [
            (
                ChannelConfig {
                    name: "s".into(),
                    kind: Some(ChannelKind::Slack),
                    ..Default::default()
                },
                "exactly one",
            ),
            (
                ChannelConfig {
                    secret_env: Some("X".into()),
                    ..ChannelConfig::with_url("s", ChannelKind::Slack, "https://x")
                },
                "webhook channels only",
            ),
            (
                ChannelConfig {
                    name: "n".into(),
                    kind: Some(ChannelKind::Sns),
                    ..Default::default()
                },
                "topic_arn",
            ),
            (
                ChannelConfig {
                    name: "n".into(),
                    kind: Some(ChannelKind::Sns),
                    topic_arn: Some("alerts".into()),
                    ..Default::default()
                },
                "not an SNS topic ARN",
            ),
            (
                ChannelConfig {
                    name: "n".into(),
                    ..Default::default()
                },
                "kind is missing",
            ),
        ];
        for (ch, want) in bad {
            let c = NotifyConfig {
                channels: vec![ch, ChannelConfig::log("log")],
                ..NotifyConfig::default()
            };
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn literal_secrets_never_print() {
        let c = NotifyConfig {
            channels: vec![ChannelConfig {
                secret: Some(SecretSpec("hunter2".into())),
                ..ChannelConfig::with_url(
                    "w",
                    ChannelKind::Webhook,
                    "https://example.com/hooks/abc123",
                )
            }],
            ..NotifyConfig::default()
        };
        let debug = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for text in [debug, json] {
            assert!(
                !text.contains("hunter2") && !text.contains("abc123"),
                "{text}"
            );
        }
    }

    #[test]
    fn ou_patterns_match_prefixes_with_or_without_root() {
        let path: Vec<String> = ["Root", "Workloads", "Production"]
            .into_iter()
            .map(String::from)
            .collect();
        assert!(OuPattern::parse("Workloads/Production").matches(&path));
        assert!(OuPattern::parse("workloads").matches(&path));
        assert!(OuPattern::parse("Root/Workloads").matches(&path));
        assert!(!OuPattern::parse("Production").matches(&path));
        assert!(!OuPattern::parse("Workloads/Production/Payments").matches(&path));
        assert!(!OuPattern::parse("Sandbox").matches(&path));
    }
}
