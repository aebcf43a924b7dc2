//! Tenant key lifecycle (BYOK): registration with a proven round trip, the
//! key history, health checks and incidents, revocation signals, and the
//! rewrap job that moves wrapped data keys between KMS keys with ReEncrypt.
//!
//! Nothing here touches audio objects: rotation and rewrap change only the
//! wrapped data key (and its key ARN) in the catalog.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::archive::Archive;
use crate::catalog::{KeyHealthRecord, KeyUsage, NewTenantKey, RewrapJob, Rewrapped, TenantKey};
use crate::crypto::DataKey;
use crate::domain::{Principal, Role, TenantId, now_ms};
use crate::error::{Error, Result};
use crate::kms::{EncryptionContext, KeyState, KmsError, PublicWrapKey, WrapAlgorithm};

const DAY_MS: i64 = 86_400_000;

/// Default and bounds of a rewrap job's KMS request budget.
pub const DEFAULT_REWRAP_KMS_PER_SEC: u32 = 50;
pub const MAX_REWRAP_KMS_PER_SEC: u32 = 1000;

fn require_admin(principal: &Principal) -> Result<()> {
    if principal.role == Role::Admin {
        Ok(())
    } else {
        Err(Error::PermissionDenied(
            "this token's role may not manage keys".into(),
        ))
    }
}

/// The region of an exact KMS key ARN: `arn:<partition>:kms:<region>:<account>:key/<id>`.
/// Aliases, bare key ids and alias ARNs are refused: the catalog must name
/// the exact key that wrapped each data key.
pub fn key_arn_region<'a>(field: &str, arn: &'a str) -> Result<&'a str> {
    let bad = || {
        Error::invalid(
            field,
            "must be an exact KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<key id>), \
             not an alias or a bare key id",
        )
    };
    if arn.len() > 2048 || !arn.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "kms", region, account, resource]
            if !partition.is_empty()
                && !region.is_empty()
                && !account.is_empty()
                && resource
                    .strip_prefix("key/")
                    .is_some_and(|id| !id.is_empty()) =>
        {
            Ok(region)
        }
        _ => Err(bad()),
    }
}

/// A registration request, validated.
#[derive(Debug, Clone)]
pub struct Registration {
    pub key_arn: String,
    /// region -> replica ARN
    pub replicas: BTreeMap<String, String>,
}

impl Registration {
    pub fn parse(key_arn: &str, replicas: BTreeMap<String, String>) -> Result<Self> {
        let region = key_arn_region("key_arn", key_arn)?;
        if replicas.len() > 32 {
            return Err(Error::invalid("replica_key_arns", "at most 32 replicas"));
        }
        let key_id = key_arn.rsplit('/').next().unwrap_or_default();
        for (r, arn) in &replicas {
            let replica_region = key_arn_region("replica_key_arns", arn)?;
            if replica_region != r {
                return Err(Error::invalid(
                    "replica_key_arns",
                    &format!("the replica for region `{r}` names region `{replica_region}`"),
                ));
            }
            if r == region {
                return Err(Error::invalid(
                    "replica_key_arns",
                    "a replica cannot be in the primary key's region",
                ));
            }
            // Multi-Region replicas share the primary's key id.
            if arn.rsplit('/').next() != Some(key_id) {
                return Err(Error::invalid(
                    "replica_key_arns",
                    "a multi-Region replica has the same key id as its primary",
                ));
            }
        }
        Ok(Self {
            key_arn: key_arn.to_owned(),
            replicas,
        })
    }
}

/// A KMS failure during the registration round trip, naming the operation
/// (the IAM permission) that failed.
fn check_failed(permission: &'static str, source: KmsError) -> Error {
    Error::KeyCheck { permission, source }
}

/// The round trip's last step: KMS must give back exactly the data key.
fn same_key(arn: &str, back: &DataKey, sent: &DataKey) -> Result<()> {
    aws_lc_rs::constant_time::verify_slices_are_equal(back.expose(), sent.expose()).map_err(|_| {
        check_failed(
            "kms:Decrypt",
            KmsError::InvalidCiphertext {
                arn: arn.to_owned(),
            },
        )
    })
}

