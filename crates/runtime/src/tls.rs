//! TLS for every listener and every client, from one `[tls]` section.
//!
//! One rustls stack (aws-lc-rs) serves all six ports — gRPC and the HTTP
//! routes that share them — and ingest's Firehose endpoint, and connects
//! every client. With `client_ca` a server requires a client certificate
//! signed by it, and the verified certificate's names become the caller's
//! transport identity ([`PeerInfo`]), which [`crate::auth`] maps to a
//! service identity. The handshake runs in its own task with a deadline, so
//! a slow or plaintext client never holds up the accept loop.
//!
//! Certificates are re-read when their files change (polled every
//! `reload_interval`): new connections use the new chain, open ones keep
//! theirs, and a half-written or broken file keeps the previous one with a
//! warning, so rotation (cert-manager, a mounted secret) needs no restart.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[tls]` section, shared by every service of the process.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// This process's certificate chain (PEM); with `key`, every listener
    /// serves TLS.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) the services this process calls are verified
    /// against; set, every client connects over TLS (`http://` endpoints
    /// included) and presents `cert` as its client certificate.
    pub ca: Option<PathBuf>,
    /// CA bundle (PEM) client certificates are verified against; set,
    /// every port of this process requires one (mTLS).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: also accept connections without a client
    /// certificate (callers must then present a bearer token). For a port
    /// browsers reach directly, such as health's dashboard.
    pub client_cert_optional: bool,
    /// How often certificate files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            ca: None,
            client_ca: None,
            client_cert_optional: false,
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    /// Whether the section configures anything.
    pub fn is_enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some() || self.client_ca.is_some()
    }

    /// Every file the configuration names, for change detection.
    fn files(&self) -> Vec<&Path> {
        [&self.cert, &self.key, &self.ca, &self.client_ca]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[tls] {0}")]
    Config(String),
    #[error("failed to read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} holds no usable {what} (PEM expected)")]
    Pem { path: String, what: &'static str },
    #[error("[tls] {0}")]
    Rustls(#[from] rustls::Error),
    #[error("[tls] client_ca: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The loaded configuration, swapped whole when files change.
#[derive(Debug)]
struct Loaded {
    server: Option<Arc<ServerConfig>>,
    /// The server without a client-certificate requirement (ingest's
    /// Firehose endpoint: Firehose presents none; its access key is the
    /// credential).
    server_no_client_auth: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
}

/// TLS state of the process: what listeners accept with and clients
/// connect with, reloaded when the files change.
#[derive(Debug)]
pub struct Tls {
    config: TlsConfig,
    loaded: RwLock<Arc<Loaded>>,
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Pem {
        path: path.display().to_string(),
        what: "private key",
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store.add(c)?;
    }
    Ok(Arc::new(store))
}

fn stamp(files: &[&Path]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

impl Tls {
    /// Loads the certificates `config` names, or `None` when the section is
    /// empty.
    pub fn load(config: &TlsConfig) -> Result<Option<Arc<Self>>, TlsError> {
        if !config.is_enabled() {
            return Ok(None);
        }
        if config.cert.is_some() != config.key.is_some() {
            return Err(TlsError::Config(
                "cert and key go together: set both or neither".into(),
            ));
        }
        if config.client_ca.is_some() && config.cert.is_none() {
            return Err(TlsError::Config(
                "client_ca needs cert and key: a server that asks for client certificates must serve TLS itself".into(),
            ));
        }
        let stamp_now = stamp(&config.files());
        let loaded = Self::build(config)?;
        Ok(Some(Arc::new(Self {
            config: config.clone(),
            loaded: RwLock::new(Arc::new(loaded)),
            stamp: Mutex::new(stamp_now),
        })))
    }

    fn build(config: &TlsConfig) -> Result<Loaded, TlsError> {
        let identity = match (&config.cert, &config.key) {
            (Some(c), Some(k)) => Some((certs(c)?, key(k)?)),
            _ => None,
        };
        let alpn = || vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let (server, server_no_client_auth) = match &identity {
            None => (None, None),
            Some((chain, key)) => {
                let builder = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()?;
                let plain = {
                    let mut c = builder
                        .clone()
                        .with_no_client_auth()
                        .with_single_cert(chain.clone(), key.clone_key())?;
                    c.alpn_protocols = alpn();
                    Arc::new(c)
                };
                let server = match &config.client_ca {
                    None => plain.clone(),
                    Some(ca) => {
                        let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                            roots(ca)?,
                            provider(),
                        );
                        if config.client_cert_optional {
                            v = v.allow_unauthenticated();
                        }
                        let mut c = builder
                            .with_client_cert_verifier(v.build()?)
                            .with_single_cert(chain.clone(), key.clone_key())?;
                        c.alpn_protocols = alpn();
                        Arc::new(c)
                    }
                };
                (Some(server), Some(plain))
            }
        };
        let client = match &config.ca {
            None => None,
            Some(ca) => {
                let builder = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots(ca)?);
                let mut c = match identity {
                    Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
                    None => builder.with_no_client_auth(),
                };
                c.alpn_protocols = vec![b"h2".to_vec()];
                Some(Arc::new(c))
            }
        };
        Ok(Loaded {
            server,
            server_no_client_auth,
            client,
        })
    }

    fn current(&self) -> Arc<Loaded> {
        match self.loaded.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// What listeners accept with, if this process serves TLS.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.current().server.clone()
    }

    /// Clients' configuration, if a CA to verify servers is configured.
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.current().client.clone()
    }

    /// The `[tls]` section this was loaded from.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// Whether listeners serve TLS.
    pub fn serves_tls(&self) -> bool {
        self.config.cert.is_some()
    }

    /// Whether every caller must present a client certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.config.client_ca.is_some() && !self.config.client_cert_optional
    }

    /// Re-reads the files if any changed since the last load; returns
    /// whether the configuration was replaced. A failed reload keeps the
    /// previous configuration (and is retried on the next change).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.config.files());
        {
            let Ok(mut last) = self.stamp.lock() else {
                return Ok(false);
            };
            if *last == now {
                return Ok(false);
            }
            *last = now;
        }
        let loaded = Self::build(&self.config)?;
        if let Ok(mut g) = self.loaded.write() {
            *g = Arc::new(loaded);
        }
        Ok(true)
    }

    /// Polls the files every `reload_interval` until `shutdown`.
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(tls.config.reload_interval.max(Duration::from_millis(100)));
            tick.tick().await;
            while crate::shutdown::next_tick(&mut tick, &shutdown).await {
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!("tls certificates reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "tls certificates changed but could not be loaded; keeping the previous ones")
                    }
                }
            }
        });
    }

    /// The server configuration for an endpoint whose callers present no
    /// client certificate by design (Firehose).
    pub fn server_config_without_client_auth(&self) -> Option<Arc<ServerConfig>> {
        self.current().server_no_client_auth.clone()
    }
}

