//! The tenant key history: every KMS key a tenant has used, its state, its
//! last health check, and what it protects.

use std::collections::BTreeMap;

use sqlx::Row;

use super::Conn;
use super::rows::{self, corrupt, key_select, to_u64};
use crate::domain::{KeyArn, KeyHealthState, KeyStatus, TenantId, now_ms};
use crate::error::{Error, Result};
use crate::kms::WrapAlgorithm;

/// One entry of a tenant's key history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKey {
    pub key_arn: KeyArn,
    pub region: String,
    pub status: KeyStatus,
    /// KMS KeySpec (`SYMMETRIC_DEFAULT`, `RSA_2048`, …).
    pub key_spec: String,
    pub algorithm: WrapAlgorithm,
    /// DER SubjectPublicKeyInfo, pinned at registration (asymmetric keys).
    pub public_key: Option<Vec<u8>>,
    /// Multi-Region replicas: region -> replica ARN.
    pub replicas: BTreeMap<String, KeyArn>,
    pub registered_at_ms: i64,
    pub activated_at_ms: i64,
    pub deactivated_at_ms: Option<i64>,
    pub retired_at_ms: Option<i64>,
    pub health: Option<KeyHealthRecord>,
}

impl TenantKey {
    /// The ARN a node in `region` calls KMS with: the key itself in its home
    /// region, its multi-Region replica elsewhere, or none (a regional KMS
    /// endpoint cannot use a key of another region).
    pub fn arn_in(&self, region: &str) -> Option<&KeyArn> {
        if self.key_arn.region() == region {
            Some(&self.key_arn)
        } else {
            self.replicas.get(region)
        }
    }
}

/// The outcome of the last DescribeKey health check of a tenant key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHealthRecord {
    pub state: KeyHealthState,
    pub detail: Option<String>,
    pub deletion_date_ms: Option<i64>,
    pub checked_at_ms: i64,
}

/// What a key protects: committed and in-flight recordings wrapped under it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUsage {
    pub recordings: u64,
    pub bytes: u64,
    pub legal_hold: u64,
}

/// A key to make active (registration has already proven it usable).
#[derive(Debug, Clone)]
pub struct NewTenantKey {
    pub key_arn: KeyArn,
    pub region: String,
    pub key_spec: String,
    pub public_key: Option<Vec<u8>>,
    pub replicas: BTreeMap<String, KeyArn>,
}

impl NewTenantKey {
    pub fn symmetric(key_arn: &KeyArn, region: &str) -> Self {
        Self {
            key_arn: key_arn.clone(),
            region: region.to_owned(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            public_key: None,
            replicas: BTreeMap::new(),
        }
    }
}

pub async fn active(conn: &mut Conn, tenant: &TenantId) -> Result<TenantKey> {
    let row = sqlx::query(key_select!("WHERE tenant_id = $1 AND status = 'active'"))
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NoActiveKey)?;
    rows::key(&row)
}

/// One key of the tenant's history.
pub async fn get(
    conn: &mut Conn,
    tenant: &TenantId,
    key_arn: &KeyArn,
) -> Result<Option<TenantKey>> {
    let row = sqlx::query(key_select!("WHERE tenant_id = $1 AND key_arn = $2"))
        .bind(tenant.as_str())
        .bind(key_arn.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(rows::key).transpose()
}

/// The tenant's whole key history, oldest activation first, with what each
/// key protects.
pub async fn history(conn: &mut Conn, tenant: &TenantId) -> Result<Vec<(TenantKey, KeyUsage)>> {
    let rows = sqlx::query(key_select!(
        "WHERE tenant_id = $1 ORDER BY activated_at_ms, key_arn"
    ))
    .bind(tenant.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let usage = usage(conn, tenant).await?;
    rows.iter()
        .map(|row| {
            let key = rows::key(row)?;
            let u = usage.get(&key.key_arn).copied().unwrap_or_default();
            Ok((key, u))
        })
        .collect()
}

/// Recordings (any status: an upload in flight is protected too), bytes and
/// legal holds per key.
pub async fn usage(conn: &mut Conn, tenant: &TenantId) -> Result<BTreeMap<KeyArn, KeyUsage>> {
    let rows = sqlx::query(
        "SELECT key_arn, COUNT(*) AS recordings, \
         CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS bytes, \
         CAST(COALESCE(SUM(legal_hold), 0) AS BIGINT) AS held \
         FROM recordings WHERE tenant_id = $1 GROUP BY key_arn",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                rows::key_arn(&row.try_get::<String, _>("key_arn")?)?,
                KeyUsage {
                    recordings: to_u64(row.try_get("recordings")?, "count")?,
                    bytes: to_u64(row.try_get("bytes")?, "count")?,
                    legal_hold: to_u64(row.try_get("held")?, "count")?,
                },
            ))
        })
        .collect()
}

