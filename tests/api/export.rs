//! Compliance exports (issue 10, item 6), the use case: every selection
//! mode and refusal, the role, tenant isolation, a disabled key, audio that
//! breaks the manifest's promise, and the export's audit events. The
//! bundle itself (round trips, interoperability, tampering) is
//! `export_bundle.rs`; the memory bound `export_load.rs`. The helpers here
//! serve all three.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use callvault::api::pb;
use callvault::export::bag;

use crate::helpers::*;

/// The fixtures exported in the round trips: (file, call id, codec as
/// ffprobe names it, agent label).
pub(crate) const EXPORTED: &[(&str, &str, &str, &str)] = &[
    ("speech_pcm.wav", "call-wav", "pcm_s16le", "alex"),
    ("speech.mp3", "call-mp3", "mp3", "alex"),
    ("speech_aac_moov_end.m4a", "call-m4a", "aac", "sam"),
];

/// Calls of the fixtures start at these times (ms), one hour apart.
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Ingests the fixtures with labels and start times; returns
/// (recording id, fixture bytes) in `EXPORTED` order.
pub(crate) async fn ingest_fixtures(app: &TestApp) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for (i, (file, call, _, agent)) in EXPORTED.iter().enumerate() {
        let audio = fixture(file);
        let mut h = header(call);
        h.chunk_size_bytes = 64 * 1024;
        h.labels = HashMap::from([
            ("agent".to_owned(), (*agent).to_owned()),
            ("queue".to_owned(), "billing".to_owned()),
        ]);
        h.start_time = Some(prost_types::Timestamp {
            seconds: (T0 + i as i64 * 3_600_000) / 1000,
            nanos: 0,
        });
        let rec = app
            .client(&app.ingest_token)
            .await
            .ingest_stream(h, callvault::client::pieces(audio.clone(), 64 * 1024))
            .await
            .unwrap()
            .recording
            .unwrap();
        out.push((rec.recording_id, audio));
    }
    out
}

