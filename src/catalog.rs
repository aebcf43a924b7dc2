//! The catalog: tenants, key history, recordings, chunks and API tokens.
//!
//! One implementation over `sqlx::Any` serves PostgreSQL (production) and
//! SQLite (embedded default): every statement is written once, in the SQL
//! both accept (`$N` placeholders, `ON CONFLICT`, partial indexes), and times
//! are Unix milliseconds. The schema lives in `migrations/<backend>/`.
//!
//! Tenant isolation: every query that touches tenant data takes the
//! `TenantId` and filters on it; there is no query by recording id alone.

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::domain::{ExternalCallId, Principal, RecordingId, Role, TenantId, now_ms};
use crate::error::{Error, Result};
use crate::kms::WrapAlgorithm;

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
    /// Kept for the LISTEN connection (PostgreSQL), which the pool cannot lend.
    url: String,
}

/// A catalog transaction. Use cases begin one with [`Catalog::begin`], pass
/// it to the catalog functions that must commit together, and commit it.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The PostgreSQL NOTIFY channel on which nodes announce a revoked KMS key
/// (payload: the key ARN), so every node drops its cached data keys at once.
pub const REVOCATION_CHANNEL: &str = "callvault_key_revoked";

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
    pub admin_token: String,
}

/// One entry of a tenant's key history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKey {
    pub key_arn: String,
    pub region: String,
    /// `active`, `previous` or `retired`.
    pub status: String,
    /// KMS KeySpec (`SYMMETRIC_DEFAULT`, `RSA_2048`, …).
    pub key_spec: String,
    pub algorithm: WrapAlgorithm,
    /// DER SubjectPublicKeyInfo, pinned at registration (asymmetric keys).
    pub public_key: Option<Vec<u8>>,
    /// Multi-Region replicas: region -> replica ARN.
    pub replicas: BTreeMap<String, String>,
    pub registered_at_ms: i64,
    pub activated_at_ms: i64,
    pub deactivated_at_ms: Option<i64>,
    pub retired_at_ms: Option<i64>,
    pub health: Option<KeyHealthRecord>,
}

impl TenantKey {
    /// The ARN a node in `region` calls KMS with: the key itself in its home
    /// region, its multi-Region replica elsewhere, or none (a regional KMS
    /// endpoint cannot use a key of another region).
    pub fn arn_in(&self, region: &str) -> Option<&str> {
        match crate::kms::arn_region(&self.key_arn) {
            None => Some(&self.key_arn),
            Some(home) if home == region => Some(&self.key_arn),
            Some(_) => self.replicas.get(region).map(String::as_str),
        }
    }
}

/// The outcome of the last DescribeKey health check of a tenant key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHealthRecord {
    /// `enabled`, `disabled`, `pending_deletion`, `access_denied`,
    /// `not_found`, `unreachable` or `invalid_state`.
    pub state: String,
    pub detail: Option<String>,
    pub deletion_date_ms: Option<i64>,
    pub checked_at_ms: i64,
}

/// What a key protects: committed and in-flight recordings wrapped under it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUsage {
    pub recordings: u64,
    pub bytes: u64,
    pub legal_hold: u64,
}

/// A key to make active (registration has already proven it usable).
#[derive(Debug, Clone)]
pub struct NewTenantKey {
    pub key_arn: String,
    pub region: String,
    pub key_spec: String,
    pub public_key: Option<Vec<u8>>,
    pub replicas: BTreeMap<String, String>,
}

impl NewTenantKey {
    pub fn symmetric(key_arn: &str, region: &str) -> Self {
        Self {
            key_arn: key_arn.to_owned(),
            region: region.to_owned(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            public_key: None,
            replicas: BTreeMap::new(),
        }
    }
}

/// A background job moving a tenant's wrapped data keys from one KMS key to
/// another with ReEncrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapJob {
    pub id: String,
    pub tenant: TenantId,
    pub source_arn: String,
    pub destination_arn: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
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
    pub key_arn: String,
    pub region: String,
    pub algorithm: WrapAlgorithm,
    pub wrapped_key: Vec<u8>,
}

