//! AWS KMS backend over `aws-sdk-kms`.
//!
//! Credentials come from the default chain; `endpoint` overrides the service
//! URL for KMS-compatible emulators. The SDK's standard retry mode retries
//! throttling and transient errors with exponential backoff; what is still
//! failing after that is mapped to [`KmsError::Throttled`] /
//! [`KmsError::Unavailable`].

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, EncryptionAlgorithmSpec, KeyState as AwsKeyState};

use super::{
    EncryptionContext, GeneratedDataKey, KeyDescription, KeyState, Kms, KmsError, PublicKeyInfo,
    WrapAlgorithm,
};
use crate::crypto::DataKey;

#[derive(Debug, Clone)]
pub struct AwsKms {
    client: Client,
    region: String,
}

impl AwsKms {
    /// Builds a client for `region`, optionally against `endpoint`.
    pub async fn connect(region: &str, endpoint: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5));
        if let Some(ep) = endpoint {
            loader = loader.endpoint_url(ep);
        }
        let conf = loader.load().await;
        Self {
            client: Client::new(&conf),
            region: region.to_owned(),
        }
    }

    /// Wraps an existing client (used with modeled responses in tests).
    pub fn from_client(client: Client, region: &str) -> Self {
        Self {
            client,
            region: region.to_owned(),
        }
    }
}

/// The KMS error code of a modeled error variant. Modeled errors do not
/// always carry their code in the error metadata (a client built with
/// modeled responses leaves it empty), so the variant itself is the first
/// source of truth and the metadata code the fallback for unmodeled errors
/// such as AccessDeniedException.
pub trait ModeledKmsError: ProvideErrorMetadata + std::fmt::Display {
    fn modeled_code(&self) -> Option<&'static str>;
}

macro_rules! modeled_codes {
    ($ty:ty: $($variant:ident => $code:literal),+ $(,)?) => {
        impl ModeledKmsError for $ty {
            fn modeled_code(&self) -> Option<&'static str> {
                match self {
                    $(Self::$variant(_) => Some($code),)+
                    _ => None,
                }
            }
        }
    };
}

modeled_codes!(aws_sdk_kms::operation::generate_data_key::GenerateDataKeyError:
    DependencyTimeoutException => "DependencyTimeoutException",
    DisabledException => "DisabledException",
    KeyUnavailableException => "KeyUnavailableException",
    KmsInternalException => "KMSInternalException",
    KmsInvalidStateException => "KMSInvalidStateException",
    NotFoundException => "NotFoundException",
);
/// Decrypt and ReEncrypt model the same errors.
macro_rules! unwrap_operation_codes {
    ($ty:ty) => {
        modeled_codes!($ty:
            DependencyTimeoutException => "DependencyTimeoutException",
            DisabledException => "DisabledException",
            IncorrectKeyException => "IncorrectKeyException",
            InvalidCiphertextException => "InvalidCiphertextException",
            KeyUnavailableException => "KeyUnavailableException",
            KmsInternalException => "KMSInternalException",
            KmsInvalidStateException => "KMSInvalidStateException",
            NotFoundException => "NotFoundException",
        );
    };
}
unwrap_operation_codes!(aws_sdk_kms::operation::decrypt::DecryptError);
unwrap_operation_codes!(aws_sdk_kms::operation::re_encrypt::ReEncryptError);
modeled_codes!(aws_sdk_kms::operation::get_public_key::GetPublicKeyError:
    DependencyTimeoutException => "DependencyTimeoutException",
    DisabledException => "DisabledException",
    InvalidKeyUsageException => "InvalidKeyUsageException",
    KeyUnavailableException => "KeyUnavailableException",
    KmsInternalException => "KMSInternalException",
    KmsInvalidStateException => "KMSInvalidStateException",
    NotFoundException => "NotFoundException",
    UnsupportedOperationException => "UnsupportedOperationException",
);
modeled_codes!(aws_sdk_kms::operation::describe_key::DescribeKeyError:
    DependencyTimeoutException => "DependencyTimeoutException",
    KmsInternalException => "KMSInternalException",
    NotFoundException => "NotFoundException",
);

