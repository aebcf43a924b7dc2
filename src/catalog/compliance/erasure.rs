//! The erasure statements: locking what may be erased (one recording, or
//! the due ones across tenants), destroying its rows, its tombstone and
//! announcement, and the check that no catalog row names it any more.

use sqlx::Row;

use super::super::Conn;
use super::super::rows::{self, corrupt, to_u32, to_u64};
use crate::domain::{KeyArn, RecordingId, TenantId};
use crate::error::Result;

/// What erasure needs of a recording, read under its row lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasable {
    pub tenant: TenantId,
    pub id: RecordingId,
    pub external_call_id: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub chunk_count: u32,
    pub created_at_ms: i64,
    pub key_arn: KeyArn,
    pub kms_region: String,
    pub retain_until_ms: Option<i64>,
    pub legal_hold: bool,
    /// Cache identity of the wrapped data key (to purge unwrapped copies).
    pub wrapped_key: Vec<u8>,
    pub wrap_algorithm: String,
    pub encryption_context: String,
}

macro_rules! erasable_select {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, recording_id, external_call_id, sha256, size_bytes, chunk_count, created_at_ms, \
             key_arn, kms_region, retain_until_ms, legal_hold, wrapped_key, wrap_algorithm, encryption_context \
             FROM recordings ",
            $rest
        )
    };
}

fn erasable(row: &sqlx::any::AnyRow) -> Result<Erasable> {
    Ok(Erasable {
        tenant: TenantId::from_catalog(row.try_get("tenant_id")?),
        id: rows::recording_id(row)?,
        external_call_id: row.try_get("external_call_id")?,
        sha256: row
            .try_get::<Option<String>, _>("sha256")?
            .ok_or_else(|| corrupt("recording digest"))?,
        size_bytes: to_u64(
            row.try_get::<Option<i64>, _>("size_bytes")?.unwrap_or(0),
            "size",
        )?,
        chunk_count: to_u32(
            row.try_get::<Option<i64>, _>("chunk_count")?.unwrap_or(0),
            "chunk count",
        )?,
        created_at_ms: row.try_get("created_at_ms")?,
        key_arn: rows::key_arn(&row.try_get::<String, _>("key_arn")?)?,
        kms_region: row.try_get("kms_region")?,
        retain_until_ms: row.try_get("retain_until_ms")?,
        legal_hold: row.try_get::<i64, _>("legal_hold")? != 0,
        wrapped_key: row.try_get("wrapped_key")?,
        wrap_algorithm: row.try_get("wrap_algorithm")?,
        encryption_context: row.try_get("encryption_context")?,
    })
}

