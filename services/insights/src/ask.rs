//! Plain-English questions about anomalies.
//!
//! [`AskBackend`] is the seam: the built-in engine here parses the question
//! into filters and an intent and answers from the insight store; Amazon Q
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

#[derive(Clone, Debug, PartialEq)]
enum Intent {
    List,
    Why,
    CostRanking,
    Security,
    Compare(Vec<Environment>),
    Count,
}

/// What a question asks for.
#[derive(Clone, Debug)]
struct Query {
    intent: Intent,
    services: BTreeSet<&'static str>,
    environments: Vec<Environment>,
    accounts: Vec<(String, String)>,
    regions: Vec<String>,
    min_severity: Option<Severity>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    time_phrase: Option<String>,
    leftover: Vec<String>,
    recognised: usize,
}

const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "all",
    "an",
    "and",
    "any",
    "anything",
    "are",
    "at",
    "be",
    "been",
    "between",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "for",
    "from",
    "get",
    "give",
    "had",
    "has",
    "have",
    "how",
    "i",
    "in",
    "is",
    "it",
    "its",
    "list",
    "me",
    "my",
    "of",
    "on",
    "or",
    "our",
    "please",
    "show",
    "tell",
    "than",
    "that",
    "the",
    "their",
    "there",
    "these",
    "this",
    "those",
    "to",
    "was",
    "were",
    "what",
    "whats",
    "when",
    "where",
    "which",
    "who",
    "whose",
    "with",
    "you",
    "anomalies",
    "anomaly",
    "anomalous",
    "accounts",
    "account",
    "flagged",
    "flag",
    "alerts",
    "alert",
    "incidents",
    "incident",
    "unusual",
    "activity",
    "patterns",
    "pattern",
    "usage",
    "spikes",
    "spike",
    "detected",
    "found",
    "seen",
    "happened",
    "happen",
    "going",
    "on",
    "we",
    "us",
    "had",
    "most",
    "highest",
    "top",
    "biggest",
    "largest",
    "impact",
    "cost",
    "costs",
    "costly",
    "expensive",
    "spend",
    "spending",
    "dollars",
    "money",
    "security",
    "concerns",
    "concern",
    "suspicious",
    "malicious",
    "attack",
    "attacks",
    "threat",
    "threats",
    "risk",
    "risks",
    "risky",
    "compromise",
    "compromised",
    "compare",
    "comparison",
    "versus",
    "vs",
    "difference",
    "differences",
    "between",
    "why",
    "explain",
    "reason",
    "reasons",
    "cause",
    "caused",
    "count",
    "many",
    "number",
    "much",
    "recent",
    "recently",
    "latest",
    "new",
    "last",
    "past",
    "since",
    "during",
    "hours",
    "hour",
    "days",
    "day",
    "weeks",
    "week",
    "months",
    "month",
    "today",
    "yesterday",
    "ago",
    "severity",
    "severe",
    "level",
    "region",
    "regions",
    "environment",
    "environments",
    "env",
    "so",
    "far",
];

fn tokens(q: &str) -> Vec<String> {
    q.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '.' || c == '_'))
        .map(|t| t.trim_matches(|c| c == '.' || c == '-').to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn service_of_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "ec2" | "instance" | "instances" | "launch" | "launches" | "launched" | "compute"
        | "gpu" | "gpus" | "runinstances" => "ec2",
        "lambda" | "lambdas" | "function" | "functions" | "invocation" | "invocations"
        | "invoke" | "invokes" | "serverless" => "lambda",
        "ebs" | "volume" | "volumes" | "storage" | "disk" | "disks" => "ebs",
        _ => return None,
    })
}

fn environment_of_word(w: &str) -> Option<Environment> {
    Some(match w {
        "production" | "prod" | "prd" | "live" => Environment::Production,
        "staging" | "stage" | "stg" | "preprod" => Environment::Staging,
        "development" | "dev" => Environment::Development,
        "testing" | "test" | "qa" => Environment::Testing,
        "sandbox" | "sandboxes" | "sbx" | "playground" => Environment::Sandbox,
        "external" | "unknown" => Environment::Unknown,
        _ => return None,
    })
}

fn is_region(w: &str) -> bool {
    let parts: Vec<&str> = w.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

fn start_of_day(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), t.day(), 0, 0, 0)
        .single()
        .unwrap_or(t)
}

