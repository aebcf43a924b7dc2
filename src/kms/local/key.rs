//! What `keyring.json` holds: the keys (their state and material, zeroized on
//! drop, never printed) and the audit signing key.

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::super::{
    EncryptionContext, KeyDescription, KeyState, KmsError, WrapAlgorithm, arn_key_id,
};

#[derive(Debug, Serialize, Deserialize, Default)]
pub(super) struct KeyringFile {
    pub(super) keys: Vec<LocalKey>,
    /// The deployment's audit signing key (a note signer key text), made on
    /// first use: the embedded default keeps it here, with the KEKs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) audit_signing_key: Option<SecretText>,
}

/// Key text kept in the keyring: zeroized on drop, never printed.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct SecretText(pub(super) String);

impl Drop for SecretText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct LocalKey {
    pub(super) arn: String,
    pub(super) state: String,
    pub(super) created_at_ms: i64,
    #[serde(default)]
    pub(super) deletion_date_ms: Option<i64>,
    /// KMS KeySpec: `SYMMETRIC_DEFAULT` or `RSA_2048` / `RSA_3072`.
    #[serde(default = "symmetric")]
    pub(super) spec: String,
    /// Base64 key material. Symmetric: KEK versions, the last one current
    /// (rotation appends). RSA: one PKCS#8 private key.
    pub(super) versions: Vec<String>,
}

pub(super) fn symmetric() -> String {
    "SYMMETRIC_DEFAULT".into()
}

impl Drop for LocalKey {
    fn drop(&mut self) {
        for v in &mut self.versions {
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey")
            .field("arn", &self.arn)
            .field("state", &self.state)
            .field("spec", &self.spec)
            .field(
                "versions",
                &format_args!("<{} redacted>", self.versions.len()),
            )
            .finish_non_exhaustive()
    }
}

impl LocalKey {
    pub(super) fn kek(&self, version: u32) -> Result<LessSafeKey, KmsError> {
        let b64 =
            self.versions
                .get(version as usize)
                .ok_or_else(|| KmsError::InvalidCiphertext {
                    arn: self.arn.clone(),
                })?;
        let mut raw = B64.decode(b64).map_err(|_| self.corrupt())?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| self.corrupt());
        raw.zeroize();
        Ok(LessSafeKey::new(key?))
    }

    pub(super) fn check_usable(&self) -> Result<(), KmsError> {
        match self.state.as_str() {
            "Enabled" => Ok(()),
            "Disabled" => Err(KmsError::Disabled {
                arn: self.arn.clone(),
            }),
            "PendingDeletion" => Err(KmsError::PendingDeletion {
                arn: self.arn.clone(),
            }),
            other => Err(KmsError::InvalidState {
                arn: self.arn.clone(),
                state: other.to_owned(),
            }),
        }
    }

    pub(super) fn algorithm(&self) -> WrapAlgorithm {
        WrapAlgorithm::for_key_spec(&self.spec).unwrap_or(WrapAlgorithm::SymmetricDefault)
    }

    /// Refuses an operation with the wrong algorithm for this key, as KMS does.
    pub(super) fn check_algorithm(&self, alg: WrapAlgorithm) -> Result<(), KmsError> {
        if alg == self.algorithm() {
            Ok(())
        } else {
            Err(KmsError::InvalidCiphertext {
                arn: self.arn.clone(),
            })
        }
    }

    pub(super) fn corrupt(&self) -> KmsError {
        KmsError::Other(format!("keyring entry for {} is corrupt", self.arn))
    }

    /// The RSA private key of an asymmetric key (its one PKCS#8 version).
    pub(super) fn rsa_key(&self) -> Result<aws_lc_rs::rsa::PrivateDecryptingKey, KmsError> {
        let mut der = B64
            .decode(self.versions.first().ok_or_else(|| self.corrupt())?)
            .map_err(|_| self.corrupt())?;
        let key = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&der);
        der.zeroize();
        key.map_err(|_| self.corrupt())
    }

    pub(super) fn rsa_private(&self) -> Result<aws_lc_rs::rsa::OaepPrivateDecryptingKey, KmsError> {
        aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(self.rsa_key()?).map_err(|_| self.corrupt())
    }

    pub(super) fn public_spki(&self) -> Result<Vec<u8>, KmsError> {
        use aws_lc_rs::encoding::AsDer;
        let spki = self
            .rsa_key()?
            .public_key()
            .as_der()
            .map_err(|_| self.corrupt())?;
        Ok(spki.as_ref().to_vec())
    }

    pub(super) fn description(&self) -> KeyDescription {
        let state = match self.state.as_str() {
            "Enabled" => KeyState::Enabled,
            "Disabled" => KeyState::Disabled,
            "PendingDeletion" => KeyState::PendingDeletion,
            other => KeyState::Other(other.to_owned()),
        };
        KeyDescription {
            arn: self.arn.clone(),
            state,
            deletion_date_ms: self.deletion_date_ms,
            key_spec: self.spec.clone(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            encryption_algorithms: vec![self.algorithm().as_str().to_owned()],
        }
    }
}

pub(super) fn aad(arn: &str, ctx: &EncryptionContext) -> Vec<u8> {
    let id = arn_key_id(arn);
    let mut out = (id.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&ctx.canonical_bytes());
    out
}
