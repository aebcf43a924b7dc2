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
//! * `describe_key` reports the key's state, spec and usage without using it.
//! * Asymmetric keys (RSA, `ENCRYPT_DECRYPT`) wrap with
//!   [`WrapAlgorithm::RsaesOaepSha256`]: `get_public_key` returns the key's
//!   SubjectPublicKeyInfo so ingest can wrap locally ([`PublicWrapKey`]) and
//!   `decrypt` unwraps inside the KMS. KMS takes no encryption context for
//!   asymmetric keys; the recording binding then rests on the format's key
//!   commitment (`docs/FORMAT.md`).
//! * Operations that concern one tenant take its id, so every call is
//!   attributed to a tenant in the metrics (KMS cost per tenant).
//!
//! `tests/api/kms_contract.rs` runs one suite against every backend.

pub mod aws;
pub mod cache;
pub mod local;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::crypto::DataKey;
use crate::metrics::Metrics;

/// The region named in a KMS key ARN (`arn:<partition>:kms:<region>:…`).
pub fn arn_region(arn: &str) -> Option<&str> {
    crate::domain::KeyArn::region_of(arn)
}

/// The key id of a key ARN (what follows `key/`), which a multi-Region key
/// shares with its replicas.
pub fn arn_key_id(arn: &str) -> &str {
    crate::domain::KeyArn::key_id_of(arn).unwrap_or(arn)
}

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

/// How a data key is wrapped under a KMS key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WrapAlgorithm {
    /// A symmetric KMS key (AES-256-GCM inside KMS), with encryption context.
    SymmetricDefault,
    /// An RSA KMS key; anyone with the public key can wrap, only KMS unwraps.
    RsaesOaepSha256,
}

impl WrapAlgorithm {
    /// The AWS KMS `EncryptionAlgorithmSpec` name, also the catalog spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WrapAlgorithm::SymmetricDefault => "SYMMETRIC_DEFAULT",
            WrapAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SYMMETRIC_DEFAULT" => Some(WrapAlgorithm::SymmetricDefault),
            "RSAES_OAEP_SHA_256" => Some(WrapAlgorithm::RsaesOaepSha256),
            _ => None,
        }
    }

    /// The algorithm a key of this KMS `KeySpec` wraps with, if callvault
    /// supports it.
    pub fn for_key_spec(spec: &str) -> Option<Self> {
        match spec {
            "SYMMETRIC_DEFAULT" => Some(WrapAlgorithm::SymmetricDefault),
            "RSA_2048" | "RSA_3072" | "RSA_4096" => Some(WrapAlgorithm::RsaesOaepSha256),
            _ => None,
        }
    }
}

/// An RSA public key pinned to one KMS key ARN: wraps data keys with
/// RSAES-OAEP-SHA-256 without calling KMS.
pub struct PublicWrapKey {
    key_arn: String,
    key: aws_lc_rs::rsa::OaepPublicEncryptingKey,
}

impl std::fmt::Debug for PublicWrapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicWrapKey")
            .field("key_arn", &self.key_arn)
            .finish_non_exhaustive()
    }
}

impl PublicWrapKey {
    /// Parses a DER SubjectPublicKeyInfo (what KMS GetPublicKey returns).
    /// Keys below 2048 bits are refused.
    pub fn from_spki(key_arn: &str, spki_der: &[u8]) -> Result<Self, KmsError> {
        let bad = |why: &str| KmsError::Other(format!("public key of {key_arn} {why}"));
        let public = aws_lc_rs::rsa::PublicEncryptingKey::from_der(spki_der)
            .map_err(|_| bad("is not a DER RSA SubjectPublicKeyInfo"))?;
        if public.key_size_bits() < 2048 {
            return Err(bad("is shorter than 2048 bits"));
        }
        let key = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(public)
            .map_err(|_| bad("cannot be used for RSAES-OAEP"))?;
        Ok(Self {
            key_arn: key_arn.to_owned(),
            key,
        })
    }