/// Proves the key is usable for this tenant, then makes it the active key.
/// On any failure nothing changes: the previous key stays active.
pub async fn register(
    archive: &Archive,
    principal: &Principal,
    reg: &Registration,
) -> Result<TenantKey> {
    require_admin(principal)?;
    let tenant = &principal.tenant;
    let arn = reg.key_arn.as_str();
    if archive
        .catalog
        .key_held_by_other_tenant(tenant, arn)
        .await?
    {
        return Err(Error::FailedPrecondition(format!(
            "key {arn} belongs to another tenant's key history; each tenant brings its own key"
        )));
    }
    let desc = archive
        .kms
        .describe_key(arn, tenant.as_str())
        .await
        .map_err(|e| check_failed("kms:DescribeKey", e))?;
    match &desc.state {
        KeyState::Enabled => {}
        KeyState::Disabled => {
            return Err(check_failed(
                "kms:DescribeKey",
                KmsError::Disabled {
                    arn: arn.to_owned(),
                },
            ));
        }
        KeyState::PendingDeletion => {
            return Err(check_failed(
                "kms:DescribeKey",
                KmsError::PendingDeletion {
                    arn: arn.to_owned(),
                },
            ));
        }
        KeyState::Other(s) => {
            return Err(check_failed(
                "kms:DescribeKey",
                KmsError::InvalidState {
                    arn: arn.to_owned(),
                    state: s.clone(),
                },
            ));
        }
    }
    if desc.arn != arn {
        return Err(Error::invalid(
            "key_arn",
            &format!(
                "KMS resolves it to {}; register the exact key ARN",
                desc.arn
            ),
        ));
    }
    if desc.key_usage != "ENCRYPT_DECRYPT" {
        return Err(Error::invalid(
            "key_arn",
            &format!(
                "the key's usage is {}; callvault needs an ENCRYPT_DECRYPT key",
                desc.key_usage
            ),
        ));
    }
    let algorithm = WrapAlgorithm::for_key_spec(&desc.key_spec).ok_or_else(|| {
        Error::invalid(
            "key_arn",
            &format!(
                "key spec {} is not supported (SYMMETRIC_DEFAULT or RSA_2048/3072/4096)",
                desc.key_spec
            ),
        )
    })?;
    // The round trip runs under the tenant's own encryption context, so the
    // tenant's KMS audit log shows the check for what it is.
    let ctx = EncryptionContext {
        tenant: tenant.to_string(),
        recording: format!("key-registration-check-{}", uuid::Uuid::new_v4()),
    };
    let (generated, public_key) = match algorithm {
        WrapAlgorithm::SymmetricDefault => {
            let generated = archive
                .kms
                .generate_data_key(arn, &ctx)
                .await
                .map_err(|e| check_failed("kms:GenerateDataKey", e))?;
            if generated.key_arn != arn {
                return Err(Error::invalid(
                    "key_arn",
                    &format!("KMS wrapped with {}, not this key", generated.key_arn),
                ));
            }
            (generated, None)
        }
        WrapAlgorithm::RsaesOaepSha256 => {
            if !desc
                .encryption_algorithms
                .iter()
                .any(|a| a == algorithm.as_str())
            {
                return Err(Error::invalid(
                    "key_arn",
                    "the RSA key does not support RSAES_OAEP_SHA_256",
                ));
            }
            let public = archive
                .kms
                .get_public_key(arn, tenant.as_str())
                .await
                .map_err(|e| check_failed("kms:GetPublicKey", e))?;
            let wrap_key = PublicWrapKey::from_spki(arn, &public.spki_der)?;
            (wrap_key.generate_data_key()?, Some(public.spki_der))
        }
    };
    let back = archive
        .kms
        .decrypt(arn, algorithm, &generated.wrapped, &ctx)
        .await
        .map_err(|e| check_failed("kms:Decrypt", e))?;
    same_key(arn, &back, &generated.plaintext)?;
    let region = key_arn_region("key_arn", arn)?.to_owned();
    let key = archive
        .catalog
        .activate_key(
            tenant,
            &NewTenantKey {
                key_arn: arn.to_owned(),
                region,
                key_spec: desc.key_spec.clone(),
                public_key,
                replicas: reg.replicas.clone(),
            },
        )
        .await?;
    tracing::info!(
        tenant = %tenant,
        key_arn = %arn,
        key_spec = %desc.key_spec,
        event = "key_activated",
        "tenant key passed its round trip and is now active"
    );
    Ok(key)
}

/// The tenant's key history with what each key protects.
pub async fn list(archive: &Archive, principal: &Principal) -> Result<Vec<(TenantKey, KeyUsage)>> {
    require_admin(principal)?;
    archive.catalog.tenant_keys(&principal.tenant).await
}

