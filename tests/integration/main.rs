//! End-to-end tests: the real `trailhound` binary started as separate
//! processes talking gRPC over loopback, the real grpcurl against them, and
//! trace context crossing real gRPC hops.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

mod alerts;
mod aws;
mod compose;
mod dashboard;
mod demo;
mod grpcurl;
mod harness;
mod health;
mod otlp;
mod paths;
mod pipeline;
mod quality;
mod robustness;
mod security;
mod shards;
mod shutdown;
mod trace;
