//! Wrapping and unwrapping data keys, and the `Kms` contract over the
//! keyring.

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce};
use zeroize::Zeroize;

use super::super::{
    EncryptionContext, GeneratedDataKey, KeyDescription, Kms, KmsError, PublicKeyInfo,
    PublicWrapKey, WrapAlgorithm,
};
use super::LocalKeyring;
use super::key::{LocalKey, aad};
use crate::crypto::{DataKey, fill_random};

const MAGIC: &[u8; 4] = b"CVK1";
const WRAPPED_LEN: usize = 4 + 4 + 12 + 32 + 16;

/// `"CVK1" || u32be(version) || nonce || AES-256-GCM(kek, nonce, aad, DK) || tag`
/// (docs/FORMAT.md, "Local keyring wrapped keys").
fn seal_data_key(
    kek: &aws_lc_rs::aead::LessSafeKey,
    version: u32,
    nonce: [u8; 12],
    aad: &[u8],
    data_key: &DataKey,
) -> Result<Vec<u8>, KmsError> {
    // Room for the tag up front: growing would free a copy of the
    // plaintext data key unzeroized.
    let mut buf = Vec::with_capacity(data_key.expose().len() + AES_256_GCM.tag_len());
    buf.extend_from_slice(data_key.expose());
    kek.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| KmsError::Other("local wrap failed".into()))?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    buf.zeroize();
    Ok(out)
}

impl LocalKeyring {
    pub(super) fn wrap(
        key: &LocalKey,
        data_key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        if key.algorithm() == WrapAlgorithm::RsaesOaepSha256 {
            return PublicWrapKey::from_spki(&key.arn, &key.public_spki()?)?.wrap(data_key);
        }
        let version = u32::try_from(key.versions.len().saturating_sub(1))
            .map_err(|_| KmsError::Other("too many key versions".into()))?;
        let kek = key.kek(version)?;
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce).map_err(|e| KmsError::Other(e.to_string()))?;
        seal_data_key(&kek, version, nonce, &aad(&key.arn, ctx), data_key)
    }

    pub(super) fn unwrap_key(
        key: &LocalKey,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let bad = || KmsError::InvalidCiphertext {
            arn: key.arn.clone(),
        };
        if key.algorithm() == WrapAlgorithm::RsaesOaepSha256 {
            let private = key.rsa_private()?;
            let mut out = vec![0u8; private.min_output_size()];
            let res = private
                .decrypt(
                    &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
                    wrapped,
                    &mut out,
                    None,
                )
                .map_err(|_| bad())
                .and_then(|plain| DataKey::from_slice(plain).map_err(|_| bad()));
            out.zeroize();
            return res;
        }
        if wrapped.len() != WRAPPED_LEN || &wrapped[..4] != MAGIC {
            return Err(bad());
        }
        let version = u32::from_be_bytes(wrapped[4..8].try_into().map_err(|_| bad())?);
        let nonce: [u8; 12] = wrapped[8..20].try_into().map_err(|_| bad())?;
        let kek = key.kek(version)?;
        let mut buf = wrapped[20..].to_vec();
        let res = kek
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&key.arn, ctx)),
                &mut buf,
            )
            .map_err(|_| bad())
            .and_then(|plain| DataKey::from_slice(plain).map_err(|_| bad()));
        buf.zeroize();
        res
    }
}

#[async_trait]
impl Kms for LocalKeyring {
    fn region(&self) -> &str {
        &self.region
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        self.with_key(key_id, |key| {
            key.check_usable()?;
            if key.algorithm() != WrapAlgorithm::SymmetricDefault {
                // As in AWS: GenerateDataKey needs a symmetric key.
                return Err(KmsError::Other(format!(
                    "{} is asymmetric; GenerateDataKey needs a symmetric key",
                    key.arn
                )));
            }
            let plaintext = DataKey::generate().map_err(|e| KmsError::Other(e.to_string()))?;
            let wrapped = Self::wrap(key, &plaintext, ctx)?;
            Ok(GeneratedDataKey {
                plaintext,
                wrapped,
                key_arn: key.arn.clone(),
            })
        })
    }

    async fn decrypt(
        &self,
        key_arn: &str,
        algorithm: WrapAlgorithm,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        self.with_key(key_arn, |key| {
            key.check_usable()?;
            key.check_algorithm(algorithm)?;
            Self::unwrap_key(key, wrapped, ctx)
        })
    }

    async fn re_encrypt(
        &self,
        (source_arn, source_alg): (&str, WrapAlgorithm),
        wrapped: &[u8],
        ctx: &EncryptionContext,
        (destination_key_id, destination_alg): (&str, WrapAlgorithm),
    ) -> Result<(String, Vec<u8>), KmsError> {
        let file = self.load_shared()?;
        let (src, dst) = (
            self.find(&file, source_arn)?,
            self.find(&file, destination_key_id)?,
        );
        src.check_usable()?;
        dst.check_usable()?;
        src.check_algorithm(source_alg)?;
        dst.check_algorithm(destination_alg)?;
        let plain = Self::unwrap_key(src, wrapped, ctx)?;
        Ok((dst.arn.clone(), Self::wrap(dst, &plain, ctx)?))
    }

    async fn describe_key(&self, key_id: &str, _tenant: &str) -> Result<KeyDescription, KmsError> {
        self.with_key(key_id, |k| Ok(k.description()))
    }

    async fn get_public_key(&self, key_id: &str, _tenant: &str) -> Result<PublicKeyInfo, KmsError> {
        self.with_key(key_id, |k| {
            k.check_usable()?;
            if k.algorithm() != WrapAlgorithm::RsaesOaepSha256 {
                return Err(KmsError::Other(format!(
                    "{} is symmetric and has no public key",
                    k.arn
                )));
            }
            Ok(PublicKeyInfo {
                arn: k.arn.clone(),
                spki_der: k.public_spki()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keyring vector printed in docs/FORMAT.md.
    #[test]
    fn keyring_wrap_vector_matches_format_doc() {
        let kek_bytes: Vec<u8> = (0x60u8..0x80).collect();
        let kek = aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&AES_256_GCM, &kek_bytes).unwrap(),
        );
        let dk = DataKey::from_slice(&(0u8..32).collect::<Vec<_>>()).unwrap();
        let ctx = EncryptionContext {
            tenant: "tenant-a".into(),
            recording: "rec-1".into(),
        };
        let aad = aad("arn:callvault:kms:local:local:key/k-1", &ctx);
        let nonce: [u8; 12] = core::array::from_fn(|i| 0xc0 + i as u8);
        let wrapped = seal_data_key(&kek, 0, nonce, &aad, &dk).unwrap();
        assert_eq!(hex::encode(&wrapped), KEYRING_VECTOR);
    }

    const KEYRING_VECTOR: &str = "43564b3100000000c0c1c2c3c4c5c6c7c8c9cacbe12192d41116dde467e5120983d4161a962c1040cca4dfe1316b5172fda5c3a94c9f32a71bc84ddea716be8f9ed59e5b";
}
