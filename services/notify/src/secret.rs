//! Webhook URLs and signing secrets, resolved from the environment, a file
//! or a literal, and kept out of every log line, error and API answer.
//!
//! A Slack or Teams incoming-webhook URL *is* a credential: anyone who has
//! it can post to the channel. So the resolved value lives only in
//! [`Secret`], whose `Debug` and `Display` print `***`; what is shown
//! instead is [`redact_url`]'s scheme, host and first path segment. Error
//! texts that might echo a URL (an HTTP client error, a response body) go
//! through [`Secret::scrub`] before they are stored or logged.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Looks up an environment variable; injectable so tests need not touch
/// the process environment.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment.
pub fn process_env() -> EnvLookup {
    Arc::new(|k| std::env::var(k).ok())
}

/// A resolved secret value. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it (the request).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "***")
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from, as configured. Exactly one source is set
/// (validation checked that).
pub(crate) struct Source<'a> {
    /// "url" or "secret": the key family, for error messages.
    pub what: &'static str,
    pub literal: Option<&'a str>,
    pub env: Option<&'a str>,
    pub file: Option<&'a Path>,
}

impl Source<'_> {
    /// Reads the value. Errors name the variable or file, never the value.
    pub fn resolve(&self, env: &EnvLookup) -> Result<Option<Secret>, String> {
        let what = self.what;
        let value = if let Some(v) = self.literal {
            v.to_string()
        } else if let Some(var) = self.env {
            env(var).ok_or_else(|| {
                format!("{what}_env names environment variable {var}, which is not set")
            })?
        } else if let Some(path) = self.file {
            std::fs::read_to_string(path)
                .map_err(|e| format!("failed to read {what}_file {}: {e}", path.display()))?
        } else {
            return Ok(None);
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("the {what} from {} is empty", self.describe()));
        }
        Ok(Some(Secret::new(value)))
    }

    /// "url_env SLACK_WEBHOOK_URL", "url_file /run/secrets/x", "url" — safe
    /// to show.
    pub fn describe(&self) -> String {
        let what = self.what;
        if let Some(var) = self.env {
            format!("{what}_env {var}")
        } else if let Some(p) = self.file {
            format!("{what}_file {}", p.display())
        } else {
            format!("the literal {what}")
        }
    }
}

/// Checks that a resolved URL is an absolute http(s) URL, without echoing
/// it in the error.
pub(crate) fn parse_url(secret: &Secret, source: &Source<'_>) -> Result<reqwest::Url, String> {
    let bad = || {
        format!(
            "the url from {} is not an absolute http(s) URL",
            source.describe()
        )
    };
    let url = reqwest::Url::parse(secret.expose()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad());
    }
    Ok(url)
}

/// What may be shown of a webhook URL: scheme, host (and port) and the
/// first path segment, then `***`, e.g. `https://hooks.slack.com/services/***`.
pub fn redact_url(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let first = url
        .path_segments()
        .and_then(|mut s| s.next())
        .filter(|s| !s.is_empty());
    match first {
        Some(seg) => format!("{}://{host}{port}/{seg}/***", url.scheme()),
        None => format!("{}://{host}{port}/***", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_scheme_host_and_first_segment() {
        let u = reqwest::Url::parse("https://hooks.slack.com/services/T000/B000/XXXX?x=1").unwrap();
        assert_eq!(redact_url(&u), "https://hooks.slack.com/services/***");
        let u = reqwest::Url::parse("http://user:pw@127.0.0.1:8080/").unwrap();
        assert_eq!(redact_url(&u), "http://127.0.0.1:8080/***");
    }

    #[test]
    fn resolution_reads_env_and_files_and_names_only_the_source() {
        let env: EnvLookup = Arc::new(|k| (k == "HOOK").then(|| " https://x/y/z \n".to_string()));
        let s = Source {
            what: "url",
            literal: None,
            env: Some("HOOK"),
            file: None,
        };
        assert_eq!(s.resolve(&env).unwrap().unwrap().expose(), "https://x/y/z");
        let missing = Source {
            env: Some("NOPE"),
            ..s
        };
        let err = missing.resolve(&env).unwrap_err();
        assert!(err.contains("NOPE") && err.contains("not set"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "not a url but secret-ish\n").unwrap();
        let file = Source {
            what: "url",
            literal: None,
            env: None,
            file: Some(&f),
        };
        let secret = file.resolve(&env).unwrap().unwrap();
        let err = parse_url(&secret, &file).unwrap_err();
        assert!(
            err.contains("url_file") && !err.contains("secret-ish"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_print_and_scrub_text() {
        let s = Secret::new("https://hooks.example/abc");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(
            s.scrub("error for url (https://hooks.example/abc)"),
            "error for url (***)"
        );
    }
}
