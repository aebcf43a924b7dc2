//! Offline verification of an export bundle (`callvault export verify`):
//! no server, no catalog, no KMS. Reads the bundle once, as a stream
//! (decrypting it first when it is age-encrypted), hashing every file as it
//! passes and keeping only the small ones; then checks the bag, the
//! recordings against their ingest hashes, the signature over the tag
//! manifest, and every audit event's inclusion proof against the signed
//! checkpoint. The first problem found is the answer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};

use super::bag::{self, RecordingMetadata};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::event::Action as AuditAction;
use crate::audit::note::{self, VerifierKey};
use crate::audit::verify::{InclusionBundle, verify_inclusion};

/// The first thing wrong with a bundle, in words that name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Problem(pub String);

fn problem<T>(msg: impl Into<String>) -> Result<T, Problem> {
    Err(Problem(msg.into()))
}

/// The largest file kept in memory (tag files, metadata, proofs); audio is
/// hashed as it streams and never kept.
const MAX_KEPT_BYTES: u64 = 64 * 1024 * 1024;

/// The magic line every age file starts with.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// What the auditor brings: identities to decrypt with (age), and the
/// audit verifier key they trust. Without a key, the one inside the bundle
/// is used, which proves integrity but not origin.
#[derive(Default)]
pub struct Options {
    pub identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    pub trusted_key: Option<VerifierKey>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("identities", &self.identities.len())
            .field("trusted_key", &self.trusted_key)
            .finish()
    }
}

/// What a bundle that verified holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub export_id: String,
    pub age_encrypted: bool,
    pub recordings: usize,
    pub payload_files: u64,
    pub payload_bytes: u64,
    pub audit_events: usize,
    pub checkpoint_size: u64,
    /// The verifier key the signatures verified with.
    pub signer: String,
    /// True when that key came from the bundle itself (no `--public-key`).
    pub key_from_bundle: bool,
}

/// A file of the bag as read: its hash and size, and its bytes if small
/// enough to be metadata.
struct File {
    sha256: String,
    size: u64,
    kept: Option<Vec<u8>>,
}

fn keep(path: &str) -> bool {
    !path.starts_with(bag::RECORDINGS_DIR) || path.ends_with(".json")
}

/// Reads every file of the tar under one root directory.
fn read_tar(input: impl Read) -> Result<(String, BTreeMap<String, File>), Problem> {
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| Problem(format!("not a tar archive: {e}")))?;
    let mut root: Option<String> = None;
    let mut files = BTreeMap::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| Problem(format!("the tar is damaged: {e}")))?;
        let full = entry
            .path()
            .map_err(|e| Problem(format!("a tar entry has an unreadable path: {e}")))?
            .to_string_lossy()
            .into_owned();
        let kind = entry.header().entry_type();
        let (top, rest) = full.split_once('/').unwrap_or((full.as_str(), ""));
        match &root {
            None => root = Some(top.to_owned()),
            Some(r) if r != top => {
                return problem(format!("`{full}` is outside the bag's directory `{r}`"));
            }
            Some(_) => {}
        }
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return problem(format!("`{full}` is not a regular file"));
        }
        if rest.is_empty()
            || rest
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return problem(format!("`{full}` is not a file inside the bag"));
        }
        let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut kept = keep(rest).then(Vec::new);
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| Problem(format!("`{rest}` cannot be read: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Some(k) = kept.as_mut() {
                if size > MAX_KEPT_BYTES {
                    return problem(format!("`{rest}` is too large for a metadata file"));
                }
                k.extend_from_slice(&buf[..n]);
            }
        }
        let file = File {
            sha256: hex::encode(hasher.finish()),
            size,
            kept,
        };
        if files.insert(rest.to_owned(), file).is_some() {
            return problem(format!("`{rest}` appears twice in the tar"));
        }
    }
    let root = root.ok_or_else(|| Problem("the tar is empty".into()))?;
    Ok((root, files))
}

fn text<'a>(files: &'a BTreeMap<String, File>, path: &str) -> Result<&'a str, Problem> {
    let file = files
        .get(path)
        .ok_or_else(|| Problem(format!("`{path}` is missing")))?;
    std::str::from_utf8(file.kept.as_deref().unwrap_or_default())
        .map_err(|_| Problem(format!("`{path}` is not UTF-8")))
}

/// Every line of a manifest must name a file whose SHA-256 it gives.
fn check_manifest(
    files: &BTreeMap<String, File>,
    name: &str,
    entries: &BTreeMap<String, String>,
) -> Result<(), Problem> {
    for (path, sha) in entries {
        let file = files
            .get(path)
            .ok_or_else(|| Problem(format!("`{path}` is listed in {name} but missing")))?;
        if &file.sha256 != sha {
            return problem(format!(
                "`{path}` does not match {name}: its SHA-256 is {}, the manifest says {sha}",
                file.sha256
            ));
        }
    }
    Ok(())
}