/// Makes `key` the tenant's active key; the previous active key stays in the
/// history as `previous` (it still protects its recordings). A key that is
/// already in the history is re-activated.
///
/// Registering the key that is already active only refreshes its details
/// (replicas, pinned public key): its activation time, which rotation
/// compliance measures, stays. Run it in a transaction.
pub async fn activate(conn: &mut Conn, tenant: &TenantId, key: &NewTenantKey) -> Result<TenantKey> {
    let now = now_ms();
    let replicas = rows::replicas_json(&key.replicas)?;
    let refreshed = sqlx::query(
        "UPDATE tenant_keys SET region = $3, key_spec = $4, public_key = $5, replicas = $6 \
         WHERE tenant_id = $1 AND key_arn = $2 AND status = 'active'",
    )
    .bind(tenant.as_str())
    .bind(key.key_arn.as_str())
    .bind(&key.region)
    .bind(&key.key_spec)
    .bind(&key.public_key)
    .bind(&replicas)
    .execute(&mut *conn)
    .await?;
    if refreshed.rows_affected() == 0 {
        sqlx::query(
            "UPDATE tenant_keys SET status = 'previous', deactivated_at_ms = $2 \
             WHERE tenant_id = $1 AND status = 'active'",
        )
        .bind(tenant.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        insert_active(conn, tenant, key, now).await?;
    }
    get(conn, tenant, &key.key_arn)
        .await?
        .ok_or_else(|| Error::CatalogCorrupt("key history (an activated key vanished)".into()))
}

/// True if another tenant's key history holds `key_arn`: one KMS key serves
/// one tenant, so a tenant's KMS audit log is its own.
pub async fn held_by_other_tenant(
    conn: &mut Conn,
    tenant: &TenantId,
    key_arn: &KeyArn,
) -> Result<bool> {
    let n: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM tenant_keys WHERE key_arn = $1 AND tenant_id <> $2")
            .bind(key_arn.as_str())
            .bind(tenant.as_str())
            .fetch_one(&mut *conn)
            .await?
            .try_get("n")?;
    Ok(n > 0)
}

/// Locks the tenant's key rows `arns` until the caller's transaction ends
/// (PostgreSQL row locks, taken in ARN order so two transactions locking
/// the same keys cannot deadlock; SQLite's write transaction already
/// excludes every other writer). Retiring a key and starting a rewrap job
/// that reads or writes it take this lock, so they cannot interleave.
pub async fn lock(conn: &mut Conn, tenant: &TenantId, arns: &[&KeyArn]) -> Result<()> {
    let mut sorted = arns.to_vec();
    sorted.sort();
    sorted.dedup();
    for arn in sorted {
        sqlx::query("UPDATE tenant_keys SET status = status WHERE tenant_id = $1 AND key_arn = $2")
            .bind(tenant.as_str())
            .bind(arn.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Marks a key retired. Refused while it is active, still protects a
/// recording (including an upload in flight), or a running rewrap job
/// reads from or writes to it. Run it in a transaction.
pub async fn retire(conn: &mut Conn, tenant: &TenantId, key_arn: &KeyArn) -> Result<TenantKey> {
    lock(conn, tenant, &[key_arn]).await?;
    if let Some((job_id, role)) = super::rewrap::running_with_key(conn, tenant, key_arn).await? {
        return Err(Error::KeyInRewrap {
            arn: key_arn.clone(),
            role,
            job_id,
        });
    }
    let key = get(conn, tenant, key_arn)
        .await?
        .ok_or_else(|| Error::KeyNotFound {
            arn: key_arn.clone(),
            context: " in the key history",
        })?;
    if key.status == KeyStatus::Active {
        return Err(Error::KeyIsActive {
            arn: key_arn.clone(),
            why: "; register another key first",
        });
    }
    let count = count_under(conn, tenant, key_arn).await?;
    if count > 0 {
        return Err(Error::KeyProtectsRecordings {
            arn: key_arn.clone(),
            count,
            holds: super::compliance::holds_under_key(conn, tenant, key_arn).await?,
        });
    }
    if super::subjects::index_key_under(conn, tenant, key_arn).await? {
        return Err(Error::KeyWrapsIndexKey(key_arn.clone()));
    }
    sqlx::query(
        "UPDATE tenant_keys SET status = 'retired', retired_at_ms = $3 \
         WHERE tenant_id = $1 AND key_arn = $2",
    )
    .bind(tenant.as_str())
    .bind(key_arn.as_str())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    get(conn, tenant, key_arn)
        .await?
        .ok_or_else(|| Error::CatalogCorrupt("key history (a retired key vanished)".into()))
}

/// Every key a health check should look at: all tenants, all keys not
/// retired.
pub async fn to_check(conn: &mut Conn) -> Result<Vec<(TenantId, TenantKey)>> {
    let rows = sqlx::query(key_select!(
        "WHERE status <> 'retired' ORDER BY tenant_id, activated_at_ms"
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                TenantId::from_catalog(row.try_get("tenant_id")?),
                rows::key(row)?,
            ))
        })
        .collect()
}

/// Records a key's health check. Returns whether this call changed the
/// key's state: of two checks finding the same new state at once (on one
/// node or two), exactly one sees `true`, so a new incident is reported
/// once. The state-changing update is conditional on the old state, which
/// the row lock (PostgreSQL) or the single writer (SQLite) makes atomic.
pub async fn record_health(
    conn: &mut Conn,
    tenant: &TenantId,
    key_arn: &KeyArn,
    health: &KeyHealthRecord,
) -> Result<bool> {
    let update = |condition: &'static str| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tenant_keys SET health_state = $3, health_detail = $4, deletion_date_ms = $5, \
             health_checked_at_ms = $6 WHERE tenant_id = $1 AND key_arn = $2{condition}"
        )))
        .bind(tenant.as_str())
        .bind(key_arn.as_str())
        .bind(health.state.as_db())
        .bind(health.detail.clone())
        .bind(health.deletion_date_ms)
        .bind(health.checked_at_ms)
    };
    let changed = update(" AND COALESCE(health_state, '') <> $3")
        .execute(&mut *conn)
        .await?
        .rows_affected()
        > 0;
    if !changed {
        update("").execute(&mut *conn).await?;
    }
    Ok(changed)
}

