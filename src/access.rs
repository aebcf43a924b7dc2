//! Who may do what: the role matrix, in one place. Every use case asks
//! [`require`] before it touches anything.

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
}

impl Action {
    /// The roles allowed to do it.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Ingest => &[Role::Ingest],
            Action::ReadRecordings => &[Role::Supervisor, Role::Compliance, Role::Admin],
            Action::ManageKeys => &[Role::Admin],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Ingest => "ingest",
            Action::ReadRecordings => "read recordings",
            Action::ManageKeys => "manage keys",
        }
    }
}

/// Refuses `principal` unless its role may do `action`.
pub fn require(principal: &Principal, action: Action) -> Result<()> {
    if action.roles().contains(&principal.role) {
        Ok(())
    } else {
        Err(Error::RoleNotAllowed {
            role: principal.role,
            action: action.describe(),
        })
    }
}
