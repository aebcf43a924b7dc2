//! `callvault tenant` and `callvault token`: operator commands that work
//! directly on the catalog (no server needed).

use anyhow::{Result, bail};
use callvault::config::open_archive;
use std::time::Duration;

use callvault::domain::{Role, format_ms, now_ms};
use callvault::kms::cache::KeyCacheConfig;
use clap::Subcommand;
use secrecy::ExposeSecret;

use super::BackendArgs;

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
    /// Issue a token; it is printed once on stdout and stored only as a
    /// hash (its id and expiry go to stderr).
    Create {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// ingest, supervisor, compliance or admin (see the role matrix in
        /// the README).
        #[arg(long)]
        role: String,
        /// Stop working after this long: a number and s, m, h, d or w
        /// (`90d`). Default: no expiry.
        #[arg(long, value_parser = callvault::domain::parse_duration)]
        expires_in: Option<Duration>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// List the tenant's tokens: id, role, created, last used, expires,
    /// revoked. Never their secrets.
    List {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// Print JSON (an array of objects).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Revoke a token: every node refuses it within seconds and its open
    /// streams end.
    Revoke {
        /// The token's id (from `token list`), not its secret.
        id: String,
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// Why, for the audit trail.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

pub async fn tenant(cmd: TenantCmd) -> Result<()> {
    let TenantCmd::Create {
        name,
        kms_key,
        backend,
    } = cmd;
    let backend = backend.into();
    let (archive, ring) = open_archive(&backend, &KeyCacheConfig::default()).await?;
    let key_arn = match (kms_key, ring) {
        (Some(arn), _) => arn,
        (None, Some(ring)) => ring.create_key()?,
        (None, None) => bail!("--kms-key ARN is required with --kms aws"),
    };
    let region = callvault::kms::arn_region(&key_arn)
        .unwrap_or(&backend.region)
        .to_owned();
    let tenant = callvault::operator::create_tenant(&archive, &name, &key_arn, &region).await?;
    println!(
        "tenant {} ({}) created with KMS key {key_arn}",
        tenant.name, tenant.id
    );
    Ok(())
}

pub async fn token(cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            tenant,
            role,
            expires_in,
            backend,
        } => {
            let role: Role = role.parse()?;
            let expires_at_ms = expires_in
                .map(|d| now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
            let (archive, _) = open_archive(&backend.into(), &KeyCacheConfig::default()).await?;
            let issued =
                callvault::operator::create_token(&archive, &tenant, role, expires_at_ms).await?;
            eprintln!(
                "token {} for tenant {tenant}, role {}, {}",
                issued.id,
                role.as_str(),
                issued
                    .expires_at_ms
                    .map_or("no expiry".to_owned(), |e| format!(
                        "expires {}",
                        format_ms(e)
                    ))
            );
            println!("{}", issued.secret.expose_secret());
        }
        TokenCmd::List {
            tenant,
            json,
            backend,
        } => {
            let (archive, _) = open_archive(&backend.into(), &KeyCacheConfig::default()).await?;
            let tokens = callvault::operator::list_tokens(&archive, &tenant).await?;
            crate::output::print_tokens(&tokens, json);
        }
        TokenCmd::Revoke {
            id,
            tenant,
            reason,
            backend,
        } => {
            let (archive, _) = open_archive(&backend.into(), &KeyCacheConfig::default()).await?;
            let info = callvault::operator::revoke_token(&archive, &tenant, &id, &reason).await?;
            println!(
                "token {} ({}) revoked; every node refuses it within seconds",
                info.id,
                info.role.as_str()
            );
        }
    }
    Ok(())
}
