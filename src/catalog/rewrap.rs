//! Rewrap jobs: moving a tenant's wrapped data keys from one KMS key to
//! another. The work items are the recording rows themselves.

use sqlx::Row;

use super::Conn;
use super::keys::count_under;
use super::rows::{self, algorithm_of, job_select};
use crate::domain::{JobStatus, KeyArn, RecordingId, TenantId, now_ms};
use crate::error::{Error, Result};
use crate::kms::WrapAlgorithm;

/// A background job moving a tenant's wrapped data keys from one KMS key to
/// another with ReEncrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapJob {
    pub id: String,
    pub tenant: TenantId,
    pub source_arn: KeyArn,
    pub destination_arn: KeyArn,
    pub status: JobStatus,
    pub max_kms_per_sec: u32,
    /// Recordings under the source key when the job started.
    pub total: u64,
    /// Recordings moved so far (committed, exact).
    pub rewrapped: u64,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// A wrapped data key leased for rewrapping.
#[derive(Debug, Clone)]
pub struct LeasedKey {
    pub recording: RecordingId,
    pub wrapped_key: Vec<u8>,
    pub algorithm: WrapAlgorithm,
}

/// The new wrapping of one leased key.
#[derive(Debug, Clone)]
pub struct Rewrapped {
    pub recording: RecordingId,
    pub old_wrapped_key: Vec<u8>,
    pub key_arn: KeyArn,
    pub region: String,
    pub algorithm: WrapAlgorithm,
    pub wrapped_key: Vec<u8>,
}

/// Records a running rewrap job. Both keys must be in the tenant's history;
/// one job per tenant runs at a time. Run it in a transaction.
pub async fn start(
    conn: &mut Conn,
    tenant: &TenantId,
    source: &KeyArn,
    destination: &KeyArn,
    max_kms_per_sec: u32,
) -> Result<RewrapJob> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let total = count_under(conn, tenant, source).await?;
    let res = sqlx::query(
        "INSERT INTO rewrap_jobs (job_id, tenant_id, source_arn, destination_arn, status, \
         max_kms_per_sec, total, rewrapped, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, 'running', $5, $6, 0, $7, $7)",
    )
    .bind(&id)
    .bind(tenant.as_str())
    .bind(source.as_str())
    .bind(destination.as_str())
    .bind(i64::from(max_kms_per_sec))
    .bind(i64::try_from(total).unwrap_or(i64::MAX))
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(Error::RewrapAlreadyRunning);
        }
        Err(e) => return Err(e.into()),
    }
    get(conn, tenant, &id).await
}

pub async fn get(conn: &mut Conn, tenant: &TenantId, id: &str) -> Result<RewrapJob> {
    let row = sqlx::query(job_select!("WHERE tenant_id = $1 AND job_id = $2"))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::JobNotFound(id.to_owned()))?;
    rows::job(&row)
}

/// The tenant's last 100 jobs, newest first.
pub async fn list(conn: &mut Conn, tenant: &TenantId) -> Result<Vec<RewrapJob>> {
    let rows = sqlx::query(job_select!(
        "WHERE tenant_id = $1 ORDER BY created_at_ms DESC LIMIT 100"
    ))
    .bind(tenant.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(rows::job).collect()
}

/// The tenant's running job that reads from (`"source"`) or writes to
/// (`"destination"`) `key_arn`, if any.
pub async fn running_with_key(
    conn: &mut Conn,
    tenant: &TenantId,
    key_arn: &KeyArn,
) -> Result<Option<(String, &'static str)>> {
    let row = sqlx::query(
        "SELECT job_id, source_arn FROM rewrap_jobs \
         WHERE tenant_id = $1 AND status = 'running' AND (source_arn = $2 OR destination_arn = $2) \
         LIMIT 1",
    )
    .bind(tenant.as_str())
    .bind(key_arn.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        let source: String = r.try_get("source_arn")?;
        let role = if source == key_arn.as_str() {
            "source"
        } else {
            "destination"
        };
        Ok((r.try_get("job_id")?, role))
    })
    .transpose()
}

