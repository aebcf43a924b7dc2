//! Erasure by crypto-shredding, on request and by the expiry job.
//!
//! The order is what makes it safe (a kill -9 anywhere leaves the recording
//! either intact or erased with its certificate, never listed but
//! unplayable):
//!
//! 1. **One catalog transaction**: lock the recordings, refuse if a legal
//!    hold covers one (or, on request, its retention has not ended without
//!    `override_retention`), delete their rows (the wrapped data key is in
//!    the row and nowhere else in the catalog: rewrap updates it in place,
//!    exports and audit events never copy it), write the tombstones, the
//!    certificate as `objects_pending`, the audit event, and queue the
//!    objects for deletion. Nothing is deleted before this commits.
//! 2. Purge the unwrapped data key from this node's cache; the other nodes
//!    drop theirs on the PostgreSQL NOTIFY that the transaction of step 1
//!    sent (delivered at its commit, so a crash after it loses nothing).
//! 3. Delete the objects (the sweeper retries a queued deletion until the
//!    store has done it).
//! 4. Verify (no catalog row names the recording, no object is listed under
//!    it), sign the certificate and mark it complete, with its own audit
//!    event. Whichever node gets there first completes it; step 3 and 4 run
//!    again after a crash because the queue and the pending certificate say
//!    what is left.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::archive::Archive;
use crate::audit::event::{Action, Actor, NewEvent, Outcome, log_of};
use crate::audit::trail;
use crate::catalog::compliance::{self as catalog, CertificateRow, Erasable, Tombstone};
use crate::catalog::{Backend, Conn};
use crate::compliance::certificate::{
    self, CertifiedRecording, Method, UnreachedCopy, Verification,
};
use crate::domain::{Principal, RecordingId, TenantId, format_ms, now_ms};
use crate::error::{Error, Result};
use crate::store::Versioning;

/// Most recordings one erasure request may name.
pub const MAX_PER_REQUEST: usize = 1000;
/// Recordings the expiry job erases per transaction (and certificate).
const EXPIRY_BATCH: u32 = 100;

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureReport {
    pub certificate_id: String,
    pub recordings: Vec<RecordingId>,
    pub erased_at_ms: i64,
    /// The signed certificate, once the objects are verified gone (else the
    /// sweeper completes it later and `certificates get` shows it then).
    pub certificate: Option<String>,
}

/// Why recordings were erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Request,
    RetentionExpiry,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Request => "request",
            Trigger::RetentionExpiry => "retention_expiry",
        }
    }
}

/// `callvault erase`: erases the named recordings now, all or none.
pub async fn erase_requested(
    archive: &Archive,
    principal: &Principal,
    ids: &[RecordingId],
    reason: &str,
    override_retention: bool,
) -> Result<ErasureReport> {
    super::require_compliance(archive, principal).await?;
    let reason = super::reason("reason", reason)?;
    let ids: std::collections::BTreeSet<RecordingId> = ids.iter().copied().collect();
    if ids.is_empty() || ids.len() > MAX_PER_REQUEST {
        return Err(Error::invalid(
            "recording_ids",
            &format!("1..={MAX_PER_REQUEST} recording ids"),
        ));
    }
    let tenant = &principal.tenant;
    let now = now_ms();
    let mut tx = archive.catalog.begin().await?;
    let mut locked = Vec::with_capacity(ids.len());
    for id in &ids {
        let Some(r) = catalog::lock_erasable(&mut tx, tenant, id).await? else {
            return Err(match catalog::tombstone(&mut tx, tenant, id).await? {
                Some(t) => erased_error(&t),
                None => Error::RecordingNotFound(*id),
            });
        };
        let refusal = if r.legal_hold {
            Some(Error::RecordingHeld {
                id: *id,
                holds: catalog::holds_on(&mut tx, tenant, id).await?,
            })
        } else {
            match r.retain_until_ms {
                Some(until) if until > now && !override_retention => {
                    Some(Error::RetentionNotExpired {
                        id: *id,
                        until_ms: until,
                    })
                }
                _ => None,
            }
        };
        if let Some(err) = refusal {
            drop(tx);
            let event = trail::by(principal, Action::RecordingErased)
                .outcome(Outcome::Refused)
                .recordings(ids.iter().copied())
                .detail("reason", reason.as_str())
                .detail("refusal", err.to_string());
            if let Err(e) = trail::record(archive, principal, event).await {
                tracing::warn!(error = %e, "refused erasure not recorded in the audit trail");
            }
            return Err(err);
        }
        locked.push(r);
    }
    let actor = format!("token {} ({})", principal.token_id, principal.role.as_str());
    let event = trail::by(principal, Action::RecordingErased);
    let report = write_erasure(
        archive,
        &mut tx,
        tenant,
        &locked,
        event,
        Erasure {
            actor,
            reason,
            override_retention,
            trigger: Trigger::Request,
        },
    )
    .await?;
    crate::fault::pause_point("erase.before_commit").await;
    tx.commit().await?;
    crate::fault::pause_point("erase.committed").await;
    archive
        .metrics
        .erased(tenant.as_str(), Trigger::Request.as_str(), ids.len() as u64);
    after_commit(archive, tenant, &locked).await;
    let certificate = match finish_one(archive, tenant, &report.certificate_id).await {
        Ok(doc) => doc,
        Err(e) => {
            tracing::warn!(error = %e, certificate = %report.certificate_id, "objects not yet deleted; the sweeper completes the certificate");
            None
        }
    };
    Ok(ErasureReport {
        certificate,
        ..report
    })
}

