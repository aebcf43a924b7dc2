//! One contract suite for every KMS backend: the local keyring, and AWS KMS
//! over HTTP against the moto emulator.

use std::sync::Arc;

use callvault::kms::local::LocalKeyring;
use callvault::kms::{EncryptionContext, KeyState, Kms, KmsError, WrapAlgorithm};

use crate::helpers::*;

fn ctx(r: &str) -> EncryptionContext {
    EncryptionContext {
        tenant: "tenant-1".into(),
        recording: r.into(),
    }
}

async fn contract(kms: Arc<dyn Kms>, key_a: &str, key_b: &str) {
    let g = kms.generate_data_key(key_a, &ctx("r1")).await.unwrap();
    assert!(
        g.key_arn.starts_with("arn:"),
        "exact ARN, got {}",
        g.key_arn
    );
    assert_eq!(g.plaintext.expose().len(), 32);
    assert!(
        !g.wrapped.windows(32).any(|w| w == g.plaintext.expose()),
        "wrapped key contains the plaintext"
    );

    let dk = kms
        .decrypt(
            &g.key_arn,
            WrapAlgorithm::SymmetricDefault,
            &g.wrapped,
            &ctx("r1"),
        )
        .await
        .unwrap();
    assert_eq!(dk.expose(), g.plaintext.expose());

    // The encryption context is bound to the wrapped key.
    let err = kms
        .decrypt(
            &g.key_arn,
            WrapAlgorithm::SymmetricDefault,
            &g.wrapped,
            &ctx("r2"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::InvalidCiphertext { .. }), "{err:?}");
    let mut bad = g.wrapped.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = kms
        .decrypt(
            &g.key_arn,
            WrapAlgorithm::SymmetricDefault,
            &bad,
            &ctx("r1"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::InvalidCiphertext { .. }), "{err:?}");

    // ReEncrypt moves the wrap to key B; the plaintext is unchanged.
    let desc_b = kms.describe_key(key_b, "t").await.unwrap();
    let (arn_b, wrapped_b) = kms
        .re_encrypt(
            (&g.key_arn, WrapAlgorithm::SymmetricDefault),
            &g.wrapped,
            &ctx("r1"),
            (key_b, WrapAlgorithm::SymmetricDefault),
        )
        .await
        .unwrap();
    assert_eq!(arn_b, desc_b.arn);
    let dk_b = kms
        .decrypt(
            &arn_b,
            WrapAlgorithm::SymmetricDefault,
            &wrapped_b,
            &ctx("r1"),
        )
        .await
        .unwrap();
    assert_eq!(dk_b.expose(), g.plaintext.expose());

    let d = kms.describe_key(key_a, "t").await.unwrap();
    assert_eq!(d.state, KeyState::Enabled);
    assert_eq!(d.arn, g.key_arn);
    let (key_prefix, _) = key_a.rsplit_once('/').unwrap();
    let missing = format!("{key_prefix}/{}", uuid::Uuid::new_v4());
    let err = kms.describe_key(&missing, "t").await.unwrap_err();
    assert!(matches!(err, KmsError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn local_keyring_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(LocalKeyring::open(dir.path(), "local").unwrap());
    let (a, b) = (ring.create_key().unwrap(), ring.create_key().unwrap());
    contract(ring.clone(), &a, &b).await;

    // Key states, with the same semantics AWS has.
    let g = ring.generate_data_key(&a, &ctx("r")).await.unwrap();
    ring.set_enabled(&a, false).unwrap();
    assert_eq!(
        ring.decrypt(&a, WrapAlgorithm::SymmetricDefault, &g.wrapped, &ctx("r"))
            .await
            .unwrap_err(),
        KmsError::Disabled { arn: a.clone() }
    );
    assert_eq!(
        ring.generate_data_key(&a, &ctx("r")).await.unwrap_err(),
        KmsError::Disabled { arn: a.clone() }
    );
    ring.set_enabled(&a, true).unwrap();
    assert!(
        ring.decrypt(&a, WrapAlgorithm::SymmetricDefault, &g.wrapped, &ctx("r"))
            .await
            .is_ok()
    );
    // Rotation: old wraps still open, new ones use the new version.
    ring.rotate(&a).unwrap();
    assert!(
        ring.decrypt(&a, WrapAlgorithm::SymmetricDefault, &g.wrapped, &ctx("r"))
            .await
            .is_ok()
    );
    let g2 = ring.generate_data_key(&a, &ctx("r")).await.unwrap();
    assert_eq!(
        ring.decrypt(&a, WrapAlgorithm::SymmetricDefault, &g2.wrapped, &ctx("r"))
            .await
            .unwrap()
            .expose(),
        g2.plaintext.expose()
    );
    ring.schedule_deletion(&a, 7).unwrap();
    assert_eq!(
        ring.decrypt(&a, WrapAlgorithm::SymmetricDefault, &g.wrapped, &ctx("r"))
            .await
            .unwrap_err(),
        KmsError::PendingDeletion { arn: a.clone() }
    );
    let d = ring.describe_key(&a, "t").await.unwrap();
    assert_eq!(d.state, KeyState::PendingDeletion);
    assert!(d.deletion_date_ms.is_some());

    // The keyring file is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("keyring.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn aws_kms_on_the_emulator_meets_the_contract() {
    require!(Moto);
    let kms = moto_kms().await;
    let (a, b) = (moto_create_key(&kms).await, moto_create_key(&kms).await);
    contract(Arc::new(kms), &a, &b).await;
}
