//! ingest's AWS sources end to end: real AWS SDK clients against a local
//! emulator (moto; see trailhound-testkit), and the Firehose endpoint over
//! real HTTP. One test binary, so the SDKs are linked once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is its failure report

mod anomaly;
mod common;
mod config;
mod cwl;
mod firehose;
mod s3;
