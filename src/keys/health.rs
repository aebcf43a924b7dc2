//! Key health: DescribeKey checks of every tenant key, incidents for keys
//! that protect recordings they can no longer unwrap, rotation compliance,
//! and the revocation signal to every node.

use std::collections::BTreeMap;

use super::require_admin;
use crate::archive::Archive;
use crate::audit::event::{Action as AuditAction, Actor, NewEvent, Outcome, log_of};
use crate::audit::trail;
use crate::catalog::{KeyHealthRecord, KeyUsage, TenantKey, keys as catalog_keys, tenants};
use crate::domain::{KeyArn, KeyHealthState, KeyStatus, Principal, TenantId, now_ms};
use crate::error::{Error, Result};
use crate::kms::{KeyDescription, KeyState, KmsError};

const DAY_MS: i64 = 86_400_000;

/// A key that still protects recordings but can no longer (or soon will
/// not) unwrap them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIncident {
    pub key_arn: KeyArn,
    pub state: KeyHealthState,
    pub recordings: u64,
    pub legal_hold: u64,
    /// The active legal holds over those recordings: a critical incident.
    pub holds: Vec<String>,
    /// When the recordings become unreadable: the deletion date of a key
    /// pending deletion, else the time of the check (they already are);
    /// `None` for a public key mismatch, where nobody can tell.
    pub unreadable_at_ms: Option<i64>,
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

/// What a DescribeKey answer (or its failure) says of the key's health.
fn health_of(result: std::result::Result<KeyDescription, KmsError>) -> KeyHealthRecord {
    use KeyHealthState as H;
    let checked_at_ms = now_ms();
    let (state, detail, deletion_date_ms) = match result {
        Ok(d) => match d.state {
            KeyState::Enabled => (H::Enabled, None, None),
            KeyState::Disabled => (H::Disabled, None, None),
            KeyState::PendingDeletion => (H::PendingDeletion, None, d.deletion_date_ms),
            KeyState::Other(s) => (H::InvalidState, Some(s), None),
        },
        Err(KmsError::Disabled { .. }) => (H::Disabled, None, None),
        Err(KmsError::PendingDeletion { .. }) => (H::PendingDeletion, None, None),
        Err(KmsError::AccessDenied { .. }) => (H::AccessDenied, None, None),
        Err(KmsError::NotFound { .. }) => (H::NotFound, None, None),
        Err(KmsError::InvalidState { state, .. }) => (H::InvalidState, Some(state), None),
        Err(e) => (H::Unreachable, Some(e.to_string()), None),
    };
    KeyHealthRecord {
        state,
        detail,
        deletion_date_ms,
        checked_at_ms,
    }
}

/// What GetPublicKey says of an RSA key whose public key was pinned at
/// registration: `None` when it still matches.
fn pinned_key_health(
    pinned: &[u8],
    answer: std::result::Result<crate::kms::PublicKeyInfo, KmsError>,
) -> Option<KeyHealthRecord> {
    match answer {
        Ok(info) if info.spki_der == pinned => None,
        Ok(info) => Some(KeyHealthRecord {
            state: KeyHealthState::PublicKeyMismatch,
            detail: Some(format!(
                "GetPublicKey returned a public key with SHA-256 {}, not the one pinned at registration (SHA-256 {})",
                crate::crypto::sha256_hex(&info.spki_der),
                crate::crypto::sha256_hex(pinned)
            )),
            deletion_date_ms: None,
            checked_at_ms: now_ms(),
        }),
        Err(e) => Some(health_of(Err(e))),
    }
}

/// `(N under legal hold)`, naming the holds when there are any.
fn held(usage: &KeyUsage, holds: &[String]) -> String {
    if holds.is_empty() {
        format!("{} under legal hold", usage.legal_hold)
    } else {
        format!(
            "{} under legal hold: CRITICAL, holds {}",
            usage.legal_hold,
            holds.join(", ")
        )
    }
}

