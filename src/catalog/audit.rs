//! The audit trail's storage: events (their canonical bytes and leaf
//! hashes), the per-log counter that numbers them gaplessly, and signed
//! checkpoints. Rows are only ever inserted.

use sqlx::Row;

use super::Conn;
use super::rows::{corrupt, to_u64};
use crate::audit::event::{Action, Event, NewEvent};
use crate::audit::merkle::{self, Hash};
use crate::audit::note::SignerKey;
use crate::domain::RecordingId;
use crate::error::{Error, Result};

/// What `audit log` filters on. `None` means any.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub recording: Option<RecordingId>,
    pub actor: Option<String>,
    pub action: Option<Action>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// A stored event as the verifier reads it: the bytes its leaf covers, the
/// leaf hash the catalog holds for it, and its signature.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub index: u64,
    pub canonical: String,
    pub leaf_hash: [u8; 32],
    pub signature: Vec<u8>,
}

/// A stored signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root_hash: [u8; 32],
    /// The tree's compact range at `size` (its peaks, in order).
    pub peaks: Vec<[u8; 32]>,
    pub note: String,
    pub created_at_ms: i64,
}

fn hash32(v: Vec<u8>, what: &str) -> Result<[u8; 32]> {
    v.try_into().map_err(|_| corrupt(what))
}

