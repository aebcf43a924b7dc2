//! Recordings and their chunks: uploads in flight (with their leases),
//! commits, cleanup through the object-deletion queue, and reads.

use sqlx::Row;

use super::Conn;
use super::rows::{self, recording_select, tenant_and_recording};
use crate::checksum::SealedChecksum;
pub use crate::domain::AudioInfo;
use crate::domain::{
    ExternalCallId, KeyArn, PcmLayout, RecordingId, RecordingStatus, TenantId, now_ms,
};
use crate::error::{Error, Result};
use crate::kms::WrapAlgorithm;

/// What ingest writes when an upload starts.
#[derive(Debug, Clone)]
pub struct NewRecording {
    pub tenant: TenantId,
    pub id: RecordingId,
    pub external_call_id: ExternalCallId,
    pub format_version: u8,
    pub key_arn: KeyArn,
    pub kms_region: String,
    pub wrap_algorithm: WrapAlgorithm,
    pub wrapped_key: Vec<u8>,
    pub encryption_context: String,
    pub salt: Vec<u8>,
    pub nonce_prefix: Vec<u8>,
    pub commitment: Vec<u8>,
    pub chunk_size: u32,
    pub labels_sealed: Option<Vec<u8>>,
    pub start_time_ms: Option<i64>,
    pub created_at_ms: i64,
    /// The upload's first lease: the sweeper leaves it alone until then.
    pub lease_until_ms: i64,
    /// When retention lets it be erased (None: no rule applies), and the
    /// rule that decided (`""` the default, `k=v` a label rule).
    pub retain_until_ms: Option<i64>,
    pub retention_rule: Option<String>,
    /// The participants, sealed like the labels.
    pub participants_sealed: Option<Vec<u8>>,
    /// The blind-index digests of its labels and participants, when this
    /// node could compute them (else the indexer does, later).
    pub index: Option<Vec<[u8; 32]>>,
}

/// What ingest writes when the final chunk is committed.
#[derive(Debug, Clone)]
pub struct Completion {
    pub chunk_count: u32,
    pub size_bytes: u64,
    pub sha256: String,
    pub audio: AudioInfo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRow {
    pub index: u32,
    pub plaintext_size: u32,
    pub sealed_size: u32,
    /// CRC-64/NVME of the object (SHA-256 for older chunks).
    pub sealed_checksum: SealedChecksum,
    pub object_key: String,
}

/// A committed recording as stored.
#[derive(Debug, Clone)]
pub struct RecordingRow {
    pub tenant: TenantId,
    pub id: RecordingId,
    pub external_call_id: String,
    pub format_version: u8,
    pub key_arn: KeyArn,
    pub kms_region: String,
    pub wrap_algorithm: WrapAlgorithm,
    pub legal_hold: bool,
    pub wrapped_key: Vec<u8>,
    pub salt: Vec<u8>,
    pub nonce_prefix: Vec<u8>,
    pub commitment: Vec<u8>,
    pub chunk_size: u32,
    pub chunk_count: u32,
    pub size_bytes: u64,
    pub sha256: String,
    pub audio: AudioInfo,
    pub labels_sealed: Option<Vec<u8>>,
    pub start_time_ms: Option<i64>,
    pub created_at_ms: i64,
    pub retain_until_ms: Option<i64>,
    pub participants_sealed: Option<Vec<u8>>,
}

impl RecordingRow {
    /// The row a successful commit of `new` with `done` stored, built from
    /// what the committing node holds: answering an ingest needs no read
    /// after the commit, so nothing can fail between commit and answer.
    pub fn committed(new: &NewRecording, done: &Completion) -> Self {
        Self {
            tenant: new.tenant.clone(),
            id: new.id,
            external_call_id: new.external_call_id.as_str().to_owned(),
            format_version: new.format_version,
            key_arn: new.key_arn.clone(),
            kms_region: new.kms_region.clone(),
            wrap_algorithm: new.wrap_algorithm,
            legal_hold: false,
            wrapped_key: new.wrapped_key.clone(),
            salt: new.salt.clone(),
            nonce_prefix: new.nonce_prefix.clone(),
            commitment: new.commitment.clone(),
            chunk_size: new.chunk_size,
            chunk_count: done.chunk_count,
            size_bytes: done.size_bytes,
            sha256: done.sha256.clone(),
            audio: done.audio.clone(),
            labels_sealed: new.labels_sealed.clone(),
            start_time_ms: new.start_time_ms,
            created_at_ms: new.created_at_ms,
            retain_until_ms: new.retain_until_ms,
            participants_sealed: new.participants_sealed.clone(),
        }
    }
}

/// Outcome of committing an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// Another attempt with the same call id committed first. The
    /// transaction is spoiled: roll it back and look the winner up.
    DuplicateCallId,
}

