//! What part of the organization a caller may see: OU prefixes, account ids
//! and environments. Every read of account data (anomalies, series,
//! insights, answers, accounts, deliveries, dashboard pages) filters
//! through [`Scope::allows`], where the data is read rather than at the
//! door, so nothing out of scope leaks through counts, totals or errors:
//! out of scope looks exactly like absent.

use serde::{Deserialize, Serialize};

use crate::account::Environment;

/// One grant's restriction. Dimensions that are set must all match (an OU
/// prefix AND an environment narrows); within a dimension any entry does.
/// A rule with no dimension set allows everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRule {
    /// OU path prefixes, `/`-separated (`Root/Sandbox`; the leading `Root`
    /// may be left out), compared case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ous: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<Environment>,
}

impl ScopeRule {
    pub fn is_unrestricted(&self) -> bool {
        self.ous.is_empty() && self.accounts.is_empty() && self.environments.is_empty()
    }

    fn allows(&self, account_id: &str, ou_path: &[String], environment: Environment) -> bool {
        (self.ous.is_empty() || self.ous.iter().any(|p| ou_prefix_matches(p, ou_path)))
            && (self.accounts.is_empty() || self.accounts.iter().any(|a| a == account_id))
            && (self.environments.is_empty() || self.environments.contains(&environment))
    }
}

/// Whether `prefix` (`Root/Sandbox`, `Sandbox`) is a prefix of `path`.
pub fn ou_prefix_matches(prefix: &str, path: &[String]) -> bool {
    let want: Vec<&str> = prefix
        .split('/')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let prefix_of = |path: &[String]| {
        want.len() <= path.len()
            && want
                .iter()
                .zip(path)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    };
    prefix_of(path)
        || (path.first().is_some_and(|r| r.eq_ignore_ascii_case("root")) && prefix_of(&path[1..]))
}

/// A caller's scope: the union of its grants' rules. The default allows
/// everything (auth off, admins, service identities).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Empty: unrestricted. Otherwise a record is visible when any rule
    /// allows it.
    pub rules: Vec<ScopeRule>,
}

impl Scope {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// The union of `rules`; unrestricted if any of them is.
    pub fn union(rules: impl IntoIterator<Item = ScopeRule>) -> Self {
        let rules: Vec<ScopeRule> = rules.into_iter().collect();
        if rules.iter().any(ScopeRule::is_unrestricted) {
            return Self::all();
        }
        Self { rules }
    }

    pub fn is_unrestricted(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether an account with this id, OU path and environment is visible.
    pub fn allows(&self, account_id: &str, ou_path: &[String], environment: Environment) -> bool {
        self.is_unrestricted()
            || self
                .rules
                .iter()
                .any(|r| r.allows(account_id, ou_path, environment))
    }

    /// Whether the account `m` describes is visible.
    pub fn allows_account(&self, m: &crate::AccountMetadata) -> bool {
        self.allows(&m.account_id, &m.ou_path, m.environment)
    }

    /// A short description for audit records: `all` or the rules.
    pub fn describe(&self) -> String {
        if self.is_unrestricted() {
            return "all".into();
        }
        self.rules
            .iter()
            .map(|r| {
                let mut parts = Vec::new();
                if !r.ous.is_empty() {
                    parts.push(format!("ous={}", r.ous.join(",")));
                }
                if !r.accounts.is_empty() {
                    parts.push(format!("accounts={}", r.accounts.join(",")));
                }
                if !r.environments.is_empty() {
                    let e: Vec<&str> = r.environments.iter().map(|e| e.as_str()).collect();
                    parts.push(format!("environments={}", e.join(",")));
                }
                parts.join(" ")
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Vec<String> {
        s.split('/').map(str::to_string).collect()
    }

    #[test]
    fn ou_prefixes_dimensions_and_unions() {
        let sandbox = Scope::union([ScopeRule {
            ous: vec!["Root/Sandbox".into()],
            ..Default::default()
        }]);
        assert!(sandbox.allows("1", &path("Root/Sandbox/Team"), Environment::Sandbox));
        assert!(!sandbox.allows(
            "1",
            &path("Root/Workloads/Production"),
            Environment::Sandbox
        ));
        // "Sandboxes" is not under "Sandbox": whole path elements only.
        assert!(!sandbox.allows("1", &path("Root/Sandboxes"), Environment::Sandbox));
        let no_root = Scope::union([ScopeRule {
            ous: vec!["sandbox".into()],
            ..Default::default()
        }]);
        assert!(no_root.allows("1", &path("Root/Sandbox"), Environment::Sandbox));

        // Dimensions narrow each other; rules widen.
        let narrow = Scope::union([ScopeRule {
            ous: vec!["Workloads".into()],
            environments: vec![Environment::Production],
            ..Default::default()
        }]);
        assert!(narrow.allows("1", &path("Root/Workloads/P"), Environment::Production));
        assert!(!narrow.allows("1", &path("Root/Workloads/S"), Environment::Staging));
        let wide = Scope::union([
            ScopeRule {
                accounts: vec!["111".into()],
                ..Default::default()
            },
            ScopeRule {
                environments: vec![Environment::Staging],
                ..Default::default()
            },
        ]);
        assert!(wide.allows("111", &[], Environment::Unknown));
        assert!(wide.allows("222", &[], Environment::Staging));
        assert!(!wide.allows("222", &[], Environment::Production));
        // An unrestricted grant makes the union unrestricted.
        assert!(Scope::union([ScopeRule::default(), narrow.rules[0].clone()]).is_unrestricted());
        assert_eq!(Scope::all().describe(), "all");
        assert_eq!(sandbox.describe(), "ous=Root/Sandbox");
    }
}