fn checkpoint_of(row: &sqlx::any::AnyRow) -> Result<StoredCheckpoint> {
    let peaks: Vec<u8> = row.try_get("peaks")?;
    if !peaks.len().is_multiple_of(32) {
        return Err(corrupt("checkpoint peaks"));
    }
    Ok(StoredCheckpoint {
        size: to_u64(row.try_get("size")?, "checkpoint size")?,
        root_hash: hash32(row.try_get("root_hash")?, "checkpoint root")?,
        peaks: peaks
            .chunks_exact(32)
            .map(|c| hash32(c.to_vec(), "checkpoint peak"))
            .collect::<Result<_>>()?,
        note: row.try_get("note")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// What the audit key signs for each event: its leaf hash, after a context
/// string no other use of the key shares (docs/AUDIT.md).
pub const EVENT_SIGNATURE_CONTEXT: &[u8] = b"callvault audit event v1\n";

pub fn event_signature(signer: &SignerKey, leaf: &Hash) -> [u8; 64] {
    signer.sign_raw(EVENT_SIGNATURE_CONTEXT, leaf.as_bytes())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Most events, and most index rows, one statement inserts.
const ROWS_PER_STATEMENT: usize = 64;

/// Appends an event to `log` in the caller's transaction: takes the log's
/// counter row (so events of one log are numbered gaplessly in commit
/// order, and a rolled-back change takes its number back), writes the
/// event's canonical bytes, leaf hash and signature, and indexes its
/// recordings.
pub async fn append(
    conn: &mut Conn,
    log: &str,
    time_ms: i64,
    node: &str,
    signer: &SignerKey,
    new: NewEvent,
) -> Result<Event> {
    let mut events = append_all(conn, log, node, signer, vec![(time_ms, new)]).await?;
    events.pop().ok_or_else(|| corrupt("audit append"))
}

/// [`append`] for several events (each with its time), numbered in order:
/// one counter update for all of them, and their rows in as few statements
/// as [`ROWS_PER_STATEMENT`] allows. On PostgreSQL the index rows go in the
/// events' statement (the events' insert as a data-modifying CTE) when
/// both fit in one: a round trip less on the way to a play's first byte.
/// SQLite has no such CTE.
pub async fn append_all(
    conn: &mut Conn,
    log: &str,
    node: &str,
    signer: &SignerKey,
    new: Vec<(i64, NewEvent)>,
) -> Result<Vec<Event>> {
    let n = i64::try_from(new.len()).map_err(|_| corrupt("audit batch size"))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let size: i64 = sqlx::query(
        "INSERT INTO audit_heads (tenant_id, size) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET size = audit_heads.size + $2 RETURNING size",
    )
    .bind(log)
    .bind(n)
    .fetch_one(&mut *conn)
    .await?
    .try_get("size")?;
    let events = numbered(log, to_u64(size - n, "audit log size")?, node, new);
    let index_rows = index_rows(&events);
    let with_events = conn.backend_name() == "PostgreSQL"
        && events.len() <= ROWS_PER_STATEMENT
        && (1..=ROWS_PER_STATEMENT).contains(&index_rows.len());
    for batch in events.chunks(ROWS_PER_STATEMENT) {
        // $1 the log, then eight per event.
        let values = super::placeholder_rows(batch.len(), "$1", 2, 8);
        let insert = format!("INSERT INTO audit_events ({EVENT_COLUMNS}) VALUES {values}");
        let sql = if with_events {
            // The index rows' placeholders follow the events'.
            let rows = super::placeholder_rows(index_rows.len(), "$1", 2 + 8 * batch.len(), 2);
            format!(
                "WITH e AS ({insert}) INSERT INTO audit_event_recordings (tenant_id, recording_id, seq) \
                 VALUES {rows} ON CONFLICT DO NOTHING"
            )
        } else {
            insert
        };
        let mut query = bind_events(
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(log),
            batch,
            signer,
        )?;
        if with_events {
            query = bind_index_rows(query, &index_rows);
        }
        query.execute(&mut *conn).await?;
    }
    if !with_events {
        for batch in index_rows.chunks(ROWS_PER_STATEMENT) {
            let rows = super::placeholder_rows(batch.len(), "$1", 2, 2);
            let query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO audit_event_recordings (tenant_id, recording_id, seq) VALUES {rows} \
                 ON CONFLICT DO NOTHING"
            )))
            .bind(log);
            bind_index_rows(query, batch).execute(&mut *conn).await?;
        }
    }
    Ok(events)
}

/// [`append_all`] in one statement, committed on its own (no transaction
/// around it), numbered from `size`, the log's size as the caller last
/// knew it: the counter moves only if it is still `size`, and the events
/// and their index rows are written only if it moved. `None` when it was
/// not (another node appended since, or the log has no counter row yet):
/// nothing was written, and [`append_all`] in a transaction numbers them
/// from the counter. PostgreSQL only (data-modifying CTEs), and at most
/// [`ROWS_PER_STATEMENT`] events and index rows (`None` beyond).
///
/// A play's write-ahead event on a log only this node appends to is then
/// one round trip and one WAL flush, where the transaction took four
/// round trips (BEGIN, the counter, the rows, COMMIT) and the same flush.
pub async fn append_at(
    conn: &mut Conn,
    log: &str,
    size: u64,
    node: &str,
    signer: &SignerKey,
    new: &[(i64, NewEvent)],
) -> Result<Option<Vec<Event>>> {
    if new.is_empty() || new.len() > ROWS_PER_STATEMENT || conn.backend_name() != "PostgreSQL" {
        return Ok(None);
    }
    let events = numbered(log, size, node, new.to_vec());
    let index_rows = index_rows(&events);
    if index_rows.len() > ROWS_PER_STATEMENT {
        return Ok(None);
    }
    // $1 the log, $2 how many, $3 the size expected; eight per event, two
    // per index row.
    let values = super::placeholder_rows(events.len(), "$1", 4, 8);
    let mut sql = format!(
        "WITH h AS (UPDATE audit_heads SET size = size + $2 WHERE tenant_id = $1 AND size = $3 \
         RETURNING size), \
         e AS (INSERT INTO audit_events ({EVENT_COLUMNS}) SELECT * FROM (VALUES {values}) \
         AS v ({EVENT_COLUMNS}) WHERE EXISTS (SELECT 1 FROM h))"
    );
    if !index_rows.is_empty() {
        let rows = super::placeholder_rows(index_rows.len(), "$1", 4 + 8 * events.len(), 2);
        sql.push_str(&format!(
            ", r AS (INSERT INTO audit_event_recordings (tenant_id, recording_id, seq) \
             SELECT * FROM (VALUES {rows}) AS v (tenant_id, recording_id, seq) \
             WHERE EXISTS (SELECT 1 FROM h) ON CONFLICT DO NOTHING)"
        ));
    }
    sql.push_str(" SELECT count(*) AS moved FROM h");
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(log)
        .bind(i64::try_from(events.len()).map_err(|_| corrupt("audit batch size"))?)
        .bind(i64_of(size));
    let query = bind_index_rows(bind_events(query, &events, signer)?, &index_rows);
    let moved: i64 = query.fetch_one(&mut *conn).await?.try_get("moved")?;
    Ok((moved == 1).then_some(events))
}

/// The columns of an event row, in the order [`bind_events`] binds them
/// (after the log).
const EVENT_COLUMNS: &str =
    "tenant_id, seq, time_ms, action, outcome, actor_id, event, leaf_hash, signature";

/// `new` numbered from `first`.
fn numbered(log: &str, first: u64, node: &str, new: Vec<(i64, NewEvent)>) -> Vec<Event> {
    (first..)
        .zip(new)
        .map(|(index, (time_ms, e))| Event::new(log, index, time_ms, node, e))
        .collect()
}

/// Each event's recordings, with its number.
fn index_rows(events: &[Event]) -> Vec<(&str, i64)> {
    events
        .iter()
        .flat_map(|e| e.recordings.iter().map(|r| (r.as_str(), i64_of(e.index))))
        .collect()
}

/// Binds two values per index row: the recording and the event's number.
fn bind_index_rows<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    rows: &[(&'q str, i64)],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for (rec, seq) in rows {
        query = query.bind(*rec).bind(*seq);
    }
    query
}

/// Binds eight values per event: its number, time, action, outcome and
/// actor, its canonical bytes, their leaf hash and its signature.
fn bind_events<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    events: &'q [Event],
    signer: &SignerKey,
) -> Result<sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>> {
    for event in events {
        let canonical = event.canonical();
        let leaf = merkle::leaf_hash(&canonical);
        let signature = event_signature(signer, &leaf);
        let text = String::from_utf8(canonical).map_err(|_| corrupt("audit event encoding"))?;
        query = query
            .bind(i64_of(event.index))
            .bind(event.time_ms)
            .bind(event.action.as_str())
            .bind(event.outcome.as_str())
            .bind(&event.actor.id)
            .bind(text)
            .bind(leaf.as_bytes().to_vec())
            .bind(signature.to_vec());
    }
    Ok(query)
}