pub async fn retire(archive: &Archive, principal: &Principal, key_arn: &str) -> Result<TenantKey> {
    require_admin(principal)?;
    key_arn_region("key_arn", key_arn)?;
    let key = archive
        .catalog
        .retire_key(&principal.tenant, key_arn)
        .await?;
    tracing::info!(tenant = %principal.tenant, key_arn = %key_arn, event = "key_retired", "tenant key retired");
    Ok(key)
}

// ---- health ----

/// A key that still protects recordings but can no longer (or soon will
/// not) unwrap them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIncident {
    pub key_arn: String,
    pub state: String,
    pub recordings: u64,
    pub legal_hold: u64,
    /// When the recordings become unreadable: the deletion date of a key
    /// pending deletion, else the time of the check (they already are).
    pub unreadable_at_ms: i64,
    pub message: String,
}

/// Age of the active key against the tenant's rotation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationCompliance {
    pub active_key_age_days: u32,
    pub policy_days: u32,
    pub compliant: bool,
}

#[derive(Debug, Clone)]
pub struct TenantKeyHealth {
    pub keys: Vec<(TenantKey, KeyUsage)>,
    pub incidents: Vec<KeyIncident>,
    pub rotation: RotationCompliance,
}

/// States in which KMS will not unwrap under the key.
fn is_revoked(state: &str) -> bool {
    matches!(
        state,
        "disabled" | "pending_deletion" | "access_denied" | "not_found"
    )
}

fn health_of(result: std::result::Result<crate::kms::KeyDescription, KmsError>) -> KeyHealthRecord {
    let checked_at_ms = now_ms();
    let (state, detail, deletion_date_ms) = match result {
        Ok(d) => match d.state {
            KeyState::Enabled => ("enabled", None, None),
            KeyState::Disabled => ("disabled", None, None),
            KeyState::PendingDeletion => ("pending_deletion", None, d.deletion_date_ms),
            KeyState::Other(s) => ("invalid_state", Some(s), None),
        },
        Err(KmsError::Disabled { .. }) => ("disabled", None, None),
        Err(KmsError::PendingDeletion { .. }) => ("pending_deletion", None, None),
        Err(KmsError::AccessDenied { .. }) => ("access_denied", None, None),
        Err(KmsError::NotFound { .. }) => ("not_found", None, None),
        Err(KmsError::InvalidState { state, .. }) => ("invalid_state", Some(state), None),
        Err(e) => ("unreachable", Some(e.to_string()), None),
    };
    KeyHealthRecord {
        state: state.to_owned(),
        detail,
        deletion_date_ms,
        checked_at_ms,
    }
}

fn incident_of(key: &TenantKey, usage: &KeyUsage) -> Option<KeyIncident> {
    let health = key.health.as_ref()?;
    if !is_revoked(&health.state) || usage.recordings == 0 {
        return None;
    }
    let unreadable_at_ms = health.deletion_date_ms.unwrap_or(health.checked_at_ms);
    let when = if health.state == "pending_deletion" {
        format!(
            "will become unreadable when the key is deleted at {}",
            crate::domain::format_ms(unreadable_at_ms)
        )
    } else {
        "are unreadable now".to_owned()
    };
    Some(KeyIncident {
        key_arn: key.key_arn.clone(),
        state: health.state.clone(),
        recordings: usage.recordings,
        legal_hold: usage.legal_hold,
        unreadable_at_ms,
        message: format!(
            "KMS key {} is {}: {} recordings ({} under legal hold) {when}",
            key.key_arn,
            health.state.replace('_', " "),
            usage.recordings,
            usage.legal_hold
        ),
    })
}

