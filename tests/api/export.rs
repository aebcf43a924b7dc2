//! Compliance exports (issue 10, items 6–8): round trips through the real
//! binary on both catalogs, every selection mode and refusal, age
//! encryption decrypted by the reference `age` CLI, the bag validated by
//! the Library of Congress `bagit.py`, the audio probed by `ffprobe`, the
//! tamper table of `export verify`, tenant isolation and the audit events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use callvault::api::pb;
use callvault::export::bag;

use crate::helpers::*;

/// The fixtures exported in the round trips: (file, call id, codec as
/// ffprobe names it, agent label).
const EXPORTED: &[(&str, &str, &str, &str)] = &[
    ("speech_pcm.wav", "call-wav", "pcm_s16le", "alex"),
    ("speech.mp3", "call-mp3", "mp3", "alex"),
    ("speech_aac_moov_end.m4a", "call-m4a", "aac", "sam"),
];

/// Calls of the fixtures start at these times (ms), one hour apart.
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// A tool the interoperability tests drive: `env` names its path, else it
/// is looked up on PATH. Missing under CI is a failure, not a skip.
fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed (scripts/test.sh installs it; or set {env})"
        );
        eprintln!("skipped: {name} is not installed (scripts/test.sh installs it; or set {env})");
    }
    found
}

async fn run(program: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ingests the fixtures with labels and start times; returns
/// (recording id, fixture bytes) in `EXPORTED` order.
async fn ingest_fixtures(app: &TestApp) -> Vec<(String, Bytes)> {
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

/// The deployment's verifier key, pinned in a file as an auditor keeps it.
fn pinned_key(app: &TestApp) -> PathBuf {
    let path = app.dir.path().join("verifier.key");
    std::fs::write(&path, app.archive.audit_key.verifier().to_string()).unwrap();
    path
}

async fn export_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    cli_against(&app.addr, &app.compliance_token, &all).await
}

async fn verify_cli(file: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["export", "verify", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    cli_against("http://127.0.0.1:1", "unused", &args).await
}

/// The files of a tar (directories skipped), by path under its root.
fn tar_files(tar_bytes: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
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

fn write_tar(root: &str, files: &[(String, Vec<u8>)], to: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(to).unwrap());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("{root}/{path}"), data.as_slice())
            .unwrap();
    }
    b.finish().unwrap();
}

