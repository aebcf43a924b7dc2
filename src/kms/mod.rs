//! Key management: the `Kms` contract, its two backends (AWS KMS and the local
//! keyring), the metering decorator and the regional key cache.
//!
//! # The contract
//!
//! Every backend implements [`Kms`] with the semantics of AWS KMS:
//!
//! * `generate_data_key` returns a fresh 256-bit data key, in plaintext and
//!   wrapped under `key_id`, and the **exact key ARN** that wrapped it (never an
//!   alias). The encryption context is bound to the wrapped key.
//! * `decrypt` unwraps only with the pinned `key_arn` and the same encryption
//!   context; anything else is [`KmsError::InvalidCiphertext`].
//! * A disabled key fails with [`KmsError::Disabled`], a key pending deletion with
//!   [`KmsError::PendingDeletion`]; both are checked before any cryptography.
//! * `describe_key` reports the key's state without using it.
//!
//! `tests/api/kms_contract.rs` runs one suite against every backend.

pub mod aws;
pub mod cache;
pub mod local;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::crypto::DataKey;

/// `{tenant, recording}`: sent on every KMS call so the tenant's own audit log
/// (CloudTrail) names the recording each operation served.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncryptionContext {
    pub tenant: String,
    pub recording: String,
}

impl EncryptionContext {
    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            ("tenant".to_owned(), self.tenant.clone()),
            ("recording".to_owned(), self.recording.clone()),
        ])
    }

    /// Canonical, unambiguous bytes (sorted keys, length-prefixed), used for
    /// AAD and cache keys.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let sorted: BTreeMap<&str, &str> = [
            ("recording", self.recording.as_str()),
            ("tenant", self.tenant.as_str()),
        ]
        .into();
        let mut out = Vec::new();
        for (k, v) in sorted {
            for part in [k, v] {
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::json!({"recording": self.recording, "tenant": self.tenant}).to_string()
    }
}

#[derive(Debug)]
pub struct GeneratedDataKey {
    pub plaintext: DataKey,
    pub wrapped: Vec<u8>,
    /// The exact ARN of the key that wrapped `wrapped`.
    pub key_arn: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    Other(String),
}

impl KeyState {
    pub fn as_str(&self) -> &str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeyDescription {
    pub arn: String,
    pub state: KeyState,
    /// Unix ms, for keys pending deletion.
    pub deletion_date_ms: Option<i64>,
}

/// Outcomes of a KMS call that callers act on. Messages never carry key
/// material or ciphertext.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KmsError {
    #[error("KMS key {arn} is disabled")]
    Disabled { arn: String },
    #[error("KMS key {arn} is pending deletion")]
    PendingDeletion { arn: String },
    #[error("KMS key {arn} is in state {state}")]
    InvalidState { arn: String, state: String },
    #[error("access to KMS key {arn} was denied")]
    AccessDenied { arn: String },
    #[error("KMS key {arn} was not found")]
    NotFound { arn: String },
    #[error("the wrapped data key does not match KMS key {arn} and its encryption context")]
    InvalidCiphertext { arn: String },
    #[error("KMS throttled the request after retries")]
    Throttled,
    #[error("KMS is unavailable: {0}")]
    Unavailable(String),
    #[error("KMS error: {0}")]
    Other(String),
}

/// The KMS operations callvault needs. Object-safe so backends are chosen at
/// run time from configuration.
#[async_trait]
pub trait Kms: Send + Sync + std::fmt::Debug {
    /// The region this client talks to (the node's own region).
    fn region(&self) -> &str;

    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsError>;

