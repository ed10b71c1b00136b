//! `trailhound probe [--service NAME] ADDR`: one `grpc.health.v1` Check,
//! exit 0 when SERVING and 1 otherwise. The images have no shell, curl or
//! grpc_health_probe, so Docker, compose and ECS health checks run the
//! binary itself; Kubernetes uses its native gRPC probe instead. With
//! `[tls]` in the configuration the probe speaks TLS (presenting the
//! process's certificate where the server requires one), as every other
//! client of the process does.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Clone, Debug, clap::Args)]
pub struct ProbeArgs {
    /// The service to check: a short name (ingest, enrich, detect,
    /// insights, notify, health) or a full gRPC service name; default the
    /// whole server.
    #[arg(long)]
    pub service: Option<String>,
    /// Longest the connection and the check may take.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The server: host:port, or http://host:port.
    pub addr: String,
}

/// The gRPC service name a `--service` value means.
fn service_name(name: &str) -> String {
    match name {
        "ingest" => "trailhound.ingest.v1.IngestService",
        "enrich" => "trailhound.enrich.v1.EnrichService",
        "detect" => "trailhound.detect.v1.DetectService",
        "insights" => "trailhound.insights.v1.InsightsService",
        "notify" => "trailhound.notify.v1.NotifyService",
        "health" => "trailhound.health.v1.HealthService",
        other => other,
    }
    .to_string()
}

/// The endpoint URI for `addr`. Whether the connection is TLS is the
/// configuration's `[tls]`, not the scheme: `https://` needs it.
fn endpoint_uri(addr: &str, tls: bool) -> anyhow::Result<String> {
    if let Some(rest) = addr.strip_prefix("https://") {
        if !tls {
            anyhow::bail!(
                "{addr}: https needs [tls] in the configuration (ca, and cert and key where the server requires a client certificate)"
            );
        }
        return Ok(format!("http://{rest}"));
    }
    if addr.starts_with("http://") {
        return Ok(addr.to_string());
    }
    if addr.contains("://") {
        anyhow::bail!("{addr}: not host:port or an http:// URL");
    }
    Ok(format!("http://{addr}"))
}

/// Checks once; `Ok` only when the answer is SERVING. `common` holds the
/// process's configuration, for its `[tls]` (and `--tls-cert`/`--tls-key`).
pub async fn run(args: &ProbeArgs, common: &trailhound_runtime::CommonArgs) -> anyhow::Result<()> {
    let tls_cfg = common.tls_config()?;
    let tls = trailhound_runtime::tls::Tls::load(&tls_cfg)?;
    let security = trailhound_runtime::ClientSecurity { tls, token: None };
    let uri = endpoint_uri(&args.addr, security.tls.is_some())?;
    let service = args
        .service
        .as_deref()
        .map(service_name)
        .unwrap_or_default();
    let shown = if service.is_empty() {
        args.addr.clone()
    } else {
        format!("{} ({service})", args.addr)
    };
    let check = async {
        let endpoint = tonic::transport::Endpoint::from_shared(uri)?
            .connect_timeout(args.timeout)
            .timeout(args.timeout);
        let channel = trailhound_runtime::client::channel(&endpoint, &security);
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.clone(),
            })
            .await
            .map_err(|s| {
                // The channel connects on the first call: a refused or
                // unreachable server shows up here.
                if s.code() == tonic::Code::Unavailable {
                    anyhow::anyhow!("{shown}: cannot connect: {}", s.message())
                } else {
                    anyhow::anyhow!("{shown}: {:?}: {}", s.code(), s.message())
                }
            })?;
        Ok::<_, anyhow::Error>(answer.into_inner().status)
    };
    let status = tokio::time::timeout(args.timeout, check)
        .await
        .map_err(|_| anyhow::anyhow!("{shown}: no answer within {:?}", args.timeout))??;
    let name = ServingStatus::try_from(status)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN");
    if status == ServingStatus::Serving as i32 {
        println!("{shown}: {name}");
        Ok(())
    } else {
        anyhow::bail!("{shown}: {name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names() {
        assert_eq!(
            endpoint_uri("detect:50053", false).unwrap(),
            "http://detect:50053"
        );
        assert_eq!(
            endpoint_uri("http://127.0.0.1:1", false).unwrap(),
            "http://127.0.0.1:1"
        );
        let e = endpoint_uri("https://x:1", false).unwrap_err().to_string();
        assert!(e.contains("[tls]"), "{e}");
        assert_eq!(endpoint_uri("https://x:1", true).unwrap(), "http://x:1");
        assert!(endpoint_uri("ftp://x:1", false).is_err());
        assert_eq!(service_name("detect"), "trailhound.detect.v1.DetectService");
        assert_eq!(service_name("grpc.other.Thing"), "grpc.other.Thing");
    }
}