/// Parses a question against the accounts known to the store, with `now`
/// as the reference for time phrases.
fn parse(q: &str, accounts: &[(String, String)], now: DateTime<Utc>) -> Query {
    let toks = tokens(q);
    let has = |w: &[&str]| toks.iter().any(|t| w.contains(&t.as_str()));
    let mut used: BTreeSet<usize> = BTreeSet::new();
    let mut query = Query {
        intent: Intent::List,
        services: BTreeSet::new(),
        environments: Vec::new(),
        accounts: Vec::new(),
        regions: Vec::new(),
        min_severity: None,
        since: None,
        until: None,
        time_phrase: None,
        leftover: Vec::new(),
        recognised: 0,
    };
    for (i, t) in toks.iter().enumerate() {
        if let Some(s) = service_of_word(t) {
            query.services.insert(s);
            used.insert(i);
        } else if let Some(e) = environment_of_word(t) {
            if !query.environments.contains(&e) {
                query.environments.push(e);
            }
            used.insert(i);
        } else if trailhound_core::is_account_id(t) {
            let name = accounts
                .iter()
                .find(|(id, _)| id == t)
                .map(|(_, n)| n.clone())
                .unwrap_or_default();
            query.accounts.push((t.clone(), name));
            used.insert(i);
        } else if is_region(t) {
            query.regions.push(t.clone());
            used.insert(i);
        } else if let Ok(s) = t.parse::<Severity>() {
            query.min_severity = Some(query.min_severity.map_or(s, |m| m.min(s)));
            used.insert(i);
        } else if let Some((id, name)) = accounts
            .iter()
            .find(|(_, n)| !n.is_empty() && n.to_lowercase() == *t)
        {
            query.accounts.push((id.clone(), name.clone()));
            used.insert(i);
        }
    }
    // Time phrases.
    let day = Duration::days(1);
    for (i, t) in toks.iter().enumerate() {
        let next = toks.get(i + 1).map(String::as_str);
        let after = toks.get(i + 2).map(String::as_str);
        let unit = |u: Option<&str>| -> Option<Duration> {
            Some(match u? {
                "hour" | "hours" | "h" => Duration::hours(1),
                "day" | "days" | "d" => day,
                "week" | "weeks" => Duration::weeks(1),
                "month" | "months" => Duration::days(30),
                _ => return None,
            })
        };
        if matches!(t.as_str(), "last" | "past" | "previous") {
            if let (Some(n), Some(u)) = (next.and_then(|n| n.parse::<i64>().ok()), unit(after))
                && n > 0
                && n < 10_000
            {
                query.since = Some(now - u * n as i32);
                query.time_phrase = Some(format!("the last {n} {}", after.unwrap_or("")));
                used.extend([i, i + 1, i + 2]);
            } else if next == Some("week") {
                let this_week =
                    start_of_day(now) - Duration::days(now.weekday().num_days_from_monday() as i64);
                query.since = Some(this_week - Duration::weeks(1));
                query.until = Some(this_week);
                query.time_phrase = Some("last week".into());
                used.extend([i, i + 1]);
            } else if let Some(u) = unit(next) {
                query.since = Some(now - u);
                query.time_phrase = Some(format!("the last {}", next.unwrap_or("")));
                used.extend([i, i + 1]);
            }
        } else if t == "today" {
            query.since = Some(start_of_day(now));
            query.time_phrase = Some("today".into());
            used.insert(i);
        } else if t == "yesterday" {
            query.since = Some(start_of_day(now) - day);
            query.until = Some(start_of_day(now));
            query.time_phrase = Some("yesterday".into());
            used.insert(i);
        } else if t == "this" && matches!(next, Some("week") | Some("month")) {
            let since = if next == Some("week") {
                start_of_day(now) - Duration::days(now.weekday().num_days_from_monday() as i64)
            } else {
                Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
                    .single()
                    .unwrap_or(now)
            };
            query.since = Some(since);
            query.time_phrase = Some(format!("this {}", next.unwrap_or("")));
            used.extend([i, i + 1]);
        } else if matches!(t.as_str(), "recent" | "recently" | "latest") && query.since.is_none() {
            query.since = Some(now - Duration::weeks(1));
            query.time_phrase = Some("recent (the last 7 days)".into());
            used.insert(i);
        }
    }
    // Intent.
    if has(&["why", "explain", "reason", "reasons", "cause", "caused"]) {
        query.intent = Intent::Why;
    } else if has(&[
        "compare",
        "comparison",
        "versus",
        "vs",
        "difference",
        "differences",
    ]) || (has(&["between"]) && query.environments.len() >= 2)
    {
        query.intent = Intent::Compare(query.environments.clone());
    } else if has(&[
        "cost",
        "costs",
        "costly",
        "expensive",
        "spend",
        "spending",
        "dollars",
        "money",
    ]) {
        query.intent = Intent::CostRanking;
    } else if has(&[
        "security",
        "suspicious",
        "malicious",
        "attack",
        "attacks",
        "threat",
        "threats",
        "compromise",
        "compromised",
        "risky",
    ]) {
        query.intent = Intent::Security;
    } else if has(&["many", "count", "number"]) {
        query.intent = Intent::Count;
    }
    let intent_words = query.intent != Intent::List;
    for (i, t) in toks.iter().enumerate() {
        if used.contains(&i) {
            continue;
        }
        if STOPWORDS.contains(&t.as_str()) || t.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        query.leftover.push(t.clone());
    }
    let topical = has(&[
        "anomalies",
        "anomaly",
        "anomalous",
        "flagged",
        "alerts",
        "alert",
        "incidents",
        "incident",
        "unusual",
        "spike",
        "spikes",
        "activity",
        "usage",
    ]);
    query.recognised = used.len() + usize::from(intent_words) + usize::from(topical);
    query
}