/// A batch of recordings leased to one worker. On PostgreSQL the rows stay
/// locked (`FOR UPDATE SKIP LOCKED`) until `commit` or drop, so concurrent
/// workers on other nodes take other rows; dropping the lease (a crash)
/// rolls back and the rows become available again.
pub struct RewrapLease {
    tx: Option<sqlx::Transaction<'static, sqlx::Any>>,
    job: RewrapJob,
    pub items: Vec<LeasedKey>,
}

impl std::fmt::Debug for RewrapLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewrapLease")
            .field("job", &self.job.id)
            .field("items", &self.items.len())
            .finish()
    }
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

/// The recording columns every read selects (a macro so queries stay
/// `&'static str`: no SQL is ever built at run time).
macro_rules! recording_select {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, recording_id, external_call_id, format_version, key_arn, \
             kms_region, wrapped_key, salt, nonce_prefix, commitment, chunk_size, chunk_count, size_bytes, \
             sha256, container, codec, sample_rate_hz, channels, duration_ms, audio_warning, labels_sealed, \
             start_time_ms, created_at_ms, wrap_algorithm, legal_hold FROM recordings ",
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
        wrap_algorithm: algorithm_of(&row.try_get::<String, _>("wrap_algorithm")?)?,
        legal_hold: row.try_get::<i64, _>("legal_hold")? != 0,
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

fn algorithm_of(s: &str) -> Result<WrapAlgorithm> {
    WrapAlgorithm::parse(s).ok_or_else(|| corrupt("wrap algorithm"))
}

/// The tenant_keys columns every key read selects.
macro_rules! key_select {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, key_arn, region, status, key_spec, public_key, replicas, registered_at_ms, \
             activated_at_ms, deactivated_at_ms, retired_at_ms, health_state, health_detail, \
             deletion_date_ms, health_checked_at_ms FROM tenant_keys ",
            $rest
        )
    };
}

fn key_from_row(row: &AnyRow) -> Result<TenantKey> {
    let key_spec: String = row.try_get("key_spec")?;
    let replicas: String = row.try_get("replicas")?;
    let health = match row.try_get::<Option<String>, _>("health_state")? {
        Some(state) => Some(KeyHealthRecord {
            state,
            detail: row.try_get("health_detail")?,
            deletion_date_ms: row.try_get("deletion_date_ms")?,
            checked_at_ms: row
                .try_get::<Option<i64>, _>("health_checked_at_ms")?
                .unwrap_or(0),
        }),
        None => None,
    };
    Ok(TenantKey {
        key_arn: row.try_get("key_arn")?,
        region: row.try_get("region")?,
        status: row.try_get("status")?,
        algorithm: WrapAlgorithm::for_key_spec(&key_spec).ok_or_else(|| corrupt("key spec"))?,
        key_spec,
        public_key: row.try_get("public_key")?,
        replicas: serde_json::from_str(&replicas).map_err(|_| corrupt("replica list"))?,
        registered_at_ms: row.try_get("registered_at_ms")?,
        activated_at_ms: row.try_get("activated_at_ms")?,
        deactivated_at_ms: row.try_get("deactivated_at_ms")?,
        retired_at_ms: row.try_get("retired_at_ms")?,
        health,
    })
}

macro_rules! job_select {
    ($rest:literal) => {
        concat!(
            "SELECT job_id, tenant_id, source_arn, destination_arn, status, max_kms_per_sec, total, \
             rewrapped, error, created_at_ms, updated_at_ms, finished_at_ms FROM rewrap_jobs ",
            $rest
        )
    };
}

