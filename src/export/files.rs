//! The files of an export's bag, built before the stream starts: each
//! recording's metadata and its audio entry, the audit evidence, the tag
//! files, the manifests and the signature over the tag manifest. The
//! audio's checksums are the ones recorded at ingest (the stream checks
//! them), so every file's hash is known before any audio is read.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::Unlocked;
use super::bag::{self, RecordingMetadata};
use super::bundle::{Body, Entry};
use crate::archive::Archive;
use crate::audit::event::Event;
use crate::audit::merkle::Hash;
use crate::audit::note;
use crate::audit::verify::InclusionBundle;
use crate::catalog::RecordingRow;
use crate::crypto::sha256_hex;
use crate::domain::{Principal, format_ms};
use crate::error::{Error, Result};

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
pub(super) struct BagFacts<'a> {
    pub(super) export_id: &'a str,
    pub(super) tenant_name: &'a str,
    pub(super) principal: &'a Principal,
    pub(super) reason: &'a str,
    pub(super) time_ms: i64,
    pub(super) origin: &'a str,
    pub(super) audit_index: u64,
    pub(super) checkpoint_size: u64,
    pub(super) recordings: usize,
}

/// The whole bag: tag files first, then the payload (`data`, whose
/// checksums are known before any audio is read: the audio's are the ones
/// recorded at ingest, which the stream checks as it goes), then the
/// manifests and the signature.
pub(super) fn bag_entries(
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
pub(super) fn payload(
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
