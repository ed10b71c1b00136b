//! Plain-English questions about anomalies.
//!
//! [`AskBackend`] is the seam: the built-in engine parses the question
//! into filters and an intent (`query`) and answers from the insight store
//! (`builtin`); Amazon Q
//! Business (the AWS backend) implements the same trait. The parser is
//! deliberately small and honest: it recognises services, environments,
//! accounts (by id or name), regions, severities and time phrases, and the
//! intents "list", "why", "which accounts cost most", "security concerns",
//! "compare A and B" and "how many"; it says what it understood, and when
//! words were left over or nothing was recognised it says so and lists what
//! can be asked, rather than guessing.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use trailhound_core::{Environment, Insight, Severity};

use crate::severity::security_signals;
use crate::store::{InsightStore, StoreError};

mod builtin;
mod query;
pub use builtin::*;
pub use query::*;

/// The longest question accepted.
pub const MAX_QUESTION_CHARS: usize = 2000;

/// An answer, whatever engine gave it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub answer: String,
    pub understood: String,
    pub fully_understood: bool,
    pub results: Vec<Insight>,
    pub account_costs: Vec<AccountCost>,
    pub groups: Vec<GroupSummary>,
    pub backend: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountCost {
    pub account_id: String,
    pub account_name: String,
    pub environment: String,
    pub usd_per_30_days: f64,
    pub insights: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupSummary {
    pub name: String,
    pub insights: u32,
    pub accounts: u32,
    pub usd_per_30_days: f64,
    pub by_detector: BTreeMap<String, u32>,
    pub by_severity: BTreeMap<String, u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("question: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{backend} failed: {message}")]
    Backend { backend: String, message: String },
}

/// Something that answers questions about anomalies.
#[async_trait]
pub trait AskBackend: Send + Sync {
    fn name(&self) -> &'static str;
    async fn ask(&self, question: &str, limit: usize) -> Result<Answer, AskError>;

    /// Whether [`AskBackend::ask_in`] limits answers to a scope; those that
    /// do not are asked by unrestricted callers only.
    fn filters_by_scope(&self) -> bool {
        false
    }

    /// Answers over only what `scope` allows: every result, count and
    /// total is computed from in-scope insights. Backends that cannot
    /// filter by scope answer unrestricted callers only.
    async fn ask_in(
        &self,
        question: &str,
        limit: usize,
        scope: &trailhound_core::Scope,
    ) -> Result<Answer, AskError> {
        if !scope.is_unrestricted() {
            return Err(AskError::Backend {
                backend: self.name().to_string(),
                message: "this engine cannot limit answers to your scope; ask an administrator for the built-in engine".into(),
            });
        }
        self.ask(question, limit).await
    }
}

/// Checks a question before any engine sees it.
pub fn validate(question: &str) -> Result<&str, AskError> {
    let q = question.trim();
    if q.is_empty() {
        return Err(AskError::Invalid("must not be empty".into()));
    }
    let n = q.chars().count();
    if n > MAX_QUESTION_CHARS {
        return Err(AskError::Invalid(format!(
            "is {n} characters; at most {MAX_QUESTION_CHARS} are accepted"
        )));
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 14, 12, 0, 0)
            .single()
            .unwrap()
    }

    #[test]
    fn the_example_questions_parse() {
        let known = vec![("123456789012".to_string(), "payments-prod".to_string())];
        let q = parse(
            "Show me EC2 anomalies from production accounts",
            &known,
            now(),
        );
        assert_eq!(q.intent, Intent::List);
        assert!(q.services.contains("ec2"));
        assert_eq!(q.environments, vec![Environment::Production]);
        assert!(q.leftover.is_empty(), "{:?}", q.leftover);

        let q = parse(
            "Show me EC2 anomalies from production accounts from the last 24 hours",
            &known,
            now(),
        );
        assert_eq!(q.since, Some(now() - Duration::hours(24)));

        let q = parse(
            "What accounts had the highest cost impact this week?",
            &known,
            now(),
        );
        assert_eq!(q.intent, Intent::CostRanking);
        // 2026-01-14 is a Wednesday: the week began on Monday the 12th.
        assert_eq!(q.since, Utc.with_ymd_and_hms(2026, 1, 12, 0, 0, 0).single());

        let q = parse(
            "Are there any security concerns with recent Lambda anomalies?",
            &known,
            now(),
        );
        assert_eq!(q.intent, Intent::Security);
        assert!(q.services.contains("lambda"));
        assert_eq!(q.since, Some(now() - Duration::weeks(1)));

        let q = parse(
            "Compare anomaly patterns between production and staging accounts",
            &known,
            now(),
        );
        assert_eq!(
            q.intent,
            Intent::Compare(vec![Environment::Production, Environment::Staging])
        );

        let q = parse(
            "Why was account 123456789012 flagged yesterday?",
            &known,
            now(),
        );
        assert_eq!(q.intent, Intent::Why);
        assert_eq!(q.accounts[0].1, "payments-prod");
        assert_eq!(q.since, Utc.with_ymd_and_hms(2026, 1, 13, 0, 0, 0).single());
        assert_eq!(q.until, Utc.with_ymd_and_hms(2026, 1, 14, 0, 0, 0).single());

        let q = parse(
            "payments-prod critical us-east-1 last 3 days",
            &known,
            now(),
        );
        assert_eq!(q.accounts[0].0, "123456789012");
        assert_eq!(q.min_severity, Some(Severity::Critical));
        assert_eq!(q.regions, vec!["us-east-1".to_string()]);
        assert_eq!(q.since, Some(now() - Duration::days(3)));
    }

    #[test]
    fn nonsense_is_not_understood() {
        let q = parse(
            "what is the airspeed velocity of an unladen swallow",
            &[],
            now(),
        );
        assert_eq!(q.recognised, 0);
        assert!(!q.leftover.is_empty());
        assert!(validate(&"x".repeat(100_000)).is_err());
        assert!(validate("   ").is_err());
    }
}
