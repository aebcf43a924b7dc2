//! The `callvault` command line: server, operator bootstrap, client commands
//! and the end-to-end demo. Client helpers here are also what the integration
//! tests drive, so the CLI path is the tested path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::api::pb;
use crate::archive::{Archive, Limits};
use crate::catalog::Catalog;
use crate::crypto;
use crate::domain::Role;
use crate::kms::Kms;
use crate::kms::aws::AwsKms;
use crate::kms::cache::KeyCacheConfig;
use crate::kms::local::LocalKeyring;
use crate::server::{self, LocalServer, Roles};
use crate::store::{ChunkStore, S3Options};

#[derive(Debug, Parser)]
#[command(
    name = "callvault",
    version,
    about = "Encrypted-at-rest archive for call recordings"
)]
pub struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "CALLVAULT_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Start a server on a temporary embedded data dir and prove the whole path.
    Demo,
    /// Manage tenants (works directly on the catalog).
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage API tokens (works directly on the catalog).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Upload a recording.
    Ingest(IngestArgs),
    /// Download and decrypt a recording.
    Play(PlayArgs),
    /// List or show recordings.
    #[command(subcommand)]
    Recordings(RecordingsCmd),
    /// Tenant KMS keys: register, history, health, rewrap (admin token).
    #[command(subcommand)]
    Keys(KeysCmd),
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Prove a KMS key works for the tenant, then make it the active key.
    Register {
        key_arn: String,
        /// Multi-Region replica as region=ARN (repeatable).
        #[arg(long = "replica")]
        replicas: Vec<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The key history: state, activation and what each key protects.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Key health, incidents and rotation compliance.
    Health {
        /// Check every key with KMS now.
        #[arg(long)]
        refresh: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Retire a key that protects no recording.
    Retire {
        key_arn: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the tenant's key-rotation policy.
    Policy {
        #[arg(long)]
        days: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move every wrapped data key from one key to another (KMS ReEncrypt).
    Rewrap {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// KMS requests per second for the whole job (0: server default).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Return once the job is started instead of following it.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow (or show) a rewrap job; with --resume or --cancel, change it.
    Job {
        job_id: String,
        #[arg(long, conflicts_with = "cancel")]
        resume: bool,
        #[arg(long)]
        cancel: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Operate the built-in local keyring (works directly on the data dir),
    /// the embedded default's stand-in for the AWS KMS console.
    #[command(subcommand)]
    Local(LocalKeyCmd),
}

#[derive(Debug, Subcommand)]
pub enum LocalKeyCmd {
    /// Create a key; prints its ARN.
    Create {
        /// RSA_2048 or RSA_3072 for write-only ingest; default symmetric.
        #[arg(long)]
        spec: Option<String>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    Disable {
        key_arn: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    Enable {
        key_arn: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    ScheduleDeletion {
        key_arn: String,
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[command(flatten)]
        backend: BackendArgs,
    },
    CancelDeletion {
        key_arn: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

/// Where state lives. Shared by `serve` and the operator commands.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    #[arg(long, env = "CALLVAULT_DATA_DIR", default_value = "./callvault-data")]
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; default: SQLite in the data dir.
    #[arg(long, env = "CALLVAULT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Object store URL: a directory, `file:///dir` or `s3://bucket/prefix`; default: the data dir.
    #[arg(long, env = "CALLVAULT_STORE")]
    pub store: Option<String>,
    /// Endpoint for an S3-compatible store.
    #[arg(long, env = "CALLVAULT_STORE_ENDPOINT")]
    pub store_endpoint: Option<String>,
    #[arg(long, env = "CALLVAULT_KMS", default_value = "local", value_parser = ["local", "aws"])]
    pub kms: String,
    /// Endpoint override for KMS-compatible emulators.
    #[arg(long, env = "CALLVAULT_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// This node's region.
    #[arg(long, env = "CALLVAULT_REGION", default_value = "local")]
    pub region: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
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
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    #[arg(long, env = "CALLVAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
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
    /// Seconds a unary RPC may run before DEADLINE_EXCEEDED (streaming RPCs
    /// are bounded by their idle timeouts instead).
    #[arg(long, env = "CALLVAULT_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant. Without --kms-key the local keyring creates one.
    Create {
        name: String,
        #[arg(long)]
        kms_key: Option<String>,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Issue a token; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        role: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    #[arg(
        long,
        env = "CALLVAULT_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    #[arg(long, env = "CALLVAULT_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    pub file: PathBuf,
    /// The platform's call id (idempotency key); default: the file's SHA-256.
    #[arg(long)]
    pub call_id: Option<String>,
    /// Labels as key=value (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub chunk_size: u32,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    pub id: String,
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum RecordingsCmd {
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    Get {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Builds the node's components from configuration.
pub async fn open_archive(
    b: &BackendArgs,
    cache: &KeyCacheConfig,
) -> Result<(Archive, Option<Arc<LocalKeyring>>)> {
    std::fs::create_dir_all(&b.data_dir)
        .with_context(|| format!("creating {}", b.data_dir.display()))?;
    let db_url = match &b.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", b.data_dir.join("catalog.db").display()),
    };
    let catalog = Catalog::connect(&db_url)
        .await
        .context("opening the catalog")?;
    let store = match &b.store {
        Some(url) => ChunkStore::from_url(
            url,
            &S3Options {
                endpoint: b.store_endpoint.clone(),
                region: Some(b.region.clone()),
            },
        )?,
        None => ChunkStore::local(&b.data_dir.join("objects"))?,
    };
    let (kms, ring): (Arc<dyn Kms>, _) = match b.kms.as_str() {
        "aws" => (
            Arc::new(AwsKms::connect(&b.region, b.kms_endpoint.as_deref()).await),
            None,
        ),
        _ => {
            let ring = Arc::new(LocalKeyring::open(&b.data_dir, &b.region)?);
            (ring.clone(), Some(ring))
        }
    };
    Ok((
        Archive::new(catalog, store, kms, cache, Limits::default()),
        ring,
    ))
}

pub type Authed = InterceptedService<Channel, BearerAuth>;

#[derive(Debug, Clone)]
pub struct BearerAuth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A connected, authenticated client for both services.
#[derive(Debug, Clone)]
pub struct Client {
    pub ingest: pb::ingest_service_client::IngestServiceClient<Authed>,
    pub playback: pb::playback_service_client::PlaybackServiceClient<Authed>,
    pub keys: pb::key_service_client::KeyServiceClient<Authed>,
}

impl Client {
    pub async fn connect(server: &str, token: &str) -> Result<Self> {
        let channel = Channel::from_shared(server.to_owned())
            .context("invalid server URL")?
            .initial_stream_window_size(server::HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(server::HTTP2_CONNECTION_WINDOW)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {server}"))?;
        let auth = BearerAuth(
            format!("Bearer {token}")
                .parse()
                .context("token is not valid ASCII")?,
        );
        Ok(Self {
            ingest: pb::ingest_service_client::IngestServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_encoding_message_size(crate::api::MAX_MESSAGE_BYTES),
            playback: pb::playback_service_client::PlaybackServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_decoding_message_size(64 * 1024 * 1024),
            keys: pb::key_service_client::KeyServiceClient::with_interceptor(channel, auth),
        })
    }

    /// Sends a header and then `body` in pieces as they come.
    pub async fn ingest_stream(
        &mut self,
        header: pb::IngestHeader,
        body: impl futures::Stream<Item = Bytes> + Send + 'static,
    ) -> Result<pb::IngestResponse, tonic::Status> {
        let first = futures::stream::once(async move {
            pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Header(header)),
            }
        });
        let rest = body.map(crate::api::data_message);
        Ok(self.ingest.ingest(first.chain(rest)).await?.into_inner())
    }

    /// Plays a whole recording into memory; returns (bytes, time to first byte).
    pub async fn play_all(
        &mut self,
        id: &str,
        offset: u64,
    ) -> Result<(Vec<u8>, Duration), tonic::Status> {
        let started = Instant::now();
        let mut stream = self
            .playback
            .play(pb::PlayRequest {
                recording_id: id.to_owned(),
                offset_bytes: offset,
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        let mut ttfb = None;
        while let Some(msg) = stream.message().await? {
            ttfb.get_or_insert_with(|| started.elapsed());
            out.extend_from_slice(&msg.data);
        }
        Ok((out, ttfb.unwrap_or_else(|| started.elapsed())))
    }
}

/// Splits a buffer into ingest-sized pieces.
pub fn pieces(data: Bytes, piece: usize) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    let n = data.len().div_ceil(piece);
    futures::stream::iter(
        (0..n).map(move |i| data.slice(i * piece..((i + 1) * piece).min(data.len()))),
    )
}

pub async fn main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo => crate::cli::demo().await,
        Command::Tenant(TenantCmd::Create {
            name,
            kms_key,
            backend,
        }) => {
            let (archive, ring) = open_archive(&backend, &KeyCacheConfig::default()).await?;
            let key_arn = match (kms_key, ring) {
                (Some(arn), _) => arn,
                (None, Some(ring)) => ring.create_key()?,
                (None, None) => bail!("--kms-key ARN is required with --kms aws"),
            };
            let region = crate::kms::arn_region(&key_arn)
                .unwrap_or(&backend.region)
                .to_owned();
            let tenant =
                crate::operator::create_tenant(&archive.catalog, &name, &key_arn, &region).await?;
            println!(
                "tenant {} ({}) created with KMS key {key_arn}",
                tenant.name, tenant.id
            );
            Ok(())
        }
        Command::Token(TokenCmd::Create {
            tenant,
            role,
            backend,
        }) => {
            let role: Role = role.parse()?;
            let (archive, _) = open_archive(&backend, &KeyCacheConfig::default()).await?;
            println!(
                "{}",
                crate::operator::create_token(&archive.catalog, &tenant, role).await?
            );
            Ok(())
        }
        Command::Ingest(args) => ingest_file(args).await,
        Command::Play(args) => play_file(args).await,
        Command::Recordings(cmd) => recordings(cmd).await,
        Command::Keys(KeysCmd::Local(cmd)) => local_keys(cmd).await,
        Command::Keys(cmd) => keys_cmd(cmd).await,
    }
}

fn failed(what: &str) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{what} failed: {:?}: {}", s.code(), s.message())
}

fn time_of(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| crate::domain::format_ms(t.seconds * 1000 + i64::from(t.nanos / 1_000_000)))
        .unwrap_or_else(|| "-".into())
}

fn key_json(k: &pb::TenantKey) -> serde_json::Value {
    let health = k.health.clone().unwrap_or_default();
    serde_json::json!({
        "key_arn": k.key_arn,
        "region": k.region,
        "status": k.status,
        "key_spec": k.key_spec,
        "wrap_algorithm": k.wrap_algorithm,
        "replica_key_arns": k.replica_key_arns,
        "registered": time_of(&k.register_time),
        "activated": time_of(&k.activate_time),
        "deactivated": k.deactivate_time.as_ref().map(|_| time_of(&k.deactivate_time)),
        "retired": k.retire_time.as_ref().map(|_| time_of(&k.retire_time)),
        "recordings": k.recording_count,
        "bytes": k.size_bytes,
        "legal_hold": k.legal_hold_count,
        "health": if health.state.is_empty() { serde_json::Value::Null } else { serde_json::json!({
            "state": health.state,
            "detail": health.detail,
            "deletion": health.deletion_time.as_ref().map(|_| time_of(&health.deletion_time)),
            "checked": time_of(&health.check_time),
        })},
    })
}

fn print_key(k: &pb::TenantKey) {
    let health = k.health.clone().unwrap_or_default();
    println!(
        "{:<8} {}  {} {}  activated {}  {} recordings, {} bytes{}  health: {}{}",
        k.status,
        k.key_arn,
        k.key_spec,
        k.region,
        time_of(&k.activate_time),
        k.recording_count,
        k.size_bytes,
        if k.legal_hold_count > 0 {
            format!(" ({} on legal hold)", k.legal_hold_count)
        } else {
            String::new()
        },
        if health.state.is_empty() {
            "not checked yet"
        } else {
            &health.state
        },
        if health.deletion_time.is_some() {
            format!(" (deletion {})", time_of(&health.deletion_time))
        } else {
            String::new()
        }
    );
}

fn job_json(j: &pb::RewrapJob) -> serde_json::Value {
    serde_json::json!({
        "job_id": j.job_id,
        "source_key_arn": j.source_key_arn,
        "destination_key_arn": j.destination_key_arn,
        "state": j.state,
        "total": j.total_count,
        "rewrapped": j.rewrapped_count,
        "max_kms_requests_per_second": j.max_kms_requests_per_second,
        "error": if j.error.is_empty() { serde_json::Value::Null } else { j.error.clone().into() },
        "created": time_of(&j.create_time),
        "finished": j.finish_time.as_ref().map(|_| time_of(&j.finish_time)),
    })
}

fn print_job(j: &pb::RewrapJob, json: bool) {
    if json {
        println!("{}", job_json(j));
        return;
    }
    println!(
        "rewrap job {}: {}  {}/{} recordings  {} -> {}{}",
        j.job_id,
        j.state,
        j.rewrapped_count,
        j.total_count,
        j.source_key_arn,
        j.destination_key_arn,
        if j.error.is_empty() {
            String::new()
        } else {
            format!("\n  error: {}", j.error)
        }
    );
}

/// Polls a rewrap job until it stops, with a progress bar on a terminal.
async fn follow_job(c: &mut Client, mut job: pb::RewrapJob, json: bool) -> Result<pb::RewrapJob> {
    use std::io::IsTerminal;
    let bar = if !json && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(job.total_count);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} rewrap [{bar:40}] {pos}/{len} recordings {per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    while job.state == "running" {
        bar.set_length(job.total_count.max(job.rewrapped_count));
        bar.set_position(job.rewrapped_count);
        tokio::time::sleep(Duration::from_millis(500)).await;
        job = c
            .keys
            .get_rewrap_job(pb::GetRewrapJobRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .map_err(failed("rewrap status"))?
            .into_inner();
    }
    bar.finish_and_clear();
    Ok(job)
}

async fn keys_cmd(cmd: KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::Register {
            key_arn,
            replicas,
            json,
            client,
        } => {
            let mut c = Client::connect(&client.server, &client.token).await?;
            let key = c
                .keys
                .register_key(pb::RegisterKeyRequest {
                    key_arn,
                    replica_key_arns: parse_labels(&replicas)?,
                })
                .await
                .map_err(failed("register"))?
                .into_inner();
            if json {
                println!("{}", key_json(&key));
            } else {
                println!("key passed its round trip and is now active:");
                print_key(&key);
            }
        }
        KeysCmd::List { json, client } => {
            let mut c = Client::connect(&client.server, &client.token).await?;
            let keys = c
                .keys
                .list_keys(pb::ListKeysRequest {})
                .await
                .map_err(failed("list"))?
                .into_inner()
                .keys;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(keys.iter().map(key_json).collect())
                );
            } else {
                keys.iter().for_each(print_key);
            }
        }
        KeysCmd::Health {
            refresh,
            json,
            client,
        } => {
            let mut c = Client::connect(&client.server, &client.token).await?;
            let h = c
                .keys
                .get_key_health(pb::GetKeyHealthRequest { refresh })
                .await
                .map_err(failed("health"))?
                .into_inner();
            let rotation = h.rotation.unwrap_or_default();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "keys": h.keys.iter().map(key_json).collect::<Vec<_>>(),
                        "incidents": h.incidents.iter().map(|i| serde_json::json!({
                            "key_arn": i.key_arn,
                            "state": i.state,
                            "recordings": i.recording_count,
                            "legal_hold": i.legal_hold_count,
                            "unreadable": time_of(&i.unreadable_time),
                            "message": i.message,
                        })).collect::<Vec<_>>(),
                        "rotation": {
                            "active_key_age_days": rotation.active_key_age_days,
                            "policy_days": rotation.policy_days,
                            "compliant": rotation.compliant,
                        },
                    })
                );
            } else {
                h.keys.iter().for_each(print_key);
                for i in &h.incidents {
                    println!("INCIDENT: {}", i.message);
                }
                println!(
                    "rotation: active key is {} days old, policy {} days: {}",
                    rotation.active_key_age_days,
                    rotation.policy_days,
                    if rotation.compliant {
                        "compliant"
                    } else {
                        "OVERDUE"
                    }
                );
            }
        }
        KeysCmd::Retire { key_arn, client } => {
            let mut c = Client::connect(&client.server, &client.token).await?;
            let key = c
                .keys
                .retire_key(pb::RetireKeyRequest { key_arn })
                .await
                .map_err(failed("retire"))?
                .into_inner();
            print_key(&key);
        }
        KeysCmd::Policy { days, client } => {
            let mut c = Client::connect(&client.server, &client.token).await?;
            let r = c
                .keys
                .set_rotation_policy(pb::SetRotationPolicyRequest { policy_days: days })
                .await
                .map_err(failed("policy"))?
                .into_inner();
            println!(
                "rotation policy {} days; active key {} days old ({})",
                r.policy_days,
                r.active_key_age_days,
                if r.compliant { "compliant" } else { "overdue" }
            );
        }
        KeysCmd::Rewrap {
            from,
            to,
            rate,
            no_wait,
            json,
            client,
        } => {
            let mut c = Client::connect(&client.server, &client.token).await?;
            let job = c
                .keys
                .start_rewrap(pb::StartRewrapRequest {
                    source_key_arn: from,
                    destination_key_arn: to,
                    max_kms_requests_per_second: rate,
                })
                .await
                .map_err(failed("rewrap"))?
                .into_inner();
            let job = if no_wait {
                job
            } else {
                follow_job(&mut c, job, json).await?
            };
            print_job(&job, json);
            if job.state == "failed" {
                bail!("rewrap job {} failed: {}", job.job_id, job.error);
            }
        }
        KeysCmd::Job {
            job_id,
            resume,
            cancel,
            json,
            client,
        } => {
            let mut c = Client::connect(&client.server, &client.token).await?;
            let req = pb::GetRewrapJobRequest { job_id };
            let job = if resume {
                c.keys.resume_rewrap(req).await
            } else if cancel {
                c.keys.cancel_rewrap(req).await
            } else {
                c.keys.get_rewrap_job(req).await
            }
            .map_err(failed("rewrap job"))?
            .into_inner();
            let job = if cancel {
                job
            } else {
                follow_job(&mut c, job, json).await?
            };
            print_job(&job, json);
        }
        KeysCmd::Local(_) => unreachable!("dispatched to local_keys"),
    }
    Ok(())
}

async fn local_keys(cmd: LocalKeyCmd) -> Result<()> {
    let ring = |b: &BackendArgs| -> Result<LocalKeyring> {
        Ok(LocalKeyring::open(&b.data_dir, &b.region)?)
    };
    match cmd {
        LocalKeyCmd::Create { spec, backend } => {
            let ring = ring(&backend)?;
            let arn = match spec.as_deref() {
                None | Some("SYMMETRIC_DEFAULT") => ring.create_key()?,
                Some(s) => ring.create_rsa_key(s)?,
            };
            println!("{arn}");
        }
        LocalKeyCmd::Disable { key_arn, backend } => {
            ring(&backend)?.set_enabled(&key_arn, false)?
        }
        LocalKeyCmd::Enable { key_arn, backend } => ring(&backend)?.set_enabled(&key_arn, true)?,
        LocalKeyCmd::ScheduleDeletion {
            key_arn,
            days,
            backend,
        } => ring(&backend)?.schedule_deletion(&key_arn, days)?,
        LocalKeyCmd::CancelDeletion { key_arn, backend } => {
            ring(&backend)?.cancel_deletion(&key_arn)?
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let roles = Roles::parse(&args.roles)?;
    let cache = KeyCacheConfig {
        ttl: Duration::from_secs(args.key_cache_ttl_secs.max(1)),
        ..Default::default()
    };
    let (mut archive, _) = open_archive(&args.backend, &cache).await?;
    archive.schedule.key_health = Duration::from_secs(args.key_health_interval_secs.max(1));
    let limits = &mut archive.limits;
    limits.upload_lease = Duration::from_secs(args.upload_lease_secs.max(1));
    limits.upload_idle_timeout = Duration::from_secs(args.upload_idle_timeout_secs.max(1));
    limits.max_uploads_per_tenant = args.max_uploads_per_tenant.max(1);
    limits.max_concurrent_streams = args.max_concurrent_streams.max(1);
    limits.request_timeout = Duration::from_secs(args.request_timeout_secs.max(1));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, ?roles, "callvault serving");
    let archive = Arc::new(archive);
    if let Some(addr) = &args.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        tracing::info!(address = %metrics.local_addr()?, "metrics at GET /metrics");
        tokio::spawn(server::serve_metrics(metrics, archive.clone()));
    }
    let shutdown = async {
        server::shutdown_signal().await;
        tracing::info!("shutting down, draining in-flight calls");
    };
    server::run(listener, archive, roles, shutdown).await?;
    Ok(())
}

fn parse_labels(labels: &[String]) -> Result<std::collections::HashMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("label `{l}` is not key=value"))
        })
        .collect()
}

