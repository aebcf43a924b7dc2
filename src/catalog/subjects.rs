//! The search index for data-subject requests: the tenant's wrapped index
//! key, and `recording_index` rows (blind-index digests of a recording's
//! participants and labels). Digests are opaque here; `compliance::subjects`
//! computes them.

use sqlx::Row;

use super::Conn;
use super::rows::{self, algorithm_of, recording_select, to_u64};
use crate::catalog::RecordingRow;
use crate::domain::{KeyArn, RecordingId, TenantId, now_ms};
use crate::error::Result;
use crate::kms::WrapAlgorithm;

/// A tenant's index key as stored: wrapped by its KMS key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKeyRow {
    pub key_arn: KeyArn,
    pub kms_region: String,
    pub algorithm: WrapAlgorithm,
    pub wrapped_key: Vec<u8>,
}

pub async fn index_key(conn: &mut Conn, tenant: &TenantId) -> Result<Option<IndexKeyRow>> {
    let row = sqlx::query(
        "SELECT key_arn, kms_region, wrap_algorithm, wrapped_key FROM tenant_index_keys WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(IndexKeyRow {
            key_arn: rows::key_arn(&r.try_get::<String, _>("key_arn")?)?,
            kms_region: r.try_get("kms_region")?,
            algorithm: algorithm_of(&r.try_get::<String, _>("wrap_algorithm")?)?,
            wrapped_key: r.try_get("wrapped_key")?,
        })
    })
    .transpose()
}

/// Stores the tenant's index key unless another node stored one first (the
/// caller then reads that one back).
pub async fn insert_index_key(conn: &mut Conn, tenant: &TenantId, k: &IndexKeyRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenant_index_keys (tenant_id, key_arn, kms_region, wrap_algorithm, wrapped_key, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(k.key_arn.as_str())
    .bind(&k.kms_region)
    .bind(k.algorithm.as_str())
    .bind(&k.wrapped_key)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces the index key's wrapping if it is still `old` (compare-and-set,
/// like a rewrap of a recording). Returns whether it changed.
pub async fn rewrap_index_key(
    conn: &mut Conn,
    tenant: &TenantId,
    old: &[u8],
    new: &IndexKeyRow,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE tenant_index_keys SET key_arn = $3, kms_region = $4, wrap_algorithm = $5, wrapped_key = $6 \
         WHERE tenant_id = $1 AND wrapped_key = $2",
    )
    .bind(tenant.as_str())
    .bind(old)
    .bind(new.key_arn.as_str())
    .bind(&new.kms_region)
    .bind(new.algorithm.as_str())
    .bind(&new.wrapped_key)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

/// Whether the tenant's index key is wrapped under `key_arn`.
pub async fn index_key_under(conn: &mut Conn, tenant: &TenantId, key_arn: &KeyArn) -> Result<bool> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM tenant_index_keys WHERE tenant_id = $1 AND key_arn = $2",
    )
    .bind(tenant.as_str())
    .bind(key_arn.as_str())
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    Ok(n > 0)
}

/// Adds a recording's digests and marks it indexed.
pub async fn add_digests(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
    digests: &[[u8; 32]],
) -> Result<()> {
    for d in digests {
        sqlx::query(
            "INSERT INTO recording_index (tenant_id, recording_id, digest) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(rec.to_string())
        .bind(d.to_vec())
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE recordings SET indexed = 1 WHERE tenant_id = $1 AND recording_id = $2")
        .bind(tenant.as_str())
        .bind(rec.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Committed recordings (any tenant) not in the index yet.
pub async fn unindexed(conn: &mut Conn, limit: u32) -> Result<Vec<RecordingRow>> {
    let rows = sqlx::query(recording_select!(
        "WHERE indexed = 0 AND status = 'complete' ORDER BY tenant_id, recording_id LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(rows::recording).collect()
}

pub async fn unindexed_count(conn: &mut Conn, tenant: &TenantId) -> Result<u64> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM recordings WHERE tenant_id = $1 AND indexed = 0 AND status = 'complete'",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    to_u64(n, "count")
}

/// Committed recordings with `digest`, in id order after `after`.
pub async fn with_digest(
    conn: &mut Conn,
    tenant: &TenantId,
    digest: &[u8; 32],
    after: Option<&RecordingId>,
    limit: u32,
) -> Result<Vec<RecordingRow>> {
    let rows = sqlx::query(recording_select!(
        "WHERE tenant_id = $1 AND status = 'complete' AND recording_id > $3 \
         AND recording_id IN (SELECT recording_id FROM recording_index WHERE tenant_id = $1 AND digest = $2) \
         ORDER BY recording_id LIMIT $4"
    ))
    .bind(tenant.as_str())
    .bind(digest.to_vec())
    .bind(after.map(|a| a.to_string()).unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(rows::recording).collect()
}

/// Adds to a hold every committed recording with `digest`: one statement.
pub async fn add_hold_digest(
    conn: &mut Conn,
    tenant: &TenantId,
    hold_id: &str,
    digest: &[u8; 32],
) -> Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO legal_hold_recordings (tenant_id, hold_id, recording_id) \
         SELECT r.tenant_id, $2, r.recording_id FROM recordings r \
         JOIN recording_index i ON i.tenant_id = r.tenant_id AND i.recording_id = r.recording_id \
         WHERE r.tenant_id = $1 AND r.status = 'complete' AND i.digest = $3 \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .bind(digest.to_vec())
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Removes from a hold (being placed) the members without `digest`: how a
/// window hold is narrowed to recordings carrying a label, one statement
/// per label.
pub async fn keep_hold_members_with(
    conn: &mut Conn,
    tenant: &TenantId,
    hold_id: &str,
    digest: &[u8; 32],
) -> Result<()> {
    sqlx::query(
        "DELETE FROM legal_hold_recordings WHERE tenant_id = $1 AND hold_id = $2 \
         AND recording_id NOT IN (SELECT recording_id FROM recording_index \
                                  WHERE tenant_id = $1 AND digest = $3)",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .bind(digest.to_vec())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
