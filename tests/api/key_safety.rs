//! Key safety (hardening issue, item 10): a key a running rewrap job uses
//! cannot be retired, a rewrap cannot start into a key retired under it, a
//! replaced RSA key is a security incident, and registration can be
//! limited to the deployment's AWS accounts.

use std::sync::Arc;
use std::time::Duration;

use callvault::api::pb;
use callvault::audit::event::Action;
use callvault::kms::Kms;
use callvault::kms::cache::KeyCacheConfig;
use callvault::server::Roles;
use tonic::Code;

use crate::helpers::*;
use crate::keys::{active_arn, archive_call, register, small_wav, start_rewrap};

async fn retire(
    c: &mut callvault::client::Client,
    arn: &str,
) -> Result<pb::TenantKey, tonic::Status> {
    c.keys
        .retire_key(pb::RetireKeyRequest {
            key_arn: arn.to_owned(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Keys A (recordings), C (empty, previous) and D (active); a job moving
/// A's recordings into C, slowly (1 KMS request per second).
async fn job_into_an_empty_key(kind: CatalogKind) -> (TestApp, String, String, String) {
    let app = spawn_app(kind).await;
    let mut admin = app.client(&app.admin_token).await;
    let a = active_arn(&app).await;
    for i in 0..20 {
        archive_call(&app, &format!("safety-{i}"), &small_wav(i)).await;
    }
    let c = app.ring().create_key().unwrap();
    register(&mut admin, &c).await.unwrap();
    let d = app.ring().create_key().unwrap();
    register(&mut admin, &d).await.unwrap();
    let job = start_rewrap(&mut admin, &a, &c, 1).await.unwrap();
    (app, a, c, job.job_id)
}

async fn retire_waits_for_the_job(kind: CatalogKind) {
    let (app, a, c, job) = job_into_an_empty_key(kind).await;
    let mut admin = app.client(&app.admin_token).await;
    // C protects nothing (or little) yet: before the fix it could be
    // retired while the job wrote into it.
    for (arn, role) in [(&c, "destination"), (&a, "source")] {
        let err = retire(&mut admin, arn).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message()
                .contains(&format!("is the {role} of running rewrap job {job}")),
            "{}",
            err.message()
        );
    }
    admin
        .keys
        .cancel_rewrap(pb::CancelRewrapRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap();
    // Without the job, the usual rule: a key that protects recordings stays.
    let err = retire(&mut admin, &a).await.unwrap_err();
    assert!(
        err.message().contains("still protects"),
        "{}",
        err.message()
    );
    app.shutdown().await;
}

on_both_catalogs!(
    a_key_a_running_rewrap_uses_cannot_be_retired_on_sqlite,
    a_key_a_running_rewrap_uses_cannot_be_retired_on_postgres,
    retire_waits_for_the_job
);

/// Forced interleaving on PostgreSQL: a retire of C holds C's row when a
/// rewrap into C starts (its pre-check outside the transaction saw C
/// usable). The start waits for the lock, sees C retired, and refuses.
#[tokio::test]
async fn a_rewrap_cannot_start_into_a_key_retired_meanwhile() {
    let app = spawn_app(CatalogKind::Postgres).await;
    let mut admin = app.client(&app.admin_token).await;
    let a = active_arn(&app).await;
    archive_call(&app, "interleave", &small_wav(1)).await;
    let c = app.ring().create_key().unwrap();
    register(&mut admin, &c).await.unwrap();
    let d = app.ring().create_key().unwrap();
    register(&mut admin, &d).await.unwrap();

    let mut tx = app.archive.catalog.begin().await.unwrap();
    let arn_c = callvault::domain::KeyArn::parse("c", &c).unwrap();
    callvault::catalog::keys::retire(&mut tx, &app.tenant.id, &arn_c)
        .await
        .unwrap();
    let start = {
        let mut admin = app.client(&app.admin_token).await;
        let (a, c) = (a.clone(), c.clone());
        tokio::spawn(async move { start_rewrap(&mut admin, &a, &c, 10).await })
    };
    // The start is blocked on C's row lock.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !start.is_finished(),
        "the rewrap start did not wait for the key lock"
    );
    tx.commit().await.unwrap();
    let err = start.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("is retired"), "{}", err.message());
    let jobs = admin
        .keys
        .list_rewrap_jobs(pb::ListRewrapJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(jobs.jobs.is_empty(), "{jobs:?}");
    app.shutdown().await;
}

/// The tenant's key health: as last recorded, or after a fresh check of
/// every key (`refresh`).
pub(crate) async fn key_health(
    admin: &mut callvault::client::Client,
    refresh: bool,
) -> pb::KeyHealth {
    admin
        .keys
        .get_key_health(pb::GetKeyHealthRequest { refresh })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_replaced_rsa_public_key_is_a_security_incident() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let mut admin = app.client(&app.admin_token).await;
    let rsa = app.ring().create_rsa_key("RSA_2048").unwrap();
    register(&mut admin, &rsa).await.unwrap();
    archive_call(&app, "rsa-1", &small_wav(1)).await;
    // A node whose KMS answers GetPublicKey with another key's public key,
    // as KMS would after the key material behind the ARN was replaced.
    let kms = Arc::new(FaultKms::over(app.ring().clone()));
    let node = app
        .node(kms.clone(), Roles::ALL, &KeyCacheConfig::default())
        .await;

    // Control: the pinned key matches, nothing to report.
    callvault::keys::check_all(&node.archive).await.unwrap();
    let health = key_health(&mut admin, false).await;
    assert!(health.incidents.is_empty(), "{health:?}");

    let other = app.ring().create_rsa_key("RSA_2048").unwrap();
    let other_spki = app
        .ring()
        .get_public_key(&other, "t")
        .await
        .unwrap()
        .spki_der;
    *kms.served_public_key.lock().unwrap() = Some(other_spki);
    callvault::keys::check_all(&node.archive).await.unwrap();
    callvault::keys::check_all(&node.archive).await.unwrap();
    let health = key_health(&mut admin, false).await;
    let key = health.keys.iter().find(|k| k.key_arn == rsa).unwrap();
    let check = key.health.clone().unwrap();
    assert_eq!(check.state(), pb::KeyState::PublicKeyMismatch, "{check:?}");
    assert!(
        check.detail.contains("not the one pinned"),
        "{}",
        check.detail
    );
    assert_eq!(health.incidents.len(), 1, "{health:?}");
    let incident = &health.incidents[0];
    assert_eq!(
        (
            incident.key_arn.as_str(),
            crate::helpers::enum_word(incident.state().as_str_name()).as_str(),
            incident.recording_count
        ),
        (rsa.as_str(), "public_key_mismatch", 1)
    );
    assert!(incident.unreadable_time.is_none());

    // One audit event for the incident, not one per check.
    let events = crate::audit::events(&app).await;
    let incidents = crate::audit::of(&events, Action::KeyIncident);
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(
        incidents[0].details["state"],
        "not the key registered (its public key changed)"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn registration_is_limited_to_the_allowed_aws_accounts() {
    require!(Moto);
    let app = spawn_app_opts(AppOptions {
        kind: CatalogKind::Sqlite,
        remote: Remote::Moto,
        allowed_kms_accounts: vec!["111122223333".into()],
        ..Default::default()
    })
    .await;
    let mut admin = app.client(&app.admin_token).await;
    // moto's keys live in account 123456789012.
    let key = moto_create_key(&moto_kms().await).await;
    let calls_before = app.archive.metrics.calls("DescribeKey");
    let err = register(&mut admin, &key).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("account 123456789012")
            && err.message().contains("allowed: 111122223333"),
        "{}",
        err.message()
    );
    assert_eq!(
        app.archive.metrics.calls("DescribeKey"),
        calls_before,
        "KMS was asked about a key of a foreign account"
    );
    app.shutdown().await;

    let app = spawn_app_opts(AppOptions {
        kind: CatalogKind::Sqlite,
        remote: Remote::Moto,
        allowed_kms_accounts: vec!["111122223333".into(), "123456789012".into()],
        ..Default::default()
    })
    .await;
    let mut admin = app.client(&app.admin_token).await;
    let key = moto_create_key(&moto_kms().await).await;
    register(&mut admin, &key).await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn the_account_list_is_checked_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("CALLVAULT_LOG", "warn")
            .output()
            .unwrap()
    };
    for (args, says) in [
        (
            &[
                "--kms",
                "aws",
                "--kms-key",
                "arn:aws:kms:us-east-1:123456789012:key/x",
                "--allowed-kms-accounts",
                "12345",
            ][..],
            "twelve digits",
        ),
        (
            &["--allowed-kms-accounts", "111122223333"][..],
            "use --kms aws",
        ),
    ] {
        let out = run(&[&["tenant", "create", "x"][..], args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{stderr}");
    }
}
