//! Microsoft Teams messages: an Adaptive Card (schema 1.4) in the Teams
//! `message` envelope that incoming webhooks and Workflows accept:
//!
//! ```json
//! {"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive",
//!   "content":{"$schema":"http://adaptivecards.io/schemas/adaptive-card.json",
//!              "type":"AdaptiveCard","version":"1.4","body":[…]}}]}
//! ```
//!
//! The body is a title `TextBlock` coloured by severity, the summary, a
//! `FactSet` of the context, then headed `TextBlock`s for why, cost, root
//! cause, correlation, recommendations and investigate commands (monospace),
//! and a subtle footer. Teams rejects cards over about 28 KB, so each text
//! is capped and trailing sections are dropped until the card fits.

use serde_json::{Value, json};
use trailhound_core::Severity;

use super::{Facts, FollowUpFacts, Message, truncate};

const MAX_TEXT: usize = 2000;
/// Teams' limit is about 28 KB for the whole request; leave room.
pub const MAX_CARD_BYTES: usize = 24_000;

fn color(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "Attention",
        Severity::Medium => "Warning",
        Severity::Low => "Accent",
    }
}

fn text(t: &str) -> Value {
    json!({"type": "TextBlock", "text": truncate(t, MAX_TEXT), "wrap": true})
}

fn heading(t: &str) -> Value {
    json!({"type": "TextBlock", "text": truncate(t, MAX_TEXT), "wrap": true, "weight": "Bolder", "spacing": "Medium"})
}

fn title(t: &str, s: Severity) -> Value {
    json!({"type": "TextBlock", "text": truncate(t, 300), "wrap": true, "size": "Large", "weight": "Bolder", "color": color(s)})
}

fn facts(pairs: &[(String, String)]) -> Value {
    let facts: Vec<Value> = pairs
        .iter()
        .map(|(t, v)| json!({"title": t, "value": truncate(v, 500)}))
        .collect();
    json!({"type": "FactSet", "facts": facts})
}

fn footer(t: &str) -> Value {
    json!({"type": "TextBlock", "text": truncate(t, 500), "wrap": true, "isSubtle": true, "size": "Small", "spacing": "Medium"})
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("- {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Wraps a card body in the envelope, dropping trailing elements (the
/// footer kept) until it fits Teams' size limit.
fn envelope(mut body: Vec<Value>, footer: Value) -> Value {
    let wrap = |body: &[Value]| {
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": body,
                }
            }]
        })
    };
    loop {
        let mut all = body.clone();
        all.push(footer.clone());
        let card = wrap(&all);
        if body.len() <= 3 || card.to_string().len() <= MAX_CARD_BYTES {
            return card;
        }
        body.pop();
    }
}

/// The card for `m`: the full alert, or the follow-up.
pub fn render(m: &Message<'_>) -> Value {
    match m.follow_up {
        Some(f) => {
            let ff = FollowUpFacts::of(m, f).map_text(trailhound_core::text::markdown_escape);
            envelope(
                vec![
                    title(&ff.title, m.insight.severity),
                    text(&ff.lead),
                    facts(&ff.totals),
                ],
                footer(&trailhound_core::text::markdown_escape(
                    &Facts::of(m).footer,
                )),
            )
        }
        None => alert(m),
    }
}

fn alert(m: &Message<'_>) -> Value {
    // Teams reads TextBlocks as Markdown: every value is escaped, so a
    // user agent like `[Verify your SSO](https://…)` stays text; the
    // markup below (lists, bold) is added after.
    let f = Facts::of(m).map_text(trailhound_core::text::markdown_escape);
    let mut body = vec![
        title(&f.title, m.insight.severity),
        text(&f.summary),
        facts(&f.table()),
    ];
    if let Some(rule) = &f.suppressed {
        body.push(text(&format!("Suppressed by rule **{rule}**")));
    }
    if !f.severity_reasons.is_empty() {
        body.push(heading(&format!("Why {}", f.severity)));
        body.push(text(&list(&f.severity_reasons)));
    }
    body.push(heading("Cost impact"));
    let mut cost = vec![f.cost.clone()];
    cost.extend(f.cost_lines.iter().map(|l| format!("- {l}")));
    cost.extend(f.cost_assumptions.iter().map(|a| format!("_{a}_")));
    body.push(text(&cost.join("\n")));
    if !f.root_cause.is_empty() || !f.factors.is_empty() {
        body.push(heading("Root cause"));
        let mut rc = f.root_cause.clone();
        if !f.factors.is_empty() {
            rc.push_str("\n\n");
            rc.push_str(&list(&f.factors));
        }
        body.push(text(&rc));
    }
    if let Some(c) = &f.correlation {
        body.push(heading("Correlation"));
        body.push(text(c));
    }
    for (t, actions) in &f.recommendations {
        body.push(heading(&format!("Recommended: {t}")));
        let steps = actions
            .iter()
            .enumerate()
            .map(|(n, a)| format!("{}. {a}", n + 1))
            .collect::<Vec<_>>()
            .join("\n");
        body.push(text(&steps));
    }
    if !f.investigate.is_empty() {
        body.push(heading("Investigate"));
        for cmd in &f.investigate {
            body.push(json!({"type": "TextBlock", "text": truncate(cmd, MAX_TEXT), "wrap": true, "fontType": "Monospace", "spacing": "Small"}));
        }
    }
    envelope(body, footer(&f.footer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_insight;

    #[test]
    fn card_is_in_the_teams_envelope() {
        let i = sample_insight("w1", "inc", Severity::High);
        let v = render(&Message {
            insight: &i,
            follow_up: None,
            delivery_id: "d",
            rule: "r",
        });
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        let c = &a["content"];
        assert_eq!(
            c["$schema"],
            "http://adaptivecards.io/schemas/adaptive-card.json"
        );
        assert_eq!(c["type"], "AdaptiveCard");
        assert_eq!(c["version"], "1.4");
        let body = c["body"].as_array().unwrap();
        assert_eq!(body[0]["type"], "TextBlock");
        assert_eq!(body[0]["color"], "Attention");
        assert_eq!(body[2]["type"], "FactSet");
        assert_eq!(body[2]["facts"].as_array().unwrap().len(), 10);
    }

    #[test]
    fn oversized_cards_are_cut_to_fit() {
        let mut i = sample_insight("w1", "inc", Severity::Low);
        i.investigate = (0..200)
            .map(|n| format!("cmd {n} {}", "y".repeat(300)))
            .collect();
        let v = render(&Message {
            insight: &i,
            follow_up: None,
            delivery_id: "d",
            rule: "r",
        });
        assert!(v.to_string().len() <= MAX_CARD_BYTES);
        let body = v["attachments"][0]["content"]["body"].as_array().unwrap();
        assert_eq!(body.last().unwrap()["isSubtle"], true);
    }
}
