//! Compliance, part 2: retention rules and their precedence, legal holds
//! (blocking erasure and key retirement, lifting), erasure by
//! crypto-shredding with certificates that verify offline and fail when
//! edited, a scan after erasure, and the expiry job on two nodes without
//! double work. On both catalogs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callvault::api::pb;
use callvault::archive::Archive;
use callvault::audit::event::Action;
use callvault::catalog::Catalog;
use callvault::client::Client;
use callvault::compliance::certificate;
use callvault::kms::cache::KeyCacheConfig;
use callvault::server::{LocalServer, Roles};
use callvault::store::ChunkStore;
use sqlx::Row;
use tonic::Code;

use crate::helpers::{CatalogKind, TestApp, header, spawn_app, test_audit_key};
use crate::keys::small_wav;

const DAY_MS: i64 = 86_400_000;

fn ms(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("a time");
    t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
}

async fn ingest_labeled(
    app: &TestApp,
    call: &str,
    labels: &[(&str, &str)],
    i: u32,
) -> pb::Recording {
    ingest_with_participants(app, call, &[], labels, i).await
}

async fn get(app: &TestApp, id: &str) -> Result<pb::Recording, tonic::Status> {
    app.client(&app.compliance_token)
        .await
        .playback
        .get_recording(pb::GetRecordingRequest {
            recording_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn set_rule(
    c: &mut Client,
    label: Option<(&str, &str)>,
    days: u32,
    apply: bool,
) -> Result<pb::SetRetentionRuleResponse, tonic::Status> {
    let (k, v) = label.unwrap_or(("", ""));
    c.compliance
        .set_retention_rule(pb::SetRetentionRuleRequest {
            label_key: k.into(),
            label_value: v.into(),
            days,
            apply_to_existing: apply,
            remove: days == 0,
        })
        .await
        .map(|r| r.into_inner())
}

async fn place(
    c: &mut Client,
    name: &str,
    ids: &[&str],
    calls: &[&str],
) -> Result<pb::LegalHold, tonic::Status> {
    c.compliance
        .place_legal_hold(pb::PlaceLegalHoldRequest {
            name: name.into(),
            reason: format!("matter {name}"),
            recording_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            external_call_ids: calls.iter().map(|s| (*s).to_owned()).collect(),
            start_time: None,
            end_time: None,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn release(
    c: &mut Client,
    name: &str,
) -> Result<pb::ReleaseLegalHoldResponse, tonic::Status> {
    c.compliance
        .release_legal_hold(pb::ReleaseLegalHoldRequest {
            name: name.into(),
            reason: "matter closed".into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn erase(
    c: &mut Client,
    ids: &[&str],
    override_retention: bool,
) -> Result<pb::EraseRecordingsResponse, tonic::Status> {
    c.compliance
        .erase_recordings(pb::EraseRecordingsRequest {
            recording_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            reason: "GDPR Art. 17 request 2026-114".into(),
            override_retention,
            participant: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn retention_rules_and_their_precedence(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let mut comp = app.client(&app.compliance_token).await;
    // No policy: kept until erased on request.
    let before = ingest_labeled(&app, "before-policy", &[], 1).await;
    assert!(before.retain_until.is_none(), "{before:?}");

    set_rule(&mut comp, None, 365, false).await.unwrap();
    set_rule(&mut comp, Some(("queue", "collections")), 3650, false)
        .await
        .unwrap();
    set_rule(&mut comp, Some(("queue", "sales")), 30, false)
        .await
        .unwrap();
    let plain = ingest_labeled(&app, "plain", &[("agent", "a-17")], 2).await;
    let coll = ingest_labeled(&app, "coll", &[("queue", "collections")], 3).await;
    let sales = ingest_labeled(&app, "sales", &[("queue", "sales")], 4).await;
    let days = |r: &pb::Recording| (ms(&r.retain_until) - ms(&r.create_time)) / DAY_MS;
    assert_eq!(days(&plain), 365, "the default");
    assert_eq!(days(&coll), 3650, "a label rule beats the default");
    assert_eq!(days(&sales), 30, "even when shorter");
    // GetRecording shows the same.
    assert_eq!(
        get(&app, &coll.recording_id).await.unwrap().retain_until,
        coll.retain_until
    );

    // A change applies to new recordings only…
    let r = set_rule(&mut comp, None, 400, false).await.unwrap();
    assert_eq!(r.previous_days, 365);
    assert!(!r.applied_to_existing);
    assert_eq!(
        get(&app, &plain.recording_id).await.unwrap().retain_until,
        plain.retain_until
    );
    // …or, asked, to the recordings it decided and those no rule covered.
    let r = set_rule(&mut comp, None, 500, true).await.unwrap();
    assert_eq!(r.recordings_changed, 2, "plain and before-policy: {r:?}");
    for id in [&plain.recording_id, &before.recording_id] {
        let g = get(&app, id).await.unwrap();
        assert_eq!(days(&g), 500, "{g:?}");
    }
    assert_eq!(days(&get(&app, &coll.recording_id).await.unwrap()), 3650);
    // Removing a label rule hands its recordings to the default.
    let r = set_rule(&mut comp, Some(("queue", "sales")), 0, true)
        .await
        .unwrap();
    assert_eq!(r.recordings_changed, 1);
    assert_eq!(days(&get(&app, &sales.recording_id).await.unwrap()), 500);
    let policy = comp
        .compliance
        .get_retention_policy(pb::GetRetentionPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.default_days, 500);
    assert_eq!(policy.rules.len(), 1, "{policy:?}");
    // A new label rule reaches recordings ingested before it (through the
    // labels' blind index, set-based).
    let r = set_rule(&mut comp, Some(("agent", "a-17")), 1000, true)
        .await
        .unwrap();
    assert_eq!(r.recordings_changed, 1, "{r:?}");
    assert_eq!(days(&get(&app, &plain.recording_id).await.unwrap()), 1000);
    assert_eq!(days(&get(&app, &coll.recording_id).await.unwrap()), 3650);
    assert_eq!(days(&get(&app, &before.recording_id).await.unwrap()), 500);

    // Compliance staff only; bad periods are refused.
    let mut sup = app.client(&app.supervisor_token).await;
    let err = set_rule(&mut sup, None, 10, false).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = set_rule(&mut comp, None, 40_000, false).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // An omitted period is an error, never a removal.
    let err = comp
        .compliance
        .set_retention_rule(pb::SetRetentionRuleRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let events = crate::audit::events(&app).await;
    let set = crate::audit::of(&events, Action::RetentionPolicySet);
    assert_eq!(set.len(), 7, "every change is audited");
    assert_eq!(set[4].details["recordings_changed"], 2);
    app.shutdown().await;
}

on_both_catalogs!(
    retention_rules_apply_by_precedence_on_sqlite,
    retention_rules_apply_by_precedence_on_postgres,
    retention_rules_and_their_precedence
);

async fn holds_block_erasure_and_retirement(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let mut comp = app.client(&app.compliance_token).await;
    let a = ingest_labeled(&app, "held-a", &[], 1).await;
    let b = ingest_labeled(&app, "held-b", &[], 2).await;
    let c = ingest_labeled(&app, "free-c", &[], 3).await;

    // All or nothing: an unknown id fails the whole hold.
    let unknown = "01890a5d-ac96-774b-bcce-b302099a8057";
    let err = place(&mut comp, "case-0", &[&a.recording_id, unknown], &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(!get(&app, &a.recording_id).await.unwrap().legal_hold);

    let h1 = place(&mut comp, "case-1", &[&a.recording_id], &[])
        .await
        .unwrap();
    assert_eq!(h1.recording_count, 1);
    let h2 = place(&mut comp, "case-2", &[], &["held-a", "held-b"])
        .await
        .unwrap();
    assert_eq!(h2.recording_count, 2);
    let err = place(&mut comp, "case-1", &[&c.recording_id], &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(get(&app, &a.recording_id).await.unwrap().legal_hold);
    assert!(!get(&app, &c.recording_id).await.unwrap().legal_hold);

    // A held recording cannot be erased; the refusal names every hold.
    let err = erase(&mut comp, &[&c.recording_id, &a.recording_id], true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("case-1") && err.message().contains("case-2"),
        "{}",
        err.message()
    );
    // All or none: c, which is free, is still there too.
    assert!(get(&app, &c.recording_id).await.is_ok());

    // Its key cannot be retired, and the refusal names the holds.
    let mut admin = app.client(&app.admin_token).await;
    let old = crate::keys::active_arn(&app).await;
    let new = app.ring().create_key().unwrap();
    crate::keys::register(&mut admin, &new).await.unwrap();
    let err = admin
        .keys
        .retire_key(pb::RetireKeyRequest {
            key_arn: old.clone(),
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("legal hold (case-1, case-2)"),
        "{}",
        err.message()
    );
    // Disabling it is a critical incident naming the holds.
    app.ring().set_enabled(&old, false).unwrap();
    let health = crate::key_safety::key_health(&mut admin, true).await;
    let incident = health
        .incidents
        .iter()
        .find(|i| i.key_arn == old)
        .expect("an incident");
    assert_eq!(incident.legal_hold_count, 2);
    assert!(
        incident.message.contains("CRITICAL, holds case-1, case-2"),
        "{}",
        incident.message
    );
    app.ring().set_enabled(&old, true).unwrap();

    // Releasing one hold frees only what no other hold covers.
    let r = release(&mut comp, "case-2").await.unwrap();
    assert_eq!(r.recordings_freed, 1, "b only: a is still under case-1");
    assert!(!get(&app, &b.recording_id).await.unwrap().legal_hold);
    assert!(get(&app, &a.recording_id).await.unwrap().legal_hold);
    let err = release(&mut comp, "case-2").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let r = release(&mut comp, "case-1").await.unwrap();
    assert_eq!(r.recordings_freed, 1);
    assert!(r.hold.unwrap().release_time.is_some());
    erase(&mut comp, &[&a.recording_id], true).await.unwrap();

    // A window hold is one statement over every call in it.
    let h = comp
        .compliance
        .place_legal_hold(pb::PlaceLegalHoldRequest {
            name: "window".into(),
            reason: "regulator inquiry".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.recording_count, 2, "b and c (a is erased)");
    let shown = comp
        .compliance
        .get_legal_hold(pb::GetLegalHoldRequest {
            name: "window".into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.recording_ids.len(), 1);
    assert!(!shown.next_page_token.is_empty(), "paged");
    let listed = comp
        .compliance
        .list_legal_holds(pb::ListLegalHoldsRequest {
            include_released: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.holds.len(), 3, "{listed:?}");

    let events = crate::audit::events(&app).await;
    assert_eq!(crate::audit::of(&events, Action::HoldPlaced).len(), 3);
    assert_eq!(crate::audit::of(&events, Action::HoldReleased).len(), 2);
    let refused: Vec<_> = crate::audit::of(&events, Action::RecordingErased)
        .into_iter()
        .filter(|e| e.outcome == callvault::audit::event::Outcome::Refused)
        .collect();
    assert_eq!(refused.len(), 1);
    app.shutdown().await;
}

on_both_catalogs!(
    legal_holds_block_erasure_and_retirement_on_sqlite,
    legal_holds_block_erasure_and_retirement_on_postgres,
    holds_block_erasure_and_retirement
);

/// Every byte a catalog dump would show: every column of every row of
/// every table.
async fn catalog_dump(archive: &Archive) -> Vec<Vec<u8>> {
    let tables: Vec<String> = match archive.catalog.backend() {
        callvault::catalog::Backend::Sqlite => {
            sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(archive.catalog.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect()
        }
        callvault::catalog::Backend::Postgres => sqlx::query(
            "SELECT CAST(tablename AS TEXT) AS name FROM pg_tables WHERE schemaname = 'public'",
        )
        .fetch_all(archive.catalog.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("name"))
        .collect(),
    };
    assert!(tables.len() > 10, "{tables:?}");
    let mut out = Vec::new();
    // The migration ledger (timestamps the Any driver cannot decode) holds
    // no tenant data.
    for table in tables.iter().filter(|t| !t.starts_with("_sqlx")) {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(archive.catalog.pool())
            .await
            .unwrap();
        for row in rows {
            for i in 0..row.len() {
                if let Ok(Some(b)) = row.try_get::<Option<Vec<u8>>, _>(i) {
                    out.push(b);
                } else if let Ok(Some(s)) = row.try_get::<Option<String>, _>(i) {
                    out.push(s.into_bytes());
                }
            }
        }
    }
    out
}

async fn erasure_shreds_and_certifies(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let mut comp = app.client(&app.compliance_token).await;
    set_rule(&mut comp, None, 30, false).await.unwrap();
    let a = ingest_labeled(&app, "erase-a", &[("agent", "a-17")], 1).await;
    let b = ingest_labeled(&app, "erase-b", &[], 2).await;
    let keep = ingest_labeled(&app, "keep", &[], 3).await;
    let wrapped: Vec<Vec<u8>> = {
        let mut conn = app.db().await;
        let mut out = Vec::new();
        for r in [&a, &b] {
            let id = callvault::domain::RecordingId::parse("id", &r.recording_id).unwrap();
            out.push(
                callvault::catalog::recordings::get(&mut conn, &app.tenant.id, &id)
                    .await
                    .unwrap()
                    .wrapped_key,
            );
        }
        out
    };
    // Played once, so that its data key sits in the cache.
    app.play(&a.recording_id).await.unwrap();

    // Before retain_until: refused, unless overridden.
    let err = erase(&mut comp, &[&a.recording_id], false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("--override-retention"),
        "{}",
        err.message()
    );
    let mut sup = app.client(&app.supervisor_token).await;
    let err = erase(&mut sup, &[&a.recording_id], true).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = comp
        .compliance
        .erase_recordings(pb::EraseRecordingsRequest {
            recording_ids: vec![a.recording_id.clone()],
            reason: String::new(),
            override_retention: true,
            participant: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a reason is required");

    let done = erase(&mut comp, &[&a.recording_id, &b.recording_id], true)
        .await
        .unwrap();
    assert_eq!(done.recording_ids.len(), 2);
    assert!(
        !done.certificate_json.is_empty(),
        "objects verified gone in the call"
    );

    // The certificate verifies offline, with the deployment's key.
    let key = test_audit_key().verifier();
    let v = certificate::verify(done.certificate_json.as_bytes(), Some(&key)).unwrap();
    let c = &v.certificate;
    assert_eq!(c.certificate_id, done.certificate_id);
    assert_eq!(c.tenant, app.tenant.id.as_str());
    assert!(c.override_retention);
    assert_eq!(c.trigger, "request");
    assert_eq!(c.reason, "GDPR Art. 17 request 2026-114");
    assert_eq!(c.method.technique, "Cryptographic Erase");
    let certified: BTreeSet<_> = c
        .recordings
        .iter()
        .map(|r| (r.recording_id.clone(), r.sha256.clone(), r.size_bytes))
        .collect();
    let expected: BTreeSet<_> = [&a, &b]
        .iter()
        .map(|r| (r.recording_id.clone(), r.sha256.clone(), r.size_bytes))
        .collect();
    assert_eq!(certified, expected);
    assert!(c.recordings.iter().all(|r| r.kms_key_arn == a.kms_key_arn));
    assert_eq!(c.verification.objects_remaining, 0);
    let backups = c
        .copies_not_reached
        .iter()
        .find(|u| u.copy == "catalog backups")
        .unwrap();
    assert!(backups.detail.contains("35 days"), "{}", backups.detail);
    assert!(backups.until.is_some());
    assert!(
        c.copies_not_reached
            .iter()
            .any(|u| u.copy == "object store versions" && u.detail.starts_with("none")),
        "{:?}",
        c.copies_not_reached
    );
    // Edited, it fails.
    let edited = done.certificate_json.replace(&a.sha256, &"0".repeat(64));
    assert!(certificate::verify(edited.as_bytes(), Some(&key)).is_err());
    let other = callvault::audit::note::SignerKey::generate("callvault").unwrap();
    assert!(
        certificate::verify(done.certificate_json.as_bytes(), Some(&other.verifier())).is_err()
    );

    // The erased recordings answer NOT_FOUND with the date and certificate,
    // everywhere; the other one is untouched.
    for r in [&a, &b] {
        let err = app.play(&r.recording_id).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        assert!(
            err.message().contains("erased on") && err.message().contains(&done.certificate_id),
            "{}",
            err.message()
        );
        let err = get(&app, &r.recording_id).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    assert_eq!(
        app.play(&keep.recording_id).await.unwrap().len() as u64,
        keep.size_bytes
    );
    let listed = app
        .client(&app.supervisor_token)
        .await
        .playback
        .list_recordings(pb::ListRecordingsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.recordings.len(), 1);
    // Erasing again says it was erased.
    let err = erase(&mut comp, &[&a.recording_id], true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("erased on"), "{}", err.message());
    // So does a hold on it, by id or call id.
    for (ids, calls) in [
        (vec![a.recording_id.as_str()], vec![]),
        (vec![], vec!["erase-b"]),
    ] {
        let err = place(&mut comp, "too-late", &ids, &calls)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("erased on"), "{}", err.message());
    }

    // The scan: no object of theirs, no copy of their wrapped data keys in
    // any table, and on SQLite none in the catalog files either.
    for r in [&a, &b] {
        let id = callvault::domain::RecordingId::parse("id", &r.recording_id).unwrap();
        assert!(
            app.archive
                .store
                .list_recording(&app.tenant.id, &id)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let dump = catalog_dump(&app.archive).await;
    for w in &wrapped {
        assert!(
            !dump
                .iter()
                .any(|cell| crate::helpers::contains_window(cell, w)),
            "a wrapped data key survived in the catalog"
        );
    }
    if kind == CatalogKind::Sqlite {
        for file in ["catalog.db", "catalog.db-wal"] {
            let bytes = std::fs::read(app.dir.path().join(file)).unwrap_or_default();
            for w in &wrapped {
                assert!(
                    !crate::helpers::contains_window(&bytes, w),
                    "a wrapped data key survived in {file}"
                );
            }
        }
    }

    // Listed and fetched; audited.
    let certs = comp
        .compliance
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert_eq!(certs.len(), 1);
    assert!(
        certs[0].complete && certs[0].override_retention,
        "{:?}",
        certs[0]
    );
    let got = comp
        .compliance
        .get_certificate(pb::GetCertificateRequest {
            certificate_id: done.certificate_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.certificate_json, done.certificate_json);
    assert_eq!(got.recording_ids.len(), 2);
    let events = crate::audit::events(&app).await;
    let (erased, refused): (Vec<_>, Vec<_>) = crate::audit::of(&events, Action::RecordingErased)
        .into_iter()
        .partition(|e| e.outcome == callvault::audit::event::Outcome::Ok);
    assert_eq!(erased.len(), 1);
    assert_eq!(refused.len(), 1, "the early request, refused and audited");
    assert!(
        refused[0].details["refusal"]
            .as_str()
            .unwrap()
            .contains("retained until")
    );
    assert_eq!(erased[0].recordings.len(), 2);
    assert_eq!(erased[0].details["override_retention"], true);
    assert_eq!(erased[0].index, c.audit_event_index);
    assert_eq!(
        crate::audit::of(&events, Action::CertificateIssued).len(),
        1
    );
    app.shutdown().await;
}

on_both_catalogs!(
    erasure_shreds_and_certifies_on_sqlite,
    erasure_shreds_and_certifies_on_postgres,
    erasure_shreds_and_certifies
);

/// A play still streaming when its recording is erased ends with the
/// erasure (NOT_FOUND, its date and certificate), not an integrity alarm:
/// the chunks it had not read yet are gone because they were shredded.
async fn play_during_erasure(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    // 16 MiB in 64 KiB chunks: more than the client's and the server's
    // windows and read-ahead hold, so most chunks are read after the erasure.
    let audio = bytes::Bytes::from(callvault::synth::synth_wav(88, 48_000, 2));
    let rec = app
        .ingest("erased-while-played", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap();
    assert!(rec.size_bytes > 16_000_000, "{}", rec.size_bytes);
    let mut stream = app
        .client(&app.supervisor_token)
        .await
        .playback
        .play(pb::PlayRequest {
            recording_id: rec.recording_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("a first message");
    let mut played = first.data.to_vec();

    let mut comp = app.client(&app.compliance_token).await;
    let done = erase(&mut comp, &[&rec.recording_id], true).await.unwrap();

    let err = loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                assert_eq!(msg.offset_bytes, played.len() as u64);
                played.extend_from_slice(&msg.data);
            }
            Ok(None) => panic!("the whole recording was played after its erasure"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("erased on") && err.message().contains(&done.certificate_id),
        "{}",
        err.message()
    );
    // What arrived before the end is the recording's start, byte for byte.
    assert!(played.len() < audio.len(), "{}", played.len());
    assert!(audio.starts_with(&played));
    app.shutdown().await;
}

on_both_catalogs!(
    a_play_during_erasure_ends_with_the_erasure_on_sqlite,
    a_play_during_erasure_ends_with_the_erasure_on_postgres,
    play_during_erasure
);

/// A node over the app's catalog and store whose expiry job runs every
/// second.
async fn expiry_node(app: &TestApp) -> (Arc<Archive>, LocalServer) {
    let catalog = Catalog::connect(&app.db_url).await.unwrap();
    let store = ChunkStore::local(&app.dir.path().join("objects")).unwrap();
    let mut archive = Archive::new(
        catalog,
        store,
        app.ring().clone(),
        &KeyCacheConfig::default(),
        callvault::archive::Limits::default(),
        test_audit_key(),
    );
    archive.schedule.retention_check = Duration::from_secs(1);
    archive.erasure.max_per_sec = 1000;
    let archive = Arc::new(archive);
    let server = LocalServer::start(archive.clone(), Roles::ALL)
        .await
        .unwrap();
    (archive, server)
}

fn erased_by(archive: &Archive) -> u64 {
    let text = archive.metrics.render_prometheus();
    text.lines()
        .filter(|l| l.starts_with("callvault_recordings_erased_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn expiry_on_two_nodes(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let mut comp = app.client(&app.compliance_token).await;
    set_rule(&mut comp, None, 1, false).await.unwrap();
    const N: u32 = 30;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(
            ingest_labeled(&app, &format!("due-{i}"), &[], i)
                .await
                .recording_id,
        );
    }
    let fresh = ingest_labeled(&app, "not-due", &[], 99).await;
    // Five of the due ones are held.
    let held: Vec<&str> = ids[..5].iter().map(String::as_str).collect();
    place(&mut comp, "litigation", &held, &[]).await.unwrap();
    // Time passes: their retention ended a minute ago.
    sqlx::query("UPDATE recordings SET retain_until_ms = retain_until_ms - $1 WHERE external_call_id LIKE 'due-%'")
        .bind(DAY_MS + 60_000)
        .execute(app.archive.catalog.pool())
        .await
        .unwrap();

    let (x, sx) = expiry_node(&app).await;
    let (y, sy) = expiry_node(&app).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let tombstones = || async {
        sqlx::query("SELECT COUNT(*) AS n FROM erased_recordings")
            .fetch_one(app.archive.catalog.pool())
            .await
            .unwrap()
            .get::<i64, _>("n")
    };
    while tombstones().await < i64::from(N - 5) {
        assert!(Instant::now() < deadline, "not erased within the interval");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Held and fresh ones stay; nothing was erased twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(tombstones().await, i64::from(N - 5));
    let main_node = erased_by(&app.archive);
    assert_eq!(
        erased_by(&x) + erased_by(&y) + main_node,
        u64::from(N - 5),
        "each recording erased by exactly one node"
    );
    for id in &held {
        assert!(get(&app, id).await.unwrap().legal_hold);
    }
    assert!(get(&app, &fresh.recording_id).await.is_ok());
    let events = crate::audit::events(&app).await;
    let erased: usize = crate::audit::of(&events, Action::RecordingErased)
        .iter()
        .map(|e| e.recordings.len())
        .sum();
    assert_eq!(erased, (N - 5) as usize);
    // Every certificate completes, each verifies.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let certs = comp
            .compliance
            .list_certificates(pb::ListCertificatesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .certificates;
        if certs.iter().all(|c| c.complete) {
            let total: u64 = certs.iter().map(|c| c.recording_count).sum();
            assert_eq!(total, u64::from(N - 5));
            for c in &certs {
                assert_eq!(c.trigger, "retention_expiry");
                certificate::verify(
                    c.certificate_json.as_bytes(),
                    Some(&test_audit_key().verifier()),
                )
                .unwrap();
            }
            break;
        }
        assert!(Instant::now() < deadline, "certificates not completed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Released, the held ones go at the next pass.
    release(&mut comp, "litigation").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while tombstones().await < i64::from(N) {
        assert!(Instant::now() < deadline, "released recordings not erased");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(get(&app, &fresh.recording_id).await.is_ok());
    sx.stop().await.unwrap();
    sy.stop().await.unwrap();
    x.catalog.close().await;
    y.catalog.close().await;
    app.shutdown().await;
}

on_both_catalogs!(
    expiry_job_erases_due_recordings_once_on_sqlite,
    expiry_job_erases_due_recordings_once_on_postgres,
    expiry_on_two_nodes
);

/// The real binary with stderr kept in a file, to see its pause points.
struct Proc {
    server: crate::crash::Server,
    addr: String,
    stderr: std::path::PathBuf,
}

impl Proc {
    async fn start(dir: &std::path::Path, db: Option<&str>, pause: Option<&str>) -> Self {
        let stderr = dir.join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let mut extra = vec!["--retention-check-interval-secs", "1"];
        if let Some(url) = db {
            extra.extend(["--database-url", url]);
        }
        let env: Vec<(&str, &str)> = pause
            .map(|p| ("CALLVAULT_FAULT_PAUSE", p))
            .into_iter()
            .collect();
        let server = crate::crash::Server::start_logged(dir, &extra, &env, Some(&stderr)).await;
        Self {
            addr: server.addr.clone(),
            server,
            stderr,
        }
    }

    async fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            if log.contains(text) {
                return;
            }
            assert!(Instant::now() < deadline, "never logged {text:?}: {log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no drain, no cleanup.
    fn kill(self) {
        self.server.kill();
    }
}

fn operator(dir: &std::path::Path, db: Option<&str>, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_callvault"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("CALLVAULT_LOG", "warn");
    if let Some(url) = db {
        cmd.args(["--database-url", url]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Kills the server with SIGKILL at `point` of an erasure and checks what
/// a restart finds: intact (before the commit) or erased with a certificate
/// that completes (after it); never listed but unplayable.
async fn killed_at(point: &str, db: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    operator(dir.path(), db, &["tenant", "create", "acme"]);
    let token = |role: &str| {
        operator(
            dir.path(),
            db,
            &["token", "create", "--tenant", "acme", "--role", role],
        )
    };
    let (ingest, sup, comp) = (token("ingest"), token("supervisor"), token("compliance"));
    let server = Proc::start(dir.path(), db, Some(point)).await;
    let audio = small_wav(7);
    let sha = callvault::crypto::sha256_hex(&audio);
    let rec = Client::connect(&server.addr, &ingest)
        .await
        .unwrap()
        .ingest_stream(header("kill-erase"), callvault::client::pieces(audio, 4096))
        .await
        .unwrap()
        .recording
        .unwrap();
    let mut cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args([
            "erase",
            "--recording",
            &rec.recording_id,
            "--reason",
            "test",
        ])
        .env("CALLVAULT_SERVER", &server.addr)
        .env("CALLVAULT_TOKEN", &comp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    server.wait_for(&format!("fault pause at {point}")).await;
    server.kill();
    let _ = cli.kill().await;

    let server = Proc::start(dir.path(), db, None).await;
    let mut s = Client::connect(&server.addr, &sup).await.unwrap();
    let listed = s
        .playback
        .list_recordings(pb::ListRecordingsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .recordings;
    let played = s.play_all(&rec.recording_id, 0).await;
    match point {
        "erase.before_commit" => {
            assert_eq!(listed.len(), 1, "{point}: intact");
            let (bytes, _) = played.unwrap();
            assert_eq!(callvault::crypto::sha256_hex(&bytes), sha, "{point}");
        }
        _ => {
            assert!(listed.is_empty(), "{point}: erased, so not listed");
            let err = played.unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "{point}");
            assert!(err.message().contains("erased on"), "{}", err.message());
            // The restarted node's expiry pass completes the certificate.
            let mut c = Client::connect(&server.addr, &comp).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let cert = loop {
                let certs = c
                    .compliance
                    .list_certificates(pb::ListCertificatesRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .certificates;
                assert_eq!(certs.len(), 1, "{point}");
                if certs[0].complete {
                    break certs[0].clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "{point}: certificate not completed"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            // Verified offline by the reference path: the CLI.
            let file = dir.path().join("certificate.json");
            std::fs::write(&file, &cert.certificate_json).unwrap();
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
                .args(["certificates", "verify"])
                .arg(&file)
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{point}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let objects = dir.path().join("objects/t");
            let left = crate::helpers::walk(&objects)
                .into_iter()
                .filter(|p| p.to_string_lossy().contains(&rec.recording_id))
                .count();
            assert_eq!(left, 0, "{point}: objects left");
        }
    }
    server.kill();
}

#[tokio::test]
async fn kill_9_at_each_erasure_step_leaves_intact_or_certified() {
    for point in [
        "erase.before_commit",
        "erase.committed",
        "erase.objects_deleted",
    ] {
        killed_at(point, None).await;
    }
}

#[tokio::test]
async fn kill_9_at_each_erasure_step_on_postgres() {
    require!(Postgres);
    for point in [
        "erase.before_commit",
        "erase.committed",
        "erase.objects_deleted",
    ] {
        let (url, db) = crate::helpers::fresh_pg_database().await;
        killed_at(point, Some(&url)).await;
        crate::helpers::drop_pg_database(&db).await;
    }
}

async fn ingest_with_participants(
    app: &TestApp,
    call: &str,
    participants: &[(&str, &str)],
    labels: &[(&str, &str)],
    i: u32,
) -> pb::Recording {
    let mut h = header(call);
    h.participants = participants
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    h.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    app.client(&app.ingest_token)
        .await
        .ingest_stream(h, callvault::client::pieces(small_wav(i), 16 * 1024))
        .await
        .unwrap()
        .recording
        .unwrap()
}

async fn search(app: &TestApp, participant: &str) -> (BTreeSet<String>, u64) {
    let res = app
        .client(&app.compliance_token)
        .await
        .playback
        .list_recordings(pb::ListRecordingsRequest {
            participant: participant.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (
        res.recordings.into_iter().map(|r| r.recording_id).collect(),
        res.unindexed_count,
    )
}

async fn participants_found_not_readable(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let r1 = ingest_with_participants(
        &app,
        "dsr-1",
        &[("caller", "+44 20 7183 8750"), ("agent", "A-17")],
        &[("queue", "collections")],
        1,
    )
    .await;
    let r2 =
        ingest_with_participants(&app, "dsr-2", &[("callee", "0044-20-7183-8750")], &[], 2).await;
    let r3 = ingest_with_participants(&app, "dsr-3", &[("caller", "+15551234567")], &[], 3).await;

    // Shown as given to compliance staff, with the recording.
    let got = get(&app, &r1.recording_id).await.unwrap();
    assert_eq!(got.participants["caller"], "+44 20 7183 8750");
    assert_eq!(got.participants["agent"], "A-17");

    // Found by exact match after normalization, in any role.
    let (found, pending) = search(&app, "+442071838750").await;
    assert_eq!(pending, 0);
    assert_eq!(
        found,
        BTreeSet::from([r1.recording_id.clone(), r2.recording_id.clone()])
    );
    assert_eq!(
        search(&app, "a-17").await.0,
        BTreeSet::from([r1.recording_id.clone()])
    );
    assert_eq!(
        search(&app, "+1 555 123 4567").await.0,
        BTreeSet::from([r3.recording_id.clone()])
    );
    assert!(search(&app, "+442071838751").await.0.is_empty());
    let err = app
        .client(&app.compliance_token)
        .await
        .playback
        .list_recordings(pb::ListRecordingsRequest {
            participant: "+44 nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Bad participants are refused at ingest, naming the field.
    let mut h = header("dsr-bad");
    h.participants = [("Caller Number".to_owned(), "1".to_owned())].into();
    let err = app
        .client(&app.ingest_token)
        .await
        .ingest_stream(h, callvault::client::pieces(small_wav(9), 16 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("header.participants"),
        "{}",
        err.message()
    );

    // A dump of the catalog shows no number and no agent id, in any form.
    let dump = catalog_dump(&app.archive).await;
    for needle in [
        "442071838750",
        "2071838750",
        "5551234567",
        "7183 8750",
        "a-17",
        "A-17",
    ] {
        assert!(
            !dump
                .iter()
                .any(|cell| cell.windows(needle.len()).any(|w| w == needle.as_bytes())),
            "`{needle}` is readable in the catalog"
        );
    }
    // Nor the searches' audit events: that a search happened, not whom.
    let events = crate::audit::events(&app).await;
    let listed = crate::audit::of(&events, Action::RecordingsListed);
    assert!(
        listed
            .iter()
            .any(|e| e.details["participant_search"] == true)
    );
    assert!(
        !events
            .iter()
            .any(|e| String::from_utf8_lossy(&e.canonical()).contains("2071838750"))
    );

    // Holds by participant and by window + label go through the index.
    let mut comp = app.client(&app.compliance_token).await;
    let h = comp
        .compliance
        .place_legal_hold(pb::PlaceLegalHoldRequest {
            name: "dsr".into(),
            reason: "subject access request 99".into(),
            participant: "+442071838750".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.recording_count, 2);
    assert!(
        !h.selection_json.contains("2071838750"),
        "{}",
        h.selection_json
    );
    let h = comp
        .compliance
        .place_legal_hold(pb::PlaceLegalHoldRequest {
            name: "collections".into(),
            reason: "regulator".into(),
            start_time: Some(prost_types::Timestamp::default()),
            end_time: Some(prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            labels: [("queue".to_owned(), "collections".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.recording_count, 1);
    release(&mut comp, "dsr").await.unwrap();
    release(&mut comp, "collections").await.unwrap();

    // Find, export, erase: three commands of the real CLI.
    let out = crate::helpers::cli_against(
        &app.addr,
        &app.compliance_token,
        &[
            "recordings",
            "list",
            "--participant",
            "+442071838750",
            "--json",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let bundle = app.dir.path().join("dsr.tar");
    let out = crate::helpers::cli_against(
        &app.addr,
        &app.compliance_token,
        &[
            "export",
            "--participant",
            "+442071838750",
            "--reason",
            "subject access request 99",
            "-o",
            bundle.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&bundle).unwrap().len() > 0);
    let cert = app.dir.path().join("dsr-cert.json");
    let out = crate::helpers::cli_against(
        &app.addr,
        &app.compliance_token,
        &[
            "erase",
            "--participant",
            "+442071838750",
            "--reason",
            "GDPR Art. 17 request 99",
            "-o",
            cert.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = certificate::verify(
        &std::fs::read(&cert).unwrap(),
        Some(&test_audit_key().verifier()),
    )
    .unwrap();
    assert_eq!(v.certificate.recordings.len(), 2);
    assert!(search(&app, "+442071838750").await.0.is_empty());
    assert!(get(&app, &r3.recording_id).await.is_ok());
    app.shutdown().await;
}

on_both_catalogs!(
    participants_are_found_but_not_readable_on_sqlite,
    participants_are_found_but_not_readable_on_postgres,
    participants_found_not_readable
);

/// A write-only node (RSA key) cannot unwrap the index key: its recordings
/// wait for the indexer, and searches say so meanwhile.
#[tokio::test]
async fn write_only_recordings_are_indexed_by_the_indexer() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let mut admin = app.client(&app.admin_token).await;
    let rsa = app.ring().create_rsa_key("RSA_2048").unwrap();
    crate::keys::register(&mut admin, &rsa).await.unwrap();
    let r = ingest_with_participants(&app, "wo-1", &[("caller", "+442071838750")], &[], 1).await;
    let (found, pending) = search(&app, "+442071838750").await;
    assert!(found.is_empty());
    assert_eq!(pending, 1, "the search says it may be incomplete");
    // Selections of "every call of this person" refuse rather than miss it.
    let mut comp = app.client(&app.compliance_token).await;
    let err = comp
        .compliance
        .place_legal_hold(pb::PlaceLegalHoldRequest {
            name: "dsr".into(),
            reason: "r".into(),
            participant: "+442071838750".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("not in the search index"),
        "{}",
        err.message()
    );
    let err = comp
        .compliance
        .erase_recordings(pb::EraseRecordingsRequest {
            participant: "+442071838750".into(),
            reason: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = set_rule(&mut comp, None, 30, true).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let n = callvault::compliance::subjects::index_pending(&app.archive)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (found, pending) = search(&app, "+442071838750").await;
    assert_eq!(found, BTreeSet::from([r.recording_id.clone()]));
    assert_eq!(pending, 0);
    app.shutdown().await;
}

/// The index key is wrapped by the tenant's KMS key like a data key: a
/// rewrap job moves it, and its old key cannot be retired before.
#[tokio::test]
async fn the_index_key_moves_with_a_rewrap() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let r = ingest_with_participants(&app, "rw-1", &[("agent", "a-1")], &[], 1).await;
    let mut admin = app.client(&app.admin_token).await;
    let old = crate::keys::active_arn(&app).await;
    let new = app.ring().create_key().unwrap();
    crate::keys::register(&mut admin, &new).await.unwrap();
    let job = crate::keys::start_rewrap(&mut admin, &old, &new, 100)
        .await
        .unwrap();
    let done = crate::keys::wait_for_job(&mut admin, &job.job_id).await;
    assert_eq!(done.state(), pb::JobState::Succeeded, "{done:?}");
    admin
        .keys
        .retire_key(pb::RetireKeyRequest {
            key_arn: old.clone(),
        })
        .await
        .unwrap();
    // Old key gone from KMS: the search still works through the new one.
    app.ring().schedule_deletion(&old, 7).unwrap();
    app.archive.keys.purge_all();
    assert_eq!(
        search(&app, "a-1").await.0,
        BTreeSet::from([r.recording_id.clone()])
    );
    app.shutdown().await;
}

/// What certificates say about old object versions comes from the store
/// itself: a probe write on S3 (moto over the wire) tells a versioned bucket
/// from one that is not.
#[tokio::test]
async fn the_store_says_whether_it_keeps_old_versions() {
    require!(Moto);
    let bucket = crate::helpers::moto_bucket().await;
    let store = ChunkStore::from_url(
        &format!("s3://{bucket}/archive"),
        &callvault::store::S3Options {
            endpoint: Some(crate::helpers::moto_endpoint()),
            region: Some("us-east-1".into()),
        },
    )
    .unwrap();
    assert!(
        matches!(
            store.versioning().await,
            callvault::store::Versioning::Off(_)
        ),
        "a new bucket keeps no versions"
    );
    crate::helpers::moto_enable_versioning(&bucket).await;
    assert_eq!(store.versioning().await, callvault::store::Versioning::On);
    let local = ChunkStore::local(tempfile::tempdir().unwrap().path()).unwrap();
    assert!(matches!(
        local.versioning().await,
        callvault::store::Versioning::Off(_)
    ));
}
