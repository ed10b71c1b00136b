//! The runtime every trailhound service shares, written once: configuration
//! loading, telemetry and W3C trace propagation, the gRPC server bootstrap
//! (health, reflection, timeouts, concurrency limits, graceful shutdown) and
//! client channels that carry trace context.
//!
//! Services own their logic; how they are configured, observed, served and
//! stopped is decided here so that all six behave the same.

pub mod args;
pub mod auth;
pub mod binary;
pub mod client;
pub mod config;
pub mod control;
pub mod drain;
pub mod jsonl;
pub mod layer;
pub mod metrics;
pub mod pipelined;
pub mod private;
pub mod retry;
pub mod rpc_metrics;
pub mod security;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use args::CommonArgs;
pub use binary::main;
pub use client::{ClientSecurity, TracedChannel, connect};
pub use config::{ConfigError, load_section};
pub use control::{RecoverError, RecoverHandle};
pub use security::Security;
pub use server::{ServerOptions, bind, serve, serve_one};
pub use shutdown::{shutdown_on_signal, within_deadline};
pub use stats::StatsHandle;
pub use telemetry::{TelemetryGuard, TelemetryOptions};
