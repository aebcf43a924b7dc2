//! Retention rules and `retain_until`: the rules, and their set-based
//! re-evaluation over the recordings (by the labels' blind-index digests,
//! or by the rule that decided an unindexed recording at ingest).

use sqlx::Row;

use super::super::Conn;
use super::super::rows::to_u32;
use crate::domain::{TenantId, now_ms};
use crate::error::Result;

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