/// Exports `ids` through the CLI to `name` in the app's directory, expecting
/// a refusal that leaves neither the file nor its `.partial`: its stderr.
async fn refused_export(app: &TestApp, ids: &[&str], reason: &str, name: &str) -> String {
    let out_path = app.dir.path().join(name);
    let mut args = vec!["--reason", reason, "-o", out_path.to_str().unwrap()];
    for id in ids {
        args.extend(["--recording", id]);
    }
    let out = export_cli(app, &args).await;
    assert!(!out.status.success(), "{name}: the export succeeded");
    assert!(!out_path.exists());
    let mut partial = out_path.clone().into_os_string();
    partial.push(".partial");
    assert!(!PathBuf::from(partial).exists());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The audit events of `action`, waiting for the first one (a stream's
/// closing event is written when its stream is dropped).
async fn eventually(app: &TestApp, action: &str) -> Vec<pb::AuditEvent> {
    for _ in 0..100 {
        let events = audit_events(app, action).await;
        if !events.is_empty() {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {action} event");
}

pub(crate) async fn export_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    cli_against(&app.addr, &app.compliance_token, &all).await
}

/// The files of a tar (directories skipped), by path under its root.
pub(crate) fn tar_files(tar_bytes: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut root = String::new();
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let (top, rest) = path.split_once('/').unwrap();
        root = top.to_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        files.push((rest.to_owned(), data));
    }
    (root, files)
}

/// Starts an export over gRPC and reads it whole: (header, bundle bytes).
pub(crate) async fn export_rpc(
    app: &TestApp,
    token: &str,
    req: pb::ExportRequest,
) -> Result<(pb::ExportHeader, Vec<u8>), tonic::Status> {
    let mut stream = app
        .client(token)
        .await
        .export
        .export(req)
        .await?
        .into_inner();
    let header = match stream.message().await?.and_then(|m| m.payload) {
        Some(pb::export_response::Payload::Header(h)) => h,
        other => panic!("the first message is not a header: {other:?}"),
    };
    let mut bytes = Vec::new();
    while let Some(m) = stream.message().await? {
        match m.payload {
            Some(pb::export_response::Payload::Data(d)) => bytes.extend_from_slice(&d),
            other => panic!("a message after the header is not data: {other:?}"),
        }
    }
    assert_eq!(header.tar_size_bytes as usize, bytes.len());
    Ok((header, bytes))
}

pub(crate) fn by_ids(ids: &[&str]) -> pb::ExportRequest {
    pb::ExportRequest {
        recording_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        reason: "audit".into(),
        ..Default::default()
    }
}

fn query(labels: &[(&str, &str)], from_ms: i64, to_ms: i64) -> pb::ExportQuery {
    pb::ExportQuery {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        start_time: Some(prost_types::Timestamp {
            seconds: from_ms / 1000,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: to_ms / 1000,
            nanos: 0,
        }),
    }
}

/// Each selection mode takes exactly the recordings it names, in order,
/// without duplicates; the query matches the time window and every label.
#[tokio::test]
async fn each_selection_mode_selects_what_it_names() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    let ids: Vec<&str> = recs.iter().map(|(id, _)| id.as_str()).collect();
    let hour = 3_600_000;
    let cases: Vec<(&str, pb::ExportRequest, Vec<&str>)> = vec![
        (
            "ids, repeated",
            by_ids(&[ids[2], ids[0], ids[2]]),
            vec![ids[2], ids[0]],
        ),
        (
            "call ids",
            pb::ExportRequest {
                external_call_ids: vec!["call-mp3".into(), "call-wav".into()],
                reason: "audit".into(),
                ..Default::default()
            },
            vec![ids[1], ids[0]],
        ),
        (
            "label and window",
            pb::ExportRequest {
                query: Some(query(&[("agent", "alex")], T0, T0 + 3 * hour)),
                reason: "audit".into(),
                ..Default::default()
            },
            vec![ids[0], ids[1]],
        ),
        (
            "two labels",
            pb::ExportRequest {
                query: Some(query(
                    &[("agent", "sam"), ("queue", "billing")],
                    T0,
                    T0 + 3 * hour,
                )),
                reason: "audit".into(),
                ..Default::default()
            },
            vec![ids[2]],
        ),
        (
            "window only (end exclusive)",
            pb::ExportRequest {
                query: Some(query(&[], T0 + hour, T0 + 2 * hour)),
                reason: "audit".into(),
                ..Default::default()
            },
            vec![ids[1]],
        ),
    ];
    for (name, req, want) in cases {
        let (header, bytes) = export_rpc(&app, &app.compliance_token, req)
            .await
            .unwrap_or_else(|s| panic!("{name}: {s:?}"));
        assert_eq!(header.recording_ids, want, "{name}");
        let (_, files) = tar_files(&bytes);
        let audio: Vec<&String> = files
            .iter()
            .map(|(p, _)| p)
            .filter(|p| p.starts_with(bag::RECORDINGS_DIR) && !p.ends_with(".json"))
            .collect();
        assert_eq!(audio.len(), want.len(), "{name}: {audio:?}");
    }
    app.shutdown().await;
}

/// Bad selections get precise statuses naming what is wrong, and nothing
/// is streamed.
#[tokio::test]
async fn bad_selections_are_refused_precisely() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    let id = recs[0].0.as_str();
    let missing = callvault::domain::RecordingId::new().to_string();
    let hour = 3_600_000;
    use tonic::Code;
    let cases: Vec<(&str, pb::ExportRequest, Code, String)> = vec![
        (
            "no selection",
            pb::ExportRequest {
                reason: "audit".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "selection".into(),
        ),
        (
            "mixed modes",
            pb::ExportRequest {
                external_call_ids: vec!["call-wav".into()],
                ..by_ids(&[id])
            },
            Code::InvalidArgument,
            "exactly one".into(),
        ),
        (
            "no reason",
            pb::ExportRequest {
                reason: "  ".into(),
                ..by_ids(&[id])
            },
            Code::InvalidArgument,
            "reason: is required".into(),
        ),
        (
            "multi-line reason",
            pb::ExportRequest {
                reason: "a\nb".into(),
                ..by_ids(&[id])
            },
            Code::InvalidArgument,
            "reason: must be one line".into(),
        ),
        (
            "bad recipient",
            pb::ExportRequest {
                age_recipients: vec!["age1nope".into()],
                ..by_ids(&[id])
            },
            Code::InvalidArgument,
            "age_recipients[0]".into(),
        ),
        (
            "malformed id",
            by_ids(&[id, "not-an-id"]),
            Code::InvalidArgument,
            "recording_ids[1]".into(),
        ),
        (
            "unknown id",
            by_ids(&[id, &missing]),
            Code::NotFound,
            format!("recording {missing} not found"),
        ),
        (
            "unknown call id",
            pb::ExportRequest {
                external_call_ids: vec!["call-wav".into(), "call-nope".into()],
                reason: "audit".into(),
                ..Default::default()
            },
            Code::NotFound,
            "call `call-nope`".into(),
        ),
        (
            "query without a window",
            pb::ExportRequest {
                query: Some(pb::ExportQuery {
                    labels: HashMap::from([("agent".into(), "alex".into())]),
                    ..Default::default()
                }),
                reason: "audit".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "start_time and end_time".into(),
        ),
        (
            "reversed window",
            pb::ExportRequest {
                query: Some(query(&[], T0 + hour, T0)),
                reason: "audit".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "query.end_time".into(),
        ),
        (
            "nothing matches",
            pb::ExportRequest {
                query: Some(query(&[("agent", "nobody")], T0, T0 + 3 * hour)),
                reason: "audit".into(),
                ..Default::default()
            },
            Code::NotFound,
            "label agent=nobody".into(),
        ),
    ];
    for (name, req, code, part) in cases {
        let err = export_rpc(&app, &app.compliance_token, req)
            .await
            .map(|(h, _)| h)
            .expect_err(name);
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(
            err.message().contains(&part),
            "{name}: {:?} does not name {part:?}",
            err.message()
        );
    }
    app.shutdown().await;
}

/// Only the compliance role exports; every other role is refused, and the
/// refusal is in the audit trail.
#[tokio::test]
async fn only_compliance_may_export() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    for token in [&app.supervisor_token, &app.ingest_token, &app.admin_token] {
        let err = export_rpc(&app, token, by_ids(&[&recs[0].0]))
            .await
            .map(|(h, _)| h)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("export recordings"), "{err:?}");
    }
    let events = audit_events(&app, "access.refused").await;
    let refused = events
        .iter()
        .filter(|e| e.details_json.contains("export.start"))
        .count();
    assert_eq!(refused, 3, "{events:?}");
    app.shutdown().await;
}

async fn audit_events(app: &TestApp, action: &str) -> Vec<pb::AuditEvent> {
    app.client(&app.compliance_token)
        .await
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            action: action.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// Another tenant's recordings are never selected: by id or call id they
/// are NOT_FOUND exactly like ids that do not exist, and a query over the
/// same window and labels finds only the caller's.
#[tokio::test]
async fn other_tenants_recordings_are_never_selected() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    let (_, other_ingest, _) = app.other_tenant("globex").await;
    let mut h = header("call-globex");
    h.labels = HashMap::from([("agent".to_owned(), "alex".to_owned())]);
    h.start_time = Some(prost_types::Timestamp {
        seconds: T0 / 1000,
        nanos: 0,
    });
    let theirs = app
        .client(&other_ingest)
        .await
        .ingest_stream(
            h,
            callvault::client::pieces(fixture("speech.mp3"), 64 * 1024),
        )
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let err = export_rpc(&app, &app.compliance_token, by_ids(&[&theirs]))
        .await
        .map(|(h, _)| h)
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains(&theirs), "{err:?}");
    let err = export_rpc(
        &app,
        &app.compliance_token,
        pb::ExportRequest {
            external_call_ids: vec!["call-globex".into()],
            reason: "audit".into(),
            ..Default::default()
        },
    )
    .await
    .map(|(h, _)| h)
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let (header, bytes) = export_rpc(
        &app,
        &app.compliance_token,
        pb::ExportRequest {
            query: Some(query(&[("agent", "alex")], T0 - 1000, T0 + 86_400_000)),
            reason: "audit".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        header.recording_ids,
        vec![recs[0].0.clone(), recs[1].0.clone()]
    );
    assert!(!String::from_utf8_lossy(&bytes).contains(&theirs));
    app.shutdown().await;
}

/// A recording whose key is disabled fails the whole export before
/// anything is written: FAILED_PRECONDITION naming the recording and the
/// key's state; no file, no partial file, no export event.
#[tokio::test]
async fn a_disabled_key_refuses_the_export_and_nothing_is_written() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    let arn = callvault::catalog::keys::active(&mut *app.db().await, &app.tenant.id)
        .await
        .unwrap()
        .key_arn
        .to_string();
    app.ring().set_enabled(&arn, false).unwrap();
    app.archive.key_revoked(&arn).await;
    let stderr = refused_export(
        &app,
        &[&recs[0].0, &recs[2].0],
        "court order 7",
        "refused.tar",
    )
    .await;
    for part in [
        "FailedPrecondition",
        "disabled",
        &recs[0].0,
        &recs[2].0,
        &arn,
    ] {
        assert!(stderr.contains(part), "{part:?} not in {stderr}");
    }
    assert!(audit_events(&app, "export.start").await.is_empty());
    app.shutdown().await;
}