/// Running jobs of every tenant: what each node's worker picks up.
pub async fn running(conn: &mut Conn) -> Result<Vec<RewrapJob>> {
    let rows = sqlx::query(job_select!(
        "WHERE status = 'running' ORDER BY created_at_ms"
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(rows::job).collect()
}

/// Leases up to `limit` recordings still wrapped under the job's source key,
/// in the caller's transaction. On PostgreSQL the rows are locked with
/// `FOR UPDATE SKIP LOCKED` until that transaction ends, so workers on
/// several nodes never take the same recording, and a crash (the
/// transaction rolls back) makes them available again. SQLite (single node)
/// has no row locks; the compare-and-set in [`commit_batch`] is what keeps
/// a key from moving twice. The one statement that differs by backend.
pub async fn lease_batch(conn: &mut Conn, job: &RewrapJob, limit: u32) -> Result<Vec<LeasedKey>> {
    let postgres = conn.backend_name() == "PostgreSQL";
    let query = if postgres {
        sqlx::query(
            "SELECT recording_id, wrapped_key, wrap_algorithm FROM recordings \
             WHERE tenant_id = $1 AND key_arn = $2 ORDER BY recording_id LIMIT $3 \
             FOR UPDATE SKIP LOCKED",
        )
    } else {
        sqlx::query(
            "SELECT recording_id, wrapped_key, wrap_algorithm FROM recordings \
             WHERE tenant_id = $1 AND key_arn = $2 ORDER BY recording_id LIMIT $3",
        )
    };
    let rows = query
        .bind(job.tenant.as_str())
        .bind(job.source_arn.as_str())
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(LeasedKey {
                recording: rows::recording_id(row)?,
                wrapped_key: row.try_get("wrapped_key")?,
                algorithm: algorithm_of(&row.try_get::<String, _>("wrap_algorithm")?)?,
            })
        })
        .collect()
}

/// Stores the new wrappings and advances the job's progress, in the
/// transaction that holds the lease. Each update is a compare-and-set on the
/// old wrapped key, so a key is moved at most once whatever happens
/// concurrently. Returns how many recordings moved.
pub async fn commit_batch(conn: &mut Conn, job: &RewrapJob, done: &[Rewrapped]) -> Result<u64> {
    let mut moved = 0u64;
    for r in done {
        let res = sqlx::query(
            "UPDATE recordings SET key_arn = $3, kms_region = $4, wrap_algorithm = $5, wrapped_key = $6, \
             updated_at_ms = $7 WHERE tenant_id = $1 AND recording_id = $2 AND key_arn = $8 AND wrapped_key = $9",
        )
        .bind(job.tenant.as_str())
        .bind(r.recording.to_string())
        .bind(r.key_arn.as_str())
        .bind(&r.region)
        .bind(r.algorithm.as_str())
        .bind(&r.wrapped_key)
        .bind(now_ms())
        .bind(job.source_arn.as_str())
        .bind(&r.old_wrapped_key)
        .execute(&mut *conn)
        .await?;
        moved += res.rows_affected();
    }
    sqlx::query(
        "UPDATE rewrap_jobs SET rewrapped = rewrapped + $2, updated_at_ms = $3 WHERE job_id = $1",
    )
    .bind(&job.id)
    .bind(i64::try_from(moved).unwrap_or(i64::MAX))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(moved)
}

/// Reserves `n` KMS requests of the job's per-second budget, shared by every
/// node working on it (a fixed one-second window in the job row). False when
/// the window is spent or the job no longer runs.
pub async fn reserve_budget(conn: &mut Conn, job: &RewrapJob, n: u32) -> Result<bool> {
    let now = now_ms();
    let res = sqlx::query(
        "UPDATE rewrap_jobs SET \
         budget_used = CASE WHEN budget_window_ms <= $2 - 1000 THEN $3 ELSE budget_used + $3 END, \
         budget_window_ms = CASE WHEN budget_window_ms <= $2 - 1000 THEN $2 ELSE budget_window_ms END \
         WHERE job_id = $1 AND status = 'running' \
         AND (budget_window_ms <= $2 - 1000 OR budget_used + $3 <= max_kms_per_sec)",
    )
    .bind(&job.id)
    .bind(now)
    .bind(i64::from(n))
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Ends a running job (`Succeeded`, `Failed` or `Cancelled`). Returns false
/// if it was no longer running (another node ended it).
pub async fn finish(
    conn: &mut Conn,
    tenant: &TenantId,
    id: &str,
    status: JobStatus,
    error: Option<&str>,
) -> Result<bool> {
    let now = now_ms();
    let res = sqlx::query(
        "UPDATE rewrap_jobs SET status = $3, error = $4, updated_at_ms = $5, finished_at_ms = $5 \
         WHERE tenant_id = $1 AND job_id = $2 AND status = 'running'",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(status.as_db())
    .bind(error)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Sets a failed job running again; it resumes where it stopped.
pub async fn resume(conn: &mut Conn, tenant: &TenantId, id: &str) -> Result<RewrapJob> {
    let res = sqlx::query(
        "UPDATE rewrap_jobs SET status = 'running', error = NULL, finished_at_ms = NULL, updated_at_ms = $3 \
         WHERE tenant_id = $1 AND job_id = $2 AND status = 'failed'",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await;
    match res {
        Ok(r) if r.rows_affected() == 1 => get(conn, tenant, id).await,
        Ok(_) => {
            let job = get(conn, tenant, id).await?;
            Err(Error::JobState {
                id: id.to_owned(),
                status: job.status,
                expected: "only a failed job can resume",
            })
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(Error::RewrapAlreadyRunning)
        }
        Err(e) => Err(e.into()),
    }
}
