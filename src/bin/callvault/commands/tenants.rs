//! `callvault tenant` and `callvault token`: operator commands that work
//! directly on the catalog (no server needed).

use anyhow::{Result, bail};
use callvault::config::open_archive;
use callvault::domain::Role;
use callvault::kms::cache::KeyCacheConfig;
use clap::Subcommand;

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
    let TokenCmd::Create {
        tenant,
        role,
        backend,
    } = cmd;
    let role: Role = role.parse()?;
    let (archive, _) = open_archive(&backend.into(), &KeyCacheConfig::default()).await?;
    println!(
        "{}",
        callvault::operator::create_token(&archive, &tenant, role).await?
    );
    Ok(())
}
