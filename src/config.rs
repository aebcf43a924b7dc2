//! Node settings and startup: settings → archive → listeners → `server::run`.
//!
//! The settings are plain owned data with the documented defaults in
//! `Default`, so any front end can fill them: today the command line, later
//! a configuration file under it. Field names carry their units (`_secs`), as
//! the flags and environment variables do.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::archive::{Archive, ErasureSettings, Limits, Schedule};
use crate::catalog::Catalog;
use crate::kms::aws::AwsKms;
use crate::kms::cache::KeyCacheConfig;
use crate::kms::local::LocalKeyring;
use crate::kms::{Kms, KmsError};
use crate::server::{self, Roles};
use crate::store::{ChunkStore, S3Options};
use crate::tls::{self, ServerTls, TlsFiles};

/// Why a node could not start (or stopped serving with an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("creating {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the catalog")]
    Catalog(#[source] crate::error::Error),
    #[error(transparent)]
    Store(crate::error::Error),
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("cannot listen on {address}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {address} for metrics")]
    MetricsListen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// Settings that contradict each other or are malformed.
    #[error("{0}")]
    Settings(String),
    /// A cleartext listener on an address other hosts can reach: tokens and
    /// audio would cross the network readable.
    #[error(
        "refusing to serve {listener} in cleartext on {address}, which is not a loopback address: \
         give --tls-cert and --tls-key, or --allow-insecure to serve cleartext anyway"
    )]
    Insecure {
        listener: &'static str,
        address: std::net::SocketAddr,
    },
    /// The gRPC server failed while serving.
    #[error(transparent)]
    Server(crate::error::Error),
    /// The audit signing key is missing or unreadable.
    #[error("{0}")]
    AuditKey(String),
}

/// Which KMS the node's keys live in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KmsKind {
    /// The local keyring in the data directory (the embedded default).
    #[default]
    Local,
    Aws,
}

/// Where state lives. Shared by serving and the operator commands.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…` (may hold a password); `None`: SQLite in
    /// the data dir.
    pub database_url: Option<SecretString>,
    /// A directory, `file:///dir` or `s3://bucket/prefix`; `None`: the data dir.
    pub store: Option<String>,
    /// Endpoint for an S3-compatible store.
    pub store_endpoint: Option<String>,
    pub kms: KmsKind,
    /// Endpoint override for KMS-compatible emulators.
    pub kms_endpoint: Option<String>,
    /// This node's region.
    pub region: String,
    /// The deployment's audit signing key (a note signer key text file, see
    /// `callvault audit keygen`); `None`: the local keyring's.
    pub audit_signing_key: Option<PathBuf>,
    /// AWS accounts whose KMS keys tenants may register; empty: any.
    /// Only with `KmsKind::Aws`.
    pub allowed_kms_accounts: Vec<String>,
}

impl Default for BackendSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./callvault-data"),
            database_url: None,
            store: None,
            store_endpoint: None,
            kms: KmsKind::Local,
            kms_endpoint: None,
            region: "local".to_owned(),
            audit_signing_key: None,
            allowed_kms_accounts: Vec::new(),
        }
    }
}