/// A committed recording of the tenant, locked until the caller's
/// transaction ends (PostgreSQL: `FOR UPDATE`; SQLite's transaction already
/// holds the write lock).
pub async fn lock_erasable(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
) -> Result<Option<Erasable>> {
    let postgres = conn.backend_name() == "PostgreSQL";
    let query = if postgres {
        sqlx::query(erasable_select!(
            "WHERE tenant_id = $1 AND recording_id = $2 AND status = 'complete' FOR UPDATE"
        ))
    } else {
        sqlx::query(erasable_select!(
            "WHERE tenant_id = $1 AND recording_id = $2 AND status = 'complete'"
        ))
    };
    let row = query
        .bind(tenant.as_str())
        .bind(rec.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(erasable).transpose()
}

/// Up to `limit` recordings (any tenant) whose retention ran out before
/// `now_ms` and that no hold covers, oldest first, locked for the caller's
/// transaction. On PostgreSQL `FOR UPDATE SKIP LOCKED`: expiry jobs on
/// several nodes take disjoint batches, and a crash releases its batch.
/// SQLite (one node) has its write lock instead.
pub async fn lock_due(conn: &mut Conn, now_ms: i64, limit: u32) -> Result<Vec<Erasable>> {
    let postgres = conn.backend_name() == "PostgreSQL";
    let query = if postgres {
        sqlx::query(erasable_select!(
            "WHERE status = 'complete' AND legal_hold = 0 AND retain_until_ms <= $1 \
             ORDER BY retain_until_ms LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
    } else {
        sqlx::query(erasable_select!(
            "WHERE status = 'complete' AND legal_hold = 0 AND retain_until_ms <= $1 \
             ORDER BY retain_until_ms LIMIT $2"
        ))
    };
    let rows = query
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(erasable).collect()
}

/// How many recordings are due for erasure now (held ones excluded).
pub async fn due_count(conn: &mut Conn, now_ms: i64) -> Result<u64> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM recordings \
         WHERE status = 'complete' AND legal_hold = 0 AND retain_until_ms <= $1",
    )
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    to_u64(n, "count")
}

/// Destroys a locked, unheld recording's catalog rows (its wrapped data key
/// with them), writes its tombstone and queues its objects for deletion, in
/// the caller's transaction. False (nothing changed) if it is held or gone.
pub async fn erase(
    conn: &mut Conn,
    r: &Erasable,
    certificate_id: &str,
    erased_at_ms: i64,
) -> Result<bool> {
    let gone = sqlx::query(
        "DELETE FROM recordings WHERE tenant_id = $1 AND recording_id = $2 \
         AND status = 'complete' AND legal_hold = 0",
    )
    .bind(r.tenant.as_str())
    .bind(r.id.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if gone != 1 {
        return Ok(false);
    }
    // The foreign keys cascade; said again so the rule does not rest on the
    // engine's foreign-key setting.
    for table in [
        "DELETE FROM chunks WHERE tenant_id = $1 AND recording_id = $2",
        "DELETE FROM recording_index WHERE tenant_id = $1 AND recording_id = $2",
    ] {
        sqlx::query(table)
            .bind(r.tenant.as_str())
            .bind(r.id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "INSERT INTO erased_recordings (tenant_id, recording_id, external_call_id, sha256, size_bytes, \
         ingested_at_ms, erased_at_ms, key_arn, chunk_count, certificate_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(r.tenant.as_str())
    .bind(r.id.to_string())
    .bind(&r.external_call_id)
    .bind(&r.sha256)
    .bind(i64::try_from(r.size_bytes).map_err(|_| corrupt("size"))?)
    .bind(r.created_at_ms)
    .bind(erased_at_ms)
    .bind(r.key_arn.as_str())
    .bind(i64::from(r.chunk_count))
    .bind(certificate_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO object_deletions (tenant_id, recording_id, reason, queued_at_ms) \
         VALUES ($1, $2, 'erased', $3) ON CONFLICT DO NOTHING",
    )
    .bind(r.tenant.as_str())
    .bind(r.id.to_string())
    .bind(erased_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Announces an erased recording to every node (PostgreSQL NOTIFY, sent in
/// the caller's transaction: delivered when it commits, so a crash right
/// after the commit cannot lose it). A no-op on SQLite (one node).
pub async fn notify_erased(conn: &mut Conn, tenant: &TenantId, rec: &RecordingId) -> Result<()> {
    if conn.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::catalog::RECORDING_ERASED_CHANNEL)
            .bind(format!("{tenant}/{rec}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// What is left of an erased recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: RecordingId,
    pub external_call_id: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub ingested_at_ms: i64,
    pub erased_at_ms: i64,
    pub key_arn: KeyArn,
    pub chunk_count: u32,
    pub certificate_id: String,
}

macro_rules! tombstone_select {
    ($rest:literal) => {
        concat!(
            "SELECT recording_id, external_call_id, sha256, size_bytes, ingested_at_ms, erased_at_ms, \
             key_arn, chunk_count, certificate_id FROM erased_recordings ",
            $rest
        )
    };
}

fn tombstone_row(row: &sqlx::any::AnyRow) -> Result<Tombstone> {
    Ok(Tombstone {
        id: rows::recording_id(row)?,
        external_call_id: row.try_get("external_call_id")?,
        sha256: row.try_get("sha256")?,
        size_bytes: to_u64(row.try_get("size_bytes")?, "size")?,
        ingested_at_ms: row.try_get("ingested_at_ms")?,
        erased_at_ms: row.try_get("erased_at_ms")?,
        key_arn: rows::key_arn(&row.try_get::<String, _>("key_arn")?)?,
        chunk_count: to_u32(row.try_get("chunk_count")?, "chunk count")?,
        certificate_id: row.try_get("certificate_id")?,
    })
}

pub async fn tombstone(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
) -> Result<Option<Tombstone>> {
    let row = sqlx::query(tombstone_select!(
        "WHERE tenant_id = $1 AND recording_id = $2"
    ))
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(tombstone_row).transpose()
}

/// The erased recording of a call, if any (the newest).
pub async fn tombstone_of_call(
    conn: &mut Conn,
    tenant: &TenantId,
    call_id: &str,
) -> Result<Option<Tombstone>> {
    let row = sqlx::query(tombstone_select!(
        "WHERE tenant_id = $1 AND external_call_id = $2 ORDER BY erased_at_ms DESC LIMIT 1"
    ))
    .bind(tenant.as_str())
    .bind(call_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(tombstone_row).transpose()
}

pub async fn certificate_tombstones(
    conn: &mut Conn,
    tenant: &TenantId,
    certificate_id: &str,
) -> Result<Vec<Tombstone>> {
    let rows = sqlx::query(tombstone_select!(
        "WHERE tenant_id = $1 AND certificate_id = $2 ORDER BY recording_id"
    ))
    .bind(tenant.as_str())
    .bind(certificate_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(tombstone_row).collect()
}

/// Whether any catalog row still names the recording (the check a
/// certificate reports: the wrapped data key is gone with the row).
pub async fn catalog_still_holds(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
) -> Result<bool> {
    let n: i64 = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM recordings WHERE tenant_id = $1 AND recording_id = $2) \
              + (SELECT COUNT(*) FROM chunks WHERE tenant_id = $1 AND recording_id = $2) \
              + (SELECT COUNT(*) FROM recording_index WHERE tenant_id = $1 AND recording_id = $2) AS n",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    Ok(n > 0)
}
