//! The crate's one error type. Variants are the outcomes callers branch on,
//! named for what happened, not for a protocol: each edge (`api` for gRPC,
//! later HTTP) maps them to its status codes in one function. Driver errors
//! (sqlx, object_store) stay behind [`DriverError`], so no edge needs to know
//! the drivers.

use crate::crypto::CryptoError;
use crate::domain::{JobStatus, KeyArn, RecordingId, Role};
use crate::kms::KmsError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- the request itself ----
    /// Bad input from a client. The message names the field.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The upload is not audio. Names what was found instead.
    #[error("upload is not audio: {0}")]
    NotAudio(String),
    /// A message over the transport's size limit.
    #[error("message too large ({detail}); the server accepts messages of at most {limit} bytes")]
    MessageTooLarge { limit: usize, detail: String },
    #[error("recording exceeds the {limit} byte limit")]
    RecordingTooLarge { limit: u64 },
    /// The upload's trailer names another SHA-256 than the bytes that
    /// arrived: nothing is committed.
    #[error(
        "trailer.sha256: differs from the SHA-256 of the bytes that arrived (sent {sent}, computed {computed}); nothing was stored"
    )]
    TrailerMismatch { sent: String, computed: String },
    #[error("the recording has more chunks than the format allows")]
    TooManyChunks,
    #[error("offset_bytes {offset} is past the end of the recording ({size} bytes)")]
    OffsetPastEnd { offset: u64, size: u64 },
    #[error("client cancelled the request")]
    Cancelled,

    // ---- who asks ----
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("this token's role ({}) may not {action}", role.as_str())]
    RoleNotAllowed { role: Role, action: &'static str },

    // ---- what they ask for does not exist ----
    #[error("recording {0} not found")]
    RecordingNotFound(RecordingId),
    #[error("tenant `{0}` not found")]
    TenantNotFound(String),
    /// `context` says where it was looked for ("in the key history").
    #[error("key {arn} not found{context}")]
    KeyNotFound { arn: KeyArn, context: &'static str },
    #[error("rewrap job {0} not found")]
    JobNotFound(String),
    #[error("token {0} not found in this tenant")]
    TokenNotFound(String),
    /// No committed recording of the caller's tenant has this call id.
    #[error("no recording of call `{0}` found")]
    CallNotFound(String),
    /// An export query matched nothing.
    #[error("no recording matches {0}")]
    NothingSelected(String),
    /// The recording was crypto-shredded: its key and audio are gone.
    #[error("recording {id} was erased on {}, certificate {certificate_id}", crate::domain::format_ms(*erased_at_ms))]
    RecordingErased {
        id: RecordingId,
        erased_at_ms: i64,
        certificate_id: String,
    },
    #[error("no active legal hold named `{0}`")]
    HoldNotFound(String),
    #[error("deletion certificate {0} not found")]
    CertificateNotFound(String),

    // ---- the state does not allow it ----
    #[error("tenant `{0}` already exists")]
    TenantExists(String),
    #[error("tenant has no active KMS key")]
    NoActiveKey,
    /// The deployment allows keys of listed AWS accounts only.
    #[error("key {arn} is in AWS account {}, which this deployment does not allow (allowed: {allowed})", arn.account())]
    KmsAccountNotAllowed { arn: KeyArn, allowed: String },
    #[error("key {0} belongs to another tenant's key history; each tenant brings its own key")]
    KeyOwnedByAnotherTenant(KeyArn),
    /// The active key cannot be retired or rewrapped away from.
    #[error("key {arn} is the active key{why}")]
    KeyIsActive { arn: KeyArn, why: &'static str },
    #[error(
        "key {arn} still protects {count} recordings{}; rewrap them first",
        if holds.is_empty() { String::new() } else { format!(", some under legal hold ({})", holds.join(", ")) }
    )]
    KeyProtectsRecordings {
        arn: KeyArn,
        count: u64,
        /// Active legal holds covering some of them.
        holds: Vec<String>,
    },
    #[error(
        "key {0} still wraps the tenant's search index key; a rewrap job away from it moves that too"
    )]
    KeyWrapsIndexKey(KeyArn),
    #[error("destination key {0} is retired")]
    KeyRetired(KeyArn),
    /// A running rewrap job reads from or writes to the key.
    #[error(
        "key {arn} is the {role} of running rewrap job {job_id}; wait for it to finish or cancel it"
    )]
    KeyInRewrap {
        arn: KeyArn,
        role: &'static str,
        job_id: String,
    },
    /// KMS says the key is not usable now (DescribeKey state).
    #[error("destination key {arn} is {state}")]
    KeyNotEnabled { arn: KeyArn, state: String },
    #[error(
        "KMS key {arn} has no multi-Region replica in this node's region {region}; \
         serve it from the key's region or register a replica"
    )]
    NoReplicaInRegion { arn: KeyArn, region: String },
    /// Recordings an export asked for whose data key KMS will not unwrap now:
    /// each entry names the recording and its key's state. Nothing was
    /// exported.
    #[error(
        "cannot export: {} recording(s) cannot be decrypted, nothing was exported: {}",
        .0.len(),
        .0.join("; ")
    )]
    RecordingsUndecryptable(Vec<String>),
    /// A selection through the search index while some recordings are not
    /// in it yet: answering would silently leave them out.
    #[error(
        "{0} recordings of this tenant are not in the search index yet (written moments ago by a \
         write-only node, or before the index existed); the indexer on admin nodes adds them \
         shortly: retry then, or select by id, call id or time window"
    )]
    IndexIncomplete(u64),
    #[error("an active legal hold named `{0}` already exists")]
    HoldExists(String),
    /// Erasure refused: legal holds cover the recording.
    #[error("recording {id} is under legal hold ({}); release the hold first", holds.join(", "))]
    RecordingHeld { id: RecordingId, holds: Vec<String> },
    /// Erasure refused before the retention period ended.
    #[error(
        "recording {id} must be retained until {}; erasing it earlier needs --override-retention",
        crate::domain::format_ms(*until_ms)
    )]
    RetentionNotExpired { id: RecordingId, until_ms: i64 },
    #[error("a rewrap job is already running for this tenant")]
    RewrapAlreadyRunning,
    #[error("token {id} was already revoked at {}", crate::domain::format_ms(*at_ms))]
    TokenAlreadyRevoked { id: String, at_ms: i64 },
    /// The recording's KMS key stopped working while its audio was being
    /// sent: the stream ends rather than keep serving under a revoked key.
    #[error("the KMS key {arn} became unusable while its recordings were being read: {reason}")]
    KeyRevokedMidStream { arn: String, reason: String },
    #[error("rewrap job {id} is {status}, {expected}")]
    JobState {
        id: String,
        status: JobStatus,
        expected: &'static str,
    },

    // ---- limits of this node ----
    #[error(
        "this tenant already has {limit} uploads in flight on this node (the limit); \
         retry after one finishes"
    )]
    TenantUploadLimit { limit: usize },

    // ---- uploads ----
    /// The upload is no longer in flight on the server: its lease ran out
    /// (the node could not renew it) and the sweeper removed it.
    #[error("upload {0} is no longer in flight: its lease expired and the server removed it")]
    UploadSwept(RecordingId),
    /// No message arrived on an upload for `secs` seconds.
    #[error(
        "no message received for {secs} s; the upload was abandoned and nothing of it was stored"
    )]
    UploadIdle { secs: u64 },

    // ---- stored data ----
    /// Stored data failed an integrity check.
    #[error("recording {recording} failed its integrity check: {source}")]
    Integrity {
        recording: String,
        #[source]
        source: CryptoError,
    },
    /// A recording's authenticated plaintext does not hash to the SHA-256
    /// (or add up to the size) the catalog recorded at ingest.
    #[error("recording {0} does not match the SHA-256 and size recorded at ingest")]
    IngestHashMismatch(RecordingId),
    /// A catalog row holds a value no release of callvault writes.
    #[error("catalog holds an invalid {0}")]
    CatalogCorrupt(String),
    /// An object the catalog lists is not in the store.
    #[error("object {0} not found")]
    ObjectMissing(String),

    // ---- what this node depends on ----
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
    /// KMS answered something that breaks its contract (a data key wrapped
    /// under another key than asked).
    #[error("KMS answered out of contract: {0}")]
    KmsContract(String),
    #[error("catalog unavailable")]
    CatalogUnavailable(#[source] DriverError),
    /// The audit trail could not record a read, so the read is refused:
    /// nothing is served unaudited.
    #[error(
        "the audit trail cannot be written now; the request is refused rather than served unaudited"
    )]
    AuditUnavailable(#[source] Box<Error>),
    #[error("catalog migration failed")]
    CatalogMigration(#[source] DriverError),
    #[error("object store unavailable")]
    StoreUnavailable(#[source] DriverError),
    #[error("crypto error: {0}")]
    Crypto(#[from] CryptoError),
    /// A local resource of this node (data directory, listener) failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server (its transport or setup) failed.
    #[error("the server failed: {0}")]
    Server(#[source] DriverError),
    /// A background task of this request died (panicked or was aborted).
    #[error("{what} task failed: {detail}")]
    TaskFailed { what: &'static str, detail: String },
}

/// A driver's error (sqlx, object_store, the gRPC transport), kept whole for
/// the log but opaque to callers.
#[derive(Debug)]
pub struct DriverError(Box<dyn std::error::Error + Send + Sync>);

impl DriverError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // A row that does not decode is a corrupt catalog, not an outage.
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::TypeNotFound { .. } => Error::CatalogCorrupt(e.to_string()),
            e => Error::CatalogUnavailable(DriverError::new(e)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::CatalogMigration(DriverError::new(e))
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => Error::ObjectMissing(path),
            e => Error::StoreUnavailable(DriverError::new(e)),
        }
    }
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

    /// A background task that did not finish (its `JoinError`).
    pub fn task(what: &'static str, e: impl std::fmt::Display) -> Self {
        Error::TaskFailed {
            what,
            detail: e.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