/// Checks one key with DescribeKey, records the result, publishes it as a
/// metric and a log event, and on a revoked state drops every cached data
/// key of that key here and on the other nodes.
async fn check_key(
    archive: &Archive,
    tenant: &TenantId,
    key: &TenantKey,
    usage: &KeyUsage,
) -> Result<()> {
    // A node outside the key's region checks the replica it would use; with
    // no replica here it has nothing to check (the key's own region does).
    let Some(arn) = key.arn_in(archive.kms.region()) else {
        return Ok(());
    };
    let health = health_of(archive.kms.describe_key(arn, tenant.as_str()).await);
    archive
        .catalog
        .record_key_health(tenant, &key.key_arn, &health)
        .await?;
    let checked = TenantKey {
        health: Some(health.clone()),
        ..key.clone()
    };
    let incident = incident_of(&checked, usage);
    archive.metrics.set_key_health(
        tenant.as_str(),
        &key.key_arn,
        crate::kms::KeyHealthGauge {
            state: health.state.clone(),
            recordings: usage.recordings,
            incident: incident.is_some(),
        },
    );
    let changed = key.health.as_ref().map(|h| h.state.as_str()) != Some(health.state.as_str());
    if let Some(i) = &incident {
        tracing::error!(
            tenant = %tenant,
            key_arn = %key.key_arn,
            state = %health.state,
            recordings = i.recordings,
            legal_hold = i.legal_hold,
            unreadable_at_ms = i.unreadable_at_ms,
            event = "key_incident",
            "{}", i.message
        );
    } else if health.state != "enabled" {
        tracing::warn!(tenant = %tenant, key_arn = %key.key_arn, state = %health.state, event = "key_health", "tenant key is not usable");
    } else if changed {
        tracing::info!(tenant = %tenant, key_arn = %key.key_arn, state = %health.state, event = "key_health", "tenant key is healthy");
    }
    if is_revoked(&health.state) {
        archive.key_revoked(&key.key_arn).await;
    }
    Ok(())
}

/// One health pass over every tenant key on this node. Returns how many
/// keys were checked.
pub async fn check_all(archive: &Archive) -> Result<usize> {
    let keys = archive.catalog.keys_to_check().await?;
    let mut usage_by_tenant: BTreeMap<String, BTreeMap<String, KeyUsage>> = BTreeMap::new();
    for (tenant, key) in &keys {
        if !usage_by_tenant.contains_key(tenant.as_str()) {
            let usage = archive.catalog.key_usage(tenant).await?;
            usage_by_tenant.insert(tenant.to_string(), usage);
        }
        let usage = usage_by_tenant
            .get(tenant.as_str())
            .and_then(|u| u.get(&key.key_arn))
            .copied()
            .unwrap_or_default();
        check_key(archive, tenant, key, &usage).await?;
    }
    Ok(keys.len())
}

/// The tenant's key health: every key with its last check, the incidents and
/// rotation compliance. `refresh` checks every key now first.
pub async fn health(
    archive: &Archive,
    principal: &Principal,
    refresh: bool,
) -> Result<TenantKeyHealth> {
    require_admin(principal)?;
    let tenant = &principal.tenant;
    if refresh {
        for (key, usage) in archive.catalog.tenant_keys(tenant).await? {
            if key.status != "retired" {
                check_key(archive, tenant, &key, &usage).await?;
            }
        }
    }
    let keys = archive.catalog.tenant_keys(tenant).await?;
    let incidents = keys.iter().filter_map(|(k, u)| incident_of(k, u)).collect();
    let policy_days = archive.catalog.rotation_policy_days(tenant).await?;
    let active = keys
        .iter()
        .find(|(k, _)| k.status == "active")
        .map(|(k, _)| k.activated_at_ms)
        .unwrap_or_else(now_ms);
    let age_days = u32::try_from((now_ms() - active).max(0) / DAY_MS).unwrap_or(u32::MAX);
    Ok(TenantKeyHealth {
        keys,
        incidents,
        rotation: RotationCompliance {
            active_key_age_days: age_days,
            policy_days,
            compliant: age_days < policy_days,
        },
    })
}

pub async fn set_rotation_policy(
    archive: &Archive,
    principal: &Principal,
    days: u32,
) -> Result<()> {
    require_admin(principal)?;
    if !(1..=3650).contains(&days) {
        return Err(Error::invalid("policy_days", "must be 1..=3650"));
    }
    archive
        .catalog
        .set_rotation_policy_days(&principal.tenant, days)
        .await
}

// ---- rewrap ----

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
    require_admin(principal)?;
    let tenant = &principal.tenant;
    key_arn_region("source_key_arn", source)?;
    key_arn_region("destination_key_arn", destination)?;
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
    let src = archive
        .catalog
        .tenant_key(tenant, source)
        .await?
        .ok_or_else(|| Error::NotFound(format!("source key {source} in the key history")))?;
    if src.status == "active" {
        return Err(Error::FailedPrecondition(format!(
            "source key {source} is the active key and still wraps new recordings; \
             register the new key first"
        )));
    }
    let dest = archive
        .catalog
        .tenant_key(tenant, destination)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "destination key {destination} in the key history (register it first)"
            ))
        })?;
    if dest.status == "retired" {
        return Err(Error::FailedPrecondition(format!(
            "destination key {destination} is retired"
        )));
    }
    let desc = archive
        .kms
        .describe_key(destination, tenant.as_str())
        .await?;
    if desc.state != KeyState::Enabled {
        return Err(Error::FailedPrecondition(format!(
            "destination key {destination} is {}",
            desc.state.as_str()
        )));
    }
    let job = archive
        .catalog
        .start_rewrap(tenant, source, destination, rate)
        .await?;
    tracing::info!(tenant = %tenant, job = %job.id, source_arn = %source, destination_arn = %destination, total = job.total, event = "rewrap_started", "rewrap job started");
    Ok(job)
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

