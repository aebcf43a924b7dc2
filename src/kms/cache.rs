//! The regional cache of unwrapped data keys.
//!
//! * Keyed by SHA-256(algorithm, key ARN, wrapped key, encryption context), so
//!   a wrapped key is only ever answered with the key KMS unwrapped for exactly
//!   that input.
//! * Absolute TTL (default 5 min): the longest a revoked KMS key keeps working
//!   on a node that got no revocation signal. Idle TTL and a size bound on top.
//! * Single flight: concurrent misses for one entry share one KMS call.
//! * Access denied is remembered briefly (negative cache) so a revoked tenant
//!   cannot turn playback retries into a KMS request storm.
//! * Evicted keys are zeroized: `DataKey` zeroizes on drop and the cache holds
//!   the only long-lived reference.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::{EncryptionContext, Kms, KmsError, WrapAlgorithm};
use crate::crypto::DataKey;
use crate::metrics::Metrics;

/// Cache tuning. `ttl` is the documented revocation bound.
#[derive(Debug, Clone)]
pub struct KeyCacheConfig {
    pub ttl: Duration,
    pub idle: Duration,
    pub capacity: u64,
    pub negative_ttl: Duration,
}

impl Default for KeyCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            idle: Duration::from_secs(60),
            capacity: 10_000,
            negative_ttl: Duration::from_secs(5),
        }
    }
}

/// An unwrapped data key and the ARN that unwrapped it (for purging).
#[derive(Debug)]
pub struct CachedKey {
    pub key_arn: String,
    pub key: DataKey,
    /// The recording it belongs to (for purging one recording's key).
    pub context: EncryptionContext,
}

type CacheId = [u8; 32];

#[derive(Debug)]
pub struct KeyCache {
    kms: Arc<dyn Kms>,
    entries: Cache<CacheId, Arc<CachedKey>>,
    denied: Cache<CacheId, KmsError>,
    metrics: Arc<Metrics>,
    ttl: Duration,
}

