//! The rewrap job: moves every wrapped data key of a tenant from one KMS key
//! to another with ReEncrypt, rate-limited across nodes, leased in batches
//! so that nodes share the work and a crash loses only the batch in flight.

use std::time::Duration;

use super::require_admin;
use crate::archive::Archive;
use crate::audit::event::{Action as AuditAction, Actor, NewEvent, Outcome, log_of};
use crate::audit::trail;
use crate::catalog::{RewrapJob, Rewrapped, keys as catalog_keys, rewrap};
use crate::domain::{JobStatus, KeyArn, KeyStatus, Principal, TenantId};
use crate::error::{Error, Result};
use crate::kms::{EncryptionContext, KeyState, KmsError};

/// Default and bounds of a rewrap job's KMS request budget.
pub const DEFAULT_REWRAP_KMS_PER_SEC: u32 = 50;
pub const MAX_REWRAP_KMS_PER_SEC: u32 = 1000;

/// Starts a job moving every wrapped data key of the tenant from `source` to
/// `destination`. Both must be in the tenant's key history; the destination
/// must not be retired and must be usable now.
pub async fn start_rewrap(
    archive: &Archive,
    principal: &Principal,
    source: &str,
    destination: &str,
    max_kms_per_sec: u32,
) -> Result<RewrapJob> {
    require_admin(archive, principal).await?;
    let tenant = &principal.tenant;
    let source = KeyArn::parse("source_key_arn", source)?;
    let destination = KeyArn::parse("destination_key_arn", destination)?;
    if source == destination {
        return Err(Error::invalid(
            "destination_key_arn",
            "must differ from the source key",
        ));
    }
    let rate = match max_kms_per_sec {
        0 => DEFAULT_REWRAP_KMS_PER_SEC,
        n if n > MAX_REWRAP_KMS_PER_SEC => {
            return Err(Error::invalid(
                "max_kms_requests_per_second",
                "must be at most 1000",
            ));
        }
        n => n,
    };
    let (src, dest) = {
        let mut conn = archive.catalog.conn().await?;
        (
            catalog_keys::get(&mut conn, tenant, &source).await?,
            catalog_keys::get(&mut conn, tenant, &destination).await?,
        )
    };
    let src = src.ok_or_else(|| Error::KeyNotFound {
        arn: source.clone(),
        context: " in the key history",
    })?;
    if src.status == KeyStatus::Active {
        return Err(Error::KeyIsActive {
            arn: source.clone(),
            why: " and still wraps new recordings; register the new key first",
        });
    }
    let dest = dest.ok_or_else(|| Error::KeyNotFound {
        arn: destination.clone(),
        context: " in the key history (register it first)",
    })?;
    if dest.status == KeyStatus::Retired {
        return Err(Error::KeyRetired(destination.clone()));
    }
    let desc = archive
        .kms
        .describe_key(destination.as_str(), tenant.as_str())
        .await?;
    if desc.state != KeyState::Enabled {
        return Err(Error::KeyNotEnabled {
            arn: destination.clone(),
            state: desc.state.as_str().to_owned(),
        });
    }
    let mut tx = archive.catalog.begin().await?;
    // Under the key rows' lock, so a concurrent `keys retire` either
    // happened before (and is seen here) or waits and sees this job.
    ensure_destination_usable(&mut tx, tenant, &source, &destination).await?;
    let job = rewrap::start(&mut tx, tenant, &source, &destination, rate).await?;
    trail::append(
        archive,
        &mut tx,
        log_of(tenant),
        trail::by(principal, AuditAction::RewrapStarted)
            .detail("job_id", job.id.as_str())
            .detail("source_key_arn", source.as_str())
            .detail("destination_key_arn", destination.as_str())
            .detail("total", job.total)
            .detail("max_kms_requests_per_second", rate),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant, job = %job.id, source_arn = %source, destination_arn = %destination, total = job.total, event = "rewrap_started", "rewrap job started");
    Ok(job)
}

/// Locks both keys' rows and checks, under the lock, that the destination
/// was not retired meanwhile.
async fn ensure_destination_usable(
    conn: &mut crate::catalog::Conn,
    tenant: &TenantId,
    source: &KeyArn,
    destination: &KeyArn,
) -> Result<()> {
    catalog_keys::lock(conn, tenant, &[source, destination]).await?;
    match catalog_keys::get(conn, tenant, destination).await? {
        Some(k) if k.status == KeyStatus::Retired => Err(Error::KeyRetired(destination.clone())),
        Some(_) => Ok(()),
        None => Err(Error::KeyNotFound {
            arn: destination.clone(),
            context: " in the key history (register it first)",
        }),
    }
}

/// How one pass over a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPass {
    /// Every recording moved; the job is marked succeeded.
    Finished,
    /// The job stopped (failed, cancelled, or finished by another node).
    Stopped,
    /// Work remains that this node cannot take now (budget spent, rows
    /// leased by another node, KMS throttling); try again shortly.
    Yield,
}

