//! TLS for the node's listeners and for the client: PEM files into rustls
//! types, the server certificate that is swapped while serving (on SIGHUP or
//! when its files change), and the accept loop that completes handshakes off
//! the listener. Knows rustls and tokio, not tonic or axum: `server` hands the
//! accepted streams to them, `client` hands the trust roots to tonic.
//!
//! TLS 1.2 and 1.3 only, always with the aws-lc-rs provider (the crate's one
//! crypto library), whatever provider another crate installed as the
//! process default.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

/// ALPN for gRPC (HTTP/2 only).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for the metrics listener (axum serves HTTP/1.1 there).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A peer that has not finished its handshake by then is dropped, so a
/// client that connects and stays silent does not hold a slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress on one listener; the accept loop waits for a
/// slot beyond this (each slot frees within `HANDSHAKE_TIMEOUT`).
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// How often the certificate files' modification times are compared.
pub const RELOAD_POLL: Duration = Duration::from_secs(5);

/// Why a certificate, key or CA file cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid PEM", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    /// The key is of an unsupported kind, or is not the certificate's key.
    #[error("the key in {} cannot serve the certificate in {}", key.display(), cert.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{} holds a certificate that cannot be a trust anchor", path.display())]
    TrustAnchor {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot verify client certificates against {}", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("the TLS configuration is not supported")]
    Config(#[source] rustls::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// The provider every TLS configuration of the crate is built with.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => Error::NoKey {
            path: path.to_owned(),
        },
        source => Error::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

/// A PEM certificate chain file, checked to hold at least one certificate.
pub fn read_certificate_pem(path: &Path) -> Result<Vec<u8>> {
    let pem = read(path)?;
    parse_certs(path, &pem)?;
    Ok(pem)
}

/// A PEM private key file, checked to hold a key. The bytes are zeroized
/// when dropped.
pub fn read_key_pem(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let pem = Zeroizing::new(read(path)?);
    parse_key(path, &pem)?;
    Ok(pem)
}

/// Every certificate of a PEM file as a trust anchor; a certificate that
/// cannot be one is an error rather than silently skipped.
fn root_store(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(path, &read(path)?)? {
        roots.add(cert).map_err(|source| Error::TrustAnchor {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// What a client trusts for an `https://` server: the system's roots (read
/// once per process; none at all is fine when `extra_ca` is given) and
/// every certificate in `extra_ca`.
pub fn client_trust_anchors(extra_ca: Option<&Path>) -> Result<Vec<TrustAnchor<'static>>> {
    static SYSTEM: OnceLock<Vec<TrustAnchor<'static>>> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "skipping part of the system's CA certificates");
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        roots.roots
    });
    let mut anchors = system.clone();
    if let Some(path) = extra_ca {
        anchors.extend(root_store(path)?.roots);
    }
    Ok(anchors)
}

/// The files a TLS listener is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA certificates: when given, every client must present a
    /// certificate issued by one of them (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// A node's TLS identity: the certificate it serves, swappable while
/// serving, and the client verification it requires. One per node, shared
/// by its listeners (each builds its acceptor with its own ALPN).
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: Arc<CurrentCert>,
    config: ServerConfig,
}

/// The certificate handed to every new handshake. Reading it is one atomic
/// load; a reload swaps it, connections already established keep theirs.
#[derive(Debug)]
struct CurrentCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl ServerTls {
    /// Reads and checks the files: a certificate, the key that belongs to
    /// it and, for mTLS, the client CA.
    pub fn load(files: TlsFiles) -> Result<Self> {
        let current = Arc::new(CurrentCert(ArcSwap::from_pointee(certified_key(&files)?)));
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(Error::Config)?;
        let builder = match &files.client_ca {
            Some(path) => {
                let verifier: Arc<dyn ClientCertVerifier> =
                    WebPkiClientVerifier::builder_with_provider(
                        Arc::new(root_store(path)?),
                        provider(),
                    )
                    .build()
                    .map_err(|source| Error::ClientCa {
                        path: path.clone(),
                        source,
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_cert_resolver(current.clone());
        Ok(Self {
            files,
            current,
            config,
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the certificate and key again and serves them to every new
    /// handshake. On any error the current certificate stays.
    pub fn reload(&self) -> Result<()> {
        self.current.0.store(Arc::new(certified_key(&self.files)?));
        Ok(())
    }

    /// SHA-256 of the leaf certificate served now, in hex (what
    /// `openssl x509 -noout -fingerprint -sha256` prints, without colons).
    pub fn fingerprint(&self) -> String {
        let key = self.current.0.load();
        key.cert
            .first()
            .map(|leaf| hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf)))
            .unwrap_or_default()
    }

    /// An acceptor offering `alpn` (the first the client also offers wins).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> TlsAcceptor {
        let mut config = self.config.clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }
}

fn certified_key(files: &TlsFiles) -> Result<CertifiedKey> {
    let certs = parse_certs(&files.cert, &read(&files.cert)?)?;
    let key_pem = read_key_pem(&files.key)?;
    let key = parse_key(&files.key, &key_pem)?;
    // Also checks that the key is the certificate's key.
    CertifiedKey::from_der(certs, key, &provider()).map_err(|source| Error::Identity {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })
}

/// Reloads `tls` on SIGHUP and whenever the certificate or key file's
/// modification time or size changes (compared every `poll`). A file that
/// cannot be used is logged and the current certificate kept; the next
/// change is tried again. The future runs until dropped.
pub fn watch(tls: Arc<ServerTls>, poll: Duration) -> impl Future<Output = ()> + Send {
    // Installed now rather than when the future first runs: once the node
    // serves, a SIGHUP must reload, never take the default action (exit).
    let mut hangup = Hangup::new();
    async move {
        let mut seen = stamps(tls.files());
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                () = hangup.recv() => "SIGHUP",
                _ = tick.tick() => {
                    if stamps(tls.files()) == seen {
                        continue;
                    }
                    "file change"
                }
            };
            seen = stamps(tls.files());
            match tls.reload() {
                Ok(()) => tracing::info!(
                    trigger,
                    sha256 = %tls.fingerprint(),
                    "TLS certificate reloaded"
                ),
                Err(e) => tracing::warn!(
                    trigger,
                    error = %error_chain(&e),
                    sha256 = %tls.fingerprint(),
                    "TLS certificate not reloaded; still serving the current one"
                ),
            }
        }
    }
}

/// The certificate and key files' modification time and size (`None` for
/// a file that cannot be read now, e.g. mid-replacement).
fn stamps(files: &TlsFiles) -> [Option<(SystemTime, u64)>; 2] {
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    [stamp(&files.cert), stamp(&files.key)]
}

/// An error and its causes on one line, for a log field.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// SIGHUP where there is one; elsewhere (or if the handler cannot be
/// installed) a signal that never comes, leaving the file poll.
struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangup {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self(
                signal(SignalKind::hangup())
                    .inspect_err(|e| tracing::warn!(error = %e, "cannot watch SIGHUP; TLS reload only on file change"))
                    .ok(),
            )
        }
        #[cfg(not(unix))]
        Self()
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(sig) = &mut self.0
            && sig.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// A TCP listener whose connections come out TLS-established. Handshakes
/// run in tasks of their own, each bounded by `HANDSHAKE_TIMEOUT`, so a
/// slow or silent peer delays nobody else; failed handshakes are logged and
/// never reach the server. Dropping it stops accepting and closes the
/// listening socket.
#[derive(Debug)]
pub struct TlsIncoming {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsIncoming {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(16);
        let accept_loop = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(Self {
            accepted,
            local_addr,
            accept_loop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next established connection and its peer (`None` once the
    /// accept loop has stopped, which it does only when this is dropped).
    pub async fn accept(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.accepted.recv().await
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl futures::Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted
            .poll_recv(cx)
            .map(|next| next.map(|(stream, _)| Ok(stream)))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning on the error.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        // Small writes (a Play's first message, a unary answer) leave at
        // once: Nagle's algorithm would hold them for the peer's delayed
        // ACK, about 40 ms.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::info!(
                    %peer,
                    error = %error_chain(&e),
                    event = "tls_handshake_failed",
                    "TLS handshake failed"
                ),
                Err(_) => tracing::info!(
                    %peer,
                    timeout_secs = HANDSHAKE_TIMEOUT.as_secs(),
                    event = "tls_handshake_timeout",
                    "TLS handshake timed out"
                ),
            }
        });
    }
}
