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
    /// Create a tenant. Without --kms-key the local keyring creates one
    /// (and removes it again if the tenant cannot be created).
    Create {
        /// The tenant's name: 1 to 128 of A-Z a-z 0-9 . _ -
        name: String,
        /// The tenant's first KMS key (an AWS KMS key ARN with --kms aws).
        #[arg(long)]
        kms_key: Option<String>,
        /// Print JSON (an object).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// List the tenants: name, id, created, active KMS key, recordings.
    List {
        /// Print JSON (an array of objects).
        #[arg(long)]
        json: bool,
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
        /// Print JSON on stdout: the token with its id, role and expiry.
        #[arg(long)]
        json: bool,
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
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

pub async fn tenant(cmd: TenantCmd) -> Result<()> {
    match cmd {
        TenantCmd::Create {
            name,
            kms_key,
            json,
            backend,
        } => create(name, kms_key, json, backend).await,
        TenantCmd::List { json, backend } => {
            let (archive, _) = open_archive(&backend.into(), &KeyCacheConfig::default()).await?;
            let tenants = callvault::operator::list_tenants(&archive).await?;
            crate::output::print_tenants(&tenants, json);
            Ok(())
        }
    }
}

async fn create(
    name: String,
    kms_key: Option<String>,
    json: bool,
    backend: BackendArgs,
) -> Result<()> {
    let backend = backend.into();
    let (archive, ring) = open_archive(&backend, &KeyCacheConfig::default()).await?;
    callvault::catalog::tenants::validate_name(&name)?;
    // Refused before a key is made for it.
    if callvault::operator::tenant_exists(&archive, &name).await? {
        return Err(callvault::error::Error::TenantExists(name).into());
    }
    let (key_arn, made) = match (kms_key, ring) {
        (Some(arn), _) => (arn, None),
        (None, Some(ring)) => {
            let arn = ring.create_key()?;
            (arn.clone(), Some((ring, arn)))
        }
        (None, None) => bail!("--kms-key ARN is required with --kms aws"),
    };
    let region = callvault::kms::arn_region(&key_arn)
        .unwrap_or(&backend.region)
        .to_owned();
    let tenant = match callvault::operator::create_tenant(&archive, &name, &key_arn, &region).await
    {
        Ok(t) => t,
        Err(e) => {
            // The key made for it protects nothing: a failed attempt
            // leaves no orphan key in the keyring.
            if let Some((ring, arn)) = made
                && let Err(d) = ring.discard_unused_key(&arn)
            {
                tracing::warn!(key_arn = %arn, error = %d, "the key made for the tenant was not removed");
            }
            return Err(e.into());
        }
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "tenant_id": tenant.id.as_str(),
                "name": tenant.name,
                "key_arn": key_arn,
                "region": region,
            })
        );
    } else {
        println!(
            "tenant {} ({}) created with KMS key {key_arn}",
            tenant.name, tenant.id
        );
    }
    Ok(())
}

pub async fn token(cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            tenant,
            role,
            expires_in,
            json,
            backend,
        } => {
            let role: Role = role.parse()?;
            let expires_at_ms = expires_in
                .map(|d| now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
            let (archive, _) = open_archive(&backend.into(), &KeyCacheConfig::default()).await?;
            let issued =
                callvault::operator::create_token(&archive, &tenant, role, expires_at_ms).await?;
            if json {
                // The one place the secret is printed, as with the text.
                println!(
                    "{}",
                    serde_json::json!({
                        "token": issued.secret.expose_secret(),
                        "token_id": issued.id,
                        "tenant": tenant,
                        "role": role.as_str(),
                        "expires_at": issued.expires_at_ms.map(format_ms),
                    })
                );
                return Ok(());
            }
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
            json,
            backend,
        } => {
            let (archive, _) = open_archive(&backend.into(), &KeyCacheConfig::default()).await?;
            let info = callvault::operator::revoke_token(&archive, &tenant, &id, &reason).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "token_id": info.id,
                        "role": info.role.as_str(),
                        "revoked": true,
                    })
                );
                return Ok(());
            }
            println!(
                "token {} ({}) revoked; every node refuses it within seconds",
                info.id,
                info.role.as_str()
            );
        }
    }
    Ok(())
}
