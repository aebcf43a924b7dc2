//! Which recordings an export takes: by id, by call id, or by a query over a
//! time window and labels. Only the caller's tenant's committed recordings
//! are ever considered; a miss names what was asked for.

use std::collections::{BTreeMap, HashSet};

use crate::archive::Archive;
use crate::audit::event::Action as AuditAction;
use crate::catalog::{RecordingRow, recordings};
use crate::domain::{ExternalCallId, Principal, RecordingId, format_ms};
use crate::error::{Error, Result};
use crate::playback;

/// The most recordings one export may take: the bundle streams in bounded
/// memory, but the plan (one catalog row and one cipher per recording) is
/// held for the whole export.
pub const MAX_RECORDINGS: usize = 10_000;

/// Catalog rows read per page of a query.
const PAGE: u32 = 500;

/// What the caller asked for: exactly one mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Recordings(Vec<RecordingId>),
    CallIds(Vec<ExternalCallId>),
    /// Recordings whose call started (without a start time: that were
    /// ingested) in `[from_ms, to_ms)` and carry every label.
    Query {
        labels: BTreeMap<String, String>,
        from_ms: i64,
        to_ms: i64,
    },
    /// Every recording with this participant, in any role.
    Participant(String),
}

impl Selection {
    /// The audit trail's name of the mode.
    pub fn mode(&self) -> &'static str {
        match self {
            Selection::Recordings(_) => "recording_ids",
            Selection::CallIds(_) => "external_call_ids",
            Selection::Query { .. } => "query",
            Selection::Participant(_) => "participant",
        }
    }

    /// What was asked, for a message.
    pub fn describe(&self) -> String {
        match self {
            Selection::Query {
                labels,
                from_ms,
                to_ms,
            } => format!(
                "the query (calls from {} to {}{})",
                format_ms(*from_ms),
                format_ms(*to_ms),
                labels
                    .iter()
                    .map(|(k, v)| format!(", label {k}={v}"))
                    .collect::<String>()
            ),
            // Never the identifier itself: messages are logged.
            Selection::Participant(_) => "the participant given".into(),
            other => format!("the {} given", other.mode()),
        }
    }

    fn check_count(n: usize, field: &str) -> Result<()> {
        if n > MAX_RECORDINGS {
            return Err(Error::invalid(
                field,
                &format!("an export takes at most {MAX_RECORDINGS} recordings; split it"),
            ));
        }
        Ok(())
    }
}

/// An export query as asked: every part optional on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub labels: BTreeMap<String, String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl Selection {
    /// The one mode among what was asked: ids, call ids, or a query with
    /// both ends of its window.
    pub fn parse(
        recording_ids: &[String],
        call_ids: &[String],
        query: Option<Query>,
        participant: Option<String>,
    ) -> Result<Self> {
        let modes = [
            !recording_ids.is_empty(),
            !call_ids.is_empty(),
            query.is_some(),
            participant.is_some(),
        ];
        match modes.iter().filter(|m| **m).count() {
            0 => {
                return Err(Error::invalid(
                    "selection",
                    "give recording ids, call ids, a query (time window and labels), or a participant",
                ));
            }
            1 => {}
            _ => {
                return Err(Error::invalid(
                    "selection",
                    "give exactly one of recording ids, call ids, a query, or a participant; not several",
                ));
            }
        }
        if let Some(p) = participant {
            crate::domain::normalize_identifier("participant", &p)?;
            return Ok(Selection::Participant(p));
        }
        if let Some(q) = query {
            let (Some(from_ms), Some(to_ms)) = (q.from_ms, q.to_ms) else {
                return Err(Error::invalid(
                    "query",
                    "needs both start_time and end_time: labels are encrypted, so a query is bounded by a time window",
                ));
            };
            return Ok(Selection::Query {
                labels: q.labels,
                from_ms,
                to_ms,
            });
        }
        if !recording_ids.is_empty() {
            return recording_ids
                .iter()
                .enumerate()
                .map(|(i, id)| Ok(RecordingId::parse(&format!("recording_ids[{i}]"), id)?))
                .collect::<Result<_>>()
                .map(Selection::Recordings);
        }
        call_ids
            .iter()
            .map(|c| Ok(ExternalCallId::parse(c)?))
            .collect::<Result<_>>()
            .map(Selection::CallIds)
    }
}

/// The candidate rows of `selection` in the caller's tenant, in the order
/// asked (ids, call ids) or in id order (query), without duplicates. A
/// query's rows still have to match its labels, which only the decrypted
/// metadata tells ([`labels_match`]).
pub(super) async fn candidates(
    archive: &Archive,
    principal: &Principal,
    selection: &Selection,
) -> Result<Vec<RecordingRow>> {
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    match selection {
        Selection::Recordings(ids) => {
            Selection::check_count(ids.len(), "recording_ids")?;
            for id in ids {
                if seen.insert(*id) {
                    rows.push(
                        playback::find(archive, principal, *id, AuditAction::ExportStarted).await?,
                    );
                }
            }
        }
        Selection::CallIds(calls) => {
            Selection::check_count(calls.len(), "external_call_ids")?;
            let mut conn = archive.catalog.conn().await?;
            for call in calls {
                let Some(row) =
                    recordings::find_by_call_id(&mut conn, &principal.tenant, call).await?
                else {
                    return Err(crate::compliance::erase::call_not_found(
                        &mut conn,
                        &principal.tenant,
                        call.as_str(),
                    )
                    .await);
                };
                if seen.insert(row.id) {
                    rows.push(row);
                }
            }
        }
        Selection::Query { from_ms, to_ms, .. } => {
            if from_ms >= to_ms {
                return Err(Error::invalid(
                    "query.end_time",
                    "must be after query.start_time",
                ));
            }
            let mut conn = archive.catalog.conn().await?;
            let mut after = None;
            loop {
                let page = recordings::started_between(
                    &mut conn,
                    &principal.tenant,
                    *from_ms,
                    *to_ms,
                    after.as_ref(),
                    PAGE,
                )
                .await?;
                let full = page.len() == PAGE as usize;
                after = page.last().map(|r| r.id);
                rows.extend(page);
                // Labels are sealed per recording, so the window bounds what
                // is decrypted to match them.
                Selection::check_count(rows.len(), "query")?;
                if !full {
                    break;
                }
            }
        }
        Selection::Participant(p) => {
            rows = crate::compliance::subjects::all_with_participant(
                archive,
                principal,
                p,
                MAX_RECORDINGS,
            )
            .await?;
        }
    }
    Ok(rows)
}

/// Whether a recording's decrypted labels carry every label of the query.
pub(super) fn labels_match(selection: &Selection, labels: &BTreeMap<String, String>) -> bool {
    match selection {
        Selection::Query { labels: want, .. } => want.iter().all(|(k, v)| labels.get(k) == Some(v)),
        _ => true,
    }
}
