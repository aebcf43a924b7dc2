//! Finding recordings the way a supervisor looks for a call: by the
//! platform's call id, or by when the call started, narrowed by labels
//! (which are encrypted, so they are matched after opening, page by page).

use std::collections::BTreeMap;

use super::{RecordingView, cipher_for, open_labels, require_reader};
use crate::archive::Archive;
use crate::audit::event::Action as AuditAction;
use crate::audit::trail;
use crate::catalog::recordings;
use crate::domain::{ExternalCallId, Participants, Principal, RecordingId};
use crate::error::{Error, Result};

/// What to look for. Without a call id, recordings whose call started in
/// `[from_ms, to_ms)` (open ends: all time), in id order after `after`.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub call_id: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Every one must be among the recording's labels.
    pub labels: BTreeMap<String, String>,
    pub after: Option<RecordingId>,
    /// At most this many rows are read per page (1..=200; 0: 50). Label
    /// filtering may leave fewer; the cursor goes on from the last row read.
    pub limit: u32,
}

pub const MAX_SEARCH_PAGE: u32 = 200;

/// One page of matches with their labels, and the cursor of the next page.
pub async fn search(
    archive: &Archive,
    principal: &Principal,
    q: &Search,
) -> Result<(Vec<RecordingView>, Option<RecordingId>)> {
    require_reader(archive, principal).await?;
    let limit = match q.limit {
        0 => 50,
        n if n > MAX_SEARCH_PAGE => {
            return Err(Error::invalid("limit", "must be at most 200"));
        }
        n => n,
    };
    let mut conn = archive.catalog.conn().await?;
    let (rows, next) = match &q.call_id {
        Some(call) => {
            let call = ExternalCallId::parse(call)?;
            let found = recordings::find_by_call_id(&mut conn, &principal.tenant, &call).await?;
            (found.into_iter().collect::<Vec<_>>(), None)
        }
        None => {
            let mut rows = recordings::started_between(
                &mut conn,
                &principal.tenant,
                q.from_ms.unwrap_or(0),
                q.to_ms.unwrap_or(i64::MAX),
                q.after.as_ref(),
                limit + 1,
            )
            .await?;
            let next = if rows.len() > limit as usize {
                rows.truncate(limit as usize);
                rows.last().map(|r| r.id)
            } else {
                None
            };
            (rows, next)
        }
    };
    drop(conn);
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        let labels = if row.labels_sealed.is_some() {
            match cipher_for(archive, &row).await {
                Ok(cipher) => open_labels(&cipher, &row)?,
                // A key KMS refuses now (disabled, pending deletion) must
                // not hide the rest of the page: shown without its labels,
                // and left out of label searches, which cannot match it.
                Err(Error::Kms(e)) if crate::revocation::is_refusal(&e) && q.labels.is_empty() => {
                    BTreeMap::new()
                }
                Err(Error::Kms(e)) if crate::revocation::is_refusal(&e) => continue,
                Err(e) => return Err(e),
            }
        } else {
            BTreeMap::new()
        };
        if q.labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            views.push(RecordingView {
                row,
                labels,
                participants: Participants::new(),
            });
        }
    }
    // Who saw that which calls exist, and what they searched by (never the
    // label values).
    trail::record(
        archive,
        principal,
        trail::by(principal, AuditAction::RecordingsListed)
            .recordings(views.iter().map(|v| v.row.id))
            .detail("call_id_search", q.call_id.is_some())
            .detail("from_ms", q.from_ms.unwrap_or(0))
            .detail("to_ms", q.to_ms.unwrap_or(i64::MAX))
            .detail(
                "label_keys",
                q.labels.keys().cloned().collect::<Vec<_>>().join(","),
            )
            .detail("after", q.after.map(|a| a.to_string()).unwrap_or_default()),
    )
    .await?;
    Ok((views, next))
}