/// What one serving node does and allows. Durations of 0 and limits of 0
/// are raised to 1 (second or unit) when the node starts.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub backend: BackendSettings,
    /// The gRPC address to bind (`host:port`).
    pub listen: String,
    pub roles: Roles,
    /// Absolute key-cache TTL: the longest a revoked KMS key keeps working
    /// on this node without a revocation signal.
    pub key_cache_ttl_secs: u64,
    /// Between DescribeKey health checks of every tenant key.
    pub key_health_interval_secs: u64,
    /// Between passes of the retention expiry job (admin nodes).
    pub retention_check_interval_secs: u64,
    /// Recordings the expiry job erases per second at most (per node).
    pub erase_max_per_sec: u32,
    /// How long catalog backups are kept: deletion certificates quote it.
    pub backup_retention_days: u32,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics_listen: Option<String>,
    /// Refuse a metrics address that is not loopback, TLS or not (the
    /// metrics name tenants and key ARNs; a local agent scrapes them).
    pub metrics_loopback_only: bool,
    /// An upload's catalog lease; renewed every third of it while the client
    /// is connected.
    pub upload_lease_secs: u64,
    /// Without any message for this long, an upload is abandoned.
    pub upload_idle_timeout_secs: u64,
    /// Uploads one tenant may have in flight on this node.
    pub max_uploads_per_tenant: usize,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// Chunks being sealed and written at once on the node.
    pub max_chunk_writes: usize,
    /// The longest a unary RPC may run.
    pub request_timeout_secs: u64,
    /// Serve gRPC and metrics over TLS with these files; `None`: cleartext.
    pub tls: Option<TlsFiles>,
    /// Serve cleartext on an address that is not loopback.
    pub allow_insecure: bool,
    /// Serve the HTTP side door (signed-URL audio) on this address
    /// (playback nodes only).
    pub http_listen: Option<String>,
    /// The base that playback URLs are issued under (`https://host:port`,
    /// what browsers reach the HTTP listener at); `None`: the HTTP
    /// listener's own address when it has a specific one.
    pub http_public_url: Option<String>,
    /// Playback URL keys (`KEY_ID BASE64` per line, the first signs);
    /// `None`: one key derived from the audit signing key.
    pub url_signing_keys: Option<std::path::PathBuf>,
}

impl Default for ServeSettings {
    /// The limits, cache TTL and health interval are those of `Limits`,
    /// `KeyCacheConfig` and `Schedule`, so there is one source for each.
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            backend: BackendSettings::default(),
            listen: "127.0.0.1:50051".to_owned(),
            roles: Roles::ALL,
            key_cache_ttl_secs: KeyCacheConfig::default().ttl.as_secs(),
            key_health_interval_secs: Schedule::default().key_health.as_secs(),
            retention_check_interval_secs: Schedule::default().retention_check.as_secs(),
            erase_max_per_sec: ErasureSettings::default().max_per_sec,
            backup_retention_days: ErasureSettings::default().backup_retention_days,
            metrics_listen: None,
            metrics_loopback_only: false,
            upload_lease_secs: limits.upload_lease.as_secs(),
            upload_idle_timeout_secs: limits.upload_idle_timeout.as_secs(),
            max_uploads_per_tenant: limits.max_uploads_per_tenant,
            max_concurrent_streams: limits.max_concurrent_streams,
            max_chunk_writes: limits.max_chunk_writes,
            request_timeout_secs: limits.request_timeout.as_secs(),
            tls: None,
            allow_insecure: false,
            http_listen: None,
            http_public_url: None,
            url_signing_keys: None,
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s.max(1))
}

impl ServeSettings {
    fn key_cache(&self) -> KeyCacheConfig {
        KeyCacheConfig {
            ttl: secs(self.key_cache_ttl_secs),
            ..Default::default()
        }
    }

    /// Applies the node's limits and schedule to a freshly opened archive.
    fn configure(&self, archive: &mut Archive) {
        archive.schedule.key_health = secs(self.key_health_interval_secs);
        archive.schedule.retention_check = secs(self.retention_check_interval_secs);
        archive.erasure = ErasureSettings {
            max_per_sec: self.erase_max_per_sec.max(1),
            backup_retention_days: self.backup_retention_days,
        };
        let limits = &mut archive.limits;
        limits.upload_lease = secs(self.upload_lease_secs);
        limits.upload_idle_timeout = secs(self.upload_idle_timeout_secs);
        limits.max_uploads_per_tenant = self.max_uploads_per_tenant.max(1);
        limits.max_concurrent_streams = self.max_concurrent_streams.max(1);
        limits.request_timeout = secs(self.request_timeout_secs);
        limits.max_chunk_writes = self.max_chunk_writes.max(1);
        archive.chunk_writes =
            Arc::new(tokio::sync::Semaphore::new(archive.limits.max_chunk_writes));
    }
}

