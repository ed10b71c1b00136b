//! enrich's integration tests, one module per concern, built as one
//! test binary: each binary links the whole dependency tree, so one per
//! crate keeps the suite's build short.

mod common;
mod dynamodb;
mod faults;
mod org_command;
mod organizations;
