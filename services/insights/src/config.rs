//! insights' configuration: the `[insights]` section of the config file.
//! Severity weights, suppression rules and recommendation rules are all
//! here, with defaults that make sense for most organizations.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trailhound_core::{AnomalyKind, Environment, Severity};

use crate::recommend::{RecommendationRule, default_rules};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InsightsConfig {
    pub listen: SocketAddr,
    /// The embedded store; default `<data-dir>/insights.redb`.
    pub store_path: Option<PathBuf>,
    /// A price table replacing the shipped one (`trailhound prices update`
    /// writes one from the AWS Price List).
    pub price_table: Option<PathBuf>,
    /// detect's address, as people should type it in the investigate
    /// commands an insight carries.
    pub detect_address: String,
    /// grpcurl's connection flags in those commands, verbatim (e.g.
    /// `-cacert /etc/trailhound/ca.pem`). Default: from `[tls]` and
    /// `[auth]` (see [`grpcurl_flags`]); `-plaintext` without TLS.
    pub detect_grpcurl_flags: Option<String>,
    pub severity: SeverityConfig,
    /// Anomalies matching a rule are stored, marked suppressed, and not
    /// notified.
    pub suppress: Vec<SuppressionRule>,
    /// Replaces the built-in recommendation rules when set.
    pub recommendations: Option<Vec<RecommendationRule>>,
    /// Extra rules tried before the built-in ones.
    pub extra_recommendations: Vec<RecommendationRule>,
    /// Anomalies of different accounts within this much of each other are
    /// compared for a shared principal, source IP or pattern.
    #[serde(with = "humantime_serde")]
    pub correlation_window: Duration,
    /// Most recommendations per insight.
    pub max_recommendations: usize,
    /// Amazon Q Business: an index kept in sync with insights and/or
    /// ChatSync answering questions (needs the `[aws]` section).
    pub qbusiness: Option<QBusinessConfig>,
}

impl Default for InsightsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50054)),
            store_path: None,
            price_table: None,
            detect_address: "localhost:50053".into(),
            detect_grpcurl_flags: None,
            severity: SeverityConfig::default(),
            suppress: Vec::new(),
            recommendations: None,
            extra_recommendations: Vec::new(),
            correlation_window: Duration::from_secs(3600),
            max_recommendations: 4,
            qbusiness: None,
        }
    }
}

impl InsightsConfig {
    pub fn store_path(&self, data_dir: &Path) -> PathBuf {
        self.store_path
            .clone()
            .unwrap_or_else(|| data_dir.join("insights.redb"))
    }

    /// The recommendation rules in the order they are tried.
    pub fn recommendation_rules(&self) -> Vec<RecommendationRule> {
        let mut rules = self.extra_recommendations.clone();
        rules.extend(self.recommendations.clone().unwrap_or_else(default_rules));
        rules
    }

    /// Checks what serde cannot: times of day and weekdays of suppression
    /// rules, and thresholds.
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.suppress.iter().enumerate() {
            r.validate()
                .map_err(|e| format!("insights.suppress[{i}] ({}): {e}", r.name))?;
        }
        if let Some(q) = &self.qbusiness {
            q.validate()?;
        }
        let s = &self.severity;
        if !(s.medium_usd_per_30_days <= s.high_usd_per_30_days
            && s.high_usd_per_30_days <= s.critical_usd_per_30_days)
        {
            return Err(
                "insights.severity: cost thresholds must grow from medium to high to critical"
                    .into(),
            );
        }
        for r in self.recommendation_rules() {
            if r.name.is_empty() || r.actions.is_empty() {
                return Err(format!(
                    "insights recommendation rule {:?}: needs a name and at least one action",
                    r.name
                ));
            }
        }
        Ok(())
    }
}

/// The grpcurl flags that reach detect as this deployment serves it, for
/// the investigate commands people copy: `-plaintext` without TLS; with it
/// `-cacert` (the `[tls]` CA), with required client certificates `-cert`
/// and `-key` (the `client` certificate `trailhound certs` writes beside
/// the CA), and with `[auth]` the token from `$TRAILHOUND_TOKEN`. Paths
/// are quoted for the shell.
pub fn grpcurl_flags(tls: Option<&trailhound_runtime::tls::TlsConfig>, auth: bool) -> String {
    use trailhound_core::text::shell_quote;
    let mut flags = Vec::new();
    match tls.filter(|t| t.cert.is_some()) {
        None => flags.push("-plaintext".to_string()),
        Some(t) => {
            let ca = t.ca.as_ref().or(t.client_ca.as_ref());
            if let Some(ca) = ca {
                flags.push(format!(
                    "-cacert {}",
                    shell_quote(&ca.display().to_string())
                ));
            }
            if t.client_ca.is_some() && !t.client_cert_optional {
                let dir = ca
                    .and_then(|c| c.parent())
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default();
                let file = |name: &str| shell_quote(&dir.join(name).display().to_string());
                flags.push(format!(
                    "-cert {} -key {}",
                    file("client.pem"),
                    file("client-key.pem")
                ));
            }
        }
    }
    if auth {
        flags.push("-H \"authorization: Bearer $TRAILHOUND_TOKEN\"".to_string());
    }
    flags.join(" ")
}

