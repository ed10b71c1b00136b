//! Account metadata, the organization snapshot file, and the rules that
//! decide an account's environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How critical an account is. Ordered from most to least critical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Staging,
    Development,
    Testing,
    Sandbox,
    Unknown,
}

impl Environment {
    pub const ALL: [Environment; 6] = [
        Environment::Production,
        Environment::Staging,
        Environment::Development,
        Environment::Testing,
        Environment::Sandbox,
        Environment::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Staging => "staging",
            Environment::Development => "development",
            Environment::Testing => "testing",
            Environment::Sandbox => "sandbox",
            Environment::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Environment::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown environment {s:?}: expected production, staging, development, testing, sandbox or unknown"
                )
            })
    }
}

/// What the organization knows about one account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountMetadata {
    pub account_id: String,
    pub name: String,
    pub email: String,
    pub status: String,
    pub ou_path: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub environment: Environment,
    /// Which rule decided the environment.
    pub environment_reason: String,
    pub team: String,
    pub cost_center: String,
    /// False for accounts outside the organization.
    pub known: bool,
    pub organization_id: String,
}

impl AccountMetadata {
    /// Metadata for an account the organization does not contain: a
    /// cross-account call to an external account, or a stale snapshot.
    pub fn external(account_id: &str) -> Self {
        Self {
            account_id: account_id.to_string(),
            name: String::new(),
            email: String::new(),
            status: "UNKNOWN".into(),
            ou_path: Vec::new(),
            tags: BTreeMap::new(),
            environment: Environment::Unknown,
            environment_reason: "account is not in the organization".into(),
            team: String::new(),
            cost_center: String::new(),
            known: false,
            organization_id: String::new(),
        }
    }

    /// "name (id)" or the bare id for external accounts.
    pub fn display_name(&self) -> String {
        if self.name.is_empty() {
            self.account_id.clone()
        } else {
            format!("{} ({})", self.name, self.account_id)
        }
    }
}

/// One account as the organization reports it, before classification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrgAccount {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default = "active")]
    pub status: String,
    #[serde(default)]
    pub ou_path: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn active() -> String {
    "ACTIVE".into()
}

/// The embedded organization source: a JSON file with every account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrgSnapshot {
    pub organization_id: String,
    pub accounts: Vec<OrgAccount>,
}

/// Errors reading an organization snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("failed to read org snapshot {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("org snapshot {path} is not valid JSON of the documented shape: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("org snapshot {path}: account #{index} has id {id:?}, which is not 12 digits")]
    BadAccountId {
        path: String,
        index: usize,
        id: String,
    },
}

impl OrgSnapshot {
    pub fn load(path: &Path) -> Result<Self, SnapshotError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
            path: p.clone(),
            source,
        })?;
        let snap: OrgSnapshot =
            serde_json::from_str(&text).map_err(|source| SnapshotError::Parse {
                path: p.clone(),
                source,
            })?;
        for (index, a) in snap.accounts.iter().enumerate() {
            if !crate::is_account_id(&a.id) {
                return Err(SnapshotError::BadAccountId {
                    path: p,
                    index,
                    id: a.id.clone(),
                });
            }
        }
        Ok(snap)
    }
}

/// How an account's environment, team and cost center are derived: tags
/// first (in `tag_keys` order), then the account name, then OU names from
/// the deepest up. Every list is configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvironmentRules {
    /// Tags whose value names the environment, checked in order.
    pub tag_keys: Vec<String>,
    /// Words that name each environment, matched against whole tag values
    /// and against the words of names ("payments-dev" → development).
    pub aliases: BTreeMap<Environment, Vec<String>>,
    /// Look for environment words in the account name.
    pub use_account_name: bool,
    /// Look for environment words in OU names.
    pub use_ou_names: bool,
    pub team_tag_keys: Vec<String>,
    pub cost_center_tag_keys: Vec<String>,
}

impl Default for EnvironmentRules {
    fn default() -> Self {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut aliases = BTreeMap::new();
        aliases.insert(
            Environment::Production,
            words(&["production", "prod", "prd", "live"]),
        );
        aliases.insert(
            Environment::Staging,
            words(&["staging", "stage", "stg", "preprod", "pre-prod", "uat"]),
        );
        aliases.insert(
            Environment::Development,
            words(&["development", "dev", "develop"]),
        );
        aliases.insert(Environment::Testing, words(&["testing", "test", "qa"]));
        aliases.insert(
            Environment::Sandbox,
            words(&["sandbox", "sbx", "playground", "experiment", "experiments"]),
        );
        Self {
            tag_keys: words(&["Environment", "Type"]),
            aliases,
            use_account_name: true,
            use_ou_names: true,
            team_tag_keys: words(&["Team", "Owner"]),
            cost_center_tag_keys: words(&["CostCenter", "CostCentre", "cost-center"]),
        }
    }
}

fn tag<'a>(tags: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

impl EnvironmentRules {
    /// The environment a single word or value names, if any.
    fn env_of_word(&self, word: &str) -> Option<Environment> {
        let w = word.trim().to_ascii_lowercase();
        self.aliases
            .iter()
            .find(|(_, words)| words.iter().any(|a| a.eq_ignore_ascii_case(&w)))
            .map(|(e, _)| *e)
    }