    async fn decrypt(
        &self,
        key_arn: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError>;

    /// Moves a wrapped key from `source_arn` to `destination_key_id` inside KMS;
    /// the plaintext never leaves it. Returns (destination ARN, new wrapped key).
    async fn re_encrypt(
        &self,
        source_arn: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
        destination_key_id: &str,
    ) -> Result<(String, Vec<u8>), KmsError>;

    async fn describe_key(&self, key_id: &str) -> Result<KeyDescription, KmsError>;
}

#[derive(Debug, Default, Clone, Copy)]
struct LatencyStats {
    count: u64,
    errors: u64,
    total_us: u64,
    max_us: u64,
}

/// KMS and key-cache metrics, rendered in Prometheus text format.
#[derive(Debug, Default)]
pub struct KmsMetrics {
    /// (operation, region) -> latency
    latency: Mutex<BTreeMap<(&'static str, String), LatencyStats>>,
    /// (tenant, operation) -> calls, for per-tenant KMS cost.
    per_tenant: Mutex<BTreeMap<(String, &'static str), u64>>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
}

impl KmsMetrics {
    fn record(
        &self,
        op: &'static str,
        region: &str,
        tenant: Option<&str>,
        took: Duration,
        ok: bool,
    ) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // A std mutex is right here: the critical section is a map update with
        // no await inside.
        if let Ok(mut m) = self.latency.lock() {
            let s = m.entry((op, region.to_owned())).or_default();
            s.count += 1;
            s.errors += u64::from(!ok);
            s.total_us += us;
            s.max_us = s.max_us.max(us);
        }
        if let (Some(t), Ok(mut m)) = (tenant, self.per_tenant.lock()) {
            *m.entry((t.to_owned(), op)).or_default() += 1;
        }
    }

    /// Total KMS calls of one operation, all regions.
    pub fn calls(&self, op: &str) -> u64 {
        self.latency
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((o, _), _)| *o == op)
                    .map(|(_, s)| s.count)
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn total_calls(&self) -> u64 {
        self.latency
            .lock()
            .map(|m| m.values().map(|s| s.count).sum())
            .unwrap_or(0)
    }

    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE callvault_kms_requests_total counter");
        let _ = writeln!(out, "# TYPE callvault_kms_errors_total counter");
        let _ = writeln!(out, "# TYPE callvault_kms_latency_seconds_sum counter");
        let _ = writeln!(out, "# TYPE callvault_kms_latency_seconds_max gauge");
        if let Ok(m) = self.latency.lock() {
            for ((op, region), s) in m.iter() {
                let l = format!("operation=\"{op}\",region=\"{region}\"");
                let _ = writeln!(out, "callvault_kms_requests_total{{{l}}} {}", s.count);
                let _ = writeln!(out, "callvault_kms_errors_total{{{l}}} {}", s.errors);
                let _ = writeln!(
                    out,
                    "callvault_kms_latency_seconds_sum{{{l}}} {}",
                    s.total_us as f64 / 1e6
                );
                let _ = writeln!(
                    out,
                    "callvault_kms_latency_seconds_max{{{l}}} {}",
                    s.max_us as f64 / 1e6
                );
            }
        }
        let _ = writeln!(out, "# TYPE callvault_kms_tenant_requests_total counter");
        if let Ok(m) = self.per_tenant.lock() {
            for ((tenant, op), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "callvault_kms_tenant_requests_total{{tenant=\"{tenant}\",operation=\"{op}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# TYPE callvault_key_cache_hits_total counter");
        let _ = writeln!(
            out,
            "callvault_key_cache_hits_total {}",
            self.cache_hits.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE callvault_key_cache_misses_total counter");
        let _ = writeln!(
            out,
            "callvault_key_cache_misses_total {}",
            self.cache_misses.load(Ordering::Relaxed)
        );
        out
    }
}

/// Decorates any backend with per-operation, per-region latency and
/// per-tenant call counts.
#[derive(Debug)]
pub struct MeteredKms {
    inner: Arc<dyn Kms>,
    metrics: Arc<KmsMetrics>,
}

impl MeteredKms {
    pub fn new(inner: Arc<dyn Kms>, metrics: Arc<KmsMetrics>) -> Self {
        Self { inner, metrics }
    }

    fn observe<T>(
        &self,
        op: &'static str,
        tenant: Option<&str>,
        started: Instant,
        res: &Result<T, KmsError>,
    ) {
        self.metrics.record(
            op,
            self.inner.region(),
            tenant,
            started.elapsed(),
            res.is_ok(),
        );
    }
}

#[async_trait]
impl Kms for MeteredKms {
    fn region(&self) -> &str {
        self.inner.region()
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        let t = Instant::now();
        let res = self.inner.generate_data_key(key_id, ctx).await;
        self.observe("GenerateDataKey", Some(&ctx.tenant), t, &res);
        res
    }

    async fn decrypt(
        &self,
        key_arn: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let t = Instant::now();
        let res = self.inner.decrypt(key_arn, wrapped, ctx).await;
        self.observe("Decrypt", Some(&ctx.tenant), t, &res);
        res
    }

    async fn re_encrypt(
        &self,
        source_arn: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
        destination_key_id: &str,
    ) -> Result<(String, Vec<u8>), KmsError> {
        let t = Instant::now();
        let res = self
            .inner
            .re_encrypt(source_arn, wrapped, ctx, destination_key_id)
            .await;
        self.observe("ReEncrypt", Some(&ctx.tenant), t, &res);
        res
    }

    async fn describe_key(&self, key_id: &str) -> Result<KeyDescription, KmsError> {
        let t = Instant::now();
        let res = self.inner.describe_key(key_id).await;
        self.observe("DescribeKey", None, t, &res);
        res
    }
}