/// How anomalies become LOW / MEDIUM / HIGH / CRITICAL. Points add up from
/// the grade, the cost, how critical the account is and security signals;
/// the totals at which each level starts are configurable.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeverityConfig {
    /// Points per environment, and the least grade that counts there (a
    /// lower one is suppressed as below that environment's sensitivity).
    pub environments: BTreeMap<Environment, EnvironmentSensitivity>,
    /// Points (replacing the environment's) for accounts under an OU path
    /// prefix, e.g. "Root/Workloads/Payments".
    pub ou_points: BTreeMap<String, i32>,
    /// Points (replacing all others of the kind) for single accounts.
    pub account_points: BTreeMap<String, i32>,
    pub medium_usd_per_30_days: f64,
    pub high_usd_per_30_days: f64,
    pub critical_usd_per_30_days: f64,
    /// Totals at which each level starts.
    pub medium_at: i32,
    pub high_at: i32,
    pub critical_at: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvironmentSensitivity {
    pub points: i32,
    pub min_grade: f64,
}

impl Default for EnvironmentSensitivity {
    fn default() -> Self {
        Self {
            points: 0,
            min_grade: 0.0,
        }
    }
}

impl Default for SeverityConfig {
    fn default() -> Self {
        let env = |points| EnvironmentSensitivity {
            points,
            min_grade: 0.0,
        };
        Self {
            environments: BTreeMap::from([
                (Environment::Production, env(2)),
                (Environment::Staging, env(1)),
                (Environment::Development, env(0)),
                (Environment::Testing, env(0)),
                (Environment::Sandbox, env(0)),
                // Accounts outside the organization are suspicious.
                (Environment::Unknown, env(1)),
            ]),
            ou_points: BTreeMap::new(),
            account_points: BTreeMap::new(),
            medium_usd_per_30_days: 100.0,
            high_usd_per_30_days: 1_000.0,
            critical_usd_per_30_days: 10_000.0,
            medium_at: 3,
            high_at: 5,
            critical_at: 7,
        }
    }
}

impl SeverityConfig {
    pub fn level(&self, points: i32) -> Severity {
        if points >= self.critical_at {
            Severity::Critical
        } else if points >= self.high_at {
            Severity::High
        } else if points >= self.medium_at {
            Severity::Medium
        } else {
            Severity::Low
        }
    }
}

/// When matching anomalies are not worth a notification: a backup window,
/// a load test, a known noisy account. Every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuppressionRule {
    pub name: String,
    pub detectors: Vec<String>,
    pub accounts: Vec<String>,
    pub environments: Vec<Environment>,
    pub regions: Vec<String>,
    /// OU path prefix, e.g. "Root/Sandbox".
    pub ou: Option<String>,
    pub kinds: Vec<AnomalyKind>,
    /// Only anomalies below this severity are suppressed (e.g. "high" keeps
    /// HIGH and CRITICAL flowing).
    pub below_severity: Option<Severity>,
    /// UTC time of day the window must start in, "HH:MM"; a range that
    /// wraps midnight ("22:00"–"02:00") works.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Weekdays ("mon".."sun") the window must start on.
    pub days: Vec<String>,
    /// The rule stops applying after this date (RFC 3339 or YYYY-MM-DD).
    pub until: Option<String>,
}

impl SuppressionRule {
    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("needs a name".into());
        }
        if self.from.is_some() != self.to.is_some() {
            return Err("from and to come together".into());
        }
        for t in [&self.from, &self.to].into_iter().flatten() {
            parse_hhmm(t)?;
        }
        for d in &self.days {
            parse_weekday(d)?;
        }
        if let Some(u) = &self.until {
            parse_until(u)?;
        }
        Ok(())
    }
}

/// Minutes after midnight.
pub fn parse_hhmm(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let h: u32 = h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    let m: u32 = m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    if h > 23 || m > 59 {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

pub fn parse_weekday(s: &str) -> Result<chrono::Weekday, String> {
    s.trim()
        .parse::<chrono::Weekday>()
        .map_err(|_| format!("{s:?} is not a weekday (mon..sun)"))
}

pub fn parse_until(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{s:?} is neither RFC 3339 nor YYYY-MM-DD"))
}

/// `[insights.qbusiness]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QBusinessConfig {
    pub application_id: String,
    pub index_id: String,
    /// Keep the index in sync with insights.
    pub sync: bool,
    /// Answer questions with ChatSync instead of the built-in engine.
    pub ask: bool,
    /// Add trailhound's attributes to the index at start-up (UpdateIndex).
    pub configure_index: bool,
    /// Documents of insights older than this are deleted from the index.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often expired documents are looked for.
    #[serde(with = "humantime_serde")]
    pub cleanup_every: Duration,
    /// ChatSync's chatMode, e.g. "RETRIEVAL_MODE" (answers only from the
    /// index); none lets the application decide.
    pub chat_mode: Option<String>,
    /// For applications that need a user on each chat (IAM Identity
    /// Center), the user id to chat as.
    pub user_id: Option<String>,
}

impl Default for QBusinessConfig {
    fn default() -> Self {
        Self {
            application_id: String::new(),
            index_id: String::new(),
            sync: true,
            ask: true,
            configure_index: false,
            retention: Duration::from_secs(30 * 86_400),
            cleanup_every: Duration::from_secs(3600),
            chat_mode: Some("RETRIEVAL_MODE".into()),
            user_id: None,
        }
    }
}

impl QBusinessConfig {
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = |s: &str| {
            (36..=36).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !id_ok(&self.application_id) {
            return Err(format!(
                "insights.qbusiness.application_id {:?} is not a Q Business application id (36 characters, letters, digits and dashes)",
                self.application_id
            ));
        }
        if self.sync && !id_ok(&self.index_id) {
            return Err(format!(
                "insights.qbusiness.index_id {:?} is not a Q Business index id",
                self.index_id
            ));
        }
        Ok(())
    }
}
