//! Compliance, part 2 (SPEC §8): retention policies, legal holds, erasure
//! by crypto-shredding, and deletion certificates. Every action here is an
//! audit event; every use case requires the `compliance` role.
//!
//! - `retention`: per-tenant rules (a default period and rules by label,
//!   the most specific winning), evaluated at ingest into `retain_until`,
//!   re-evaluated on request.
//! - `holds`: legal holds over recordings, placed and released set-based.
//! - `erase`: erasure on request and the expiry job; the catalog
//!   transaction that destroys the wrapped data key, then the objects, then
//!   the certificate.
//! - `certificate`: the certificate document, its signature and the
//!   offline verifier. Pure.

use crate::access::{Action, require};
use crate::archive::Archive;
use crate::domain::Principal;
use crate::error::{Error, Result};

pub mod certificate;
pub mod erase;
pub mod holds;
pub mod retention;
pub mod subjects;

pub use erase::{
    ErasePass, ErasureReport, backlog, erase_requested, finish_certificates, run_expiry,
};
pub use holds::{HoldSelection, place_hold, release_hold};
pub use retention::{RetentionPolicy, RetentionUpdate};

async fn require_compliance(archive: &Archive, principal: &Principal) -> Result<()> {
    require(archive, principal, Action::Govern).await
}

/// A reason or legal basis: required, one line, 1..=1000 characters.
pub fn reason(field: &str, text: &str) -> Result<String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Error::invalid(field, "a reason is required"));
    }
    if t.chars().count() > 1000 || t.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "at most 1000 characters on one line, without control characters",
        ));
    }
    Ok(t.to_owned())
}
