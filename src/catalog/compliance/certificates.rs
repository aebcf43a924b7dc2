//! Deletion certificates as stored (pending until their objects are
//! verified gone, then the signed document), and the tombstones each
//! one covers.

use sqlx::Row;

use super::super::Conn;
use super::super::rows::{corrupt, to_u64};
use crate::domain::TenantId;
use crate::error::{Error, Result};

/// A deletion certificate as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRow {
    pub tenant: TenantId,
    pub certificate_id: String,
    /// False while objects are still to be deleted and verified.
    pub complete: bool,
    pub actor: String,
    /// True for the expiry job, false for a request.
    pub by_expiry: bool,
    pub reason: String,
    pub override_retention: bool,
    pub recording_count: u64,
    pub audit_index: u64,
    pub erased_at_ms: i64,
    pub completed_at_ms: Option<i64>,
    pub document: Option<String>,
}

macro_rules! certificate_select {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, certificate_id, status, actor, erase_trigger, reason, override_retention, recording_count, \
             audit_index, erased_at_ms, completed_at_ms, document FROM deletion_certificates ",
            $rest
        )
    };
}

fn certificate_row(row: &sqlx::any::AnyRow) -> Result<CertificateRow> {
    let status: String = row.try_get("status")?;
    Ok(CertificateRow {
        tenant: TenantId::from_catalog(row.try_get("tenant_id")?),
        certificate_id: row.try_get("certificate_id")?,
        complete: match status.as_str() {
            "complete" => true,
            "objects_pending" => false,
            _ => return Err(corrupt("certificate status")),
        },
        actor: row.try_get("actor")?,
        by_expiry: match row.try_get::<String, _>("erase_trigger")?.as_str() {
            "retention_expiry" => true,
            "request" => false,
            _ => return Err(corrupt("erasure trigger")),
        },
        reason: row.try_get("reason")?,
        override_retention: row.try_get::<i64, _>("override_retention")? != 0,
        recording_count: to_u64(row.try_get("recording_count")?, "count")?,
        audit_index: to_u64(row.try_get("audit_index")?, "audit index")?,
        erased_at_ms: row.try_get("erased_at_ms")?,
        completed_at_ms: row.try_get("completed_at_ms")?,
        document: row.try_get("document")?,
    })
}

/// Records a pending certificate in the erasure's transaction.
pub async fn insert_certificate(conn: &mut Conn, c: &CertificateRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO deletion_certificates (tenant_id, certificate_id, status, actor, reason, \
         override_retention, recording_count, audit_index, erased_at_ms, erase_trigger) \
         VALUES ($1, $2, 'objects_pending', $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(c.tenant.as_str())
    .bind(&c.certificate_id)
    .bind(&c.actor)
    .bind(&c.reason)
    .bind(i64::from(c.override_retention))
    .bind(i64::try_from(c.recording_count).map_err(|_| corrupt("count"))?)
    .bind(i64::try_from(c.audit_index).map_err(|_| corrupt("audit index"))?)
    .bind(c.erased_at_ms)
    .bind(if c.by_expiry {
        "retention_expiry"
    } else {
        "request"
    })
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores the signed document and marks the certificate complete (once).
pub async fn complete_certificate(
    conn: &mut Conn,
    tenant: &TenantId,
    certificate_id: &str,
    document: &str,
    at_ms: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE deletion_certificates SET status = 'complete', document = $3, completed_at_ms = $4 \
         WHERE tenant_id = $1 AND certificate_id = $2 AND status = 'objects_pending'",
    )
    .bind(tenant.as_str())
    .bind(certificate_id)
    .bind(document)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

pub async fn certificate(
    conn: &mut Conn,
    tenant: &TenantId,
    certificate_id: &str,
) -> Result<CertificateRow> {
    let row = sqlx::query(certificate_select!(
        "WHERE tenant_id = $1 AND certificate_id = $2"
    ))
    .bind(tenant.as_str())
    .bind(certificate_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::CertificateNotFound(certificate_id.to_owned()))?;
    certificate_row(&row)
}

/// The tenant's certificates, newest first.
pub async fn certificates(
    conn: &mut Conn,
    tenant: &TenantId,
    limit: u32,
) -> Result<Vec<CertificateRow>> {
    let rows = sqlx::query(certificate_select!(
        "WHERE tenant_id = $1 ORDER BY erased_at_ms DESC, certificate_id LIMIT $2"
    ))
    .bind(tenant.as_str())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(certificate_row).collect()
}

/// How many certificates (any tenant) wait for their objects.
pub async fn pending_certificate_count(conn: &mut Conn) -> Result<u64> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM deletion_certificates WHERE status = 'objects_pending'",
    )
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    to_u64(n, "count")
}

/// Pending certificates (any tenant), oldest first.
pub async fn pending_certificates(conn: &mut Conn, limit: u32) -> Result<Vec<CertificateRow>> {
    let rows = sqlx::query(certificate_select!(
        "WHERE status = 'objects_pending' ORDER BY erased_at_ms LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(certificate_row).collect()
}

/// True while any recording of the certificate still has objects queued
/// for deletion.
pub async fn certificate_objects_queued(
    conn: &mut Conn,
    tenant: &TenantId,
    certificate_id: &str,
) -> Result<bool> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM object_deletions d JOIN erased_recordings e \
         ON e.tenant_id = d.tenant_id AND e.recording_id = d.recording_id \
         WHERE e.tenant_id = $1 AND e.certificate_id = $2",
    )
    .bind(tenant.as_str())
    .bind(certificate_id)
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    Ok(n > 0)
}
