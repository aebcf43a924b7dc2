//! The catalog: tenants, key history, recordings, chunks and API tokens.
//!
//! One implementation over `sqlx::Any` serves PostgreSQL (production) and
//! SQLite (embedded default): every statement is written once, in the SQL
//! both accept (`$N` placeholders, `ON CONFLICT`, partial indexes), and times
//! are Unix milliseconds. The schema lives in `migrations/<backend>/`.
//!
//! Tenant isolation: every query that touches tenant data takes the
//! `TenantId` and filters on it; there is no query by recording id alone.

use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::domain::{ExternalCallId, Principal, RecordingId, Role, TenantId, now_ms};
use crate::error::{Error, Result};

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pool: AnyPool,
    backend: Backend,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
}

/// A freshly created tenant and its first tokens (printed once, never stored).
#[derive(Debug, Clone)]
pub struct TenantBootstrap {
    pub tenant: Tenant,
    pub ingest_token: String,
    pub supervisor_token: String,
}

#[derive(Debug, Clone)]
pub struct TenantKey {
    pub key_arn: String,
    pub region: String,
    pub status: String,
    pub activated_at_ms: i64,
}

/// What ingest writes when an upload starts.
#[derive(Debug, Clone)]
pub struct NewRecording {
    pub tenant: TenantId,
    pub id: RecordingId,
    pub external_call_id: ExternalCallId,
    pub format_version: u8,
    pub key_arn: String,
    pub kms_region: String,
    pub wrapped_key: Vec<u8>,
    pub encryption_context: String,
    pub salt: Vec<u8>,
    pub nonce_prefix: Vec<u8>,
    pub commitment: Vec<u8>,
    pub chunk_size: u32,
    pub labels_sealed: Option<Vec<u8>>,
    pub start_time_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudioInfo {
    pub container: String,
    pub codec: String,
    pub sample_rate_hz: u32,
    pub channels: u32,
    pub duration_ms: u64,
    pub warning: Option<String>,
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
    pub sealed_sha256: String,
    pub object_key: String,
}

/// A committed recording as stored.
#[derive(Debug, Clone)]
pub struct RecordingRow {
    pub tenant: TenantId,
    pub id: RecordingId,
    pub external_call_id: String,
    pub format_version: u8,
    pub key_arn: String,
    pub kms_region: String,
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
}

/// Outcome of committing an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// Another attempt with the same call id committed first; this is its id.
    Duplicate(RecordingId),
}

/// The recording columns every read selects (a macro so queries stay
/// `&'static str`: no SQL is ever built at run time).
macro_rules! recording_select {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, recording_id, external_call_id, format_version, key_arn, \
             kms_region, wrapped_key, salt, nonce_prefix, commitment, chunk_size, chunk_count, size_bytes, \
             sha256, container, codec, sample_rate_hz, channels, duration_ms, audio_warning, labels_sealed, \
             start_time_ms, created_at_ms FROM recordings ",
            $rest
        )
    };
}

fn corrupt(what: &str) -> Error {
    Error::Internal(format!("catalog holds an invalid {what}"))
}

fn to_u32(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(what))
}

