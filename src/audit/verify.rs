//! Verifying a log from what its store holds, against signed checkpoints:
//! what `callvault audit verify` runs. Pure: the caller fetches the leaves
//! and the notes.
//!
//! Every stored event must re-encode to its stored bytes, hash to its stored
//! leaf hash, carry the next index of its log, and bear the audit key's
//! signature over that leaf hash; the tree recomputed from the events must
//! have each signed checkpoint's root at that checkpoint's size; no signed
//! checkpoint may be larger than the log. Someone with write access to the
//! catalog but not the audit key cannot edit, insert, delete, reorder or
//! re-hash events without [`verify_log`] naming the first index that
//! differs.

use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::event::Event;
use super::merkle::{self, CompactRange, Hash};
use super::note::VerifierKey;
use super::proof;
use crate::catalog::audit::EVENT_SIGNATURE_CONTEXT;

/// One stored event as the store hands it out.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub index: u64,
    pub canonical: String,
    pub leaf_hash: [u8; 32],
    pub signature: Vec<u8>,
}

/// Where and why a log is not what its signatures say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", index.map(|i| format!("the log diverges at index {i}: ")).unwrap_or_default())]
pub struct Divergence {
    /// The first index that differs, when the evidence locates it.
    pub index: Option<u64>,
    pub reason: String,
}

fn at(index: u64, reason: String) -> Divergence {
    Divergence {
        index: Some(index),
        reason,
    }
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub size: u64,
    pub root: Hash,
    /// Checkpoints whose signature and root were checked (sizes).
    pub checkpoints: Vec<u64>,
}

/// Opens signed checkpoint notes of `origin` with `key`: the ones that
/// verify, and why each other one does not.
pub fn open_checkpoints(
    notes: &[String],
    origin: &str,
    key: &VerifierKey,
) -> (Vec<Checkpoint>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for n in notes {
        match Checkpoint::open(n.as_bytes(), origin, std::slice::from_ref(key)) {
            Ok(cp) => good.push(cp),
            Err(e) => bad.push(e.to_string()),
        }
    }
    (good, bad)
}

/// Verifies the events of `log` (in store order) against `checkpoints`
/// (every stored one and any an auditor kept, already opened).
pub fn verify_log(
    log: &str,
    key: &VerifierKey,
    leaves: impl IntoIterator<Item = Leaf>,
    checkpoints: &[Checkpoint],
) -> Result<Report, Divergence> {
    let mut wanted: Vec<&Checkpoint> = checkpoints.iter().collect();
    wanted.sort_by_key(|c| c.size());
    let mut next_checkpoint = wanted.iter().peekable();
    let mut range = CompactRange::new();
    let mut checked = Vec::new();
    let mut check_at = |range: &CompactRange,
                        next: &mut std::iter::Peekable<std::slice::Iter<'_, &Checkpoint>>|
     -> Result<(), Divergence> {
        while let Some(cp) = next.next_if(|c| c.size() == range.size()) {
            if *cp.root() != range.root() {
                return Err(Divergence {
                    index: range.size().checked_sub(1),
                    reason: format!(
                        "the tree of the first {} events is not the one the signed checkpoint of that size commits to",
                        range.size()
                    ),
                });
            }
            checked.push(cp.size());
        }
        Ok(())
    };
    check_at(&range, &mut next_checkpoint)?;
    for (expected, leaf) in (0u64..).zip(leaves) {
        if leaf.index != expected {
            return Err(at(
                expected,
                if leaf.index > expected {
                    format!(
                        "event {expected} is missing (the next stored event is {})",
                        leaf.index
                    )
                } else {
                    format!(
                        "event {} is stored again after event {}",
                        leaf.index,
                        expected - 1
                    )
                },
            ));
        }
        let hash = merkle::leaf_hash(leaf.canonical.as_bytes());
        if hash.as_bytes() != &leaf.leaf_hash {
            return Err(at(
                expected,
                "its content does not hash to its stored leaf hash".into(),
            ));
        }
        if !key.verify_raw(EVENT_SIGNATURE_CONTEXT, hash.as_bytes(), &leaf.signature) {
            return Err(at(
                expected,
                "it does not bear the audit key's signature".into(),
            ));
        }
        match Event::from_canonical(leaf.canonical.as_bytes()) {
            Some(e) if e.index == expected && e.log == log => {}
            Some(e) => {
                return Err(at(
                    expected,
                    format!("it is event {} of log {}, not this one", e.index, e.log),
                ));
            }
            None => return Err(at(expected, "it is not a canonical audit event".into())),
        }
        range
            .append(hash)
            .map_err(|e| at(expected, e.to_string()))?;
        check_at(&range, &mut next_checkpoint)?;
    }
    if let Some(cp) = next_checkpoint.next() {
        return Err(at(
            range.size(),
            format!(
                "the log ends after {} events but a signed checkpoint covers {}: events are missing from the end",
                range.size(),
                cp.size()
            ),
        ));
    }
    Ok(Report {
        size: range.size(),
        root: range.root(),
        checkpoints: checked,
    })
}

/// An inclusion proof that verifies offline: the event, its proof, and the
/// signed checkpoint it is against (`callvault audit prove`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionBundle {
    /// The log's origin line.
    pub origin: String,
    pub index: u64,
    /// The event's canonical encoding.
    pub event: String,
    /// Hex hashes of the proof, RFC 9162 order.
    pub proof: Vec<String>,
    /// The signed checkpoint note the proof is against.
    pub checkpoint: String,
    /// The note verifier key that signed it.
    pub verifier_key: String,
}

/// Verifies a bundle with `key` (the one the auditor trusts, not the
/// bundle's own unless they choose so): the checkpoint's signature, then
/// the event's inclusion in that checkpoint's tree. Returns the event.
pub fn verify_inclusion(bundle: &InclusionBundle, key: &VerifierKey) -> Result<Event, Divergence> {
    let fail = |reason: String| Divergence {
        index: Some(bundle.index),
        reason,
    };
    let cp = Checkpoint::open(
        bundle.checkpoint.as_bytes(),
        &bundle.origin,
        std::slice::from_ref(key),
    )
    .map_err(|e| fail(format!("the checkpoint does not verify: {e}")))?;
    let event = Event::from_canonical(bundle.event.as_bytes())
        .filter(|e| e.index == bundle.index)
        .ok_or_else(|| fail("the event is not a canonical audit event of that index".into()))?;
    let hashes = bundle
        .proof
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|b| Hash::from_slice(&b).ok())
                .ok_or_else(|| fail(format!("`{h}` is not a hex SHA-256 hash")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    proof::verify_inclusion(
        &merkle::leaf_hash(bundle.event.as_bytes()),
        bundle.index,
        cp.size(),
        &hashes,
        cp.root(),
    )
    .map_err(|e| fail(format!("the event is not in the checkpoint's tree: {e}")))?;
    Ok(event)
}
