//! Slack Block Kit messages for incoming webhooks.
//!
//! Layout: a `header` (severity and what), a `section` with the summary, a
//! `section` of ten `fields` (account, OU, environment, region, detector,
//! window, actual vs expected, grade, severity, cost), then sections for
//! why this severity, cost, root cause, correlation, each recommendation
//! and the investigate commands, and a `context` footer with the ids.
//! Slack's limits are enforced here: header ≤ 150 characters, section text
//! ≤ 3000, field text ≤ 2000, ≤ 10 fields, ≤ 50 blocks; longer text ends
//! with "…". The top-level `text` is the notification fallback.

use serde_json::{Value, json};
use trailhound_core::Severity;

use super::{Facts, FollowUpFacts, Message};

pub const MAX_HEADER: usize = 150;
pub const MAX_SECTION: usize = 3000;
pub const MAX_FIELD: usize = 2000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_BLOCKS: usize = 50;
const MAX_CONTEXT: usize = 2000;
const MAX_FALLBACK: usize = 3000;

/// Escapes the three characters Slack's mrkdwn treats as control, and
/// defuses `@here`/`@channel`/`@everyone`.
pub fn escape(s: &str) -> String {
    let s = trailhound_core::text::defuse_mentions(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts already-escaped mrkdwn to `max` characters without splitting an
/// entity such as `&amp;`.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut kept: String = s.chars().take(max.saturating_sub(1)).collect();
    if let Some(amp) = kept.rfind('&')
        && !kept[amp..].contains(';')
    {
        kept.truncate(amp);
    }
    kept.push('…');
    kept
}

fn emoji(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "🔴",
        Severity::High => "🟠",
        Severity::Medium => "🟡",
        Severity::Low => "🔵",
    }
}

fn header(text: &str) -> Value {
    json!({"type": "header", "text": {"type": "plain_text", "text": super::truncate(text, MAX_HEADER), "emoji": true}})
}

// Every mrkdwn object is `verbatim`: Slack then neither links URLs nor
// parses mentions in it, so a value from CloudTrail cannot ping a channel
// or hide a link; `escape` keeps `<…>` (Slack's own link and mention
// syntax) out.
fn section(mrkdwn: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(mrkdwn, MAX_SECTION), "verbatim": true}})
}

fn fields(pairs: &[(String, String)]) -> Value {
    let fields: Vec<Value> = pairs
        .iter()
        .take(MAX_FIELDS)
        .map(|(label, value)| {
            json!({"type": "mrkdwn", "text": cut(&format!("*{}*\n{}", escape(label), escape(value)), MAX_FIELD), "verbatim": true})
        })
        .collect();
    json!({"type": "section", "fields": fields})
}

fn context(text: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&escape(text), MAX_CONTEXT), "verbatim": true}]})
}

