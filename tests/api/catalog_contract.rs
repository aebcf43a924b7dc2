//! One contract suite for the catalog, run on SQLite and on a fresh
//! PostgreSQL database.

use callvault::catalog::{
    AbortOutcome, AudioInfo, Backend, Catalog, ChunkRow, CommitOutcome, Completion,
    KeyHealthRecord, NewRecording, NewTenantKey, Rewrapped,
};
use callvault::domain::{ExternalCallId, RecordingId, Role, TenantId, now_ms};
use callvault::kms::WrapAlgorithm;

use crate::helpers::*;

fn new_recording(tenant: &TenantId, call: &str) -> NewRecording {
    NewRecording {
        tenant: tenant.clone(),
        id: RecordingId::new(),
        external_call_id: ExternalCallId::parse(call).unwrap(),
        format_version: 1,
        key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
        kms_region: "us-east-1".into(),
        wrap_algorithm: WrapAlgorithm::SymmetricDefault,
        wrapped_key: vec![1, 2, 3],
        encryption_context: "{}".into(),
        salt: vec![0; 32],
        nonce_prefix: vec![0; 7],
        commitment: vec![9; 32],
        chunk_size: 65536,
        labels_sealed: Some(vec![7; 40]),
        start_time_ms: Some(1_700_000_000_000),
        created_at_ms: now_ms(),
        lease_until_ms: now_ms() + 60_000,
    }
}

/// Commits an upload in its own transaction (rolled back on a duplicate).
async fn commit(c: &Catalog, t: &TenantId, r: &RecordingId, last: &ChunkRow) -> CommitOutcome {
    let mut tx = c.begin().await.unwrap();
    let out = Catalog::commit_upload(&mut tx, t, r, last, &completion())
        .await
        .unwrap();
    match out {
        CommitOutcome::Committed => tx.commit().await.unwrap(),
        CommitOutcome::DuplicateCallId => tx.rollback().await.unwrap(),
    }
    out
}

/// Removes an upload in its own transaction.
async fn abort(
    c: &Catalog,
    t: &TenantId,
    r: &RecordingId,
    expired_before: Option<i64>,
) -> AbortOutcome {
    let mut tx = c.begin().await.unwrap();
    let out = Catalog::abort_upload(&mut tx, t, r, "test", expired_before)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    out
}

fn chunk(i: u32) -> ChunkRow {
    ChunkRow {
        index: i,
        plaintext_size: 65536,
        sealed_size: 65552,
        sealed_sha256: "ab".repeat(32),
        object_key: format!("k/{i}"),
    }
}

fn completion() -> Completion {
    Completion {
        chunk_count: 2,
        size_bytes: 131072,
        sha256: "cd".repeat(32),
        audio: AudioInfo {
            container: "wav".into(),
            codec: "pcm_s16le".into(),
            sample_rate_hz: 8000,
            channels: 1,
            duration_ms: 8192,
            warning: None,
        },
    }
}

