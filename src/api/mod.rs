//! The gRPC edge: the only module that knows tonic and prost. It parses wire
//! messages into domain types, authenticates bearer tokens, calls the use
//! cases, and maps errors to statuses in exactly one place.

use bytes::Bytes;
use tonic::{Request, Status};

use crate::archive::Archive;
use crate::domain::Principal;
use crate::error::Error;
use crate::kms::KmsError;

mod audit;
mod compliance;
mod convert;
mod export;
mod ingest;
mod keys;
mod playback;

pub use audit::AuditApi;
pub use compliance::ComplianceApi;
pub use export::ExportApi;
pub use ingest::IngestApi;
pub use keys::KeyApi;
pub use playback::PlaybackApi;

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
            Error::RoleNotAllowed { .. } | Error::KmsAccountNotAllowed { .. } => {
                Status::permission_denied(msg)
            }
            Error::RecordingNotFound(_)
            | Error::TenantNotFound(_)
            | Error::KeyNotFound { .. }
            | Error::JobNotFound(_)
            | Error::TokenNotFound(_)
            | Error::CallNotFound(_)
            | Error::NothingSelected(_)
            | Error::RecordingErased { .. }
            | Error::HoldNotFound(_)
            | Error::CertificateNotFound(_) => Status::not_found(msg),
            Error::TenantExists(_) | Error::HoldExists(_) => Status::already_exists(msg),
            Error::NoActiveKey
            | Error::KeyOwnedByAnotherTenant(_)
            | Error::KeyIsActive { .. }
            | Error::KeyProtectsRecordings { .. }
            | Error::KeyWrapsIndexKey(_)
            | Error::KeyRetired(_)
            | Error::KeyInRewrap { .. }
            | Error::KeyNotEnabled { .. }
            | Error::NoReplicaInRegion { .. }
            | Error::RewrapAlreadyRunning
            | Error::RecordingHeld { .. }
            | Error::IndexIncomplete(_)
            | Error::RetentionNotExpired { .. }
            | Error::TokenAlreadyRevoked { .. }
            | Error::KeyRevokedMidStream { .. }
            | Error::RecordingsUndecryptable(_)
            | Error::JobState { .. } => Status::failed_precondition(msg),
            Error::UploadSwept(_) => Status::aborted(format!(
                "{msg}; nothing of it was stored: retry the whole upload"
            )),
            Error::UploadIdle { .. } => Status::deadline_exceeded(msg),
            Error::Integrity { .. } | Error::IngestHashMismatch(_) => {
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
            Error::AuditUnavailable(_) => Status::unavailable(msg),
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
pub(crate) fn inbound(status: Status) -> Error {
    match status.code() {
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => Error::MessageTooLarge {
            limit: MAX_MESSAGE_BYTES,
            detail: status.message().to_owned(),
        },
        tonic::Code::Cancelled => Error::Cancelled,
        _ => Error::invalid("stream", status.message()),
    }
}

pub(crate) async fn authenticate<T>(
    archive: &Archive,
    req: &Request<T>,
) -> Result<Principal, Status> {
    let client = req.remote_addr().map(|a| a.to_string());
    let header = req
        .metadata()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or(""));
    Ok(crate::access::authenticate(archive, header, client).await?)
}

/// Helper for clients: wraps a byte buffer as an ingest request message.
pub fn data_message(data: Bytes) -> pb::IngestRequest {
    pb::IngestRequest {
        payload: Some(pb::ingest_request::Payload::Data(data)),
    }
}
