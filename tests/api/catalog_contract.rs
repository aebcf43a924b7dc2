//! One contract suite for the catalog, run on SQLite and on a fresh
//! PostgreSQL database.

use callvault::catalog::{AudioInfo, Catalog, ChunkRow, CommitOutcome, Completion, NewRecording};
use callvault::domain::{ExternalCallId, RecordingId, Role, TenantId};

use crate::helpers::*;

fn new_recording(tenant: &TenantId, call: &str) -> NewRecording {
    NewRecording {
        tenant: tenant.clone(),
        id: RecordingId::new(),
        external_call_id: ExternalCallId::parse(call).unwrap(),
        format_version: 1,
        key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
        kms_region: "us-east-1".into(),
        wrapped_key: vec![1, 2, 3],
        encryption_context: "{}".into(),
        salt: vec![0; 32],
        nonce_prefix: vec![0; 7],
        commitment: vec![9; 32],
        chunk_size: 65536,
        labels_sealed: Some(vec![7; 40]),
        start_time_ms: Some(1_700_000_000_000),
    }
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
        c.commit_upload(&a.id, &r.id, &call, &chunk(1), &completion())
            .await
            .unwrap(),
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

    // A concurrent attempt with the same call id loses at commit.
    let r2 = new_recording(&a.id, "call-1");
    c.begin_upload(&r2).await.unwrap();
    assert_eq!(
        c.commit_upload(&a.id, &r2.id, &call, &chunk(0), &completion())
            .await
            .unwrap(),
        CommitOutcome::Duplicate(r.id)
    );
    c.abort_upload(&a.id, &r2.id).await.unwrap();
    // The same call id in another tenant is a different call.
    let r3 = new_recording(&b.id, "call-1");
    c.begin_upload(&r3).await.unwrap();
    assert_eq!(
        c.commit_upload(&b.id, &r3.id, &call, &chunk(0), &completion())
            .await
            .unwrap(),
        CommitOutcome::Committed
    );

    // Abandoned uploads are found by age and removed.
    let r4 = new_recording(&a.id, "call-4");
    c.begin_upload(&r4).await.unwrap();
    c.add_chunk(&a.id, &r4.id, &chunk(0)).await.unwrap();
    assert!(
        c.stale_uploads(60_000).await.unwrap().is_empty(),
        "fresh uploads are live"
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        c.stale_uploads(10).await.unwrap(),
        vec![(a.id.clone(), r4.id)]
    );
    c.abort_upload(&a.id, &r4.id).await.unwrap();
    assert!(c.stale_uploads(0).await.unwrap().is_empty());
    assert!(c.chunks(&a.id, &r4.id).await.unwrap().is_empty());
    c.close().await;
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
