//! Legal holds. A hold is placed on a set of recordings (ids, call ids, or
//! every call in a time window), fixed when it is placed, with no cap on its
//! size: the window form is one `INSERT … SELECT` and one `UPDATE`, however
//! many recordings it covers. A held recording is not erased by retention,
//! cannot be erased on request, and keeps its key from being retired.

use crate::archive::Archive;
use crate::audit::event::{Action, log_of};
use crate::audit::trail;
use crate::catalog::compliance::{self as catalog, LegalHold};
use crate::domain::{Principal, RecordingId, now_ms};
use crate::error::{Error, Result};

/// Most ids or call ids one request may name (a window has no limit).
pub const MAX_LISTED: usize = 10_000;

/// What a hold is placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldSelection {
    Recordings(Vec<RecordingId>),
    CallIds(Vec<String>),
    /// Calls that started (or, without a start time, were ingested) in
    /// `[from_ms, to_ms)` and carry every label given (matched through the
    /// search index).
    Window {
        from_ms: i64,
        to_ms: i64,
        labels: std::collections::BTreeMap<String, String>,
    },
    /// Every recording with this participant, in any role.
    Participant(String),
}

impl HoldSelection {
    /// The selection as the hold and its audit event record it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            HoldSelection::Recordings(ids) => serde_json::json!({
                "recording_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
            HoldSelection::CallIds(calls) => serde_json::json!({ "external_call_ids": calls }),
            HoldSelection::Window {
                from_ms,
                to_ms,
                labels,
            } => serde_json::json!({
                "start_time": crate::domain::format_ms(*from_ms),
                "end_time": crate::domain::format_ms(*to_ms),
                "labels": labels,
            }),
            // Never the identifier: the hold row and its audit event are
            // not the place for a phone number.
            HoldSelection::Participant(_) => serde_json::json!({ "participant": true }),
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            HoldSelection::Recordings(v) if v.is_empty() || v.len() > MAX_LISTED => Err(
                Error::invalid("recording_ids", &format!("1..={MAX_LISTED} ids")),
            ),
            HoldSelection::CallIds(v) if v.is_empty() || v.len() > MAX_LISTED => Err(
                Error::invalid("external_call_ids", &format!("1..={MAX_LISTED} call ids")),
            ),
            HoldSelection::Window { from_ms, to_ms, .. } if from_ms >= to_ms => Err(
                Error::invalid("window", "the start of the window must be before its end"),
            ),
            HoldSelection::Participant(p) => {
                crate::domain::normalize_identifier("participant", p)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Hold names: 1..=128 characters of letters, digits, `-`, `_`, `.`, `:`.
pub fn parse_name(s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if !ok {
        return Err(Error::invalid(
            "name",
            "1..=128 characters: letters, digits, '-', '_', '.', ':'",
        ));
    }
    Ok(s.to_owned())
}

fn actor_of(principal: &Principal) -> String {
    format!("token:{}", principal.token_id)
}

/// Places a hold. All or nothing: an id or call id the tenant has no
/// committed recording for fails the whole request (NOT_FOUND, naming it).
pub async fn place_hold(
    archive: &Archive,
    principal: &Principal,
    name: &str,
    reason: &str,
    selection: HoldSelection,
) -> Result<LegalHold> {
    super::require_compliance(archive, principal).await?;
    let name = parse_name(name)?;
    let reason = super::reason("reason", reason)?;
    selection.validate()?;
    let tenant = &principal.tenant;
    let hold = LegalHold {
        hold_id: uuid::Uuid::now_v7().to_string(),
        name,
        reason,
        selector: selection.to_json().to_string(),
        recording_count: 0,
        placed_by: actor_of(principal),
        placed_at_ms: now_ms(),
        released_by: None,
        release_reason: None,
        released_at_ms: None,
    };
    // Digests first: the index key may have to be created, which must not
    // wait on the write lock this transaction is about to take.
    let digests: Vec<[u8; 32]> = match &selection {
        HoldSelection::Window { labels, .. } if !labels.is_empty() => {
            super::subjects::require_complete_index(archive, tenant).await?;
            let index = super::subjects::tenant_index(archive, tenant).await?;
            labels.iter().map(|(k, v)| index.label(k, v)).collect()
        }
        HoldSelection::Participant(p) => vec![{
            super::subjects::require_complete_index(archive, tenant).await?;
            super::subjects::tenant_index(archive, tenant)
                .await?
                .participant("participant", p)?
        }],
        _ => Vec::new(),
    };
    let mut tx = archive.catalog.begin().await?;
    catalog::lock_holds(&mut tx, tenant).await?;
    catalog::insert_hold(&mut tx, tenant, &hold).await?;
    match &selection {
        HoldSelection::Recordings(ids) => {
            let ids: std::collections::BTreeSet<_> = ids.iter().collect();
            for id in ids {
                if !catalog::add_hold_member(&mut tx, tenant, &hold.hold_id, id).await? {
                    return Err(super::erase::not_found(&mut tx, tenant, id).await);
                }
            }
        }
        HoldSelection::CallIds(calls) => {
            let calls: std::collections::BTreeSet<_> = calls.iter().collect();
            for call in calls {
                if !catalog::add_hold_call(&mut tx, tenant, &hold.hold_id, call).await? {
                    return Err(super::erase::call_not_found(&mut tx, tenant, call).await);
                }
            }
        }
        HoldSelection::Window { from_ms, to_ms, .. } => {
            catalog::add_hold_window(&mut tx, tenant, &hold.hold_id, *from_ms, *to_ms).await?;
            // Narrowed to the recordings carrying every label: one
            // statement per label.
            for d in &digests {
                crate::catalog::subjects::keep_hold_members_with(&mut tx, tenant, &hold.hold_id, d)
                    .await?;
            }
        }
        HoldSelection::Participant(_) => {
            for d in &digests {
                crate::catalog::subjects::add_hold_digest(&mut tx, tenant, &hold.hold_id, d)
                    .await?;
            }
        }
    }
    let count = catalog::activate_hold(&mut tx, tenant, &hold.hold_id).await?;
    // Listed ids and call ids are all or nothing: one erased meanwhile is
    // not held, so the hold is refused (and rolled back).
    let listed = match &selection {
        HoldSelection::Recordings(ids) => {
            Some(ids.iter().collect::<std::collections::BTreeSet<_>>().len())
        }
        HoldSelection::CallIds(c) => {
            Some(c.iter().collect::<std::collections::BTreeSet<_>>().len())
        }
        _ => None,
    };
    if let Some(n) = listed
        && count < n as u64
    {
        return Err(Error::NothingSelected(format!(
            "{} of the {n} recordings named (erased while the hold was being placed)",
            n as u64 - count
        )));
    }
    let mut event = trail::by(principal, Action::HoldPlaced)
        .detail("hold", hold.name.as_str())
        .detail("hold_id", hold.hold_id.as_str())
        .detail("reason", hold.reason.as_str())
        .detail("recording_count", count)
        .detail("selection", selection.to_json());
    // Small holds name their recordings in the event itself, so that
    // `audit log --recording` finds them; a window names its bounds.
    if count <= 100 {
        let members = catalog::hold_members(&mut tx, tenant, &hold.hold_id, None, 100).await?;
        event = event.recordings(members);
    }
    trail::append(archive, &mut tx, log_of(tenant), event).await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant, hold = %hold.name, recordings = count, event = "hold_placed", "legal hold placed");
    Ok(LegalHold {
        recording_count: count,
        ..hold
    })
}

/// Releases the active hold `name`. Recordings no other hold covers become
/// erasable again; those past their retention are erased by the next
/// expiry pass. Returns the released hold and how many recordings it freed.
pub async fn release_hold(
    archive: &Archive,
    principal: &Principal,
    name: &str,
    reason: &str,
) -> Result<(LegalHold, u64)> {
    super::require_compliance(archive, principal).await?;
    let reason = super::reason("reason", reason)?;
    let tenant = &principal.tenant;
    let mut tx = archive.catalog.begin().await?;
    catalog::lock_holds(&mut tx, tenant).await?;
    let hold = catalog::active_hold(&mut tx, tenant, name).await?;
    let by = actor_of(principal);
    let freed = catalog::release_hold(&mut tx, tenant, &hold.hold_id, &by, &reason).await?;
    trail::append(
        archive,
        &mut tx,
        log_of(tenant),
        trail::by(principal, Action::HoldReleased)
            .detail("hold", hold.name.as_str())
            .detail("hold_id", hold.hold_id.as_str())
            .detail("reason", reason.as_str())
            .detail("recordings_freed", freed),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant, hold = %hold.name, freed, event = "hold_released", "legal hold released");
    let released = catalog::hold_by_name(&mut *archive.catalog.conn().await?, tenant, name)
        .await
        .unwrap_or(hold);
    Ok((released, freed))
}

pub async fn list(
    archive: &Archive,
    principal: &Principal,
    include_released: bool,
) -> Result<Vec<LegalHold>> {
    super::require_compliance(archive, principal).await?;
    catalog::holds(
        &mut *archive.catalog.conn().await?,
        &principal.tenant,
        include_released,
    )
    .await
}

/// A hold and a page of its members.
pub async fn show(
    archive: &Archive,
    principal: &Principal,
    name: &str,
    after: Option<&RecordingId>,
    limit: u32,
) -> Result<(LegalHold, Vec<RecordingId>)> {
    super::require_compliance(archive, principal).await?;
    let mut conn = archive.catalog.conn().await?;
    let hold = catalog::hold_by_name(&mut conn, &principal.tenant, name).await?;
    let members = catalog::hold_members(
        &mut conn,
        &principal.tenant,
        &hold.hold_id,
        after,
        limit.clamp(1, 1000),
    )
    .await?;
    Ok((hold, members))
}
