//! opensearch's integration tests, one module per concern, built as one
//! test binary: each binary links the whole dependency tree, so one per
//! crate keeps the suite's build short.

mod ad_plugin;
mod common;
mod osmem;
mod real_cluster;
mod sigv4;