fn erased_error(t: &Tombstone) -> Error {
    Error::RecordingErased {
        id: t.id,
        erased_at_ms: t.erased_at_ms,
        certificate_id: t.certificate_id.clone(),
    }
}

/// The answer for a recording id the tenant has no committed recording of:
/// erased (with its date and certificate) or simply not found.
pub async fn not_found(conn: &mut Conn, tenant: &TenantId, id: &RecordingId) -> Error {
    erased(conn, tenant, id)
        .await
        .unwrap_or(Error::RecordingNotFound(*id))
}

/// [`Error::RecordingErased`] if the tenant's recording `id` was erased;
/// `None` if it was not, or if the catalog cannot tell.
pub async fn erased(conn: &mut Conn, tenant: &TenantId, id: &RecordingId) -> Option<Error> {
    match catalog::tombstone(conn, tenant, id).await {
        Ok(Some(t)) => Some(erased_error(&t)),
        _ => None,
    }
}

/// The answer for a call id the tenant has no committed recording of:
/// erased (with its date and certificate) or simply not found.
pub async fn call_not_found(conn: &mut Conn, tenant: &TenantId, call_id: &str) -> Error {
    match catalog::tombstone_of_call(conn, tenant, call_id).await {
        Ok(Some(t)) => erased_error(&t),
        _ => Error::CallNotFound(call_id.to_owned()),
    }
}

struct Erasure {
    actor: String,
    reason: String,
    override_retention: bool,
    trigger: Trigger,
}

/// Step 1's writes in `tx`, whose recordings are locked; the caller commits.
async fn write_erasure(
    archive: &Archive,
    tx: &mut Conn,
    tenant: &TenantId,
    locked: &[Erasable],
    event: NewEvent,
    how: Erasure,
) -> Result<ErasureReport> {
    let certificate_id = uuid::Uuid::now_v7().to_string();
    let erased_at = now_ms();
    for r in locked {
        catalog::notify_erased(tx, tenant, &r.id).await?;
        if !catalog::erase(tx, r, &certificate_id, erased_at).await? {
            // Locked and checked above: only a concurrent hold could do
            // this on an engine without row locks; refuse the whole request.
            return Err(Error::RecordingHeld {
                id: r.id,
                holds: catalog::holds_on(tx, tenant, &r.id).await?,
            });
        }
    }
    let event = event
        .recordings(locked.iter().map(|r| r.id))
        .detail("certificate_id", certificate_id.as_str())
        .detail("reason", how.reason.as_str())
        .detail("trigger", how.trigger.as_str())
        .detail("override_retention", how.override_retention)
        .detail("recording_count", locked.len() as u64);
    let logged = trail::append(archive, tx, log_of(tenant), event).await?;
    catalog::insert_certificate(
        tx,
        &CertificateRow {
            tenant: tenant.clone(),
            certificate_id: certificate_id.clone(),
            complete: false,
            actor: how.actor,
            by_expiry: how.trigger == Trigger::RetentionExpiry,
            reason: how.reason,
            override_retention: how.override_retention,
            recording_count: locked.len() as u64,
            audit_index: logged.index,
            erased_at_ms: erased_at,
            completed_at_ms: None,
            document: None,
        },
    )
    .await?;
    tracing::info!(tenant = %tenant, certificate = %certificate_id, recordings = locked.len(), trigger = how.trigger.as_str(), event = "recordings_erased", "recordings crypto-shredded");
    Ok(ErasureReport {
        certificate_id,
        recordings: locked.iter().map(|r| r.id).collect(),
        erased_at_ms: erased_at,
        certificate: None,
    })
}