async fn contract(c: Catalog) {
    let a = c.create_tenant("acme", "arn:a", "us-east-1").await.unwrap();
    let b = c
        .create_tenant("globex", "arn:b", "eu-west-1")
        .await
        .unwrap();
    assert!(
        c.create_tenant("acme", "arn:x", "r").await.is_err(),
        "tenant names are unique"
    );
    assert!(c.create_tenant("bad name!", "arn:x", "r").await.is_err());
    assert_eq!(c.tenant_by_name("acme").await.unwrap().id, a.id);
    assert_eq!(c.active_key(&b.id).await.unwrap().key_arn, "arn:b");

    let tok = c.create_token(&a.id, Role::Supervisor).await.unwrap();
    let p = c.authenticate(&tok).await.unwrap();
    assert_eq!((p.tenant, p.role), (a.id.clone(), Role::Supervisor));
    assert!(c.authenticate("cv_unknown").await.is_err());

    // Upload lifecycle: invisible until committed.
    let r = new_recording(&a.id, "call-1");
    c.begin_upload(&r).await.unwrap();
    c.add_chunk(&a.id, &r.id, &chunk(0)).await.unwrap();
    assert!(
        c.get_recording(&a.id, &r.id).await.is_err(),
        "uploading is not visible"
    );
    assert!(c.list_recordings(&a.id, None, 10).await.unwrap().is_empty());
    let call = ExternalCallId::parse("call-1").unwrap();
    assert_eq!(
        commit(&c, &a.id, &r.id, &chunk(1)).await,
        CommitOutcome::Committed
    );
    let got = c.get_recording(&a.id, &r.id).await.unwrap();
    assert_eq!(
        (got.chunk_count, got.size_bytes, got.audio.clone()),
        (2, 131072, completion().audio)
    );
    assert_eq!(got.labels_sealed, Some(vec![7; 40]));
    assert_eq!(
        c.chunks(&a.id, &r.id).await.unwrap(),
        vec![chunk(0), chunk(1)]
    );

    // Tenant isolation: the other tenant sees nothing.
    assert!(c.get_recording(&b.id, &r.id).await.is_err());
    assert!(c.chunks(&b.id, &r.id).await.unwrap().is_empty());
    assert!(c.list_recordings(&b.id, None, 10).await.unwrap().is_empty());
    assert!(c.find_by_call_id(&b.id, &call).await.unwrap().is_none());

    // A committed recording survives any cleanup: no row, chunk or queued
    // object deletion results.
    assert_eq!(abort(&c, &a.id, &r.id, None).await, AbortOutcome::Committed);
    assert_eq!(c.chunks(&a.id, &r.id).await.unwrap().len(), 2);
    assert!(c.get_recording(&a.id, &r.id).await.is_ok());
    assert!(c.pending_object_deletions(10).await.unwrap().is_empty());

    // A concurrent attempt with the same call id loses at commit.
    let r2 = new_recording(&a.id, "call-1");
    c.begin_upload(&r2).await.unwrap();
    assert_eq!(
        commit(&c, &a.id, &r2.id, &chunk(0)).await,
        CommitOutcome::DuplicateCallId
    );
    assert_eq!(
        c.find_by_call_id(&a.id, &call).await.unwrap().unwrap().id,
        r.id
    );
    assert_eq!(abort(&c, &a.id, &r2.id, None).await, AbortOutcome::Removed);
    assert_eq!(
        c.pending_object_deletions(10).await.unwrap(),
        vec![(a.id.clone(), r2.id)]
    );
    c.object_deletion_done(&a.id, &r2.id).await.unwrap();
    // The same call id in another tenant is a different call.
    let r3 = new_recording(&b.id, "call-1");
    c.begin_upload(&r3).await.unwrap();
    assert_eq!(
        commit(&c, &b.id, &r3.id, &chunk(0)).await,
        CommitOutcome::Committed
    );

    // Abandoned uploads are found by their lease and removed.
    let mut r4 = new_recording(&a.id, "call-4");
    r4.lease_until_ms = now_ms() + 60_000;
    c.begin_upload(&r4).await.unwrap();
    c.add_chunk(&a.id, &r4.id, &chunk(0)).await.unwrap();
    assert!(
        c.expired_uploads(now_ms(), 10).await.unwrap().is_empty(),
        "uploads within their lease are live"
    );
    let later = now_ms() + 120_000;
    assert_eq!(
        c.expired_uploads(later, 10).await.unwrap(),
        vec![(a.id.clone(), r4.id)]
    );
    // A renewal moves the lease past the sweep's cut-off: left alone.
    c.renew_upload_lease(&a.id, &r4.id, later + 60_000)
        .await
        .unwrap();
    assert_eq!(
        abort(&c, &a.id, &r4.id, Some(later)).await,
        AbortOutcome::Live
    );
    assert_eq!(
        abort(&c, &a.id, &r4.id, Some(later + 120_000)).await,
        AbortOutcome::Removed
    );
    assert!(c.expired_uploads(i64::MAX, 10).await.unwrap().is_empty());
    assert!(c.chunks(&a.id, &r4.id).await.unwrap().is_empty());
    // The swept upload's writer learns it precisely, at its next chunk or
    // renewal, and at its commit.
    let gone =
        |e: callvault::error::Error| matches!(e, callvault::error::Error::UploadAbandoned(_));
    assert!(gone(
        c.add_chunk(&a.id, &r4.id, &chunk(1)).await.unwrap_err()
    ));
    assert!(gone(
        c.renew_upload_lease(&a.id, &r4.id, later)
            .await
            .unwrap_err()
    ));
    let mut tx = c.begin().await.unwrap();
    assert!(gone(
        Catalog::commit_upload(&mut tx, &a.id, &r4.id, &chunk(1), &completion())
            .await
            .unwrap_err()
    ));
    drop(tx);
    // Its own cleanup then finds no row and queues its objects.
    assert_eq!(abort(&c, &a.id, &r4.id, None).await, AbortOutcome::Absent);

    keys_contract(&c, &a.id, &b.id, &r.id).await;
    c.close().await;
}