    /// A fresh data key and its RSAES-OAEP-SHA-256 wrapping.
    pub fn generate_data_key(&self) -> Result<GeneratedDataKey, KmsError> {
        let plaintext = DataKey::generate().map_err(|e| KmsError::Other(e.to_string()))?;
        let wrapped = self.wrap(&plaintext)?;
        Ok(GeneratedDataKey {
            plaintext,
            wrapped,
            key_arn: self.key_arn.clone(),
        })
    }

    pub fn wrap(&self, key: &DataKey) -> Result<Vec<u8>, KmsError> {
        let mut out = vec![0u8; self.key.ciphertext_size()];
        let n = self
            .key
            .encrypt(
                &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
                key.expose(),
                &mut out,
                None,
            )
            .map_err(|_| KmsError::Other("RSAES-OAEP wrap failed".into()))?
            .len();
        out.truncate(n);
        Ok(out)
    }
}

/// What KMS GetPublicKey returns for an asymmetric key.
#[derive(Debug, Clone)]
pub struct PublicKeyInfo {
    pub arn: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
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
    /// KMS `KeySpec`: `SYMMETRIC_DEFAULT`, `RSA_2048`, …
    pub key_spec: String,
    /// KMS `KeyUsage`: `ENCRYPT_DECRYPT`, `SIGN_VERIFY`, …
    pub key_usage: String,
    /// The `EncryptionAlgorithmSpec`s the key supports.
    pub encryption_algorithms: Vec<String>,
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

    /// Unwraps `wrapped`. `ctx` is sent for symmetric keys (and must match
    /// the one used to wrap); KMS takes none for asymmetric keys.
    async fn decrypt(
        &self,
        key_arn: &str,
        algorithm: WrapAlgorithm,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError>;

    /// Moves a wrapped key from `source` to `destination_key_id` inside KMS;
    /// the plaintext never leaves it. Returns (destination ARN, new wrapped key).
    async fn re_encrypt(
        &self,
        source: (&str, WrapAlgorithm),
        wrapped: &[u8],
        ctx: &EncryptionContext,
        destination: (&str, WrapAlgorithm),
    ) -> Result<(String, Vec<u8>), KmsError>;

    async fn describe_key(&self, key_id: &str, tenant: &str) -> Result<KeyDescription, KmsError>;

    /// The public half of an asymmetric key (DER SubjectPublicKeyInfo).
    async fn get_public_key(&self, key_id: &str, tenant: &str) -> Result<PublicKeyInfo, KmsError>;
}

/// Decorates any backend with per-operation, per-region latency and
/// per-tenant call counts.
#[derive(Debug)]
pub struct MeteredKms {
    inner: Arc<dyn Kms>,
    metrics: Arc<Metrics>,
}

impl MeteredKms {
    pub fn new(inner: Arc<dyn Kms>, metrics: Arc<Metrics>) -> Self {
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
        algorithm: WrapAlgorithm,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let t = Instant::now();
        let res = self.inner.decrypt(key_arn, algorithm, wrapped, ctx).await;
        self.observe("Decrypt", Some(&ctx.tenant), t, &res);
        res
    }

    async fn re_encrypt(
        &self,
        source: (&str, WrapAlgorithm),
        wrapped: &[u8],
        ctx: &EncryptionContext,
        destination: (&str, WrapAlgorithm),
    ) -> Result<(String, Vec<u8>), KmsError> {
        let t = Instant::now();
        let res = self
            .inner
            .re_encrypt(source, wrapped, ctx, destination)
            .await;
        self.observe("ReEncrypt", Some(&ctx.tenant), t, &res);
        res
    }

    async fn describe_key(&self, key_id: &str, tenant: &str) -> Result<KeyDescription, KmsError> {
        let t = Instant::now();
        let res = self.inner.describe_key(key_id, tenant).await;
        self.observe("DescribeKey", Some(tenant), t, &res);
        res
    }

    async fn get_public_key(&self, key_id: &str, tenant: &str) -> Result<PublicKeyInfo, KmsError> {
        let t = Instant::now();
        let res = self.inner.get_public_key(key_id, tenant).await;
        self.observe("GetPublicKey", Some(tenant), t, &res);
        res
    }
}