/// Maps any KMS operation's error to the outcome callers act on. The code
/// comes from the modeled variant or, for errors KMS does not model per
/// operation (AccessDeniedException, throttling), from the error metadata.
pub fn map_sdk_error<E, R>(err: SdkError<E, R>, arn: &str) -> KmsError
where
    E: ModeledKmsError + std::fmt::Debug,
    R: std::fmt::Debug,
{
    let arn = arn.to_owned();
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            // Display carries the message whether or not metadata does.
            let text = e
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| e.to_string());
            match e.modeled_code().or_else(|| e.code()) {
                Some("DisabledException") => KmsError::Disabled { arn },
                Some("KMSInvalidStateException") => {
                    let msg = text.to_ascii_lowercase();
                    if msg.contains("pending deletion") || msg.contains("pendingdeletion") {
                        KmsError::PendingDeletion { arn }
                    } else if msg.contains("disabled") {
                        KmsError::Disabled { arn }
                    } else {
                        let state = text.rsplit(": ").next().unwrap_or("unknown").to_owned();
                        KmsError::InvalidState { arn, state }
                    }
                }
                Some("AccessDeniedException") => KmsError::AccessDenied { arn },
                Some("NotFoundException") => KmsError::NotFound { arn },
                Some("InvalidCiphertextException") | Some("IncorrectKeyException") => {
                    KmsError::InvalidCiphertext { arn }
                }
                Some("ThrottlingException") | Some("LimitExceededException") => KmsError::Throttled,
                Some("KMSInternalException")
                | Some("DependencyTimeoutException")
                | Some("KeyUnavailableException") => KmsError::Unavailable(
                    e.modeled_code()
                        .or_else(|| e.code())
                        .unwrap_or_default()
                        .to_owned(),
                ),
                Some(code) => KmsError::Other(code.to_owned()),
                None => KmsError::Other("unrecognised KMS error".into()),
            }
        }
        SdkError::TimeoutError(_) => KmsError::Unavailable("request timed out".into()),
        SdkError::DispatchFailure(_) => KmsError::Unavailable("could not reach KMS".into()),
        SdkError::ResponseError(_) => KmsError::Unavailable("malformed response from KMS".into()),
        _ => KmsError::Other("KMS request could not be built".into()),
    }
}

fn state_from_aws(s: Option<&AwsKeyState>) -> KeyState {
    match s {
        Some(AwsKeyState::Enabled) => KeyState::Enabled,
        Some(AwsKeyState::Disabled) => KeyState::Disabled,
        Some(AwsKeyState::PendingDeletion) | Some(AwsKeyState::PendingReplicaDeletion) => {
            KeyState::PendingDeletion
        }
        Some(other) => KeyState::Other(other.as_str().to_owned()),
        None => KeyState::Other("Unknown".into()),
    }
}

fn spec(alg: WrapAlgorithm) -> EncryptionAlgorithmSpec {
    match alg {
        WrapAlgorithm::SymmetricDefault => EncryptionAlgorithmSpec::SymmetricDefault,
        WrapAlgorithm::RsaesOaepSha256 => EncryptionAlgorithmSpec::RsaesOaepSha256,
    }
}

/// KMS accepts an encryption context only with symmetric keys.
fn context_for(
    alg: WrapAlgorithm,
    ctx: &EncryptionContext,
) -> Option<std::collections::HashMap<String, String>> {
    (alg == WrapAlgorithm::SymmetricDefault).then(|| ctx.to_map())
}

