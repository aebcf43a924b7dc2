//! `callvault serve`: flags into `config::ServeSettings`, then the library
//! starts the node.

use std::path::PathBuf;

use anyhow::Result;
use callvault::config::{self, ServeSettings};
use callvault::server::{self, Roles};
use callvault::tls::TlsFiles;
use clap::Args;

use super::BackendArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The gRPC listener's address (TLS with --tls-cert; cleartext only on
    /// loopback unless allowed).
    #[arg(long, env = "CALLVAULT_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Comma-separated: ingest, playback, admin.
    #[arg(long, env = "CALLVAULT_ROLES", default_value = "ingest,playback,admin")]
    pub roles: String,
    /// Absolute key-cache TTL in seconds: the longest a revoked KMS key keeps
    /// working on this node without a revocation signal.
    #[arg(long, env = "CALLVAULT_KEY_CACHE_TTL_SECS", default_value_t = 300)]
    pub key_cache_ttl_secs: u64,
    /// Seconds between DescribeKey health checks of every tenant key.
    #[arg(
        long,
        env = "CALLVAULT_KEY_HEALTH_INTERVAL_SECS",
        default_value_t = 300
    )]
    pub key_health_interval_secs: u64,
    /// Seconds between passes of the retention expiry job (admin nodes):
    /// recordings whose retention ended and that no hold covers are erased
    /// within one interval.
    #[arg(
        long,
        env = "CALLVAULT_RETENTION_CHECK_INTERVAL_SECS",
        default_value_t = 300
    )]
    pub retention_check_interval_secs: u64,
    /// Recordings the expiry job erases per second at most, per node.
    #[arg(long, env = "CALLVAULT_ERASE_MAX_PER_SEC", default_value_t = 50)]
    pub erase_max_per_sec: u32,
    /// Days catalog backups are kept (`backup prune` uses the same
    /// setting); deletion certificates say until when a backup may still
    /// hold an erased recording's wrapped data key.
    #[arg(
        long,
        env = "CALLVAULT_BACKUP_RETENTION_DAYS",
        default_value_t = callvault::backup::DEFAULT_RETENTION_DAYS
    )]
    pub backup_retention_days: u32,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    #[arg(long, env = "CALLVAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Refuse a --metrics-listen address that is not loopback, even with
    /// TLS (the metrics name tenants and key ARNs; scrape them locally).
    #[arg(long, env = "CALLVAULT_METRICS_LOOPBACK_ONLY")]
    pub metrics_loopback_only: bool,
    /// Seconds an upload's catalog lease lasts. The node renews it every
    /// third of this while the client is connected; the uploads of a node
    /// that crashed are removed once their lease ran out.
    #[arg(long, env = "CALLVAULT_UPLOAD_LEASE_SECS", default_value_t = 300)]
    pub upload_lease_secs: u64,
    /// Seconds without any message (not even an empty keep-alive) after
    /// which an upload is abandoned (DEADLINE_EXCEEDED).
    #[arg(
        long,
        env = "CALLVAULT_UPLOAD_IDLE_TIMEOUT_SECS",
        default_value_t = 1800
    )]
    pub upload_idle_timeout_secs: u64,
    /// Uploads one tenant may have in flight on this node; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CALLVAULT_MAX_UPLOADS_PER_TENANT", default_value_t = 1000)]
    pub max_uploads_per_tenant: usize,
    /// Concurrent HTTP/2 streams per client connection.
    #[arg(long, env = "CALLVAULT_MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    pub max_concurrent_streams: u32,
    /// Chunks being sealed and written at once on this node. Each holds a
    /// chunk's buffer; raise it for an object store whose PUTs are slow.
    #[arg(long, env = "CALLVAULT_MAX_CHUNK_WRITES", default_value_t = 64)]
    pub max_chunk_writes: usize,
    /// Seconds a unary RPC may run before DEADLINE_EXCEEDED (streaming RPCs
    /// are bounded by their idle timeouts instead).
    #[arg(long, env = "CALLVAULT_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// PEM certificate chain (leaf first): serve gRPC and metrics over TLS
    /// 1.2/1.3. Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "CALLVAULT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS certificate.
    #[arg(long, env = "CALLVAULT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates for mTLS: a client without a certificate issued
    /// by one of them is refused at the TLS handshake.
    #[arg(long, env = "CALLVAULT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve cleartext on an address that is not loopback (without TLS,
    /// tokens and audio cross the network readable).
    #[arg(long, env = "CALLVAULT_ALLOW_INSECURE")]
    pub allow_insecure: bool,
    /// Serve recordings' audio to browsers and curl through signed URLs
    /// (`GET /v1/recordings/{id}/audio?sig=…`) on this address; TLS with
    /// the same certificate as gRPC. Needs the playback role.
    #[arg(long, env = "CALLVAULT_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// The base URL browsers reach the HTTP listener at
    /// (`https://calls.example.com`): issued playback URLs are absolute
    /// under it. Default: the --http-listen address, unless it is 0.0.0.0.
    #[arg(long, env = "CALLVAULT_HTTP_PUBLIC_URL")]
    pub http_public_url: Option<String>,
    /// A file of playback URL keys, one `KEY_ID BASE64_32_BYTES` per line:
    /// the first signs new URLs, all verify (rotate by adding a new first
    /// line, drop the old one after the longest URL lifetime, 12 h).
    /// Default: one key derived from the audit signing key.
    #[arg(long, env = "CALLVAULT_URL_SIGNING_KEYS")]
    pub url_signing_keys: Option<PathBuf>,
}

impl TryFrom<ServeArgs> for ServeSettings {
    type Error = callvault::error::Error;

    fn try_from(a: ServeArgs) -> Result<Self, Self::Error> {
        Ok(Self {
            roles: Roles::parse(&a.roles)?,
            backend: a.backend.into(),
            listen: a.listen,
            key_cache_ttl_secs: a.key_cache_ttl_secs,
            key_health_interval_secs: a.key_health_interval_secs,
            retention_check_interval_secs: a.retention_check_interval_secs,
            erase_max_per_sec: a.erase_max_per_sec,
            backup_retention_days: a.backup_retention_days,
            metrics_listen: a.metrics_listen,
            metrics_loopback_only: a.metrics_loopback_only,
            upload_lease_secs: a.upload_lease_secs,
            upload_idle_timeout_secs: a.upload_idle_timeout_secs,
            max_uploads_per_tenant: a.max_uploads_per_tenant,
            max_concurrent_streams: a.max_concurrent_streams,
            max_chunk_writes: a.max_chunk_writes,
            request_timeout_secs: a.request_timeout_secs,
            // clap requires the key with the certificate and the
            // certificate with the client CA.
            tls: match (a.tls_cert, a.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert,
                    key,
                    client_ca: a.tls_client_ca,
                }),
                _ => None,
            },
            allow_insecure: a.allow_insecure,
            http_listen: a.http_listen,
            http_public_url: a.http_public_url,
            url_signing_keys: a.url_signing_keys,
        })
    }
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let settings = ServeSettings::try_from(args)?;
    config::serve(&settings, server::shutdown_signal()).await?;
    Ok(())
}
