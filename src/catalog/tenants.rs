//! Tenants and their settings.

use sqlx::Row;

use super::rows::{corrupt, to_u32};
use super::{Conn, keys};
use crate::domain::{KeyArn, TenantId, now_ms};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
}

/// A freshly created tenant and its first tokens (printed once, never
/// stored; redacted from `Debug`).
#[derive(Clone)]
pub struct TenantBootstrap {
    pub tenant: Tenant,
    pub ingest_token: String,
    pub supervisor_token: String,
    pub admin_token: String,
    pub compliance_token: String,
}

impl std::fmt::Debug for TenantBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantBootstrap")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Tenant names are for humans: 1..=128 of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::invalid(
            "name",
            "must be 1..=128 characters of [A-Za-z0-9._-]",
        ));
    }
    Ok(())
}

/// Creates a tenant with its first (active) KMS key.
pub async fn create(conn: &mut Conn, name: &str, key_arn: &KeyArn, region: &str) -> Result<Tenant> {
    validate_name(name)?;
    let id = TenantId::new_random();
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO tenants (tenant_id, name, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Error::TenantExists(name.to_owned()));
    }
    keys::insert_active(
        conn,
        &id,
        &keys::NewTenantKey::symmetric(key_arn, region),
        now,
    )
    .await?;
    Ok(Tenant {
        id,
        name: name.to_owned(),
    })
}

pub async fn by_name(conn: &mut Conn, name: &str) -> Result<Tenant> {
    let row = sqlx::query("SELECT tenant_id, name FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::TenantNotFound(name.to_owned()))?;
    tenant_of(&row)
}

fn tenant_of(row: &sqlx::any::AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        id: TenantId::from_catalog(row.try_get("tenant_id")?),
        name: row.try_get("name")?,
    })
}

/// A tenant as `tenant list` shows it.
#[derive(Debug, Clone)]
pub struct TenantSummary {
    pub tenant: Tenant,
    pub created_at_ms: i64,
    /// The active KMS key.
    pub key_arn: Option<String>,
    /// Committed recordings.
    pub recordings: u64,
}

/// Every tenant, by name (an operator's view: no tenant scoping).
pub async fn list(conn: &mut Conn) -> Result<Vec<TenantSummary>> {
    let rows = sqlx::query(
        "SELECT t.tenant_id, t.name, t.created_at_ms, \
         (SELECT k.key_arn FROM tenant_keys k WHERE k.tenant_id = t.tenant_id AND k.status = 'active') AS key_arn, \
         (SELECT COUNT(*) FROM recordings r WHERE r.tenant_id = t.tenant_id AND r.status = 'complete') AS recordings \
         FROM tenants t ORDER BY t.name",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TenantSummary {
                tenant: tenant_of(r)?,
                created_at_ms: r.try_get("created_at_ms")?,
                key_arn: r.try_get("key_arn")?,
                recordings: u64::try_from(r.try_get::<i64, _>("recordings")?)
                    .map_err(|_| corrupt("recording count"))?,
            })
        })
        .collect()
}

/// The tenant of `id`.
pub async fn get(conn: &mut Conn, id: &TenantId) -> Result<Tenant> {
    let row = sqlx::query("SELECT tenant_id, name FROM tenants WHERE tenant_id = $1")
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::TenantNotFound(id.as_str().to_owned()))?;
    tenant_of(&row)
}

/// The tenant's key-rotation policy, in days.
pub async fn rotation_policy_days(conn: &mut Conn, tenant: &TenantId) -> Result<u32> {
    let row = sqlx::query("SELECT key_rotation_days FROM tenants WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::TenantNotFound(tenant.to_string()))?;
    to_u32(row.try_get("key_rotation_days")?, "rotation policy")
        .map_err(|_| corrupt("rotation policy"))
}

pub async fn set_rotation_policy_days(conn: &mut Conn, tenant: &TenantId, days: u32) -> Result<()> {
    sqlx::query("UPDATE tenants SET key_rotation_days = $2 WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .bind(i64::from(days))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The tenant's playback-URL revocation epoch (URLs signed under an older
/// one no longer work).
pub async fn url_epoch(conn: &mut Conn, tenant: &TenantId) -> Result<u64> {
    let row = sqlx::query("SELECT url_epoch FROM tenants WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::TenantNotFound(tenant.to_string()))?;
    u64::try_from(row.try_get::<i64, _>("url_epoch")?).map_err(|_| corrupt("url epoch"))
}

/// Moves the tenant to the next URL epoch and returns it: every playback
/// URL issued before stops working.
pub async fn bump_url_epoch(conn: &mut Conn, tenant: &TenantId) -> Result<u64> {
    sqlx::query("UPDATE tenants SET url_epoch = url_epoch + 1 WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .execute(&mut *conn)
        .await?;
    url_epoch(conn, tenant).await
}