/// Verifies a bundle read from `input` (a tar, or an age file of one).
pub fn verify(input: impl Read, opts: &Options) -> Result<Report, Problem> {
    let mut input = BufReader::new(input);
    let head = input
        .fill_buf()
        .map_err(|e| Problem(format!("cannot read the bundle: {e}")))?;
    let age_encrypted = head.starts_with(AGE_MAGIC);
    let (root, files) = if age_encrypted {
        if opts.identities.is_empty() {
            return problem(
                "the bundle is age-encrypted: give the recipient's identity (--identity)",
            );
        }
        let decryptor = age::Decryptor::new_buffered(input)
            .map_err(|e| Problem(format!("not a readable age file: {e}")))?;
        let plain = decryptor
            .decrypt(
                opts.identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            )
            .map_err(|e| Problem(format!("cannot decrypt the bundle with this identity: {e}")))?;
        read_tar(plain)?
    } else {
        read_tar(input)?
    };
    check_bag(&root, &files, opts, age_encrypted)
}

fn check_bag(
    root: &str,
    files: &BTreeMap<String, File>,
    opts: &Options,
    age_encrypted: bool,
) -> Result<Report, Problem> {
    // The bag declaration.
    let declaration = bag::parse_tag_file(text(files, bag::BAGIT_PATH)?)
        .map_err(|e| Problem(format!("{}: {e}", bag::BAGIT_PATH)))?;
    let version = declaration
        .iter()
        .find(|(k, _)| k == "BagIt-Version")
        .map(|(_, v)| v.as_str());
    if version != Some("1.0") {
        return problem(format!(
            "{} does not declare BagIt-Version 1.0",
            bag::BAGIT_PATH
        ));
    }

    // The tag manifest covers every tag file but the signature.
    let tag_manifest_text = text(files, bag::TAG_MANIFEST_PATH)?;
    let tag_manifest = bag::parse_manifest(tag_manifest_text)
        .map_err(|e| Problem(format!("{}: {e}", bag::TAG_MANIFEST_PATH)))?;
    check_manifest(files, bag::TAG_MANIFEST_PATH, &tag_manifest)?;
    for required in [bag::BAGIT_PATH, bag::BAG_INFO_PATH, bag::MANIFEST_PATH] {
        if !tag_manifest.contains_key(required) {
            return problem(format!(
                "{} does not list `{required}`",
                bag::TAG_MANIFEST_PATH
            ));
        }
    }
    if let Some(extra) = files.keys().find(|p| {
        !p.starts_with("data/")
            && !tag_manifest.contains_key(*p)
            && *p != bag::TAG_MANIFEST_PATH
            && *p != bag::SIGNATURE_PATH
    }) {
        return problem(format!("`{extra}` is a file the bag does not account for"));
    }

    // bag-info.txt: the export's identity.
    let info: BTreeMap<String, String> = bag::parse_tag_file(text(files, bag::BAG_INFO_PATH)?)
        .map_err(|e| Problem(format!("{}: {e}", bag::BAG_INFO_PATH)))?
        .into_iter()
        .collect();
    let field = |k: &str| {
        info.get(k)
            .map(String::as_str)
            .ok_or_else(|| Problem(format!("{} has no {k}", bag::BAG_INFO_PATH)))
    };
    let export_id = field("External-Identifier")?.to_owned();
    if root != bag::root_dir(&export_id) {
        return problem(format!(
            "the bag's directory `{root}` does not name export {export_id}"
        ));
    }
    let origin = field("Callvault-Audit-Origin")?.to_owned();

    // The signature over the tag manifest, with the key the auditor trusts.
    let (key, key_from_bundle) = match &opts.trusted_key {
        Some(k) => (k.clone(), false),
        None => (
            VerifierKey::parse(text(files, bag::VERIFIER_KEY_PATH)?.trim()).map_err(|e| {
                Problem(format!(
                    "{}: not a verifier key: {e}",
                    bag::VERIFIER_KEY_PATH
                ))
            })?,
            true,
        ),
    };
    let signature = text(files, bag::SIGNATURE_PATH)?;
    let signed = note::open(signature.as_bytes(), std::slice::from_ref(&key)).map_err(|e| {
        Problem(format!(
            "the signature over {} does not verify with key {}: {e}",
            bag::TAG_MANIFEST_PATH,
            key.name()
        ))
    })?;
    let tag_manifest_sha = files
        .get(bag::TAG_MANIFEST_PATH)
        .map(|f| f.sha256.clone())
        .unwrap_or_default();
    if signed.text != bag::signature_text(&export_id, &origin, &tag_manifest_sha) {
        return problem(format!(
            "the signature is for another tag manifest or export (it signs {:?})",
            signed.text
        ));
    }

    // The payload manifest: every line, every payload file listed, and
    // Payload-Oxum.
    let manifest = bag::parse_manifest(text(files, bag::MANIFEST_PATH)?)
        .map_err(|e| Problem(format!("{}: {e}", bag::MANIFEST_PATH)))?;
    check_manifest(files, bag::MANIFEST_PATH, &manifest)?;
    let payload: Vec<(&String, &File)> = files
        .iter()
        .filter(|(p, _)| p.starts_with("data/"))
        .collect();
    if let Some((p, _)) = payload.iter().find(|(p, _)| !manifest.contains_key(*p)) {
        return problem(format!(
            "`{p}` is in the payload but not in {}",
            bag::MANIFEST_PATH
        ));
    }
    if let Some(p) = manifest.keys().find(|p| !p.starts_with("data/")) {
        return problem(format!(
            "{} lists `{p}`, which is not a payload file",
            bag::MANIFEST_PATH
        ));
    }
    let payload_bytes: u64 = payload.iter().map(|(_, f)| f.size).sum();
    let payload_files = payload.len() as u64;

    let oxum = bag::payload_oxum(payload_bytes, payload_files);
    if field("Payload-Oxum")? != oxum {
        return problem(format!(
            "Payload-Oxum says {} but the payload is {oxum} (octets.files)",
            field("Payload-Oxum")?
        ));
    }
    // Each recording: its metadata, its audio, and the ingest hash.
    let mut recordings = BTreeSet::new();
    for (path, file) in &payload {
        if !path.starts_with(bag::RECORDINGS_DIR) {
            continue;
        }
        if let Some(id) = path
            .strip_prefix(bag::RECORDINGS_DIR)
            .and_then(|p| p.strip_suffix(".json"))
        {
            let meta: RecordingMetadata =
                serde_json::from_slice(file.kept.as_deref().unwrap_or_default())
                    .map_err(|e| Problem(format!("`{path}` is not recording metadata: {e}")))?;
            if meta.recording_id != id {
                return problem(format!(
                    "`{path}` describes recording {}",
                    meta.recording_id
                ));
            }
            let audio = files.get(&meta.file).ok_or_else(|| {
                Problem(format!(
                    "`{}`, the audio of recording {id}, is missing",
                    meta.file
                ))
            })?;
            if audio.sha256 != meta.sha256 || audio.size != meta.size_bytes {
                return problem(format!(
                    "recording {id}: `{}` is not the audio ingested (SHA-256 {} over {} bytes, ingested {} over {} bytes)",
                    meta.file, audio.sha256, audio.size, meta.sha256, meta.size_bytes
                ));
            }
            recordings.insert(id.to_owned());
        }
    }
    if let Some((p, _)) = payload.iter().find(|(p, _)| {
        p.starts_with(bag::RECORDINGS_DIR)
            && !p.ends_with(".json")
            && !p
                .strip_prefix(bag::RECORDINGS_DIR)
                .and_then(|f| f.rsplit_once('.'))
                .is_some_and(|(id, _)| recordings.contains(id))
    }) {
        return problem(format!("`{p}` has no recording metadata"));
    }

    // The audit evidence: the checkpoint, and each event's inclusion in it.
    let checkpoint_note = text(files, bag::CHECKPOINT_PATH)?;
    let checkpoint = Checkpoint::open(
        checkpoint_note.as_bytes(),
        &origin,
        std::slice::from_ref(&key),
    )
    .map_err(|e| {
        Problem(format!(
            "{}: the checkpoint does not verify: {e}",
            bag::CHECKPOINT_PATH
        ))
    })?;
    let mut events = 0;
    let mut export_event = None;
    for (path, file) in payload
        .iter()
        .filter(|(p, _)| p.starts_with(bag::EVENTS_DIR))
    {
        let proof: InclusionBundle =
            serde_json::from_slice(file.kept.as_deref().unwrap_or_default())
                .map_err(|e| Problem(format!("`{path}` is not an inclusion proof: {e}")))?;
        if **path != bag::event_path(proof.index) {
            return problem(format!("`{path}` holds the proof of event {}", proof.index));
        }
        if proof.checkpoint != checkpoint_note || proof.origin != origin {
            return problem(format!(
                "`{path}` is proved against another checkpoint than {}",
                bag::CHECKPOINT_PATH
            ));
        }
        let event =
            verify_inclusion(&proof, &key).map_err(|e| Problem(format!("`{path}`: {e}")))?;
        if event.action == AuditAction::ExportStarted
            && event.details.get("export_id").and_then(|v| v.as_str()) == Some(export_id.as_str())
        {
            export_event = Some(event);
        }
        events += 1;
    }
    let export_event = export_event.ok_or_else(|| {
        Problem(format!(
            "the audit events do not include this export's own event (export.start of {export_id})"
        ))
    })?;
    let logged: BTreeSet<String> = export_event.recordings.iter().cloned().collect();
    if logged != recordings {
        return problem(format!(
            "the export's audit event lists {} recordings, the bag holds {}",
            logged.len(),
            recordings.len()
        ));
    }
    Ok(Report {
        export_id,
        age_encrypted,
        recordings: recordings.len(),
        payload_files,
        payload_bytes,
        audit_events: events,
        checkpoint_size: checkpoint.size(),
        signer: key.to_string(),
        key_from_bundle,
    })
}
