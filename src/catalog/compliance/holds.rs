//! Legal holds and their members; `recordings.legal_hold` kept in step in
//! the transaction that places or releases a hold.

use sqlx::Row;

use super::super::Conn;
use super::super::rows::{self, to_u64};
use crate::domain::{KeyArn, RecordingId, TenantId, now_ms};
use crate::error::{Error, Result};

/// A legal hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalHold {
    pub hold_id: String,
    pub name: String,
    pub reason: String,
    /// What it was placed on (JSON).
    pub selector: String,
    pub recording_count: u64,
    pub placed_by: String,
    pub placed_at_ms: i64,
    pub released_by: Option<String>,
    pub release_reason: Option<String>,
    pub released_at_ms: Option<i64>,
}

macro_rules! hold_select {
    ($rest:literal) => {
        concat!(
            "SELECT hold_id, name, reason, selector, recording_count, placed_by, placed_at_ms, \
             released_by, release_reason, released_at_ms FROM legal_holds ",
            $rest
        )
    };
}

fn hold(row: &sqlx::any::AnyRow) -> Result<LegalHold> {
    Ok(LegalHold {
        hold_id: row.try_get("hold_id")?,
        name: row.try_get("name")?,
        reason: row.try_get("reason")?,
        selector: row.try_get("selector")?,
        recording_count: to_u64(row.try_get("recording_count")?, "hold size")?,
        placed_by: row.try_get("placed_by")?,
        placed_at_ms: row.try_get("placed_at_ms")?,
        released_by: row.try_get("released_by")?,
        release_reason: row.try_get("release_reason")?,
        released_at_ms: row.try_get("released_at_ms")?,
    })
}