/// Export round trip through the binary: the bundle verifies offline with
/// the pinned key, holds the original bytes, validates with bagit.py, and
/// its audio probes with ffprobe as the codec that was ingested.
async fn round_trip(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let recs = ingest_fixtures(&app).await;
    let out_path = app.dir.path().join("bundle.tar");
    let mut args = vec!["--reason", "case 2026-117: regulator request", "--json"];
    for (id, _) in &recs {
        args.extend(["--recording", id.as_str()]);
    }
    args.extend(["-o", out_path.to_str().unwrap()]);
    let out = ok(&export_cli(&app, &args).await, "export");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let export_id = summary["export_id"].as_str().unwrap().to_owned();
    assert_eq!(summary["recording_ids"].as_array().unwrap().len(), 3);

    // Offline verification with the key the auditor pinned.
    let key = pinned_key(&app);
    let verified = ok(
        &verify_cli(&out_path, &["--public-key", key.to_str().unwrap()]).await,
        "export verify",
    );
    assert!(
        verified.starts_with(&format!("OK: export {export_id}: 3 recordings")),
        "{verified}"
    );

    // The original bytes, as ingested, and their metadata.
    let bundle = std::fs::read(&out_path).unwrap();
    let (root, files) = tar_files(&bundle);
    assert_eq!(root, bag::root_dir(&export_id));
    let files: HashMap<String, Vec<u8>> = files.into_iter().collect();
    for ((id, audio), (file, call, _, agent)) in recs.iter().zip(EXPORTED) {
        let meta: bag::RecordingMetadata =
            serde_json::from_slice(&files[&bag::metadata_path(id)]).unwrap();
        assert_eq!(&files[&meta.file][..], &audio[..], "{file}");
        assert_eq!(meta.external_call_id, *call);
        assert_eq!(meta.labels["agent"], *agent);
        assert_eq!(meta.sha256, callvault::crypto::sha256_hex(audio));
        assert_eq!(meta.size_bytes, audio.len() as u64);
        assert!(meta.kms_key_arn.starts_with("arn:"), "{}", meta.kms_key_arn);
        assert_eq!(meta.kms_region, "local");
        assert_eq!(meta.chunk_count, audio.len().div_ceil(64 * 1024) as u32);
        assert!(meta.start_time.is_some());
    }
    let info = String::from_utf8(files[bag::BAG_INFO_PATH].clone()).unwrap();
    for want in [
        "Source-Organization: acme\n".to_owned(),
        format!("External-Identifier: {export_id}\n"),
        "External-Description: case 2026-117: regulator request\n".to_owned(),
        "Bagging-Date: ".to_owned(),
        "Payload-Oxum: ".to_owned(),
    ] {
        assert!(info.contains(&want), "bag-info.txt lacks {want:?}:\n{info}");
    }
    // Every audit event of the three recordings is in the bag, with the
    // export's own, and each proof verifies with the existing verifier.
    let events: Vec<&String> = files
        .keys()
        .filter(|p| p.starts_with(bag::EVENTS_DIR))
        .collect();
    assert!(events.len() >= 4, "{events:?}");
    let dir = app.dir.path().join("extracted");
    std::fs::create_dir_all(&dir).unwrap();
    ok(
        &run(
            Path::new("tar"),
            &[
                "-xf",
                out_path.to_str().unwrap(),
                "-C",
                dir.to_str().unwrap(),
            ],
        )
        .await,
        "tar -x",
    );
    let bag_dir = dir.join(&root);
    for p in &events {
        let proof = bag_dir.join(p);
        let out = cli_against(
            "http://127.0.0.1:1",
            "unused",
            &[
                "audit",
                "verify-proof",
                proof.to_str().unwrap(),
                "--public-key",
                key.to_str().unwrap(),
            ],
        )
        .await;
        assert!(ok(&out, "audit verify-proof").starts_with("OK: event "));
    }

    // Tools we did not write.
    if let Some(bagit) = tool("bagit.py", "CALLVAULT_TEST_BAGIT") {
        let out = run(&bagit, &["--validate", bag_dir.to_str().unwrap()]).await;
        assert!(
            out.status.success(),
            "bagit.py --validate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(ffprobe) = tool("ffprobe", "CALLVAULT_TEST_FFPROBE") {
        for ((id, _), (file, _, codec, _)) in recs.iter().zip(EXPORTED) {
            let meta: bag::RecordingMetadata =
                serde_json::from_slice(&files[&bag::metadata_path(id)]).unwrap();
            let audio = bag_dir.join(&meta.file);
            let out = run(
                &ffprobe,
                &[
                    "-v",
                    "error",
                    "-select_streams",
                    "a:0",
                    "-show_entries",
                    "stream=codec_name",
                    "-of",
                    "csv=p=0",
                    audio.to_str().unwrap(),
                ],
            )
            .await;
            assert_eq!(ok(&out, "ffprobe").trim(), *codec, "{file}");
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn export_round_trip_sqlite() {
    round_trip(CatalogKind::Sqlite).await;
}

#[tokio::test]
async fn export_round_trip_postgres() {
    require!(Postgres);
    round_trip(CatalogKind::Postgres).await;
}

/// Starts an export over gRPC and reads it whole: (header, bundle bytes).
async fn export_rpc(
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

fn by_ids(ids: &[&str]) -> pb::ExportRequest {
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

/// An age-encrypted bundle: the server encrypts, the file holds no
/// plaintext, the reference `age` CLI decrypts it to a bundle that
/// verifies, `export verify --identity` decrypts and verifies it directly,
/// and another identity is refused by name.
#[tokio::test]
async fn an_age_encrypted_bundle_decrypts_with_the_age_cli() {
    let Some(age) = tool("age", "CALLVAULT_TEST_AGE") else {
        return;
    };
    let keygen = tool("age-keygen", "CALLVAULT_TEST_AGE_KEYGEN").unwrap();
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    let dir = app.dir.path();
    let identity = dir.join("recipient.key");
    let other = dir.join("other.key");
    for k in [&identity, &other] {
        ok(
            &run(&keygen, &["-o", k.to_str().unwrap()]).await,
            "age-keygen",
        );
    }
    let recipient = ok(
        &run(&keygen, &["-y", identity.to_str().unwrap()]).await,
        "age-keygen -y",
    );
    let sealed = dir.join("bundle.tar.age");
    let mut args = vec![
        "--reason",
        "regulator",
        "--age-recipient",
        recipient.trim(),
        "-o",
        sealed.to_str().unwrap(),
    ];
    for (id, _) in &recs {
        args.extend(["--recording", id.as_str()]);
    }
    ok(&export_cli(&app, &args).await, "export --age-recipient");
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    for (_, audio) in &recs {
        assert!(
            !contains_window(&bytes, audio),
            "plaintext audio in the age file"
        );
    }
    assert!(!bytes.windows(9).any(|w| w == b"bagit.txt"));

    let key = pinned_key(&app);
    let plain = dir.join("decrypted.tar");
    ok(
        &run(
            &age,
            &[
                "-d",
                "-i",
                identity.to_str().unwrap(),
                "-o",
                plain.to_str().unwrap(),
                sealed.to_str().unwrap(),
            ],
        )
        .await,
        "age -d",
    );
    let out = verify_cli(&plain, &["--public-key", key.to_str().unwrap()]).await;
    assert!(ok(&out, "verify decrypted").starts_with("OK: "));
    let out = verify_cli(
        &sealed,
        &[
            "--identity",
            identity.to_str().unwrap(),
            "--public-key",
            key.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(ok(&out, "verify sealed").trim()).unwrap();
    assert_eq!(report["age_encrypted"], true);
    assert_eq!(report["recordings"], 3);
    let out = verify_cli(&sealed, &["--identity", other.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot decrypt the bundle with this identity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify_cli(&sealed, &[]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("--identity"));
    app.shutdown().await;
}

/// `export verify` names the first problem of a tampered bundle and exits
/// non-zero; the untampered bundle verifies.
#[tokio::test]
async fn export_verify_names_each_tampering() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    let (header, bytes) = export_rpc(
        &app,
        &app.compliance_token,
        by_ids(&[&recs[0].0, &recs[1].0]),
    )
    .await
    .unwrap();
    let (root, files) = tar_files(&bytes);
    let key = pinned_key(&app);
    let other_key = app.dir.path().join("other.key");
    let stranger = callvault::audit::note::SignerKey::generate("callvault-test").unwrap();
    std::fs::write(&other_key, stranger.verifier().to_string()).unwrap();
    let audio = bag::audio_path(&recs[0].0, "wav");
    let meta = bag::metadata_path(&recs[1].0);

    type Edit = Box<dyn Fn(&mut Vec<(String, Vec<u8>)>)>;
    let edit = |path: String, f: fn(&mut Vec<u8>)| -> Edit {
        Box::new(move |files: &mut Vec<(String, Vec<u8>)>| {
            let (_, data) = files.iter_mut().find(|(p, _)| *p == path).unwrap();
            f(data);
        })
    };
    let cases: Vec<(&str, Edit, &Path, String)> = vec![
        (
            "edited audio byte",
            edit(audio.clone(), |d| {
                let mid = d.len() / 2;
                d[mid] ^= 1;
            }),
            &key,
            format!("`{audio}` does not match manifest-sha256.txt"),
        ),
        (
            "edited manifest",
            edit(bag::MANIFEST_PATH.into(), |d| {
                d[0] = if d[0] == b'0' { b'1' } else { b'0' };
            }),
            &key,
            "`manifest-sha256.txt` does not match tagmanifest-sha256.txt".into(),
        ),
        (
            "edited manifest and tag manifest",
            Box::new(|files: &mut Vec<(String, Vec<u8>)>| {
                let sha = |d: &[u8]| callvault::crypto::sha256_hex(d);
                let (_, m) = files
                    .iter_mut()
                    .find(|(p, _)| p == bag::MANIFEST_PATH)
                    .unwrap();
                m.push(b'\n');
                let new_sha = sha(m);
                let (_, t) = files
                    .iter_mut()
                    .find(|(p, _)| p == bag::TAG_MANIFEST_PATH)
                    .unwrap();
                let text = String::from_utf8(t.clone()).unwrap();
                let fixed: String = text
                    .lines()
                    .map(|l| {
                        if l.ends_with(bag::MANIFEST_PATH) {
                            format!("{new_sha}  {}\n", bag::MANIFEST_PATH)
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect();
                *t = fixed.into_bytes();
            }),
            &key,
            "the signature is for another tag manifest".into(),
        ),
        (
            "removed file",
            Box::new({
                let meta = meta.clone();
                move |files: &mut Vec<(String, Vec<u8>)>| files.retain(|(p, _)| *p != meta)
            }),
            &key,
            format!("`{meta}` is listed in manifest-sha256.txt but missing"),
        ),
        (
            "extra file",
            Box::new(|files: &mut Vec<(String, Vec<u8>)>| {
                files.push(("data/recordings/extra.txt".into(), b"hello".to_vec()))
            }),
            &key,
            "`data/recordings/extra.txt` is in the payload but not in manifest-sha256.txt".into(),
        ),
        (
            "bad signature",
            edit(bag::SIGNATURE_PATH.into(), |d| {
                // A character of the base64 signature, not of the text.
                let at = d.len() - 10;
                d[at] = if d[at] == b'A' { b'B' } else { b'A' };
            }),
            &key,
            "the signature over tagmanifest-sha256.txt does not verify".into(),
        ),
        (
            "another deployment's key",
            Box::new(|_: &mut Vec<(String, Vec<u8>)>| {}),
            &other_key,
            "the signature over tagmanifest-sha256.txt does not verify".into(),
        ),
    ];
    let untouched = app.dir.path().join("untouched.tar");
    write_tar(&root, &files, &untouched);
    let out = verify_cli(&untouched, &["--public-key", key.to_str().unwrap()]).await;
    assert!(ok(&out, "untouched").contains(&header.export_id));
    for (name, change, key, want) in cases {
        let mut changed = files.clone();
        change(&mut changed);
        let path = app.dir.path().join("tampered.tar");
        write_tar(&root, &changed, &path);
        let out = verify_cli(&path, &["--public-key", key.to_str().unwrap()]).await;
        assert!(!out.status.success(), "{name}: verified");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&want),
            "{name}: {stderr} does not say {want:?}"
        );
    }
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
