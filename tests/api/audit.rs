//! The audit trail: every kind of event, written ahead and fail-closed,
//! separation of duties, and `callvault audit verify` naming the first
//! index of every kind of tampering with the stored log.

use bytes::Bytes;
use callvault::api::pb;
use callvault::audit::event::{Action, Event};
use callvault::catalog::audit::{self as store, EventFilter};
use tonic::Code;

use crate::helpers::*;

/// Every event of the app's tenant log, in order.
pub(crate) async fn events(app: &TestApp) -> Vec<Event> {
    store::list(
        &mut *app.db().await,
        app.tenant.id.as_str(),
        &EventFilter::default(),
        None,
        10_000,
    )
    .await
    .unwrap()
}

pub(crate) fn of(events: &[Event], action: Action) -> Vec<&Event> {
    events.iter().filter(|e| e.action == action).collect()
}

async fn play_as(
    app: &TestApp,
    token: &str,
    id: &str,
    purpose: pb::PlaybackPurpose,
) -> Result<Vec<u8>, tonic::Status> {
    let mut c = app.client(token).await;
    let mut s = c
        .playback
        .play(pb::PlayRequest {
            recording_id: id.to_owned(),
            offset_bytes: 0,
            purpose: purpose.into(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend_from_slice(&m.data);
    }
    Ok(out)
}

async fn every_kind_of_access_is_an_event(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let audio = fixture("speech_pcm.wav");
    let rec = app
        .ingest("call-a", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap();
    let id = rec.recording_id.clone();
    // A retry deduplicates: an audited metadata read.
    assert!(
        app.ingest("call-a", audio.clone())
            .await
            .unwrap()
            .deduplicated
    );
    // A listen and a download.
    assert!(
        play_as(
            &app,
            &app.supervisor_token,
            &id,
            pb::PlaybackPurpose::Stream
        )
        .await
        .unwrap()
            == audio
    );
    assert!(
        play_as(
            &app,
            &app.compliance_token,
            &id,
            pb::PlaybackPurpose::Download
        )
        .await
        .unwrap()
            == audio
    );
    // Metadata reads.
    let mut sup = app.client(&app.supervisor_token).await;
    sup.playback
        .get_recording(pb::GetRecordingRequest {
            recording_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    sup.playback
        .list_recordings(pb::ListRecordingsRequest::default())
        .await
        .unwrap();
    // Refusals: the wrong role, an id the tenant does not have, a bad token.
    let err = play_as(&app, &app.ingest_token, &id, pb::PlaybackPurpose::Stream)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let (_, other_ingest, other_sup) = app.other_tenant("globex").await;
    let theirs = app
        .client(&other_ingest)
        .await
        .ingest_stream(
            {
                let mut h = header("call-theirs");
                h.chunk_size_bytes = 64 * 1024;
                h
            },
            callvault::client::pieces(audio.clone(), 64 * 1024),
        )
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let err = play_as(
        &app,
        &app.supervisor_token,
        &theirs,
        pb::PlaybackPurpose::Stream,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = play_as(&app, "cv_forged", &id, pb::PlaybackPurpose::Stream)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // The admin manages keys but reads neither audio nor the trail.
    let err = play_as(&app, &app.admin_token, &id, pb::PlaybackPurpose::Stream)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut admin = app.client(&app.admin_token).await;
    let err = admin
        .audit
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Key operations.
    admin
        .keys
        .set_rotation_policy(pb::SetRotationPolicyRequest { policy_days: 90 })
        .await
        .unwrap();
    let new_key = app.ring().create_key().unwrap();
    admin
        .keys
        .register_key(pb::RegisterKeyRequest {
            key_arn: new_key.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The compliance staff read the trail: itself an event.
    let mut comp = app.client(&app.compliance_token).await;
    comp.audit
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap();
    // Give the play-finish events (written as streams end) a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let log = events(&app).await;
    // Gapless, in order, each the tenant's own.
    for (i, e) in log.iter().enumerate() {
        assert_eq!(
            (e.index, e.log.as_str()),
            (i as u64, app.tenant.id.as_str())
        );
    }
    // The operator's bootstrap: the tenant and its four tokens, by user@host.
    assert_eq!(of(&log, Action::TenantCreated).len(), 1);
    assert_eq!(of(&log, Action::TokenCreated).len(), 4);
    assert!(of(&log, Action::TokenCreated)[0].actor.id.contains('@'));
    let ingested = of(&log, Action::RecordingIngested);
    assert_eq!(ingested.len(), 1);
    assert_eq!(ingested[0].recordings, vec![id.clone()]);
    assert_eq!(ingested[0].details["sha256"], rec.sha256.as_str());
    assert_eq!(ingested[0].details["key_arn"], rec.kms_key_arn.as_str());
    assert_eq!(ingested[0].details["size_bytes"], rec.size_bytes);
    assert_eq!(of(&log, Action::RecordingDeduplicated).len(), 1);
    let started = of(&log, Action::PlaybackStarted);
    let purposes: Vec<_> = started
        .iter()
        .map(|e| e.details["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, vec!["stream", "download"]);
    let finished = of(&log, Action::PlaybackFinished);
    assert_eq!(finished.len(), 2, "{finished:?}");
    for f in &finished {
        assert_eq!(f.details["bytes_sent"], audio.len() as u64);
        assert_eq!(f.details["completed"], true);
        assert_eq!(f.details["from_byte"], 0);
        assert!(f.details["to_ms"].as_u64().unwrap() > 14_000);
    }
    // Each play's finish event names its own actor. They are written as
    // the server's streams end, which under load need not be the order
    // the clients finished reading in.
    let mut roles: Vec<_> = finished.iter().map(|f| f.actor.role).collect();
    roles.sort_by_key(|r| r.map(|r| r.as_str()));
    assert_eq!(
        roles,
        vec![
            Some(callvault::domain::Role::Compliance),
            Some(callvault::domain::Role::Supervisor)
        ]
    );
    assert_eq!(of(&log, Action::RecordingRead).len(), 1);
    let listed = of(&log, Action::RecordingsListed);
    assert_eq!(listed[0].recordings, vec![id.clone()]);
    let refused = of(&log, Action::AccessRefused);
    let reasons: Vec<_> = refused
        .iter()
        .map(|e| {
            (
                e.actor.role,
                e.details["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(r, why)| *r == Some(callvault::domain::Role::Ingest)
                && why.contains("may not read")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(_, why)| why == "not found"),
        "{reasons:?}"
    );
    assert!(
        refused.iter().any(|e| e.recordings == vec![theirs.clone()]),
        "the attempt names the other tenant's id"
    );
    assert!(
        reasons
            .iter()
            .any(|(r, why)| *r == Some(callvault::domain::Role::Admin) && why.contains("audit")),
        "{reasons:?}"
    );
    assert_eq!(of(&log, Action::RotationPolicySet).len(), 1);
    let registered = of(&log, Action::KeyRegistered);
    assert_eq!(registered[0].details["key_arn"], new_key.as_str());
    assert!(!of(&log, Action::AuditRead).is_empty());
    // The other tenant's log has its own events; the forged token is in
    // the system log, with the client's address.
    let theirs_log = store::list(
        &mut *app.db().await,
        "system",
        &EventFilter::default(),
        None,
        100,
    )
    .await
    .unwrap();
    assert!(
        theirs_log
            .iter()
            .any(|e| e.action == Action::AccessRefused && e.client.is_some())
    );
    let _ = other_sup;
    app.shutdown().await;
}

#[tokio::test]
async fn every_kind_of_access_is_an_event_on_sqlite() {
    every_kind_of_access_is_an_event(CatalogKind::Sqlite).await;
}

#[tokio::test]
async fn every_kind_of_access_is_an_event_on_postgres() {
    require!(Postgres);
    every_kind_of_access_is_an_event(CatalogKind::Postgres).await;
}

async fn system_events(app: &TestApp) -> u64 {
    store::size(&mut *app.db().await, callvault::audit::event::SYSTEM_LOG)
        .await
        .unwrap()
}

/// Events recorded at the same moment share one commit per 64 (one
/// counter update, one insert), keep their gapless numbering in the order
/// they were recorded, and verify like any others; a tenant's events and
/// the system log's do not mix.
async fn simultaneous_events_share_a_commit(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let log = callvault::audit::event::log_of(&app.tenant.id);
    let before = events(&app).await.len() as u64;
    let commits = app.archive.audit_commits.commits();
    let system_before = system_events(&app).await;
    // Each event is polled once before any is polled again: the first of
    // each log starts its commit, which cannot end before it is polled
    // again, and the others queue behind it.
    let mut tenant: Vec<_> = (0..100)
        .map(|i| {
            let event = callvault::audit::event::NewEvent::new(
                callvault::audit::trail::operator(),
                Action::RecordingRead,
            )
            .detail("n", i);
            Box::pin(callvault::audit::trail::record_in(&app.archive, log, event))
        })
        .collect();
    let mut system: Vec<_> = (0..3)
        .map(|_| {
            Box::pin(callvault::audit::trail::unknown_token(
                &app.archive,
                Some("127.0.0.1"),
                "group test",
            ))
        })
        .collect();
    for f in &mut tenant {
        assert!(futures::poll!(f.as_mut()).is_pending());
    }
    for f in &mut system {
        assert!(futures::poll!(f.as_mut()).is_pending());
    }
    let (answers, _) = tokio::join!(
        futures::future::join_all(tenant),
        futures::future::join_all(system),
    );
    let indices: Vec<u64> = answers.into_iter().map(|e| e.unwrap().index).collect();
    assert_eq!(indices, (before..before + 100).collect::<Vec<_>>());
    // Tenant: 1 alone, then 64 and 35 together; system: 1, then 2. A
    // background job's events, if any came meanwhile, may add theirs.
    let stored = events(&app).await;
    let system_after = system_events(&app).await;
    let others = (stored.len() as u64 - before - 100) + (system_after - system_before - 3);
    let made = app.archive.audit_commits.commits() - commits;
    assert!(
        (5..=5 + others).contains(&made),
        "{made} commits for 103 events and {others} others"
    );
    let ours: Vec<_> = stored[before as usize..]
        .iter()
        .map(|e| e.details.get("n").cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        ours,
        (0..100).map(serde_json::Value::from).collect::<Vec<_>>()
    );
    // A first caller that goes away during its commit (a client hanging
    // up) hands the events queued behind it to a task: they are answered.
    let next = before + 100;
    while app.archive.audit_commits.waiting(log).is_some() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let event = |i: i32| {
        callvault::audit::event::NewEvent::new(
            callvault::audit::trail::operator(),
            Action::RecordingRead,
        )
        .detail("late", i)
    };
    let mut first = Box::pin(callvault::audit::trail::record_in(
        &app.archive,
        log,
        event(0),
    ));
    assert!(futures::poll!(first.as_mut()).is_pending());
    assert_eq!(app.archive.audit_commits.waiting(log), Some(0));
    let mut queued: Vec<_> = (1..=10)
        .map(|i| {
            Box::pin(callvault::audit::trail::record_in(
                &app.archive,
                log,
                event(i),
            ))
        })
        .collect();
    for f in &mut queued {
        assert!(futures::poll!(f.as_mut()).is_pending());
    }
    assert_eq!(app.archive.audit_commits.waiting(log), Some(10));
    drop(first);
    let answers = futures::future::join_all(queued).await;
    let indices: Vec<u64> = answers.into_iter().map(|e| e.unwrap().index).collect();
    // One group: consecutive, after everything above (a background job's
    // event may come between).
    assert!(indices[0] >= next, "{indices:?}");
    assert_eq!(indices, (indices[0]..indices[0] + 10).collect::<Vec<_>>());
    let late: Vec<_> = events(&app)
        .await
        .iter()
        .filter_map(|e| e.details.get("late").cloned())
        .collect();
    // The first event was committed or rolled back, depending on how far
    // its commit had gone (a COMMIT sent is carried out); either way the
    // log stays gapless and in order.
    let from = i32::from(late.len() == 10);
    assert_eq!(
        late,
        (from..=10).map(serde_json::Value::from).collect::<Vec<_>>()
    );
    let (ok, text) = verify(&app, &[]).await;
    assert!(ok, "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn simultaneous_events_share_a_commit_on_sqlite() {
    simultaneous_events_share_a_commit(CatalogKind::Sqlite).await;
}

#[tokio::test]
async fn simultaneous_events_share_a_commit_on_postgres() {
    require!(Postgres);
    simultaneous_events_share_a_commit(CatalogKind::Postgres).await;
}

fn numbered(n: usize) -> callvault::audit::event::NewEvent {
    callvault::audit::event::NewEvent::new(
        callvault::audit::trail::operator(),
        Action::RecordingRead,
    )
    .detail("n", n)
}

/// Records event `n` through `archive`'s group commit; its index.
async fn record(archive: &callvault::archive::Archive, log: &str, n: usize) -> u64 {
    callvault::audit::trail::record_in(archive, log, numbered(n))
        .await
        .unwrap()
        .index
}

/// Two nodes appending to one tenant's log, each group commit numbering
/// from the size its node last left the log at (in one statement on
/// PostgreSQL) and from the counter when the other node, or a change's
/// transaction, moved it since: every event gets its own index, the log
/// has no gap, and it verifies.
async fn two_nodes_append_to_one_log(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let log = callvault::audit::event::log_of(&app.tenant.id);
    let other = callvault::archive::Archive::new(
        callvault::catalog::Catalog::connect(&app.db_url)
            .await
            .unwrap(),
        callvault::store::ChunkStore::local(&app.dir.path().join("objects")).unwrap(),
        app.ring().clone(),
        &callvault::kms::cache::KeyCacheConfig::default(),
        callvault::archive::Limits::default(),
        test_audit_key(),
    );
    let (a, b) = (&*app.archive, &other);
    let postgres = kind == CatalogKind::Postgres;
    let at_known =
        |archive: &callvault::archive::Archive| archive.audit_commits.commits_at_known_size();
    let before = events(&app).await.len() as u64;
    let mut indices = Vec::new();
    // A alone: its first commit learns the size, the next ones use it.
    let a_known = at_known(a);
    for n in 0..3 {
        indices.push(record(a, log, n).await);
    }
    assert_eq!(at_known(a) - a_known, if postgres { 2 } else { 0 });
    // B moves the counter; A's next commit finds its size stale and
    // numbers from the counter, then knows it again.
    indices.push(record(b, log, 3).await);
    let a_known = at_known(a);
    indices.push(record(a, log, 4).await);
    assert_eq!(at_known(a), a_known, "a stale size must not be appended at");
    indices.push(record(a, log, 5).await);
    assert_eq!(at_known(a) - a_known, u64::from(postgres));
    // A change's event, in its own transaction, moves it too.
    let mut tx = app.archive.catalog.begin().await.unwrap();
    let change = store::append(
        &mut tx,
        log,
        callvault::domain::now_ms(),
        "test-node",
        &test_audit_key(),
        numbered(6),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    indices.push(change.index);
    let a_known = at_known(a);
    indices.push(record(a, log, 7).await);
    assert_eq!(at_known(a), a_known);
    // Both at once, many times over.
    let (xs, ys) = tokio::join!(
        futures::future::join_all((8..28).map(|n| record(a, log, n))),
        futures::future::join_all((28..48).map(|n| record(b, log, n))),
    );
    indices.extend(xs);
    indices.extend(ys);
    indices.sort_unstable();
    assert_eq!(indices, (before..before + 48).collect::<Vec<_>>());
    // Each index holds the event that was answered with it.
    let stored = events(&app).await;
    let mut ns: Vec<u64> = stored[before as usize..]
        .iter()
        .map(|e| e.details["n"].as_u64().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..48).collect::<Vec<_>>());
    let (ok, text) = verify(&app, &[]).await;
    assert!(ok, "{text}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_append_to_one_log_on_sqlite() {
    two_nodes_append_to_one_log(CatalogKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_append_to_one_log_on_postgres() {
    require!(Postgres);
    two_nodes_append_to_one_log(CatalogKind::Postgres).await;
}

/// When the audit trail cannot be written, reads are refused with
/// UNAVAILABLE (never served unaudited) and an ingest does not commit.
#[tokio::test]
async fn reads_fail_closed_when_the_trail_cannot_be_written() {
    require!(Postgres);
    let app = spawn_app(CatalogKind::Postgres).await;
    let audio = fixture("speech_pcm.wav");
    let id = app
        .ingest("call-b", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let pool = app.archive.catalog.pool();
    for stmt in [
        "CREATE FUNCTION cv_no_audit() RETURNS trigger AS $$ BEGIN \
         RAISE EXCEPTION 'audit storage refused'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER cv_no_audit BEFORE INSERT ON audit_events FOR EACH ROW \
         EXECUTE FUNCTION cv_no_audit()",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(pool)
            .await
            .unwrap();
    }
    let err = play_as(
        &app,
        &app.supervisor_token,
        &id,
        pb::PlaybackPurpose::Stream,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("unaudited"), "{err:?}");
    let mut sup = app.client(&app.supervisor_token).await;
    let err = sup
        .playback
        .get_recording(pb::GetRecordingRequest {
            recording_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let err = sup
        .playback
        .list_recordings(pb::ListRecordingsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // An ingest whose event cannot be written does not commit.
    let err = app.ingest("call-c", audio.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    sqlx::query("DROP TRIGGER cv_no_audit ON audit_events")
        .execute(pool)
        .await
        .unwrap();
    let listed =
        callvault::catalog::recordings::list(&mut *app.db().await, &app.tenant.id, None, 10)
            .await
            .unwrap();
    assert_eq!(listed.len(), 1, "call-c was not committed");
    // And it works again once the trail does.
    assert!(
        play_as(
            &app,
            &app.supervisor_token,
            &id,
            pb::PlaybackPurpose::Stream
        )
        .await
        .unwrap()
            == audio
    );
    app.shutdown().await;
}

/// `callvault audit verify` against the server: its first output line, and
/// whether it succeeded.
async fn verify(app: &TestApp, extra: &[&str]) -> (bool, String) {
    let key = app.dir.path().join("verifier.key");
    std::fs::write(&key, test_audit_key().verifier().to_string()).unwrap();
    let mut args = vec!["audit", "verify", "--public-key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = cli_against(&app.addr, &app.compliance_token, &args).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A tenant log of some 30 events, with a checkpoint an auditor kept after
/// the first 20.
async fn a_log_with_history(kind: CatalogKind) -> (TestApp, std::path::PathBuf) {
    let app = spawn_app(kind).await;
    let audio = Bytes::from(callvault::synth::synth_wav(1, 8000, 1));
    let mut n = 0;
    while events(&app).await.len() < 20 {
        app.ingest(&format!("call-{n}"), audio.clone())
            .await
            .unwrap();
        n += 1;
    }
    let kept = app.dir.path().join("kept.checkpoint");
    let out = cli_against(
        &app.addr,
        &app.compliance_token,
        &["audit", "checkpoint", "-o", kept.to_str().unwrap()],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..5 {
        app.ingest(&format!("call-late-{i}"), audio.clone())
            .await
            .unwrap();
    }
    let out = cli_against(&app.addr, &app.compliance_token, &["audit", "checkpoint"]).await;
    assert!(out.status.success());
    (app, kept)
}

/// Each way of rewriting the stored log, and the index verify must name.
async fn tamper_case(kind: CatalogKind, case: &str) {
    let (app, kept) = a_log_with_history(kind).await;
    let kept_arg = kept.to_str().unwrap().to_owned();
    let (ok, text) = verify(&app, &["--checkpoint", &kept_arg]).await;
    assert!(
        ok && text.contains("OK"),
        "{case}: the untouched log verifies: {text}"
    );
    let pool = app.archive.catalog.pool();
    let log = app.tenant.id.as_str();
    let exec = |sql: String| async move {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap();
    };
    let size = events(&app).await.len() as u64;
    let expected_index = match case {
        "edit a field" => {
            exec(format!(
                "UPDATE audit_events SET event = REPLACE(event, '\"outcome\":\"ok\"', '\"outcome\":\"refused\"') \
                 WHERE tenant_id = '{log}' AND seq = 7"
            ))
            .await;
            7
        }
        "delete a middle row" => {
            exec(format!(
                "DELETE FROM audit_events WHERE tenant_id = '{log}' AND seq = 9"
            ))
            .await;
            9
        }
        "delete the tail" => {
            exec(format!(
                "DELETE FROM audit_events WHERE tenant_id = '{log}' AND seq >= 21"
            ))
            .await;
            exec(format!(
                "UPDATE audit_heads SET size = 21 WHERE tenant_id = '{log}'"
            ))
            .await;
            21
        }
        "reorder" => {
            exec(format!(
                "UPDATE audit_events SET seq = -1 WHERE tenant_id = '{log}' AND seq = 4"
            ))
            .await;
            exec(format!(
                "UPDATE audit_events SET seq = 4 WHERE tenant_id = '{log}' AND seq = 5"
            ))
            .await;
            exec(format!(
                "UPDATE audit_events SET seq = 5 WHERE tenant_id = '{log}' AND seq = -1"
            ))
            .await;
            4
        }
        "insert" => {
            // A copy of event 3 pushed in at index 12; later ones move up.
            for seq in (12..size).rev() {
                exec(format!(
                    "UPDATE audit_events SET seq = {} WHERE tenant_id = '{log}' AND seq = {seq}",
                    seq + 1
                ))
                .await;
            }
            exec(format!(
                "INSERT INTO audit_events (tenant_id, seq, time_ms, action, outcome, actor_id, event, leaf_hash, signature) \
                 SELECT tenant_id, 12, time_ms, action, outcome, actor_id, event, leaf_hash, signature \
                 FROM audit_events WHERE tenant_id = '{log}' AND seq = 3"
            ))
            .await;
            exec(format!(
                "UPDATE audit_heads SET size = size + 1 WHERE tenant_id = '{log}'"
            ))
            .await;
            12
        }
        "recompute the whole tree without the key" => {
            // Edit event 6 and make everything the catalog holds agree with
            // it: leaf hashes, signatures and checkpoints, under another key.
            let forger = callvault::audit::note::SignerKey::generate("callvault-test").unwrap();
            exec(format!(
                "UPDATE audit_events SET event = REPLACE(event, '\"outcome\":\"ok\"', '\"outcome\":\"failed\"') \
                 WHERE tenant_id = '{log}' AND seq = 6"
            ))
            .await;
            let rows = store::stored(&mut *app.db().await, log, 0, 10_000)
                .await
                .unwrap();
            let mut range = callvault::audit::merkle::CompactRange::new();
            for r in &rows {
                let leaf = callvault::audit::merkle::leaf_hash(r.canonical.as_bytes());
                if r.index >= 6 {
                    // From the edit on, as a forger must.
                    let sig = store::event_signature(&forger, &leaf);
                    sqlx::query("UPDATE audit_events SET leaf_hash = $1, signature = $2 WHERE tenant_id = $3 AND seq = $4")
                        .bind(leaf.as_bytes().to_vec())
                        .bind(sig.to_vec())
                        .bind(log)
                        .bind(r.index as i64)
                        .execute(pool)
                        .await
                        .unwrap();
                }
                range.append(leaf).unwrap();
            }
            let origin = callvault::audit::trail::origin(&app.archive, log);
            let note = callvault::audit::checkpoint::Checkpoint::new(
                &origin,
                range.size(),
                range.root(),
                Vec::new(),
            )
            .unwrap()
            .sign(&[&forger])
            .unwrap();
            exec(format!(
                "DELETE FROM audit_checkpoints WHERE tenant_id = '{log}'"
            ))
            .await;
            sqlx::query("INSERT INTO audit_checkpoints (tenant_id, size, root_hash, peaks, note, created_at_ms) VALUES ($1, $2, $3, $4, $5, 0)")
                .bind(log)
                .bind(range.size() as i64)
                .bind(range.root().as_bytes().to_vec())
                .bind(range.peaks().iter().flat_map(|p| p.as_bytes().to_vec()).collect::<Vec<u8>>())
                .bind(note)
                .execute(pool)
                .await
                .unwrap();
            6
        }
        other => panic!("no case {other}"),
    };
    let (ok, text) = verify(&app, &["--checkpoint", &kept_arg]).await;
    assert!(!ok, "{case}: verify must fail: {text}");
    assert!(
        text.contains(&format!("diverges at index {expected_index}")),
        "{case}: verify must name index {expected_index}: {text}"
    );
    app.shutdown().await;
}

macro_rules! tamper_cases {
    ($($name:ident: $case:literal),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test]
                async fn on_sqlite() {
                    tamper_case(CatalogKind::Sqlite, $case).await;
                }
                #[tokio::test]
                async fn on_postgres() {
                    require!(Postgres);
                    tamper_case(CatalogKind::Postgres, $case).await;
                }
            }
        )*
    };
}

tamper_cases!(
    tamper_edit_a_field: "edit a field",
    tamper_delete_a_middle_row: "delete a middle row",
    tamper_delete_the_tail: "delete the tail",
    tamper_reorder: "reorder",
    tamper_insert: "insert",
    tamper_recompute_the_whole_tree_without_the_key: "recompute the whole tree without the key",
);

/// An inclusion proof written by `audit prove` verifies offline, against
/// the pinned key, and fails when edited.
#[tokio::test]
async fn inclusion_proofs_verify_offline() {
    let (app, kept) = a_log_with_history(CatalogKind::Sqlite).await;
    let proof = app.dir.path().join("event-5.proof.json");
    let out = cli_against(
        &app.addr,
        &app.compliance_token,
        &[
            "audit",
            "prove",
            "--event",
            "5",
            "--checkpoint",
            kept.to_str().unwrap(),
            "-o",
            proof.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = app.dir.path().join("verifier.key");
    std::fs::write(&key, test_audit_key().verifier().to_string()).unwrap();
    // Offline: no server, no token.
    let offline = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
            .args([
                "audit",
                "verify-proof",
                file.to_str().unwrap(),
                "--public-key",
                key.to_str().unwrap(),
            ])
            .env_remove("CALLVAULT_SERVER")
            .env_remove("CALLVAULT_TOKEN")
            .output()
            .unwrap()
    };
    let out = offline(&proof);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK: event 5"));
    let text = std::fs::read_to_string(&proof).unwrap();
    let edited = app.dir.path().join("edited.proof.json");
    std::fs::write(
        &edited,
        text.replacen(
            "\\\"outcome\\\":\\\"ok\\\"",
            "\\\"outcome\\\":\\\"failed\\\"",
            1,
        ),
    )
    .unwrap();
    assert!(!offline(&edited).status.success(), "an edited event fails");
    app.shutdown().await;
}

/// Waits (up to 5 s) until `log` has no commit in progress and nothing held.
async fn settled(archive: &callvault::archive::Archive, log: &str) {
    let commits = &archive.audit_commits;
    for _ in 0..1000 {
        if commits.waiting(log).is_none() && commits.held(log) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{log}: events still held or committing after 5 s");
}

/// `(index, n)` of the events from `numbered`, in log order.
async fn numbered_events(app: &TestApp) -> Vec<(u64, u64)> {
    events(app)
        .await
        .iter()
        .filter_map(|e| Some((e.index, e.details.get("n")?.as_u64()?)))
        .collect()
}

/// An event nobody waits on (a read-out stream's closing event) is held:
/// the log's next event commits it in one group, ahead of itself, instead
/// of queueing behind its commit; one that no event comes for commits
/// alone after `HOLD`; one that arrives during a commit joins the next
/// group; and a play's closing event is in the log when its node has
/// stopped.
async fn held_events_commit_with_the_next_one(kind: CatalogKind) {
    use callvault::audit::trail;
    let mut app = spawn_app(kind).await;
    let archive = app.archive.clone();
    let log = callvault::audit::event::log_of(&app.tenant.id);
    let commits = &archive.audit_commits;
    let before = events(&app).await.len();
    let made_before = commits.commits();
    trail::hold_in(&archive, log, numbered(0));
    trail::hold_in(&archive, log, numbered(1));
    assert_eq!((commits.held(log), commits.waiting(log)), (2, None));
    let index = record(&archive, log, 2).await;
    assert_eq!(commits.held(log), 0);
    let ours = numbered_events(&app).await;
    assert_eq!(
        ours,
        vec![(index - 2, 0), (index - 1, 1), (index, 2)],
        "held events go first, in the order they were held"
    );
    let others = (events(&app).await.len() - before - 3) as u64;
    let made = commits.commits() - made_before;
    assert!(
        (1..=1 + others).contains(&made),
        "{made} commits for 3 events and {others} others"
    );

    // Held, and nothing comes: it commits alone once its time is up.
    trail::hold_in(&archive, log, numbered(3));
    assert_eq!(commits.held(log), 1);
    tokio::time::sleep(trail::HOLD * 2).await;
    settled(&archive, log).await;
    assert_eq!(numbered_events(&app).await.last().map(|e| e.1), Some(3));

    // Held while the log is being committed: it waits in that log's queue.
    let mut first = Box::pin(trail::record_in(&archive, log, numbered(4)));
    assert!(futures::poll!(first.as_mut()).is_pending());
    trail::hold_in(&archive, log, numbered(5));
    assert_eq!((commits.held(log), commits.waiting(log)), (0, Some(1)));
    let index = first.await.unwrap().index;
    settled(&archive, log).await;
    let ours = numbered_events(&app).await;
    assert_eq!(ours[ours.len() - 2..], [(index, 4), (index + 1, 5)]);

    // The event that takes held events commits them in its caller's task,
    // and returns once its own group is in, while the groups queued behind
    // it go on (in a task when the caller stops polling them).
    trail::hold_in(&archive, log, numbered(10));
    let mut taker = Box::pin(trail::record_in(&archive, log, numbered(11)));
    assert!(futures::poll!(taker.as_mut()).is_pending());
    assert_eq!((commits.held(log), commits.waiting(log)), (0, Some(0)));
    let mut behind: Vec<_> = (12..12 + 70)
        .map(|n| Box::pin(trail::record_in(&archive, log, numbered(n))))
        .collect();
    for f in &mut behind {
        assert!(futures::poll!(f.as_mut()).is_pending());
    }
    assert_eq!(commits.waiting(log), Some(70));
    let taken = taker.await.unwrap().index;
    let behind: Vec<u64> = futures::future::join_all(behind)
        .await
        .into_iter()
        .map(|e| e.unwrap().index)
        .collect();
    assert_eq!(behind, (taken + 1..taken + 71).collect::<Vec<_>>());
    settled(&archive, log).await;
    let ours = numbered_events(&app).await;
    assert_eq!(ours[ours.len() - 72].1, 10, "the held event goes first");

    // A node that stops commits what it holds.
    trail::hold_in(&archive, log, numbered(6));
    commits.flush(&archive).await;
    assert_eq!((commits.held(log), commits.waiting(log)), (0, None));
    assert_eq!(numbered_events(&app).await.last().map(|e| e.1), Some(6));

    let (ok, text) = verify(&app, &[]).await;
    assert!(ok, "{text}");

    // A play's closing event is held; it is in the log once the node stopped.
    let audio = fixture("speech_pcm.wav");
    let id = app
        .ingest("call-held", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let played = play_as(
        &app,
        &app.supervisor_token,
        &id,
        pb::PlaybackPurpose::Stream,
    )
    .await
    .unwrap();
    assert_eq!(played, audio);
    app.stop_server().await;
    let all = events(&app).await;
    let finished = of(&all, Action::PlaybackFinished);
    assert_eq!(finished.len(), 1, "{all:?}");
    assert_eq!(finished[0].details["bytes_sent"], audio.len() as u64);
    assert_eq!(finished[0].recordings, vec![id.clone()]);
    app.shutdown().await;
}

#[tokio::test]
async fn held_events_commit_with_the_next_one_on_sqlite() {
    held_events_commit_with_the_next_one(CatalogKind::Sqlite).await;
}

#[tokio::test]
async fn held_events_commit_with_the_next_one_on_postgres() {
    require!(Postgres);
    held_events_commit_with_the_next_one(CatalogKind::Postgres).await;
}
