//! An acknowledged recording is never lost, and a live upload is never
//! swept: faults injected at every step after the commit (a lost COMMIT
//! reply on the wire, a client gone before the answer, a row that fails to
//! read back, a commit that truly fails), upload leases against the
//! sweeper, and the per-node limits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use callvault::archive::Limits;
use callvault::catalog::{AbortOutcome, ChunkRow, CommitOutcome, Completion, NewRecording};
use callvault::domain::{ExternalCallId, RecordingId, now_ms};
use callvault::kms::WrapAlgorithm;
use tonic::Code;

use crate::helpers::*;
use crate::pg_proxy::PgProxy;

fn sha_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

/// The recording is whole: listed once, its objects all there, played back
/// byte for byte, and a retry of the call deduplicates to it.
async fn assert_intact(app: &TestApp, call_id: &str, id: &str, audio: &Bytes) {
    let listed =
        callvault::catalog::recordings::list(&mut *app.db().await, &app.tenant.id, None, 100)
            .await
            .unwrap();
    assert_eq!(listed.len(), 1, "exactly the one recording is listed");
    let row = &listed[0];
    assert_eq!(row.id.to_string(), id);
    let objects = app
        .archive
        .store
        .list_recording(&app.tenant.id, &row.id)
        .await
        .unwrap();
    assert_eq!(
        objects.len(),
        row.chunk_count as usize,
        "every chunk object kept"
    );
    assert_eq!(
        callvault::catalog::recordings::chunks(&mut *app.db().await, &app.tenant.id, &row.id)
            .await
            .unwrap()
            .len(),
        row.chunk_count as usize,
        "every chunk row kept"
    );
    let played = app.play(id).await.unwrap();
    assert!(played == *audio, "played bytes differ from the input");
    let again = app.ingest(call_id, audio.clone()).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.recording.unwrap().recording_id, id);
}

/// The review's finding: the reply to the COMMIT that completes an upload
/// is lost (the commit happened). The node must not clean the committed
/// recording up; it answers with the recording it committed.
#[tokio::test]
async fn a_lost_commit_reply_never_deletes_the_committed_recording() {
    require!(Postgres);
    let proxy = PgProxy::start("127.0.0.1:5432").await;
    let app = spawn_app_opts(AppOptions {
        kind: CatalogKind::Postgres,
        route_catalog: Some(proxy.router()),
        ..AppOptions::default()
    })
    .await;
    let audio = fixture("speech_pcm.wav");
    proxy.faults.lose_commit_reply.store(true, Ordering::SeqCst);
    let res = app.ingest("call-lost-reply", audio.clone()).await;
    assert_eq!(
        proxy.faults.fired.load(Ordering::SeqCst),
        1,
        "the fault hit the completing commit"
    );
    let rec = res
        .expect("the commit went through, so the ingest succeeds")
        .recording
        .unwrap();
    assert_eq!(rec.sha256, sha_hex(&audio));
    assert_intact(&app, "call-lost-reply", &rec.recording_id, &audio).await;
    app.shutdown().await;
}

