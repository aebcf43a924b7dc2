//! The gRPC edge: the only module that knows tonic and prost. It parses wire
//! messages into domain types, authenticates bearer tokens, calls the use
//! cases, and maps errors to statuses in exactly one place.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::archive::Archive;
use crate::catalog::{KeyUsage, RecordingRow, RewrapJob, TenantKey, keys as catalog_keys, tokens};
use crate::domain::{JobStatus, KeyHealthState, KeyStatus, Principal, RecordingId};
use crate::error::Error;
use crate::kms::KmsError;
use crate::{ingest, keys, playback};

#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("callvault.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("callvault_descriptor");
}

/// The largest gRPC message the server accepts or sends: 4 MiB, the default
/// every stock gRPC client accepts. Clients send audio in pieces well below
/// this; a bigger message is refused with RESOURCE_EXHAUSTED naming the
/// limit. Play messages carry at most `playback::MAX_PLAY_MESSAGE_BYTES`.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The one mapping from outcomes to gRPC statuses. Clients get a precise
/// message without internals; the cause chain of what is the server's
/// fault is logged here, once.
impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let msg = err.to_string();
        match &err {
            Error::InvalidArgument { .. } | Error::NotAudio(_) => Status::invalid_argument(msg),
            Error::MessageTooLarge { .. }
            | Error::RecordingTooLarge { .. }
            | Error::TooManyChunks
            | Error::TenantUploadLimit { .. } => Status::resource_exhausted(msg),
            Error::OffsetPastEnd { .. } => Status::out_of_range(msg),
            Error::Cancelled => Status::cancelled(msg),
            Error::Unauthenticated(m) => Status::unauthenticated(*m),
            Error::RoleNotAllowed { .. } => Status::permission_denied(msg),
            Error::RecordingNotFound(_)
            | Error::TenantNotFound(_)
            | Error::KeyNotFound { .. }
            | Error::JobNotFound(_) => Status::not_found(msg),
            Error::TenantExists(_) => Status::already_exists(msg),
            Error::NoActiveKey
            | Error::KeyOwnedByAnotherTenant(_)
            | Error::KeyIsActive { .. }
            | Error::KeyProtectsRecordings { .. }
            | Error::KeyRetired(_)
            | Error::KeyNotEnabled { .. }
            | Error::NoReplicaInRegion { .. }
            | Error::RewrapAlreadyRunning
            | Error::JobState { .. } => Status::failed_precondition(msg),
            Error::UploadSwept(_) => Status::aborted(format!(
                "{msg}; nothing of it was stored: retry the whole upload"
            )),
            Error::UploadIdle { .. } => Status::deadline_exceeded(msg),
            Error::Integrity { .. } => {
                tracing::error!(error = %err, "integrity failure");
                Status::data_loss(msg)
            }
            Error::KeyCheck { permission, source } => {
                let msg = format!("registration refused: {permission} failed: {source}");
                match source {
                    KmsError::AccessDenied { .. } => Status::permission_denied(format!(
                        "{msg}; grant callvault {permission} on this key for the tenant's encryption context"
                    )),
                    KmsError::Throttled | KmsError::Unavailable(_) => Status::unavailable(msg),
                    _ => Status::failed_precondition(msg),
                }
            }
            Error::Kms(k) => match k {
                KmsError::Disabled { .. }
                | KmsError::PendingDeletion { .. }
                | KmsError::InvalidState { .. }
                | KmsError::NotFound { .. } => Status::failed_precondition(msg),
                KmsError::AccessDenied { .. } => Status::permission_denied(msg),
                KmsError::InvalidCiphertext { .. } => Status::data_loss(msg),
                KmsError::Throttled | KmsError::Unavailable(_) => {
                    tracing::warn!(error = %k, "KMS unavailable");
                    Status::unavailable(msg)
                }
                _ => {
                    tracing::error!(error = %k, "KMS failure");
                    Status::internal("KMS request failed")
                }
            },
            Error::StoreUnavailable(e) => {
                tracing::error!(error = %e, "object store failure");
                Status::unavailable("object store unavailable")
            }
            Error::CatalogUnavailable(e) | Error::CatalogMigration(e) => {
                tracing::error!(error = %e, "catalog failure");
                Status::unavailable("catalog unavailable")
            }
            Error::CatalogCorrupt(_)
            | Error::ObjectMissing(_)
            | Error::KmsContract(_)
            | Error::Crypto(_)
            | Error::Io { .. }
            | Error::Server(_)
            | Error::TaskFailed { .. } => {
                tracing::error!(error = %err, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// Errors tonic reports on the inbound stream, kept with their meaning.
fn inbound(status: Status) -> Error {
    match status.code() {
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => Error::MessageTooLarge {
            limit: MAX_MESSAGE_BYTES,
            detail: status.message().to_owned(),
        },
        tonic::Code::Cancelled => Error::Cancelled,
        _ => Error::invalid("stream", status.message()),
    }
}

async fn authenticate<T>(archive: &Archive, req: &Request<T>) -> Result<Principal, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .ok_or(Error::Unauthenticated("missing bearer token"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or(Error::Unauthenticated("malformed authorization header"))?;
    let mut conn = archive.catalog.conn().await?;
    Ok(tokens::authenticate(&mut conn, token).await?)
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn to_pb(row: &RecordingRow, labels: BTreeMap<String, String>) -> pb::Recording {
    pb::Recording {
        recording_id: row.id.to_string(),
        external_call_id: row.external_call_id.clone(),
        start_time: row.start_time_ms.map(timestamp),
        labels: labels.into_iter().collect(),
        size_bytes: row.size_bytes,
        chunk_count: row.chunk_count,
        chunk_size_bytes: row.chunk_size,
        sha256: row.sha256.clone(),
        audio: Some(pb::AudioMetadata {
            container: row.audio.container.clone(),
            codec: row.audio.codec.clone(),
            sample_rate_hz: row.audio.sample_rate_hz,
            channels: row.audio.channels,
            duration_ms: row.audio.duration_ms,
            warning: row.audio.warning.clone().unwrap_or_default(),
        }),
        kms_key_arn: row.key_arn.to_string(),
        kms_region: row.kms_region.clone(),
        create_time: Some(timestamp(row.created_at_ms)),
    }
}

#[derive(Debug, Clone)]
pub struct IngestApi {
    archive: Arc<Archive>,
}

impl IngestApi {
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

#[tonic::async_trait]
impl pb::ingest_service_server::IngestService for IngestApi {
    async fn ingest(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await
            .map_err(inbound)?
            .ok_or_else(|| Error::invalid("header", "the stream ended before the header"))?;
        let header = match first.payload {
            Some(pb::ingest_request::Payload::Header(h)) => h,
            _ => {
                return Err(
                    Error::invalid("header", "the first message must carry the header").into(),
                );
            }
        };
        let start_time_ms = header.start_time.map(|t| {
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos / 1_000_000))
        });
        let header = ingest::IngestHeader::parse(
            &header.external_call_id,
            start_time_ms,
            header.labels.into_iter().collect(),
            header.chunk_size_bytes,
        )?;
        let body = stream.map(|msg| match msg {
            Ok(pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Data(d)),
            }) => Ok(d),
            Ok(pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Header(_)),
            }) => Err(Error::invalid(
                "header",
                "only the first message may carry a header",
            )),
            Ok(pb::IngestRequest { payload: None }) => Err(Error::invalid(
                "payload",
                "message carries neither header nor data",
            )),
            Err(status) => Err(inbound(status)),
        });
        // Run the upload in its own task: if the client resets, hyper drops
        // this handler future, but the upload must still see its stream fail
        // and clean up what it wrote.
        let task = tokio::spawn(ingest::ingest(
            self.archive.clone(),
            principal,
            header,
            Box::pin(body),
        ));
        let outcome = task.await.map_err(|e| Error::task("ingest", e))??;
        // Labels were just written by this caller; they are not echoed back so
        // that a dedup response cannot be used to read another upload's labels.
        Ok(Response::new(pb::IngestResponse {
            recording: Some(to_pb(&outcome.recording, BTreeMap::new())),
            deduplicated: outcome.deduplicated,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct PlaybackApi {
    archive: Arc<Archive>,
}

impl PlaybackApi {
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

type PlayStream = Pin<Box<dyn Stream<Item = Result<pb::PlayResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::playback_service_server::PlaybackService for PlaybackApi {
    type PlayStream = PlayStream;

    async fn play(
        &self,
        request: Request<pb::PlayRequest>,
    ) -> Result<Response<PlayStream>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let id = RecordingId::parse("recording_id", &req.recording_id).map_err(Error::from)?;
        let stream = playback::play(self.archive.clone(), &principal, id, req.offset_bytes).await?;
        let out = stream.map(|item| {
            item.map(|c| pb::PlayResponse {
                offset_bytes: c.offset,
                data: c.data,
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_recording(
        &self,
        request: Request<pb::GetRecordingRequest>,
    ) -> Result<Response<pb::Recording>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let id = RecordingId::parse("recording_id", &request.get_ref().recording_id)
            .map_err(Error::from)?;
        let view = playback::get(&self.archive, &principal, id).await?;
        Ok(Response::new(to_pb(&view.row, view.labels)))
    }

    async fn list_recordings(
        &self,
        request: Request<pb::ListRecordingsRequest>,
    ) -> Result<Response<pb::ListRecordingsResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let after = if req.page_token.is_empty() {
            None
        } else {
            let bad = || Error::invalid("page_token", "is not a token from a previous response");
            let raw = URL_SAFE_NO_PAD.decode(&req.page_token).map_err(|_| bad())?;
            let s = String::from_utf8(raw).map_err(|_| bad())?;
            Some(RecordingId::parse("page_token", &s).map_err(|_| bad())?)
        };
        let (rows, next) = playback::list(&self.archive, &principal, req.page_size, after).await?;
        Ok(Response::new(pb::ListRecordingsResponse {
            recordings: rows.iter().map(|r| to_pb(r, BTreeMap::new())).collect(),
            next_page_token: next
                .map(|n| URL_SAFE_NO_PAD.encode(n.to_string()))
                .unwrap_or_default(),
        }))
    }
}

/// The protobuf spelling of each state: here and nowhere else.
fn key_status_pb(s: KeyStatus) -> &'static str {
    match s {
        KeyStatus::Active => "active",
        KeyStatus::Previous => "previous",
        KeyStatus::Retired => "retired",
    }
}

fn key_health_pb(s: KeyHealthState) -> &'static str {
    match s {
        KeyHealthState::Enabled => "enabled",
        KeyHealthState::Disabled => "disabled",
        KeyHealthState::PendingDeletion => "pending_deletion",
        KeyHealthState::AccessDenied => "access_denied",
        KeyHealthState::NotFound => "not_found",
        KeyHealthState::Unreachable => "unreachable",
        KeyHealthState::InvalidState => "invalid_state",
    }
}

fn job_status_pb(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Running => "running",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

fn key_to_pb(key: &TenantKey, usage: &KeyUsage) -> pb::TenantKey {
    pb::TenantKey {
        key_arn: key.key_arn.to_string(),
        region: key.region.clone(),
        status: key_status_pb(key.status).to_owned(),
        key_spec: key.key_spec.clone(),
        wrap_algorithm: key.algorithm.as_str().to_owned(),
        replica_key_arns: key
            .replicas
            .iter()
            .map(|(r, a)| (r.clone(), a.to_string()))
            .collect(),
        register_time: Some(timestamp(key.registered_at_ms)),
        activate_time: Some(timestamp(key.activated_at_ms)),
        deactivate_time: key.deactivated_at_ms.map(timestamp),
        retire_time: key.retired_at_ms.map(timestamp),
        recording_count: usage.recordings,
        size_bytes: usage.bytes,
        legal_hold_count: usage.legal_hold,
        health: key.health.as_ref().map(|h| pb::KeyHealthCheck {
            state: key_health_pb(h.state).to_owned(),
            detail: h.detail.clone().unwrap_or_default(),
            deletion_time: h.deletion_date_ms.map(timestamp),
            check_time: Some(timestamp(h.checked_at_ms)),
        }),
    }
}

fn job_to_pb(job: &RewrapJob) -> pb::RewrapJob {
    pb::RewrapJob {
        job_id: job.id.clone(),
        source_key_arn: job.source_arn.to_string(),
        destination_key_arn: job.destination_arn.to_string(),
        state: job_status_pb(job.status).to_owned(),
        total_count: job.total,
        rewrapped_count: job.rewrapped,
        max_kms_requests_per_second: job.max_kms_per_sec,
        error: job.error.clone().unwrap_or_default(),
        create_time: Some(timestamp(job.created_at_ms)),
        update_time: Some(timestamp(job.updated_at_ms)),
        finish_time: job.finished_at_ms.map(timestamp),
    }
}

/// Job ids are UUIDs; anything else is refused before it reaches the catalog.
fn job_id(s: &str) -> Result<&str, Error> {
    uuid::Uuid::try_parse(s)
        .map(|_| s)
        .map_err(|_| Error::invalid("job_id", "is not a rewrap job id"))
}

#[derive(Debug, Clone)]
pub struct KeyApi {
    archive: Arc<Archive>,
}

impl KeyApi {
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

#[tonic::async_trait]
impl pb::key_service_server::KeyService for KeyApi {
    async fn register_key(
        &self,
        request: Request<pb::RegisterKeyRequest>,
    ) -> Result<Response<pb::TenantKey>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let reg =
            keys::Registration::parse(&req.key_arn, req.replica_key_arns.into_iter().collect())?;
        let key = keys::register(&self.archive, &principal, &reg).await?;
        let usage =
            catalog_keys::usage(&mut *self.archive.catalog.conn().await?, &principal.tenant)
                .await?;
        let usage = usage.get(&key.key_arn).copied().unwrap_or_default();
        Ok(Response::new(key_to_pb(&key, &usage)))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let keys = keys::list(&self.archive, &principal).await?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.iter().map(|(k, u)| key_to_pb(k, u)).collect(),
        }))
    }

    async fn retire_key(
        &self,
        request: Request<pb::RetireKeyRequest>,
    ) -> Result<Response<pb::TenantKey>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let key = keys::retire(&self.archive, &principal, &request.get_ref().key_arn).await?;
        Ok(Response::new(key_to_pb(&key, &KeyUsage::default())))
    }

    async fn get_key_health(
        &self,
        request: Request<pb::GetKeyHealthRequest>,
    ) -> Result<Response<pb::KeyHealth>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let h = keys::health(&self.archive, &principal, request.get_ref().refresh).await?;
        Ok(Response::new(pb::KeyHealth {
            keys: h.keys.iter().map(|(k, u)| key_to_pb(k, u)).collect(),
            incidents: h
                .incidents
                .iter()
                .map(|i| pb::KeyIncident {
                    key_arn: i.key_arn.to_string(),
                    state: key_health_pb(i.state).to_owned(),
                    recording_count: i.recordings,
                    legal_hold_count: i.legal_hold,
                    unreadable_time: Some(timestamp(i.unreadable_at_ms)),
                    message: i.message.clone(),
                })
                .collect(),
            rotation: Some(pb::RotationCompliance {
                active_key_age_days: h.rotation.active_key_age_days,
                policy_days: h.rotation.policy_days,
                compliant: h.rotation.compliant,
            }),
        }))
    }

    async fn set_rotation_policy(
        &self,
        request: Request<pb::SetRotationPolicyRequest>,
    ) -> Result<Response<pb::RotationCompliance>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        keys::set_rotation_policy(&self.archive, &principal, request.get_ref().policy_days).await?;
        let h = keys::health(&self.archive, &principal, false).await?;
        Ok(Response::new(pb::RotationCompliance {
            active_key_age_days: h.rotation.active_key_age_days,
            policy_days: h.rotation.policy_days,
            compliant: h.rotation.compliant,
        }))
    }

    async fn start_rewrap(
        &self,
        request: Request<pb::StartRewrapRequest>,
    ) -> Result<Response<pb::RewrapJob>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let job = keys::start_rewrap(
            &self.archive,
            &principal,
            &req.source_key_arn,
            &req.destination_key_arn,
            req.max_kms_requests_per_second,
        )
        .await?;
        Ok(Response::new(job_to_pb(&job)))
    }

    async fn get_rewrap_job(
        &self,
        request: Request<pb::GetRewrapJobRequest>,
    ) -> Result<Response<pb::RewrapJob>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let id = job_id(&request.get_ref().job_id)?;
        let job = keys::rewrap_job(&self.archive, &principal, id).await?;
        Ok(Response::new(job_to_pb(&job)))
    }

    async fn list_rewrap_jobs(
        &self,
        request: Request<pb::ListRewrapJobsRequest>,
    ) -> Result<Response<pb::ListRewrapJobsResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let jobs = keys::rewrap_jobs(&self.archive, &principal).await?;
        Ok(Response::new(pb::ListRewrapJobsResponse {
            jobs: jobs.iter().map(job_to_pb).collect(),
        }))
    }

    async fn resume_rewrap(
        &self,
        request: Request<pb::GetRewrapJobRequest>,
    ) -> Result<Response<pb::RewrapJob>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let id = job_id(&request.get_ref().job_id)?;
        let job = keys::resume_rewrap(&self.archive, &principal, id).await?;
        Ok(Response::new(job_to_pb(&job)))
    }

    async fn cancel_rewrap(
        &self,
        request: Request<pb::GetRewrapJobRequest>,
    ) -> Result<Response<pb::RewrapJob>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let id = job_id(&request.get_ref().job_id)?;
        let job = keys::cancel_rewrap(&self.archive, &principal, id).await?;
        Ok(Response::new(job_to_pb(&job)))
    }
}

/// Helper for clients: wraps a byte buffer as an ingest request message.
pub fn data_message(data: Bytes) -> pb::IngestRequest {
    pb::IngestRequest {
        payload: Some(pb::ingest_request::Payload::Data(data)),
    }
}