/// What removing an upload's catalog rows found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortOutcome {
    /// The upload's rows were removed and its objects queued for deletion.
    Removed,
    /// No row (already swept or removed); its objects, if any, are queued.
    Absent,
    /// The recording is committed: nothing was removed, nothing may be.
    Committed,
    /// Its lease was renewed in the meantime (sweeps only): left alone.
    Live,
}

pub async fn begin_upload(conn: &mut Conn, r: &NewRecording) -> Result<()> {
    sqlx::query(
        "INSERT INTO recordings (tenant_id, recording_id, external_call_id, status, format_version, key_arn, \
         kms_region, wrapped_key, encryption_context, salt, nonce_prefix, commitment, chunk_size, \
         labels_sealed, start_time_ms, created_at_ms, updated_at_ms, wrap_algorithm, lease_until_ms, \
         retain_until_ms, retention_rule, participants_sealed, indexed) \
         VALUES ($1, $2, $3, 'uploading', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(r.tenant.as_str())
    .bind(r.id.to_string())
    .bind(r.external_call_id.as_str())
    .bind(i64::from(r.format_version))
    .bind(r.key_arn.as_str())
    .bind(&r.kms_region)
    .bind(&r.wrapped_key)
    .bind(&r.encryption_context)
    .bind(&r.salt)
    .bind(&r.nonce_prefix)
    .bind(&r.commitment)
    .bind(i64::from(r.chunk_size))
    .bind(&r.labels_sealed)
    .bind(r.start_time_ms)
    .bind(r.created_at_ms)
    .bind(r.wrap_algorithm.as_str())
    .bind(r.lease_until_ms)
    .bind(r.retain_until_ms)
    .bind(r.retention_rule.as_deref())
    .bind(&r.participants_sealed)
    .bind(i64::from(r.index.is_some()))
    .execute(&mut *conn)
    .await?;
    for d in r.index.iter().flatten() {
        sqlx::query(
            "INSERT INTO recording_index (tenant_id, recording_id, digest) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(r.tenant.as_str())
        .bind(r.id.to_string())
        .bind(d.to_vec())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Rows one INSERT carries (2 + 5 per row bind parameters: 322, far
/// under either engine's limit).
const ROWS_PER_INSERT: usize = 64;

/// Records uploaded (not yet visible) chunks, in as few statements as
/// [`ROWS_PER_INSERT`] allows: an upload records its chunks in batches,
/// not one write each, so SQLite's single writer syncs its log once per
/// batch. Fails with [`Error::UploadSwept`] when the upload's row is gone
/// (swept).
pub async fn add_chunks(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
    rows: &[ChunkRow],
) -> Result<()> {
    match insert_chunks(conn, tenant, rec, rows).await {
        // A chunk row whose recording row is gone: the upload was swept.
        Err(sqlx::Error::Database(d))
            if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
        {
            Err(Error::UploadSwept(*rec))
        }
        res => Ok(res?),
    }
}

/// Extends an upload's lease to `until_ms`. Fails with
/// [`Error::UploadSwept`] if the upload is no longer in flight.
pub async fn renew_lease(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
    until_ms: i64,
) -> Result<()> {
    let res = sqlx::query(
        "UPDATE recordings SET lease_until_ms = $3 \
         WHERE tenant_id = $1 AND recording_id = $2 AND status = 'uploading'",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .bind(until_ms)
    .execute(&mut *conn)
    .await?;
    if res.rows_affected() == 0 {
        return Err(Error::UploadSwept(*rec));
    }
    Ok(())
}

/// Makes the recording visible: the completed recording row and the chunk
/// rows not recorded yet (`rows`: the final chunk's and any of the last
/// batch), in the caller's transaction. The row must still be an upload
/// in flight; if the sweeper removed it this fails with
/// [`Error::UploadSwept`]. The status update comes first, so it takes
/// the row lock a concurrent sweep would need (PostgreSQL) and the two
/// exclude each other.
pub async fn commit_upload(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
    rows: &[ChunkRow],
    done: &Completion,
) -> Result<CommitOutcome> {
    let res = sqlx::query(
        "UPDATE recordings SET status = 'complete', chunk_count = $3, size_bytes = $4, sha256 = $5, \
         container = $6, codec = $7, sample_rate_hz = $8, channels = $9, duration_ms = $10, \
         audio_warning = $11, completed_at_ms = $12, updated_at_ms = $12 \
         WHERE tenant_id = $1 AND recording_id = $2 AND status = 'uploading'",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .bind(i64::from(done.chunk_count))
    .bind(i64::try_from(done.size_bytes).map_err(|_| Error::invalid("data", "recording too large"))?)
    .bind(&done.sha256)
    .bind(&done.audio.container)
    .bind(&done.audio.codec)
    .bind(i64::from(done.audio.sample_rate_hz))
    .bind(i64::from(done.audio.channels))
    .bind(i64::try_from(done.audio.duration_ms).unwrap_or(i64::MAX))
    .bind(&done.audio.warning)
    .bind(now_ms())
    .execute(&mut *conn)
    .await;
    match res {
        Ok(r) if r.rows_affected() == 1 => {}
        Ok(_) => return Err(Error::UploadSwept(*rec)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Ok(CommitOutcome::DuplicateCallId);
        }
        Err(e) => return Err(e.into()),
    }
    insert_chunks(conn, tenant, rec, rows).await?;
    Ok(CommitOutcome::Committed)
}

/// Removes an upload that will not complete, in the caller's transaction:
/// its recording row (only while it is `uploading`; a committed recording is
/// never touched), its chunk rows, and queues its objects for deletion. With
/// `expired_before`, only an upload whose lease ran out before that time is
/// removed (the sweeper's check, atomic with the removal).
///
/// Delete objects only after this committed and said `Removed` or `Absent`,
/// then call [`object_deletion_done`].
pub async fn abort_upload(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
    reason: &str,
    expired_before: Option<i64>,
) -> Result<AbortOutcome> {
    let removed = sqlx::query(
        "DELETE FROM recordings WHERE tenant_id = $1 AND recording_id = $2 \
         AND status = 'uploading' AND lease_until_ms < $3",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .bind(expired_before.unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let outcome = if removed == 1 {
        // The foreign key cascades; said again so the rule does not rest on
        // the engine's foreign-key setting.
        for table in [
            "DELETE FROM chunks WHERE tenant_id = $1 AND recording_id = $2",
            "DELETE FROM recording_index WHERE tenant_id = $1 AND recording_id = $2",
        ] {
            sqlx::query(table)
                .bind(tenant.as_str())
                .bind(rec.to_string())
                .execute(&mut *conn)
                .await?;
        }
        AbortOutcome::Removed
    } else {
        let status: Option<String> =
            sqlx::query("SELECT status FROM recordings WHERE tenant_id = $1 AND recording_id = $2")
                .bind(tenant.as_str())
                .bind(rec.to_string())
                .fetch_optional(&mut *conn)
                .await?
                .map(|row| row.try_get("status"))
                .transpose()?;
        match status
            .as_deref()
            .map(RecordingStatus::from_db)
            .transpose()?
        {
            None => AbortOutcome::Absent,
            Some(RecordingStatus::Uploading) => return Ok(AbortOutcome::Live),
            Some(RecordingStatus::Complete) => return Ok(AbortOutcome::Committed),
        }
    };
    sqlx::query(
        "INSERT INTO object_deletions (tenant_id, recording_id, reason, queued_at_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .bind(reason)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(outcome)
}

/// Uploads whose lease ran out before `now_ms`: their node is gone (crashed,
/// or cut off from the catalog for longer than the lease).
pub async fn expired_uploads(
    conn: &mut Conn,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<(TenantId, RecordingId)>> {
    let rows = sqlx::query(
        "SELECT tenant_id, recording_id FROM recordings \
         WHERE status = 'uploading' AND lease_until_ms < $1 ORDER BY lease_until_ms LIMIT $2",
    )
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(tenant_and_recording).collect()
}

/// Queued object deletions. A recording that exists in the catalog is never
/// listed, whatever the queue says: objects of a committed recording are not
/// deleted by this path.
pub async fn pending_object_deletions(
    conn: &mut Conn,
    limit: u32,
) -> Result<Vec<(TenantId, RecordingId)>> {
    let rows = sqlx::query(
        "SELECT d.tenant_id, d.recording_id FROM object_deletions d \
         WHERE NOT EXISTS (SELECT 1 FROM recordings r \
         WHERE r.tenant_id = d.tenant_id AND r.recording_id = d.recording_id) \
         ORDER BY d.queued_at_ms LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(tenant_and_recording).collect()
}

/// The objects of a queued deletion are gone.
pub async fn object_deletion_done(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
) -> Result<()> {
    sqlx::query("DELETE FROM object_deletions WHERE tenant_id = $1 AND recording_id = $2")
        .bind(tenant.as_str())
        .bind(rec.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn find_by_call_id(
    conn: &mut Conn,
    tenant: &TenantId,
    call: &ExternalCallId,
) -> Result<Option<RecordingRow>> {
    let row = sqlx::query(recording_select!(
        "WHERE tenant_id = $1 AND external_call_id = $2 AND status = 'complete'"
    ))
    .bind(tenant.as_str())
    .bind(call.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(rows::recording).transpose()
}

/// A committed recording of this tenant. Another tenant's recording and an
/// upload in progress are both simply not found; an erased recording is
/// [`Error::RecordingErased`], with its date and certificate.
pub async fn get(conn: &mut Conn, tenant: &TenantId, rec: &RecordingId) -> Result<RecordingRow> {
    let row = sqlx::query(recording_select!(
        "WHERE tenant_id = $1 AND recording_id = $2 AND status = 'complete'"
    ))
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => rows::recording(&row),
        None => Err(
            match super::compliance::tombstone(conn, tenant, rec).await? {
                Some(t) => Error::RecordingErased {
                    id: t.id,
                    erased_at_ms: t.erased_at_ms,
                    certificate_id: t.certificate_id,
                },
                None => Error::RecordingNotFound(*rec),
            },
        ),
    }
}

/// Committed recordings in id (= creation) order, after `after`.
pub async fn list(
    conn: &mut Conn,
    tenant: &TenantId,
    after: Option<&RecordingId>,
    limit: u32,
) -> Result<Vec<RecordingRow>> {
    let rows = sqlx::query(recording_select!(
        "WHERE tenant_id = $1 AND status = 'complete' AND recording_id > $2 ORDER BY recording_id LIMIT $3"
    ))
    .bind(tenant.as_str())
    .bind(after.map(|a| a.to_string()).unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(rows::recording).collect()
}

/// Committed recordings whose call started in `[from_ms, to_ms)` (a
/// recording without a start time: that was ingested then), in id order
/// after `after`.
pub async fn started_between(
    conn: &mut Conn,
    tenant: &TenantId,
    from_ms: i64,
    to_ms: i64,
    after: Option<&RecordingId>,
    limit: u32,
) -> Result<Vec<RecordingRow>> {
    let rows = sqlx::query(recording_select!(
        "WHERE tenant_id = $1 AND status = 'complete' \
         AND COALESCE(start_time_ms, created_at_ms) >= $2 AND COALESCE(start_time_ms, created_at_ms) < $3 \
         AND recording_id > $4 ORDER BY recording_id LIMIT $5"
    ))
    .bind(tenant.as_str())
    .bind(from_ms)
    .bind(to_ms)
    .bind(after.map(|a| a.to_string()).unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(rows::recording).collect()
}

pub async fn chunks(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
) -> Result<Vec<ChunkRow>> {
    let rows = sqlx::query(
        "SELECT chunk_index, plaintext_size, sealed_size, sealed_checksum, object_key FROM chunks \
         WHERE tenant_id = $1 AND recording_id = $2 ORDER BY chunk_index",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(rows::chunk).collect()
}

/// The rows of chunks `which` of a recording, in index order.
pub async fn chunk_range(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
    which: std::ops::Range<u32>,
) -> Result<Vec<ChunkRow>> {
    let rows = sqlx::query(
        "SELECT chunk_index, plaintext_size, sealed_size, sealed_checksum, object_key FROM chunks \
         WHERE tenant_id = $1 AND recording_id = $2 AND chunk_index >= $3 AND chunk_index < $4 \
         ORDER BY chunk_index",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .bind(i64::from(which.start))
    .bind(i64::from(which.end))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(rows::chunk).collect()
}

async fn insert_chunks(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
    rows: &[ChunkRow],
) -> std::result::Result<(), sqlx::Error> {
    let rec = rec.to_string();
    for batch in rows.chunks(ROWS_PER_INSERT) {
        let values = super::placeholder_rows(batch.len(), "$1, $2", 3, 5);
        let sql = format!(
            "INSERT INTO chunks (tenant_id, recording_id, chunk_index, plaintext_size, sealed_size, sealed_checksum, object_key) VALUES {values}"
        );
        // Audited: only constant text and numbered placeholders.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(&rec);
        for c in batch {
            q = q
                .bind(i64::from(c.index))
                .bind(i64::from(c.plaintext_size))
                .bind(i64::from(c.sealed_size))
                .bind(c.sealed_checksum.to_string())
                .bind(&c.object_key);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Whether a recording's waveform peaks are stored (`docs/FORMAT.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeaksState {
    Pending,
    Stored,
    Unavailable,
}

impl PeaksState {
    fn code(self) -> i64 {
        match self {
            PeaksState::Pending => 0,
            PeaksState::Stored => 1,
            PeaksState::Unavailable => 2,
        }
    }
}

/// Committed recordings whose peaks are not computed yet, oldest first.
pub async fn peaks_pending(conn: &mut Conn, limit: u32) -> Result<Vec<(TenantId, RecordingId)>> {
    let rows = sqlx::query(
        "SELECT tenant_id, recording_id FROM recordings WHERE peaks_state = 0 AND status = 'complete' ORDER BY created_at_ms LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(tenant_and_recording).collect()
}

/// The recording's peaks state and, once a full decode found it, its
/// decoded layout; `None` when the recording is not there.
pub async fn peaks_state(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
) -> Result<Option<(PeaksState, Option<PcmLayout>)>> {
    let row = sqlx::query(
        "SELECT CAST(peaks_state AS BIGINT) AS peaks_state, pcm_frames, CAST(pcm_rate_hz AS BIGINT) AS pcm_rate_hz, CAST(pcm_channels AS BIGINT) AS pcm_channels \
         FROM recordings WHERE tenant_id = $1 AND recording_id = $2 AND status = 'complete'",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let state = match r.try_get::<i64, _>("peaks_state")? {
        0 => PeaksState::Pending,
        1 => PeaksState::Stored,
        2 => PeaksState::Unavailable,
        _ => return Err(rows::corrupt("peaks state")),
    };
    let frames: Option<i64> = r.try_get("pcm_frames")?;
    let rate: Option<i64> = r.try_get("pcm_rate_hz")?;
    let channels: Option<i64> = r.try_get("pcm_channels")?;
    let layout = match (frames, rate, channels) {
        (Some(f), Some(r), Some(c)) => Some(PcmLayout {
            frames: u64::try_from(f).map_err(|_| rows::corrupt("decoded frames"))?,
            rate_hz: u32::try_from(r).map_err(|_| rows::corrupt("decoded rate"))?,
            channels: u16::try_from(c).map_err(|_| rows::corrupt("decoded channels"))?,
        }),
        _ => None,
    };
    Ok(Some((state, layout)))
}

/// Records the peaks of a pending recording as stored, with the decoded
/// layout the same decode found; false when the recording is gone (erased
/// meanwhile) or no longer pending.
pub async fn store_peaks(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
    layout: &PcmLayout,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE recordings SET peaks_state = 1, pcm_frames = $3, pcm_rate_hz = $4, pcm_channels = $5 \
         WHERE tenant_id = $1 AND recording_id = $2 AND peaks_state = 0",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .bind(i64::try_from(layout.frames).unwrap_or(i64::MAX))
    .bind(i64::from(layout.rate_hz))
    .bind(i64::from(layout.channels))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Moves the recording's peaks from `from` to `to`; false when the
/// recording is gone (erased meanwhile) or was not in `from`.
pub async fn set_peaks_state(
    conn: &mut Conn,
    tenant: &TenantId,
    rec: &RecordingId,
    from: PeaksState,
    to: PeaksState,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE recordings SET peaks_state = $4 WHERE tenant_id = $1 AND recording_id = $2 AND peaks_state = $3",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .bind(from.code())
    .bind(to.code())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}
