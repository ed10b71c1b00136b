//! What can go wrong when health reaches another service, as one type:
//! the monitor tells "not serving" from "gone" by variant, not by reading
//! a message, and every message a reason or the dashboard shows comes from
//! one `Display`.

/// A failed probe, lever or fetch against a watched service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// The configured endpoint is not a URL a channel can be made for.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    /// Nothing answered at the address.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// It answered too late, or not at all within the deadline.
    #[error("no answer in time: {0}")]
    Timeout(String),
    /// health's own deadline for the whole probe passed (milliseconds).
    #[error("no answer within {0} ms")]
    Deadline(u128),
    /// It answered grpc.health with something other than SERVING.
    #[error("grpc.health reports {0}")]
    NotServing(String),
    /// It answered with any other gRPC error.
    #[error("{code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
    /// A service the dashboard reads from refused, or the request could
    /// not be made (the service named).
    #[error("{service}: {message}")]
    Refused {
        service: &'static str,
        message: String,
    },
    /// A service the dashboard reads from did not answer in time.
    #[error("{0} did not answer in time")]
    Late(&'static str),
    /// The part of health that would have asked is not configured.
    #[error("no {0} service configured")]
    NotConfigured(&'static str),
}

impl From<tonic::Status> for HealthError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unavailable => Self::Unreachable(s.message().to_string()),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Self::Timeout(s.message().to_string())
            }
            code => Self::Rpc {
                code,
                message: s.message().to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages reasons and the dashboard quote keep their old words.
    #[test]
    fn statuses_map_to_variants_with_their_messages() {
        let e = HealthError::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(e, HealthError::Unreachable("connection refused".into()));
        assert_eq!(e.to_string(), "unreachable: connection refused");
        let e = HealthError::from(tonic::Status::deadline_exceeded("slow"));
        assert_eq!(e.to_string(), "no answer in time: slow");
        let e = HealthError::from(tonic::Status::permission_denied("no role"));
        assert_eq!(e.to_string(), "PermissionDenied: no role");
        assert_eq!(
            HealthError::NotServing("NOT_SERVING".into()).to_string(),
            "grpc.health reports NOT_SERVING"
        );
        assert_eq!(
            HealthError::Deadline(1500).to_string(),
            "no answer within 1500 ms"
        );
    }
}