async fn ingest_file(args: IngestArgs) -> Result<()> {
    use std::io::IsTerminal;
    let mut file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().await?.len();
    // One pass to hash: the digest names the call when no id is given and
    // checks the server's SHA-256 afterwards.
    let local = hex::encode(sha256_file(&args.file).await?);
    let call_id = match args.call_id {
        Some(c) => c,
        None => format!("file-{}", &local[..32]),
    };
    let header = pb::IngestHeader {
        external_call_id: call_id,
        start_time: None,
        labels: parse_labels(&args.labels)?,
        chunk_size_bytes: args.chunk_size,
    };
    let bar = if !args.json && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let progress = bar.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            progress.inc(n as u64);
            if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                return Ok(());
            }
        }
    });
    let mut client = Client::connect(&args.client.server, &args.client.token).await?;
    let res = client
        .ingest_stream(header, tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader.await??;
    bar.finish_and_clear();
    let res = res.map_err(failed("ingest"))?;
    let rec = res.recording.context("server returned no recording")?;
    if rec.sha256 != local {
        bail!(
            "server SHA-256 {} differs from the file's {local}",
            rec.sha256
        );
    }
    print_recording(&rec, args.json, Some(res.deduplicated));
    Ok(())
}

async fn sha256_file(path: &Path) -> Result<Vec<u8>> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().to_vec())
}

