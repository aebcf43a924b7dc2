//! The components a node composes: catalog, object store, KMS and key cache.
//! Use cases (`ingest`, `playback`) take an `&Archive`; nothing else is shared.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::catalog::{AbortOutcome, Catalog, keys, recordings};
use crate::domain::{KeyArn, RecordingId, TenantId, now_ms};
use crate::error::{Error, Result};
use crate::kms::cache::{KeyCache, KeyCacheConfig};
use crate::kms::local::LocalKeyring;
use crate::kms::{Kms, MeteredKms};
use crate::metrics::Metrics;
use crate::store::ChunkStore;

pub(crate) fn no_replica(key_arn: &KeyArn, node: &str) -> Error {
    Error::NoReplicaInRegion {
        arn: key_arn.clone(),
        region: node.to_owned(),
    }
}

/// What one node allows. Memory per upload in flight is one chunk being
/// filled plus the audio analyzer's bounded buffer; chunks being sealed and
/// written are bounded node-wide by `max_chunk_writes` (each holds its
/// chunk's buffer, sealed in place, while in flight). See ARCHITECTURE.md
/// for the worst case.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_recording_bytes: u64,
    /// Chunks of one upload being sealed and written concurrently.
    pub max_uploads_in_flight: usize,
    /// Chunks being sealed and written concurrently on the whole node.
    pub max_chunk_writes: usize,
    /// Uploads one tenant may have in flight on this node; the next one is
    /// refused with RESOURCE_EXHAUSTED.
    pub max_uploads_per_tenant: usize,
    /// How long an upload's catalog lease lasts. The node renews it every
    /// third of this while the client is connected; an upload whose lease
    /// ran out (its node crashed) is removed by the sweeper.
    pub upload_lease: Duration,
    /// An upload with no message at all for this long is abandoned.
    pub upload_idle_timeout: Duration,
    /// Chunks read ahead during playback.
    pub read_ahead: usize,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// The longest a unary RPC may run (streaming RPCs are bounded by their
    /// idle timeouts instead).
    pub request_timeout: Duration,
    /// Open connections to the HTTP listener at most; one more is closed
    /// as it is accepted.
    pub http_connections: usize,
    /// How long the HTTP listener waits for a request's head.
    pub http_header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_recording_bytes: 8 << 30,
            max_uploads_in_flight: 4,
            max_chunk_writes: 64,
            max_uploads_per_tenant: 1000,
            upload_lease: Duration::from_secs(300),
            upload_idle_timeout: Duration::from_secs(1800),
            read_ahead: 4,
            max_concurrent_streams: 1024,
            request_timeout: Duration::from_secs(60),
            http_connections: 1024,
            http_header_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// How often the sweeper looks for expired uploads: often enough that
    /// an abandoned upload goes within about 1.5 leases.
    pub fn sweep_interval(&self) -> Duration {
        (self.upload_lease / 2).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }
}

/// Uploads in flight on this node, per tenant.
#[derive(Debug, Default)]
pub struct UploadSlots {
    in_flight: Mutex<HashMap<TenantId, usize>>,
}

/// One tenant's upload slot, released on drop.
#[derive(Debug)]
pub struct UploadSlot<'a> {
    slots: &'a UploadSlots,
    tenant: TenantId,
}

impl UploadSlots {
    /// Takes a slot for `tenant`, or says why not.
    pub fn acquire(&self, tenant: &TenantId, limit: usize) -> Result<UploadSlot<'_>> {
        let mut m = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(tenant.clone()).or_insert(0);
        if *n >= limit {
            return Err(Error::TenantUploadLimit { limit });
        }
        *n += 1;
        Ok(UploadSlot {
            slots: self,
            tenant: tenant.clone(),
        })
    }

    pub fn in_flight(&self, tenant: &TenantId) -> usize {
        let m = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        m.get(tenant).copied().unwrap_or(0)
    }
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        let mut m = self
            .slots
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.tenant);
            }
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
    /// Sign an audit checkpoint once a log grew by this many events…
    pub checkpoint_every: u64,
    /// …or once its last checkpoint is this old and it grew at all.
    pub checkpoint_max_age: Duration,
    /// The expiry job's pass (admin nodes): erases recordings whose
    /// retention ended, completes pending deletion certificates.
    pub retention_check: Duration,
    /// The waveform peaks job's pass (admin nodes).
    pub peaks_poll: Duration,
    /// Also run the peaks job as soon as an ingest commits on this node.
    pub peaks_on_commit: bool,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            key_health: Duration::from_secs(300),
            rewrap_poll: Duration::from_secs(2),
            checkpoint_every: 1000,
            checkpoint_max_age: Duration::from_secs(60),
            retention_check: Duration::from_secs(300),
            peaks_poll: Duration::from_secs(5),
            peaks_on_commit: true,
        }
    }
}