/// Builds the node's components from its backend settings. Returns the local
/// keyring too when that is the KMS, for the commands that operate it.
pub async fn open_archive(
    b: &BackendSettings,
    cache: &KeyCacheConfig,
) -> Result<(Archive, Option<Arc<LocalKeyring>>), Error> {
    let allowed = crate::domain::AllowedAccounts::new(&b.allowed_kms_accounts)
        .map_err(|e| Error::Settings(format!("--allowed-kms-accounts: {e}")))?;
    if !allowed.is_any() && b.kms == KmsKind::Local {
        return Err(Error::Settings(
            "--allowed-kms-accounts restricts AWS KMS keys; the local keyring has no accounts (use --kms aws)"
                .into(),
        ));
    }
    crate::store::create_private_dir_all(&b.data_dir).map_err(|source| Error::DataDir {
        path: b.data_dir.clone(),
        source,
    })?;
    let db_url = match &b.database_url {
        Some(u) => u.expose_secret().to_owned(),
        None => format!("sqlite://{}", b.data_dir.join("catalog.db").display()),
    };
    let catalog = Catalog::connect(&db_url).await.map_err(Error::Catalog)?;
    let store = match &b.store {
        Some(url) => ChunkStore::from_url(
            url,
            &S3Options {
                endpoint: b.store_endpoint.clone(),
                region: Some(b.region.clone()),
            },
        ),
        None => ChunkStore::local(&b.data_dir.join("objects")),
    }
    .map_err(Error::Store)?;
    let (kms, ring): (Arc<dyn Kms>, _) = match b.kms {
        KmsKind::Aws => (
            Arc::new(AwsKms::connect(&b.region, b.kms_endpoint.as_deref()).await),
            None,
        ),
        KmsKind::Local => {
            let ring = Arc::new(LocalKeyring::open(&b.data_dir, &b.region)?);
            (ring.clone(), Some(ring))
        }
    };
    let audit_key = match (&b.audit_signing_key, &ring) {
        (Some(path), _) => load_audit_key(path)?,
        (None, Some(ring)) => ring.audit_signer(crate::audit::trail::DEFAULT_KEY_NAME)?,
        (None, None) => {
            return Err(Error::AuditKey(
                "with --kms aws, set --audit-signing-key FILE: the deployment's audit signing key \
                 (make one with `callvault audit keygen --name <deployment> -o FILE`)"
                    .into(),
            ));
        }
    };
    let mut archive = Archive::new(
        catalog,
        store,
        kms,
        cache,
        Limits::default(),
        Arc::new(audit_key),
    );
    archive.allowed_kms_accounts = allowed;
    Ok((archive, ring))
}

/// Reads a note signer key text (`PRIVATE+KEY+…`) from a file.
pub fn load_audit_key(path: &std::path::Path) -> Result<crate::audit::note::SignerKey, Error> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        Error::AuditKey(format!(
            "cannot read the audit signing key {}: {e}",
            path.display()
        ))
    })?);
    crate::audit::note::SignerKey::parse(text.trim()).map_err(|e| {
        Error::AuditKey(format!(
            "{} is not an audit signing key: {e}",
            path.display()
        ))
    })
}

