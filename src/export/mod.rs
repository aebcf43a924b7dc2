//! Compliance exports: a BagIt bag (RFC 8493) in a tar of the selected
//! recordings' original audio, their metadata, their audit events with
//! inclusion proofs and a signed checkpoint, and a signed tag manifest;
//! optionally sealed to age recipients. `docs/EXPORT.md` specifies the
//! bundle; `verify` checks one offline.
//!
//! The order of [`start`] is the contract: nothing leaves the server before
//! every selected recording proved decryptable (its data key unwrapped and
//! its key commitment checked) and the export's audit event committed. The
//! bundle is then built as it is streamed, one chunk at a time, so memory
//! does not grow with the number or size of the recordings, and nothing is
//! written to disk. Like a play, a running export ends when its token is
//! revoked or KMS refuses one of the keys its recordings are under
//! ([`revocation::guard`], watching one data key per KMS key).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};

pub mod bag;
mod bundle;
mod files;
mod select;
pub mod verify;

pub use select::{MAX_RECORDINGS, Query, Selection};

use crate::access::{self, Action};
use crate::archive::Archive;
use crate::audit::ending::Ending;
use crate::audit::event::{Action as AuditAction, log_of};
use crate::audit::{log, trail};
use crate::catalog::{RecordingRow, tenants};
use crate::crypto::{CryptoError, RecordingCipher};
use crate::domain::{Principal, RecordingId, now_ms};
use crate::error::{Error, Result};
use crate::kms::KmsError;
use crate::playback;
use crate::revocation::{self, KeyInUse};

/// The longest export reason, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// The most age recipients one bundle is sealed to.
pub const MAX_RECIPIENTS: usize = 32;
/// Recordings unlocked (data key unwrapped, labels opened) at once.
const UNLOCK_CONCURRENCY: usize = 8;

/// What compliance staff ask for, as asked (the selection is parsed after
/// the role check: a caller who may not export learns nothing else).
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub recording_ids: Vec<String>,
    pub external_call_ids: Vec<String>,
    pub query: Option<Query>,
    /// Every recording with this participant (a data-subject request).
    pub participant: Option<String>,
    /// Why the recordings leave the archive: required, one line.
    pub reason: String,
    /// age X25519 recipients (`age1…`); empty: a plain tar.
    pub age_recipients: Vec<String>,
}

/// An export under way: what the bundle holds and its bytes.
pub struct Export {
    pub id: String,
    pub recordings: Vec<RecordingId>,
    /// The tar's size (before age encryption).
    pub tar_size_bytes: u64,
    pub age_encrypted: bool,
    /// The index of the export's event in the tenant's audit log.
    pub audit_index: u64,
    /// The bundle's bytes, in pieces of at most 1 MiB.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("id", &self.id)
            .field("recordings", &self.recordings.len())
            .field("tar_size_bytes", &self.tar_size_bytes)
            .field("age_encrypted", &self.age_encrypted)
            .finish_non_exhaustive()
    }
}

fn check_reason(reason: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::invalid(
            "reason",
            "is required: say why the recordings are exported (a case or request number)",
        ));
    }
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(Error::invalid(
            "reason",
            &format!("must be one line of at most {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(reason.to_owned())
}

fn parse_recipients(recipients: &[String]) -> Result<Vec<age::x25519::Recipient>> {
    if recipients.len() > MAX_RECIPIENTS {
        return Err(Error::invalid(
            "age_recipients",
            &format!("at most {MAX_RECIPIENTS} recipients"),
        ));
    }
    recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.trim().parse().map_err(|_| {
                Error::invalid(
                    &format!("age_recipients[{i}]"),
                    "is not an age X25519 recipient (age1…)",
                )
            })
        })
        .collect()
}

/// A selected recording whose data key unwrapped: ready to stream.
struct Unlocked {
    row: RecordingRow,
    /// What the export's revocation watch re-checks ([`revocation::guard`]).
    key: KeyInUse,
    cipher: Arc<RecordingCipher>,
    labels: BTreeMap<String, String>,
}

async fn unlock(archive: &Archive, row: RecordingRow) -> Result<Unlocked> {
    let key = playback::key_in_use(archive, &row).await?;
    let cipher = playback::cipher_with(archive, &row, &key).await?;
    let labels = match &row.labels_sealed {
        None => BTreeMap::new(),
        Some(sealed) => {
            let json = cipher
                .open_metadata(sealed)
                .map_err(|e| Error::integrity(row.id, e))?;
            serde_json::from_slice(&json)
                .map_err(|_| Error::integrity(row.id, CryptoError::MetadataAuthentication))?
        }
    };
    Ok(Unlocked {
        row,
        key,
        cipher: Arc::new(cipher),
        labels,
    })
}

