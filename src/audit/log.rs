//! What compliance staff read from the audit trail: events, checkpoints and
//! proofs. Reading the trail is itself an event.

use crate::access::{self, Action};
use crate::archive::Archive;
use crate::audit::event::{Action as AuditAction, Event, log_of};
use crate::audit::trail;
use crate::catalog::audit::{self as store, EventFilter};
use crate::domain::Principal;
use crate::error::{Error, Result};

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// One page of the caller's tenant log matching `filter`, after index
/// `after`, and the next page's cursor.
pub async fn list_events(
    archive: &Archive,
    principal: &Principal,
    filter: &EventFilter,
    page_size: u32,
    after: Option<u64>,
) -> Result<(Vec<Event>, Option<u64>)> {
    access::require(archive, principal, Action::ReadAudit).await?;
    if page_size > MAX_PAGE_SIZE {
        return Err(Error::invalid("page_size", "must be at most 1000"));
    }
    let size = if page_size == 0 {
        DEFAULT_PAGE_SIZE
    } else {
        page_size
    };
    let log = log_of(&principal.tenant);
    let mut events = store::list(
        &mut *archive.catalog.conn().await?,
        log,
        filter,
        after,
        size + 1,
    )
    .await?;
    let next = if events.len() > size as usize {
        events.truncate(size as usize);
        events.last().map(|e| e.index)
    } else {
        None
    };
    let mut read = trail::by(principal, AuditAction::AuditRead)
        .detail("events", events.len() as u64);
    if let Some(r) = filter.recording {
        read = read.detail("recording_id", r.to_string());
    }
    if let Some(a) = &filter.actor {
        read = read.detail("actor_id", a.as_str());
    }
    if let Some(a) = filter.action {
        read = read.detail("action", a.as_str());
    }
    trail::record(archive, principal, read).await?;
    Ok((events, next))
}
