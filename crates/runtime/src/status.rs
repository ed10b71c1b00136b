//! The one mapping from domain failures to gRPC status codes.

use tonic::Status;

/// The small vocabulary every service's error enum speaks (quickwit's
/// `ServiceError` pattern): a service says what kind of failure it had,
/// and [`of`] is the one place that turns that kind into a gRPC code, so a
/// refusal means the same thing on every port and to every client's retry
/// rule ([`is_retryable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is wrong; the message names the field and the reason.
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// Try again later: a dependency is down or overloaded.
    Unavailable,
    /// The request is fine but the service is not set up for it.
    FailedPrecondition,
    /// A fault of the service itself; logged where it is mapped.
    Internal,
}

/// A service's error, as its gRPC adapter maps it.
pub trait ServiceError: std::fmt::Display {
    fn error_code(&self) -> ErrorCode;
    /// What the status says; the error's `Display` unless the service
    /// words it for the wire (INVALID_ARGUMENT as `field: reason`).
    fn status_message(&self) -> String {
        self.to_string()
    }
}

/// The status for a service's error.
pub fn of(e: &(impl ServiceError + ?Sized)) -> Status {
    let message = e.status_message();
    match e.error_code() {
        ErrorCode::InvalidArgument => Status::invalid_argument(message),
        ErrorCode::NotFound => Status::not_found(message),
        ErrorCode::AlreadyExists => Status::already_exists(message),
        ErrorCode::Unavailable => Status::unavailable(message),
        ErrorCode::FailedPrecondition => Status::failed_precondition(message),
        ErrorCode::Internal => {
            tracing::error!(error = %message, "request failed");
            Status::internal(message)
        }
    }
}

/// A downstream that refused a batch: retryable refusals are UNAVAILABLE
/// (the caller backs off and retries), the rest INTERNAL.
impl ServiceError for trailhound_core::pipeline::SinkError {
    fn error_code(&self) -> ErrorCode {
        if self.retryable {
            ErrorCode::Unavailable
        } else {
            ErrorCode::Internal
        }
    }
}

/// INVALID_ARGUMENT naming the field and the reason.
pub fn invalid(field: &str, reason: &str) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// The other way: a call to `downstream` failed with `s`, as a sink error
/// (retryable when the code is).
pub fn to_sink_error(downstream: &str, s: &Status) -> trailhound_core::pipeline::SinkError {
    trailhound_core::pipeline::SinkError {
        downstream: downstream.into(),
        message: format!("{:?}: {}", s.code(), s.message()),
        retryable: is_retryable(s.code()),
    }
}

/// Whether a client should retry a call that failed with this code.
pub fn is_retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    match code {
        Unavailable | ResourceExhausted | Aborted | DeadlineExceeded | Unknown => true,
        Ok | Cancelled | InvalidArgument | NotFound | AlreadyExists | PermissionDenied
        | FailedPrecondition | OutOfRange | Unimplemented | Internal | DataLoss
        | Unauthenticated => false,
    }
}

/// Checks of request fields that several services' adapters make, each
/// failing as INVALID_ARGUMENT naming the field, so the same mistake reads
/// the same on every port.
pub mod check {
    use chrono::{DateTime, Utc};
    use tonic::Status;
    use trailhound_core::Environment;
    use trailhound_proto::prost_types::Timestamp;

    use super::invalid;

    /// `field` must not be empty.
    pub fn not_empty(field: &str, value: &str) -> Result<(), Status> {
        if value.is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
        Ok(())
    }

    /// An optional account filter: empty, or a 12-digit account id.
    pub fn account_filter(value: &str) -> Result<(), Status> {
        if value.is_empty() {
            return Ok(());
        }
        account_id(value)
    }

    /// A 12-digit account id.
    pub fn account_id(value: &str) -> Result<(), Status> {
        if !trailhound_core::is_account_id(value) {
            return Err(invalid("account_id", "must be 12 digits"));
        }
        Ok(())
    }

    /// An optional environment filter: empty is none.
    pub fn environment(value: &str) -> Result<Option<Environment>, Status> {
        if value.is_empty() {
            return Ok(None);
        }
        value
            .parse::<Environment>()
            .map(Some)
            .map_err(|e| invalid("environment", &e))
    }

    /// A count the caller may ask for, up to `max`.
    pub fn at_most(field: &str, value: u32, max: u32) -> Result<(), Status> {
        if value > max {
            return Err(invalid(field, &format!("must be at most {max}")));
        }
        Ok(())
    }

    /// The page size a request asked for: 0 means the default, 100.
    pub fn page_size(value: u32) -> usize {
        if value == 0 { 100 } else { value as usize }
    }

    /// An optional time that must be representable.
    pub fn time(field: &str, t: Option<&Timestamp>) -> Result<Option<DateTime<Utc>>, Status> {
        t.map(|t| {
            trailhound_core::convert::from_timestamp(t)
                .ok_or_else(|| invalid(field, "out of range"))
        })
        .transpose()
    }
}