fn job_from_row(row: &AnyRow) -> Result<RewrapJob> {
    let count = |col: &str| -> Result<u64> {
        u64::try_from(row.try_get::<i64, _>(col)?).map_err(|_| corrupt("job counter"))
    };
    Ok(RewrapJob {
        id: row.try_get("job_id")?,
        tenant: TenantId::from_catalog(row.try_get("tenant_id")?),
        source_arn: row.try_get("source_arn")?,
        destination_arn: row.try_get("destination_arn")?,
        status: row.try_get("status")?,
        max_kms_per_sec: to_u32(row.try_get("max_kms_per_sec")?, "job rate")?,
        total: count("total")?,
        rewrapped: count("rewrapped")?,
        error: row.try_get("error")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
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
        Ok(Self { pool, backend, url })
    }

    /// Tells every node that `key_arn` was found revoked. A no-op on SQLite,
    /// whose catalog serves a single node.
    pub async fn notify_key_revoked(&self, key_arn: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(REVOCATION_CHANNEL)
                .bind(key_arn)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// A LISTEN connection on the revocation channel (PostgreSQL only).
    pub async fn revocation_listener(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(REVOCATION_CHANNEL).await?;
        Ok(Some(listener))
    }

    /// Begins a transaction for a use case to commit (or drop to roll back).
    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
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
        insert_active_key(&mut tx, &id, &NewTenantKey::symmetric(key_arn, region), now).await?;
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
        let row = sqlx::query(key_select!("WHERE tenant_id = $1 AND status = 'active'"))
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::FailedPrecondition("tenant has no active KMS key".into()))?;
        key_from_row(&row)
    }

    /// One key of the tenant's history.
    pub async fn tenant_key(&self, tenant: &TenantId, key_arn: &str) -> Result<Option<TenantKey>> {
        let row = sqlx::query(key_select!("WHERE tenant_id = $1 AND key_arn = $2"))
            .bind(tenant.as_str())
            .bind(key_arn)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// The tenant's whole key history, oldest activation first, with what
    /// each key protects.
    pub async fn tenant_keys(&self, tenant: &TenantId) -> Result<Vec<(TenantKey, KeyUsage)>> {
        let rows = sqlx::query(key_select!(
            "WHERE tenant_id = $1 ORDER BY activated_at_ms, key_arn"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        let usage = self.key_usage(tenant).await?;
        rows.iter()
            .map(|row| {
                let key = key_from_row(row)?;
                let u = usage.get(&key.key_arn).copied().unwrap_or_default();
                Ok((key, u))
            })
            .collect()
    }

    /// Recordings (any status: an upload in flight is protected too), bytes
    /// and legal holds per key ARN.
    pub async fn key_usage(&self, tenant: &TenantId) -> Result<BTreeMap<String, KeyUsage>> {
        let rows = sqlx::query(
            "SELECT key_arn, COUNT(*) AS recordings, \
             CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS bytes, \
             CAST(COALESCE(SUM(legal_hold), 0) AS BIGINT) AS held \
             FROM recordings WHERE tenant_id = $1 GROUP BY key_arn",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        let n = |v: i64| u64::try_from(v).map_err(|_| corrupt("count"));
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("key_arn")?,
                    KeyUsage {
                        recordings: n(row.try_get("recordings")?)?,
                        bytes: n(row.try_get("bytes")?)?,
                        legal_hold: n(row.try_get("held")?)?,
                    },
                ))
            })
            .collect()
    }

    /// Makes `key` the tenant's active key; the previous active key stays in
    /// the history as `previous` (it still protects its recordings). A key
    /// that is already in the history is re-activated.
    ///
    /// Registering the key that is already active only refreshes its
    /// details (replicas, pinned public key): its activation time, which
    /// rotation compliance measures, stays.
    pub async fn activate_key(&self, tenant: &TenantId, key: &NewTenantKey) -> Result<TenantKey> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let replicas =
            serde_json::to_string(&key.replicas).map_err(|e| Error::Internal(e.to_string()))?;
        let refreshed = sqlx::query(
            "UPDATE tenant_keys SET region = $3, key_spec = $4, public_key = $5, replicas = $6 \
             WHERE tenant_id = $1 AND key_arn = $2 AND status = 'active'",
        )
        .bind(tenant.as_str())
        .bind(&key.key_arn)
        .bind(&key.region)
        .bind(&key.key_spec)
        .bind(&key.public_key)
        .bind(&replicas)
        .execute(&mut *tx)
        .await?;
        if refreshed.rows_affected() == 0 {
            sqlx::query(
                "UPDATE tenant_keys SET status = 'previous', deactivated_at_ms = $2 \
                 WHERE tenant_id = $1 AND status = 'active'",
            )
            .bind(tenant.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            insert_active_key(&mut tx, tenant, key, now).await?;
        }
        tx.commit().await?;
        self.tenant_key(tenant, &key.key_arn)
            .await?
            .ok_or_else(|| Error::Internal("activated key vanished".into()))
    }

    /// True if another tenant's key history holds `key_arn`: one KMS key
    /// serves one tenant, so a tenant's KMS audit log is its own.
    pub async fn key_held_by_other_tenant(&self, tenant: &TenantId, key_arn: &str) -> Result<bool> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM tenant_keys WHERE key_arn = $1 AND tenant_id <> $2",
        )
        .bind(key_arn)
        .bind(tenant.as_str())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }

    /// Marks a key retired. Refused while it is active or still protects a
    /// recording (including an upload in flight).
    pub async fn retire_key(&self, tenant: &TenantId, key_arn: &str) -> Result<TenantKey> {
        let mut tx = self.pool.begin().await?;
        let key =
            sqlx::query("SELECT status FROM tenant_keys WHERE tenant_id = $1 AND key_arn = $2")
                .bind(tenant.as_str())
                .bind(key_arn)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::NotFound(format!("key {key_arn}")))?;
        if key.try_get::<String, _>("status")? == "active" {
            return Err(Error::FailedPrecondition(format!(
                "key {key_arn} is the active key; register another key first"
            )));
        }
        let protected = count_under(&mut *tx, tenant, key_arn).await?;
        if protected > 0 {
            return Err(Error::FailedPrecondition(format!(
                "key {key_arn} still protects {protected} recordings; rewrap them first"
            )));
        }
        sqlx::query(
            "UPDATE tenant_keys SET status = 'retired', retired_at_ms = $3 \
             WHERE tenant_id = $1 AND key_arn = $2",
        )
        .bind(tenant.as_str())
        .bind(key_arn)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.tenant_key(tenant, key_arn)
            .await?
            .ok_or_else(|| Error::Internal("retired key vanished".into()))
    }

    /// Every key a health check should look at: all tenants, all keys not
    /// retired.
    pub async fn keys_to_check(&self) -> Result<Vec<(TenantId, TenantKey)>> {
        let rows = sqlx::query(key_select!(
            "WHERE status <> 'retired' ORDER BY tenant_id, activated_at_ms"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    TenantId::from_catalog(row.try_get("tenant_id")?),
                    key_from_row(row)?,
                ))
            })
            .collect()
    }

    pub async fn record_key_health(
        &self,
        tenant: &TenantId,
        key_arn: &str,
        health: &KeyHealthRecord,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tenant_keys SET health_state = $3, health_detail = $4, deletion_date_ms = $5, \
             health_checked_at_ms = $6 WHERE tenant_id = $1 AND key_arn = $2",
        )
        .bind(tenant.as_str())
        .bind(key_arn)
        .bind(&health.state)
        .bind(&health.detail)
        .bind(health.deletion_date_ms)
        .bind(health.checked_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The tenant's key-rotation policy, in days.
    pub async fn rotation_policy_days(&self, tenant: &TenantId) -> Result<u32> {
        let row = sqlx::query("SELECT key_rotation_days FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound("tenant".into()))?;
        to_u32(row.try_get("key_rotation_days")?, "rotation policy")
    }

    pub async fn set_rotation_policy_days(&self, tenant: &TenantId, days: u32) -> Result<()> {
        sqlx::query("UPDATE tenants SET key_rotation_days = $2 WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .bind(i64::from(days))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- rewrap jobs ----

    /// Records a running rewrap job. Both keys must be in the tenant's
    /// history; one job per tenant runs at a time.
    pub async fn start_rewrap(
        &self,
        tenant: &TenantId,
        source_arn: &str,
        destination_arn: &str,
        max_kms_per_sec: u32,
    ) -> Result<RewrapJob> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let total = count_under(&mut *tx, tenant, source_arn).await?;
        let res = sqlx::query(
            "INSERT INTO rewrap_jobs (job_id, tenant_id, source_arn, destination_arn, status, \
             max_kms_per_sec, total, rewrapped, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, 'running', $5, $6, 0, $7, $7)",
        )
        .bind(&id)
        .bind(tenant.as_str())
        .bind(source_arn)
        .bind(destination_arn)
        .bind(i64::from(max_kms_per_sec))
        .bind(total)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::FailedPrecondition(
                    "a rewrap job is already running for this tenant".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        self.rewrap_job(tenant, &id).await
    }

    pub async fn rewrap_job(&self, tenant: &TenantId, id: &str) -> Result<RewrapJob> {
        let row = sqlx::query(job_select!("WHERE tenant_id = $1 AND job_id = $2"))
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("rewrap job {id}")))?;
        job_from_row(&row)
    }

    pub async fn rewrap_jobs(&self, tenant: &TenantId) -> Result<Vec<RewrapJob>> {
        let rows = sqlx::query(job_select!(
            "WHERE tenant_id = $1 ORDER BY created_at_ms DESC LIMIT 100"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Running jobs of every tenant: what each node's worker picks up.
    pub async fn running_rewrap_jobs(&self) -> Result<Vec<RewrapJob>> {
        let rows = sqlx::query(job_select!(
            "WHERE status = 'running' ORDER BY created_at_ms"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Leases up to `limit` recordings still wrapped under the job's source
    /// key. On PostgreSQL the rows are locked with `FOR UPDATE SKIP LOCKED`
    /// until the lease commits or drops, so workers on several nodes never
    /// take the same recording. SQLite (single node) has no row locks; the
    /// compare-and-set in `commit` is what keeps a key from moving twice.
    pub async fn lease_rewrap_batch(&self, job: &RewrapJob, limit: u32) -> Result<RewrapLease> {
        let (tx, rows) = match self.backend {
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let rows = sqlx::query(
                    "SELECT recording_id, wrapped_key, wrap_algorithm FROM recordings \
                     WHERE tenant_id = $1 AND key_arn = $2 ORDER BY recording_id LIMIT $3 \
                     FOR UPDATE SKIP LOCKED",
                )
                .bind(job.tenant.as_str())
                .bind(&job.source_arn)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                (Some(tx), rows)
            }
            Backend::Sqlite => {
                let rows = sqlx::query(
                    "SELECT recording_id, wrapped_key, wrap_algorithm FROM recordings \
                     WHERE tenant_id = $1 AND key_arn = $2 ORDER BY recording_id LIMIT $3",
                )
                .bind(job.tenant.as_str())
                .bind(&job.source_arn)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                (None, rows)
            }
        };
        let items = rows
            .iter()
            .map(|row| {
                let id: String = row.try_get("recording_id")?;
                Ok(LeasedKey {
                    recording: RecordingId::parse("recording_id", &id)
                        .map_err(|_| corrupt("recording id"))?,
                    wrapped_key: row.try_get("wrapped_key")?,
                    algorithm: algorithm_of(&row.try_get::<String, _>("wrap_algorithm")?)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RewrapLease {
            tx,
            job: job.clone(),
            items,
        })
    }

    /// Reserves `n` KMS requests of the job's per-second budget, shared by
    /// every node working on it (a fixed one-second window in the job row).
    /// Returns false when this window is spent.
    pub async fn reserve_rewrap_budget(&self, job: &RewrapJob, n: u32) -> Result<bool> {
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
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Recordings still under the job's source key, locked or not.
    pub async fn remaining_under(&self, tenant: &TenantId, key_arn: &str) -> Result<u64> {
        let n = count_under(&self.pool, tenant, key_arn).await?;
        u64::try_from(n).map_err(|_| corrupt("count"))
    }

    /// Ends a running job (`succeeded`, `failed` or `cancelled`). Returns
    /// false if it was no longer running (another node ended it).
    pub async fn finish_rewrap(
        &self,
        tenant: &TenantId,
        id: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<bool> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE rewrap_jobs SET status = $3, error = $4, updated_at_ms = $5, finished_at_ms = $5 \
             WHERE tenant_id = $1 AND job_id = $2 AND status = 'running'",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Sets a failed job running again; it resumes where it stopped.
    pub async fn resume_rewrap(&self, tenant: &TenantId, id: &str) -> Result<RewrapJob> {
        let res = sqlx::query(
            "UPDATE rewrap_jobs SET status = 'running', error = NULL, finished_at_ms = NULL, updated_at_ms = $3 \
             WHERE tenant_id = $1 AND job_id = $2 AND status = 'failed'",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 1 => self.rewrap_job(tenant, id).await,
            Ok(_) => {
                let job = self.rewrap_job(tenant, id).await?;
                Err(Error::FailedPrecondition(format!(
                    "rewrap job {id} is {}, only a failed job can resume",
                    job.status
                )))
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(
                Error::FailedPrecondition("another rewrap job is running for this tenant".into()),
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// A tenant with its first key and one ingest    /// A tenant with its first key and one ingest, one supervisor and one
    /// admin token:
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
        let admin_token = self.create_token(&tenant.id, Role::Admin).await?;
        Ok(TenantBootstrap {
            tenant,
            ingest_token,
            supervisor_token,
            admin_token,
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
        sqlx::query(
            "INSERT INTO recordings (tenant_id, recording_id, external_call_id, status, format_version, key_arn, \
             kms_region, wrapped_key, encryption_context, salt, nonce_prefix, commitment, chunk_size, \
             labels_sealed, start_time_ms, created_at_ms, updated_at_ms, wrap_algorithm, lease_until_ms) \
             VALUES ($1, $2, $3, 'uploading', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17)",
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
        .bind(r.created_at_ms)
        .bind(r.wrap_algorithm.as_str())
        .bind(r.lease_until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an uploaded (not yet visible) chunk. Fails with
    /// [`Error::UploadAbandoned`] when the upload's row is gone (swept).
    pub async fn add_chunk(
        &self,
        tenant: &TenantId,
        rec: &RecordingId,
        c: &ChunkRow,
    ) -> Result<()> {
        insert_chunk(&self.pool, tenant, rec, c)
            .await
            .map_err(|e| abandoned_if_orphan(e, rec))
    }

    /// Extends an upload's lease to `until_ms`. Fails with
    /// [`Error::UploadAbandoned`] if the upload is no longer in flight.
    pub async fn renew_upload_lease(
        &self,
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
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(swept(rec));
        }
        Ok(())
    }

    /// Makes the recording visible: the completed recording row and the
    /// final chunk row, in the caller's transaction. The row must still be
    /// an upload in flight; if the sweeper removed it this fails with
    /// [`Error::UploadAbandoned`]. The status update comes first, so it
    /// takes the row lock a concurrent sweep would need (PostgreSQL) and the
    /// two exclude each other.
    pub async fn commit_upload(
        tx: &mut Tx,
        tenant: &TenantId,
        rec: &RecordingId,
        final_chunk: &ChunkRow,
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
        .execute(&mut **tx)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 1 => {}
            Ok(_) => return Err(swept(rec)),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Ok(CommitOutcome::DuplicateCallId);
            }
            Err(e) => return Err(e.into()),
        }
        insert_chunk(&mut **tx, tenant, rec, final_chunk).await?;
        Ok(CommitOutcome::Committed)
    }

    /// Removes an upload that will not complete, in the caller's
    /// transaction: its recording row (only while it is `uploading`; a
    /// committed recording is never touched), its chunk rows, and queues
    /// its objects for deletion. With `expired_before`, only an upload
    /// whose lease ran out before that time is removed (the sweeper's
    /// check, atomic with the removal).
    ///
    /// Delete objects only after this committed and said `Removed` or
    /// `Absent`, then call [`Catalog::object_deletion_done`].
    pub async fn abort_upload(
        tx: &mut Tx,
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
        .execute(&mut **tx)
        .await?
        .rows_affected();
        let outcome = if removed == 1 {
            // The foreign key cascades; said again so the rule does not
            // rest on the engine's foreign-key setting.
            sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND recording_id = $2")
                .bind(tenant.as_str())
                .bind(rec.to_string())
                .execute(&mut **tx)
                .await?;
            AbortOutcome::Removed
        } else {
            let status: Option<String> = sqlx::query(
                "SELECT status FROM recordings WHERE tenant_id = $1 AND recording_id = $2",
            )
            .bind(tenant.as_str())
            .bind(rec.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get("status"))
            .transpose()?;
            match status.as_deref() {
                None => AbortOutcome::Absent,
                Some("uploading") => return Ok(AbortOutcome::Live),
                Some(_) => return Ok(AbortOutcome::Committed),
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
        .execute(&mut **tx)
        .await?;
        Ok(outcome)
    }

    /// Uploads whose lease ran out before `now_ms`: their node is gone
    /// (crashed, or cut off from the catalog for longer than the lease).
    pub async fn expired_uploads(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<(TenantId, RecordingId)>> {
        let rows = sqlx::query(
            "SELECT tenant_id, recording_id FROM recordings \
             WHERE status = 'uploading' AND lease_until_ms < $1 ORDER BY lease_until_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_and_recording).collect()
    }

    /// Queued object deletions. A recording that exists in the catalog is
    /// never listed, whatever the queue says: objects of a committed
    /// recording are not deleted by this path.
    pub async fn pending_object_deletions(
        &self,
        limit: u32,
    ) -> Result<Vec<(TenantId, RecordingId)>> {
        let rows = sqlx::query(
            "SELECT d.tenant_id, d.recording_id FROM object_deletions d \
             WHERE NOT EXISTS (SELECT 1 FROM recordings r \
             WHERE r.tenant_id = d.tenant_id AND r.recording_id = d.recording_id) \
             ORDER BY d.queued_at_ms LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_and_recording).collect()
    }

    /// The objects of a queued deletion are gone.
    pub async fn object_deletion_done(&self, tenant: &TenantId, rec: &RecordingId) -> Result<()> {
        sqlx::query("DELETE FROM object_deletions WHERE tenant_id = $1 AND recording_id = $2")
            .bind(tenant.as_str())
            .bind(rec.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
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

fn tenant_and_recording(row: &AnyRow) -> Result<(TenantId, RecordingId)> {
    let id: String = row.try_get("recording_id")?;
    Ok((
        TenantId::from_catalog(row.try_get("tenant_id")?),
        RecordingId::parse("recording_id", &id).map_err(|_| corrupt("recording id"))?,
    ))
}

fn swept(rec: &RecordingId) -> Error {
    Error::UploadAbandoned(format!(
        "upload {rec} is no longer in flight: its lease expired and the server removed it"
    ))
}

/// A chunk row whose recording row is gone: the upload was swept.
fn abandoned_if_orphan(e: Error, rec: &RecordingId) -> Error {
    match &e {
        Error::Catalog(sqlx::Error::Database(d))
            if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
        {
            swept(rec)
        }
        _ => e,
    }
}

/// Recordings of any status wrapped under `key_arn`: what a key protects.
async fn count_under<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    tenant: &TenantId,
    key_arn: &str,
) -> Result<i64> {
    Ok(
        sqlx::query("SELECT COUNT(*) AS n FROM recordings WHERE tenant_id = $1 AND key_arn = $2")
            .bind(tenant.as_str())
            .bind(key_arn)
            .fetch_one(executor)
            .await?
            .try_get("n")?,
    )
}

async fn insert_active_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &TenantId,
    key: &NewTenantKey,
    now: i64,
) -> Result<()> {
    let replicas =
        serde_json::to_string(&key.replicas).map_err(|e| Error::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO tenant_keys (tenant_id, key_arn, region, status, key_spec, public_key, replicas, \
         registered_at_ms, activated_at_ms) VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $7) \
         ON CONFLICT (tenant_id, key_arn) DO UPDATE SET status = 'active', region = $3, key_spec = $4, \
         public_key = $5, replicas = $6, activated_at_ms = $7, deactivated_at_ms = NULL, retired_at_ms = NULL",
    )
    .bind(tenant.as_str())
    .bind(&key.key_arn)
    .bind(&key.region)
    .bind(&key.key_spec)
    .bind(&key.public_key)
    .bind(replicas)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl RewrapLease {
    pub fn job(&self) -> &RewrapJob {
        &self.job
    }

    /// Stores the new wrappings and advances the job's progress in one
    /// transaction. Each update is a compare-and-set on the old wrapped key,
    /// so a key is moved at most once whatever happens concurrently. Returns
    /// how many recordings moved.
    pub async fn commit(self, catalog: &Catalog, done: &[Rewrapped]) -> Result<u64> {
        let mut tx = match self.tx {
            Some(tx) => tx,
            None => catalog.pool.begin().await?,
        };
        let mut moved = 0u64;
        for r in done {
            let res = sqlx::query(
                "UPDATE recordings SET key_arn = $3, kms_region = $4, wrap_algorithm = $5, wrapped_key = $6, \
                 updated_at_ms = $7 WHERE tenant_id = $1 AND recording_id = $2 AND key_arn = $8 AND wrapped_key = $9",
            )
            .bind(self.job.tenant.as_str())
            .bind(r.recording.to_string())
            .bind(&r.key_arn)
            .bind(&r.region)
            .bind(r.algorithm.as_str())
            .bind(&r.wrapped_key)
            .bind(now_ms())
            .bind(&self.job.source_arn)
            .bind(&r.old_wrapped_key)
            .execute(&mut *tx)
            .await?;
            moved += res.rows_affected();
        }
        sqlx::query(
            "UPDATE rewrap_jobs SET rewrapped = rewrapped + $2, updated_at_ms = $3 WHERE job_id = $1",
        )
        .bind(&self.job.id)
        .bind(i64::try_from(moved).unwrap_or(i64::MAX))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(moved)
    }
}

async fn insert_chunk<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
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
    .execute(executor)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The SQLite migrations are the PostgreSQL ones with two type names
    /// changed; this keeps the two dialects from drifting.
    #[test]
    fn sqlite_migrations_track_postgres() {
        for (pg, lite) in [
            (
                include_str!("../migrations/postgres/0001_core.sql"),
                include_str!("../migrations/sqlite/0001_core.sql"),
            ),
            (
                include_str!("../migrations/postgres/0002_key_lifecycle.sql"),
                include_str!("../migrations/sqlite/0002_key_lifecycle.sql"),
            ),
            (
                include_str!("../migrations/postgres/0003_upload_lease.sql"),
                include_str!("../migrations/sqlite/0003_upload_lease.sql"),
            ),
        ] {
            assert_eq!(
                pg.replace("BIGINT", "INTEGER").replace("BYTEA", "BLOB"),
                lite
            );
        }
    }
}
