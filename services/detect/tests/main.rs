//! detect's integration tests, one module per concern, built as one
//! test binary: each binary links the whole dependency tree, so one per
//! crate keeps the suite's build short.

mod engine;
mod fixtures;
mod grpc;
mod opensearch;
mod wal;