/// Works on one job until it is done or must yield.
pub async fn work_on(archive: &Archive, job_id: &str, tenant: &TenantId) -> Result<JobPass> {
    // What the job moves between is fixed; only its status changes (a
    // cancel, another node finishing), so that is re-read per batch.
    let job = archive.catalog.rewrap_job(tenant, job_id).await?;
    let dest = archive
        .catalog
        .tenant_key(tenant, &job.destination_arn)
        .await?
        .ok_or_else(|| Error::Internal("rewrap destination left the key history".into()))?;
    let source_call = match archive.kms_arn(tenant, &job.source_arn).await {
        Ok(arn) => arn,
        Err(Error::FailedPrecondition(_)) => return Ok(JobPass::Yield),
        Err(e) => return Err(e),
    };
    let Some(dest_call) = dest.arn_in(archive.kms.region()).map(str::to_owned) else {
        // Another node, in a region the destination lives in, can work on it.
        return Ok(JobPass::Yield);
    };
    loop {
        let job = archive.catalog.rewrap_job(tenant, job_id).await?;
        if job.status != "running" {
            return Ok(JobPass::Stopped);
        }
        let n = batch_size(job.max_kms_per_sec);
        if !archive.catalog.reserve_rewrap_budget(&job, n).await? {
            return Ok(JobPass::Yield);
        }
        let lease = archive.catalog.lease_rewrap_batch(&job, n).await?;
        if lease.items.is_empty() {
            drop(lease);
            if archive
                .catalog
                .remaining_under(tenant, &job.source_arn)
                .await?
                == 0
            {
                if archive
                    .catalog
                    .finish_rewrap(tenant, &job.id, "succeeded", None)
                    .await?
                {
                    let done = archive.catalog.rewrap_job(tenant, &job.id).await?;
                    tracing::info!(tenant = %tenant, job = %job.id, rewrapped = done.rewrapped, event = "rewrap_succeeded", "rewrap job finished");
                }
                return Ok(JobPass::Finished);
            }
            return Ok(JobPass::Yield);
        }
        let mut done = Vec::with_capacity(lease.items.len());
        for item in &lease.items {
            let ctx = EncryptionContext {
                tenant: tenant.to_string(),
                recording: item.recording.to_string(),
            };
            let res = archive
                .kms
                .re_encrypt(
                    (&source_call, item.algorithm),
                    &item.wrapped_key,
                    &ctx,
                    (&dest_call, dest.algorithm),
                )
                .await;
            match res {
                Ok((arn, wrapped)) => {
                    if arn != dest_call {
                        return fail(
                            archive,
                            &job,
                            &format!("KMS rewrapped under {arn}, not the destination key"),
                        )
                        .await;
                    }
                    done.push(Rewrapped {
                        recording: item.recording,
                        old_wrapped_key: item.wrapped_key.clone(),
                        key_arn: job.destination_arn.clone(),
                        region: crate::kms::arn_region(&dest_call)
                            .unwrap_or(&dest.region)
                            .to_owned(),
                        algorithm: dest.algorithm,
                        wrapped_key: wrapped,
                    })
                }
                Err(KmsError::Throttled | KmsError::Unavailable(_)) => {
                    // The lease drops (rolls back); nothing of this batch is
                    // kept, the rows are taken again later.
                    tracing::warn!(job = %job.id, "KMS throttled or unavailable during rewrap; backing off");
                    return Ok(JobPass::Yield);
                }
                Err(KmsError::InvalidCiphertext { .. }) => {
                    return fail(
                        archive,
                        &job,
                        &format!(
                            "the wrapped key of recording {} does not open under {}",
                            item.recording, job.source_arn
                        ),
                    )
                    .await;
                }
                Err(e) => return fail(archive, &job, &e.to_string()).await,
            }
        }
        lease.commit(&archive.catalog, &done).await?;
    }
}