/// Erasure settings of the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureSettings {
    /// The expiry job erases at most this many recordings per second per
    /// node.
    pub max_per_sec: u32,
    /// How long catalog backups are kept (`backup prune`): deletion
    /// certificates say until when a backup may still hold an erased
    /// recording's wrapped data key.
    pub backup_retention_days: u32,
}

impl Default for ErasureSettings {
    fn default() -> Self {
        Self {
            max_per_sec: 50,
            backup_retention_days: crate::backup::DEFAULT_RETENTION_DAYS,
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
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub schedule: Schedule,
    pub erasure: ErasureSettings,
    /// Uploads in flight per tenant (`limits.max_uploads_per_tenant`).
    pub uploads: UploadSlots,
    /// Node-wide bound on chunks being sealed and written.
    pub chunk_writes: Arc<Semaphore>,
    /// Recently authenticated tokens.
    pub tokens: crate::access::TokenCache,
    /// Revoked keys and tokens, announced to this node's open streams.
    pub revocations: crate::revocation::Revocations,
    /// The deployment's audit key: signs every audit event and checkpoint.
    pub audit_key: Arc<crate::audit::note::SignerKey>,
    /// Events recorded outside a change's transaction, committed in groups.
    pub audit_commits: Arc<crate::audit::trail::GroupCommit>,
    /// The keys playback URLs are signed and checked with (by default one
    /// derived from the audit key).
    pub url_keys: Arc<crate::playback::urls::UrlKeys>,
    /// Open listening sessions of signed URLs, audited coalesced.
    pub listening: Arc<crate::playback::listening::Listening>,
    /// Recordings whose peaks this node failed to compute, and when to try
    /// again (a key KMS refuses must not stall the peaks job's queue).
    pub peaks_retry: Mutex<HashMap<RecordingId, Instant>>,
    /// Wakes this node's peaks job when an ingest commits here, so a new
    /// recording's waveform and rendition do not wait for the next poll.
    pub peaks_wake: tokio::sync::Notify,
    /// Where browsers reach this deployment's HTTP listener
    /// (`https://host:port`): issued URLs are absolute under it.
    pub playback_url_base: Option<String>,
    /// This node's name in audit events (default: the host name).
    pub node: String,
    /// AWS accounts whose KMS keys tenants may register (empty: any).
    pub allowed_kms_accounts: crate::domain::AllowedAccounts,
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
        audit_key: Arc<crate::audit::note::SignerKey>,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let kms: Arc<dyn Kms> = Arc::new(MeteredKms::new(kms, metrics.clone()));
        let keys = KeyCache::new(kms.clone(), cache, metrics.clone());
        let chunk_writes = Arc::new(Semaphore::new(limits.max_chunk_writes.max(1)));
        Self {
            catalog,
            store,
            kms,
            keys,
            metrics,
            limits,
            schedule: Schedule::default(),
            erasure: ErasureSettings::default(),
            uploads: UploadSlots::default(),
            chunk_writes,
            announced: Mutex::new(HashMap::new()),
            tokens: crate::access::TokenCache::default(),
            revocations: crate::revocation::Revocations::default(),
            url_keys: Arc::new(crate::playback::urls::UrlKeys::derived(&audit_key)),
            listening: Arc::new(crate::playback::listening::Listening::default()),
            playback_url_base: None,
            peaks_retry: Mutex::new(HashMap::new()),
            peaks_wake: tokio::sync::Notify::new(),
            audit_key,
            audit_commits: Arc::default(),
            node: crate::audit::trail::host_name(),
            allowed_kms_accounts: crate::domain::AllowedAccounts::default(),
        }
    }

    /// Refuses a key outside the deployment's allowed AWS accounts.
    pub fn check_kms_account(&self, arn: &KeyArn) -> Result<()> {
        if self.allowed_kms_accounts.permits(arn) {
            return Ok(());
        }
        Err(Error::KmsAccountNotAllowed {
            arn: arn.clone(),
            allowed: self.allowed_kms_accounts.describe(),
        })
    }

    /// The ARN this node calls KMS with for `key_arn` of the tenant's key
    /// history: the key itself in its home region, else its multi-Region
    /// replica in this node's region. Without one, the node cannot use the
    /// key (a regional KMS endpoint does not know other regions' keys).
    pub async fn kms_arn(&self, tenant: &TenantId, key_arn: &KeyArn) -> Result<KeyArn> {
        let node = self.kms.region();
        if key_arn.region() == node {
            return Ok(key_arn.clone());
        }
        let key = keys::get(&mut *self.catalog.conn().await?, tenant, key_arn).await?;
        key.as_ref()
            .and_then(|k| k.arn_in(node))
            .cloned()
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
            self.revocations
                .announce(crate::revocation::Revoked::Key(key_arn.to_owned()));
            tracing::warn!(key_arn = %key_arn, event = "key_revoked", "KMS key refused; cached data keys purged on every node");
            if let Err(e) = self.catalog.notify_key_revoked(key_arn).await {
                tracing::warn!(key_arn = %key_arn, error = %e, "could not announce the revoked key; other nodes fall back to the cache TTL");
            }
        }
    }

