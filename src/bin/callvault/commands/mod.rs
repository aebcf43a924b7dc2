//! The clap command tree, one file per command group, and the conversion of
//! the shared flags into the library's settings. Every flag, environment
//! variable and default here is part of the operator interface.

mod audit;
mod backup;
mod compliance;
mod export;
mod keys;
mod local_keys;
mod recordings;
mod serve;
mod tenants;
mod urls;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use callvault::client::{Client, ConnectOptions};
use callvault::config::{BackendSettings, KmsKind};
use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

pub use keys::follow_job;

/// The root command's closing section (`callvault --help`, the man page).
pub const ENVIRONMENT: &str = "\
Environment:
  CALLVAULT_LOG      What is logged, in tracing's filter syntax: a level
                     (error, warn, info, debug, trace, off) and per-module
                     levels, e.g. `warn,callvault::ingest=debug`. Default
                     `info` (`off` for `demo`, which reports each step).
  CALLVAULT_<FLAG>   Every flag, upper-cased with `-` as `_`:
                     CALLVAULT_DATA_DIR for --data-dir. Yes/no flags take
                     1/0, true/false, yes/no or on/off. Flags beat the
                     environment, which beats --config's file.

Logs go to stderr, coloured only on a terminal; --log-json writes one JSON
object per line. A damaged upload's decoder reports are one line, not one
per packet.

Exit codes: 0 success, 1 failure, 2 usage, 3 not found, 4 permission
denied, 5 unavailable.";

#[derive(Debug, Parser)]
#[command(
    name = "callvault",
    version,
    about = "Encrypted-at-rest archive for call recordings",
    after_long_help = ENVIRONMENT
)]
pub struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "CALLVAULT_LOG_JSON")]
    pub log_json: bool,
    /// A TOML file of flag values (keys are the long flag names; see
    /// `callvault.example.toml`). Precedence: file < environment < flags.
    #[arg(long, global = true, env = "CALLVAULT_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Start a server on a temporary embedded data dir and prove the whole path.
    Demo(crate::demo::DemoArgs),
    /// Manage tenants (works directly on the catalog).
    #[command(subcommand)]
    Tenant(tenants::TenantCmd),
    /// Manage API tokens (works directly on the catalog).
    #[command(subcommand)]
    Token(tenants::TokenCmd),
    /// Upload a recording.
    Ingest(recordings::IngestArgs),
    /// Download and decrypt a recording.
    Play(recordings::PlayArgs),
    /// List or show recordings.
    #[command(subcommand)]
    Recordings(recordings::RecordingsCmd),
    /// Print a signed URL to a recording's audio, for a browser or curl
    /// (supervisor or compliance token).
    PlayUrl(urls::PlayUrlArgs),
    /// Signed playback URLs: revoke every one the tenant issued.
    #[command(subcommand)]
    Urls(urls::UrlsCmd),
    /// Tenant KMS keys: register, history, health, rewrap (admin token).
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// The tenant's audit trail: events, checkpoints, verification, proofs
    /// (compliance token).
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// The configuration file and the effective settings.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Export recordings as a signed BagIt bundle, optionally age-encrypted
    /// (compliance token); `export verify FILE` checks one offline.
    Export(export::ExportArgs),
    /// The tenant's retention policy (compliance token).
    #[command(subcommand)]
    Retention(compliance::RetentionCmd),
    /// Legal holds: place, release, list, show (compliance token).
    #[command(subcommand)]
    Hold(compliance::HoldCmd),
    /// Crypto-shred recordings now and get a deletion certificate
    /// (compliance token).
    Erase(compliance::EraseArgs),
    /// Deletion certificates: list, get, and verify offline.
    #[command(subcommand)]
    Certificates(compliance::CertificatesCmd),
    /// Back up the embedded default's data dir while it serves; verify,
    /// restore and prune backups.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Print a shell completion script: `callvault completions bash >
    /// /etc/bash_completion.d/callvault` (zsh, fish, elvish, powershell too).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into a directory.
    Man {
        /// Write `callvault.1`, `callvault-tenant-create.1`, … here instead
        /// of printing the top-level page.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the effective `serve` settings (file < environment < flags),
    /// each with where it came from and secrets redacted, and check them
    /// (roles, accounts, TLS files) without starting anything.
    Check(Box<serve::ServeArgs>),
}