/// Key history, health records and rewrap leases. `rec` is tenant `a`'s one
/// committed recording, wrapped under KEY_K.
async fn keys_contract(c: &Catalog, a: &TenantId, b: &TenantId, rec: &RecordingId) {
    const KEY_K: &str = "arn:aws:kms:us-east-1:111122223333:key/k";
    // Activating a key keeps the old one in the history as `previous`.
    let k2 = c
        .activate_key(a, &NewTenantKey::symmetric("arn:k2", "us-east-1"))
        .await
        .unwrap();
    assert_eq!(
        (k2.status.as_str(), k2.algorithm),
        ("active", WrapAlgorithm::SymmetricDefault)
    );
    assert_eq!(c.active_key(a).await.unwrap().key_arn, "arn:k2");
    let history = c.tenant_keys(a).await.unwrap();
    let statuses: Vec<_> = history
        .iter()
        .map(|(k, _)| (k.key_arn.as_str(), k.status.as_str()))
        .collect();
    assert_eq!(statuses, vec![("arn:a", "previous"), ("arn:k2", "active")]);
    assert!(history[0].0.deactivated_at_ms.is_some());
    assert_eq!(
        c.active_key(b).await.unwrap().key_arn,
        "arn:b",
        "other tenants are untouched"
    );
    // Usage counts what each key protects, per tenant.
    let usage = c.key_usage(a).await.unwrap();
    let u = usage.get(KEY_K).copied().unwrap_or_default();
    assert_eq!((u.recordings, u.bytes, u.legal_hold), (1, 131072, 0));
    // Re-activating an older key works; the active one steps back.
    c.activate_key(a, &NewTenantKey::symmetric("arn:a", "us-east-1"))
        .await
        .unwrap();
    assert_eq!(c.active_key(a).await.unwrap().key_arn, "arn:a");
    assert!(
        c.retire_key(a, "arn:a").await.is_err(),
        "the active key cannot retire"
    );
    assert_eq!(c.retire_key(a, "arn:k2").await.unwrap().status, "retired");
    assert!(c.retire_key(a, "arn:none").await.is_err());
    assert!(
        c.keys_to_check()
            .await
            .unwrap()
            .iter()
            .all(|(_, k)| k.key_arn != "arn:k2"),
        "retired keys are not checked"
    );
    let health = KeyHealthRecord {
        state: "pending_deletion".into(),
        detail: None,
        deletion_date_ms: Some(1_900_000_000_000),
        checked_at_ms: 1_800_000_000_000,
    };
    c.record_key_health(a, "arn:a", &health).await.unwrap();
    assert_eq!(
        c.tenant_key(a, "arn:a").await.unwrap().unwrap().health,
        Some(health)
    );
    assert!(
        c.tenant_key(b, "arn:a").await.unwrap().is_none(),
        "keys are per tenant"
    );

    // Rewrap: one running job per tenant, budget windows, leases and
    // compare-and-set commits.
    let job = c.start_rewrap(a, KEY_K, "arn:k3", 100).await.unwrap();
    assert_eq!(
        (job.status.as_str(), job.total, job.rewrapped),
        ("running", 1, 0)
    );
    assert!(
        c.start_rewrap(a, KEY_K, "arn:k4", 100).await.is_err(),
        "one running job per tenant"
    );
    assert!(
        c.rewrap_job(b, &job.id).await.is_err(),
        "jobs are per tenant"
    );
    assert!(c.reserve_rewrap_budget(&job, 60).await.unwrap());
    assert!(
        !c.reserve_rewrap_budget(&job, 60).await.unwrap(),
        "the window's budget is spent"
    );
    assert!(c.reserve_rewrap_budget(&job, 40).await.unwrap());

    let first = c.lease_rewrap_batch(&job, 10).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(
        (first.items[0].recording, first.items[0].wrapped_key.clone()),
        (*rec, vec![1, 2, 3])
    );
    let second = c.lease_rewrap_batch(&job, 10).await.unwrap();
    let expected = if c.backend() == Backend::Postgres {
        0
    } else {
        1
    };
    assert_eq!(
        second.items.len(),
        expected,
        "PostgreSQL skips rows another lease holds"
    );
    let moved = Rewrapped {
        recording: *rec,
        old_wrapped_key: vec![1, 2, 3],
        key_arn: "arn:k3".into(),
        region: "us-east-1".into(),
        algorithm: WrapAlgorithm::RsaesOaepSha256,
        wrapped_key: vec![4, 5, 6],
    };
    assert_eq!(
        first.commit(c, std::slice::from_ref(&moved)).await.unwrap(),
        1
    );
    assert_eq!(
        second.commit(c, &[moved]).await.unwrap(),
        0,
        "a key moves at most once"
    );
    let job = c.rewrap_job(a, &job.id).await.unwrap();
    assert_eq!(job.rewrapped, 1);
    let row = c.get_recording(a, rec).await.unwrap();
    assert_eq!(
        (
            row.key_arn.as_str(),
            row.wrapped_key.clone(),
            row.wrap_algorithm
        ),
        ("arn:k3", vec![4, 5, 6], WrapAlgorithm::RsaesOaepSha256)
    );
    assert_eq!(c.remaining_under(a, KEY_K).await.unwrap(), 0);
    assert_eq!(
        c.remaining_under(b, KEY_K).await.unwrap(),
        1,
        "tenant b's recording stays"
    );
    assert!(
        c.finish_rewrap(a, &job.id, "succeeded", None)
            .await
            .unwrap()
    );
    assert!(
        !c.finish_rewrap(a, &job.id, "failed", Some("late"))
            .await
            .unwrap()
    );
    assert!(
        c.resume_rewrap(a, &job.id).await.is_err(),
        "only failed jobs resume"
    );
    assert_eq!(c.rewrap_job(a, &job.id).await.unwrap().status, "succeeded");
}

#[tokio::test]
async fn catalog_contract_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    contract(
        Catalog::connect(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn catalog_contract_on_postgres() {
    let (url, name) = fresh_pg_database().await;
    contract(Catalog::connect(&url).await.unwrap()).await;
    drop_pg_database(&name).await;
}
