//! A question in plain English turned into a query: intent, filters (service, environment, account, region, severity, time) and what was not understood.

#[allow(unused_imports)]
use super::*;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Intent {
    List,
    Why,
    CostRanking,
    Security,
    Compare(Vec<Environment>),
    Count,
}

/// What a question asks for.
#[derive(Clone, Debug)]
pub(super) struct Query {
    pub(super) intent: Intent,
    pub(super) services: BTreeSet<&'static str>,
    pub(super) environments: Vec<Environment>,
    pub(super) accounts: Vec<(String, String)>,
    pub(super) regions: Vec<String>,
    pub(super) min_severity: Option<Severity>,
    pub(super) since: Option<DateTime<Utc>>,
    pub(super) until: Option<DateTime<Utc>>,
    pub(super) time_phrase: Option<String>,
    pub(super) leftover: Vec<String>,
    pub(super) recognised: usize,
}

/// Words that ask for a ranking by cost.
const COST_WORDS: &[&str] = &[
    "cost",
    "costs",
    "costly",
    "expensive",
    "spend",
    "spending",
    "dollars",
    "money",
];

/// Words that ask to compare environments.
const COMPARE_WORDS: &[&str] = &[
    "compare",
    "comparison",
    "versus",
    "vs",
    "difference",
    "differences",
];

/// Words that ask about security.
const SECURITY_WORDS: &[&str] = &[
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
];

pub(super) const STOPWORDS: &[&str] = &[
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
    "concerns",
    "concern",
    "risk",
    "risks",
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

pub(super) fn tokens(q: &str) -> Vec<String> {
    q.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '.' || c == '_'))
        .map(|t| t.trim_matches(|c| c == '.' || c == '-').to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

pub(super) fn service_of_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "ec2" | "instance" | "instances" | "launch" | "launches" | "launched" | "compute"
        | "gpu" | "gpus" | "runinstances" => "ec2",
        "lambda" | "lambdas" | "function" | "functions" | "invocation" | "invocations"
        | "invoke" | "invokes" | "serverless" => "lambda",
        "ebs" | "volume" | "volumes" | "storage" | "disk" | "disks" => "ebs",
        _ => return None,
    })
}

pub(super) fn environment_of_word(w: &str) -> Option<Environment> {
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

pub(super) fn is_region(w: &str) -> bool {
    let parts: Vec<&str> = w.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

pub(super) fn start_of_day(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), t.day(), 0, 0, 0)
        .single()
        .unwrap_or(t)
}

/// Parses a question against the accounts known to the store, with `now`
/// as the reference for time phrases.
pub(super) fn parse(q: &str, accounts: &[(String, String)], now: DateTime<Utc>) -> Query {
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
    } else if has(COMPARE_WORDS) || (has(&["between"]) && query.environments.len() >= 2) {
        query.intent = Intent::Compare(query.environments.clone());
    } else if has(COST_WORDS) {
        query.intent = Intent::CostRanking;
    } else if has(SECURITY_WORDS) {
        query.intent = Intent::Security;
    } else if has(&["many", "count", "number"]) {
        query.intent = Intent::Count;
    }
    let intent_words = query.intent != Intent::List;
    for (i, t) in toks.iter().enumerate() {
        if used.contains(&i) {
            continue;
        }
        if [STOPWORDS, COST_WORDS, COMPARE_WORDS, SECURITY_WORDS]
            .iter()
            .any(|words| words.contains(&t.as_str()))
            || t.chars().all(|c| c.is_ascii_digit())
        {
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
    pub(super) fn describe(&self) -> String {
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

    pub(super) fn matches(&self, i: &Insight, env_override: Option<Environment>) -> bool {
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