/// Checks the TLS files, opens the archive, binds the gRPC listener (and
/// the metrics listener if configured) and serves until `shutdown`
/// resolves, then drains in-flight calls. A listener that would serve
/// cleartext on a non-loopback address is refused unless `allow_insecure`.
/// With TLS, the certificate is reloaded on SIGHUP and when its files
/// change.
pub async fn serve(
    settings: &ServeSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let tls = match &settings.tls {
        Some(files) => {
            let tls = ServerTls::load(files.clone())?;
            tracing::info!(
                cert = %files.cert.display(),
                sha256 = %tls.fingerprint(),
                mtls = files.client_ca.is_some(),
                "TLS certificate loaded"
            );
            Some(Arc::new(tls))
        }
        None => None,
    };
    let (mut archive, _) = open_archive(&settings.backend, &settings.key_cache()).await?;
    settings.configure(&mut archive);
    if let Some(path) = &settings.url_signing_keys {
        archive.url_keys = Arc::new(load_url_keys(path)?);
    }
    let listen_error = |address: &str| {
        let address = address.to_owned();
        move |source| Error::Listen { address, source }
    };
    let http = match &settings.http_listen {
        Some(addr) => {
            if !settings.roles.playback {
                return Err(Error::Settings(
                    "--http-listen serves recordings' audio: it needs the playback role".into(),
                ));
            }
            let http = server::bind_http(addr).await.map_err(listen_error(addr))?;
            let address = http.local_addr().map_err(listen_error(addr))?;
            settings.check_cleartext("HTTP", address, tls.is_some())?;
            Some((http, address))
        }
        None => None,
    };
    archive.playback_url_base = match (&settings.http_public_url, &http) {
        (Some(base), _) => Some(check_public_url(base)?),
        (None, Some((_, address))) if !address.ip().is_unspecified() => Some(format!(
            "{}://{address}",
            if tls.is_some() { "https" } else { "http" }
        )),
        _ => None,
    };
    let archive = Arc::new(archive);
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(listen_error(&settings.listen))?;
    let address = listener
        .local_addr()
        .map_err(listen_error(&settings.listen))?;
    settings.check_cleartext("gRPC", address, tls.is_some())?;
    let metrics = match &settings.metrics_listen {
        Some(addr) => {
            let metrics_error = |source| Error::MetricsListen {
                address: addr.clone(),
                source,
            };
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(metrics_error)?;
            let address = metrics.local_addr().map_err(metrics_error)?;
            if settings.metrics_loopback_only && !address.ip().is_loopback() {
                return Err(Error::Settings(format!(
                    "--metrics-loopback-only: the metrics address {address} is not a loopback address"
                )));
            }
            settings.check_cleartext("metrics", address, tls.is_some())?;
            Some((metrics, address))
        }
        None => None,
    };
    let roles = settings.roles;
    let tls_on = tls.is_some();
    tracing::info!(%address, %roles, tls = tls_on, "callvault serving");
    let mut tasks = tokio::task::JoinSet::new();
    if let Some((metrics, address)) = metrics {
        tracing::info!(%address, tls = tls_on, "metrics at GET /metrics");
        let (tls, archive) = (tls.clone(), archive.clone());
        tasks.spawn(
            async move { server::serve_metrics(metrics, tls.as_deref(), archive, roles).await },
        );
    }
    if let Some(tls) = &tls {
        tasks.spawn(tls::watch(tls.clone(), tls::RELOAD_POLL));
    }
    let (stopping, stop_http) = tokio::sync::watch::channel(false);
    let mut http_task = None;
    if let Some((http, address)) = http {
        tracing::info!(%address, tls = tls_on, base = archive.playback_url_base.as_deref(), "HTTP playback at /v1/recordings/{{id}}/audio");
        let (tls, archive) = (tls.clone(), archive.clone());
        let mut stop = stop_http;
        http_task = Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = server::serve_http(http, tls.as_deref(), archive, shutdown).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        }));
    }
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down, draining in-flight calls");
        let _ = stopping.send(true);
    };
    let served = match &tls {
        Some(tls) => server::run_tls(listener, tls, archive, roles, shutdown).await,
        None => server::run(listener, archive, roles, shutdown).await,
    };
    // The HTTP listener closes its listening sessions (their audit events)
    // as it stops: give it a moment.
    if let Some(task) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    tasks.abort_all();
    served.map_err(Error::Server)
}

/// Reads playback URL keys (`KEY_ID BASE64` per line) from a file.
pub fn load_url_keys(path: &std::path::Path) -> Result<crate::playback::urls::UrlKeys, Error> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        Error::Settings(format!("cannot read the URL keys {}: {e}", path.display()))
    })?);
    crate::playback::urls::UrlKeys::parse(&text)
        .map_err(|e| Error::Settings(format!("{}: {e}", path.display())))
}

/// A public base URL: `http(s)://host[:port]` with nothing after it.
fn check_public_url(base: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Settings(format!("--http-public-url {base}: {why}"));
    let url = url::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("must be http:// or https:// and name a host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must have no path, query or fragment"));
    }
    Ok(base.trim_end_matches('/').to_owned())
}

impl ServeSettings {
    /// Cleartext is for loopback, where nothing crosses a network, unless
    /// the operator said otherwise (a TLS-terminating sidecar, a test rig).
    fn check_cleartext(
        &self,
        listener: &'static str,
        address: std::net::SocketAddr,
        tls: bool,
    ) -> Result<(), Error> {
        if tls || address.ip().is_loopback() {
            return Ok(());
        }
        if !self.allow_insecure {
            return Err(Error::Insecure { listener, address });
        }
        tracing::warn!(
            listener,
            %address,
            "serving cleartext on a non-loopback address (--allow-insecure): tokens and audio cross the network readable"
        );
        Ok(())
    }
}