    /// The environment named by a value: the whole value, else its words.
    fn env_of_text(&self, text: &str) -> Option<Environment> {
        self.env_of_word(text).or_else(|| {
            text.split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .find_map(|w| self.env_of_word(w))
        })
    }

    /// Decides the environment and says which rule did.
    pub fn classify(
        &self,
        name: &str,
        ou_path: &[String],
        tags: &BTreeMap<String, String>,
    ) -> (Environment, String) {
        for key in &self.tag_keys {
            if let Some(v) = tag(tags, key)
                && let Some(env) = self.env_of_text(v)
            {
                return (env, format!("tag {key}={v}"));
            }
        }
        if self.use_account_name
            && let Some(env) = self.env_of_text(name)
        {
            return (env, format!("account name {name:?}"));
        }
        if self.use_ou_names {
            for ou in ou_path.iter().rev() {
                if let Some(env) = self.env_of_text(ou) {
                    return (env, format!("OU {ou:?}"));
                }
            }
        }
        (Environment::Unknown, "no rule matched".into())
    }

    /// Builds full metadata for an organization account.
    pub fn metadata(&self, organization_id: &str, a: &OrgAccount) -> AccountMetadata {
        let (environment, environment_reason) = self.classify(&a.name, &a.ou_path, &a.tags);
        let first = |keys: &[String]| {
            keys.iter()
                .find_map(|k| tag(&a.tags, k))
                .unwrap_or("")
                .to_string()
        };
        AccountMetadata {
            account_id: a.id.clone(),
            name: a.name.clone(),
            email: a.email.clone(),
            status: a.status.clone(),
            ou_path: a.ou_path.clone(),
            tags: a.tags.clone(),
            environment,
            environment_reason,
            team: first(&self.team_tag_keys),
            cost_center: first(&self.cost_center_tag_keys),
            known: true,
            organization_id: organization_id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_tag_wins_over_name_and_ou() {
        let r = EnvironmentRules::default();
        let (env, why) = r.classify(
            "payments-dev",
            &["Root".into(), "Sandbox".into()],
            &tags(&[("Environment", "Prod")]),
        );
        assert_eq!(env, Environment::Production);
        assert_eq!(why, "tag Environment=Prod");
    }

    #[test]
    fn type_tag_is_second() {
        let r = EnvironmentRules::default();
        let (env, _) = r.classify("x", &[], &tags(&[("Owner", "a"), ("type", "stg")]));
        assert_eq!(env, Environment::Staging);
        // An Environment tag with an unrecognised value falls through to Type.
        let (env, why) = r.classify(
            "x",
            &[],
            &tags(&[("Environment", "blue"), ("Type", "Sandbox")]),
        );
        assert_eq!(
            (env, why.as_str()),
            (Environment::Sandbox, "tag Type=Sandbox")
        );
    }

    #[test]
    fn name_then_deepest_ou() {
        let r = EnvironmentRules::default();
        assert_eq!(
            r.classify("payments-dev", &[], &BTreeMap::new()).0,
            Environment::Development
        );
        let ou = vec!["Root".to_string(), "Workloads".into(), "QA".into()];
        let (env, why) = r.classify("payments", &ou, &BTreeMap::new());
        assert_eq!(env, Environment::Testing);
        assert_eq!(why, "OU \"QA\"");
        assert_eq!(
            r.classify("payments", &["Root".into()], &BTreeMap::new()).0,
            Environment::Unknown
        );
    }

    #[test]
    fn words_match_whole_tokens_only() {
        let r = EnvironmentRules::default();
        // "device" contains "dev" but is not the word "dev".
        assert_eq!(
            r.classify("device-farm", &[], &BTreeMap::new()).0,
            Environment::Unknown
        );
    }

    #[test]
    fn rules_are_configurable() {
        let mut r = EnvironmentRules::default();
        r.aliases
            .entry(Environment::Production)
            .or_default()
            .push("crown-jewels".into());
        r.tag_keys = vec!["Tier".into()];
        let (env, _) = r.classify("x", &[], &tags(&[("Tier", "crown-jewels")]));
        assert_eq!(env, Environment::Production);
    }

    #[test]
    fn metadata_picks_team_and_cost_center() {
        let r = EnvironmentRules::default();
        let a = OrgAccount {
            id: "111122223333".into(),
            name: "payments-prod".into(),
            email: "p@example.com".into(),
            status: "ACTIVE".into(),
            ou_path: vec![],
            tags: tags(&[("Team", "payments"), ("CostCenter", "CC-1")]),
        };
        let m = r.metadata("o-abc", &a);
        assert_eq!(m.environment, Environment::Production);
        assert_eq!(m.team, "payments");
        assert_eq!(m.cost_center, "CC-1");
        assert!(m.known);
    }

    #[test]
    fn environment_parses_case_insensitively() {
        assert_eq!(
            "Production".parse::<Environment>(),
            Ok(Environment::Production)
        );
        assert!("prodd".parse::<Environment>().is_err());
    }
}