/// The export is an audit event, committed before the first byte, naming
/// its recordings, reason and id; its end is another, with what was sent.
#[tokio::test]
async fn an_export_is_an_audit_event() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    let (header, bytes) = export_rpc(
        &app,
        &app.compliance_token,
        pb::ExportRequest {
            reason: "subject access request 99".into(),
            ..by_ids(&[&recs[1].0, &recs[0].0])
        },
    )
    .await
    .unwrap();
    let started = audit_events(&app, "export.start").await;
    assert_eq!(started.len(), 1);
    let e = &started[0];
    assert_eq!(e.index, header.audit_event_index);
    assert_eq!(e.recording_ids, vec![recs[1].0.clone(), recs[0].0.clone()]);
    let details: serde_json::Value = serde_json::from_str(&e.details_json).unwrap();
    assert_eq!(details["reason"], "subject access request 99");
    assert_eq!(details["export_id"], header.export_id.as_str());
    assert_eq!(details["recording_count"], 2);
    assert_eq!(e.actor_role, "compliance");
    // The finish event is written when the stream ends.
    let finished = eventually(&app, "export.finish").await;
    assert_eq!(finished.len(), 1);
    let details: serde_json::Value = serde_json::from_str(&finished[0].details_json).unwrap();
    assert_eq!(details["export_id"], header.export_id.as_str());
    assert_eq!(details["completed"], true);
    assert_eq!(details["bytes_sent"], bytes.len() as u64);
    app.shutdown().await;
}

/// Audio that does not hash to what the catalog recorded at ingest (here
/// the catalog's hash was altered) ends the stream with DATA_LOSS, naming
/// the recording: the manifest already promised that hash. The CLI keeps
/// nothing of the bundle, and `export.finish` records the failure.
#[tokio::test]
async fn audio_that_differs_from_its_ingest_hash_fails_the_export_and_nothing_is_kept() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    sqlx::query("UPDATE recordings SET sha256 = $1 WHERE recording_id = $2")
        .bind("0".repeat(64))
        .bind(&recs[1].0)
        .execute(&mut *app.db().await)
        .await
        .unwrap();
    let stderr = refused_export(&app, &[&recs[0].0, &recs[1].0], "audit", "lied.tar").await;
    assert!(
        stderr.contains("DataLoss") && stderr.contains(&recs[1].0),
        "{stderr}"
    );
    assert!(stderr.contains("SHA-256"), "{stderr}");
    let finished = eventually(&app, "export.finish").await;
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].outcome, "failed");
    app.shutdown().await;
}