/// Step 2 on this node: its unwrapped copies of the destroyed data keys go
/// (the other nodes were told by the NOTIFY the erasure's transaction sent).
async fn after_commit(archive: &Archive, tenant: &TenantId, erased: &[Erasable]) {
    for r in erased {
        archive
            .keys
            .purge_recording(tenant.as_str(), &r.id.to_string());
    }
}

/// What one expiry pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasePass {
    pub erased: u64,
    pub certificates_completed: u64,
}

/// The expiry job (admin nodes, every `schedule.retention_check`): erases
/// every recording whose retention ended and that no hold covers, in
/// batches of at most 100 per transaction and certificate, at most
/// `erasure.max_per_sec` per second; then completes pending certificates.
/// Nodes running it together take disjoint batches (`SKIP LOCKED`).
pub async fn run_expiry(archive: &Archive) -> Result<ErasePass> {
    let mut pass = ErasePass::default();
    let rate = archive.erasure.max_per_sec.max(1);
    let batch = EXPIRY_BATCH.min(rate);
    let started = Instant::now();
    loop {
        let mut tx = archive.catalog.begin_bulk().await?;
        let due = catalog::lock_due(&mut tx, now_ms(), batch).await?;
        if due.is_empty() {
            break;
        }
        // One transaction for the batch, one certificate and event per
        // tenant in it.
        let mut by_tenant: BTreeMap<TenantId, Vec<Erasable>> = BTreeMap::new();
        for r in due {
            by_tenant.entry(r.tenant.clone()).or_default().push(r);
        }
        for (tenant, locked) in &by_tenant {
            let event = NewEvent::new(
                Actor::system(&format!("retention-expiry@{}", archive.node)),
                Action::RecordingErased,
            );
            write_erasure(
                archive,
                &mut tx,
                tenant,
                locked,
                event,
                Erasure {
                    actor: format!("retention expiry job on {}", archive.node),
                    reason: "retention period ended".into(),
                    override_retention: false,
                    trigger: Trigger::RetentionExpiry,
                },
            )
            .await?;
        }
        tx.commit().await?;
        for (tenant, locked) in &by_tenant {
            let n = locked.len() as u64;
            archive
                .metrics
                .erased(tenant.as_str(), Trigger::RetentionExpiry.as_str(), n);
            after_commit(archive, tenant, locked).await;
            pass.erased += n;
        }
        // The rate limit: the pass so far may not have been faster than
        // `rate` per second.
        let budget = Duration::from_secs_f64(pass.erased as f64 / f64::from(rate));
        if let Some(wait) = budget.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    pass.certificates_completed = finish_certificates(archive).await?;
    if pass.erased > 0 {
        tracing::info!(
            erased = pass.erased,
            certificates = pass.certificates_completed,
            event = "retention_expiry_pass",
            "expiry pass erased recordings"
        );
    }
    Ok(pass)
}

/// The erasure backlog as the catalog holds it now: two counts, the first
/// over the `recordings_due` partial index, cheap enough for every scrape
/// of every node (so a fresh node reports it, and nodes without the expiry
/// job too).
pub async fn backlog(archive: &Archive) -> Result<crate::metrics::Backlog> {
    let mut conn = archive.catalog.conn_bulk().await?;
    Ok(crate::metrics::Backlog {
        retention_due: catalog::due_count(&mut conn, now_ms()).await?,
        certificates_pending: catalog::pending_certificate_count(&mut conn).await?,
    })
}

/// Completes every pending certificate whose objects can be deleted now.
/// Returns how many were completed.
pub async fn finish_certificates(archive: &Archive) -> Result<u64> {
    let pending =
        catalog::pending_certificates(&mut *archive.catalog.conn_bulk().await?, 100).await?;
    let mut done = 0;
    for c in pending {
        match finish_one(archive, &c.tenant, &c.certificate_id).await {
            Ok(Some(_)) => done += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, certificate = %c.certificate_id, "certificate not completed yet; retried next pass");
            }
        }
    }
    Ok(done)
}

