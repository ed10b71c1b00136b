//! Plain text: the SNS message body (e-mail and SMS subscribers read it as
//! is) and the log line's message.

use super::{Facts, FollowUpFacts, Message, truncate};

/// SNS subjects are limited to 100 characters.
pub const MAX_SUBJECT: usize = 100;

/// A one-line subject.
pub fn subject(m: &Message<'_>) -> String {
    let title = match m.follow_up {
        Some(f) => FollowUpFacts::of(m, f).title,
        None => Facts::of(m).title,
    };
    // SNS subjects must be printable ASCII without line breaks.
    let ascii: String = title
        .replace('·', "-")
        .replace('→', "->")
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect();
    truncate(&format!("trailhound: {ascii}"), MAX_SUBJECT).replace('…', ".")
}

/// The whole message as readable lines.
pub fn body(m: &Message<'_>) -> String {
    let f = Facts::of(m);
    let mut out = Vec::new();
    if let Some(fu) = m.follow_up {
        let ff = FollowUpFacts::of(m, fu);
        out.push(ff.title);
        out.push(ff.lead);
        out.push(String::new());
        out.extend(ff.totals.into_iter().map(|(k, v)| format!("{k}: {v}")));
        out.push(String::new());
        out.push(f.footer);
        return out.join("\n");
    }
    out.push(f.title.clone());
    out.push(f.summary.clone());
    out.push(String::new());
    for (k, v) in [
        ("Account", &f.account),
        ("OU", &f.ou),
        ("Environment", &f.environment),
        ("Region", &f.region),
        ("Detector", &f.detector),
        ("Window", &f.window),
        ("Actual vs expected", &f.actual_vs_expected),
        ("Grade", &f.grade),
        ("Severity", &f.severity),
        ("Cost impact", &f.cost),
    ] {
        out.push(format!("{k}: {v}"));
    }
    if let Some(rule) = &f.suppressed {
        out.push(format!("Suppressed by rule {rule}"));
    }
    let section = |out: &mut Vec<String>, head: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            out.push(String::new());
            out.push(head.to_string());
            out.extend(lines);
        }
    };
    section(
        &mut out,
        &format!("Why {}:", f.severity),
        f.severity_reasons
            .iter()
            .map(|r| format!("- {r}"))
            .collect(),
    );
    section(
        &mut out,
        "Cost lines:",
        f.cost_lines
            .iter()
            .chain(&f.cost_assumptions)
            .map(|l| format!("- {l}"))
            .collect(),
    );
    let mut rc = Vec::new();
    if !f.root_cause.is_empty() {
        rc.push(f.root_cause.clone());
    }
    rc.extend(f.factors.iter().map(|x| format!("- {x}")));
    section(&mut out, "Root cause:", rc);
    section(
        &mut out,
        "Correlation:",
        f.correlation.iter().cloned().collect(),
    );
    for (title, actions) in &f.recommendations {
        section(
            &mut out,
            &format!("Recommended: {title}"),
            actions
                .iter()
                .enumerate()
                .map(|(n, a)| format!("{}. {a}", n + 1))
                .collect(),
        );
    }
    section(
        &mut out,
        "Investigate:",
        f.investigate.iter().map(|c| format!("  {c}")).collect(),
    );
    out.push(String::new());
    out.push(f.footer);
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_insight;
    use trailhound_core::Severity;

    #[test]
    fn subject_is_short_ascii() {
        let mut i = sample_insight("w1", "inc", Severity::High);
        i.anomaly.account.name =
            "päyments-prod-with-a-very-long-name-that-goes-on-and-on-and-on".into();
        let m = Message {
            insight: &i,
            follow_up: None,
            delivery_id: "d",
            rule: "r",
        };
        let s = subject(&m);
        assert!(s.len() <= MAX_SUBJECT && s.is_ascii(), "{s}");
        assert!(
            s.starts_with("trailhound: HIGH - ec2-run-instances spike"),
            "{s}"
        );
        let b = body(&m);
        assert!(
            b.contains("Investigate:") && b.contains("Correlation:"),
            "{b}"
        );
    }
}
