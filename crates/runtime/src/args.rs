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
    /// Serve non-loopback addresses without TLS and authentication anyway
    /// (refused otherwise); warns every minute and shows in health.
    #[arg(long, env = "TRAILHOUND_INSECURE", global = true)]
    pub insecure: bool,
    /// This process's certificate chain (PEM), over `[tls] cert`: one
    /// configuration file for every service, each with its own certificate.
    #[arg(long, env = "TRAILHOUND_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM), over `[tls] key`.
    #[arg(long, env = "TRAILHOUND_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
}

/// How a command-line client reaches a trailhound service: TLS (verifying
/// the server against --ca, presenting --cert/--key for mTLS) and a bearer
/// token.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientArgs {
    /// CA bundle (PEM) to verify the server with; set, the connection is
    /// TLS.
    #[arg(long, env = "TRAILHOUND_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require mTLS.
    #[arg(long, env = "TRAILHOUND_CERT", requires = "key", requires = "ca")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "TRAILHOUND_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Bearer token (an OIDC access/ID token or an API token).
    #[arg(long, env = "TRAILHOUND_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientArgs {
    /// The credentials these flags describe.
    pub fn security(&self) -> Result<crate::client::ClientSecurity, crate::tls::TlsError> {
        let tls = crate::tls::Tls::load(&crate::tls::TlsConfig {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            ..Default::default()
        })?;
        Ok(crate::client::ClientSecurity {
            tls,
            token: self
                .token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(crate::auth::Secret::new),
        })
    }
}

impl CommonArgs {
    /// The `[tls]` section with `--tls-cert` / `--tls-key` over its `cert`
    /// and `key`.
    pub fn tls_config(&self) -> Result<crate::tls::TlsConfig, crate::config::ConfigError> {
        let mut tls: crate::tls::TlsConfig = self.section("tls")?;
        if let Some(c) = &self.tls_cert {
            tls.cert = Some(c.clone());
        }
        if let Some(k) = &self.tls_key {
            tls.key = Some(k.clone());
        }
        Ok(tls)
    }

    /// `[section]` of the `--config` file, or its defaults without one.
    pub fn section<T: serde::de::DeserializeOwned + Default>(
        &self,
        section: &str,
    ) -> Result<T, crate::config::ConfigError> {
        crate::config::load_section(self.config.as_deref(), section)
    }

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
