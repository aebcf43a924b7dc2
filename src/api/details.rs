//! What a program needs to act on an error, beside the code and message:
//! `google.rpc.ErrorInfo` (a stable reason in UPPER_SNAKE_CASE, the domain
//! `callvault.v1`, and metadata such as the key ARN and its state) on every
//! status the API returns for a library error, and `google.rpc.BadRequest`
//! field violations for bad input, as Google's API design guide (AIP-193)
//! lays out. Clients read them from the `grpc-status-details-bin` trailer.

use std::collections::HashMap;

use crate::error::Error;
use crate::kms::KmsError;

/// The `ErrorInfo.domain` of every callvault error.
pub const DOMAIN: &str = "callvault.v1";

/// The stable reason of an error and its metadata. Metadata carries
/// identifiers a caller already holds or may see (ids, ARNs, states,
/// limits), never a label, a participant or a secret.
pub fn error_info(err: &Error) -> (&'static str, HashMap<String, String>) {
    let mut m = HashMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_owned(), v);
    };
    let reason = match err {
        Error::InvalidArgument { field, .. } => {
            put("field", field.clone());
            "INVALID_FIELD"
        }
        Error::NotAudio(_) => "NOT_AUDIO",
        Error::TrailerMismatch { sent, computed } => {
            put("field", "trailer.sha256".to_owned());
            put("sent_sha256", sent.clone());
            put("computed_sha256", computed.clone());
            "SHA256_MISMATCH"
        }
        Error::MessageTooLarge { limit, .. } => {
            put("limit_bytes", limit.to_string());
            "MESSAGE_TOO_LARGE"
        }
        Error::RecordingTooLarge { limit } => {
            put("limit_bytes", limit.to_string());
            "RECORDING_TOO_LARGE"
        }
        Error::TooManyChunks => "TOO_MANY_CHUNKS",
        Error::OffsetPastEnd { offset, size } => {
            put("offset_bytes", offset.to_string());
            put("size_bytes", size.to_string());
            "OFFSET_PAST_END"
        }
        Error::Cancelled => "CANCELLED",
        Error::Unauthenticated(_) => "UNAUTHENTICATED",
        Error::RoleNotAllowed { role, action } => {
            put("role", role.as_str().to_owned());
            put("action", (*action).to_owned());
            "ROLE_NOT_ALLOWED"
        }
        Error::RecordingNotFound(id) => {
            put("recording_id", id.to_string());
            "RECORDING_NOT_FOUND"
        }
        Error::TenantNotFound(t) => {
            put("tenant", t.clone());
            "TENANT_NOT_FOUND"
        }
        Error::KeyNotFound { arn, .. } => {
            put("key_arn", arn.to_string());
            "KEY_NOT_FOUND"
        }
        Error::JobNotFound(id) => {
            put("job_id", id.clone());
            "JOB_NOT_FOUND"
        }
        Error::TokenNotFound(id) => {
            put("token_id", id.clone());
            "TOKEN_NOT_FOUND"
        }
        Error::CallNotFound(call) => {
            put("external_call_id", call.clone());
            "CALL_NOT_FOUND"
        }
        Error::NothingSelected(_) => "NOTHING_SELECTED",
        Error::RecordingErased {
            id,
            erased_at_ms,
            certificate_id,
        } => {
            put("recording_id", id.to_string());
            put("erase_time", crate::domain::format_ms(*erased_at_ms));
            put("certificate_id", certificate_id.clone());
            "RECORDING_ERASED"
        }
        Error::HoldNotFound(name) => {
            put("hold", name.clone());
            "HOLD_NOT_FOUND"
        }
        Error::CertificateNotFound(id) => {
            put("certificate_id", id.clone());
            "CERTIFICATE_NOT_FOUND"
        }
        Error::TenantExists(t) => {
            put("tenant", t.clone());
            "TENANT_EXISTS"
        }
        Error::NoActiveKey => "NO_ACTIVE_KEY",
        Error::KmsAccountNotAllowed { arn, allowed } => {
            put("key_arn", arn.to_string());
            put("allowed_accounts", allowed.clone());
            "KMS_ACCOUNT_NOT_ALLOWED"
        }
        Error::KeyOwnedByAnotherTenant(arn) => {
            put("key_arn", arn.to_string());
            "KEY_OWNED_BY_ANOTHER_TENANT"
        }
        Error::KeyIsActive { arn, .. } => {
            put("key_arn", arn.to_string());
            "KEY_IS_ACTIVE"
        }
        Error::KeyProtectsRecordings { arn, count, holds } => {
            put("key_arn", arn.to_string());
            put("recording_count", count.to_string());
            if !holds.is_empty() {
                put("holds", holds.join(","));
            }
            "KEY_PROTECTS_RECORDINGS"
        }
        Error::KeyWrapsIndexKey(arn) => {
            put("key_arn", arn.to_string());
            "KEY_WRAPS_INDEX_KEY"
        }
        Error::KeyRetired(arn) => {
            put("key_arn", arn.to_string());
            "KEY_RETIRED"
        }
        Error::KeyInRewrap { arn, role, job_id } => {
            put("key_arn", arn.to_string());
            put("role", (*role).to_owned());
            put("job_id", job_id.clone());
            "KEY_IN_REWRAP"
        }
        Error::KeyNotEnabled { arn, state } => {
            put("key_arn", arn.to_string());
            put("key_state", state.clone());
            "KEY_NOT_ENABLED"
        }
        Error::NoReplicaInRegion { arn, region } => {
            put("key_arn", arn.to_string());
            put("region", region.clone());
            "NO_REPLICA_IN_REGION"
        }
        Error::RecordingsUndecryptable(which) => {
            put("recording_count", which.len().to_string());
            "RECORDINGS_UNDECRYPTABLE"
        }
        Error::IndexIncomplete(n) => {
            put("unindexed_count", n.to_string());
            "INDEX_INCOMPLETE"
        }
        Error::HoldExists(name) => {
            put("hold", name.clone());
            "HOLD_EXISTS"
        }
        Error::RecordingHeld { id, holds } => {
            put("recording_id", id.to_string());
            put("holds", holds.join(","));
            "RECORDING_HELD"
        }
        Error::RetentionNotExpired { id, until_ms } => {
            put("recording_id", id.to_string());
            put("retain_until", crate::domain::format_ms(*until_ms));
            "RETENTION_NOT_EXPIRED"
        }
        Error::RewrapAlreadyRunning => "REWRAP_ALREADY_RUNNING",
        Error::TokenAlreadyRevoked { id, .. } => {
            put("token_id", id.clone());
            "TOKEN_ALREADY_REVOKED"
        }
        Error::KeyRevokedMidStream { arn, .. } => {
            put("key_arn", arn.clone());
            "KEY_REVOKED_MID_STREAM"
        }
        Error::JobState { id, status, .. } => {
            put("job_id", id.clone());
            put("job_status", format!("{status:?}").to_ascii_lowercase());
            "JOB_STATE"
        }
        Error::TenantUploadLimit { limit } => {
            put("limit_uploads", limit.to_string());
            "TENANT_UPLOAD_LIMIT"
        }
        Error::UploadSwept(id) => {
            put("recording_id", id.to_string());
            "UPLOAD_SWEPT"
        }
        Error::UploadIdle { secs } => {
            put("idle_seconds", secs.to_string());
            "UPLOAD_IDLE"
        }
        Error::Integrity { recording, .. } => {
            put("recording_id", recording.clone());
            "INTEGRITY"
        }
        Error::IngestHashMismatch(id) => {
            put("recording_id", id.to_string());
            "INGEST_HASH_MISMATCH"
        }
        Error::Kms(k) | Error::KeyCheck { source: k, .. } => {
            if let Error::KeyCheck { permission, .. } = err {
                put("permission", (*permission).to_owned());
            }
            kms_reason(k, &mut put)
        }
        Error::StoreUnavailable(_) => "STORE_UNAVAILABLE",
        Error::AuditUnavailable(_) => "AUDIT_UNAVAILABLE",
        Error::CatalogUnavailable(_) | Error::CatalogMigration(_) => "CATALOG_UNAVAILABLE",
        Error::CatalogCorrupt(_)
        | Error::ObjectMissing(_)
        | Error::KmsContract(_)
        | Error::Crypto(_)
        | Error::Io { .. }
        | Error::Server(_)
        | Error::TaskFailed { .. } => "INTERNAL",
    };
    (reason, m)
}

