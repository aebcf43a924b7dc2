//! Data-subject requests (GDPR Art. 15 and 17): finding every call of one
//! person without the catalog holding anyone's number readable.
//!
//! A recording's participants are sealed under its own metadata key, like
//! its labels (so erasing the recording shreds them). What the catalog
//! searches is `recording_index`: HMAC-SHA256 digests of each normalized
//! participant identifier and each label, under the tenant's **index key**,
//! a random 256-bit key that the tenant's KMS key wraps (created on first
//! use, unwrapped through the node's key cache). A dump of the catalog shows
//! digests that nobody without the tenant's KMS key can test a number
//! against.
//!
//! Ingest computes the digests when its node can unwrap the index key
//! (symmetric KMS keys). A write-only node (RSA key, no KMS Decrypt) cannot;
//! it stores the sealed participants and leaves the recording unindexed, and
//! the indexer on admin nodes opens and indexes it. Searches report how many
//! recordings are not indexed yet.

use std::collections::BTreeMap;

use crate::archive::Archive;
use crate::catalog::{RecordingRow, subjects};
use crate::crypto::{self, CryptoError, DataKey};
use crate::domain::{Participants, Principal, RecordingId, TenantId, normalize_identifier};
use crate::error::{Error, Result};
use crate::kms::{EncryptionContext, PublicWrapKey, WrapAlgorithm};
use crate::playback;

/// The encryption context's `recording` for the tenant's index key (never
/// a recording id, so purging a recording's cached key leaves it alone).
const INDEX_KEY_CONTEXT: &str = "search-index-key";

/// A tenant's index key, unwrapped.
#[derive(Debug)]
pub struct TenantIndex {
    key: DataKey,
}

impl TenantIndex {
    /// The digest of a participant identifier (normalized first).
    pub fn participant(&self, field: &str, identifier: &str) -> Result<[u8; 32]> {
        let n = normalize_identifier(field, identifier)?;
        Ok(crypto::blind_index(
            &self.key,
            "participant",
            &[n.as_bytes()],
        ))
    }

    pub fn label(&self, key: &str, value: &str) -> [u8; 32] {
        crypto::blind_index(&self.key, "label", &[key.as_bytes(), value.as_bytes()])
    }