/// Events of `log` matching `filter`, in log order, after index `after`
/// (exclusive; `None` from the start), at most `limit`.
pub async fn list(
    conn: &mut Conn,
    log: &str,
    filter: &EventFilter,
    after: Option<u64>,
    limit: u32,
) -> Result<Vec<Event>> {
    let rows = sqlx::query(
        "SELECT e.event FROM audit_events e WHERE e.tenant_id = $1 AND e.seq > $2 \
         AND (CAST($3 AS TEXT) IS NULL OR e.action = $3) \
         AND (CAST($4 AS TEXT) IS NULL OR e.actor_id = $4) \
         AND e.time_ms >= $5 AND e.time_ms < $6 \
         AND (CAST($7 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM audit_event_recordings r \
              WHERE r.tenant_id = e.tenant_id AND r.seq = e.seq AND r.recording_id = $7)) \
         ORDER BY e.seq LIMIT $8",
    )
    .bind(log)
    .bind(after.map_or(-1, i64_of))
    .bind(filter.action.map(Action::as_str))
    .bind(filter.actor.as_deref())
    .bind(filter.since_ms.unwrap_or(i64::MIN))
    .bind(filter.until_ms.unwrap_or(i64::MAX))
    .bind(filter.recording.map(|r| r.to_string()))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let text: String = row.try_get("event")?;
            Event::from_canonical(text.as_bytes()).ok_or_else(|| corrupt("audit event"))
        })
        .collect()
}

/// Stored events `from..from + limit` of `log`, as the verifier needs them.
pub async fn stored(conn: &mut Conn, log: &str, from: u64, limit: u32) -> Result<Vec<StoredEvent>> {
    let rows = sqlx::query(
        "SELECT seq, event, leaf_hash, signature FROM audit_events WHERE tenant_id = $1 AND seq >= $2 \
         ORDER BY seq LIMIT $3",
    )
    .bind(log)
    .bind(i64_of(from))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredEvent {
                index: to_u64(row.try_get("seq")?, "audit index")?,
                canonical: row.try_get("event")?,
                leaf_hash: hash32(row.try_get("leaf_hash")?, "leaf hash")?,
                signature: row.try_get("signature")?,
            })
        })
        .collect()
}

