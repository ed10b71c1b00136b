//! The one mapping from domain failures to gRPC status codes.

use tonic::Status;

/// INVALID_ARGUMENT naming the field and the reason.
pub fn invalid(field: &str, reason: &str) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// A downstream refused work: UNAVAILABLE when retrying may help (the caller
/// backs off and retries), INTERNAL otherwise.
pub fn downstream(message: String, retryable: bool) -> Status {
    if retryable {
        Status::unavailable(message)
    } else {
        Status::internal(message)
    }
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