fn cache_id(
    key_arn: &str,
    algorithm: WrapAlgorithm,
    wrapped: &[u8],
    ctx: &EncryptionContext,
) -> CacheId {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [
        algorithm.as_str().as_bytes(),
        key_arn.as_bytes(),
        wrapped,
        &ctx.canonical_bytes(),
    ] {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

impl KeyCache {
    pub fn new(kms: Arc<dyn Kms>, config: &KeyCacheConfig, metrics: Arc<Metrics>) -> Self {
        let entries = Cache::builder()
            .max_capacity(config.capacity)
            .time_to_live(config.ttl)
            .time_to_idle(config.idle)
            .support_invalidation_closures()
            .build();
        let denied = Cache::builder()
            .max_capacity(config.capacity)
            .time_to_live(config.negative_ttl)
            .build();
        Self {
            kms,
            entries,
            denied,
            metrics,
            ttl: config.ttl,
        }
    }

    /// The absolute TTL: the oldest answer of KMS a cached key stands for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Returns the unwrapped data key, calling KMS at most once for any number
    /// of concurrent callers asking for the same entry.
    pub async fn unwrap(
        &self,
        key_arn: &str,
        algorithm: WrapAlgorithm,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<Arc<CachedKey>, KmsError> {
        let id = cache_id(key_arn, algorithm, wrapped, ctx);
        if let Some(err) = self.denied.get(&id).await {
            return Err(err);
        }
        let kms = self.kms.clone();
        let context = ctx.clone();
        let entry = self
            .entries
            .entry(id)
            .or_try_insert_with(async move {
                let key = kms.decrypt(key_arn, algorithm, wrapped, ctx).await?;
                Ok::<_, KmsError>(Arc::new(CachedKey {
                    key_arn: key_arn.to_owned(),
                    key,
                    context,
                }))
            })
            .await;
        match entry {
            Ok(e) => {
                self.metrics.key_cache(!e.is_fresh());
                Ok(e.into_value())
            }
            Err(err) => {
                self.metrics.key_cache(false);
                let err = (*err).clone();
                if matches!(err, KmsError::AccessDenied { .. }) {
                    self.denied.insert(id, err.clone()).await;
                }
                if matches!(
                    err,
                    KmsError::Disabled { .. }
                        | KmsError::PendingDeletion { .. }
                        | KmsError::AccessDenied { .. }
                ) {
                    self.purge_key(key_arn);
                }
                Err(err)
            }
        }
    }

    /// Caches a data key this node generated itself (it holds the plaintext
    /// already), so that its first use costs no KMS Decrypt.
    pub async fn prime(
        &self,
        key_arn: &str,
        algorithm: WrapAlgorithm,
        wrapped: &[u8],
        ctx: &EncryptionContext,
        key: DataKey,
    ) {
        let id = cache_id(key_arn, algorithm, wrapped, ctx);
        self.entries
            .insert(
                id,
                Arc::new(CachedKey {
                    key_arn: key_arn.to_owned(),
                    key,
                    context: ctx.clone(),
                }),
            )
            .await;
    }

    /// Drops the cached data key of one recording (it was erased), whichever
    /// regional ARN unwrapped it.
    pub fn purge_recording(&self, tenant: &str, recording: &str) {
        let (tenant, recording) = (tenant.to_owned(), recording.to_owned());
        if self
            .entries
            .invalidate_entries_if(move |_, v| {
                v.context.tenant == tenant && v.context.recording == recording
            })
            .is_err()
        {
            self.entries.invalidate_all();
        }
    }

    /// Drops every cached data key unwrapped by `key_arn` or by one of its
    /// multi-Region relatives (same key id): revocation errs on the side of
    /// asking KMS again.
    pub fn purge_key(&self, key_arn: &str) {
        let id = super::arn_key_id(key_arn).to_owned();
        if self
            .entries
            .invalidate_entries_if(move |_, v| super::arn_key_id(&v.key_arn) == id)
            .is_err()
        {
            // Invalidation closures are enabled at build time; should that ever
            // fail, dropping everything is the safe direction.
            self.entries.invalidate_all();
        }
    }

    pub fn purge_all(&self) {
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::local::LocalKeyring;

    const SYM: WrapAlgorithm = WrapAlgorithm::SymmetricDefault;

    #[tokio::test]
    async fn single_flight_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(LocalKeyring::open(dir.path(), "local").unwrap());
        let arn = ring.create_key().unwrap();
        let metrics = Arc::new(Metrics::default());
        let metered: Arc<dyn Kms> =
            Arc::new(crate::kms::MeteredKms::new(ring.clone(), metrics.clone()));
        let ctx = EncryptionContext {
            tenant: "t".into(),
            recording: "r".into(),
        };
        let generated = metered.generate_data_key(&arn, &ctx).await.unwrap();
        let cache = Arc::new(KeyCache::new(
            metered.clone(),
            &KeyCacheConfig::default(),
            metrics.clone(),
        ));

        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (cache, arn, wrapped, ctx) = (
                    cache.clone(),
                    arn.clone(),
                    generated.wrapped.clone(),
                    ctx.clone(),
                );
                tokio::spawn(async move { cache.unwrap(&arn, SYM, &wrapped, &ctx).await })
            })
            .collect();
        for t in tasks {
            let k = t.await.unwrap().unwrap();
            assert_eq!(k.key.expose(), generated.plaintext.expose());
        }
        assert_eq!(
            metrics.calls("Decrypt"),
            1,
            "32 concurrent cold unwraps share one KMS call"
        );

        ring.set_enabled(&arn, false).unwrap();
        // Still cached: revocation without a signal waits for the TTL...
        assert!(
            cache
                .unwrap(&arn, SYM, &generated.wrapped, &ctx)
                .await
                .is_ok()
        );
        // ...a purge makes the next unwrap ask KMS, which refuses.
        cache.purge_key(&arn);
        let err = cache
            .unwrap(&arn, SYM, &generated.wrapped, &ctx)
            .await
            .unwrap_err();
        assert_eq!(err, KmsError::Disabled { arn: arn.clone() });
    }

    #[tokio::test]
    async fn absolute_ttl_bounds_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(LocalKeyring::open(dir.path(), "local").unwrap());
        let arn = ring.create_key().unwrap();
        let ctx = EncryptionContext {
            tenant: "t".into(),
            recording: "r".into(),
        };
        let g = ring.generate_data_key(&arn, &ctx).await.unwrap();
        let config = KeyCacheConfig {
            ttl: Duration::from_millis(300),
            ..Default::default()
        };
        let cache = KeyCache::new(ring.clone(), &config, Arc::new(Metrics::default()));
        cache.unwrap(&arn, SYM, &g.wrapped, &ctx).await.unwrap();
        ring.set_enabled(&arn, false).unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(matches!(
            cache.unwrap(&arn, SYM, &g.wrapped, &ctx).await,
            Err(KmsError::Disabled { .. })
        ));
    }
}
