//! Retention rules, legal holds, erasure (tombstones and the object-deletion
//! queue) and deletion certificates.
//!
//! Erasure is crypto-shredding: the recording's row, which holds the only
//! copy of its wrapped data key the catalog keeps, is deleted in the same
//! transaction that writes its tombstone, its certificate (pending until its
//! objects are verified gone) and its audit event, and queues its objects
//! for deletion. A recording with an active legal hold is never deleted:
//! the delete statement itself requires `legal_hold = 0`, so a hold that
//! commits first wins whatever the interleaving.

use sqlx::Row;

use super::Conn;
use super::rows::{self, corrupt, to_u32, to_u64};
use crate::domain::{KeyArn, RecordingId, TenantId, now_ms};
use crate::error::{Error, Result};

const DAY_MS: i64 = 86_400_000;

/// A retention rule: the tenant's default (no label) or a rule on one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRule {
    pub label: Option<(String, String)>,
    pub days: u32,
    pub updated_at_ms: i64,
}

impl RetentionRule {
    /// The rule's name as recordings store it: `""` for the default, `k=v`.
    pub fn code(&self) -> String {
        rule_code(self.label.as_ref().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// `""` for the default rule, `k=v` for a label rule.
pub fn rule_code(label: Option<(&str, &str)>) -> String {
    label.map(|(k, v)| format!("{k}={v}")).unwrap_or_default()
}

/// When a recording created at `created_at_ms` may be erased under a rule
/// of `days`.
pub fn retain_until(created_at_ms: i64, days: u32) -> i64 {
    created_at_ms.saturating_add(i64::from(days).saturating_mul(DAY_MS))
}

pub async fn retention_rules(conn: &mut Conn, tenant: &TenantId) -> Result<Vec<RetentionRule>> {
    let rows = sqlx::query(
        "SELECT label_key, label_value, days, updated_at_ms FROM retention_rules \
         WHERE tenant_id = $1 ORDER BY label_key, label_value",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let key: String = row.try_get("label_key")?;
            let value: String = row.try_get("label_value")?;
            Ok(RetentionRule {
                label: (!key.is_empty()).then_some((key, value)),
                days: to_u32(row.try_get("days")?, "retention days")?,
                updated_at_ms: row.try_get("updated_at_ms")?,
            })
        })
        .collect()
}

/// Sets (or with `days = None` removes) one rule. Returns the previous
/// period of that rule.
pub async fn put_retention_rule(
    conn: &mut Conn,
    tenant: &TenantId,
    label: Option<(&str, &str)>,
    label_digest: Option<&[u8; 32]>,
    days: Option<u32>,
) -> Result<Option<u32>> {
    let (key, value) = label.unwrap_or(("", ""));
    let previous: Option<i64> = sqlx::query(
        "SELECT days FROM retention_rules WHERE tenant_id = $1 AND label_key = $2 AND label_value = $3",
    )
    .bind(tenant.as_str())
    .bind(key)
    .bind(value)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| row.try_get("days"))
    .transpose()?;
    match days {
        Some(days) => {
            sqlx::query(
                "INSERT INTO retention_rules (tenant_id, label_key, label_value, days, updated_at_ms, label_digest) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, label_key, label_value) \
                 DO UPDATE SET days = $4, updated_at_ms = $5, label_digest = $6",
            )
            .bind(tenant.as_str())
            .bind(key)
            .bind(value)
            .bind(i64::from(days))
            .bind(now_ms())
            .bind(label_digest.map(|d| d.to_vec()))
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query(
                "DELETE FROM retention_rules WHERE tenant_id = $1 AND label_key = $2 AND label_value = $3",
            )
            .bind(tenant.as_str())
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?;
        }
    }
    previous.map(|d| to_u32(d, "retention days")).transpose()
}

/// The label rule that decides an indexed recording: the longest of the
/// tenant's label rules whose label digest the recording carries (a
/// correlated subquery over `recordings`).
macro_rules! best_rule {
    ($what:literal) => {
        concat!(
            "(SELECT ",
            $what,
            " FROM retention_rules rr JOIN recording_index ri \
             ON ri.tenant_id = rr.tenant_id AND ri.digest = rr.label_digest \
             WHERE rr.tenant_id = recordings.tenant_id AND ri.recording_id = recordings.recording_id \
             AND rr.label_key <> '' ORDER BY rr.days DESC, rr.label_key, rr.label_value LIMIT 1)"
        )
    };
}

/// Applies the tenant's whole policy to its indexed recordings (committed
/// and uploads in flight, which commit with what this sets),
/// set-based: those carrying a rule's label follow the longest such rule,
/// the others the default (`default_days`, `None`: no period). Returns how
/// many changed.
pub async fn reevaluate_indexed(
    conn: &mut Conn,
    tenant: &TenantId,
    default_days: Option<u32>,
) -> Result<u64> {
    let by_label = sqlx::query(concat!(
        "UPDATE recordings SET retain_until_ms = created_at_ms + 86400000 * ",
        best_rule!("rr.days"),
        ", retention_rule = ",
        best_rule!("rr.label_key || '=' || rr.label_value"),
        " WHERE tenant_id = $1 AND indexed = 1 AND ",
        best_rule!("rr.days"),
        " IS NOT NULL AND (retain_until_ms IS DISTINCT FROM created_at_ms + 86400000 * ",
        best_rule!("rr.days"),
        " OR retention_rule IS DISTINCT FROM ",
        best_rule!("rr.label_key || '=' || rr.label_value"),
        ")"
    ))
    .bind(tenant.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let days_ms = default_days.map(|d| i64::from(d).saturating_mul(DAY_MS));
    let by_default = sqlx::query(concat!(
        "UPDATE recordings SET \
           retain_until_ms = CASE WHEN CAST($2 AS BIGINT) IS NULL THEN NULL ELSE created_at_ms + CAST($2 AS BIGINT) END, \
           retention_rule = $3 \
         WHERE tenant_id = $1 AND indexed = 1 AND ",
        best_rule!("rr.days"),
        " IS NULL AND (retain_until_ms IS DISTINCT FROM \
           (CASE WHEN CAST($2 AS BIGINT) IS NULL THEN NULL ELSE created_at_ms + CAST($2 AS BIGINT) END) \
           OR retention_rule IS DISTINCT FROM $3)"
    ))
    .bind(tenant.as_str())
    .bind(days_ms)
    .bind(default_days.map(|_| ""))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(by_label + by_default)
}

/// Re-evaluates the committed recordings not yet in the search index whose
/// retention was set by rule
/// `from_code` (with `include_unset`, also those no rule covered): they now
/// follow `to_code` with `days` (`None`: no retention period). One
/// statement; returns how many recordings' `retain_until` changed.
pub async fn reapply_retention(
    conn: &mut Conn,
    tenant: &TenantId,
    from_code: &str,
    include_unset: bool,
    to_code: Option<&str>,
    days: Option<u32>,
) -> Result<u64> {
    let days_ms = days.map(|d| i64::from(d).saturating_mul(DAY_MS));
    let changed = sqlx::query(
        "UPDATE recordings SET \
           retain_until_ms = CASE WHEN CAST($4 AS BIGINT) IS NULL THEN NULL ELSE created_at_ms + CAST($4 AS BIGINT) END, \
           retention_rule = $5 \
         WHERE tenant_id = $1 AND indexed = 0 \
         AND (retention_rule = $2 OR ($3 = 1 AND retention_rule IS NULL)) \
         AND (retain_until_ms IS DISTINCT FROM \
              (CASE WHEN CAST($4 AS BIGINT) IS NULL THEN NULL ELSE created_at_ms + CAST($4 AS BIGINT) END) \
              OR retention_rule IS DISTINCT FROM $5)",
    )
    .bind(tenant.as_str())
    .bind(from_code)
    .bind(i64::from(include_unset))
    .bind(days_ms)
    .bind(to_code)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(changed)
}

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
            .bind(super::RECORDING_ERASED_CHANNEL)
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