fn recording_json(rec: &pb::Recording, deduplicated: Option<bool>) -> serde_json::Value {
    let audio = rec.audio.clone().unwrap_or_default();
    let mut v = serde_json::json!({
        "recording_id": rec.recording_id,
        "external_call_id": rec.external_call_id,
        "bytes": rec.size_bytes,
        "chunks": rec.chunk_count,
        "chunk_size_bytes": rec.chunk_size_bytes,
        "sha256": rec.sha256,
        "container": audio.container,
        "codec": audio.codec,
        "sample_rate_hz": audio.sample_rate_hz,
        "channels": audio.channels,
        "duration_ms": audio.duration_ms,
        "warning": if audio.warning.is_empty() { serde_json::Value::Null } else { audio.warning.into() },
        "kms_key_arn": rec.kms_key_arn,
        "kms_region": rec.kms_region,
        "labels": rec.labels,
    });
    if let Some(d) = deduplicated {
        v["deduplicated"] = d.into();
    }
    v
}

fn print_recording(rec: &pb::Recording, json: bool, deduplicated: Option<bool>) {
    if json {
        println!("{}", recording_json(rec, deduplicated));
        return;
    }
    let audio = rec.audio.clone().unwrap_or_default();
    println!(
        "{}{}  {} bytes in {} chunks  {}/{} {} Hz {} ch {:.1} s  sha256 {}",
        rec.recording_id,
        if deduplicated == Some(true) {
            " (already archived)"
        } else {
            ""
        },
        rec.size_bytes,
        rec.chunk_count,
        audio.container,
        audio.codec,
        audio.sample_rate_hz,
        audio.channels,
        audio.duration_ms as f64 / 1000.0,
        rec.sha256
    );
    if !audio.warning.is_empty() {
        println!("  warning: {}", audio.warning);
    }
    for (k, v) in &rec.labels {
        println!("  {k} = {v}");
    }
}

