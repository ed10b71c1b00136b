//! Values from CloudTrail and the org snapshot are attacker-controlled: a
//! user agent, a principal name, a tag can carry newlines, ANSI escapes,
//! Markdown links or shell metacharacters. These helpers make such values
//! inert wherever trailhound writes them for people: one line of plain
//! text ([`clean_line`]), a shell word ([`shell_quote`]), Markdown text
//! ([`markdown_escape`]) and Slack mrkdwn mentions ([`defuse_mentions`]).

/// The value on one line with nothing a terminal or a log reader would
/// interpret: ANSI escape sequences removed, newlines and tabs turned into
/// spaces, other control characters and bidirectional overrides dropped.
pub fn clean_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // ESC [ … final byte (CSI), ESC ] … BEL/ST (OSC), or ESC x.
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    for n in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&n) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    chars.next();
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' {
                            break;
                        }
                        if n == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\n' | '\r' | '\t' | '\u{2028}' | '\u{2029}' | '\u{85}' => out.push(' '),
            c if c.is_control() => {}
            // Bidirectional overrides and isolates reorder what is shown.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
    out
}

/// `s` as one shell word: unchanged when it holds only characters no shell
/// interprets, otherwise single-quoted (a `'` inside becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '_' | '-' | ':' | '/' | '@' | '=' | ',' | '+')
        });
    if safe {
        return s.to_string();
    }
    format!("'{}'", clean_line(s).replace('\'', r"'\''"))
}

/// `s` with what Markdown (CommonMark, as Teams' Adaptive Cards read it)
/// could turn into formatting or a link backslash-escaped — emphasis,
/// code, link brackets, HTML, tables, and list or heading markers at the
/// start — and URL schemes broken so nothing is auto-linked. Ordinary
/// text (`payments-prod (111122223333)`) reads unchanged.
pub fn markdown_escape(s: &str) -> String {
    let s = clean_line(s);
    let mut out = String::with_capacity(s.len() + 8);
    let trimmed = s.trim_start();
    let lead = s.len() - trimmed.len();
    // "1. " or "1) " at the start would begin an ordered list.
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    for (i, c) in s.char_indices() {
        let at_start = i == lead;
        let after_number = digits > 0 && i == lead + digits;
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '~' | '|'
        ) || (at_start && matches!(c, '#' | '-' | '+' | '='))
            || (after_number && matches!(c, '.' | ')'))
        {
            out.push('\\');
        }
        out.push(c);
    }
    defang_urls(&out)
}

/// Breaks `scheme://` so no client auto-links it (a zero-width space after
/// the colon); the text still reads the same.
pub fn defang_urls(s: &str) -> String {
    s.replace("://", ":\u{200b}//")
}

/// Slack: `@here`, `@channel`, `@everyone` made inert (a zero-width space
/// after the `@`), for the notification fallback text Slack may parse.
pub fn defuse_mentions(s: &str) -> String {
    let mut out = s.to_string();
    for m in ["here", "channel", "everyone"] {
        out = out.replace(&format!("@{m}"), &format!("@\u{200b}{m}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_colours_and_commands_are_inert() {
        let forged = "ok\n2026-01-01T00:00:00Z  INFO serving\r\x1b[31mred\x1b[0m\u{202e}txt\x07";
        let c = clean_line(forged);
        assert!(
            !c.contains('\n')
                && !c.contains('\r')
                && !c.contains('\x1b')
                && !c.contains('\u{202e}')
        );
        assert_eq!(c, "ok 2026-01-01T00:00:00Z  INFO serving redtxt");
        assert_eq!(shell_quote("us-east-1"), "us-east-1");
        assert_eq!(
            shell_quote("p4d.24xlarge,g5.xlarge"),
            "p4d.24xlarge,g5.xlarge"
        );
        assert_eq!(shell_quote("x; rm -rf /"), "'x; rm -rf /'");
        assert_eq!(shell_quote("a'b$(id)"), r"'a'\''b$(id)'");
        assert_eq!(shell_quote(""), "''");
        let md = markdown_escape("[Verify your SSO](https://evil.example/login)");
        assert!(!md.contains("SSO](") && !md.contains("https://"), "{md}");
        assert!(md.starts_with(r"\[Verify your SSO\]("));
        assert_eq!(
            markdown_escape("payments-prod (111122223333)"),
            "payments-prod (111122223333)"
        );
        assert_eq!(markdown_escape("- 1. **x**"), r"\- 1. \*\*x\*\*");
        assert_eq!(markdown_escape("1. x"), r"1\. x");
        assert_eq!(
            defuse_mentions("ping @here and @channel"),
            "ping @\u{200b}here and @\u{200b}channel"
        );
    }
}
