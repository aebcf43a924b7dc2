//! Byte-exact round trips through the real gRPC server, for every format, on
//! both catalogs and on the S3 + AWS KMS backends (moto on the wire).

use callvault::kms::cache::KeyCacheConfig;

use crate::helpers::*;

async fn every_format_round_trips(app: TestApp) {
    let mut inputs = Vec::new();
    for (file, container, codec) in FIXTURES {
        let audio = fixture(file);
        let res = app
            .ingest(&format!("call-{file}"), audio.clone())
            .await
            .unwrap_or_else(|s| panic!("{file}: {s}"));
        let rec = res.recording.unwrap();
        let meta = rec.audio.clone().unwrap();
        assert_eq!(
            (meta.container.as_str(), meta.codec.as_str()),
            (*container, *codec),
            "{file}"
        );
        assert!(
            meta.sample_rate_hz > 0 && meta.channels == 1,
            "{file}: {meta:?}"
        );
        // The speech is 14.47 s long in every encoding.
        assert!(
            (14_300..=14_700).contains(&meta.duration_ms),
            "{file}: duration {} ms",
            meta.duration_ms
        );
        assert!(meta.warning.is_empty(), "{file}: {}", meta.warning);
        assert_eq!(rec.size_bytes as usize, audio.len());
        assert_eq!(rec.chunk_count as usize, audio.len().div_ceil(64 * 1024));
        assert_eq!(
            rec.sha256,
            hex::encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                &audio
            ))
        );
        let played = app.play(&rec.recording_id).await.unwrap();
        assert!(
            played == audio,
            "{file}: played bytes differ from the input"
        );
        inputs.push(audio);
    }
    // Nothing the archive persisted or logged contains plaintext audio.
    let persisted = app.persisted_bytes().await;
    for audio in &inputs {
        for blob in &persisted {
            assert!(
                !contains_window(blob, audio),
                "plaintext audio found in persisted data"
            );
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn every_format_round_trips_on_sqlite() {
    every_format_round_trips(spawn_app(CatalogKind::Sqlite).await).await;
}

#[tokio::test]
async fn every_format_round_trips_on_postgres() {
    every_format_round_trips(spawn_app(CatalogKind::Postgres).await).await;
}

#[tokio::test]
async fn every_format_round_trips_on_s3_and_aws_kms_emulator() {
    let app = spawn_app_with(
        CatalogKind::Postgres,
        Remote::Moto,
        KeyCacheConfig::default(),
    )
    .await;
    // The stored key is the exact ARN KMS returned, never an alias.
    let key = app
        .archive
        .catalog
        .active_key(&app.tenant.id)
        .await
        .unwrap();
    assert!(
        key.key_arn.starts_with("arn:aws:kms:us-east-1:"),
        "{}",
        key.key_arn
    );
    every_format_round_trips(app).await;
}

#[tokio::test]
async fn playback_from_an_offset_and_labels() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let audio = fixture("speech_pcm.wav");
    let mut h = header("call-offset");
    h.chunk_size_bytes = 64 * 1024;
    h.labels = [("caller".to_owned(), "+1 555 0100".to_owned())].into();
    let res = app
        .client(&app.ingest_token)
        .await
        .ingest_stream(h, callvault::cli::pieces(audio.clone(), 10_000))
        .await
        .unwrap();
    let id = res.recording.unwrap().recording_id;
    let mut sup = app.client(&app.supervisor_token).await;
    for offset in [1u64, 65_535, 65_536, 100_000, audio.len() as u64 - 1] {
        let (bytes, _) = sup.play_all(&id, offset).await.unwrap();
        assert!(bytes[..] == audio[offset as usize..], "offset {offset}");
    }
    let err = sup.play_all(&id, audio.len() as u64).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    let got = sup
        .playback
        .get_recording(callvault::api::pb::GetRecordingRequest {
            recording_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.labels.get("caller").map(String::as_str),
        Some("+1 555 0100")
    );
    // Labels are PII: never stored in the clear.
    for blob in app.persisted_bytes().await {
        assert!(
            !blob.windows(11).any(|w| w == b"+1 555 0100"),
            "label stored in plaintext"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn same_call_id_is_idempotent_and_lists_page() {
    let app = spawn_app(CatalogKind::Postgres).await;
    let audio = fixture("speech_mulaw.wav");
    let first = app.ingest("call-dup", audio.clone()).await.unwrap();
    let kms_calls = app.archive.metrics.calls("GenerateDataKey");
    let again = app.ingest("call-dup", audio.clone()).await.unwrap();
    assert!(!first.deduplicated && again.deduplicated);
    assert_eq!(
        first.recording.unwrap().recording_id,
        again.recording.unwrap().recording_id
    );
    assert_eq!(
        app.archive.metrics.calls("GenerateDataKey"),
        kms_calls,
        "a retry makes no KMS call"
    );
    for i in 0..4 {
        app.ingest(&format!("call-page-{i}"), audio.clone())
            .await
            .unwrap();
    }
    let mut sup = app.client(&app.supervisor_token).await;
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = sup
            .playback
            .list_recordings(callvault::api::pb::ListRecordingsRequest {
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.recordings.len() <= 2);
        seen.extend(page.recordings.into_iter().map(|r| r.recording_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages come in creation order");
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_cold_plays_make_one_kms_call() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let audio = fixture("speech_pcm.wav");
    let id = app
        .ingest("call-cold", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let before = app.archive.metrics.calls("Decrypt");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = app.client(&app.supervisor_token).await;
        let id = id.clone();
        tasks.push(tokio::spawn(
            async move { c.play_all(&id, 0).await.unwrap().0 },
        ));
    }
    for t in tasks {
        assert!(t.await.unwrap() == audio);
    }
    assert_eq!(app.archive.metrics.calls("Decrypt") - before, 1);
    app.shutdown().await;
}
