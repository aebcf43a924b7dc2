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
}

impl KeyHealthState {
    /// States in which KMS will not unwrap under the key.
    pub fn is_revoked(self) -> bool {
        matches!(
            self,
            Self::Disabled | Self::PendingDeletion | Self::AccessDenied | Self::NotFound
        )
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
