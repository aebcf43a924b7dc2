//! Bring your own key: registration with a round trip, the key history,
//! rotation and rewrap (crash, two nodes), revocation across nodes and
//! within the cache TTL, key health and incidents, and write-only ingest
//! with an asymmetric key.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callvault::api::pb;
use callvault::client::Client;
use callvault::keys;
use callvault::kms::Kms;
use callvault::kms::cache::KeyCacheConfig;
use callvault::server::Roles;
use tonic::Code;

use crate::helpers::{CatalogKind, FaultKms, Remote, TestApp, fixture, spawn_app, spawn_app_with};

/// A small distinct recording per call id (1 s of 8 kHz mono PCM with the
/// call id mixed in), so many can be ingested quickly.
pub(crate) fn small_wav(i: u32) -> Bytes {
    let mut wav = callvault::synth::synth_wav(1, 8000, 1);
    let n = wav.len();
    wav[n - 4..].copy_from_slice(&i.to_le_bytes());
    Bytes::from(wav)
}

pub(crate) async fn active_arn(app: &TestApp) -> String {
    callvault::catalog::keys::active(&mut *app.db().await, &app.tenant.id)
        .await
        .unwrap()
        .key_arn
        .to_string()
}

/// Ingests through the app and returns the committed recording.
pub(crate) async fn archive_call(app: &TestApp, call: &str, audio: &Bytes) -> pb::Recording {
    app.ingest(call, audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
}

pub(crate) async fn start_rewrap(
    c: &mut Client,
    from: &str,
    to: &str,
    rate: u32,
) -> Result<pb::RewrapJob, tonic::Status> {
    c.keys
        .start_rewrap(pb::StartRewrapRequest {
            source_key_arn: from.to_owned(),
            destination_key_arn: to.to_owned(),
            max_kms_requests_per_second: rate,
        })
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn register(c: &mut Client, arn: &str) -> Result<pb::TenantKey, tonic::Status> {
    c.keys
        .register_key(pb::RegisterKeyRequest {
            key_arn: arn.to_owned(),
            replica_key_arns: Default::default(),
        })
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn list_keys(c: &mut Client) -> Vec<pb::TenantKey> {
    c.keys
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys
}

pub(crate) fn key<'a>(keys: &'a [pb::TenantKey], arn: &str) -> &'a pb::TenantKey {
    keys.iter().find(|k| k.key_arn == arn).unwrap()
}

/// Every object file of the local store, by path.
fn objects(app: &TestApp) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    fn walk(
        d: &std::path::Path,
        out: &mut std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    ) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = Default::default();
    walk(&app.dir.path().join("objects"), &mut out);
    out
}