fn bullets(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("• {}", escape(s)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keeps the block count within Slack's limit, the footer always last.
fn finish(mut blocks: Vec<Value>, footer: Value, fallback: &str) -> Value {
    blocks.truncate(MAX_BLOCKS - 1);
    blocks.push(footer);
    // The fallback is what notifications show: mentions defused too.
    json!({"text": cut(&trailhound_core::text::defuse_mentions(&escape(fallback)), MAX_FALLBACK), "blocks": blocks})
}

/// The message for `m`: the full alert, or the follow-up.
pub fn render(m: &Message<'_>) -> Value {
    match m.follow_up {
        Some(f) => follow_up(m, &FollowUpFacts::of(m, f)),
        None => alert(m),
    }
}

fn alert(m: &Message<'_>) -> Value {
    let f = Facts::of(m);
    let sev = m.insight.severity;
    let mut blocks = vec![
        header(&format!("{} {}", emoji(sev), f.title)),
        section(&escape(&f.summary)),
        fields(&f.table()),
    ];
    if let Some(rule) = &f.suppressed {
        blocks.push(section(&format!(
            ":mute: Suppressed by rule *{}*",
            escape(rule)
        )));
    }
    blocks.push(json!({"type": "divider"}));
    if !f.severity_reasons.is_empty() {
        blocks.push(section(&format!(
            "*Why {}*\n{}",
            f.severity,
            bullets(&f.severity_reasons)
        )));
    }
    let mut cost = format!("*Cost impact*\n{}", escape(&f.cost));
    if !f.cost_lines.is_empty() {
        cost.push('\n');
        cost.push_str(&bullets(&f.cost_lines));
    }
    for a in &f.cost_assumptions {
        cost.push_str(&format!("\n_{}_", escape(a)));
    }
    blocks.push(section(&cost));
    if !f.root_cause.is_empty() || !f.factors.is_empty() {
        let mut rc = format!("*Root cause*\n{}", escape(&f.root_cause));
        if !f.factors.is_empty() {
            rc.push('\n');
            rc.push_str(&bullets(&f.factors));
        }
        blocks.push(section(&rc));
    }
    if let Some(c) = &f.correlation {
        blocks.push(section(&format!("*Correlation*\n{}", escape(c))));
    }
    for (title, actions) in &f.recommendations {
        let steps = actions
            .iter()
            .enumerate()
            .map(|(n, a)| format!("{}. {}", n + 1, escape(a)))
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(section(&format!(
            "*Recommended: {}*\n{}",
            escape(title),
            steps
        )));
    }
    if !f.investigate.is_empty() {
        // Cut inside the code block so the closing fence survives.
        let cmds = cut(&escape(&f.investigate.join("\n")), MAX_SECTION - 40);
        blocks.push(section(&format!("*Investigate*\n```{cmds}```")));
    }
    finish(
        blocks,
        context(&f.footer),
        &format!("{}: {}", f.title, f.summary),
    )
}

fn follow_up(m: &Message<'_>, f: &FollowUpFacts) -> Value {
    let footer = Facts::of(m).footer;
    let blocks = vec![
        header(&format!("{} {}", emoji(m.insight.severity), f.title)),
        section(&escape(&f.lead)),
        fields(&f.totals),
    ];
    finish(blocks, context(&footer), &f.title)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_insight;

    fn msg(i: &trailhound_core::Insight) -> Message<'_> {
        Message {
            insight: i,
            follow_up: None,
            delivery_id: "d",
            rule: "r",
        }
    }

    #[test]
    fn blocks_have_slack_types_and_the_context() {
        let i = sample_insight("w1", "inc", Severity::Critical);
        let v = render(&msg(&i));
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[2]["fields"].as_array().unwrap().len(), 10);
        assert_eq!(blocks.last().unwrap()["type"], "context");
        let all = v.to_string();
        for want in [
            "payments-prod (111122223333)",
            "Root / Workloads / Production",
            "production",
            "us-east-1",
            "ec2-run-instances",
            "2026-01-12 10:00 → 10:10 UTC",
            "40 instances vs 1.5 expected",
            "grade 0.97 · confidence 0.82",
            "$1,310.72/h",
            "new principal and new source IP",
            "ci-deployer",
            "data-staging (444455556666)",
            "Check the launches by a new principal",
            "disable the user's access keys",
            "GetInsight",
        ] {
            assert!(all.contains(want), "missing {want}");
        }
    }

    #[test]
    fn limits_are_respected_with_an_ellipsis() {
        let mut i = sample_insight("w1", "inc", Severity::Low);
        i.anomaly.detector = "d".repeat(400);
        i.summary = "<&>".repeat(2000);
        i.recommendations = (0..80)
            .map(|n| trailhound_core::insight::Recommendation {
                rule: format!("r{n}"),
                title: format!("t{n}"),
                actions: vec!["x".repeat(5000)],
            })
            .collect();
        let v = render(&msg(&i));
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), MAX_BLOCKS);
        let header = blocks[0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), MAX_HEADER);
        assert!(header.ends_with('…'));
        for b in blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() <= MAX_SECTION);
            }
        }
        let summary = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(
            summary.ends_with("&gt;…") || summary.ends_with("&lt;…") || summary.ends_with("&amp;…"),
            "{}",
            &summary[summary.len() - 20..]
        );
        assert_eq!(blocks.last().unwrap()["type"], "context");
    }
}