async fn play_file(args: PlayArgs) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut client = Client::connect(&args.client.server, &args.client.token).await?;
    let res = client
        .playback
        .play(pb::PlayRequest {
            recording_id: args.id.clone(),
            offset_bytes: args.offset,
        })
        .await;
    let mut stream = res.map_err(failed("play"))?.into_inner();
    let mut out = tokio::fs::File::create(&args.output)
        .await
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut written = 0u64;
    let result: Result<()> = async {
        while let Some(msg) = stream.message().await.map_err(failed("play"))? {
            out.write_all(&msg.data).await?;
            written += msg.data.len() as u64;
        }
        out.flush().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        drop(out);
        // Never leave a partial recording that looks complete.
        let _ = tokio::fs::remove_file(&args.output).await;
        return Err(e);
    }
    eprintln!("wrote {written} bytes to {}", args.output.display());
    Ok(())
}

async fn recordings(cmd: RecordingsCmd) -> Result<()> {
    match cmd {
        RecordingsCmd::List { json, client } => {
            let mut c = Client::connect(&client.server, &client.token).await?;
            let mut token = String::new();
            let mut all = Vec::new();
            loop {
                let page = c
                    .playback
                    .list_recordings(pb::ListRecordingsRequest {
                        page_size: 500,
                        page_token: token,
                    })
                    .await
                    .map_err(failed("list"))?
                    .into_inner();
                all.extend(page.recordings);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if json {
                let v: Vec<_> = all.iter().map(|r| recording_json(r, None)).collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for r in &all {
                    print_recording(r, false, None);
                }
                eprintln!("{} recordings", all.len());
            }
            Ok(())
        }
        RecordingsCmd::Get { id, json, client } => {
            let mut c = Client::connect(&client.server, &client.token).await?;
            let rec = c
                .playback
                .get_recording(pb::GetRecordingRequest { recording_id: id })
                .await
                .map_err(failed("get"))?
                .into_inner();
            print_recording(&rec, json, None);
            Ok(())
        }
    }
}

/// A real speech recording (espeak-ng, 8 kHz G.711 μ-law WAV), the kind a
/// contact center archives.
const DEMO_SPEECH: &[u8] = include_bytes!("../tests/fixtures/speech_mulaw.wav");

/// A synthetic 16-bit PCM WAV of `seconds` (two tones and noise), for the
/// throughput part of the demo.
pub fn synth_wav(seconds: u32, sample_rate: u32, channels: u16) -> Vec<u8> {
    let frames = seconds as usize * sample_rate as usize;
    let data_len = frames * channels as usize * 2;
    let mut out = Vec::with_capacity(44 + data_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((36 + data_len) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * u32::from(channels) * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    let mut noise: u32 = 0x1234_5678;
    for i in 0..frames {
        let t = i as f32 / sample_rate as f32;
        noise ^= noise << 13;
        noise ^= noise >> 17;
        noise ^= noise << 5;
        let n = (noise as f32 / u32::MAX as f32 - 0.5) * 0.05;
        let s = 0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
            + 0.2 * (2.0 * std::f32::consts::PI * 1000.0 * t).sin()
            + n;
        let v = (s.clamp(-1.0, 1.0) * i16::MAX as f32) as i16;
        for _ in 0..channels {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// The BYOK part of the demo: rotate to a new key, rewrap the old one away,
/// revoke and restore.
async fn demo_keys(
    admin: &mut Client,
    player: &mut Client,
    ring: &LocalKeyring,
    key_a: &str,
    archived: &[(String, String)],
    failures: &mut Vec<String>,
) -> Result<()> {
    println!("\n  bring your own key");
    let key_b = ring.create_key()?;
    let registered = admin
        .keys
        .register_key(pb::RegisterKeyRequest {
            key_arn: key_b.clone(),
            replica_key_arns: Default::default(),
        })
        .await
        .map_err(failed("register"))?
        .into_inner();
    println!(
        "    registered {key_b}: round trip passed, now {}",
        registered.status
    );
    let job = admin
        .keys
        .start_rewrap(pb::StartRewrapRequest {
            source_key_arn: key_a.to_owned(),
            destination_key_arn: key_b.clone(),
            max_kms_requests_per_second: 50,
        })
        .await
        .map_err(failed("rewrap"))?
        .into_inner();
    let job = follow_job(admin, job, true).await?;
    println!(
        "    rewrap {} -> new key: {}, {}/{} recordings moved with KMS ReEncrypt",
        key_a, job.state, job.rewrapped_count, job.total_count
    );
    let keys = admin
        .keys
        .list_keys(pb::ListKeysRequest {})
        .await
        .map_err(failed("list keys"))?
        .into_inner()
        .keys;
    let protected = |arn: &str| {
        keys.iter()
            .find(|k| k.key_arn == arn)
            .map(|k| k.recording_count)
    };
    let mut plays_ok = true;
    for (id, sha) in archived {
        let (audio, _) = player.play_all(id, 0).await?;
        plays_ok &= crypto::sha256_hex(&audio) == *sha;
    }
    ring.set_enabled(&key_b, false)?;
    let health = admin
        .keys
        .get_key_health(pb::GetKeyHealthRequest { refresh: true })
        .await
        .map_err(failed("key health"))?
        .into_inner();
    for i in &health.incidents {
        println!("    key disabled in KMS -> incident: {}", i.message);
    }
    let revoked = player.play_all(&archived[0].0, 0).await;
    if let Err(s) = &revoked {
        println!(
            "    playback under the disabled key: {:?}: {}",
            s.code(),
            s.message()
        );
    }
    ring.set_enabled(&key_b, true)?;
    let restored = player.play_all(&archived[0].0, 0).await;
    for (label, ok) in [
        (
            "new key registered and active",
            registered.status == "active",
        ),
        ("rewrap succeeded", job.state == "succeeded"),
        ("old key protects no recording", protected(key_a) == Some(0)),
        ("every recording plays after the rewrap", plays_ok),
        (
            "disabled key reported as an incident",
            health.incidents.len() == 1,
        ),
        (
            "playback under a disabled key is refused (failed precondition)",
            matches!(&revoked, Err(s) if s.code() == tonic::Code::FailedPrecondition),
        ),
        (
            "re-enabling the key restores playback",
            restored.is_ok_and(|(a, _)| crypto::sha256_hex(&a) == archived[0].1),
        ),
    ] {
        println!("    [{}] {label}", if ok { "ok" } else { "FAIL" });
        if !ok {
            failures.push(format!("keys: {label}"));
        }
    }
    Ok(())
}

/// `callvault demo`: every step verified, exit code 0 only if all pass.
pub async fn demo() -> Result<()> {
    let dir = tempfile::tempdir()?;
    println!(
        "callvault demo — embedded default in {}",
        dir.path().display()
    );
    let (archive, ring) = Archive::embedded(dir.path()).await?;
    let key = ring.create_key()?;
    let boot = crate::operator::bootstrap_tenant(&archive.catalog, "demo", &key, "local").await?;
    println!("  tenant `demo` with local KMS key {key}");

    let archive = Arc::new(archive);
    let server = LocalServer::start(archive.clone(), Roles::ALL).await?;
    println!("  server listening on {}", server.addr);

    let mut uploader = Client::connect(&server.addr, &boot.ingest_token).await?;
    let mut player = Client::connect(&server.addr, &boot.supervisor_token).await?;
    let mut failures = Vec::new();
    let mut archived: Vec<(String, String)> = Vec::new();

    let recordings: [(&str, Bytes); 2] = [
        ("speech (G.711 μ-law WAV)", Bytes::from_static(DEMO_SPEECH)),
        (
            "synthetic 48 kHz stereo PCM WAV, 120 s",
            Bytes::from(synth_wav(120, 48_000, 2)),
        ),
    ];
    for (i, (what, audio)) in recordings.into_iter().enumerate() {
        let expected = crypto::sha256_hex(&audio);
        let size = audio.len();
        let header = pb::IngestHeader {
            external_call_id: format!("demo-call-{i}"),
            start_time: None,
            labels: [("agent".to_owned(), "demo-agent".to_owned())].into(),
            chunk_size_bytes: if i == 0 { 64 * 1024 } else { 0 },
        };
        let kms_before = archive.metrics.total_calls();
        let t = Instant::now();
        let res = uploader
            .ingest_stream(header, pieces(audio, 256 * 1024))
            .await
            .map_err(failed("ingest"))?;
        let ingest_secs = t.elapsed().as_secs_f64();
        let rec = res.recording.context("no recording in response")?;
        let audio_meta = rec.audio.clone().unwrap_or_default();
        let ingest_kms = archive.metrics.total_calls() - kms_before;
        println!("\n  {what}");
        println!(
            "    ingested {} bytes in {} chunks at {:.0} MB/s, {} KMS call(s); probed {}/{} {} Hz {} ch {:.2} s",
            rec.size_bytes,
            rec.chunk_count,
            size as f64 / ingest_secs / 1e6,
            ingest_kms,
            audio_meta.container,
            audio_meta.codec,
            audio_meta.sample_rate_hz,
            audio_meta.channels,
            audio_meta.duration_ms as f64 / 1000.0
        );
        let kms_before = archive.metrics.total_calls();
        let (cold, cold_ttfb) = player.play_all(&rec.recording_id, 0).await?;
        let cold_kms = archive.metrics.total_calls() - kms_before;
        let t = Instant::now();
        let (warm, warm_ttfb) = player.play_all(&rec.recording_id, 0).await?;
        let play_secs = t.elapsed().as_secs_f64();
        println!(
            "    played back: cold TTFB {:.2} ms ({} KMS call), warm TTFB {:.2} ms, {:.0} MB/s",
            cold_ttfb.as_secs_f64() * 1e3,
            cold_kms,
            warm_ttfb.as_secs_f64() * 1e3,
            size as f64 / play_secs / 1e6
        );
        archived.push((rec.recording_id.clone(), expected.clone()));
        for (label, ok) in [
            ("server SHA-256 matches input", rec.sha256 == expected),
            (
                "cold playback SHA-256 matches",
                crypto::sha256_hex(&cold) == expected,
            ),
            (
                "warm playback SHA-256 matches",
                crypto::sha256_hex(&warm) == expected,
            ),
            ("one KMS call on ingest", ingest_kms == 1),
            ("at most one KMS call on cold playback", cold_kms <= 1),
        ] {
            println!("    [{}] {label}", if ok { "ok" } else { "FAIL" });
            if !ok {
                failures.push(format!("{what}: {label}"));
            }
        }
    }
    let mut admin = Client::connect(&server.addr, &boot.admin_token).await?;
    demo_keys(
        &mut admin,
        &mut player,
        &ring,
        &key,
        &archived,
        &mut failures,
    )
    .await?;
    server.stop().await?;
    println!("\n  KMS calls in total: {}", archive.metrics.total_calls());
    if failures.is_empty() {
        println!("demo passed: every recording encrypted, stored, played back and verified");
        Ok(())
    } else {
        bail!("demo failed: {}", failures.join("; "))
    }
}
