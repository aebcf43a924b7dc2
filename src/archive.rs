//! The components a node composes: catalog, object store, KMS and key cache.
//! Use cases (`ingest`, `playback`) take an `&Archive`; nothing else is shared.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::catalog::Catalog;
use crate::kms::cache::{KeyCache, KeyCacheConfig};
use crate::kms::local::LocalKeyring;
use crate::kms::{Kms, KmsMetrics, MeteredKms};
use crate::store::ChunkStore;

pub(crate) fn no_replica(key_arn: &str, node: &str) -> crate::error::Error {
    crate::error::Error::FailedPrecondition(format!(
        "KMS key {key_arn} has no multi-Region replica in this node's region {node}; \
         serve it from the key's region or register a replica"
    ))
}

/// Limits applied to every upload.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_recording_bytes: u64,
    /// Sealed chunks being written concurrently per upload. Memory per upload
    /// is about `(2 + max_uploads_in_flight) * chunk_size`.
    pub max_uploads_in_flight: usize,
    /// Chunks read ahead during playback.
    pub read_ahead: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_recording_bytes: 8 << 30,
            max_uploads_in_flight: 4,
            read_ahead: 4,
        }
    }
}

/// How often a node's background work runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// DescribeKey health check of every tenant key.
    pub key_health: Duration,
    /// Poll for running rewrap jobs (admin nodes).
    pub rewrap_poll: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            key_health: Duration::from_secs(300),
            rewrap_poll: Duration::from_secs(2),
        }
    }
}

#[derive(Debug)]
pub struct Archive {
    pub catalog: Catalog,
    pub store: ChunkStore,
    /// Metered KMS client (the node's region).
    pub kms: Arc<dyn Kms>,
    pub keys: KeyCache,
    pub metrics: Arc<KmsMetrics>,
    pub limits: Limits,
    pub schedule: Schedule,
    /// When this node last announced each revoked key, so a burst of failing
    /// plays does not become a burst of NOTIFYs.
    announced: Mutex<HashMap<String, Instant>>,
}

impl Archive {
    pub fn new(
        catalog: Catalog,
        store: ChunkStore,
        kms: Arc<dyn Kms>,
        cache: &KeyCacheConfig,
        limits: Limits,
    ) -> Self {
        let metrics = Arc::new(KmsMetrics::default());
        let kms: Arc<dyn Kms> = Arc::new(MeteredKms::new(kms, metrics.clone()));
        let keys = KeyCache::new(kms.clone(), cache, metrics.clone());
        Self {
            catalog,
            store,
            kms,
            keys,
            metrics,
            limits,
            schedule: Schedule::default(),
            announced: Mutex::new(HashMap::new()),
        }
    }

    /// The ARN this node calls KMS with for `key_arn` of the tenant's key
    /// history: the key itself in its home region, else its multi-Region
    /// replica in this node's region. Without one, the node cannot use the
    /// key (a regional KMS endpoint does not know other regions' keys).
    pub async fn kms_arn(
        &self,
        tenant: &crate::domain::TenantId,
        key_arn: &str,
    ) -> crate::error::Result<String> {
        let node = self.kms.region();
        match crate::kms::arn_region(key_arn) {
            None => return Ok(key_arn.to_owned()),
            Some(home) if home == node => return Ok(key_arn.to_owned()),
            Some(_) => {}
        }
        let key = self.catalog.tenant_key(tenant, key_arn).await?;
        key.as_ref()
            .and_then(|k| k.arn_in(node))
            .map(str::to_owned)
            .ok_or_else(|| no_replica(key_arn, node))
    }

    /// KMS refused `key_arn` (disabled, pending deletion, access denied):
    /// drop this node's cached data keys under it now and tell the other
    /// nodes through the catalog.
    pub async fn key_revoked(&self, key_arn: &str) {
        self.keys.purge_key(key_arn);
        let announce = match self.announced.lock() {
            Ok(mut m) => {
                let now = Instant::now();
                let recent = m
                    .get(key_arn)
                    .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(2));
                if !recent {
                    m.insert(key_arn.to_owned(), now);
                }
                !recent
            }
            Err(_) => true,
        };
        if announce {
            tracing::warn!(key_arn = %key_arn, event = "key_revoked", "KMS key refused; cached data keys purged on every node");
            if let Err(e) = self.catalog.notify_key_revoked(key_arn).await {
                tracing::warn!(key_arn = %key_arn, error = %e, "could not announce the revoked key; other nodes fall back to the cache TTL");
            }
        }
    }

    /// The embedded default over one data directory: SQLite catalog, local
    /// object store and local keyring.
    pub async fn embedded(data_dir: &Path) -> crate::error::Result<(Self, Arc<LocalKeyring>)> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| crate::error::Error::Internal(format!("cannot create data dir: {e}")))?;
        let catalog = Catalog::connect(&format!(
            "sqlite://{}",
            data_dir.join("catalog.db").display()
        ))
        .await?;
        let store = ChunkStore::local(&data_dir.join("objects"))?;
        let ring = Arc::new(LocalKeyring::open(data_dir, "local")?);
        let archive = Self::new(
            catalog,
            store,
            ring.clone(),
            &KeyCacheConfig::default(),
            Limits::default(),
        );
        Ok((archive, ring))
    }

    /// Removes uploads whose writer is gone: objects first, then rows, so a
    /// crash in between leaves a row the next sweep finds again.
    pub async fn sweep_stale_uploads(&self, older_than: Duration) -> crate::error::Result<usize> {
        let stale = self
            .catalog
            .stale_uploads(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX))
            .await?;
        for (tenant, rec) in &stale {
            self.store.delete_recording(tenant, rec).await?;
            self.catalog.abort_upload(tenant, rec).await?;
            tracing::info!(tenant = %tenant, recording = %rec, "swept abandoned upload");
        }
        Ok(stale.len())
    }
}