/// Who is on the other end of a connection, as the transport knows it.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// DNS and URI names of the client certificate the handshake verified
    /// (empty without mTLS).
    pub certificate_names: Arc<[String]>,
}

/// An accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream, PeerInfo),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, PeerInfo),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Plain(_, p) => write!(f, "Conn::Plain({:?})", p.remote),
            Conn::Tls(_, p) => write!(f, "Conn::Tls({:?})", p.remote),
        }
    }
}

impl Conn {
    pub fn peer(&self) -> &PeerInfo {
        match self {
            Conn::Plain(_, p) | Conn::Tls(_, p) => p,
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer().clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// The names a verified client certificate carries.
fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(c) => c
            .valid_dns_names()
            .chain(c.valid_uri_names())
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Which server configuration a listener hands its handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// As `[tls]` says (mTLS with `client_ca`).
    AsConfigured,
    /// Never ask for a client certificate (Firehose).
    None,
}

/// Accepts connections on `listener` and hands them over as [`Conn`]s,
/// after a TLS handshake when `tls` serves it. Stops when the receiver is
/// dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    client_auth: ClientAuth,
) -> tokio::sync::mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (stream, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without it, Nagle and delayed ACKs stall each response ~40 ms.
            let _ = stream.set_nodelay(true);
            let config = tls.as_ref().and_then(|t| match client_auth {
                ClientAuth::AsConfigured => t.server_config(),
                ClientAuth::None => t.server_config_without_client_auth(),
            });
            let peer = PeerInfo {
                remote: Some(remote),
                certificate_names: Arc::from(Vec::new()),
            };
            let Some(config) = config else {
                if tx.send(Ok(Conn::Plain(stream, peer))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let names = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(certificate_names)
                            .unwrap_or_default();
                        let peer = PeerInfo {
                            remote: Some(remote),
                            certificate_names: Arc::from(names),
                        };
                        let _ = tx.send(Ok(Conn::Tls(Box::new(s), peer))).await;
                    }
                    // Plaintext, a certificate from another CA, a scan:
                    // the caller sees the handshake fail; nothing to serve.
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "tls handshake refused"),
                    Err(_) => tracing::debug!(%remote, "tls handshake timed out"),
                }
            });
        }
    });
    rx
}

/// [`incoming`] as an axum listener, for HTTP-only endpoints.
pub struct Listener {
    rx: tokio::sync::mpsc::Receiver<io::Result<Conn>>,
    addr: SocketAddr,
}

impl Listener {
    pub fn new(
        listener: TcpListener,
        tls: Option<Arc<Tls>>,
        client_auth: ClientAuth,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        Ok(Self {
            rx: incoming(listener, tls, client_auth),
            addr,
        })
    }
}

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = SocketAddr;
    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.rx.recv().await {
                Some(Ok(c)) => {
                    let a = c.peer().remote.unwrap_or(self.addr);
                    return (c, a);
                }
                Some(Err(_)) => continue,
                // The accept task ended: nothing will come again.
                None => std::future::pending::<()>().await,
            }
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Connects `uri`'s host over TCP, then TLS when `config` is set, verifying
/// the server's certificate for the URI's host name.
pub async fn connect_io(uri: http::Uri, config: Option<Arc<ClientConfig>>) -> io::Result<ClientIo> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "endpoint has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    match config {
        None => Ok(ClientIo::Plain(tcp)),
        Some(config) => {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let s = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(ClientIo::Tls(Box::new(s)))
        }
    }
}

/// A client connection, plain or TLS.
pub enum ClientIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