/// Steps 3 and 4 for one certificate. Returns the signed document, or None
/// if another node completed it first (or it was already complete).
async fn finish_one(
    archive: &Archive,
    tenant: &TenantId,
    certificate_id: &str,
) -> Result<Option<String>> {
    let (row, tombstones) = {
        let mut conn = archive.catalog.conn_bulk().await?;
        let row = catalog::certificate(&mut conn, tenant, certificate_id).await?;
        if row.complete {
            return Ok(None);
        }
        let t = catalog::certificate_tombstones(&mut conn, tenant, certificate_id).await?;
        (row, t)
    };
    // Step 3: the objects. `delete_objects` clears the queue entry only
    // after the store deleted them; a failure leaves it for the sweeper.
    for t in &tombstones {
        archive.delete_objects(tenant, &t.id).await?;
    }
    crate::fault::pause_point("erase.objects_deleted").await;
    // Step 4: verify, then sign.
    let mut objects_remaining = 0u64;
    let mut rows_remaining = 0u64;
    {
        let mut conn = archive.catalog.conn_bulk().await?;
        for t in &tombstones {
            objects_remaining += archive.store.list_recording(tenant, &t.id).await?.len() as u64;
            rows_remaining +=
                u64::from(catalog::catalog_still_holds(&mut conn, tenant, &t.id).await?);
        }
        if catalog::certificate_objects_queued(&mut conn, tenant, certificate_id).await? {
            return Err(Error::TaskFailed {
                what: "object deletion",
                detail: "objects still queued".into(),
            });
        }
    }
    if objects_remaining > 0 || rows_remaining > 0 {
        return Err(Error::TaskFailed {
            what: "erasure verification",
            detail: format!(
                "{objects_remaining} objects and {rows_remaining} catalog rows remain; retried next pass"
            ),
        });
    }
    if archive.catalog.backend() == Backend::Sqlite {
        // Move the zeroed pages into the database file and empty the WAL,
        // which held the deleted rows' last versions.
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *archive.catalog.conn_bulk().await?)
            .await?;
        // (busy, WAL frames, frames checkpointed): busy means a reader kept
        // the WAL from being emptied; the certificate waits for a pass
        // where it can say so truthfully.
        let busy: i64 = sqlx::Row::try_get(&row, 0)?;
        if busy != 0 {
            return Err(Error::TaskFailed {
                what: "WAL checkpoint",
                detail: "readers kept the write-ahead log busy; retried next pass".into(),
            });
        }
    }
    let versioning = archive.store.versioning().await;
    let now = now_ms();
    let document = build(archive, &row, &tombstones, &versioning, now)
        .sign(&archive.audit_key)
        .map_err(|e| Error::TaskFailed {
            what: "certificate signing",
            detail: e,
        })?
        .to_file();
    let mut tx = archive.catalog.begin_bulk().await?;
    if !catalog::complete_certificate(&mut tx, tenant, certificate_id, &document, now).await? {
        return Ok(None);
    }
    trail::append(
        archive,
        &mut tx,
        log_of(tenant),
        NewEvent::new(
            Actor::system(&format!("erasure@{}", archive.node)),
            Action::CertificateIssued,
        )
        .recordings(tombstones.iter().map(|t| t.id))
        .detail("certificate_id", certificate_id)
        // The audit trail pins the certificate's content.
        .detail(
            "certificate_sha256",
            crate::crypto::sha256_hex(document.as_bytes()),
        )
        .detail("recording_count", tombstones.len() as u64)
        .detail("erase_event_index", row.audit_index),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant, certificate = %certificate_id, event = "certificate_issued", "deletion certificate issued");
    Ok(Some(document))
}