pub(crate) async fn wait_for_job(c: &mut Client, id: &str) -> pb::RewrapJob {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = c
            .keys
            .get_rewrap_job(pb::GetRewrapJobRequest {
                job_id: id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        if job.state() != pb::JobState::Running {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "rewrap job did not finish: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rotation_keeps_old_calls_playable_and_rewrap_empties_the_old_key() {
    require!(Postgres);
    let app = spawn_app(CatalogKind::Postgres).await;
    let mut admin = app.client(&app.admin_token).await;
    let key_a = active_arn(&app).await;
    let key_b = app.ring().create_key().unwrap();
    let key_c = app.ring().create_key().unwrap();

    // Recordings under A, then B, then C.
    let mut recs = Vec::new();
    for (i, arn) in [
        (0, &key_a),
        (1, &key_a),
        (2, &key_a),
        (3, &key_b),
        (4, &key_b),
        (5, &key_c),
    ] {
        if i == 3 || i == 5 {
            let k = register(&mut admin, arn).await.unwrap();
            assert_eq!(k.status(), pb::KeyStatus::Active);
            assert_eq!(k.wrap_algorithm, "SYMMETRIC_DEFAULT");
        }
        let audio = small_wav(i);
        let r = app
            .ingest(&format!("rot-{i}"), audio.clone())
            .await
            .unwrap();
        let rec = r.recording.unwrap();
        assert_eq!(
            &rec.kms_key_arn, arn,
            "recording {i} is wrapped by the key active then"
        );
        recs.push((rec, audio));
    }
    for (rec, audio) in &recs {
        assert_eq!(app.play(&rec.recording_id).await.unwrap(), audio.as_ref());
    }

    let history = list_keys(&mut admin).await;
    assert_eq!(history.len(), 3);
    let size =
        |range: std::ops::Range<usize>| recs[range].iter().map(|(r, _)| r.size_bytes).sum::<u64>();
    for (arn, status, n, bytes) in [
        (&key_a, "previous", 3, size(0..3)),
        (&key_b, "previous", 2, size(3..5)),
        (&key_c, "active", 1, size(5..6)),
    ] {
        let k = key(&history, arn);
        assert_eq!(
            (
                crate::helpers::enum_word(k.status().as_str_name()).as_str(),
                k.recording_count,
                k.size_bytes
            ),
            (status, n, bytes),
            "{arn}"
        );
        assert!(k.activate_time.is_some());
    }
    // Activation order is the history order.
    assert_eq!(
        history
            .iter()
            .map(|k| k.key_arn.clone())
            .collect::<Vec<_>>(),
        vec![key_a.clone(), key_b.clone(), key_c.clone()]
    );
    // Paged one key at a time, the history is the same; a bad token or
    // page size is refused naming the field.
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .keys
            .list_keys(pb::ListKeysRequest {
                page_size: 1,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.keys.len() <= 1);
        paged.extend(page.keys);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(paged, history);
    for (page_size, page_token, field) in [
        (1001, String::new(), "page_size"),
        (1, "bm9wZQ".to_owned(), "page_token"),
    ] {
        let err = admin
            .keys
            .list_keys(pb::ListKeysRequest {
                page_size,
                page_token,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }

    // The active key cannot be rewrapped away: it still wraps new calls.
    let err = start_rewrap(&mut admin, &key_c, &key_a, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("is the active key"),
        "{}",
        err.message()
    );

    let before = objects(&app);
    let re_encrypts_before = app.archive.metrics.calls("ReEncrypt");
    let job = start_rewrap(&mut admin, &key_a, &key_c, 20).await.unwrap();
    assert_eq!(
        (
            crate::helpers::enum_word(job.state().as_str_name()).as_str(),
            job.total_count
        ),
        ("running", 3)
    );
    // The server's own rewrap worker runs it.
    let job = wait_for_job(&mut admin, &job.job_id).await;
    assert_eq!(job.state(), pb::JobState::Succeeded, "{job:?}");
    assert_eq!((job.rewrapped_count, job.total_count), (3, 3));
    assert_eq!(
        app.archive.metrics.calls("ReEncrypt") - re_encrypts_before,
        3
    );

    let history = list_keys(&mut admin).await;
    assert_eq!(
        key(&history, &key_a).recording_count,
        0,
        "key A protects nothing now"
    );
    assert_eq!(key(&history, &key_c).recording_count, 4);
    assert_eq!(
        objects(&app),
        before,
        "audio objects are byte-identical after the rewrap"
    );
    for (i, (rec, audio)) in recs.iter().enumerate() {
        let row = callvault::catalog::recordings::get(
            &mut *app.db().await,
            &app.tenant.id,
            &callvault::domain::RecordingId::parse("id", &rec.recording_id).unwrap(),
        )
        .await
        .unwrap();
        let expected = if i < 3 || i == 5 { &key_c } else { &key_b };
        assert_eq!(&row.key_arn, expected);
        assert_eq!(
            app.play(&rec.recording_id).await.unwrap(),
            audio.as_ref(),
            "recording {i}"
        );
    }
    // Disabling A now affects nothing: no recording depends on it.
    app.ring().set_enabled(&key_a, false).unwrap();
    app.archive.keys.purge_all();
    for (rec, audio) in &recs {
        assert_eq!(app.play(&rec.recording_id).await.unwrap(), audio.as_ref());
    }

    // Retiring: A can go; B still protects recordings; C is active.
    let retired = admin
        .keys
        .retire_key(pb::RetireKeyRequest {
            key_arn: key_a.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retired.status(), pb::KeyStatus::Retired);
    let err = admin
        .keys
        .retire_key(pb::RetireKeyRequest {
            key_arn: key_b.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("still protects 2 recordings"),
        "{}",
        err.message()
    );
    let err = admin
        .keys
        .retire_key(pb::RetireKeyRequest {
            key_arn: key_c.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // KMS cost visibility: calls per tenant, operation and region.
    let metrics = app.archive.metrics.render_prometheus();
    let line = format!(
        "callvault_kms_tenant_requests_total{{tenant=\"{}\",operation=\"ReEncrypt\",region=\"local\"}} 3",
        app.tenant.id
    );
    assert!(metrics.contains(&line), "{metrics}");
    app.shutdown().await;
}

#[tokio::test]
async fn rewrap_resumes_after_a_crash_and_two_nodes_share_it_exactly_once() {
    require!(Postgres);
    let mut app = spawn_app(CatalogKind::Postgres).await;
    let mut admin = app.client(&app.admin_token).await;
    const N: u32 = 24;
    let mut recs = Vec::new();
    for i in 0..N {
        let audio = small_wav(i);
        let rec = archive_call(&app, &format!("crash-{i}"), &audio).await;
        recs.push((rec, audio));
    }
    let key_a = recs[0].0.kms_key_arn.clone();
    let key_c = app.ring().create_key().unwrap();
    register(&mut admin, &key_c).await.unwrap();
    let ring: Arc<dyn Kms> = app.ring().clone();

    // The nodes below are to be the only workers: the app's server (all
    // roles) would run the job too, so it stops and the job starts through
    // the use case.
    app.stop_server().await;
    let job = keys::start_rewrap(
        &app.archive,
        &callvault::domain::Principal::new(
            app.tenant.id.clone(),
            callvault::domain::Role::Admin,
            "test-admin",
        ),
        &key_a,
        &key_c,
        10,
    )
    .await
    .unwrap();
    let tenant = app.tenant.id.clone();

    // Node X moves one batch (5 at 10 requests/s), then hangs inside the
    // second batch's first ReEncrypt and dies.
    let crashing = Arc::new(FaultKms {
        stall_after_re_encrypts: Some(5),
        ..FaultKms::over(ring.clone())
    });
    let x = app
        .node_archive(crashing.clone(), &KeyCacheConfig::default())
        .await;
    let worker = {
        let (x, id, tenant) = (x.clone(), job.id.clone(), tenant.clone());
        tokio::spawn(async move { keys::work_on(&x, &id, &tenant).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while crashing.re_encrypts.load(Ordering::SeqCst) < 6 {
        assert!(
            Instant::now() < deadline,
            "node X never reached its second batch"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.abort();
    let _ = worker.await;
    x.catalog.close().await; // the dead node's connections go away
    let after_crash = callvault::catalog::rewrap::get(&mut *app.db().await, &tenant, &job.id)
        .await
        .unwrap();
    assert_eq!(after_crash.status, callvault::domain::JobStatus::Running);
    assert_eq!(
        after_crash.rewrapped, 5,
        "the batch in flight at the crash was rolled back"
    );
    assert_eq!(
        callvault::catalog::keys::count_under(
            &mut *app.db().await,
            &tenant,
            &callvault::domain::KeyArn::parse("k", &key_a).unwrap()
        )
        .await
        .unwrap(),
        u64::from(N) - 5
    );

    // Nodes Y and Z resume the job together.
    let slow = |ring: Arc<dyn Kms>| {
        Arc::new(FaultKms {
            delay: Duration::from_millis(15),
            ..FaultKms::over(ring)
        })
    };
    let (ky, kz) = (slow(ring.clone()), slow(ring.clone()));
    let y = app
        .node_archive(ky.clone(), &KeyCacheConfig::default())
        .await;
    let z = app
        .node_archive(kz.clone(), &KeyCacheConfig::default())
        .await;
    let (ry, rz) = tokio::join!(keys::drain_rewrap_jobs(&y), keys::drain_rewrap_jobs(&z));
    ry.unwrap();
    rz.unwrap();
    let (ny, nz) = (
        ky.re_encrypts.load(Ordering::SeqCst),
        kz.re_encrypts.load(Ordering::SeqCst),
    );
    assert_eq!(
        ny + nz,
        N as usize - 5,
        "every remaining recording rewrapped exactly once"
    );
    assert!(ny > 0 && nz > 0, "both nodes took part (Y {ny}, Z {nz})");

    let done = callvault::catalog::rewrap::get(&mut *app.db().await, &tenant, &job.id)
        .await
        .unwrap();
    assert_eq!(done.status, callvault::domain::JobStatus::Succeeded);
    assert_eq!((done.rewrapped, done.total), (u64::from(N), u64::from(N)));
    assert_eq!(
        callvault::catalog::keys::count_under(
            &mut *app.db().await,
            &tenant,
            &callvault::domain::KeyArn::parse("k", &key_a).unwrap()
        )
        .await
        .unwrap(),
        0
    );
    let player = app
        .node(
            ring.clone(),
            Roles {
                ingest: false,
                playback: true,
                admin: false,
            },
            &KeyCacheConfig::default(),
        )
        .await;
    let mut p = player.client(&app.supervisor_token).await;
    for (rec, audio) in &recs {
        assert_eq!(
            p.play_all(&rec.recording_id, 0).await.unwrap().0,
            audio.as_ref()
        );
    }
    player.stop().await;
    y.catalog.close().await;
    z.catalog.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_revoked_key_fails_on_every_node_and_never_blocks_other_keys() {
    require!(Postgres);
    let app = spawn_app(CatalogKind::Postgres).await;
    let mut admin = app.client(&app.admin_token).await;
    let key_a = active_arn(&app).await;
    let audio_a = fixture("speech_mulaw.wav");
    let rec_a = archive_call(&app, "rev-a", &audio_a).await;
    let key_b = app.ring().create_key().unwrap();
    register(&mut admin, &key_b).await.unwrap();
    let audio_b = fixture("speech.flac");
    let rec_b = archive_call(&app, "rev-b", &audio_b).await;

    // A second playback node with the default 5-minute cache.
    let node2 = app
        .node(
            app.ring().clone(),
            Roles {
                ingest: false,
                playback: true,
                admin: false,
            },
            &KeyCacheConfig::default(),
        )
        .await;
    let mut p1 = app.client(&app.supervisor_token).await;
    let mut p2 = node2.client(&app.supervisor_token).await;
    for p in [&mut p1, &mut p2] {
        assert_eq!(
            p.play_all(&rec_a.recording_id, 0).await.unwrap().0,
            audio_a.as_ref()
        );
        assert_eq!(
            p.play_all(&rec_b.recording_id, 0).await.unwrap().0,
            audio_b.as_ref()
        );
    }

    // The tenant disables key A in KMS. Node 2's cache is warm and it gets
    // no KMS signal itself: it learns through node 1's health check.
    app.ring().set_enabled(&key_a, false).unwrap();
    assert_eq!(
        p2.play_all(&rec_a.recording_id, 0).await.unwrap().0,
        audio_a.as_ref(),
        "node 2 still serves its cached data key: nothing has told it yet"
    );
    let health = admin
        .keys
        .get_key_health(pb::GetKeyHealthRequest { refresh: true })
        .await
        .unwrap()
        .into_inner();
    let ha = key(&health.keys, &key_a).health.clone().unwrap();
    assert_eq!(ha.state(), pb::KeyState::Disabled);
    assert_eq!(
        key(&health.keys, &key_b).health.clone().unwrap().state(),
        pb::KeyState::Enabled
    );
    assert_eq!(health.incidents.len(), 1, "{:?}", health.incidents);
    let incident = &health.incidents[0];
    assert_eq!(
        (incident.key_arn.as_str(), incident.recording_count),
        (key_a.as_str(), 1)
    );
    assert!(
        incident
            .message
            .contains("1 recordings (0 under legal hold) are unreadable now"),
        "{}",
        incident.message
    );
    let metrics = app.archive.metrics.render_prometheus();
    assert!(
        metrics.contains(&format!(
            "callvault_tenant_key_state{{tenant=\"{}\",key_arn=\"{key_a}\",state=\"disabled\"}} 1",
            app.tenant.id
        )),
        "{metrics}"
    );

    let started = Instant::now();
    for (name, p) in [("node 1", &mut p1), ("node 2", &mut p2)] {
        let err = loop {
            match p.play_all(&rec_a.recording_id, 0).await {
                Err(e) => break e,
                Ok(_) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "{name} still plays a revoked key"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}");
        assert!(
            err.message().contains("disabled") && err.message().contains(&key_a),
            "{name}: {}",
            err.message()
        );
        // Recordings under another key are unaffected.
        assert_eq!(
            p.play_all(&rec_b.recording_id, 0).await.unwrap().0,
            audio_b.as_ref(),
            "{name}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "revocation reached node 2 through NOTIFY, not the 300 s TTL"
    );

    // Pending deletion: named as such, with the date, in the incident.
    app.ring().schedule_deletion(&key_a, 7).unwrap();
    let health = admin
        .keys
        .get_key_health(pb::GetKeyHealthRequest { refresh: true })
        .await
        .unwrap()
        .into_inner();
    let incident = &health.incidents[0];
    assert_eq!(incident.state(), pb::KeyState::PendingDeletion);
    assert!(
        incident
            .message
            .contains("will become unreadable when the key is deleted at"),
        "{}",
        incident.message
    );
    let err = p2.play_all(&rec_a.recording_id, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("pending deletion"),
        "{}",
        err.message()
    );

    // The tenant restores the key: playback works again on both nodes.
    app.ring().cancel_deletion(&key_a).unwrap();
    app.ring().set_enabled(&key_a, true).unwrap();
    for p in [&mut p1, &mut p2] {
        assert_eq!(
            p.play_all(&rec_a.recording_id, 0).await.unwrap().0,
            audio_a.as_ref()
        );
    }
    let health = admin
        .keys
        .get_key_health(pb::GetKeyHealthRequest { refresh: true })
        .await
        .unwrap()
        .into_inner();
    assert!(health.incidents.is_empty());
    node2.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn without_a_signal_a_revoked_key_stops_working_within_the_cache_ttl() {
    let ttl = Duration::from_millis(1500);
    let app = spawn_app_with(
        CatalogKind::Sqlite,
        Remote::Local,
        KeyCacheConfig {
            ttl,
            ..Default::default()
        },
    )
    .await;
    let arn = active_arn(&app).await;
    let audio = fixture("speech_mulaw.wav");
    let rec = archive_call(&app, "ttl-1", &audio).await;
    assert_eq!(app.play(&rec.recording_id).await.unwrap(), audio.as_ref());
    // Disabled behind callvault's back: no health check, no failed call.
    app.ring().set_enabled(&arn, false).unwrap();
    let disabled_at = Instant::now();
    let err = loop {
        match app.play(&rec.recording_id).await {
            Err(e) => break e,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let took = disabled_at.elapsed();
    assert!(
        took <= ttl + Duration::from_millis(500),
        "revocation took {took:?}, beyond the {ttl:?} TTL"
    );
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("disabled"), "{}", err.message());
    app.shutdown().await;
}

#[tokio::test]
async fn registration_refuses_unusable_keys_and_keeps_the_old_one() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let mut admin = app.client(&app.admin_token).await;
    let old = active_arn(&app).await;

    let disabled = app.ring().create_key().unwrap();
    app.ring().set_enabled(&disabled, false).unwrap();
    let pending = app.ring().create_key().unwrap();
    app.ring().schedule_deletion(&pending, 30).unwrap();
    let missing = "arn:callvault:kms:local:local:key/00000000-0000-0000-0000-000000000000";
    let cases: Vec<(&str, String, Code, &[&str])> = vec![
        (
            "disabled",
            disabled.clone(),
            Code::FailedPrecondition,
            &["kms:DescribeKey", "disabled"],
        ),
        (
            "pending deletion",
            pending.clone(),
            Code::FailedPrecondition,
            &["pending deletion"],
        ),
        (
            "missing",
            missing.to_owned(),
            Code::FailedPrecondition,
            &["not found"],
        ),
        (
            "alias",
            "alias/callvault".to_owned(),
            Code::InvalidArgument,
            &["key_arn", "not an alias"],
        ),
        (
            "alias ARN",
            "arn:aws:kms:eu-west-1:111122223333:alias/x".to_owned(),
            Code::InvalidArgument,
            &["key_arn"],
        ),
    ];
    for (what, arn, code, words) in cases {
        let err = register(&mut admin, &arn).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        for w in words {
            assert!(
                err.message().contains(w),
                "{what}: `{}` lacks `{w}`",
                err.message()
            );
        }
    }
    // Another tenant's key is refused: each tenant brings its own.
    let (_, _, _) = app.other_tenant("globex").await;
    let globex_key = callvault::catalog::keys::active(
        &mut *app.db().await,
        &callvault::catalog::tenants::by_name(&mut *app.db().await, "globex")
            .await
            .unwrap()
            .id,
    )
    .await
    .unwrap()
    .key_arn;
    let err = register(&mut admin, &globex_key).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("another tenant"),
        "{}",
        err.message()
    );
    // Registering the active key again passes its round trip and changes
    // nothing, not even its activation time (rotation compliance).
    let before = list_keys(&mut admin).await[0].activate_time;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = register(&mut admin, &old).await.unwrap();
    assert_eq!(
        (
            crate::helpers::enum_word(again.status().as_str_name()).as_str(),
            again.activate_time
        ),
        ("active", before)
    );

    // Only admins manage keys.
    let mut supervisor = app.client(&app.supervisor_token).await;
    let fresh = app.ring().create_key().unwrap();
    assert_eq!(
        register(&mut supervisor, &fresh).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let keys = list_keys(&mut admin).await;
    assert_eq!(keys.len(), 1, "no refused key entered the history");
    assert_eq!(
        (
            keys[0].key_arn.as_str(),
            crate::helpers::enum_word(keys[0].status().as_str_name()).as_str()
        ),
        (old.as_str(), "active")
    );
    let r = app
        .ingest("after-refusals", fixture("speech_mulaw.wav"))
        .await
        .unwrap();
    assert_eq!(r.recording.unwrap().kms_key_arn, old);
    app.shutdown().await;
}

#[tokio::test]
async fn write_only_ingest_with_an_asymmetric_key_makes_no_kms_call() {
    require!(Postgres);
    let app = spawn_app(CatalogKind::Postgres).await;
    let mut admin = app.client(&app.admin_token).await;
    let rsa = app.ring().create_rsa_key("RSA_2048").unwrap();
    let k = register(&mut admin, &rsa).await.unwrap();
    assert_eq!(
        (k.key_spec.as_str(), k.wrap_algorithm.as_str()),
        ("RSA_2048", "RSAES_OAEP_SHA_256")
    );

    // An ingest-only node whose KMS client may do nothing at all.
    let no_kms = Arc::new(FaultKms::denying());
    let ingest_node = app
        .node(
            no_kms.clone(),
            Roles {
                ingest: true,
                playback: false,
                admin: false,
            },
            &KeyCacheConfig::default(),
        )
        .await;
    let mut uploader = ingest_node.client(&app.ingest_token).await;
    let mut recs = Vec::new();
    for (i, name) in ["speech_mulaw.wav", "speech.mp3", "speech_opus.ogg"]
        .iter()
        .enumerate()
    {
        let audio = fixture(name);
        let mut h = crate::helpers::header(&format!("wo-{i}"));
        h.chunk_size_bytes = 64 * 1024;
        let rec = uploader
            .ingest_stream(h, callvault::client::pieces(audio.clone(), 64 * 1024))
            .await
            .unwrap()
            .recording
            .unwrap();
        assert_eq!(rec.kms_key_arn, rsa);
        recs.push((rec, audio));
    }
    assert_eq!(
        no_kms.calls.load(Ordering::SeqCst),
        0,
        "the ingest node made no KMS call"
    );
    assert_eq!(ingest_node.archive.metrics.total_calls(), 0);
    // The ingest node does not serve playback at all.
    let err = uploader
        .play_all(&recs[0].0.recording_id, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // The playback node unwraps with KMS Decrypt (RSAES_OAEP_SHA_256).
    for (rec, audio) in &recs {
        assert_eq!(app.play(&rec.recording_id).await.unwrap(), audio.as_ref());
    }
    assert!(app.archive.metrics.calls("Decrypt") >= 3);

    // Moving off the asymmetric key is a rewrap like any other.
    let sym = app.ring().create_key().unwrap();
    register(&mut admin, &sym).await.unwrap();
    let job = start_rewrap(&mut admin, &rsa, &sym, 0).await.unwrap();
    let job = wait_for_job(&mut admin, &job.job_id).await;
    assert_eq!(
        (
            crate::helpers::enum_word(job.state().as_str_name()).as_str(),
            job.rewrapped_count
        ),
        ("succeeded", 3),
        "{job:?}"
    );
    app.archive.keys.purge_all();
    for (rec, audio) in &recs {
        assert_eq!(app.play(&rec.recording_id).await.unwrap(), audio.as_ref());
    }
    ingest_node.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn registration_and_rewrap_on_aws_kms_over_the_wire() {
    require!(Postgres, Moto);
    // moto speaks the AWS KMS wire protocol: DescribeKey, GenerateDataKey,
    // Decrypt and ReEncrypt go over HTTP through aws-sdk-kms.
    let app = spawn_app_with(
        CatalogKind::Postgres,
        Remote::Moto,
        KeyCacheConfig::default(),
    )
    .await;
    let mut admin = app.client(&app.admin_token).await;
    let key_a = active_arn(&app).await;
    let audio_a = fixture("speech_mulaw.wav");
    let rec_a = archive_call(&app, "aws-a", &audio_a).await;

    let key_b = crate::helpers::moto_create_key(&crate::helpers::moto_kms().await).await;
    let registered = register(&mut admin, &key_b).await.unwrap();
    assert_eq!(
        (
            crate::helpers::enum_word(registered.status().as_str_name()).as_str(),
            registered.region.as_str()
        ),
        ("active", "us-east-1")
    );
    let audio_b = fixture("speech.mp3");
    let rec_b = archive_call(&app, "aws-b", &audio_b).await;
    assert_eq!(
        (rec_a.kms_key_arn.as_str(), rec_b.kms_key_arn.as_str()),
        (key_a.as_str(), key_b.as_str())
    );

    let job = start_rewrap(&mut admin, &key_a, &key_b, 10).await.unwrap();
    let job = wait_for_job(&mut admin, &job.job_id).await;
    assert_eq!(
        (
            crate::helpers::enum_word(job.state().as_str_name()).as_str(),
            job.rewrapped_count
        ),
        ("succeeded", 1),
        "{job:?}"
    );
    let keys = list_keys(&mut admin).await;
    assert_eq!(key(&keys, &key_a).recording_count, 0);
    assert_eq!(key(&keys, &key_b).recording_count, 2);
    app.archive.keys.purge_all();
    assert_eq!(
        app.play(&rec_a.recording_id).await.unwrap(),
        audio_a.as_ref()
    );
    assert_eq!(
        app.play(&rec_b.recording_id).await.unwrap(),
        audio_b.as_ref()
    );

    // An alias is refused before KMS is asked.
    let err = register(&mut admin, "alias/aws/s3").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    app.shutdown().await;
}

#[tokio::test]
async fn a_node_in_another_region_uses_the_multi_region_replica() {
    require!(Postgres);
    let app = spawn_app(CatalogKind::Postgres).await;
    let mut admin = app.client(&app.admin_token).await;
    let single_region_key = active_arn(&app).await;
    let audio0 = fixture("speech_alaw.wav");
    let rec0 = archive_call(&app, "mrk-0", &audio0).await;

    // A multi-Region key: primary in the app's region, replica in eu-west-1.
    let primary = app.ring().create_key().unwrap();
    let replica = app.ring().replicate_key(&primary, "eu-west-1").unwrap();
    let k = admin
        .keys
        .register_key(pb::RegisterKeyRequest {
            key_arn: primary.clone(),
            replica_key_arns: [("eu-west-1".to_owned(), replica.clone())].into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k.replica_key_arns.get("eu-west-1"), Some(&replica));
    let audio1 = fixture("speech_mulaw.wav");
    let rec1 = archive_call(&app, "mrk-1", &audio1).await;

    // Nodes in eu-west-1: their KMS endpoint only knows eu-west-1 keys.
    let eu_kms: Arc<dyn Kms> =
        Arc::new(callvault::kms::local::LocalKeyring::open(app.dir.path(), "eu-west-1").unwrap());
    let eu = app
        .node(eu_kms.clone(), Roles::ALL, &KeyCacheConfig::default())
        .await;
    let mut eu_player = eu.client(&app.supervisor_token).await;
    assert_eq!(
        eu_player.play_all(&rec1.recording_id, 0).await.unwrap().0,
        audio1.as_ref()
    );
    let metrics = eu.archive.metrics.render_prometheus();
    assert!(
        metrics
            .contains("callvault_kms_requests_total{operation=\"Decrypt\",region=\"eu-west-1\"} 1"),
        "{metrics}"
    );
    // A key without a replica there cannot be used from eu-west-1; the
    // refusal says why instead of a bare KMS error.
    let err = eu_player.play_all(&rec0.recording_id, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("no multi-Region replica")
            && err.message().contains(&single_region_key),
        "{}",
        err.message()
    );

    // Ingest in eu-west-1 wraps with the replica; the recording names the
    // registered key and the region that wrapped, and plays in both regions.
    let mut eu_uploader = eu.client(&app.ingest_token).await;
    let audio2 = fixture("speech.flac");
    let mut h = crate::helpers::header("mrk-2");
    h.chunk_size_bytes = 64 * 1024;
    let rec2 = eu_uploader
        .ingest_stream(h, callvault::client::pieces(audio2.clone(), 64 * 1024))
        .await
        .unwrap()
        .recording
        .unwrap();
    assert_eq!(
        (rec2.kms_key_arn.as_str(), rec2.kms_region.as_str()),
        (primary.as_str(), "eu-west-1")
    );
    assert_eq!(app.play(&rec2.recording_id).await.unwrap(), audio2.as_ref());
    assert_eq!(
        eu_player.play_all(&rec2.recording_id, 0).await.unwrap().0,
        audio2.as_ref()
    );
    let keys = list_keys(&mut admin).await;
    assert_eq!(
        key(&keys, &primary).recording_count,
        2,
        "both regions' recordings count for the key"
    );
    eu.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_rewrap_stopped_by_a_revoked_key_fails_precisely_and_resumes() {
    // The embedded default (SQLite) runs the same job without row locks.
    let mut app = spawn_app(CatalogKind::Sqlite).await;
    let mut admin = app.client(&app.admin_token).await;
    let key_a = active_arn(&app).await;
    let mut recs = Vec::new();
    for i in 0..4 {
        let audio = small_wav(100 + i);
        recs.push((
            archive_call(&app, &format!("resume-{i}"), &audio).await,
            audio,
        ));
    }
    let key_b = app.ring().create_key().unwrap();
    register(&mut admin, &key_b).await.unwrap();

    // The source key is disabled: the job fails naming it, moving nothing.
    app.ring().set_enabled(&key_a, false).unwrap();
    let job = start_rewrap(&mut admin, &key_a, &key_b, 0).await.unwrap();
    let failed = wait_for_job(&mut admin, &job.job_id).await;
    assert_eq!(failed.state(), pb::JobState::Failed, "{failed:?}");
    assert!(
        failed.error.contains(&key_a) && failed.error.contains("disabled"),
        "{}",
        failed.error
    );
    assert_eq!(failed.rewrapped_count, 0);
    // Only one job runs per tenant, and only a failed one resumes.
    let err = admin
        .keys
        .cancel_rewrap(pb::CancelRewrapRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Re-enabled, the job resumes and finishes.
    app.ring().set_enabled(&key_a, true).unwrap();
    let resumed = admin
        .keys
        .resume_rewrap(pb::ResumeRewrapRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.state(), pb::JobState::Running);
    let done = wait_for_job(&mut admin, &job.job_id).await;
    assert_eq!(
        (
            crate::helpers::enum_word(done.state().as_str_name()).as_str(),
            done.rewrapped_count,
            done.total_count
        ),
        ("succeeded", 4, 4)
    );
    for (rec, audio) in &recs {
        assert_eq!(app.play(&rec.recording_id).await.unwrap(), audio.as_ref());
    }

    let bad = admin
        .keys
        .get_rewrap_job(pb::GetRewrapJobRequest {
            job_id: "../../etc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // A running job can be cancelled; it then stops for good.
    let key_c = app.ring().create_key().unwrap();
    register(&mut admin, &key_c).await.unwrap();
    app.stop_server().await; // no worker takes the job below
    let admin_principal = callvault::domain::Principal::new(
        app.tenant.id.clone(),
        callvault::domain::Role::Admin,
        "test-admin",
    );
    let job = keys::start_rewrap(&app.archive, &admin_principal, &key_b, &key_c, 0)
        .await
        .unwrap();
    assert_eq!(
        (job.status, job.total),
        (callvault::domain::JobStatus::Running, 4)
    );
    let cancelled = keys::cancel_rewrap(&app.archive, &admin_principal, &job.id)
        .await
        .unwrap();
    assert_eq!(cancelled.status, callvault::domain::JobStatus::Cancelled);
    assert!(
        keys::cancel_rewrap(&app.archive, &admin_principal, &job.id)
            .await
            .is_err()
    );
    assert!(
        keys::resume_rewrap(&app.archive, &admin_principal, &job.id)
            .await
            .is_err()
    );
    keys::drain_rewrap_jobs(&app.archive).await.unwrap();
    assert_eq!(
        callvault::catalog::keys::count_under(
            &mut *app.db().await,
            &app.tenant.id,
            &callvault::domain::KeyArn::parse("k", &key_b).unwrap()
        )
        .await
        .unwrap(),
        4,
        "a cancelled job moves nothing more"
    );
    app.shutdown().await;
}