fn incident_of(key: &TenantKey, usage: &KeyUsage, holds: &[String]) -> Option<KeyIncident> {
    let health = key.health.as_ref()?;
    if health.state.is_security_incident() {
        return Some(KeyIncident {
            key_arn: key.key_arn.clone(),
            state: health.state,
            recordings: usage.recordings,
            legal_hold: usage.legal_hold,
            holds: holds.to_vec(),
            unreadable_at_ms: None,
            message: format!(
                "KMS key {} is {}: {} recordings ({}) were wrapped for the pinned public key \
                 and may not be unwrappable by the key KMS now holds; new recordings stay wrapped for the \
                 pinned key. Investigate who replaced the key",
                key.key_arn,
                health.state,
                usage.recordings,
                held(usage, holds)
            ),
        });
    }
    if !health.state.is_revoked() || usage.recordings == 0 {
        return None;
    }
    let unreadable_at_ms = health.deletion_date_ms.unwrap_or(health.checked_at_ms);
    let when = if health.state == KeyHealthState::PendingDeletion {
        format!(
            "will become unreadable when the key is deleted at {}",
            crate::domain::format_ms(unreadable_at_ms)
        )
    } else {
        "are unreadable now".to_owned()
    };
    Some(KeyIncident {
        key_arn: key.key_arn.clone(),
        state: health.state,
        recordings: usage.recordings,
        legal_hold: usage.legal_hold,
        holds: holds.to_vec(),
        unreadable_at_ms: Some(unreadable_at_ms),
        message: format!(
            "KMS key {} is {}: {} recordings ({}) {when}",
            key.key_arn,
            health.state,
            usage.recordings,
            held(usage, holds)
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
    let mut health = health_of(
        archive
            .kms
            .describe_key(arn.as_str(), tenant.as_str())
            .await,
    );
    // An RSA key's public key was pinned at registration (ingest wraps data
    // keys with it, without KMS): KMS must still hold its private half.
    if let (KeyHealthState::Enabled, Some(pinned)) = (health.state, &key.public_key) {
        let answer = archive
            .kms
            .get_public_key(arn.as_str(), tenant.as_str())
            .await;
        if let Some(h) = pinned_key_health(pinned, answer) {
            health = h;
        }
    }
    // Whether this check moved the key to a new state: decided by the
    // catalog, so that concurrent checks report a new incident once.
    let changed = catalog_keys::record_health(
        &mut *archive.catalog.conn().await?,
        tenant,
        &key.key_arn,
        &health,
    )
    .await?;
    let checked = TenantKey {
        health: Some(health.clone()),
        ..key.clone()
    };
    let holds = if usage.legal_hold > 0 {
        crate::catalog::compliance::holds_under_key(
            &mut *archive.catalog.conn().await?,
            tenant,
            &key.key_arn,
        )
        .await?
    } else {
        Vec::new()
    };
    let incident = incident_of(&checked, usage, &holds);
    archive.metrics.set_key_health(
        tenant.as_str(),
        key.key_arn.as_str(),
        crate::metrics::KeyHealthGauge {
            state: health.state,
            recordings: usage.recordings,
            incident: incident.is_some(),
        },
    );
    if let (Some(i), true) = (&incident, changed) {
        // A new incident (not the same one found again every check).
        let event = NewEvent::new(
            Actor::system(&format!("key health check on {}", archive.node)),
            AuditAction::KeyIncident,
        )
        .outcome(Outcome::Failed)
        .detail("key_arn", key.key_arn.as_str())
        .detail("state", health.state.to_string())
        .detail("recordings", i.recordings)
        .detail("legal_hold", i.legal_hold)
        .detail("holds", i.holds.join(", "))
        .detail("unreadable_at_ms", i.unreadable_at_ms)
        .detail("message", i.message.as_str());
        if let Err(e) = trail::record_in(archive, log_of(tenant), event).await {
            tracing::error!(error = %e, "key incident not recorded in the audit trail");
        }
    }
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
    } else if health.state != KeyHealthState::Enabled {
        tracing::warn!(tenant = %tenant, key_arn = %key.key_arn, state = %health.state, event = "key_health", "tenant key is not usable");
    } else if changed {
        tracing::info!(tenant = %tenant, key_arn = %key.key_arn, state = %health.state, event = "key_health", "tenant key is healthy");
    }
    if health.state.is_revoked() {
        archive.key_revoked(key.key_arn.as_str()).await;
    }
    Ok(())
}

/// One health pass over every tenant key on this node. Returns how many
/// keys were checked.
pub async fn check_all(archive: &Archive) -> Result<usize> {
    let keys = catalog_keys::to_check(&mut *archive.catalog.conn_bulk().await?).await?;
    let mut usage_by_tenant: BTreeMap<TenantId, BTreeMap<KeyArn, KeyUsage>> = BTreeMap::new();
    for (tenant, key) in &keys {
        if !usage_by_tenant.contains_key(tenant) {
            let usage =
                catalog_keys::usage(&mut *archive.catalog.conn_bulk().await?, tenant).await?;
            usage_by_tenant.insert(tenant.clone(), usage);
        }
        let usage = usage_by_tenant
            .get(tenant)
            .and_then(|u| u.get(&key.key_arn))
            .copied()
            .unwrap_or_default();
        check_key(archive, tenant, key, &usage).await?;
    }
    Ok(keys.len())
}

/// The node's first health pass, shared by its key-health loop and its
/// first metrics scrape: whichever asks first runs it and the other waits,
/// so a fresh node's first scrape already reports every key, and the keys
/// are described once. A failed first pass still counts as the first: the
/// loop's next pass retries, as after any failure.
pub async fn prime(archive: &Archive) {
    archive
        .metrics
        .key_health_primed
        .get_or_init(|| async {
            if let Err(e) = check_all(archive).await {
                tracing::warn!(error = %e, "key health check failed");
            }
        })
        .await;
}

/// One pass of the node's key-health loop: the first is [`prime`].
pub async fn check_pass(archive: &Archive) -> Result<()> {
    if archive.metrics.key_health_primed.initialized() {
        check_all(archive).await?;
    } else {
        prime(archive).await;
    }
    Ok(())
}

/// The tenant's key health: every key with its last check, the incidents and
/// rotation compliance. `refresh` checks every key now first.
pub async fn health(
    archive: &Archive,
    principal: &Principal,
    refresh: bool,
) -> Result<TenantKeyHealth> {
    require_admin(archive, principal).await?;
    let tenant = &principal.tenant;
    if refresh {
        let history = catalog_keys::history(&mut *archive.catalog.conn().await?, tenant).await?;
        for (key, usage) in history {
            if key.status != KeyStatus::Retired {
                check_key(archive, tenant, &key, &usage).await?;
            }
        }
    }
    let mut conn = archive.catalog.conn().await?;
    let keys = catalog_keys::history(&mut conn, tenant).await?;
    let mut incidents = Vec::new();
    for (k, u) in &keys {
        let holds = if u.legal_hold > 0 {
            crate::catalog::compliance::holds_under_key(&mut conn, tenant, &k.key_arn).await?
        } else {
            Vec::new()
        };
        incidents.extend(incident_of(k, u, &holds));
    }
    let policy_days = tenants::rotation_policy_days(&mut conn, tenant).await?;
    let active = keys
        .iter()
        .find(|(k, _)| k.status == KeyStatus::Active)
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
    require_admin(archive, principal).await?;
    if !(1..=3650).contains(&days) {
        return Err(Error::invalid("policy_days", "must be 1..=3650"));
    }
    let mut tx = archive.catalog.begin().await?;
    tenants::set_rotation_policy_days(&mut tx, &principal.tenant, days).await?;
    trail::append(
        archive,
        &mut tx,
        log_of(&principal.tenant),
        trail::by(principal, AuditAction::RotationPolicySet).detail("policy_days", days),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::WrapAlgorithm;

    #[test]
    fn incidents_name_counts_and_dates() {
        let key = TenantKey {
            key_arn: KeyArn::parse("f", "arn:aws:kms:eu-west-1:1:key/a").unwrap(),
            region: "eu-west-1".into(),
            status: KeyStatus::Previous,
            key_spec: "SYMMETRIC_DEFAULT".into(),
            algorithm: WrapAlgorithm::SymmetricDefault,
            public_key: None,
            replicas: BTreeMap::new(),
            registered_at_ms: 0,
            activated_at_ms: 0,
            deactivated_at_ms: None,
            retired_at_ms: None,
            health: Some(KeyHealthRecord {
                state: KeyHealthState::PendingDeletion,
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
        let i = incident_of(&key, &usage, &[]).unwrap();
        assert_eq!(i.unreadable_at_ms, Some(1_900_000_000_000));
        assert!(
            i.message.contains("12 recordings (3 under legal hold)"),
            "{}",
            i.message
        );
        let named = incident_of(&key, &usage, &["case-17".into()]).unwrap();
        assert!(
            named
                .message
                .contains("3 under legal hold: CRITICAL, holds case-17"),
            "{}",
            i.message
        );
        assert!(i.message.contains("pending deletion"), "{}", i.message);
        assert!(i.message.contains("2030-03-17"), "{}", i.message);
        assert!(incident_of(&key, &KeyUsage::default(), &[]).is_none());
    }

    #[test]
    fn a_changed_public_key_is_an_incident_even_with_nothing_protected() {
        let info = |der: &[u8]| {
            Ok(crate::kms::PublicKeyInfo {
                arn: "arn:aws:kms:eu-west-1:1:key/a".into(),
                spki_der: der.to_vec(),
            })
        };
        assert!(pinned_key_health(b"pinned", info(b"pinned")).is_none());
        let h = pinned_key_health(b"pinned", info(b"other")).unwrap();
        assert_eq!(h.state, KeyHealthState::PublicKeyMismatch);
        assert!(h.detail.as_deref().unwrap().contains("not the one pinned"));
        let refused = pinned_key_health(
            b"pinned",
            Err(KmsError::Disabled {
                arn: "arn:aws:kms:eu-west-1:1:key/a".into(),
            }),
        )
        .unwrap();
        assert_eq!(refused.state, KeyHealthState::Disabled);

        let key = TenantKey {
            key_arn: KeyArn::parse("f", "arn:aws:kms:eu-west-1:1:key/a").unwrap(),
            region: "eu-west-1".into(),
            status: KeyStatus::Active,
            key_spec: "RSA_3072".into(),
            algorithm: WrapAlgorithm::RsaesOaepSha256,
            public_key: Some(b"pinned".to_vec()),
            replicas: BTreeMap::new(),
            registered_at_ms: 0,
            activated_at_ms: 0,
            deactivated_at_ms: None,
            retired_at_ms: None,
            health: Some(h),
        };
        let i = incident_of(&key, &KeyUsage::default(), &[]).unwrap();
        assert_eq!(i.unreadable_at_ms, None);
        assert!(i.message.contains("Investigate"), "{}", i.message);
    }
}
