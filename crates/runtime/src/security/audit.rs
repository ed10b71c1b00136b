//! The audit log: one record per call, written when its response ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Frame, SizeHint};
use serde::{Deserialize, Serialize};

use super::Security;
use super::limits::StreamPermit;

/// One line of the audit log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The gRPC method or HTTP path.
    pub method: String,
    /// The scope the data read was filtered by.
    pub scope: String,
    /// `ok`, or the gRPC code / HTTP status refused or failed with.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Security {
    /// Writes one audit record.
    pub(super) fn audit(&self, record: &AuditRecord) {
        let Some(w) = &self.audit else {
            return;
        };
        let Ok(line) = serde_json::to_string(record) else {
            return;
        };
        if let Ok(mut w) = w.lock() {
            use std::io::Write;
            let _ = writeln!(w, "{line}").and_then(|_| w.flush());
        }
    }
}

/// A response body that writes its call's audit record when it ends (a
/// stream's end is the call's), and holds the caller's stream slot.
pub(super) struct AuditBody {
    pub(super) inner: tonic::body::Body,
    pub(super) pending: Option<(Arc<Security>, AuditRecord)>,
    pub(super) grpc: bool,
    pub(super) code: Option<i32>,
    pub(super) http_status: http::StatusCode,
    pub(super) _permit: Option<StreamPermit>,
}

impl AuditBody {
    fn finish(&mut self, code: Option<i32>) {
        if let Some((security, mut record)) = self.pending.take() {
            record.outcome = if self.grpc {
                code_name(code.or(self.code).unwrap_or(1))
            } else if self.http_status.is_success() || self.http_status.is_redirection() {
                "ok".into()
            } else {
                self.http_status.as_u16().to_string()
            };
            security.audit(&record);
        }
    }
}

impl Drop for AuditBody {
    fn drop(&mut self) {
        // Dropped before the end: the client went away.
        self.finish(Some(if self.grpc { 1 } else { 0 }));
    }
}

impl http_body::Body for AuditBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    self.finish(crate::layer::grpc_status(t));
                }
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Ready(Some(Err(_))) => self.finish(Some(13)),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A gRPC status code as the audit log spells it ("ok", "permissiondenied").
pub(super) fn code_name(code: i32) -> String {
    if code == 0 {
        return "ok".into();
    }
    format!("{:?}", tonic::Code::from_i32(code)).to_lowercase()
}