impl Query {
    fn describe(&self) -> String {
        let what = if self.services.is_empty() {
            "anomalies".to_string()
        } else {
            format!(
                "{} anomalies",
                self.services
                    .iter()
                    .map(|s| s.to_uppercase().replace("LAMBDA", "Lambda"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        };
        let mut parts = vec![what];
        if let Some(s) = self.min_severity {
            parts.push(format!("of severity {} or above", s.label()));
        }
        if !self.accounts.is_empty() {
            parts.push(format!(
                "in account {}",
                self.accounts
                    .iter()
                    .map(|(id, n)| if n.is_empty() {
                        id.clone()
                    } else {
                        format!("{n} ({id})")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.environments.is_empty() && !matches!(self.intent, Intent::Compare(_)) {
            parts.push(format!(
                "in {} accounts",
                self.environments
                    .iter()
                    .map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
        if !self.regions.is_empty() {
            parts.push(format!("in {}", self.regions.join(", ")));
        }
        if let Some(p) = &self.time_phrase {
            parts.push(format!("from {p}"));
            if let Some(s) = self.since {
                parts.push(format!("(since {} UTC)", s.format("%Y-%m-%d %H:%M")));
            }
        }
        let head = match &self.intent {
            Intent::List => "list",
            Intent::Why => "explain",
            Intent::CostRanking => "rank accounts by cost impact of",
            Intent::Security => "look for security concerns in",
            Intent::Compare(_) => "compare",
            Intent::Count => "count",
        };
        format!("{head} {}", parts.join(" "))
    }

    fn matches(&self, i: &Insight, env_override: Option<Environment>) -> bool {
        let a = &i.anomaly;
        if !self.services.is_empty() {
            let svc = if a.service.is_empty() {
                a.detector.split('-').next().unwrap_or("")
            } else {
                a.service.as_str()
            };
            if !self.services.contains(svc) {
                return false;
            }
        }
        match env_override {
            Some(e) => {
                if a.environment != e {
                    return false;
                }
            }
            None => {
                if !self.environments.is_empty() && !self.environments.contains(&a.environment) {
                    return false;
                }
            }
        }
        if !self.accounts.is_empty() && !self.accounts.iter().any(|(id, _)| *id == a.account_id) {
            return false;
        }
        if !self.regions.is_empty() && !self.regions.contains(&a.region) {
            return false;
        }
        if self.min_severity.is_some_and(|m| i.severity < m) {
            return false;
        }
        if self.since.is_some_and(|s| a.window_end <= s) {
            return false;
        }
        if self.until.is_some_and(|u| a.window_start >= u) {
            return false;
        }
        true
    }
}

/// The filters a question names, for engines that search elsewhere (Amazon
/// Q Business's attribute filters).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    pub services: Vec<String>,
    pub environments: Vec<Environment>,
    pub account_ids: Vec<String>,
    pub regions: Vec<String>,
    pub min_severity: Option<Severity>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// What the question was understood to ask, in words.
    pub understood: String,
}

/// Parses a question's filters with `now` as the reference for times.
pub fn filters(question: &str, known_accounts: &[(String, String)], now: DateTime<Utc>) -> Filters {
    let q = parse(question, known_accounts, now);
    Filters {
        services: q.services.iter().map(|s| s.to_string()).collect(),
        environments: match &q.intent {
            Intent::Compare(envs) => envs.clone(),
            _ => q.environments.clone(),
        },
        account_ids: q.accounts.iter().map(|(id, _)| id.clone()).collect(),
        regions: q.regions.clone(),
        min_severity: q.min_severity,
        since: q.since,
        until: q.until,
        understood: q.describe(),
    }
}

/// Answers from the embedded insight store.
pub struct BuiltinAsk {
    store: InsightStore,
    /// Fixed "now" for tests; None = decide per question (see `now`).
    clock: Option<DateTime<Utc>>,
    /// What a scoped caller may see of each insight (its correlation).
    view: crate::correlate::ScopedView,
}

impl std::fmt::Debug for BuiltinAsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinAsk").finish_non_exhaustive()
    }
}

/// Insights scanned per question: questions are about recent history.
const SCAN_LIMIT: usize = 50_000;

impl BuiltinAsk {
    pub fn new(store: InsightStore) -> Self {
        Self {
            view: crate::correlate::ScopedView::new(
                store.clone(),
                &crate::recommend::default_rules(),
                crate::config::SeverityConfig::default(),
            ),
            store,
            clock: None,
        }
    }

    pub fn with_clock(store: InsightStore, now: DateTime<Utc>) -> Self {
        Self {
            clock: Some(now),
            ..Self::new(store)
        }
    }

    /// Scoped callers see correlations as `view` shows them (the
    /// configured recommendation rules decide what needs a correlation).
    pub fn with_view(mut self, view: crate::correlate::ScopedView) -> Self {
        self.view = view;
        self
    }

    /// "Now" for time phrases: the wall clock, unless everything stored is
    /// more than 30 days old (replayed history, a demo), in which case the
    /// newest window's end, so "the last 24 hours" means the data's last
    /// day. The answer states which.
    fn now(&self) -> Result<(DateTime<Utc>, Option<String>), StoreError> {
        if let Some(t) = self.clock {
            return Ok((t, None));
        }
        let wall = Utc::now();
        match self.store.newest_window_end()? {
            Some(newest) if wall - newest > Duration::days(30) => Ok((
                newest,
                Some(format!(
                    "times are relative to the newest anomaly ({} UTC): the stored anomalies are replayed history",
                    newest.format("%Y-%m-%d %H:%M")
                )),
            )),
            _ => Ok((wall, None)),
        }
    }

    fn help(understood: &str) -> String {
        format!(
            "I could not tell what to look for{understood}. I answer questions about the anomalies trailhound found, for example:\n\
             - Show me EC2 anomalies from production accounts from the last 24 hours\n\
             - What accounts had the highest cost impact this week?\n\
             - Are there any security concerns with recent Lambda anomalies?\n\
             - Compare anomaly patterns between production and staging accounts\n\
             - Why was account 123456789012 flagged yesterday?\n\
             I understand services (EC2, Lambda, EBS), environments (production, staging, development, testing, sandbox), account ids and names, regions, severities (low to critical) and times (today, yesterday, this week, last week, the last N hours/days)."
        )
    }
}

fn line(i: &Insight) -> String {
    let a = &i.anomaly;
    let name = if a.account_name.is_empty() {
        a.account_id.clone()
    } else {
        format!("{} ({})", a.account_name, a.account_id)
    };
    format!(
        "- {} {} in {name} [{}] {} at {} UTC: {}{}",
        i.severity.label(),
        a.detector,
        a.environment,
        a.region,
        a.window_start.format("%Y-%m-%d %H:%M"),
        i.summary,
        if i.cost.usd_per_hour > 0.0 {
            format!(" (${:.2}/h)", i.cost.usd_per_hour)
        } else {
            String::new()
        }
    )
}

/// One entry per incident: its most severe (then costliest) window, in
/// the order every incident list has (see `trailhound_core::incident`).
fn incidents(list: &[Insight]) -> Vec<&Insight> {
    trailhound_core::incident::incidents(list)
        .into_iter()
        .map(|r| r.worst)
        .collect()
}

fn summarize(name: &str, list: &[&Insight]) -> GroupSummary {
    let mut g = GroupSummary {
        name: name.into(),
        insights: list.len() as u32,
        ..Default::default()
    };
    let mut accounts = BTreeSet::new();
    for i in list {
        accounts.insert(i.anomaly.account_id.as_str());
        g.usd_per_30_days += i.cost.usd_per_30_days;
        *g.by_detector.entry(i.anomaly.detector.clone()).or_default() += 1;
        *g.by_severity
            .entry(i.severity.as_str().to_string())
            .or_default() += 1;
    }
    g.accounts = accounts.len() as u32;
    g
}

#[async_trait]
impl AskBackend for BuiltinAsk {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn filters_by_scope(&self) -> bool {
        true
    }

    async fn ask(&self, question: &str, limit: usize) -> Result<Answer, AskError> {
        self.ask_in(question, limit, &trailhound_core::Scope::all())
            .await
    }

    async fn ask_in(
        &self,
        question: &str,
        limit: usize,
        scope: &trailhound_core::Scope,
    ) -> Result<Answer, AskError> {
        let q = validate(question)?;
        let limit = limit.clamp(1, 1000);
        let (now, clock_note) = self.now()?;
        // Everything below (results, counts, totals, the accounts a
        // question can name) comes from this scan: out of scope is absent.
        let (mut all, _) = self.store.scan(None, SCAN_LIMIT, |i| {
            !i.is_suppressed()
                && scope.allows(
                    &i.anomaly.account_id,
                    &i.anomaly.ou_path,
                    i.anomaly.environment,
                )
        })?;
        // Correlations too: their accounts and counts, as the scope sees them.
        if !scope.is_unrestricted() {
            for i in &mut all {
                if i.correlation.is_some() {
                    *i = self.view.apply(scope, i);
                }
            }
        }
        let mut known: Vec<(String, String)> = Vec::new();
        for i in &all {
            if !known.iter().any(|(id, _)| *id == i.anomaly.account_id) {
                known.push((i.anomaly.account_id.clone(), i.anomaly.account_name.clone()));
            }
        }
        let query = parse(q, &known, now);
        let mut understood = query.describe();
        if let Some(note) = &clock_note {
            understood.push_str(&format!("; {note}"));
        }
        let mut out = Answer {
            understood: understood.clone(),
            fully_understood: query.leftover.is_empty(),
            backend: "builtin".into(),
            ..Default::default()
        };
        if query.recognised == 0 {
            out.fully_understood = false;
            out.answer = Self::help(&if query.leftover.is_empty() {
                String::new()
            } else {
                format!(" in \"{}\"", query.leftover.join(" "))
            });
            return Ok(out);
        }
        let ignored = if query.leftover.is_empty() {
            String::new()
        } else {
            format!(
                " (I did not use: {}; I filter by service, environment, account, region, severity and time)",
                query.leftover.join(", ")
            )
        };
        let matching: Vec<Insight> = all
            .iter()
            .filter(|i| query.matches(i, None))
            .cloned()
            .collect();
        let inc = incidents(&matching);
        match &query.intent {
            Intent::Compare(envs) => {
                let envs = if envs.len() >= 2 {
                    envs.clone()
                } else {
                    vec![Environment::Production, Environment::Staging]
                };
                let mut sentences = Vec::new();
                for e in &envs {
                    let side: Vec<Insight> = all
                        .iter()
                        .filter(|i| query.matches(i, Some(*e)))
                        .cloned()
                        .collect();
                    let side_inc = incidents(&side);
                    let g = summarize(e.as_str(), &side_inc);
                    let top = g
                        .by_detector
                        .iter()
                        .max_by_key(|(_, n)| **n)
                        .map(|(d, n)| format!("mostly {d} ({n})"))
                        .unwrap_or_else(|| "none".into());
                    sentences.push(format!(
                        "{}: {} incidents in {} accounts, {top}; {} high or critical; ${:.0} over 30 days",
                        e.as_str(),
                        g.insights,
                        g.accounts,
                        g.by_severity.get("high").copied().unwrap_or(0)
                            + g.by_severity.get("critical").copied().unwrap_or(0),
                        g.usd_per_30_days
                    ));
                    out.groups.push(g);
                    out.results.extend(
                        side_inc
                            .into_iter()
                            .take(limit / envs.len().max(1))
                            .cloned(),
                    );
                }
                out.answer = format!("{}.{ignored}", sentences.join(". "));
            }
            Intent::CostRanking => {
                let mut by_account: BTreeMap<&str, AccountCost> = BTreeMap::new();
                for i in &inc {
                    let a = &i.anomaly;
                    let e =
                        by_account
                            .entry(a.account_id.as_str())
                            .or_insert_with(|| AccountCost {
                                account_id: a.account_id.clone(),
                                account_name: a.account_name.clone(),
                                environment: a.environment.as_str().into(),
                                ..Default::default()
                            });
                    e.usd_per_30_days += i.cost.usd_per_30_days;
                    e.insights += 1;
                }
                let mut ranked: Vec<AccountCost> = by_account.into_values().collect();
                ranked.sort_by(|a, b| b.usd_per_30_days.total_cmp(&a.usd_per_30_days));
                ranked.truncate(limit);
                out.answer = if ranked.iter().all(|r| r.usd_per_30_days <= 0.0) {
                    format!(
                        "No anomaly with a cost impact matched ({} incidents found, none priced).{ignored}",
                        inc.len()
                    )
                } else {
                    let list: Vec<String> = ranked
                        .iter()
                        .filter(|r| r.usd_per_30_days > 0.0)
                        .take(5)
                        .enumerate()
                        .map(|(n, r)| {
                            format!(
                                "{}. {} ({}, {}): ${:.0} over 30 days from {} incident{}",
                                n + 1,
                                if r.account_name.is_empty() {
                                    &r.account_id
                                } else {
                                    &r.account_name
                                },
                                r.account_id,
                                r.environment,
                                r.usd_per_30_days,
                                r.insights,
                                if r.insights == 1 { "" } else { "s" }
                            )
                        })
                        .collect();
                    format!("Highest cost impact: {}.{ignored}", list.join("; "))
                };
                out.account_costs = ranked;
                out.results = inc.into_iter().take(limit).cloned().collect();
            }
            Intent::Security => {
                let flagged: Vec<(&Insight, Vec<String>)> = inc
                    .iter()
                    .map(|i| {
                        let mut s = security_signals(&i.anomaly);
                        if let Some(c) = &i.correlation {
                            s.push(format!(
                                "same {} in {} accounts",
                                c.kind,
                                c.account_ids.len()
                            ));
                        }
                        (*i, s)
                    })
                    .filter(|(_, s)| !s.is_empty())
                    .collect();
                out.answer = if flagged.is_empty() {
                    format!(
                        "None of the {} matching incidents shows a security signal (a principal, IP or region new to the account, GPU launches, mostly failing calls, or the same actor in several accounts).{}{ignored}",
                        inc.len(),
                        inc.first()
                            .map(|i| format!(" The most severe is: {}", i.summary))
                            .unwrap_or_default()
                    )
                } else {
                    let lines: Vec<String> = flagged
                        .iter()
                        .take(5)
                        .map(|(i, s)| format!("{}\n  signals: {}", line(i), s.join("; ")))
                        .collect();
                    format!(
                        "{} of {} matching incidents show security signals:\n{}{ignored}",
                        flagged.len(),
                        inc.len(),
                        lines.join("\n")
                    )
                };
                out.results = flagged
                    .into_iter()
                    .take(limit)
                    .map(|(i, _)| i.clone())
                    .collect();
            }
            Intent::Why => {
                out.answer = if inc.is_empty() {
                    format!("Nothing matched: no anomaly was found for that.{ignored}")
                } else {
                    let parts: Vec<String> = inc
                        .iter()
                        .take(5)
                        .map(|i| {
                            format!(
                                "{}\n  {}\n  severity {} because {}",
                                line(i),
                                i.root_cause.explanation,
                                i.severity.label(),
                                i.severity_reasons.first().cloned().unwrap_or_default()
                            )
                        })
                        .collect();
                    format!(
                        "{} incident{} matched:\n{}{ignored}",
                        inc.len(),
                        if inc.len() == 1 { "" } else { "s" },
                        parts.join("\n")
                    )
                };
                out.results = inc.into_iter().take(limit).cloned().collect();
            }
            Intent::Count => {
                out.answer = format!(
                    "{} incidents ({} anomalous windows) matched.{ignored}",
                    inc.len(),
                    matching.len()
                );
                out.results = inc.into_iter().take(limit).cloned().collect();
            }
            Intent::List => {
                out.answer = if inc.is_empty() {
                    format!("No anomalies matched.{ignored}")
                } else {
                    let lines: Vec<String> = inc.iter().take(10).map(|i| line(i)).collect();
                    format!(
                        "{} incident{} ({} anomalous windows), most severe first:\n{}{}{ignored}",
                        inc.len(),
                        if inc.len() == 1 { "" } else { "s" },
                        matching.len(),
                        lines.join("\n"),
                        if inc.len() > 10 { "\n…" } else { "" }
                    )
                };
                out.results = inc.into_iter().take(limit).cloned().collect();
            }
        }
        Ok(out)
    }
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