    /// Every digest a recording is found by.
    pub fn digests(
        &self,
        labels: &BTreeMap<String, String>,
        participants: &Participants,
    ) -> Result<Vec<[u8; 32]>> {
        let mut out: Vec<[u8; 32]> = labels.iter().map(|(k, v)| self.label(k, v)).collect();
        for (role, id) in participants {
            out.push(self.participant(&format!("participants.{role}"), id)?);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

fn context(tenant: &TenantId) -> EncryptionContext {
    EncryptionContext {
        tenant: tenant.to_string(),
        recording: INDEX_KEY_CONTEXT.to_owned(),
    }
}

/// The tenant's index key: created (wrapped by the active KMS key) on first
/// use, then unwrapped through the key cache.
pub async fn tenant_index(archive: &Archive, tenant: &TenantId) -> Result<TenantIndex> {
    let mut conn = archive.catalog.conn_bulk().await?;
    let row = match subjects::index_key(&mut conn, tenant).await? {
        Some(r) => r,
        None => {
            let key = crate::catalog::keys::active(&mut conn, tenant).await?;
            let ctx = context(tenant);
            let (generated, region) = match key.algorithm {
                WrapAlgorithm::SymmetricDefault => {
                    let node = archive.kms.region();
                    let call_arn = key
                        .arn_in(node)
                        .ok_or_else(|| crate::archive::no_replica(&key.key_arn, node))?;
                    let g = archive
                        .kms
                        .generate_data_key(call_arn.as_str(), &ctx)
                        .await?;
                    (g, call_arn.region().to_owned())
                }
                WrapAlgorithm::RsaesOaepSha256 => {
                    let spki = key.public_key.as_deref().ok_or_else(|| {
                        Error::CatalogCorrupt("asymmetric key without its pinned public key".into())
                    })?;
                    let wrap = PublicWrapKey::from_spki(key.key_arn.as_str(), spki)?;
                    (wrap.generate_data_key()?, key.region.clone())
                }
            };
            subjects::insert_index_key(
                &mut conn,
                tenant,
                &subjects::IndexKeyRow {
                    key_arn: key.key_arn.clone(),
                    kms_region: region,
                    algorithm: key.algorithm,
                    wrapped_key: generated.wrapped.clone(),
                },
            )
            .await?;
            // Another node may have stored its key first: use the stored one.
            let stored = subjects::index_key(&mut conn, tenant)
                .await?
                .ok_or_else(|| Error::CatalogCorrupt("index key not stored".into()))?;
            if stored.wrapped_key == generated.wrapped {
                // Ours: it needs no Decrypt to be used.
                let arn = archive.kms_arn(tenant, &stored.key_arn).await?;
                archive
                    .keys
                    .prime(
                        arn.as_str(),
                        stored.algorithm,
                        &stored.wrapped_key,
                        &ctx,
                        generated.plaintext,
                    )
                    .await;
            }
            stored
        }
    };
    drop(conn);
    let arn = archive.kms_arn(tenant, &row.key_arn).await?;
    let cached = archive
        .keys
        .unwrap(
            arn.as_str(),
            row.algorithm,
            &row.wrapped_key,
            &context(tenant),
        )
        .await?;
    Ok(TenantIndex {
        key: DataKey::from_slice(cached.key.expose())?,
    })
}

/// Moves the tenant's index key from `source` to `dest` with KMS
/// ReEncrypt, when it is wrapped under `source` (the rewrap job's last
/// step, so that the old key can be retired).
pub async fn rewrap_index_key(
    archive: &Archive,
    tenant: &TenantId,
    source: &crate::domain::KeyArn,
    source_call: &crate::domain::KeyArn,
    dest: &crate::catalog::TenantKey,
    dest_call: &crate::domain::KeyArn,
) -> Result<()> {
    let mut conn = archive.catalog.conn_bulk().await?;
    let Some(row) = subjects::index_key(&mut conn, tenant).await? else {
        return Ok(());
    };
    if &row.key_arn != source {
        return Ok(());
    }
    let (arn, wrapped) = archive
        .kms
        .re_encrypt(
            (source_call.as_str(), row.algorithm),
            &row.wrapped_key,
            &context(tenant),
            (dest_call.as_str(), dest.algorithm),
        )
        .await?;
    if arn != dest_call.as_str() {
        return Err(Error::KmsContract(format!(
            "ReEncrypt wrapped the index key under {arn}, not {dest_call}"
        )));
    }
    subjects::rewrap_index_key(
        &mut conn,
        tenant,
        &row.wrapped_key,
        &subjects::IndexKeyRow {
            key_arn: dest.key_arn.clone(),
            kms_region: dest_call.region().to_owned(),
            algorithm: dest.algorithm,
            wrapped_key: wrapped,
        },
    )
    .await?;
    Ok(())
}

/// Refuses while any committed recording of the tenant is not indexed: a
/// selection through the index would silently miss it.
pub async fn require_complete_index(archive: &Archive, tenant: &TenantId) -> Result<()> {
    let pending = subjects::unindexed_count(&mut *archive.catalog.conn().await?, tenant).await?;
    if pending > 0 {
        return Err(Error::IndexIncomplete(pending));
    }
    Ok(())
}

/// The sealed form of a recording's participants: `{"participants": {…}}`
/// (an object, so that it can never be read as the labels' map).
pub fn participants_json(participants: &Participants) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "participants": participants })).unwrap_or_default()
}