/// Rows per lease: small enough that a lease is held about half a second at
/// the job's budget, so a crash loses little and nodes share the work.
fn batch_size(rate: u32) -> u32 {
    (rate / 2).clamp(1, 25)
}

/// How one leased batch went.
enum Batch {
    Moved(Vec<Rewrapped>),
    /// KMS throttled or unavailable: give the rows back, try later.
    Throttled,
    /// The job cannot go on; the reason is recorded on it.
    Failed(String),
}

/// Works on one job until it is done or must yield.
pub async fn work_on(archive: &Archive, job_id: &str, tenant: &TenantId) -> Result<JobPass> {
    // What the job moves between is fixed; only its status changes (a
    // cancel, another node finishing), so that is re-read per batch.
    let (job, dest) = {
        let mut conn = archive.catalog.conn_bulk().await?;
        let job = rewrap::get(&mut conn, tenant, job_id).await?;
        let dest = catalog_keys::get(&mut conn, tenant, &job.destination_arn)
            .await?
            .ok_or_else(|| Error::KeyNotFound {
                arn: job.destination_arn.clone(),
                context: " in the key history (the rewrap destination)",
            })?;
        (job, dest)
    };
    let source_call = match archive.kms_arn(tenant, &job.source_arn).await {
        Ok(arn) => arn,
        Err(Error::NoReplicaInRegion { .. }) => return Ok(JobPass::Yield),
        Err(e) => return Err(e),
    };
    let Some(dest_call) = dest.arn_in(archive.kms.region()).cloned() else {
        // Another node, in a region the destination lives in, can work on it.
        return Ok(JobPass::Yield);
    };
    loop {
        let job = {
            let mut conn = archive.catalog.conn_bulk().await?;
            let job = rewrap::get(&mut conn, tenant, job_id).await?;
            if job.status != JobStatus::Running {
                return Ok(JobPass::Stopped);
            }
            if !rewrap::reserve_budget(&mut conn, &job, batch_size(job.max_kms_per_sec)).await? {
                return Ok(JobPass::Yield);
            }
            job
        };
        // The lease is this transaction: its rows stay locked (PostgreSQL)
        // until it commits with the new wrappings or rolls back.
        let mut lease = archive.catalog.begin_bulk().await?;
        let items = rewrap::lease_batch(&mut lease, &job, batch_size(job.max_kms_per_sec)).await?;
        if items.is_empty() {
            lease.rollback().await?;
            let remaining = catalog_keys::count_under(
                &mut *archive.catalog.conn_bulk().await?,
                tenant,
                &job.source_arn,
            )
            .await?;
            if remaining > 0 {
                return Ok(JobPass::Yield);
            }
            // The tenant's search index key moves with its recordings.
            crate::compliance::subjects::rewrap_index_key(
                archive,
                tenant,
                &job.source_arn,
                &source_call,
                &dest,
                &dest_call,
            )
            .await?;
            if let Some(done) =
                end_job(archive, &job, JobStatus::Succeeded, None, worker(archive)).await?
            {
                tracing::info!(tenant = %tenant, job = %job.id, rewrapped = done.rewrapped, event = "rewrap_succeeded", "rewrap job finished");
            }
            return Ok(JobPass::Finished);
        }
        let mut batch = Vec::with_capacity(items.len());
        let mut outcome = None;
        for item in &items {
            let ctx = EncryptionContext {
                tenant: tenant.to_string(),
                recording: item.recording.to_string(),
            };
            let res = archive
                .kms
                .re_encrypt(
                    (source_call.as_str(), item.algorithm),
                    &item.wrapped_key,
                    &ctx,
                    (dest_call.as_str(), dest.algorithm),
                )
                .await;
            match res {
                Ok((arn, wrapped)) if arn == dest_call.as_str() => batch.push(Rewrapped {
                    recording: item.recording,
                    old_wrapped_key: item.wrapped_key.clone(),
                    key_arn: job.destination_arn.clone(),
                    region: dest_call.region().to_owned(),
                    algorithm: dest.algorithm,
                    wrapped_key: wrapped,
                }),
                Ok((arn, _)) => {
                    outcome = Some(Batch::Failed(format!(
                        "KMS rewrapped under {arn}, not the destination key"
                    )));
                    break;
                }
                Err(KmsError::Throttled | KmsError::Unavailable(_)) => {
                    outcome = Some(Batch::Throttled);
                    break;
                }
                Err(KmsError::InvalidCiphertext { .. }) => {
                    outcome = Some(Batch::Failed(format!(
                        "the wrapped key of recording {} does not open under {}",
                        item.recording, job.source_arn
                    )));
                    break;
                }
                Err(e) => {
                    outcome = Some(Batch::Failed(e.to_string()));
                    break;
                }
            }
        }
        match outcome.unwrap_or(Batch::Moved(batch)) {
            Batch::Moved(done) => {
                rewrap::commit_batch(&mut lease, &job, &done).await?;
                lease.commit().await?;
            }
            Batch::Throttled => {
                // Nothing of this batch is kept: the rows are taken again later.
                lease.rollback().await?;
                tracing::warn!(job = %job.id, "KMS throttled or unavailable during rewrap; backing off");
                return Ok(JobPass::Yield);
            }
            Batch::Failed(why) => {
                lease.rollback().await?;
                return fail(archive, &job, &why).await;
            }
        }
    }
}

