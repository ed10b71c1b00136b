//! Configuration files. Precedence, highest first: command-line flags,
//! `TRAILHOUND_*` environment variables (both through clap), the TOML file
//! given with `--config`, then built-in defaults. One file configures every
//! service: each reads its own `[section]`. Unknown keys are rejected, so a
//! typo fails at start-up instead of silently keeping a default.

use std::path::Path;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("config file {path}, section [{section}]: {source}")]
    Section {
        path: String,
        section: String,
        source: Box<toml::de::Error>,
    },
}

/// Reads `[section]` of a TOML file into `T`, or `T::default()` when there
/// is no file or no such section.
pub fn load_section<T: DeserializeOwned + Default>(
    path: Option<&Path>,
    section: &str,
) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: p.clone(),
        source,
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: p.clone(),
        source: Box::new(e),
    })?;
    match table.remove(section) {
        None => Ok(T::default()),
        Some(value) => value.try_into().map_err(|e| ConfigError::Section {
            path: p,
            section: section.to_string(),
            source: Box::new(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        port: u16,
        name: String,
    }

    #[test]
    fn reads_a_section_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "[demo]\nport = 7\n[other]\nx = 1\n").unwrap();
        let d: Demo = load_section(Some(&f), "demo").unwrap();
        assert_eq!(
            d,
            Demo {
                port: 7,
                name: String::new()
            }
        );
        let missing: Demo = load_section(Some(&f), "nothing").unwrap();
        assert_eq!(missing, Demo::default());

        std::fs::write(&f, "[demo]\nprot = 7\n").unwrap();
        let err = load_section::<Demo>(Some(&f), "demo")
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot") && err.contains("[demo]"), "{err}");
    }
}
