//! The key lifecycle over the wire against LocalStack's KMS (hardening
//! issue, item 13), which enforces what moto does not: a disabled key,
//! a key pending deletion and a re-enabled key, RSA write-only ingest then
//! playback (RSAES-OAEP made outside KMS, decrypted by KMS), and ReEncrypt.

use aws_sdk_kms::types::KeySpec;
use callvault::api::pb;
use tonic::Code;

use crate::helpers::*;
use crate::key_safety::key_health;
use crate::keys::{active_arn, archive_call, register, start_rewrap, wait_for_job};

async fn localstack_app() -> TestApp {
    spawn_app_opts(AppOptions {
        kind: CatalogKind::Sqlite,
        remote: Remote::LocalStack,
        ..Default::default()
    })
    .await
}

/// The key's health as a fresh check on the server records it.
async fn health_state(app: &TestApp, arn: &str) -> pb::KeyHealthCheck {
    key_health(&mut app.client(&app.admin_token).await, true)
        .await
        .keys
        .into_iter()
        .find(|k| k.key_arn == arn)
        .and_then(|k| k.health)
        .unwrap()
}

#[tokio::test]
async fn localstack_disabled_pending_deletion_and_re_enabled_keys() {
    require!(LocalStack);
    let app = localstack_app().await;
    let kms = localstack_client().await;
    let arn = active_arn(&app).await;
    let audio = fixture("speech_mulaw.wav");
    let id = archive_call(&app, "ls-states", &audio).await.recording_id;
    assert_eq!(app.play(&id).await.unwrap(), audio.as_ref());

    // Disabled: the health check says so, purges the cached data key, and
    // playback is refused naming the state.
    kms.disable_key().key_id(&arn).send().await.unwrap();
    assert_eq!(
        health_state(&app, &arn).await.state(),
        pb::KeyState::Disabled
    );
    let err = app.play(&id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("disabled"), "{}", err.message());
    let info = tonic_types::StatusExt::get_error_details(&err)
        .error_info()
        .cloned()
        .unwrap();
    assert_eq!(info.reason, "KMS_KEY_DISABLED");
    assert_eq!(info.metadata["key_arn"], arn);
    assert_eq!(info.metadata["key_state"], "Disabled");

    // Re-enabled: KMS unwraps again.
    kms.enable_key().key_id(&arn).send().await.unwrap();
    assert_eq!(
        health_state(&app, &arn).await.state(),
        pb::KeyState::Enabled
    );
    assert_eq!(app.play(&id).await.unwrap(), audio.as_ref());

    // Pending deletion: a dated incident, and playback refused.
    kms.schedule_key_deletion()
        .key_id(&arn)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let check = health_state(&app, &arn).await;
    assert_eq!(check.state(), pb::KeyState::PendingDeletion, "{check:?}");
    assert!(check.deletion_time.is_some(), "{check:?}");
    let err = app.play(&id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("pending deletion"),
        "{}",
        err.message()
    );
    let health = key_health(&mut app.client(&app.admin_token).await, false).await;
    assert_eq!(health.incidents.len(), 1, "{health:?}");
    assert_eq!(health.incidents[0].recording_count, 1);
    assert!(health.incidents[0].unreadable_time.is_some());

    // Cancelled (KMS leaves the key disabled) and enabled: playable again.
    kms.cancel_key_deletion().key_id(&arn).send().await.unwrap();
    kms.enable_key().key_id(&arn).send().await.unwrap();
    assert_eq!(
        health_state(&app, &arn).await.state(),
        pb::KeyState::Enabled
    );
    assert_eq!(app.play(&id).await.unwrap(), audio.as_ref());
    // A disabled key cannot become a tenant's key.
    let other = localstack_create_key(KeySpec::SymmetricDefault).await;
    kms.disable_key().key_id(&other).send().await.unwrap();
    let mut admin = app.client(&app.admin_token).await;
    let err = register(&mut admin, &other).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("disabled"), "{}", err.message());
    app.shutdown().await;
}

#[tokio::test]
async fn localstack_rsa_write_only_ingest_then_playback() {
    require!(LocalStack);
    let app = localstack_app().await;
    let mut admin = app.client(&app.admin_token).await;
    let rsa = localstack_create_key(KeySpec::Rsa2048).await;
    // Registration: GetPublicKey, a local RSAES-OAEP-SHA-256 wrap, and a
    // KMS Decrypt of it, all over the wire.
    let key = register(&mut admin, &rsa).await.unwrap();
    assert_eq!(key.key_spec, "RSA_2048");
    let calls = |op: &str| app.archive.metrics.calls(op);
    let before = (calls("GenerateDataKey"), calls("Decrypt"), calls("Encrypt"));
    let audio = fixture("speech.mp3");
    let rec = archive_call(&app, "ls-rsa", &audio).await;
    assert_eq!(rec.kms_key_arn, rsa);
    assert_eq!(
        (calls("GenerateDataKey"), calls("Decrypt"), calls("Encrypt")),
        before,
        "ingest under an RSA key asked KMS"
    );
    app.archive.keys.purge_all();
    assert_eq!(app.play(&rec.recording_id).await.unwrap(), audio.as_ref());
    assert_eq!(calls("Decrypt"), before.1 + 1, "playback unwraps with KMS");
    app.shutdown().await;
}

#[tokio::test]
async fn localstack_re_encrypt_moves_wrapped_keys_between_keys() {
    require!(LocalStack);
    let app = localstack_app().await;
    let mut admin = app.client(&app.admin_token).await;
    let a = active_arn(&app).await;
    let mut recs = Vec::new();
    for (i, file) in ["speech_pcm.wav", "speech.flac", "speech_opus.ogg"]
        .into_iter()
        .enumerate()
    {
        let audio = fixture(file);
        recs.push((
            archive_call(&app, &format!("ls-re-{i}"), &audio).await,
            audio,
        ));
    }
    let b = localstack_create_key(KeySpec::SymmetricDefault).await;
    register(&mut admin, &b).await.unwrap();
    let job = start_rewrap(&mut admin, &a, &b, 10).await.unwrap();
    let job = wait_for_job(&mut admin, &job.job_id).await;
    assert_eq!(
        (
            crate::helpers::enum_word(job.state().as_str_name()).as_str(),
            job.rewrapped_count
        ),
        ("succeeded", 3),
        "{job:?}"
    );
    // The old key can go; every recording now unwraps under the new one.
    localstack_client()
        .await
        .disable_key()
        .key_id(&a)
        .send()
        .await
        .unwrap();
    app.archive.keys.purge_all();
    for (rec, audio) in &recs {
        assert_eq!(app.play(&rec.recording_id).await.unwrap(), audio.as_ref());
    }
    app.shutdown().await;
}
