//! `trailhound certs --out DIR`: a development PKI for compose, Kubernetes
//! and tests — a CA and a certificate per service plus one for tools — so
//! TLS and mTLS are one command away. Production uses its own PKI
//! (cert-manager, ACM Private CA); nothing here is special to trailhound
//! beyond the names: the SAN is what identifies a service.

use std::path::{Path, PathBuf};

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Clone, Debug, clap::Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, ca-key.pem and NAME.pem, NAME-key.pem.
    #[arg(long)]
    pub out: PathBuf,
    /// More names (DNS or IP) every certificate carries, comma-separated,
    /// e.g. the hosts the services are reached at.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Leave DIR as it is when it already holds ca.pem: for a one-shot
    /// container that runs on every `docker-compose up`, so restarts keep
    /// the PKI the running services trust.
    #[arg(long)]
    pub if_missing: bool,
}

/// The certificates written besides the CA: the six services and `client`
/// (for grpcurl, `trailhound push` and other tools).
pub const NAMES: [&str; 7] = [
    "ingest", "enrich", "detect", "insights", "notify", "health", "client",
];

fn ymd(t: chrono::DateTime<chrono::Utc>) -> (i32, u8, u8) {
    (t.year(), t.month() as u8, t.day() as u8)
}

fn write(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    std::fs::write(path, contents)
        .map_err(|e| anyhow::anyhow!("failed to write {}: {e}", path.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| anyhow::anyhow!("failed to restrict {}: {e}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    if args.if_missing && args.out.join("ca.pem").exists() {
        eprintln!("{} already holds a CA: left as it is", args.out.display());
        return Ok(());
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("failed to create {}: {e}", args.out.display()))?;
    let now = chrono::Utc::now();
    let (y, m, d) = ymd(now - chrono::Duration::days(1));
    let not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(now + chrono::Duration::days(i64::from(args.days.max(1))));
    let not_after = rcgen::date_time_ymd(y, m, d);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "trailhound development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    write(&args.out.join("ca.pem"), &ca_cert.pem(), false)?;
    write(&args.out.join("ca-key.pem"), &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    for name in NAMES {
        let mut sans = vec![name.to_string(), "localhost".into(), "127.0.0.1".into()];
        sans.extend(args.hosts.iter().filter(|h| !h.is_empty()).cloned());
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every service is a server to its callers and a client of the
        // next hop.
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = not_before;
        p.not_after = not_after;
        let cert = p.signed_by(&key, &issuer)?;
        write(&args.out.join(format!("{name}.pem")), &cert.pem(), false)?;
        write(
            &args.out.join(format!("{name}-key.pem")),
            &key.serialize_pem(),
            true,
        )?;
    }
    eprintln!(
        "wrote a development CA and certificates for {} to {} (valid {} days)",
        NAMES.join(", "),
        args.out.display(),
        args.days
    );
    Ok(())
}