/// The commit's reply is slow and the client gives up before it arrives:
/// the recording it never heard about is kept whole.
#[tokio::test]
async fn a_client_gone_before_the_answer_keeps_the_recording() {
    require!(Postgres);
    let proxy = PgProxy::start("127.0.0.1:5432").await;
    let app = spawn_app_opts(AppOptions {
        kind: CatalogKind::Postgres,
        route_catalog: Some(proxy.router()),
        ..AppOptions::default()
    })
    .await;
    let audio = fixture("speech_pcm.wav");
    proxy
        .faults
        .delay_commit_reply_ms
        .store(1500, Ordering::SeqCst);
    let mut h = header("call-gone");
    h.chunk_size_bytes = 64 * 1024;
    let mut client = app.client(&app.ingest_token).await;
    let body = callvault::client::pieces(audio.clone(), 64 * 1024);
    let gave_up =
        tokio::time::timeout(Duration::from_millis(500), client.ingest_stream(h, body)).await;
    assert!(gave_up.is_err(), "the client gave up before the answer");
    drop(client);
    // The node finishes the commit on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let id = loop {
        let rows =
            callvault::catalog::recordings::list(&mut *app.db().await, &app.tenant.id, None, 10)
                .await
                .unwrap();
        if let Some(r) = rows.first() {
            break r.id.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(proxy.faults.fired.load(Ordering::SeqCst), 1);
    // Give a (wrong) cleanup every chance to run before checking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_intact(&app, "call-gone", &id, &audio).await;
    app.shutdown().await;
}

/// The row fails to read back right after its commit (how the review
/// reproduced the loss). The ingest must not clean up; once the row reads
/// again, the recording plays whole.
async fn a_row_unreadable_after_commit_is_not_cleaned_up(kind: CatalogKind) {
    let app = spawn_app_opts(AppOptions {
        kind,
        ..AppOptions::default()
    })
    .await;
    let pool = app.archive.catalog.pool();
    // Completion makes the row undecodable (a format version beyond u8).
    let ddl: &[&str] = match kind {
        CatalogKind::Sqlite => &[
            "CREATE TRIGGER cv_garble AFTER UPDATE OF status ON recordings \
             WHEN NEW.status = 'complete' BEGIN \
             UPDATE recordings SET format_version = 99999 \
             WHERE tenant_id = NEW.tenant_id AND recording_id = NEW.recording_id; END",
        ],
        CatalogKind::Postgres => &[
            "CREATE FUNCTION cv_garble() RETURNS trigger AS $$ BEGIN \
             NEW.format_version := 99999; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER cv_garble BEFORE UPDATE ON recordings FOR EACH ROW \
             WHEN (NEW.status = 'complete') EXECUTE FUNCTION cv_garble()",
        ],
    };
    for stmt in ddl {
        sqlx::query(sqlx::AssertSqlSafe(*stmt))
            .execute(pool)
            .await
            .unwrap();
    }
    let audio = fixture("speech_pcm.wav");
    let res = app.ingest("call-garbled", audio.clone()).await;
    // Whatever the answer, nothing committed may be gone: repair the row.
    sqlx::query("DROP TRIGGER cv_garble ON recordings")
        .execute(pool)
        .await
        .or(sqlx::query("DROP TRIGGER cv_garble").execute(pool).await)
        .unwrap();
    sqlx::query("UPDATE recordings SET format_version = 1")
        .execute(pool)
        .await
        .unwrap();
    let rows = callvault::catalog::recordings::list(&mut *app.db().await, &app.tenant.id, None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    if let Ok(r) = &res {
        assert_eq!(
            r.recording.as_ref().unwrap().recording_id,
            rows[0].id.to_string()
        );
    }
    assert_intact(&app, "call-garbled", &rows[0].id.to_string(), &audio).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_row_unreadable_after_commit_is_not_cleaned_up_on_sqlite() {
    a_row_unreadable_after_commit_is_not_cleaned_up(CatalogKind::Sqlite).await;
}

#[tokio::test]
async fn a_row_unreadable_after_commit_is_not_cleaned_up_on_postgres() {
    require!(Postgres);
    a_row_unreadable_after_commit_is_not_cleaned_up(CatalogKind::Postgres).await;
}

/// A commit that truly fails (a deferred check refuses it at COMMIT time)
/// leaves nothing: no row, no chunk, no object, no queued work; a retry
/// then succeeds.
#[tokio::test]
async fn a_commit_that_truly_fails_leaves_nothing_behind() {
    require!(Postgres);
    let app = spawn_app(CatalogKind::Postgres).await;
    let pool = app.archive.catalog.pool();
    for stmt in [
        "CREATE FUNCTION cv_refuse() RETURNS trigger AS $$ BEGIN \
         RAISE EXCEPTION 'injected commit failure'; END $$ LANGUAGE plpgsql",
        "CREATE CONSTRAINT TRIGGER cv_refuse AFTER UPDATE ON recordings \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.status = 'complete') \
         EXECUTE FUNCTION cv_refuse()",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(pool)
            .await
            .unwrap();
    }
    let audio = fixture("speech_pcm.wav");
    let err = app.ingest("call-refused", audio.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    use sqlx::Row;
    for table in ["recordings", "chunks", "object_deletions"] {
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table}"
        )))
        .fetch_one(pool)
        .await
        .unwrap()
        .get("n");
        assert_eq!(n, 0, "{table} holds leftovers");
    }
    assert_eq!(count_objects(&app), 0, "objects left behind");
    sqlx::query("DROP TRIGGER cv_refuse ON recordings")
        .execute(pool)
        .await
        .unwrap();
    let rec = app
        .ingest("call-refused", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap();
    assert_intact(&app, "call-refused", &rec.recording_id, &audio).await;
    app.shutdown().await;
}

fn count_objects(app: &TestApp) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&app.dir.path().join("objects"))
}

