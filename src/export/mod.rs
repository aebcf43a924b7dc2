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
//! written to disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};

pub mod bag;
mod bundle;
mod select;
pub mod verify;

pub use select::{MAX_RECORDINGS, Query, Selection};

use crate::access::{self, Action};
use crate::archive::Archive;
use crate::audit::ending::Ending;
use crate::audit::event::{Action as AuditAction, Event, log_of};
use crate::audit::merkle::Hash;
use crate::audit::verify::InclusionBundle;
use crate::audit::{log, note, trail};
use crate::catalog::{RecordingRow, tenants};
use crate::crypto::{CryptoError, RecordingCipher};
use crate::domain::{Principal, RecordingId, format_ms, now_ms};
use crate::error::{Error, Result};
use crate::kms::KmsError;
use crate::playback;
use bag::RecordingMetadata;
use bundle::{Body, Entry};

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
    cipher: Arc<RecordingCipher>,
    labels: BTreeMap<String, String>,
}

async fn unlock(archive: &Archive, row: RecordingRow) -> Result<Unlocked> {
    let cipher = playback::cipher_for(archive, &row).await?;
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

fn describe(selection: &Selection) -> String {
    match selection {
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
        other => format!("the {} given", other.mode()),
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

fn metadata(row: &RecordingRow, labels: BTreeMap<String, String>) -> RecordingMetadata {
    let id = row.id.to_string();
    RecordingMetadata {
        file: bag::audio_path(&id, &row.audio.container),
        recording_id: id,
        external_call_id: row.external_call_id.clone(),
        labels,
        start_time: row.start_time_ms.map(format_ms),
        ingest_time: format_ms(row.created_at_ms),
        size_bytes: row.size_bytes,
        sha256: row.sha256.clone(),
        chunk_count: row.chunk_count,
        chunk_size_bytes: row.chunk_size,
        format_version: row.format_version,
        kms_key_arn: row.key_arn.to_string(),
        kms_region: row.kms_region.clone(),
        wrap_algorithm: row.wrap_algorithm.as_str().to_owned(),
        probe: bag::Probe {
            container: row.audio.container.clone(),
            codec: row.audio.codec.clone(),
            sample_rate_hz: row.audio.sample_rate_hz,
            channels: row.audio.channels,
            duration_ms: row.audio.duration_ms,
            warning: row.audio.warning.clone(),
        },
    }
}

fn json_bytes(value: &impl serde::Serialize) -> Result<Bytes> {
    let mut v = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::CatalogCorrupt(format!("export metadata: {e}")))?;
    v.push(b'\n');
    Ok(Bytes::from(v))
}

/// What the bag's tag files say besides the payload.
struct BagFacts<'a> {
    export_id: &'a str,
    tenant_name: &'a str,
    principal: &'a Principal,
    reason: &'a str,
    time_ms: i64,
    origin: &'a str,
    audit_index: u64,
    checkpoint_size: u64,
    recordings: usize,
}

/// The whole bag: tag files first, then the payload (`data`, whose
/// checksums are known before any audio is read: the audio's are the ones
/// recorded at ingest, which the stream checks as it goes), then the
/// manifests and the signature.
fn bag_entries(
    archive: &Archive,
    facts: &BagFacts<'_>,
    data: Vec<(Entry, String)>,
) -> Result<Vec<Entry>> {
    let payload_bytes: u64 = data.iter().map(|(e, _)| e.size()).sum();
    let manifest = bag::manifest(
        &data
            .iter()
            .map(|(e, sha)| (e.path.clone(), sha.clone()))
            .collect(),
    );
    let info = bag::tag_file(&[
        ("Source-Organization", facts.tenant_name.to_owned()),
        ("Bagging-Date", format_ms(facts.time_ms)[..10].to_owned()),
        (
            "Bag-Software-Agent",
            format!("callvault {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "Payload-Oxum",
            bag::payload_oxum(payload_bytes, data.len() as u64),
        ),
        ("External-Identifier", facts.export_id.to_owned()),
        ("External-Description", facts.reason.to_owned()),
        ("Callvault-Tenant", facts.principal.tenant.to_string()),
        (
            "Callvault-Exported-By",
            format!(
                "token {} ({})",
                facts.principal.token_id,
                facts.principal.role.as_str()
            ),
        ),
        ("Callvault-Export-Time", format_ms(facts.time_ms)),
        ("Callvault-Recording-Count", facts.recordings.to_string()),
        ("Callvault-Audit-Origin", facts.origin.to_owned()),
        ("Callvault-Audit-Event", facts.audit_index.to_string()),
        (
            "Callvault-Audit-Checkpoint-Size",
            facts.checkpoint_size.to_string(),
        ),
    ]);
    let mut tags = BTreeMap::new();
    tags.insert(
        bag::BAGIT_PATH.to_owned(),
        sha256_hex(bag::BAGIT_TXT.as_bytes()),
    );
    tags.insert(bag::BAG_INFO_PATH.to_owned(), sha256_hex(info.as_bytes()));
    tags.insert(
        bag::MANIFEST_PATH.to_owned(),
        sha256_hex(manifest.as_bytes()),
    );
    let tag_manifest = bag::manifest(&tags);
    let signature = note::sign(
        &bag::signature_text(
            facts.export_id,
            facts.origin,
            &sha256_hex(tag_manifest.as_bytes()),
        ),
        &[archive.audit_key.as_ref()],
    )
    .map_err(|e| Error::CatalogCorrupt(format!("cannot sign the export: {e}")))?;
    let text = |path: &str, s: String| Entry {
        path: path.to_owned(),
        body: Body::Bytes(Bytes::from(s)),
    };
    let mut entries = vec![
        text(bag::BAGIT_PATH, bag::BAGIT_TXT.to_owned()),
        text(bag::BAG_INFO_PATH, info),
    ];
    entries.extend(data.into_iter().map(|(e, _)| e));
    entries.push(text(bag::MANIFEST_PATH, manifest));
    entries.push(text(bag::TAG_MANIFEST_PATH, tag_manifest));
    entries.push(text(bag::SIGNATURE_PATH, signature));
    Ok(entries)
}

/// The payload files: each recording's audio and metadata, then the audit
/// evidence (the checkpoint, the verifier key, one inclusion proof per
/// event), each with its SHA-256.
fn payload(
    archive: &Archive,
    origin: &str,
    chosen: Vec<Unlocked>,
    checkpoint: &str,
    evidence: Vec<(Event, Vec<Hash>)>,
) -> Result<Vec<(Entry, String)>> {
    let bytes_entry = |path: String, b: Bytes| {
        let sha = sha256_hex(&b);
        (
            Entry {
                path,
                body: Body::Bytes(b),
            },
            sha,
        )
    };
    let mut data = Vec::with_capacity(chosen.len() * 2 + evidence.len() + 2);
    for u in chosen {
        let meta = metadata(&u.row, u.labels);
        let sha = u.row.sha256.clone();
        data.push(bytes_entry(
            bag::metadata_path(&meta.recording_id),
            json_bytes(&meta)?,
        ));
        data.push((
            Entry {
                path: meta.file,
                body: Body::Recording {
                    row: Box::new(u.row),
                    cipher: u.cipher,
                },
            },
            sha,
        ));
    }
    let verifier_key = archive.audit_key.verifier().to_string();
    data.push(bytes_entry(
        bag::CHECKPOINT_PATH.to_owned(),
        Bytes::from(checkpoint.to_owned()),
    ));
    data.push(bytes_entry(
        bag::VERIFIER_KEY_PATH.to_owned(),
        Bytes::from(format!("{verifier_key}\n")),
    ));
    for (event, proof) in evidence {
        let bundle = InclusionBundle {
            origin: origin.to_owned(),
            index: event.index,
            event: String::from_utf8(event.canonical())
                .map_err(|_| Error::CatalogCorrupt("audit event encoding".into()))?,
            proof: proof.iter().map(|h| hex::encode(h.as_bytes())).collect(),
            checkpoint: checkpoint.to_owned(),
            verifier_key: verifier_key.clone(),
        };
        data.push(bytes_entry(
            bag::event_path(event.index),
            json_bytes(&bundle)?,
        ));
    }
    Ok(data)
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
    let selection = Selection::parse(&req.recording_ids, &req.external_call_ids, req.query)?;
    let reason = check_reason(&req.reason)?;
    let recipients = parse_recipients(&req.age_recipients)?;
    let candidates = select::candidates(&archive, principal, &selection).await?;
    let chosen: Vec<Unlocked> = unlock_all(&archive, candidates)
        .await?
        .into_iter()
        .filter(|u| select::labels_match(&selection, &u.labels))
        .collect();
    if chosen.is_empty() {
        return Err(Error::NothingSelected(describe(&selection)));
    }
    let ids: Vec<RecordingId> = chosen.iter().map(|u| u.row.id).collect();
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
        let facts = BagFacts {
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
        let data = payload(&archive, &origin, chosen, &checkpoint.note, evidence)?;
        bag_entries(&archive, &facts, data)
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
    Ok(Export {
        id: export_id,
        recordings: ids,
        tar_size_bytes,
        age_encrypted,
        audit_index: started.index,
        stream: ending.watch(stream, |b: &Bytes| b.len() as u64),
    })
}