    /// The embedded default over one data directory: SQLite catalog, local
    /// object store and local keyring.
    pub async fn embedded(data_dir: &Path) -> Result<(Self, Arc<LocalKeyring>)> {
        crate::store::create_private_dir_all(data_dir).map_err(|source| Error::Io {
            what: "cannot create the data directory",
            source,
        })?;
        let catalog = Catalog::connect(&format!(
            "sqlite://{}",
            data_dir.join("catalog.db").display()
        ))
        .await?;
        let store = ChunkStore::local(&data_dir.join("objects"))?;
        let ring = Arc::new(LocalKeyring::open(data_dir, "local")?);
        let audit_key = Arc::new(ring.audit_signer(crate::audit::trail::DEFAULT_KEY_NAME)?);
        let archive = Self::new(
            catalog,
            store,
            ring.clone(),
            &KeyCacheConfig::default(),
            Limits::default(),
            audit_key,
        );
        Ok((archive, ring))
    }

    /// Removes uploads whose lease ran out (their node is gone), then
    /// deletes the objects of every queued deletion. Returns how many
    /// uploads were removed.
    pub async fn sweep_expired_uploads(&self) -> Result<usize> {
        let now = now_ms();
        let expired =
            recordings::expired_uploads(&mut *self.catalog.conn_bulk().await?, now, 1000).await?;
        let mut removed = 0;
        for (tenant, rec) in &expired {
            let mut tx = self.catalog.begin_bulk().await?;
            let outcome =
                recordings::abort_upload(&mut tx, tenant, rec, "lease expired", Some(now)).await?;
            tx.commit().await?;
            if outcome == AbortOutcome::Removed {
                removed += 1;
                tracing::info!(tenant = %tenant, recording = %rec, "swept abandoned upload");
            }
        }
        self.delete_queued_objects().await?;
        Ok(removed)
    }

    /// Deletes the objects of recordings the catalog queued for deletion
    /// (never a committed recording's: the queue lists only recordings the
    /// catalog no longer holds).
    pub async fn delete_queued_objects(&self) -> Result<usize> {
        let queued =
            recordings::pending_object_deletions(&mut *self.catalog.conn_bulk().await?, 1000)
                .await?;
        for (tenant, rec) in &queued {
            self.delete_objects(tenant, rec).await?;
        }
        Ok(queued.len())
    }

    /// Deletes one queued recording's objects and clears its queue entry.
    pub async fn delete_objects(&self, tenant: &TenantId, rec: &RecordingId) -> Result<()> {
        self.store.delete_recording(tenant, rec).await?;
        recordings::object_deletion_done(&mut *self.catalog.conn_bulk().await?, tenant, rec).await
    }
}
