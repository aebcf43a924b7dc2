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
pub mod details;
mod export;
mod ingest;
mod keys;
mod metering;
mod playback;

pub use audit::AuditApi;
pub use compliance::ComplianceApi;
pub use export::ExportApi;
pub use ingest::IngestApi;
pub use keys::KeyApi;
pub use metering::MeteringLayer;
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

/// The one classification of outcomes as gRPC codes: what the API
/// answers, what the HTTP side door maps to HTTP statuses, and what the
/// CLI's exit codes follow.
pub fn code_of(err: &Error) -> tonic::Code {
    use tonic::Code;
    match err {
        Error::InvalidArgument { .. } | Error::NotAudio(_) | Error::TrailerMismatch { .. } => {
            Code::InvalidArgument
        }
        Error::MessageTooLarge { .. }
        | Error::RecordingTooLarge { .. }
        | Error::TooManyChunks
        | Error::TenantUploadLimit { .. } => Code::ResourceExhausted,
        Error::OffsetPastEnd { .. } => Code::OutOfRange,
        Error::Cancelled => Code::Cancelled,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::RoleNotAllowed { .. } | Error::KmsAccountNotAllowed { .. } => Code::PermissionDenied,
        Error::RecordingNotFound(_)
        | Error::TenantNotFound(_)
        | Error::KeyNotFound { .. }
        | Error::JobNotFound(_)
        | Error::TokenNotFound(_)
        | Error::CallNotFound(_)
        | Error::NothingSelected(_)
        | Error::RecordingErased { .. }
        | Error::HoldNotFound(_)
        | Error::CertificateNotFound(_) => Code::NotFound,
        Error::TenantExists(_) | Error::HoldExists(_) => Code::AlreadyExists,
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
        | Error::JobState { .. } => Code::FailedPrecondition,
        Error::UploadSwept(_) => Code::Aborted,
        Error::UploadIdle { .. } => Code::DeadlineExceeded,
        Error::Integrity { .. } | Error::IngestHashMismatch(_) => Code::DataLoss,
        Error::KeyCheck { source, .. } => match source {
            KmsError::AccessDenied { .. } => Code::PermissionDenied,
            KmsError::Throttled | KmsError::Unavailable(_) => Code::Unavailable,
            _ => Code::FailedPrecondition,
        },
        Error::Kms(k) => match k {
            KmsError::Disabled { .. }
            | KmsError::PendingDeletion { .. }
            | KmsError::InvalidState { .. }
            | KmsError::NotFound { .. } => Code::FailedPrecondition,
            KmsError::AccessDenied { .. } => Code::PermissionDenied,
            KmsError::InvalidCiphertext { .. } => Code::DataLoss,
            KmsError::Throttled | KmsError::Unavailable(_) => Code::Unavailable,
            _ => Code::Internal,
        },
        Error::StoreUnavailable(_)
        | Error::AuditUnavailable(_)
        | Error::CatalogUnavailable(_)
        | Error::CatalogMigration(_) => Code::Unavailable,
        Error::CatalogCorrupt(_)
        | Error::ObjectMissing(_)
        | Error::KmsContract(_)
        | Error::Crypto(_)
        | Error::Io { .. }
        | Error::Server(_)
        | Error::TaskFailed { .. } => Code::Internal,
    }
}

/// The one mapping from outcomes to gRPC statuses (codes by [`code_of`]).
/// Clients get a precise message without internals; the cause chain of
/// what is the server's fault is logged here, once.
impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let status = status_of(&err);
        details::status_with_details(&err, status.code(), status.message().to_owned())
    }
}

/// The code and message of `err` (logging what is the server's fault).
fn status_of(err: &Error) -> Status {
    {
        let code = code_of(err);
        let msg = err.to_string();
        match err {
            Error::Unauthenticated(m) => Status::unauthenticated(*m),
            Error::UploadSwept(_) => Status::new(
                code,
                format!("{msg}; nothing of it was stored: retry the whole upload"),
            ),
            Error::Integrity { .. } | Error::IngestHashMismatch(_) => {
                tracing::error!(error = %err, "integrity failure");
                Status::new(code, msg)
            }
            Error::KeyCheck { permission, source } => {
                let msg = format!("registration refused: {permission} failed: {source}");
                match source {
                    KmsError::AccessDenied { .. } => Status::new(
                        code,
                        format!(
                            "{msg}; grant callvault {permission} on this key for the tenant's encryption context"
                        ),
                    ),
                    _ => Status::new(code, msg),
                }
            }
            Error::Kms(k) => match code {
                tonic::Code::Unavailable => {
                    tracing::warn!(error = %k, "KMS unavailable");
                    Status::new(code, msg)
                }
                tonic::Code::Internal => {
                    tracing::error!(error = %k, "KMS failure");
                    Status::internal("KMS request failed")
                }
                _ => Status::new(code, msg),
            },
            Error::StoreUnavailable(e) => {
                tracing::error!(error = %e, "object store failure");
                Status::unavailable("object store unavailable")
            }
            Error::CatalogUnavailable(e) | Error::CatalogMigration(e) => {
                tracing::error!(error = %e, "catalog failure");
                Status::unavailable("catalog unavailable")
            }
            _ if code == tonic::Code::Internal => {
                tracing::error!(error = %err, "internal error");
                Status::internal("internal error")
            }
            _ => Status::new(code, msg),
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
/// A gRPC status code's canonical name (`NOT_FOUND`), as the gRPC
/// specification and Google's API design guide spell it: what the HTTP
/// side door's JSON errors and the CLI's `--json` errors carry.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pub fn data_message(data: Bytes) -> pb::IngestRequest {
    pb::IngestRequest {
        payload: Some(pb::ingest_request::Payload::Data(data)),
    }
}

/// The last message of an upload: the SHA-256 of its data bytes.
pub fn trailer_message(sha256: &[u8]) -> pb::IngestRequest {
    pb::IngestRequest {
        payload: Some(pb::ingest_request::Payload::Trailer(pb::IngestTrailer {
            sha256: Bytes::copy_from_slice(sha256),
        })),
    }
}