/// Unlocks every candidate. Recordings whose key KMS refuses for its state
/// are collected and refused together, each named with its key's state;
/// any other failure (KMS unreachable, integrity) is returned as it is.
async fn unlock_all(archive: &Archive, rows: Vec<RecordingRow>) -> Result<Vec<Unlocked>> {
    let results: Vec<(RecordingId, Result<Unlocked>)> = stream::iter(rows)
        .map(|row| async move { (row.id, unlock(archive, row).await) })
        .buffered(UNLOCK_CONCURRENCY)
        .collect()
        .await;
    let mut unlocked = Vec::with_capacity(results.len());
    let mut refused = Vec::new();
    for (id, res) in results {
        match res {
            Ok(u) => unlocked.push(u),
            Err(Error::Kms(
                e @ (KmsError::Disabled { .. }
                | KmsError::PendingDeletion { .. }
                | KmsError::InvalidState { .. }
                | KmsError::NotFound { .. }),
            )) => refused.push(format!("recording {id}: {e}")),
            Err(e) => return Err(e),
        }
    }
    if !refused.is_empty() {
        return Err(Error::RecordingsUndecryptable(refused));
    }
    Ok(unlocked)
}

/// Starts an export for `principal` (compliance role). Every refusal
/// (selection, reason, recipients, a recording that cannot be decrypted)
/// comes before the export's audit event and before any byte; the event
/// commits before the stream is returned, fail-closed; when the stream
/// ends, however it ends, `export.finish` records what was sent.
pub async fn start(
    archive: Arc<Archive>,
    principal: &Principal,
    req: ExportRequest,
) -> Result<Export> {
    access::require(&archive, principal, Action::Export).await?;
    // A token revoked (or expiring) during the export ends it.
    let revocations = archive.revocations.subscribe();
    let selection = Selection::parse(
        &req.recording_ids,
        &req.external_call_ids,
        req.query,
        req.participant,
    )?;
    let reason = check_reason(&req.reason)?;
    let recipients = parse_recipients(&req.age_recipients)?;
    let candidates = select::candidates(&archive, principal, &selection).await?;
    let chosen: Vec<Unlocked> = unlock_all(&archive, candidates)
        .await?
        .into_iter()
        .filter(|u| select::labels_match(&selection, &u.labels))
        .collect();
    if chosen.is_empty() {
        return Err(Error::NothingSelected(selection.describe()));
    }
    let ids: Vec<RecordingId> = chosen.iter().map(|u| u.row.id).collect();
    // One data key per KMS key the export reads under: a key that stops
    // working ends the export as it ends a play.
    let mut keys: BTreeMap<&str, KeyInUse> = BTreeMap::new();
    for u in &chosen {
        keys.entry(u.key.kms_arn.as_str())
            .or_insert_with(|| u.key.clone());
    }
    let keys: Vec<KeyInUse> = keys.into_values().collect();
    let export_id = uuid::Uuid::now_v7().to_string();
    let time_ms = now_ms();
    let tenant = tenants::get(&mut *archive.catalog.conn().await?, &principal.tenant).await?;
    let log_name = log_of(&principal.tenant);
    let origin = trail::origin(&archive, log_name);
    let audio_bytes: u64 = chosen.iter().map(|u| u.row.size_bytes).sum();

    let started = trail::record(
        &archive,
        principal,
        trail::by(principal, AuditAction::ExportStarted)
            .recordings(ids.iter().copied())
            .detail("export_id", export_id.as_str())
            .detail("reason", reason.as_str())
            .detail("selection", selection.mode())
            .detail("recording_count", ids.len() as u64)
            .detail("audio_bytes", audio_bytes)
            .detail(
                "age_recipients",
                req.age_recipients
                    .iter()
                    .map(|r| r.trim())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
    )
    .await?;
    let (id_for_end, by) = (export_id.clone(), principal.clone());
    let mut ending = Ending::new(archive.clone(), principal, move |sent, end| {
        end.describe(
            trail::by(&by, AuditAction::ExportFinished)
                .detail("export_id", id_for_end)
                .detail("bytes_sent", sent),
        )
    });
    let built = async {
        let checkpoint = log::checkpoint_now(&archive, log_name).await?;
        let evidence = log::evidence(&archive, log_name, checkpoint.size, &ids).await?;
        let facts = files::BagFacts {
            export_id: &export_id,
            tenant_name: &tenant.name,
            principal,
            reason: &reason,
            time_ms,
            origin: &origin,
            audit_index: started.index,
            checkpoint_size: checkpoint.size,
            recordings: ids.len(),
        };
        let data = files::payload(&archive, &origin, chosen, &checkpoint.note, evidence)?;
        files::bag_entries(&archive, &facts, data)
    }
    .await;
    let entries = match built {
        Ok(e) => e,
        Err(e) => {
            ending.fail(e.to_string());
            return Err(e);
        }
    };
    let tar_size_bytes = bundle::tar_size(&entries);
    let tar = bundle::tar_stream(
        archive.clone(),
        bag::root_dir(&export_id),
        u64::try_from(time_ms / 1000).unwrap_or(0),
        entries,
    );
    let age_encrypted = !recipients.is_empty();
    let stream = if age_encrypted {
        match bundle::sealed(tar, recipients) {
            Ok(s) => s,
            Err(e) => {
                ending.fail(e.to_string());
                return Err(e);
            }
        }
    } else {
        tar
    };
    let stream = revocation::guard(archive.clone(), principal, keys, revocations, stream);
    Ok(Export {
        id: export_id,
        recordings: ids,
        tar_size_bytes,
        age_encrypted,
        audit_index: started.index,
        stream: ending.watch(stream, |b: &Bytes| b.len() as u64),
    })
}