#[async_trait]
impl Kms for AwsKms {
    fn region(&self) -> &str {
        &self.region
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        let mut out = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(ctx.to_map()))
            .send()
            .await
            .map_err(|e| map_sdk_error(e, key_id))?;
        let missing =
            |what: &str| KmsError::Other(format!("GenerateDataKey response lacks {what}"));
        // The SDK's copy of the plaintext key is taken out of the response
        // and wiped once copied into a `DataKey`.
        let plaintext = zeroize::Zeroizing::new(
            out.plaintext
                .take()
                .ok_or_else(|| missing("Plaintext"))?
                .into_inner(),
        );
        let plaintext =
            DataKey::from_slice(&plaintext).map_err(|_| missing("a 32-byte Plaintext"))?;
        let wrapped = out
            .ciphertext_blob()
            .ok_or_else(|| missing("CiphertextBlob"))?
            .as_ref()
            .to_vec();
        let key_arn = out.key_id().ok_or_else(|| missing("KeyId"))?.to_owned();
        Ok(GeneratedDataKey {
            plaintext,
            wrapped,
            key_arn,
        })
    }

    async fn decrypt(
        &self,
        key_arn: &str,
        algorithm: WrapAlgorithm,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let mut out = self
            .client
            .decrypt()
            .key_id(key_arn)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_algorithm(spec(algorithm))
            .set_encryption_context(context_for(algorithm, ctx))
            .send()
            .await
            .map_err(|e| map_sdk_error(e, key_arn))?;
        if out.key_id() != Some(key_arn) {
            return Err(KmsError::InvalidCiphertext {
                arn: key_arn.to_owned(),
            });
        }
        let plain = zeroize::Zeroizing::new(
            out.plaintext
                .take()
                .ok_or_else(|| KmsError::Other("Decrypt response lacks Plaintext".into()))?
                .into_inner(),
        );
        DataKey::from_slice(&plain)
            .map_err(|_| KmsError::Other("Decrypt returned a key of the wrong length".into()))
    }

    async fn re_encrypt(
        &self,
        (source_arn, source_alg): (&str, WrapAlgorithm),
        wrapped: &[u8],
        ctx: &EncryptionContext,
        (destination_key_id, destination_alg): (&str, WrapAlgorithm),
    ) -> Result<(String, Vec<u8>), KmsError> {
        let out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .source_key_id(source_arn)
            .source_encryption_algorithm(spec(source_alg))
            .set_source_encryption_context(context_for(source_alg, ctx))
            .destination_key_id(destination_key_id)
            .destination_encryption_algorithm(spec(destination_alg))
            .set_destination_encryption_context(context_for(destination_alg, ctx))
            .send()
            .await
            .map_err(|e| map_sdk_error(e, source_arn))?;
        let arn = out
            .key_id()
            .ok_or_else(|| KmsError::Other("ReEncrypt response lacks KeyId".into()))?
            .to_owned();
        let blob = out
            .ciphertext_blob()
            .ok_or_else(|| KmsError::Other("ReEncrypt response lacks CiphertextBlob".into()))?;
        Ok((arn, blob.as_ref().to_vec()))
    }

    async fn describe_key(&self, key_id: &str, _tenant: &str) -> Result<KeyDescription, KmsError> {
        let out = self
            .client
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, key_id))?;
        let meta = out
            .key_metadata()
            .ok_or_else(|| KmsError::Other("DescribeKey response lacks KeyMetadata".into()))?;
        let deletion_date_ms = meta
            .deletion_date()
            .map(|d| d.to_millis().unwrap_or_default());
        Ok(KeyDescription {
            arn: meta.arn().unwrap_or(key_id).to_owned(),
            state: state_from_aws(meta.key_state()),
            deletion_date_ms,
            key_spec: meta
                .key_spec()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into()),
            key_usage: meta
                .key_usage()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_else(|| "ENCRYPT_DECRYPT".into()),
            encryption_algorithms: meta
                .encryption_algorithms()
                .iter()
                .map(|a| a.as_str().to_owned())
                .collect(),
        })
    }

    async fn get_public_key(&self, key_id: &str, _tenant: &str) -> Result<PublicKeyInfo, KmsError> {
        let out = self
            .client
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, key_id))?;
        let missing = |what: &str| KmsError::Other(format!("GetPublicKey response lacks {what}"));
        Ok(PublicKeyInfo {
            arn: out.key_id().ok_or_else(|| missing("KeyId"))?.to_owned(),
            spki_der: out
                .public_key()
                .ok_or_else(|| missing("PublicKey"))?
                .as_ref()
                .to_vec(),
        })
    }
}
