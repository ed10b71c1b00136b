//! Flags every service binary shares. Each has a `TRAILHOUND_*` variable.

use std::path::PathBuf;

use crate::telemetry::TelemetryOptions;

#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// TOML configuration file; each service reads its own [section].
    #[arg(long, env = "TRAILHOUND_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for embedded stores (caches, anomalies, checkpoints,
    /// dead letters).
    #[arg(
        long,
        env = "TRAILHOUND_DATA_DIR",
        default_value = "trailhound-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Log filter, e.g. info or trailhound_detect=debug [default: info;
    /// for `demo`, warnings only, since it prints what it finds itself].
    #[arg(long, env = "TRAILHOUND_LOG", global = true)]
    pub log: Option<String>,
    /// Log JSON lines instead of text.
    #[arg(long, env = "TRAILHOUND_LOG_JSON", global = true)]
    pub log_json: bool,
    /// Export traces and metrics over OTLP/gRPC to this endpoint, e.g.
    /// http://127.0.0.1:4317 (off when unset; OTEL_EXPORTER_OTLP_ENDPOINT
    /// is honoured too).
    #[arg(long, env = "TRAILHOUND_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// Longest a service may take to stop after SIGTERM or Ctrl-C, e.g.
    /// 20s: connections drain for three quarters of it, the rest is for
    /// final work; anything unfinished then is abandoned. Keep it below
    /// the orchestrator's grace period (Kubernetes: 30 s).
    #[arg(
        long,
        env = "TRAILHOUND_SHUTDOWN_DEADLINE",
        default_value = "20s",
        value_parser = humantime::parse_duration,
        global = true
    )]
    pub shutdown_deadline: std::time::Duration,
}

impl CommonArgs {
    /// Telemetry for `service_name`, logging at `info` unless `--log` says
    /// otherwise.
    pub fn telemetry(&self, service_name: &str) -> TelemetryOptions {
        self.telemetry_or(service_name, "info")
    }

    /// Telemetry for `service_name`, with `default_filter` where `--log`
    /// is not given.
    pub fn telemetry_or(&self, service_name: &str, default_filter: &str) -> TelemetryOptions {
        TelemetryOptions {
            service_name: service_name.to_string(),
            log_filter: self
                .log
                .clone()
                .unwrap_or_else(|| default_filter.to_string()),
            json_logs: self.log_json,
            otlp_endpoint: self.otlp_endpoint.clone(),
        }
    }
}