/// `config check`: the settings a `serve` with the same flags would use,
/// validated as far as possible without binding or connecting.
pub fn check_serve_settings(args: serve::ServeArgs) -> Result<()> {
    let settings = callvault::config::ServeSettings::try_from(args)?;
    let allowed = callvault::domain::AllowedAccounts::new(&settings.backend.allowed_kms_accounts)
        .map_err(|e| anyhow::anyhow!("allowed-kms-accounts: {e}"))?;
    if !allowed.is_any() && settings.backend.kms == KmsKind::Local {
        anyhow::bail!("allowed-kms-accounts restricts AWS KMS keys; set kms = \"aws\"");
    }
    if let Some(files) = &settings.tls {
        callvault::tls::ServerTls::load(files.clone()).context("tls")?;
    }
    if let Some(path) = &settings.backend.audit_signing_key {
        callvault::config::load_audit_key(path)?;
    }
    if let Some(path) = &settings.url_signing_keys {
        callvault::config::load_url_keys(path)?;
    }
    eprintln!("configuration OK");
    Ok(())
}

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Tenant(cmd) => tenants::tenant(cmd).await,
        Command::Token(cmd) => tenants::token(cmd).await,
        Command::Ingest(args) => recordings::ingest(args).await,
        Command::Play(args) => recordings::play(args).await,
        Command::Recordings(cmd) => recordings::run(cmd).await,
        Command::PlayUrl(args) => urls::play_url(args).await,
        Command::Urls(cmd) => urls::urls(cmd).await,
        Command::Keys(cmd) => keys::run(cmd).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Config(ConfigCmd::Check(args)) => check_serve_settings(*args),
        Command::Export(args) => export::run(args).await,
        Command::Retention(cmd) => compliance::retention(cmd).await,
        Command::Hold(cmd) => compliance::hold(cmd).await,
        Command::Erase(args) => compliance::erase(args).await,
        Command::Certificates(cmd) => compliance::certificates(cmd).await,
        Command::Backup(cmd) => backup::run(cmd).await,
        // Generated from the command tree, which `main` holds.
        Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("main handles completions and man")
        }
    }
}

/// A flag that holds a secret (a token, a URL with a password): kept as a
/// `SecretString`, so the parsed arguments' `Debug` never shows it.
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

/// Where state lives. Shared by `serve` and the operator commands.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Where the embedded default keeps its state (SQLite catalog, object
    /// store, local keyring), created 0700.
    #[arg(long, env = "CALLVAULT_DATA_DIR", default_value = "./callvault-data")]
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; default: SQLite in the data dir.
    #[arg(long, env = "CALLVAULT_DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub database_url: Option<SecretString>,
    /// Object store URL: a directory, `file:///dir` or `s3://bucket/prefix`; default: the data dir.
    #[arg(long, env = "CALLVAULT_STORE")]
    pub store: Option<String>,
    /// Endpoint for an S3-compatible store.
    #[arg(long, env = "CALLVAULT_STORE_ENDPOINT")]
    pub store_endpoint: Option<String>,
    /// The KMS: `local` (the keyring in the data dir) or `aws` (AWS KMS or
    /// a KMS-compatible endpoint, with the AWS default credential chain).
    #[arg(long, env = "CALLVAULT_KMS", default_value = "local", value_parser = ["local", "aws"])]
    pub kms: String,
    /// Endpoint override for KMS-compatible emulators.
    #[arg(long, env = "CALLVAULT_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// This node's region.
    #[arg(long, env = "CALLVAULT_REGION", default_value = "local")]
    pub region: String,
    /// The deployment's audit signing key file (`callvault audit keygen`);
    /// default: the local keyring's. Required with `--kms aws`.
    #[arg(long, env = "CALLVAULT_AUDIT_SIGNING_KEY")]
    pub audit_signing_key: Option<PathBuf>,
    /// Only KMS keys of these AWS account ids (comma-separated, twelve
    /// digits each) may be registered as tenant keys. Default: any account.
    /// Requires `--kms aws`.
    #[arg(long, env = "CALLVAULT_ALLOWED_KMS_ACCOUNTS", value_delimiter = ',')]
    pub allowed_kms_accounts: Vec<String>,
}