/// Opens a recording's sealed participants.
pub fn open_participants(
    cipher: &crypto::RecordingCipher,
    id: RecordingId,
    sealed: &[u8],
) -> Result<Participants> {
    #[derive(serde::Deserialize)]
    struct Sealed {
        participants: Participants,
    }
    let json = cipher
        .open_metadata(sealed)
        .map_err(|e| Error::integrity(id, e))?;
    serde_json::from_slice::<Sealed>(&json)
        .map(|s| s.participants)
        .map_err(|_| Error::integrity(id, CryptoError::MetadataAuthentication))
}

fn open_labels(
    cipher: &crypto::RecordingCipher,
    id: RecordingId,
    sealed: &[u8],
) -> Result<BTreeMap<String, String>> {
    let json = cipher
        .open_metadata(sealed)
        .map_err(|e| Error::integrity(id, e))?;
    serde_json::from_slice(&json)
        .map_err(|_| Error::integrity(id, CryptoError::MetadataAuthentication))
}

/// The indexer (admin nodes): indexes committed recordings that are not
/// yet (written by a write-only node, or before the index existed).
/// Returns how many it indexed; a recording whose key KMS refuses now is
/// left for a later pass.
pub async fn index_pending(archive: &Archive) -> Result<u64> {
    let rows = subjects::unindexed(&mut *archive.catalog.conn_bulk().await?, 200).await?;
    let mut done = 0;
    for row in rows {
        match index_one(archive, &row).await {
            Ok(()) => done += 1,
            Err(e) => {
                tracing::warn!(tenant = %row.tenant, recording = %row.id, error = %e, "recording not indexed yet; retried next pass");
            }
        }
    }
    if done > 0 {
        tracing::info!(indexed = done, event = "index_pass", "recordings indexed");
    }
    Ok(done)
}

async fn index_one(archive: &Archive, row: &RecordingRow) -> Result<()> {
    let digests = if row.labels_sealed.is_none() && row.participants_sealed.is_none() {
        Vec::new()
    } else {
        let cipher = playback::cipher_for(archive, row).await?;
        let labels = match &row.labels_sealed {
            Some(s) => open_labels(&cipher, row.id, s)?,
            None => BTreeMap::new(),
        };
        let participants = match &row.participants_sealed {
            Some(s) => open_participants(&cipher, row.id, s)?,
            None => Participants::new(),
        };
        tenant_index(archive, &row.tenant)
            .await?
            .digests(&labels, &participants)?
    };
    subjects::add_digests(
        &mut *archive.catalog.conn_bulk().await?,
        &row.tenant,
        &row.id,
        &digests,
    )
    .await
}

/// Committed recordings of the principal's tenant with `participant` (in any
/// role), in id order after `after`, and how many of the tenant's
/// recordings are not indexed yet. The caller checks the role and audits.
pub async fn with_participant(
    archive: &Archive,
    principal: &Principal,
    participant: &str,
    after: Option<&RecordingId>,
    limit: u32,
) -> Result<(Vec<RecordingRow>, u64)> {
    let digest = tenant_index(archive, &principal.tenant)
        .await?
        .participant("participant", participant)?;
    let mut conn = archive.catalog.conn().await?;
    let rows = subjects::with_digest(&mut conn, &principal.tenant, &digest, after, limit).await?;
    let pending = subjects::unindexed_count(&mut conn, &principal.tenant).await?;
    Ok((rows, pending))
}

/// Every recording of `participant` up to `max` (refused beyond: the caller
/// names a smaller set).
pub async fn all_with_participant(
    archive: &Archive,
    principal: &Principal,
    participant: &str,
    max: usize,
) -> Result<Vec<RecordingRow>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (page, pending) =
            with_participant(archive, principal, participant, after.as_ref(), 500).await?;
        // "Every call of this person" must not silently leave some out.
        if pending > 0 {
            return Err(Error::IndexIncomplete(pending));
        }
        let full = page.len() == 500;
        after = page.last().map(|r| r.id);
        out.extend(page);
        if out.len() > max {
            return Err(Error::invalid(
                "participant",
                &format!(
                    "more than {max} recordings have this participant; erase or export them in smaller sets"
                ),
            ));
        }
        if !full {
            return Ok(out);
        }
    }
}
