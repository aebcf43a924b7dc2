//! What compliance staff read from the audit trail: events, checkpoints and
//! proofs. Reading the trail is itself an event.

use std::time::Duration;

use crate::access::{self, Action};
use crate::archive::Archive;
use crate::audit::checkpoint::Checkpoint;
use crate::audit::event::{Action as AuditAction, Event, log_of};
use crate::audit::merkle::{self, CompactRange, Hash, MerkleError};
use crate::audit::note::VerifierKey;
use crate::audit::{proof, trail};
use crate::catalog::audit::{self as store, EventFilter, StoredCheckpoint, StoredEvent};
use crate::domain::{Principal, RecordingId, now_ms};
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
    let mut read =
        trail::by(principal, AuditAction::AuditRead).detail("events", events.len() as u64);
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

/// Signs a checkpoint of `log` as it is now, unless the newest stored one
/// already has its size. The tree continues from the last checkpoint's
/// compact range, so only the events since are read.
pub async fn checkpoint_now(archive: &Archive, log: &str) -> Result<StoredCheckpoint> {
    let mut conn = archive.catalog.conn_bulk().await?;
    let last = store::latest_checkpoint(&mut conn, log).await?;
    let size = store::size(&mut conn, log).await?;
    if let Some(cp) = last.as_ref().filter(|cp| cp.size == size) {
        return Ok(cp.clone());
    }
    let mut range = match &last {
        Some(cp) => CompactRange::from_peaks(
            cp.size,
            cp.peaks.iter().map(|p| Hash::from_bytes(*p)).collect(),
        )
        .map_err(|e| Error::CatalogCorrupt(format!("checkpoint peaks of {log}: {e}")))?,
        None => CompactRange::new(),
    };
    let mut at = range.size();
    while at < size {
        let to = (at + LEAF_BATCH).min(size);
        for leaf in store::leaf_hashes(&mut conn, log, at, to).await? {
            range
                .append(Hash::from_bytes(leaf))
                .map_err(|e| Error::CatalogCorrupt(format!("audit log {log}: {e}")))?;
        }
        at = to;
    }
    let root = range.root();
    let note = Checkpoint::new(&trail::origin(archive, log), size, root, Vec::new())
        .and_then(|c| c.sign(&[archive.audit_key.as_ref()]))
        .map_err(|e| Error::CatalogCorrupt(format!("cannot sign a checkpoint of {log}: {e}")))?;
    let cp = StoredCheckpoint {
        size,
        root_hash: *root.as_bytes(),
        peaks: range.peaks().iter().map(|p| *p.as_bytes()).collect(),
        note,
        created_at_ms: now_ms(),
    };
    store::store_checkpoint(&mut conn, log, &cp).await?;
    Ok(cp)
}

/// Leaf hashes read per catalog query when walking a log.
const LEAF_BATCH: u64 = 10_000;

/// One pass of the checkpointer: every log that grew by `every` events, or
/// grew at all and was last signed `max_age` ago, gets a checkpoint.
pub async fn checkpoint_due(archive: &Archive, every: u64, max_age: Duration) -> Result<usize> {
    let due = store::unsigned_logs(&mut *archive.catalog.conn_bulk().await?).await?;
    let now = now_ms();
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let mut signed = 0;
    for log in due {
        if log.size - log.signed >= every || now - log.signed_at_ms >= max_age_ms {
            checkpoint_now(archive, &log.log).await?;
            signed += 1;
        }
    }
    Ok(signed)
}

/// The caller's checkpoint of `size` (0: the newest, signing one first if the
/// log grew since).
pub async fn checkpoint(
    archive: &Archive,
    principal: &Principal,
    size: u64,
) -> Result<StoredCheckpoint> {
    access::require(archive, principal, Action::ReadAudit).await?;
    let log = log_of(&principal.tenant);
    if size == 0 {
        return checkpoint_now(archive, log).await;
    }
    store::checkpoints(&mut *archive.catalog.conn().await?, log)
        .await?
        .into_iter()
        .find(|cp| cp.size == size)
        .ok_or_else(|| Error::invalid("tree_size", "no checkpoint of that size"))
}

/// Every stored checkpoint of the caller's log.
pub async fn checkpoints(
    archive: &Archive,
    principal: &Principal,
) -> Result<Vec<StoredCheckpoint>> {
    access::require(archive, principal, Action::ReadAudit).await?;
    store::checkpoints(
        &mut *archive.catalog.conn().await?,
        log_of(&principal.tenant),
    )
    .await
}

/// The stored events `start..end` of the caller's log, as a verifier
/// recomputes the tree from them (`end` 0: the log's size).
pub async fn leaves(
    archive: &Archive,
    principal: &Principal,
    start: u64,
    end: u64,
) -> Result<(u64, u64)> {
    access::require(archive, principal, Action::ReadAudit).await?;
    let log = log_of(&principal.tenant);
    let size = store::size(&mut *archive.catalog.conn().await?, log).await?;
    let end = if end == 0 { size } else { end };
    if start > end || end > size {
        return Err(Error::invalid("end", "past the end of the log"));
    }
    trail::record(
        archive,
        principal,
        trail::by(principal, AuditAction::AuditRead)
            .detail("leaves_from", start)
            .detail("leaves_to", end),
    )
    .await?;
    Ok((start, end))
}

