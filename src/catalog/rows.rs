//! Rows to domain values, and the database spelling of every state: the one
//! place (with the SQL and the migrations) where a state is a string.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::keys::{KeyHealthRecord, TenantKey};
use super::recordings::{AudioInfo, ChunkRow, RecordingRow};
use super::rewrap::RewrapJob;
use crate::checksum::SealedChecksum;
use crate::domain::{
    JobStatus, KeyArn, KeyHealthState, KeyStatus, RecordingId, RecordingStatus, TenantId,
};
use crate::error::{Error, Result};
use crate::kms::WrapAlgorithm;

pub(super) fn corrupt(what: &str) -> Error {
    Error::CatalogCorrupt(what.to_owned())
}

pub(super) fn to_u32(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(what))
}

pub(super) fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(what))
}

pub(super) fn checksum_of(stored: String) -> Result<SealedChecksum> {
    SealedChecksum::parse(&stored).ok_or_else(|| corrupt("chunk checksum"))
}

impl KeyStatus {
    pub(super) fn as_db(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Previous => "previous",
            KeyStatus::Retired => "retired",
        }
    }

    fn from_db(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(KeyStatus::Active),
            "previous" => Ok(KeyStatus::Previous),
            "retired" => Ok(KeyStatus::Retired),
            _ => Err(corrupt("key status")),
        }
    }
}

impl KeyHealthState {
    pub(super) fn as_db(self) -> &'static str {
        self.code()
    }

    fn from_db(s: &str) -> Result<Self> {
        Self::from_code(s).ok_or_else(|| corrupt("key health state"))
    }
}

impl JobStatus {
    pub(super) fn as_db(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    fn from_db(s: &str) -> Result<Self> {
        Ok(match s {
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return Err(corrupt("job status")),
        })
    }
}

impl RecordingStatus {
    pub(super) fn from_db(s: &str) -> Result<Self> {
        match s {
            "uploading" => Ok(RecordingStatus::Uploading),
            "complete" => Ok(RecordingStatus::Complete),
            _ => Err(corrupt("recording status")),
        }
    }
}

pub(super) fn algorithm_of(s: &str) -> Result<WrapAlgorithm> {
    WrapAlgorithm::parse(s).ok_or_else(|| corrupt("wrap algorithm"))
}

pub(super) fn key_arn(s: &str) -> Result<KeyArn> {
    KeyArn::parse("key_arn", s).map_err(|_| corrupt("key ARN"))
}

pub(super) fn recording_id(row: &AnyRow) -> Result<RecordingId> {
    let id: String = row.try_get("recording_id")?;
    RecordingId::parse("recording_id", &id).map_err(|_| corrupt("recording id"))
}

pub(super) fn tenant_and_recording(row: &AnyRow) -> Result<(TenantId, RecordingId)> {
    Ok((
        TenantId::from_catalog(row.try_get("tenant_id")?),
        recording_id(row)?,
    ))
}

/// The recording columns every read selects (a macro so queries stay
/// `&'static str`: no SQL is ever built at run time).
macro_rules! recording_select {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, recording_id, external_call_id, format_version, key_arn, \
             kms_region, wrapped_key, salt, nonce_prefix, commitment, chunk_size, chunk_count, size_bytes, \
             sha256, container, codec, sample_rate_hz, channels, duration_ms, audio_warning, labels_sealed, \
             start_time_ms, created_at_ms, wrap_algorithm, legal_hold, retain_until_ms, participants_sealed \
             FROM recordings ",
            $rest
        )
    };
}
pub(super) use recording_select;

/// The same select with no condition yet, for queries whose conditions
/// are assembled at run time (`search::query`).
pub(super) const RECORDING_SELECT: &str = recording_select!("");