fn kms_reason(k: &KmsError, put: &mut impl FnMut(&str, String)) -> &'static str {
    match k {
        KmsError::Disabled { arn: a } => {
            put("key_arn", a.clone());
            put("key_state", "Disabled".into());
            "KMS_KEY_DISABLED"
        }
        KmsError::PendingDeletion { arn: a } => {
            put("key_arn", a.clone());
            put("key_state", "PendingDeletion".into());
            "KMS_KEY_PENDING_DELETION"
        }
        KmsError::InvalidState { arn: a, state } => {
            put("key_arn", a.clone());
            put("key_state", state.clone());
            "KMS_KEY_INVALID_STATE"
        }
        KmsError::AccessDenied { arn: a } => {
            put("key_arn", a.clone());
            "KMS_ACCESS_DENIED"
        }
        KmsError::NotFound { arn: a } => {
            put("key_arn", a.clone());
            "KMS_KEY_NOT_FOUND"
        }
        KmsError::InvalidCiphertext { arn: a } => {
            put("key_arn", a.clone());
            "KMS_INVALID_CIPHERTEXT"
        }
        KmsError::Throttled => "KMS_THROTTLED",
        KmsError::Unavailable(_) => "KMS_UNAVAILABLE",
        KmsError::Other(_) => "KMS_ERROR",
    }
}

/// The status of `err` with `code` and `message`, carrying its ErrorInfo
/// (and, for bad input, the field violation).
pub fn status_with_details(err: &Error, code: tonic::Code, message: String) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let (reason, metadata) = error_info(err);
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    match err {
        Error::InvalidArgument { field, reason } => {
            details.add_bad_request_violation(field.clone(), reason.clone());
        }
        Error::TrailerMismatch { .. } => {
            details.add_bad_request_violation(
                "trailer.sha256",
                "differs from the SHA-256 of the bytes that arrived",
            );
        }
        _ => {}
    }
    tonic::Status::with_error_details(code, message, details)
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn bad_input_names_its_field_twice_over() {
        let s = status_with_details(
            &Error::invalid("page_size", "must be at most 1000"),
            tonic::Code::InvalidArgument,
            "page_size: must be at most 1000".into(),
        );
        let d = s.get_error_details();
        let info = d.error_info().unwrap();
        assert_eq!(info.reason, "INVALID_FIELD");
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(info.metadata["field"], "page_size");
        let v = &d.bad_request().unwrap().field_violations[0];
        assert_eq!(v.field, "page_size");
        assert_eq!(v.description, "must be at most 1000");
    }

    #[test]
    fn a_kms_refusal_carries_the_key_and_its_state() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/k";
        let (reason, m) = error_info(&Error::Kms(KmsError::Disabled { arn: arn.into() }));
        assert_eq!(reason, "KMS_KEY_DISABLED");
        assert_eq!(m["key_arn"], arn);
        assert_eq!(m["key_state"], "Disabled");
    }
}
