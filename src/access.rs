//! Who may do what: the role matrix, in one place. Every use case asks
//! [`require`] before it touches anything.

use crate::archive::Archive;
use crate::domain::{Principal, Role};
use crate::error::{Error, Result};

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Upload recordings.
    Ingest,
    /// Play recordings and read their metadata.
    ReadRecordings,
    /// Register, retire, check and rewrap the tenant's KMS keys.
    ManageKeys,
    /// Read the audit trail, its checkpoints and proofs.
    ReadAudit,
    /// Export recordings as verifiable bundles.
    Export,
}

impl Action {
    /// The roles allowed to do it.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Ingest => &[Role::Ingest],
            // Separation of duties: the admin manages keys and tokens but
            // reads neither audio nor the audit trail of recordings.
            Action::ReadRecordings => &[Role::Supervisor, Role::Compliance],
            Action::ManageKeys => &[Role::Admin],
            Action::ReadAudit | Action::Export => &[Role::Compliance],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Ingest => "ingest",
            Action::ReadRecordings => "read recordings",
            Action::ManageKeys => "manage keys",
            Action::ReadAudit => "read the audit trail",
            Action::Export => "export recordings",
        }
    }

    /// The audit trail's name for what was attempted.
    fn audited_as(self) -> crate::audit::event::Action {
        use crate::audit::event::Action as A;
        match self {
            Action::Ingest => A::RecordingIngested,
            Action::ReadRecordings => A::RecordingRead,
            Action::ManageKeys => A::KeyRegistered,
            Action::ReadAudit => A::AuditRead,
            Action::Export => A::ExportStarted,
        }
    }
}

/// Refuses `principal` unless its role may do `action`; a refusal is an
/// audit event in the caller's tenant log.
pub async fn require(archive: &Archive, principal: &Principal, action: Action) -> Result<()> {
    if action.roles().contains(&principal.role) {
        return Ok(());
    }
    let err = Error::RoleNotAllowed {
        role: principal.role,
        action: action.describe(),
    };
    crate::audit::trail::refused(archive, principal, action.audited_as(), &err.to_string()).await;
    Err(err)
}