pub(super) fn recording(row: &AnyRow) -> Result<RecordingRow> {
    let opt_u32 = |col: &str, what: &str| -> Result<u32> {
        to_u32(row.try_get::<Option<i64>, _>(col)?.unwrap_or(0), what)
    };
    let opt_u64 = |col: &str, what: &str| -> Result<u64> {
        to_u64(row.try_get::<Option<i64>, _>(col)?.unwrap_or(0), what)
    };
    Ok(RecordingRow {
        tenant: TenantId::from_catalog(row.try_get("tenant_id")?),
        id: recording_id(row)?,
        external_call_id: row.try_get("external_call_id")?,
        format_version: u8::try_from(row.try_get::<i64, _>("format_version")?)
            .map_err(|_| corrupt("format version"))?,
        key_arn: key_arn(&row.try_get::<String, _>("key_arn")?)?,
        kms_region: row.try_get("kms_region")?,
        wrap_algorithm: algorithm_of(&row.try_get::<String, _>("wrap_algorithm")?)?,
        legal_hold: row.try_get::<i64, _>("legal_hold")? != 0,
        wrapped_key: row.try_get("wrapped_key")?,
        salt: row.try_get("salt")?,
        nonce_prefix: row.try_get("nonce_prefix")?,
        commitment: row.try_get("commitment")?,
        chunk_size: to_u32(row.try_get("chunk_size")?, "chunk size")?,
        chunk_count: opt_u32("chunk_count", "chunk count")?,
        size_bytes: opt_u64("size_bytes", "size")?,
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
            sample_rate_hz: opt_u32("sample_rate_hz", "rate")?,
            channels: opt_u32("channels", "channels")?,
            duration_ms: opt_u64("duration_ms", "duration")?,
            warning: row.try_get("audio_warning")?,
        },
        labels_sealed: row.try_get("labels_sealed")?,
        start_time_ms: row.try_get("start_time_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        retain_until_ms: row.try_get("retain_until_ms")?,
        participants_sealed: row.try_get("participants_sealed")?,
    })
}

pub(super) fn chunk(row: &AnyRow) -> Result<ChunkRow> {
    Ok(ChunkRow {
        index: to_u32(row.try_get("chunk_index")?, "chunk index")?,
        plaintext_size: to_u32(row.try_get("plaintext_size")?, "chunk size")?,
        sealed_size: to_u32(row.try_get("sealed_size")?, "sealed size")?,
        sealed_checksum: checksum_of(row.try_get("sealed_checksum")?)?,
        object_key: row.try_get("object_key")?,
    })
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
pub(super) use key_select;

pub(super) fn key(row: &AnyRow) -> Result<TenantKey> {
    let key_spec: String = row.try_get("key_spec")?;
    let replicas: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&row.try_get::<String, _>("replicas")?)
            .map_err(|_| corrupt("replica list"))?;
    let health = match row.try_get::<Option<String>, _>("health_state")? {
        Some(state) => Some(KeyHealthRecord {
            state: KeyHealthState::from_db(&state)?,
            detail: row.try_get("health_detail")?,
            deletion_date_ms: row.try_get("deletion_date_ms")?,
            checked_at_ms: row
                .try_get::<Option<i64>, _>("health_checked_at_ms")?
                .unwrap_or(0),
        }),
        None => None,
    };
    Ok(TenantKey {
        key_arn: key_arn(&row.try_get::<String, _>("key_arn")?)?,
        region: row.try_get("region")?,
        status: KeyStatus::from_db(&row.try_get::<String, _>("status")?)?,
        algorithm: WrapAlgorithm::for_key_spec(&key_spec).ok_or_else(|| corrupt("key spec"))?,
        key_spec,
        public_key: row.try_get("public_key")?,
        replicas: replicas
            .into_iter()
            .map(|(region, arn)| Ok((region, key_arn(&arn)?)))
            .collect::<Result<_>>()?,
        registered_at_ms: row.try_get("registered_at_ms")?,
        activated_at_ms: row.try_get("activated_at_ms")?,
        deactivated_at_ms: row.try_get("deactivated_at_ms")?,
        retired_at_ms: row.try_get("retired_at_ms")?,
        health,
    })
}

/// The JSON object the `replicas` column holds: region -> replica ARN.
pub(super) fn replicas_json(
    replicas: &std::collections::BTreeMap<String, KeyArn>,
) -> Result<String> {
    let plain: std::collections::BTreeMap<&str, &str> = replicas
        .iter()
        .map(|(r, a)| (r.as_str(), a.as_str()))
        .collect();
    serde_json::to_string(&plain).map_err(|_| corrupt("replica list"))
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
pub(super) use job_select;

pub(super) fn job(row: &AnyRow) -> Result<RewrapJob> {
    let count = |col: &str| -> Result<u64> { to_u64(row.try_get::<i64, _>(col)?, "job counter") };
    Ok(RewrapJob {
        id: row.try_get("job_id")?,
        tenant: TenantId::from_catalog(row.try_get("tenant_id")?),
        source_arn: key_arn(&row.try_get::<String, _>("source_arn")?)?,
        destination_arn: key_arn(&row.try_get::<String, _>("destination_arn")?)?,
        status: JobStatus::from_db(&row.try_get::<String, _>("status")?)?,
        max_kms_per_sec: to_u32(row.try_get("max_kms_per_sec")?, "job rate")?,
        total: count("total")?,
        rewrapped: count("rewrapped")?,
        error: row.try_get("error")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
    })
}
