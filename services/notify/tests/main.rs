//! notify's integration tests, one module per concern, built as one
//! test binary: each binary links the whole dependency tree, so one per
//! crate keeps the suite's build short.

mod channels;
mod common;
mod delivery;
mod grpc;
mod recover;
mod secrets;
mod sns;
// The fixtures unit tests use too; not part of the library.
#[path = "../src/testing.rs"]
mod testing;