/// A page of stored events for [`leaves`].
pub async fn leaf_page(
    archive: &Archive,
    principal: &Principal,
    from: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>> {
    store::stored(
        &mut *archive.catalog.conn_bulk().await?,
        log_of(&principal.tenant),
        from,
        limit,
    )
    .await
}

/// All leaf hashes `0..size` of `log`.
async fn all_leaves(archive: &Archive, log: &str, size: u64) -> Result<Vec<Hash>> {
    let mut conn = archive.catalog.conn_bulk().await?;
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut at = 0;
    while at < size {
        let to = (at + LEAF_BATCH).min(size);
        out.extend(
            store::leaf_hashes(&mut conn, log, at, to)
                .await?
                .into_iter()
                .map(Hash::from_bytes),
        );
        at = to;
    }
    Ok(out)
}

/// Every event of `log` that names one of `recordings`, below `size`, in
/// log order, each with its inclusion proof in the tree of `size`: the
/// evidence an export carries. The leaf hashes are read once and a subtree
/// root shared by several proofs is hashed once.
pub(crate) async fn evidence(
    archive: &Archive,
    log: &str,
    size: u64,
    recordings: &[RecordingId],
) -> Result<Vec<(Event, Vec<Hash>)>> {
    let mut events = std::collections::BTreeMap::new();
    let mut conn = archive.catalog.conn_bulk().await?;
    for rec in recordings {
        let filter = EventFilter {
            recording: Some(*rec),
            ..EventFilter::default()
        };
        let mut after = None;
        loop {
            let page = store::list(&mut conn, log, &filter, after, MAX_PAGE_SIZE).await?;
            let full = page.len() == MAX_PAGE_SIZE as usize;
            after = page.last().map(|e| e.index);
            for e in page.into_iter().filter(|e| e.index < size) {
                events.insert(e.index, e);
            }
            if !full || after.is_some_and(|a| a >= size) {
                break;
            }
        }
    }
    drop(conn);
    let leaves = all_leaves(archive, log, size).await?;
    let mut memo = std::collections::HashMap::new();
    events
        .into_values()
        .map(|e| {
            let proof = proof::inclusion_proof(e.index, size, |r: std::ops::Range<u64>| {
                if let Some(h) = memo.get(&r) {
                    return Ok(*h);
                }
                let h = merkle::range_root(&leaves, r.clone())?;
                memo.insert(r, h);
                Ok::<_, MerkleError>(h)
            })
            .map_err(|err| Error::CatalogCorrupt(format!("audit log {log}: {err}")))?;
            Ok((e, proof))
        })
        .collect()
}

/// The size a proof is against: `size`, or the newest checkpoint's.
async fn proof_size(archive: &Archive, log: &str, size: u64) -> Result<u64> {
    if size != 0 {
        return Ok(size);
    }
    Ok(checkpoint_now(archive, log).await?.size)
}

/// An inclusion proof of event `index` in the caller's tree of `size`
/// (0: the newest checkpoint), with the event.
pub async fn inclusion(
    archive: &Archive,
    principal: &Principal,
    index: u64,
    size: u64,
) -> Result<(u64, Vec<Hash>, StoredEvent)> {
    access::require(archive, principal, Action::ReadAudit).await?;
    let log = log_of(&principal.tenant);
    let size = proof_size(archive, log, size).await?;
    if index >= size {
        return Err(Error::invalid("index", "not in a tree of that size"));
    }
    let leaves = all_leaves(archive, log, size).await?;
    let proof = proof::inclusion_proof(index, size, |r| merkle::range_root(&leaves, r))
        .map_err(|e: MerkleError| Error::invalid("index", &e.to_string()))?;
    let event = store::stored(&mut *archive.catalog.conn().await?, log, index, 1)
        .await?
        .pop()
        .ok_or_else(|| Error::CatalogCorrupt(format!("audit log {log} has no event {index}")))?;
    trail::record(
        archive,
        principal,
        trail::by(principal, AuditAction::AuditRead)
            .detail("inclusion_proof", index)
            .detail("tree_size", size),
    )
    .await?;
    Ok((size, proof, event))
}

/// A consistency proof between the caller's trees of `first` and `second`
/// events (`second` 0: the newest checkpoint).
pub async fn consistency(
    archive: &Archive,
    principal: &Principal,
    first: u64,
    second: u64,
) -> Result<(u64, Vec<Hash>)> {
    access::require(archive, principal, Action::ReadAudit).await?;
    let log = log_of(&principal.tenant);
    let second = proof_size(archive, log, second).await?;
    if first == 0 || first > second {
        return Err(Error::invalid("first_size", "must be 1..=second_size"));
    }
    let leaves = all_leaves(archive, log, second).await?;
    let proof = proof::consistency_proof(first, second, |r| merkle::range_root(&leaves, r))
        .map_err(|e: MerkleError| Error::invalid("first_size", &e.to_string()))?;
    Ok((second, proof))
}

/// The deployment's verifier key and the caller's log origin.
pub async fn verifier(archive: &Archive, principal: &Principal) -> Result<(VerifierKey, String)> {
    access::require(archive, principal, Action::ReadAudit).await?;
    Ok((
        archive.audit_key.verifier(),
        trail::origin(archive, log_of(&principal.tenant)),
    ))
}