/// Recordings of any status wrapped under `key_arn`: what a key protects.
pub async fn count_under(conn: &mut Conn, tenant: &TenantId, key_arn: &KeyArn) -> Result<u64> {
    let n: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM recordings WHERE tenant_id = $1 AND key_arn = $2")
            .bind(tenant.as_str())
            .bind(key_arn.as_str())
            .fetch_one(&mut *conn)
            .await?
            .try_get("n")?;
    u64::try_from(n).map_err(|_| corrupt("count"))
}

pub(super) async fn insert_active(
    conn: &mut Conn,
    tenant: &TenantId,
    key: &NewTenantKey,
    now: i64,
) -> Result<()> {
    let replicas = rows::replicas_json(&key.replicas)?;
    sqlx::query(
        "INSERT INTO tenant_keys (tenant_id, key_arn, region, status, key_spec, public_key, replicas, \
         registered_at_ms, activated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         ON CONFLICT (tenant_id, key_arn) DO UPDATE SET status = $4, region = $3, key_spec = $5, \
         public_key = $6, replicas = $7, activated_at_ms = $8, deactivated_at_ms = NULL, retired_at_ms = NULL",
    )
    .bind(tenant.as_str())
    .bind(key.key_arn.as_str())
    .bind(&key.region)
    .bind(KeyStatus::Active.as_db())
    .bind(&key.key_spec)
    .bind(&key.public_key)
    .bind(replicas)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
