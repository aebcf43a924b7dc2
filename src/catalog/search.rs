//! Searching a tenant's committed recordings: the one query behind
//! `ListRecordings` and the page's API (`playback::search`), its filters,
//! its two sort orders and its page cursor. The SQL is assembled from fixed
//! fragments at run time; every value is bound.

use super::Conn;
use super::RecordingRow;
use super::rows;
use crate::domain::{ExternalCallId, KeyArn, RecordingId, TenantId};
use crate::error::Result;

/// What a recording search sorts by: when the call started (a recording
/// without a start time: when it was created), or when it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    StartTime,
    CreateTime,
}

impl SortKey {
    fn column(self) -> &'static str {
        match self {
            Self::StartTime => "COALESCE(start_time_ms, created_at_ms)",
            Self::CreateTime => "created_at_ms",
        }
    }

    /// The value a row is sorted by (what a page cursor carries).
    pub fn of(self, row: &RecordingRow) -> i64 {
        match self {
            Self::StartTime => row.start_time_ms.unwrap_or(row.created_at_ms),
            Self::CreateTime => row.created_at_ms,
        }
    }
}

/// A search over a tenant's committed recordings: every condition that is
/// set must hold; ordered by `sort` (then recording id) in the direction
/// `descending`, from after `after` (the sort value and id of the last row
/// of the previous page).
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub call_id: Option<ExternalCallId>,
    /// Start time (or creation, without one) in `[from_ms, to_ms)`.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub min_duration_ms: Option<u64>,
    pub max_duration_ms: Option<u64>,
    pub key_arn: Option<KeyArn>,
    /// Blind-index digests (labels, a participant): each must be indexed
    /// for the recording.
    pub digests: Vec<[u8; 32]>,
    pub sort: SortKey,
    pub descending: bool,
    pub after: Option<(i64, RecordingId)>,
    pub limit: u32,
}

/// One page of [`Query`]. The SQL is assembled from fixed fragments; every
/// value is bound.
pub async fn query(conn: &mut Conn, tenant: &TenantId, q: &Query) -> Result<Vec<RecordingRow>> {
    let sort = q.sort.column();
    let mut sql = String::from(rows::RECORDING_SELECT);
    sql.push_str("WHERE tenant_id = $1 AND status = 'complete'");
    let mut n = 1;
    let mut next = |sql: &mut String, fragment: &str| {
        n += 1;
        sql.push_str(&fragment.replace('#', &format!("${n}")));
    };
    if q.call_id.is_some() {
        next(&mut sql, " AND external_call_id = #");
    }
    if q.from_ms.is_some() {
        next(&mut sql, " AND COALESCE(start_time_ms, created_at_ms) >= #");
    }
    if q.to_ms.is_some() {
        next(&mut sql, " AND COALESCE(start_time_ms, created_at_ms) < #");
    }
    if q.min_duration_ms.is_some() {
        next(&mut sql, " AND COALESCE(duration_ms, 0) >= #");
    }
    if q.max_duration_ms.is_some() {
        next(&mut sql, " AND COALESCE(duration_ms, 0) <= #");
    }
    if q.key_arn.is_some() {
        next(&mut sql, " AND key_arn = #");
    }
    for _ in &q.digests {
        next(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM recording_index i WHERE i.tenant_id = recordings.tenant_id \
             AND i.recording_id = recordings.recording_id AND i.digest = #)",
        );
    }
    let (cmp, dir) = if q.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if q.after.is_some() {
        // Row-value comparison spelled out: both catalogs, one index range.
        let (a, b) = (n + 1, n + 2);
        n += 2;
        sql.push_str(&format!(
            " AND ({sort} {cmp} ${a} OR ({sort} = ${a} AND recording_id {cmp} ${b}))"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY {sort} {dir}, recording_id {dir} LIMIT ${}",
        n + 1
    ));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant.as_str());
    if let Some(c) = &q.call_id {
        query = query.bind(c.as_str().to_owned());
    }
    for v in [q.from_ms, q.to_ms].into_iter().flatten() {
        query = query.bind(v);
    }
    for v in [q.min_duration_ms, q.max_duration_ms].into_iter().flatten() {
        query = query.bind(i64::try_from(v).unwrap_or(i64::MAX));
    }
    if let Some(k) = &q.key_arn {
        query = query.bind(k.as_str().to_owned());
    }
    for d in &q.digests {
        query = query.bind(d.to_vec());
    }
    if let Some((v, id)) = &q.after {
        query = query.bind(*v).bind(id.to_string());
    }
    let rows = query.bind(i64::from(q.limit)).fetch_all(&mut *conn).await?;
    rows.iter().map(rows::recording).collect()
}
