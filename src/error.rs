//! The crate's one error type. Variants are the outcomes callers branch on;
//! `api::status` is the single place that turns them into gRPC statuses.

use crate::crypto::CryptoError;
use crate::kms::KmsError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input from a client. The message names the field.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The upload is not audio. Names what was found instead.
    #[error("upload is not audio: {0}")]
    NotAudio(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    OutOfRange(String),
    /// Stored data failed an integrity check.
    #[error("recording {recording} failed its integrity check: {source}")]
    Integrity {
        recording: String,
        #[source]
        source: CryptoError,
    },
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// A key failed the registration round trip at `permission` (the KMS
    /// operation and IAM action, e.g. `kms:GenerateDataKey`).
    #[error("key check failed at {permission}: {source}")]
    KeyCheck {
        permission: &'static str,
        #[source]
        source: KmsError,
    },
    #[error("catalog error")]
    Catalog(#[from] sqlx::Error),
    #[error("catalog migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("object store error")]
    Store(#[from] object_store::Error),
    #[error("crypto error: {0}")]
    Crypto(#[from] CryptoError),
    /// The upload is no longer in flight on the server: its lease ran out
    /// (the node could not renew it) and the sweeper removed it.
    #[error("{0}")]
    UploadAbandoned(String),
    /// No message arrived on an upload for `secs` seconds.
    #[error(
        "no message received for {secs} s; the upload was abandoned and nothing of it was stored"
    )]
    UploadIdle { secs: u64 },
    #[error("client cancelled the request")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::domain::ParseError> for Error {
    fn from(e: crate::domain::ParseError) -> Self {
        Error::InvalidArgument {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl Error {
    pub fn invalid(field: &str, reason: &str) -> Self {
        Error::InvalidArgument {
            field: field.to_owned(),
            reason: reason.to_owned(),
        }
    }

    pub fn integrity(recording: impl ToString, source: CryptoError) -> Self {
        Error::Integrity {
            recording: recording.to_string(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