impl From<BackendArgs> for BackendSettings {
    fn from(b: BackendArgs) -> Self {
        Self {
            data_dir: b.data_dir,
            database_url: b.database_url,
            store: b.store,
            store_endpoint: b.store_endpoint,
            // clap admits only `local` and `aws`.
            kms: match b.kms.as_str() {
                "aws" => KmsKind::Aws,
                _ => KmsKind::Local,
            },
            kms_endpoint: b.kms_endpoint,
            region: b.region,
            audit_signing_key: b.audit_signing_key,
            allowed_kms_accounts: b.allowed_kms_accounts,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// `https://host:port` (TLS), or `http://host:port` (cleartext: loopback
    /// only unless --allow-insecure).
    #[arg(
        long,
        env = "CALLVAULT_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// The bearer token (better from the environment than on a command
    /// line other users can see).
    #[arg(long, env = "CALLVAULT_TOKEN", hide_env_values = true, value_parser = secret)]
    pub token: SecretString,
    /// PEM CA certificates to trust for an https:// server, beside the
    /// system's roots.
    #[arg(long, env = "CALLVAULT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate chain for a server that requires mTLS.
    #[arg(long, env = "CALLVAULT_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "CALLVAULT_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Allow an http:// server that is not on loopback (the token and
    /// audio cross the network readable).
    #[arg(long, env = "CALLVAULT_ALLOW_INSECURE")]
    pub allow_insecure: bool,
}

impl ClientArgs {
    async fn connect(&self) -> Result<Client> {
        let opts = ConnectOptions {
            ca_cert: self.ca_cert.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            allow_insecure: self.allow_insecure,
        };
        Ok(Client::connect_with(&self.server, self.token.expose_secret(), &opts).await?)
    }
}

/// `key=value` pairs (labels, replicas) into a map.
pub(super) fn parse_pairs(pairs: &[String]) -> Result<HashMap<String, String>> {
    pairs
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("label `{l}` is not key=value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// `serve` with no flags, whatever `CALLVAULT_*` variables the test
    /// environment has.
    fn serve_args_without_env() -> serve::ServeArgs {
        use clap::FromArgMatches;
        let cmd = serve::ServeArgs::augment_args(clap::Command::new("serve"))
            .mut_args(|a| a.env(None::<&'static str>));
        serve::ServeArgs::from_arg_matches(&cmd.get_matches_from(["serve"])).unwrap()
    }

    /// With no flags and no environment, `serve` must mean exactly the
    /// library's defaults: clap's literal defaults and `Default` are two
    /// spellings of one fact, and this keeps them one.
    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let got = callvault::config::ServeSettings::try_from(serve_args_without_env()).unwrap();
        let want = callvault::config::ServeSettings::default();
        let (g, w) = (&got.backend, &want.backend);
        assert_eq!(g.data_dir, w.data_dir);
        assert_eq!(
            g.database_url
                .as_ref()
                .map(|u| u.expose_secret().to_owned()),
            w.database_url
                .as_ref()
                .map(|u| u.expose_secret().to_owned())
        );
        assert_eq!(g.store, w.store);
        assert_eq!(g.store_endpoint, w.store_endpoint);
        assert_eq!(g.kms, w.kms);
        assert_eq!(g.kms_endpoint, w.kms_endpoint);
        assert_eq!(g.region, w.region);
        assert_eq!(got.listen, want.listen);
        assert_eq!(got.roles, want.roles);
        assert_eq!(got.key_cache_ttl_secs, want.key_cache_ttl_secs);
        assert_eq!(got.key_health_interval_secs, want.key_health_interval_secs);
        assert_eq!(
            got.retention_check_interval_secs,
            want.retention_check_interval_secs
        );
        assert_eq!(got.erase_max_per_sec, want.erase_max_per_sec);
        assert_eq!(got.backup_retention_days, want.backup_retention_days);
        assert_eq!(got.metrics_listen, want.metrics_listen);
        assert_eq!(got.metrics_loopback_only, want.metrics_loopback_only);
        assert_eq!(got.upload_lease_secs, want.upload_lease_secs);
        assert_eq!(got.upload_idle_timeout_secs, want.upload_idle_timeout_secs);
        assert_eq!(got.max_uploads_per_tenant, want.max_uploads_per_tenant);
        assert_eq!(got.max_concurrent_streams, want.max_concurrent_streams);
        assert_eq!(got.max_chunk_writes, want.max_chunk_writes);
        assert_eq!(got.request_timeout_secs, want.request_timeout_secs);
        assert_eq!(got.tls, want.tls);
        assert_eq!(got.allow_insecure, want.allow_insecure);
    }

    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