/// Leaf hashes `from..to` of `log`, in order.
pub async fn leaf_hashes(conn: &mut Conn, log: &str, from: u64, to: u64) -> Result<Vec<[u8; 32]>> {
    let rows = sqlx::query(
        "SELECT seq, leaf_hash FROM audit_events WHERE tenant_id = $1 AND seq >= $2 AND seq < $3 \
         ORDER BY seq",
    )
    .bind(log)
    .bind(i64_of(from))
    .bind(i64_of(to))
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let seq = to_u64(row.try_get("seq")?, "audit index")?;
        if seq != from + i as u64 {
            return Err(Error::CatalogCorrupt(format!(
                "audit log {log} has no event {}",
                from + i as u64
            )));
        }
        out.push(hash32(row.try_get("leaf_hash")?, "leaf hash")?);
    }
    if out.len() as u64 != to.saturating_sub(from) {
        return Err(Error::CatalogCorrupt(format!(
            "audit log {log} ends before index {to}"
        )));
    }
    Ok(out)
}

/// The number of events in `log` (its counter).
pub async fn size(conn: &mut Conn, log: &str) -> Result<u64> {
    let row = sqlx::query("SELECT size FROM audit_heads WHERE tenant_id = $1")
        .bind(log)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => to_u64(row.try_get("size")?, "audit log size"),
        None => Ok(0),
    }
}

/// A log that grew since its last checkpoint.
#[derive(Debug, Clone)]
pub struct UnsignedLog {
    pub log: String,
    pub size: u64,
    /// The last checkpoint's size and time (0 when there is none).
    pub signed: u64,
    pub signed_at_ms: i64,
}

/// Logs whose size passed their last checkpoint.
pub async fn unsigned_logs(conn: &mut Conn) -> Result<Vec<UnsignedLog>> {
    let rows = sqlx::query(
        "SELECT h.tenant_id, h.size, \
         CAST(COALESCE(c.size, 0) AS BIGINT) AS signed, CAST(COALESCE(c.created_at_ms, 0) AS BIGINT) AS signed_at \
         FROM audit_heads h LEFT JOIN audit_checkpoints c ON c.tenant_id = h.tenant_id \
         AND c.size = (SELECT MAX(m.size) FROM audit_checkpoints m WHERE m.tenant_id = h.tenant_id) \
         WHERE h.size > COALESCE(c.size, 0)",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(UnsignedLog {
                log: row.try_get("tenant_id")?,
                size: to_u64(row.try_get("size")?, "audit log size")?,
                signed: to_u64(row.try_get("signed")?, "checkpoint size")?,
                signed_at_ms: row.try_get("signed_at")?,
            })
        })
        .collect()
}

/// Stores a signed checkpoint (a second one of the same size is ignored:
/// the same tree has the same root).
pub async fn store_checkpoint(conn: &mut Conn, log: &str, cp: &StoredCheckpoint) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (tenant_id, size, root_hash, peaks, note, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(log)
    .bind(i64_of(cp.size))
    .bind(cp.root_hash.to_vec())
    .bind(cp.peaks.concat())
    .bind(&cp.note)
    .bind(cp.created_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every stored checkpoint of `log`, oldest first.
pub async fn checkpoints(conn: &mut Conn, log: &str) -> Result<Vec<StoredCheckpoint>> {
    let rows = sqlx::query(
        "SELECT size, root_hash, peaks, note, created_at_ms FROM audit_checkpoints WHERE tenant_id = $1 \
         ORDER BY size",
    )
    .bind(log)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(checkpoint_of).collect()
}

/// The newest checkpoint of `log`, if any.
pub async fn latest_checkpoint(conn: &mut Conn, log: &str) -> Result<Option<StoredCheckpoint>> {
    let row = sqlx::query(
        "SELECT size, root_hash, peaks, note, created_at_ms FROM audit_checkpoints WHERE tenant_id = $1 \
         ORDER BY size DESC LIMIT 1",
    )
    .bind(log)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(checkpoint_of).transpose()
}