async fn fail(archive: &Archive, job: &RewrapJob, why: &str) -> Result<JobPass> {
    archive
        .catalog
        .finish_rewrap(&job.tenant, &job.id, "failed", Some(why))
        .await?;
    tracing::error!(tenant = %job.tenant, job = %job.id, error = %why, event = "rewrap_failed", "rewrap job failed; fix the cause and resume it");
    Ok(JobPass::Stopped)
}

/// One pass of this node's rewrap worker over every running job.
pub async fn run_rewrap_jobs(archive: &Archive) -> Result<Vec<JobPass>> {
    let jobs = archive.catalog.running_rewrap_jobs().await?;
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
    require_admin(principal)?;
    archive.catalog.rewrap_job(&principal.tenant, id).await
}

pub async fn rewrap_jobs(archive: &Archive, principal: &Principal) -> Result<Vec<RewrapJob>> {
    require_admin(principal)?;
    archive.catalog.rewrap_jobs(&principal.tenant).await
}

pub async fn resume_rewrap(
    archive: &Archive,
    principal: &Principal,
    id: &str,
) -> Result<RewrapJob> {
    require_admin(principal)?;
    archive.catalog.resume_rewrap(&principal.tenant, id).await
}

pub async fn cancel_rewrap(
    archive: &Archive,
    principal: &Principal,
    id: &str,
) -> Result<RewrapJob> {
    require_admin(principal)?;
    if !archive
        .catalog
        .finish_rewrap(&principal.tenant, id, "cancelled", None)
        .await?
    {
        let job = archive.catalog.rewrap_job(&principal.tenant, id).await?;
        return Err(Error::FailedPrecondition(format!(
            "rewrap job {id} is {}, not running",
            job.status
        )));
    }
    archive.catalog.rewrap_job(&principal.tenant, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_arns_must_be_exact() {
        let ok = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab";
        assert_eq!(key_arn_region("f", ok).unwrap(), "eu-west-1");
        assert_eq!(
            key_arn_region("f", "arn:callvault:kms:local:local:key/x").unwrap(),
            "local"
        );
        for bad in [
            "alias/callvault",
            "arn:aws:kms:eu-west-1:111122223333:alias/callvault",
            "1234abcd-12ab",
            "arn:aws:kms::111122223333:key/x",
            "arn:aws:kms:eu-west-1:111122223333:key/",
            "arn:aws:s3:eu-west-1:111122223333:key/x",
        ] {
            assert!(key_arn_region("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replicas_share_the_key_id_and_name_their_region() {
        let primary = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1";
        let good = BTreeMap::from([(
            "us-east-1".to_owned(),
            "arn:aws:kms:us-east-1:111122223333:key/mrk-1".to_owned(),
        )]);
        assert!(Registration::parse(primary, good).is_ok());
        let wrong_region = BTreeMap::from([(
            "us-west-2".to_owned(),
            "arn:aws:kms:us-east-1:111122223333:key/mrk-1".to_owned(),
        )]);
        assert!(Registration::parse(primary, wrong_region).is_err());
        let other_key = BTreeMap::from([(
            "us-east-1".to_owned(),
            "arn:aws:kms:us-east-1:111122223333:key/mrk-2".to_owned(),
        )]);
        assert!(Registration::parse(primary, other_key).is_err());
    }

    #[test]
    fn incidents_name_counts_and_dates() {
        let key = TenantKey {
            key_arn: "arn:aws:kms:eu-west-1:1:key/a".into(),
            region: "eu-west-1".into(),
            status: "previous".into(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            algorithm: WrapAlgorithm::SymmetricDefault,
            public_key: None,
            replicas: BTreeMap::new(),
            registered_at_ms: 0,
            activated_at_ms: 0,
            deactivated_at_ms: None,
            retired_at_ms: None,
            health: Some(KeyHealthRecord {
                state: "pending_deletion".into(),
                detail: None,
                deletion_date_ms: Some(1_900_000_000_000),
                checked_at_ms: 1_800_000_000_000,
            }),
        };
        let usage = KeyUsage {
            recordings: 12,
            bytes: 1000,
            legal_hold: 3,
        };
        let i = incident_of(&key, &usage).unwrap();
        assert_eq!(i.unreadable_at_ms, 1_900_000_000_000);
        assert!(
            i.message.contains("12 recordings (3 under legal hold)"),
            "{}",
            i.message
        );
        assert!(i.message.contains("2030-03-17"), "{}", i.message);
        assert!(incident_of(&key, &KeyUsage::default()).is_none());
    }
}