fn recording_from_row(row: &AnyRow) -> Result<RecordingRow> {
    let id: String = row.try_get("recording_id")?;
    let id = RecordingId::parse("recording_id", &id).map_err(|_| corrupt("recording id"))?;
    Ok(RecordingRow {
        tenant: TenantId::from_catalog(row.try_get("tenant_id")?),
        id,
        external_call_id: row.try_get("external_call_id")?,
        format_version: u8::try_from(row.try_get::<i64, _>("format_version")?)
            .map_err(|_| corrupt("format version"))?,
        key_arn: row.try_get("key_arn")?,
        kms_region: row.try_get("kms_region")?,
        wrapped_key: row.try_get("wrapped_key")?,
        salt: row.try_get("salt")?,
        nonce_prefix: row.try_get("nonce_prefix")?,
        commitment: row.try_get("commitment")?,
        chunk_size: to_u32(row.try_get("chunk_size")?, "chunk size")?,
        chunk_count: to_u32(
            row.try_get::<Option<i64>, _>("chunk_count")?.unwrap_or(0),
            "chunk count",
        )?,
        size_bytes: u64::try_from(row.try_get::<Option<i64>, _>("size_bytes")?.unwrap_or(0))
            .map_err(|_| corrupt("size"))?,
        sha256: row
            .try_get::<Option<String>, _>("sha256")?
            .unwrap_or_default(),
        audio: AudioInfo {
            container: row
                .try_get::<Option<String>, _>("container")?
                .unwrap_or_default(),
            codec: row
                .try_get::<Option<String>, _>("codec")?
                .unwrap_or_default(),
            sample_rate_hz: to_u32(
                row.try_get::<Option<i64>, _>("sample_rate_hz")?
                    .unwrap_or(0),
                "rate",
            )?,
            channels: to_u32(
                row.try_get::<Option<i64>, _>("channels")?.unwrap_or(0),
                "channels",
            )?,
            duration_ms: u64::try_from(row.try_get::<Option<i64>, _>("duration_ms")?.unwrap_or(0))
                .map_err(|_| corrupt("duration"))?,
            warning: row.try_get("audio_warning")?,
        },
        labels_sealed: row.try_get("labels_sealed")?,
        start_time_ms: row.try_get("start_time_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// SHA-256 hex of a bearer token, the only form in which tokens are stored.
pub fn hash_token(token: &str) -> String {
    crate::crypto::sha256_hex(token.as_bytes())
}

impl Catalog {
    /// Connects and migrates. `postgres://…` or `sqlite://path`.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(Error::invalid(
                "database_url",
                "must start with postgres:// or sqlite:",
            ));
        };
        let url = match backend {
            // Create the file on first use; WAL lets readers run beside the writer.
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let max = if backend == Backend::Sqlite { 4 } else { 16 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA busy_timeout = 5000")
                .execute(&pool)
                .await?;
        }
        match backend {
            Backend::Postgres => PG_MIGRATIONS.run(&pool).await?,
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
        }
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- tenants and keys ----

    /// Creates a tenant with its first (active) KMS key.
    pub async fn create_tenant(&self, name: &str, key_arn: &str, region: &str) -> Result<Tenant> {
        if name.is_empty()
            || name.len() > 128
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(Error::invalid(
                "name",
                "must be 1..=128 characters of [A-Za-z0-9._-]",
            ));
        }
        let id = TenantId::new_random();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (tenant_id, name, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(id.as_str())
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::FailedPrecondition(format!(
                "tenant `{name}` already exists"
            )));
        }
        sqlx::query(
            "INSERT INTO tenant_keys (tenant_id, key_arn, region, status, activated_at_ms) VALUES ($1, $2, $3, 'active', $4)",
        )
        .bind(id.as_str())
        .bind(key_arn)
        .bind(region)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Tenant {
            id,
            name: name.to_owned(),
        })
    }

    pub async fn tenant_by_name(&self, name: &str) -> Result<Tenant> {
        let row = sqlx::query("SELECT tenant_id, name FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant `{name}`")))?;
        Ok(Tenant {
            id: TenantId::from_catalog(row.try_get("tenant_id")?),
            name: row.try_get("name")?,
        })
    }

    pub async fn active_key(&self, tenant: &TenantId) -> Result<TenantKey> {
        let row = sqlx::query(
            "SELECT key_arn, region, status, activated_at_ms FROM tenant_keys WHERE tenant_id = $1 AND status = 'active'",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::FailedPrecondition("tenant has no active KMS key".into()))?;
        Ok(TenantKey {
            key_arn: row.try_get("key_arn")?,
            region: row.try_get("region")?,
            status: row.try_get("status")?,
            activated_at_ms: row.try_get("activated_at_ms")?,
        })
    }

    /// A tenant with its first key and one ingest and one supervisor token:
    /// what the demo, the tests and the benches start from.
    pub async fn bootstrap_tenant(
        &self,
        name: &str,
        key_arn: &str,
        region: &str,
    ) -> Result<TenantBootstrap> {
        let tenant = self.create_tenant(name, key_arn, region).await?;
        let ingest_token = self.create_token(&tenant.id, Role::Ingest).await?;
        let supervisor_token = self.create_token(&tenant.id, Role::Supervisor).await?;
        Ok(TenantBootstrap {
            tenant,
            ingest_token,
            supervisor_token,
        })
    }

    // ---- tokens ----

    /// Issues a token for (tenant, role). The plaintext is returned once and
    /// never stored.
    pub async fn create_token(&self, tenant: &TenantId, role: Role) -> Result<String> {
        use base64::Engine as _;
        let mut secret = [0u8; 32];
        crate::crypto::fill_random(&mut secret)?;
        let token = format!(
            "cv_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        sqlx::query(
            "INSERT INTO api_tokens (token_id, token_hash, tenant_id, role, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(hash_token(&token))
        .bind(tenant.as_str())
        .bind(role.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        let row = sqlx::query(
            "SELECT tenant_id, role FROM api_tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL",
        )
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::Unauthenticated("invalid or revoked token"))?;
        let role: String = row.try_get("role")?;
        Ok(Principal {
            tenant: TenantId::from_catalog(row.try_get("tenant_id")?),
            role: Role::from_str(&role).map_err(|_| corrupt("role"))?,
        })
    }

    // ---- recordings ----

    pub async fn begin_upload(&self, r: &NewRecording) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO recordings (tenant_id, recording_id, external_call_id, status, format_version, key_arn, \
             kms_region, wrapped_key, encryption_context, salt, nonce_prefix, commitment, chunk_size, \
             labels_sealed, start_time_ms, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, 'uploading', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
        )
        .bind(r.tenant.as_str())
        .bind(r.id.to_string())
        .bind(r.external_call_id.as_str())
        .bind(i64::from(r.format_version))
        .bind(&r.key_arn)
        .bind(&r.kms_region)
        .bind(&r.wrapped_key)
        .bind(&r.encryption_context)
        .bind(&r.salt)
        .bind(&r.nonce_prefix)
        .bind(&r.commitment)
        .bind(i64::from(r.chunk_size))
        .bind(&r.labels_sealed)
        .bind(r.start_time_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an uploaded (not yet visible) chunk and refreshes the upload's
    /// heartbeat, which the sweeper uses to tell live uploads from dead ones.
    pub async fn add_chunk(
        &self,
        tenant: &TenantId,
        rec: &RecordingId,
        c: &ChunkRow,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_chunk(&mut tx, tenant, rec, c).await?;
        sqlx::query(
            "UPDATE recordings SET updated_at_ms = $3 WHERE tenant_id = $1 AND recording_id = $2",
        )
        .bind(tenant.as_str())
        .bind(rec.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes the recording visible: the final chunk row and the completed
    /// recording row are committed in one transaction.
    pub async fn commit_upload(
        &self,
        tenant: &TenantId,
        rec: &RecordingId,
        external_call_id: &ExternalCallId,
        final_chunk: &ChunkRow,
        done: &Completion,
    ) -> Result<CommitOutcome> {
        let mut tx = self.pool.begin().await?;
        insert_chunk(&mut tx, tenant, rec, final_chunk).await?;
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
        .execute(&mut *tx)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 1 => {
                tx.commit().await?;
                Ok(CommitOutcome::Committed)
            }
            Ok(_) => Err(Error::Internal(
                "upload row vanished before commit (swept?)".into(),
            )),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                let winner = self
                    .find_by_call_id(tenant, external_call_id)
                    .await?
                    .ok_or_else(|| {
                        Error::Internal("duplicate call id without a committed recording".into())
                    })?;
                Ok(CommitOutcome::Duplicate(winner.id))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes an upload that will not complete (chunks cascade).
    pub async fn abort_upload(&self, tenant: &TenantId, rec: &RecordingId) -> Result<()> {
        sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND recording_id = $2")
            .bind(tenant.as_str())
            .bind(rec.to_string())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM recordings WHERE tenant_id = $1 AND recording_id = $2 AND status = 'uploading'")
            .bind(tenant.as_str())
            .bind(rec.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Uploads whose heartbeat is older than `older_than_ms` ago: their
    /// writer is gone (crashed node, dropped stream).
    pub async fn stale_uploads(&self, older_than_ms: i64) -> Result<Vec<(TenantId, RecordingId)>> {
        let rows = sqlx::query(
            "SELECT tenant_id, recording_id FROM recordings WHERE status = 'uploading' AND updated_at_ms < $1",
        )
        .bind(now_ms() - older_than_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("recording_id")?;
                Ok((
                    TenantId::from_catalog(row.try_get("tenant_id")?),
                    RecordingId::parse("recording_id", &id).map_err(|_| corrupt("recording id"))?,
                ))
            })
            .collect()
    }

    pub async fn find_by_call_id(
        &self,
        tenant: &TenantId,
        call: &ExternalCallId,
    ) -> Result<Option<RecordingRow>> {
        let row = sqlx::query(recording_select!(
            "WHERE tenant_id = $1 AND external_call_id = $2 AND status = 'complete'"
        ))
        .bind(tenant.as_str())
        .bind(call.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(recording_from_row).transpose()
    }

    /// A committed recording of this tenant. Another tenant's recording and an
    /// upload in progress are both simply not found.
    pub async fn get_recording(
        &self,
        tenant: &TenantId,
        rec: &RecordingId,
    ) -> Result<RecordingRow> {
        let row = sqlx::query(recording_select!(
            "WHERE tenant_id = $1 AND recording_id = $2 AND status = 'complete'"
        ))
        .bind(tenant.as_str())
        .bind(rec.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("recording {rec}")))?;
        recording_from_row(&row)
    }

    /// Committed recordings in id (= creation) order, after `after`.
    pub async fn list_recordings(
        &self,
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
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(recording_from_row).collect()
    }

    pub async fn chunks(&self, tenant: &TenantId, rec: &RecordingId) -> Result<Vec<ChunkRow>> {
        let rows = sqlx::query(
            "SELECT chunk_index, plaintext_size, sealed_size, sealed_sha256, object_key FROM chunks \
             WHERE tenant_id = $1 AND recording_id = $2 ORDER BY chunk_index",
        )
        .bind(tenant.as_str())
        .bind(rec.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChunkRow {
                    index: to_u32(row.try_get("chunk_index")?, "chunk index")?,
                    plaintext_size: to_u32(row.try_get("plaintext_size")?, "chunk size")?,
                    sealed_size: to_u32(row.try_get("sealed_size")?, "sealed size")?,
                    sealed_sha256: row.try_get("sealed_sha256")?,
                    object_key: row.try_get("object_key")?,
                })
            })
            .collect()
    }

    /// Raw access for tests and tools that must inspect or alter rows (tamper
    /// tests, plaintext scans). Not used by the service paths.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

async fn insert_chunk(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &TenantId,
    rec: &RecordingId,
    c: &ChunkRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO chunks (tenant_id, recording_id, chunk_index, plaintext_size, sealed_size, sealed_sha256, object_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant.as_str())
    .bind(rec.to_string())
    .bind(i64::from(c.index))
    .bind(i64::from(c.plaintext_size))
    .bind(i64::from(c.sealed_size))
    .bind(&c.sealed_sha256)
    .bind(&c.object_key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
