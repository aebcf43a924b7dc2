//! The states the catalog keeps, as enums. Their database spelling lives in
//! `catalog::rows` and their protobuf spelling in `api`, nowhere else.

use std::fmt;

/// Where a key stands in a tenant's key history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// Wraps new recordings (exactly one per tenant).
    Active,
    /// No longer wraps new recordings; still protects older ones.
    Previous,
    /// Protects nothing (checked when retiring).
    Retired,
}

/// The outcome of the last DescribeKey health check of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyHealthState {
    Enabled,
    Disabled,
    PendingDeletion,
    AccessDenied,
    NotFound,
    /// KMS could not be asked (network, throttling): says nothing of the key.
    Unreachable,
    /// A KMS state callvault cannot use (e.g. PendingImport).
    InvalidState,
    /// KMS answers GetPublicKey for this RSA key with another public key
    /// than the one pinned at registration: the key was replaced (or the
    /// ARN now names another key). A security incident: data keys wrapped
    /// at ingest with the pinned key may not be unwrappable, and new ones
    /// would be wrapped for whoever holds the new private key.
    PublicKeyMismatch,
}

/// Every key health state, in declaration order.
pub const KEY_HEALTH_STATES: [KeyHealthState; 8] = [
    KeyHealthState::Enabled,
    KeyHealthState::Disabled,
    KeyHealthState::PendingDeletion,
    KeyHealthState::AccessDenied,
    KeyHealthState::NotFound,
    KeyHealthState::Unreachable,
    KeyHealthState::InvalidState,
    KeyHealthState::PublicKeyMismatch,
];

impl KeyHealthState {
    /// States in which KMS will not unwrap under the key.
    pub fn is_revoked(self) -> bool {
        matches!(
            self,
            Self::Disabled | Self::PendingDeletion | Self::AccessDenied | Self::NotFound
        )
    }

    /// States that are an incident whether or not the key protects
    /// recordings: someone changed the key itself.
    pub fn is_security_incident(self) -> bool {
        self == Self::PublicKeyMismatch
    }

    /// The machine spelling (snake case): the catalog's column value, the
    /// API's `state` string and the metrics label are all this one word.
    pub fn code(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::PendingDeletion => "pending_deletion",
            Self::AccessDenied => "access_denied",
            Self::NotFound => "not_found",
            Self::Unreachable => "unreachable",
            Self::InvalidState => "invalid_state",
            Self::PublicKeyMismatch => "public_key_mismatch",
        }
    }

    /// The state whose [`code`](Self::code) is `code`.
    pub fn from_code(code: &str) -> Option<Self> {
        KEY_HEALTH_STATES.into_iter().find(|s| s.code() == code)
    }
}

impl fmt::Display for KeyHealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::PendingDeletion => "pending deletion",
            Self::AccessDenied => "access denied",
            Self::NotFound => "not found",
            Self::Unreachable => "unreachable",
            Self::InvalidState => "in a state callvault cannot use",
            Self::PublicKeyMismatch => "not the key registered (its public key changed)",
        })
    }
}

/// A background job's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        })
    }
}

/// A recording's lifecycle in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordingStatus {
    /// Being uploaded: invisible, held by its node's lease.
    Uploading,
    /// Committed: visible, never removed by cleanup.
    Complete,
}
