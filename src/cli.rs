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
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    #[arg(long, env = "CALLVAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
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

/// Region named in a KMS key ARN (`arn:<partition>:kms:<region>:…`).
pub fn region_of_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
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
                channel, auth,
            )
            .max_decoding_message_size(64 * 1024 * 1024),
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
            let region = region_of_arn(&key_arn)
                .unwrap_or(&backend.region)
                .to_owned();
            let tenant = archive
                .catalog
                .create_tenant(&name, &key_arn, &region)
                .await?;
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
            let tenant = archive.catalog.tenant_by_name(&tenant).await?;
            println!("{}", archive.catalog.create_token(&tenant.id, role).await?);
            Ok(())
        }
        Command::Ingest(args) => ingest_file(args).await,
        Command::Play(args) => play_file(args).await,
        Command::Recordings(cmd) => recordings(cmd).await,
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let roles = Roles::parse(&args.roles)?;
    let cache = KeyCacheConfig {
        ttl: Duration::from_secs(args.key_cache_ttl_secs.max(1)),
        ..Default::default()
    };
    let (archive, _) = open_archive(&args.backend, &cache).await?;
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
    let res = res.map_err(|s| anyhow::anyhow!("ingest failed: {}: {}", s.code(), s.message()))?;
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
    let mut stream = res
        .map_err(|s| anyhow::anyhow!("play failed: {}: {}", s.code(), s.message()))?
        .into_inner();
    let mut out = tokio::fs::File::create(&args.output)
        .await
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut written = 0u64;
    let result: Result<()> = async {
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("play failed: {}: {}", s.code(), s.message()))?
        {
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
                    .map_err(|s| anyhow::anyhow!("list failed: {}: {}", s.code(), s.message()))?
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
                .map_err(|s| anyhow::anyhow!("get failed: {}: {}", s.code(), s.message()))?
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

/// `callvault demo`: every step verified, exit code 0 only if all pass.
pub async fn demo() -> Result<()> {
    let dir = tempfile::tempdir()?;
    println!(
        "callvault demo — embedded default in {}",
        dir.path().display()
    );
    let (archive, ring) = Archive::embedded(dir.path()).await?;
    let key = ring.create_key()?;
    let boot = archive
        .catalog
        .bootstrap_tenant("demo", &key, "local")
        .await?;
    println!("  tenant `demo` with local KMS key {key}");

    let archive = Arc::new(archive);
    let server = LocalServer::start(archive.clone(), Roles::ALL).await?;
    println!("  server listening on {}", server.addr);

    let mut uploader = Client::connect(&server.addr, &boot.ingest_token).await?;
    let mut player = Client::connect(&server.addr, &boot.supervisor_token).await?;
    let mut failures = Vec::new();

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
            .map_err(|s| anyhow::anyhow!("ingest: {}: {}", s.code(), s.message()))?;
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
    server.stop().await?;
    println!("\n  KMS calls in total: {}", archive.metrics.total_calls());
    if failures.is_empty() {
        println!("demo passed: every recording encrypted, stored, played back and verified");
        Ok(())
    } else {
        bail!("demo failed: {}", failures.join("; "))
    }
}