/// The certificate of a verified erasure.
fn build(
    archive: &Archive,
    row: &CertificateRow,
    tombstones: &[Tombstone],
    versioning: &Versioning,
    now: i64,
) -> certificate::Certificate {
    let keys: std::collections::BTreeSet<&str> =
        tombstones.iter().map(|t| t.key_arn.as_str()).collect();
    // The embedded default's keyring is a file in the data directory, and
    // `backup create` copies it: such a backup needs no KMS to decrypt.
    let local_keyring = keys.iter().any(|k| k.starts_with("arn:callvault:"));
    let keys = keys.into_iter().collect::<Vec<_>>().join(", ");
    let backup_days = archive.erasure.backup_retention_days;
    let backup_until = row
        .erased_at_ms
        .saturating_add(i64::from(backup_days) * 86_400_000);
    let mut not_reached = vec![UnreachedCopy {
        copy: "catalog backups".into(),
        detail: if local_keyring {
            format!(
                "backups of the data directory taken before the erasure still hold the wrapped \
                 data keys, the ciphertext objects and the local keyring (keys {keys}), so they \
                 can decrypt the recordings on their own until they are pruned after \
                 --backup-retention-days ({backup_days} days)"
            )
        } else {
            format!(
                "backups of the catalog taken before the erasure still hold the wrapped data \
                 keys; they can be unwrapped while KMS key(s) {keys} exist and allow it, until \
                 the backups are pruned after --backup-retention-days ({backup_days} days)"
            )
        },
        until: Some(format_ms(backup_until)),
    }];
    not_reached.push(match versioning {
        Versioning::Off(why) => UnreachedCopy {
            copy: "object store versions".into(),
            detail: format!("none: {why}"),
            until: None,
        },
        Versioning::On => UnreachedCopy {
            copy: "object store versions".into(),
            detail: "the bucket has versioning enabled: noncurrent versions of the ciphertext \
                     objects remain until its lifecycle rules expire them (they stay unreadable \
                     without the destroyed data keys)"
                .into(),
            until: None,
        },
        Versioning::Unknown(e) => UnreachedCopy {
            copy: "object store versions".into(),
            detail: format!("unknown: the versioning probe failed ({e})"),
            until: None,
        },
    });
    not_reached.push(match archive.catalog.backend() {
        Backend::Postgres => UnreachedCopy {
            copy: "PostgreSQL storage".into(),
            detail: "deleted row versions stay in table pages until VACUUM reclaims them, and in \
                     write-ahead log segments until they are recycled (and in WAL archives for \
                     point-in-time recovery until their retention)"
                .into(),
            until: None,
        },
        Backend::Sqlite => UnreachedCopy {
            copy: "SQLite storage".into(),
            detail: "none known: secure_delete overwrote the deleted rows and the write-ahead \
                     log was checkpointed and truncated before this certificate was signed"
                .into(),
            until: None,
        },
    });
    certificate::Certificate {
        format: certificate::FORMAT.into(),
        certificate_id: row.certificate_id.clone(),
        tenant: row.tenant.to_string(),
        issued_at: format_ms(now),
        erased_at: format_ms(row.erased_at_ms),
        standard: "NIST SP 800-88 Rev. 1, Guidelines for Media Sanitization (Appendix G)".into(),
        sanitized_by: row.actor.clone(),
        trigger: if row.by_expiry {
            Trigger::RetentionExpiry.as_str().into()
        } else {
            Trigger::Request.as_str().into()
        },
        reason: row.reason.clone(),
        override_retention: row.override_retention,
        method: Method {
            category: "Purge".into(),
            technique: "Cryptographic Erase".into(),
            description: "each recording's audio is AES-256-GCM ciphertext under a per-recording \
                          data key that exists only wrapped by the tenant's KMS key in the \
                          recording's catalog row; that row (and with it the only copy of the \
                          wrapped data key) was deleted, the unwrapped key was purged from every \
                          node's cache, then the ciphertext objects were deleted"
                .into(),
        },
        tool: format!("callvault {}", env!("CARGO_PKG_VERSION")),
        recordings: tombstones
            .iter()
            .map(|t| CertifiedRecording {
                recording_id: t.id.to_string(),
                external_call_id: t.external_call_id.clone(),
                sha256: t.sha256.clone(),
                size_bytes: t.size_bytes,
                ingested_at: format_ms(t.ingested_at_ms),
                kms_key_arn: t.key_arn.as_str().to_owned(),
                chunk_objects: t.chunk_count,
            })
            .collect(),
        destroyed: vec![
            "the wrapped data key, with the recording's catalog row (salt, nonce prefix, key \
             commitment, sealed labels)"
                .into(),
            "the recording's chunk rows".into(),
            "cached unwrapped data keys on every node (purged and announced)".into(),
            "every ciphertext object of the recording".into(),
        ],
        verification: Verification {
            method: "the catalog was queried for any recording or chunk row of each recording, \
                     and the object store listed under each recording's prefix"
                .into(),
            catalog_rows_remaining: 0,
            objects_remaining: 0,
            verified_at: format_ms(now),
            result: "verified".into(),
        },
        copies_not_reached: not_reached,
        audit_log: log_of(&row.tenant).to_owned(),
        audit_event_index: row.audit_index,
        verifier_key: archive.audit_key.verifier().to_string(),
    }
}

/// The tenant's certificates, newest first (compliance role).
pub async fn list_certificates(
    archive: &Archive,
    principal: &Principal,
    limit: u32,
) -> Result<Vec<CertificateRow>> {
    super::require_compliance(archive, principal).await?;
    catalog::certificates(
        &mut *archive.catalog.conn().await?,
        &principal.tenant,
        limit.clamp(1, 1000),
    )
    .await
}

/// One certificate and the recordings it covers.
pub async fn get_certificate(
    archive: &Archive,
    principal: &Principal,
    certificate_id: &str,
) -> Result<(CertificateRow, Vec<Tombstone>)> {
    super::require_compliance(archive, principal).await?;
    let mut conn = archive.catalog.conn().await?;
    let row = catalog::certificate(&mut conn, &principal.tenant, certificate_id).await?;
    let t = catalog::certificate_tombstones(&mut conn, &principal.tenant, certificate_id).await?;
    Ok((row, t))
}