/// Inserts a new active hold (its members are added next). A name taken by
/// an active hold is [`Error::HoldExists`].
pub async fn insert_hold(conn: &mut Conn, tenant: &TenantId, h: &LegalHold) -> Result<()> {
    let res = sqlx::query(
        "INSERT INTO legal_holds (tenant_id, hold_id, name, reason, selector, recording_count, \
         placed_by, placed_at_ms) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
    )
    .bind(tenant.as_str())
    .bind(&h.hold_id)
    .bind(&h.name)
    .bind(&h.reason)
    .bind(&h.selector)
    .bind(&h.placed_by)
    .bind(h.placed_at_ms)
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(Error::HoldExists(h.name.clone()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Adds one committed recording to a hold; false if the tenant has no such
/// committed recording.
pub async fn add_hold_member(
    conn: &mut Conn,
    tenant: &TenantId,
    hold_id: &str,
    rec: &RecordingId,
) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO legal_hold_recordings (tenant_id, hold_id, recording_id) \
         SELECT tenant_id, $2, recording_id FROM recordings \
         WHERE tenant_id = $1 AND recording_id = $3 AND status = 'complete' \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .bind(rec.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Adds the committed recording of a call to a hold; false if there is none.
pub async fn add_hold_call(
    conn: &mut Conn,
    tenant: &TenantId,
    hold_id: &str,
    call_id: &str,
) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO legal_hold_recordings (tenant_id, hold_id, recording_id) \
         SELECT tenant_id, $2, recording_id FROM recordings \
         WHERE tenant_id = $1 AND external_call_id = $3 AND status = 'complete' \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .bind(call_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Adds every committed recording whose call started (without a start
/// time: that was ingested) in `[from_ms, to_ms)`: one set-based statement
/// whatever the number. Returns how many were added.
pub async fn add_hold_window(
    conn: &mut Conn,
    tenant: &TenantId,
    hold_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO legal_hold_recordings (tenant_id, hold_id, recording_id) \
         SELECT tenant_id, $2, recording_id FROM recordings \
         WHERE tenant_id = $1 AND status = 'complete' \
         AND COALESCE(start_time_ms, created_at_ms) >= $3 AND COALESCE(start_time_ms, created_at_ms) < $4 \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .bind(from_ms)
    .bind(to_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Serializes the tenant's hold changes (placing and releasing) for the
/// caller's transaction: on PostgreSQL, a release computing "members of the
/// other active holds" must not run beside a placement it cannot see yet.
/// (SQLite transactions are serialized already.)
pub async fn lock_holds(conn: &mut Conn, tenant: &TenantId) -> Result<()> {
    sqlx::query("UPDATE tenants SET name = name WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Marks the hold's members held and records its size. Set-based. A member
/// erased while the hold was being placed (its row deleted by a transaction
/// that committed meanwhile) is dropped from the hold, not counted.
pub async fn activate_hold(conn: &mut Conn, tenant: &TenantId, hold_id: &str) -> Result<u64> {
    sqlx::query(
        "UPDATE recordings SET legal_hold = 1 WHERE tenant_id = $1 AND legal_hold = 0 \
         AND recording_id IN (SELECT recording_id FROM legal_hold_recordings \
                              WHERE tenant_id = $1 AND hold_id = $2)",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM legal_hold_recordings WHERE tenant_id = $1 AND hold_id = $2 \
         AND recording_id NOT IN (SELECT recording_id FROM recordings \
                                  WHERE tenant_id = $1 AND legal_hold = 1)",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .execute(&mut *conn)
    .await?;
    let count: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM legal_hold_recordings WHERE tenant_id = $1 AND hold_id = $2",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    sqlx::query(
        "UPDATE legal_holds SET recording_count = $3 WHERE tenant_id = $1 AND hold_id = $2",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .bind(count)
    .execute(&mut *conn)
    .await?;
    to_u64(count, "hold size")
}

/// The active hold named `name`, locked for the caller's transaction.
pub async fn active_hold(conn: &mut Conn, tenant: &TenantId, name: &str) -> Result<LegalHold> {
    // Taking the row's lock first (a no-op update) serializes two releases.
    sqlx::query(
        "UPDATE legal_holds SET name = name WHERE tenant_id = $1 AND name = $2 AND released_at_ms IS NULL",
    )
    .bind(tenant.as_str())
    .bind(name)
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(hold_select!(
        "WHERE tenant_id = $1 AND name = $2 AND released_at_ms IS NULL"
    ))
    .bind(tenant.as_str())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::HoldNotFound(name.to_owned()))?;
    hold(&row)
}

/// Releases a hold and clears the hold flag of its members that no other
/// active hold covers (set-based: the members of the other active holds
/// are one uncorrelated subquery, so a release is linear in the holds'
/// sizes on both engines). Returns how many recordings it freed.
pub async fn release_hold(
    conn: &mut Conn,
    tenant: &TenantId,
    hold_id: &str,
    by: &str,
    reason: &str,
) -> Result<u64> {
    sqlx::query(
        "UPDATE legal_holds SET released_at_ms = $3, released_by = $4, release_reason = $5 \
         WHERE tenant_id = $1 AND hold_id = $2 AND released_at_ms IS NULL",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .bind(now_ms())
    .bind(by)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query(
        "UPDATE recordings SET legal_hold = 0 WHERE tenant_id = $1 AND legal_hold = 1 \
         AND recording_id IN (SELECT recording_id FROM legal_hold_recordings \
                              WHERE tenant_id = $1 AND hold_id = $2) \
         AND recording_id NOT IN (SELECT m.recording_id FROM legal_hold_recordings m JOIN legal_holds h \
                                  ON h.tenant_id = m.tenant_id AND h.hold_id = m.hold_id \
                                  WHERE m.tenant_id = $1 AND h.released_at_ms IS NULL)",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// The tenant's holds, newest first; released ones only when asked.
pub async fn holds(
    conn: &mut Conn,
    tenant: &TenantId,
    include_released: bool,
) -> Result<Vec<LegalHold>> {
    let rows = sqlx::query(hold_select!(
        "WHERE tenant_id = $1 AND ($2 = 1 OR released_at_ms IS NULL) ORDER BY placed_at_ms DESC, name"
    ))
    .bind(tenant.as_str())
    .bind(i64::from(include_released))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(hold).collect()
}

/// A hold by name: the active one, else the most recently released.
pub async fn hold_by_name(conn: &mut Conn, tenant: &TenantId, name: &str) -> Result<LegalHold> {
    let row = sqlx::query(hold_select!(
        "WHERE tenant_id = $1 AND name = $2 \
         ORDER BY CASE WHEN released_at_ms IS NULL THEN 0 ELSE 1 END, placed_at_ms DESC LIMIT 1"
    ))
    .bind(tenant.as_str())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::HoldNotFound(name.to_owned()))?;
    hold(&row)
}

/// Members of a hold in id order after `after`.
pub async fn hold_members(
    conn: &mut Conn,
    tenant: &TenantId,
    hold_id: &str,
    after: Option<&RecordingId>,
    limit: u32,
) -> Result<Vec<RecordingId>> {
    let rows = sqlx::query(
        "SELECT recording_id FROM legal_hold_recordings WHERE tenant_id = $1 AND hold_id = $2 \
         AND recording_id > $3 ORDER BY recording_id LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(hold_id)
    .bind(after.map(|a| a.to_string()).unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(rows::recording_id).collect()
}

/// The names of the active holds on a recording.
pub async fn holds_on(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT h.name FROM legal_hold_recordings m JOIN legal_holds h \
         ON h.tenant_id = m.tenant_id AND h.hold_id = m.hold_id \
         WHERE m.tenant_id = $1 AND m.recording_id = $2 AND h.released_at_ms IS NULL ORDER BY h.name",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>("name")?))
        .collect()
}

/// The names of the active holds covering a recording wrapped under
/// `key_arn` (for key incidents and refusals).
pub async fn holds_under_key(
    conn: &mut Conn,
    tenant: &TenantId,
    key_arn: &KeyArn,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT DISTINCT h.name FROM legal_holds h \
         JOIN legal_hold_recordings m ON m.tenant_id = h.tenant_id AND m.hold_id = h.hold_id \
         JOIN recordings r ON r.tenant_id = m.tenant_id AND r.recording_id = m.recording_id \
         WHERE h.tenant_id = $1 AND h.released_at_ms IS NULL AND r.key_arn = $2 ORDER BY h.name",
    )
    .bind(tenant.as_str())
    .bind(key_arn.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>("name")?))
        .collect()
}
