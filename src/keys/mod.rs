//! Tenant key lifecycle (BYOK): registration with a proven round trip and
//! the key history here; health checks and incidents in `health`; the
//! rewrap job that moves wrapped data keys between KMS keys in `rewrap`.
//!
//! Nothing here touches audio objects: rotation and rewrap change only the
//! wrapped data key (and its key ARN) in the catalog.

use std::collections::BTreeMap;

use crate::archive::Archive;
use crate::audit::event::{Action as AuditAction, log_of};
use crate::audit::trail;
use crate::catalog::{KeyUsage, NewTenantKey, TenantKey, keys as catalog_keys};
use crate::crypto::DataKey;
use crate::domain::{KeyArn, Principal};
use crate::error::{Error, Result};
use crate::kms::{EncryptionContext, KeyState, KmsError, PublicWrapKey, WrapAlgorithm};

mod health;
mod rewrap;

pub use health::{
    KeyIncident, RotationCompliance, TenantKeyHealth, check_all, check_pass, health, prime,
    set_rotation_policy,
};
pub use rewrap::{
    DEFAULT_REWRAP_KMS_PER_SEC, JobPass, MAX_REWRAP_KMS_PER_SEC, cancel_rewrap, drain_rewrap_jobs,
    resume_rewrap, rewrap_job, rewrap_jobs, run_rewrap_jobs, start_rewrap, work_on,
};

async fn require_admin(archive: &Archive, principal: &Principal) -> Result<()> {
    crate::access::require(archive, principal, crate::access::Action::ManageKeys).await
}

/// A registration request, validated.
#[derive(Debug, Clone)]
pub struct Registration {
    pub key_arn: KeyArn,
    /// region -> replica ARN
    pub replicas: BTreeMap<String, KeyArn>,
}

impl Registration {
    pub fn parse(key_arn: &str, replicas: BTreeMap<String, String>) -> Result<Self> {
        let key_arn = KeyArn::parse("key_arn", key_arn)?;
        if replicas.len() > 32 {
            return Err(Error::invalid("replica_key_arns", "at most 32 replicas"));
        }
        let mut parsed = BTreeMap::new();
        for (r, arn) in replicas {
            let replica = KeyArn::parse("replica_key_arns", &arn)?;
            if replica.region() != r {
                return Err(Error::invalid(
                    "replica_key_arns",
                    &format!(
                        "the replica for region `{r}` names region `{}`",
                        replica.region()
                    ),
                ));
            }
            if r == key_arn.region() {
                return Err(Error::invalid(
                    "replica_key_arns",
                    "a replica cannot be in the primary key's region",
                ));
            }
            // Multi-Region replicas share the primary's key id.
            if replica.key_id() != key_arn.key_id() {
                return Err(Error::invalid(
                    "replica_key_arns",
                    "a multi-Region replica has the same key id as its primary",
                ));
            }
            parsed.insert(r, replica);
        }
        Ok(Self {
            key_arn,
            replicas: parsed,
        })
    }
}

/// A KMS failure during the registration round trip, naming the operation
/// (the IAM permission) that failed.
fn check_failed(permission: &'static str, source: KmsError) -> Error {
    Error::KeyCheck { permission, source }
}

/// The round trip's last step: KMS must give back exactly the data key.
fn same_key(arn: &KeyArn, back: &DataKey, sent: &DataKey) -> Result<()> {
    aws_lc_rs::constant_time::verify_slices_are_equal(back.expose(), sent.expose()).map_err(|_| {
        check_failed(
            "kms:Decrypt",
            KmsError::InvalidCiphertext {
                arn: arn.to_string(),
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
    require_admin(archive, principal).await?;
    let tenant = &principal.tenant;
    let key_arn = &reg.key_arn;
    let arn = key_arn.as_str();
    // Before any KMS call: a key outside the allowed accounts is never
    // asked for anything.
    archive.check_kms_account(key_arn)?;
    for replica in reg.replicas.values() {
        archive.check_kms_account(replica)?;
    }
    if catalog_keys::held_by_other_tenant(&mut *archive.catalog.conn().await?, tenant, key_arn)
        .await?
    {
        return Err(Error::KeyOwnedByAnotherTenant(key_arn.clone()));
    }
    let desc = archive
        .kms
        .describe_key(arn, tenant.as_str())
        .await
        .map_err(|e| check_failed("kms:DescribeKey", e))?;
    let refused = match &desc.state {
        KeyState::Enabled => None,
        KeyState::Disabled => Some(KmsError::Disabled {
            arn: arn.to_owned(),
        }),
        KeyState::PendingDeletion => Some(KmsError::PendingDeletion {
            arn: arn.to_owned(),
        }),
        KeyState::Other(s) => Some(KmsError::InvalidState {
            arn: arn.to_owned(),
            state: s.clone(),
        }),
    };
    if let Some(e) = refused {
        return Err(check_failed("kms:DescribeKey", e));
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
    same_key(key_arn, &back, &generated.plaintext)?;
    let mut tx = archive.catalog.begin().await?;
    let key = catalog_keys::activate(
        &mut tx,
        tenant,
        &NewTenantKey {
            key_arn: key_arn.clone(),
            region: key_arn.region().to_owned(),
            key_spec: desc.key_spec.clone(),
            public_key,
            replicas: reg.replicas.clone(),
        },
    )
    .await?;
    trail::append(
        archive,
        &mut tx,
        log_of(tenant),
        trail::by(principal, AuditAction::KeyRegistered)
            .detail("key_arn", arn)
            .detail("key_spec", desc.key_spec.as_str())
            .detail(
                "replicas",
                reg.replicas
                    .iter()
                    .map(|(r, a)| (r.clone(), serde_json::Value::from(a.as_str())))
                    .collect::<serde_json::Map<_, _>>(),
            ),
    )
    .await?;
    tx.commit().await?;
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
    require_admin(archive, principal).await?;
    catalog_keys::history(&mut *archive.catalog.conn().await?, &principal.tenant).await
}

/// What one key protects now.
pub async fn usage_of(
    archive: &Archive,
    principal: &Principal,
    key_arn: &KeyArn,
) -> Result<KeyUsage> {
    require_admin(archive, principal).await?;
    let usage = catalog_keys::usage(&mut *archive.catalog.conn().await?, &principal.tenant).await?;
    Ok(usage.get(key_arn).copied().unwrap_or_default())
}

pub async fn retire(archive: &Archive, principal: &Principal, key_arn: &str) -> Result<TenantKey> {
    require_admin(archive, principal).await?;
    let key_arn = KeyArn::parse("key_arn", key_arn)?;
    let mut tx = archive.catalog.begin().await?;
    let key = catalog_keys::retire(&mut tx, &principal.tenant, &key_arn).await?;
    trail::append(
        archive,
        &mut tx,
        log_of(&principal.tenant),
        trail::by(principal, AuditAction::KeyRetired).detail("key_arn", key_arn.as_str()),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(tenant = %principal.tenant, key_arn = %key_arn, event = "key_retired", "tenant key retired");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(Registration::parse("alias/callvault", BTreeMap::new()).is_err());
    }
}
