//! The log channel: each message as a tracing event (target
//! `trailhound::alert`; WARN for high and critical, INFO otherwise) and,
//! when `jsonl_path` is set, as one JSON line (the webhook body) appended to
//! that file. Always available, so an alert is never only in a webhook.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Channel, Payload, SendError, payload};
use crate::config::ChannelKind;
use crate::render::{Message, json};

pub struct LogChannel {
    name: String,
    file: Option<(PathBuf, Mutex<File>)>,
}

impl LogChannel {
    pub fn open(name: &str, jsonl: Option<&Path>) -> Result<Self, String> {
        let file = match jsonl {
            None => None,
            Some(p) => {
                let f = trailhound_runtime::private::append(p)
                    .map_err(|e| format!("failed to open jsonl_path {}: {e}", p.display()))?;
                Some((p.to_path_buf(), Mutex::new(f)))
            }
        };
        Ok(Self {
            name: name.to_string(),
            file,
        })
    }
}

#[async_trait]
impl Channel for LogChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Log
    }

    fn target(&self) -> String {
        match &self.file {
            Some((p, _)) => format!("log + {}", p.display()),
            None => "log".into(),
        }
    }

    fn render(&self, m: &Message<'_>) -> Payload {
        payload(m, json::render(m))
    }

    async fn send(&self, p: &Payload) -> Result<(), SendError> {
        let insight = &p.body["insight"];
        let severity = insight["severity"].as_str().unwrap_or("");
        let (insight_id, incident_id) = (
            insight["id"].as_str().unwrap_or(""),
            insight["incident_id"].as_str().unwrap_or(""),
        );
        if matches!(severity, "high" | "critical") {
            tracing::warn!(target: "trailhound::alert", channel = %self.name, event = p.event, severity, insight_id, incident_id, "{}", p.summary);
        } else {
            tracing::info!(target: "trailhound::alert", channel = %self.name, event = p.event, severity, insight_id, incident_id, "{}", p.summary);
        }
        if let Some((path, file)) = &self.file {
            let mut line = serde_json::to_vec(&p.body)
                .map_err(|e| SendError::permanent(format!("failed to encode the message: {e}")))?;
            line.push(b'\n');
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            f.write_all(&line).and_then(|_| f.flush()).map_err(|e| {
                SendError::retryable(format!("failed to append to {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }
}
