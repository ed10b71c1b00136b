//! The built-in question engine: answers over the stored insights, within the caller's scope.

#[allow(unused_imports)]
use super::*;

/// Answers from the embedded insight store.
pub struct BuiltinAsk {
    pub(super) store: InsightStore,
    /// Fixed "now" for tests; None = decide per question (see `now`).
    pub(super) clock: Option<DateTime<Utc>>,
    /// What a scoped caller may see of each insight (its correlation).
    pub(super) view: crate::correlate::ScopedView,
}

trailhound_core::debug_fields!(BuiltinAsk { .. });

/// Insights scanned per question: questions are about recent history.
pub(super) const SCAN_LIMIT: usize = 50_000;

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
    pub(super) fn now(&self) -> Result<(DateTime<Utc>, Option<String>), StoreError> {
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

    pub(super) fn help(understood: &str) -> String {
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

pub(super) fn line(i: &Insight) -> String {
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
pub(super) fn incidents(list: &[Insight]) -> Vec<&Insight> {
    trailhound_core::incident::incidents(list)
        .into_iter()
        .map(|r| r.worst)
        .collect()
}

pub(super) fn summarize(name: &str, list: &[&Insight]) -> GroupSummary {
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