/// An upload whose client sends `audio` with a pause after `before` bytes.
fn paused(
    audio: Bytes,
    before: usize,
    pause: Duration,
) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut paused = false;
        for at in (0..audio.len()).step_by(16 * 1024) {
            if at >= before && !paused {
                paused = true;
                tokio::time::sleep(pause).await;
            }
            let end = (at + 16 * 1024).min(audio.len());
            if tx.send(audio.slice(at..end)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn short_lease() -> Limits {
    Limits {
        upload_lease: Duration::from_millis(900),
        ..Limits::default()
    }
}

/// A call on hold: the client is connected and sends nothing for several
/// leases. The node keeps renewing the lease, so the sweeper (running every
/// half lease) leaves it alone and the upload commits whole.
#[tokio::test]
async fn a_paused_upload_outlives_its_lease_while_connected() {
    require!(Postgres);
    for kind in [CatalogKind::Sqlite, CatalogKind::Postgres] {
        let app = spawn_app_opts(AppOptions {
            kind,
            limits: short_lease(),
            ..AppOptions::default()
        })
        .await;
        let audio = fixture("speech_pcm.wav");
        let mut h = header("call-on-hold");
        h.chunk_size_bytes = 64 * 1024;
        let body = paused(audio.clone(), 96 * 1024, Duration::from_millis(3500));
        let rec = app
            .client(&app.ingest_token)
            .await
            .ingest_stream(h, body)
            .await
            .unwrap_or_else(|s| panic!("{kind:?}: {s:?}"))
            .recording
            .unwrap();
        assert_intact(&app, "call-on-hold", &rec.recording_id, &audio).await;
        app.shutdown().await;
    }
}

/// An upload whose lease ran out anyway (its node could not renew it) and
/// was swept is told so precisely when its client goes on, and nothing of
/// it remains.
#[tokio::test]
async fn a_swept_upload_is_told_so_and_leaves_nothing() {
    require!(Postgres);
    let app = spawn_app_opts(AppOptions {
        kind: CatalogKind::Postgres,
        limits: Limits {
            upload_lease: Duration::from_secs(60),
            ..Limits::default()
        },
        ..AppOptions::default()
    })
    .await;
    let audio = fixture("speech_pcm.wav");
    let mut h = header("call-swept");
    h.chunk_size_bytes = 64 * 1024;
    let body = paused(audio.clone(), 96 * 1024, Duration::from_millis(1500));
    let mut client = app.client(&app.ingest_token).await;
    let upload = tokio::spawn(async move { client.ingest_stream(h, body).await });
    // While the client pauses, its lease is made to run out and swept.
    let pool = app.archive.catalog.pool();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while callvault::catalog::recordings::expired_uploads(&mut *app.db().await, i64::MAX, 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "upload never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("UPDATE recordings SET lease_until_ms = 0")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(app.archive.sweep_expired_uploads().await.unwrap(), 1);
    let err = upload.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(
        err.message().contains("lease expired") && err.message().contains("retry"),
        "{err:?}"
    );
    // Whatever the upload wrote after the sweep went too.
    app.archive.delete_queued_objects().await.unwrap();
    assert_eq!(count_objects(&app), 0, "objects left behind");
    assert!(
        callvault::catalog::recordings::pending_object_deletions(&mut *app.db().await, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let rec = app
        .ingest("call-swept", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap();
    assert_intact(&app, "call-swept", &rec.recording_id, &audio).await;
    app.shutdown().await;
}

fn new_upload(app: &TestApp, call: &str, lease_until_ms: i64) -> NewRecording {
    NewRecording {
        tenant: app.tenant.id.clone(),
        id: RecordingId::new(),
        external_call_id: ExternalCallId::parse(call).unwrap(),
        format_version: 1,
        key_arn: callvault::domain::KeyArn::parse("k", "arn:callvault:kms:local:local:key/k")
            .unwrap(),
        kms_region: "local".into(),
        wrap_algorithm: WrapAlgorithm::SymmetricDefault,
        wrapped_key: vec![1; 8],
        encryption_context: "{}".into(),
        salt: vec![0; 32],
        nonce_prefix: vec![0; 7],
        commitment: vec![0; 32],
        chunk_size: 65536,
        labels_sealed: None,
        start_time_ms: None,
        created_at_ms: now_ms(),
        lease_until_ms,
        retain_until_ms: None,
        retention_rule: None,
        participants_sealed: None,
        index: None,
    }
}

fn last_chunk() -> ChunkRow {
    ChunkRow {
        index: 0,
        plaintext_size: 10,
        sealed_size: 26,
        sealed_checksum: callvault::checksum::SealedChecksum::of(b"sealed"),
        object_key: "k/0".into(),
    }
}

fn done() -> Completion {
    Completion {
        chunk_count: 1,
        size_bytes: 10,
        sha256: "11".repeat(32),
        audio: Default::default(),
    }
}

/// Commit and sweep exclude each other in the catalog, whichever takes the
/// row first, with the other forced to run while the first is open.
async fn commit_and_sweep_exclude_each_other(kind: CatalogKind) {
    let mut app = spawn_app(kind).await;
    // The server's own sweeper would race the forced interleavings below.
    app.stop_server().await;
    let catalog = &app.archive.catalog;
    let expired = now_ms() - 1;

    // The commit holds the row; the sweep runs meanwhile and must wait,
    // then find the recording committed and leave it.
    let r1 = new_upload(&app, "call-x1", expired);
    callvault::catalog::recordings::begin_upload(&mut catalog.conn().await.unwrap(), &r1)
        .await
        .unwrap();
    let mut commit_tx = catalog.begin().await.unwrap();
    assert_eq!(
        callvault::catalog::recordings::commit_upload(
            &mut commit_tx,
            &app.tenant.id,
            &r1.id,
            &[last_chunk()],
            &done()
        )
        .await
        .unwrap(),
        CommitOutcome::Committed
    );
    let (c2, t, id) = (catalog.clone(), app.tenant.id.clone(), r1.id);
    let sweep = tokio::spawn(async move {
        let mut tx = c2.begin().await.unwrap();
        let out = callvault::catalog::recordings::abort_upload(
            &mut tx,
            &t,
            &id,
            "lease expired",
            Some(now_ms()),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        out
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sweep.is_finished(), "the sweep waited for the commit");
    commit_tx.commit().await.unwrap();
    assert_eq!(sweep.await.unwrap(), AbortOutcome::Committed);
    assert!(
        callvault::catalog::recordings::get(
            &mut catalog.conn().await.unwrap(),
            &app.tenant.id,
            &r1.id
        )
        .await
        .is_ok()
    );
    assert_eq!(
        callvault::catalog::recordings::chunks(
            &mut catalog.conn().await.unwrap(),
            &app.tenant.id,
            &r1.id
        )
        .await
        .unwrap()
        .len(),
        1
    );

    // The sweep holds the row; the commit runs meanwhile and must wait,
    // then learn the upload was swept.
    let r2 = new_upload(&app, "call-x2", expired);
    callvault::catalog::recordings::begin_upload(&mut catalog.conn().await.unwrap(), &r2)
        .await
        .unwrap();
    let mut sweep_tx = catalog.begin().await.unwrap();
    assert_eq!(
        callvault::catalog::recordings::abort_upload(
            &mut sweep_tx,
            &app.tenant.id,
            &r2.id,
            "lease expired",
            Some(now_ms())
        )
        .await
        .unwrap(),
        AbortOutcome::Removed
    );
    let (c2, t, id) = (catalog.clone(), app.tenant.id.clone(), r2.id);
    let commit = tokio::spawn(async move {
        let mut tx = c2.begin().await.unwrap();
        callvault::catalog::recordings::commit_upload(&mut tx, &t, &id, &[last_chunk()], &done())
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!commit.is_finished(), "the commit waited for the sweep");
    sweep_tx.commit().await.unwrap();
    let err = commit.await.unwrap().unwrap_err();
    assert!(
        matches!(err, callvault::error::Error::UploadSwept(_)),
        "{err:?}"
    );
    assert!(
        callvault::catalog::recordings::get(
            &mut catalog.conn().await.unwrap(),
            &app.tenant.id,
            &r2.id
        )
        .await
        .is_err()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn commit_and_sweep_exclude_each_other_on_postgres() {
    require!(Postgres);
    commit_and_sweep_exclude_each_other(CatalogKind::Postgres).await;
}

#[tokio::test]
async fn commit_and_sweep_exclude_each_other_on_sqlite() {
    commit_and_sweep_exclude_each_other(CatalogKind::Sqlite).await;
}

/// A tenant at its limit of uploads in flight on a node is refused with
/// RESOURCE_EXHAUSTED naming the limit; other tenants are not affected, and
/// a slot frees when an upload ends.
#[tokio::test]
async fn the_per_tenant_upload_limit_is_resource_exhausted() {
    let app = spawn_app_opts(AppOptions {
        limits: Limits {
            max_uploads_per_tenant: 2,
            ..Limits::default()
        },
        ..AppOptions::default()
    })
    .await;
    let audio = fixture("speech_pcm.wav");
    let mut held = Vec::new();
    for i in 0..2 {
        let mut h = header(&format!("call-held-{i}"));
        h.chunk_size_bytes = 64 * 1024;
        let body = paused(audio.clone(), 96 * 1024, Duration::from_millis(2000));
        let mut client = app.client(&app.ingest_token).await;
        held.push(tokio::spawn(
            async move { client.ingest_stream(h, body).await },
        ));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.archive.uploads.in_flight(&app.tenant.id) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "uploads never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = app.ingest("call-third", audio.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("2 uploads"), "{err:?}");
    let (_, other_ingest, _) = app.other_tenant("globex").await;
    let mut h = header("call-other");
    h.chunk_size_bytes = 64 * 1024;
    app.client(&other_ingest)
        .await
        .ingest_stream(h, callvault::client::pieces(audio.clone(), 64 * 1024))
        .await
        .expect("another tenant is not limited");
    for h in held {
        h.await.unwrap().unwrap();
    }
    app.ingest("call-third", audio).await.unwrap();
    app.shutdown().await;
}

/// A client that sends nothing at all for the idle timeout is given up on
/// with DEADLINE_EXCEEDED, and nothing of its upload remains.
#[tokio::test]
async fn an_idle_upload_is_abandoned_cleanly() {
    let app = spawn_app_opts(AppOptions {
        limits: Limits {
            upload_idle_timeout: Duration::from_millis(700),
            ..Limits::default()
        },
        ..AppOptions::default()
    })
    .await;
    let audio = fixture("speech_pcm.wav");
    let mut h = header("call-idle");
    h.chunk_size_bytes = 64 * 1024;
    let body = paused(audio.clone(), 96 * 1024, Duration::from_millis(2000));
    let err = app
        .client(&app.ingest_token)
        .await
        .ingest_stream(h, body)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("nothing of it was stored"),
        "{err:?}"
    );
    assert_eq!(count_objects(&app), 0);
    assert!(
        callvault::catalog::recordings::expired_uploads(&mut *app.db().await, i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    app.shutdown().await;
}

/// Play messages fit the 4 MiB every stock gRPC client accepts, whatever
/// the chunk size (up to 16 MiB).
#[tokio::test]
async fn play_messages_fit_stock_clients_at_any_chunk_size() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let audio = Bytes::from(callvault::synth::synth_wav(600, 16_000, 2));
    let mut h = header("call-big-chunks");
    h.chunk_size_bytes = 16 << 20;
    let rec = app
        .client(&app.ingest_token)
        .await
        .ingest_stream(h, callvault::client::pieces(audio.clone(), 1 << 20))
        .await
        .unwrap()
        .recording
        .unwrap();
    assert!(rec.chunk_count >= 2, "spans several 16 MiB chunks");
    // A stock client: default 4 MiB decoding limit.
    let channel = tonic::transport::Channel::from_shared(app.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", app.supervisor_token).parse().unwrap();
    let mut stock =
        callvault::api::pb::playback_service_client::PlaybackServiceClient::with_interceptor(
            channel,
            move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert("authorization", token.clone());
                Ok(req)
            },
        );
    let mut stream = stock
        .play(callvault::api::pb::PlayRequest {
            recording_id: rec.recording_id.clone(),
            offset_bytes: 12345,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut largest = 0;
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.offset_bytes as usize, 12345 + got.len());
        largest = largest.max(m.data.len());
        got.extend_from_slice(&m.data);
    }
    assert!(got == audio[12345..], "played bytes differ");
    assert!(
        largest <= callvault::playback::MAX_PLAY_MESSAGE_BYTES,
        "{largest}"
    );
    app.shutdown().await;
}