/// The rewrap worker of this node, as the audit trail names it.
fn worker(archive: &Archive) -> NewEvent {
    NewEvent::new(
        Actor::system(&format!("rewrap worker on {}", archive.node)),
        AuditAction::RewrapFinished,
    )
}

/// Ends a running job with its audit event, in one transaction. `None` if
/// it was no longer running (another node or a cancel ended it).
async fn end_job(
    archive: &Archive,
    job: &RewrapJob,
    status: JobStatus,
    error: Option<&str>,
    event: NewEvent,
) -> Result<Option<RewrapJob>> {
    let mut tx = archive.catalog.begin().await?;
    if !rewrap::finish(&mut tx, &job.tenant, &job.id, status, error).await? {
        return Ok(None);
    }
    let done = rewrap::get(&mut tx, &job.tenant, &job.id).await?;
    let mut event = event
        .detail("job_id", job.id.as_str())
        .detail("status", status.to_string())
        .detail("rewrapped", done.rewrapped)
        .detail("total", done.total);
    if let Some(e) = error {
        event = event.outcome(Outcome::Failed).detail("error", e);
    }
    trail::append(archive, &mut tx, log_of(&job.tenant), event).await?;
    tx.commit().await?;
    Ok(Some(done))
}

async fn fail(archive: &Archive, job: &RewrapJob, why: &str) -> Result<JobPass> {
    end_job(archive, job, JobStatus::Failed, Some(why), worker(archive)).await?;
    tracing::error!(tenant = %job.tenant, job = %job.id, error = %why, event = "rewrap_failed", "rewrap job failed; fix the cause and resume it");
    Ok(JobPass::Stopped)
}

/// One pass of this node's rewrap worker over every running job.
pub async fn run_rewrap_jobs(archive: &Archive) -> Result<Vec<JobPass>> {
    let jobs = rewrap::running(&mut *archive.catalog.conn_bulk().await?).await?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(work_on(archive, &job.id, &job.tenant).await?);
    }
    Ok(out)
}

/// Runs jobs until none is running (tests, the CLI's embedded mode).
pub async fn drain_rewrap_jobs(archive: &Archive) -> Result<()> {
    loop {
        let passes = run_rewrap_jobs(archive).await?;
        if passes.is_empty() {
            return Ok(());
        }
        if passes.contains(&JobPass::Yield) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn rewrap_job(archive: &Archive, principal: &Principal, id: &str) -> Result<RewrapJob> {
    require_admin(archive, principal).await?;
    rewrap::get(&mut *archive.catalog.conn().await?, &principal.tenant, id).await
}

pub async fn rewrap_jobs(archive: &Archive, principal: &Principal) -> Result<Vec<RewrapJob>> {
    require_admin(archive, principal).await?;
    rewrap::list(&mut *archive.catalog.conn().await?, &principal.tenant).await
}

pub async fn resume_rewrap(
    archive: &Archive,
    principal: &Principal,
    id: &str,
) -> Result<RewrapJob> {
    require_admin(archive, principal).await?;
    let mut tx = archive.catalog.begin().await?;
    let job = rewrap::get(&mut tx, &principal.tenant, id).await?;
    ensure_destination_usable(
        &mut tx,
        &principal.tenant,
        &job.source_arn,
        &job.destination_arn,
    )
    .await?;
    let job = rewrap::resume(&mut tx, &principal.tenant, id).await?;
    tx.commit().await?;
    Ok(job)
}

pub async fn cancel_rewrap(
    archive: &Archive,
    principal: &Principal,
    id: &str,
) -> Result<RewrapJob> {
    require_admin(archive, principal).await?;
    let job = rewrap::get(&mut *archive.catalog.conn().await?, &principal.tenant, id).await?;
    let event = trail::by(principal, AuditAction::RewrapFinished);
    match end_job(archive, &job, JobStatus::Cancelled, None, event).await? {
        Some(done) => Ok(done),
        None => {
            let job =
                rewrap::get(&mut *archive.catalog.conn().await?, &principal.tenant, id).await?;
            Err(Error::JobState {
                id: id.to_owned(),
                status: job.status,
                expected: "not running",
            })
        }
    }
}
