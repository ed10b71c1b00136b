//! Why records were turned away, counted by kind.
//!
//! Every replay and push ends with the most frequent reasons: a summary
//! that says only "175 rejected" sends people to debug logs. Reasons name
//! the values they refused (a time, a field's content), so they are
//! counted by their *kind*: the reason with every value in it blanked.

use std::collections::BTreeMap;

/// Distinct kinds kept; any further kind counts under [`OTHER`].
const MAX_KINDS: usize = 64;
const OTHER: &str = "other reasons";

/// Counts of reasons by kind, with one full example of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReasonTally {
    kinds: BTreeMap<String, (u64, String)>,
}

impl ReasonTally {
    pub fn add(&mut self, reason: &str) {
        self.add_n(reason, 1);
    }

    pub fn add_n(&mut self, reason: &str, n: u64) {
        let mut kind = reason_kind(reason);
        let mut example = reason;
        if !self.kinds.contains_key(&kind) && self.kinds.len() >= MAX_KINDS {
            kind = OTHER.into();
            example = OTHER;
        }
        let entry = self
            .kinds
            .entry(kind)
            .or_insert_with(|| (0, example.to_string()));
        entry.0 += n;
    }

    pub fn merge(&mut self, other: &ReasonTally) {
        for (count, example) in other.kinds.values() {
            self.add_n(example, *count);
        }
    }

    pub fn total(&self) -> u64 {
        self.kinds.values().map(|(n, _)| n).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The `n` most frequent kinds: (count, an example reason).
    pub fn top(&self, n: usize) -> Vec<(u64, String)> {
        let mut all: Vec<(u64, String)> = self.kinds.values().cloned().collect();
        all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        all.truncate(n);
        all
    }

    /// Lines for people: `  12 × field eventTime … is … ahead …`.
    pub fn report(&self, n: usize) -> String {
        let mut out = String::new();
        for (count, example) in self.top(n) {
            out.push_str(&format!("  {count:>8} × {example}\n"));
        }
        let shown: u64 = self.top(n).iter().map(|(c, _)| c).sum();
        if shown < self.total() {
            out.push_str(&format!("  {:>8} × other reasons\n", self.total() - shown));
        }
        out
    }
}

/// A reason with its values blanked: words with a digit, quoted text and
/// JSON fragments become "…".
pub fn reason_kind(reason: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut in_quote = false;
    for word in reason.split_whitespace() {
        let starts_quote = word.starts_with('"') || word.starts_with('`');
        let value = in_quote
            || starts_quote
            || word.starts_with('{')
            || word.starts_with('[')
            || word.bytes().any(|b| b.is_ascii_digit());
        if starts_quote {
            let rest = &word[1..];
            in_quote = !(rest.ends_with('"') || rest.ends_with("\":") || rest.ends_with('`'));
        } else if in_quote && (word.ends_with('"') || word.ends_with("\":") || word.ends_with('`'))
        {
            in_quote = false;
        }
        let w = if value { "…" } else { word };
        if !(w == "…" && out.last() == Some(&"…")) {
            out.push(w);
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_keeps_an_example() {
        let mut t = ReasonTally::default();
        t.add("field eventTime 2099-01-01T00:00:00Z is 26280d ahead of the receiving clock 2026-12-07T00:00:00Z (max_future_skew 5m): quarantined");
        t.add("field eventTime 2098-01-01T00:00:00Z is 25915d ahead of the receiving clock 2026-12-07T00:00:00Z (max_future_skew 5m): quarantined");
        t.add("missing required field eventID");
        t.add(r#"field awsRegion is not a region name: "US East""#);
        t.add(r#"field awsRegion is not a region name: "x y z""#);
        t.add(r#"field awsRegion is not a region name: "x y z""#);
        assert_eq!(t.total(), 6);
        let top = t.top(2);
        assert_eq!(top[0].0, 3);
        assert!(top[0].1.contains("awsRegion"), "{top:?}");
        assert_eq!(top[1].0, 2);
        assert!(top[1].1.contains("2099"), "{top:?}");
        let report = t.report(2);
        assert!(report.contains("1 × other reasons"), "{report}");
    }

    #[test]
    fn kinds_are_bounded() {
        let mut t = ReasonTally::default();
        // 1000 reasons of different kinds (letters only, no values).
        for i in 0..1000u32 {
            let word: String = [i / 100, i / 10 % 10, i % 10]
                .iter()
                .map(|d| char::from(b'a' + *d as u8))
                .collect();
            t.add(&format!("reason of kind {word}"));
        }
        assert_eq!(t.total(), 1000);
        assert_eq!(t.kinds.len(), MAX_KINDS + 1);
        assert_eq!(t.top(1)[0], (1000 - MAX_KINDS as u64, OTHER.to_string()));
    }
}
