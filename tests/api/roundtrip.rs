//! Byte-exact round trips through the real gRPC server, for every format, on
//! both catalogs and on the S3 + AWS KMS backends (moto on the wire).

use callvault::kms::WrapAlgorithm;
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
    // Nothing the archive persisted or logged contains plaintext audio or a
    // plaintext data key.
    let persisted = app.persisted_bytes().await;
    let unfinished =
        callvault::catalog::recordings::expired_uploads(&mut *app.db().await, i64::MAX, 1000)
            .await
            .unwrap();
    assert!(
        unfinished.is_empty(),
        "uploads left unfinished: {unfinished:?}"
    );
    let rows =
        callvault::catalog::recordings::list(&mut *app.db().await, &app.tenant.id, None, 1000)
            .await
            .unwrap();
    assert_eq!(rows.len(), FIXTURES.len());
    for row in rows {
        let ctx = callvault::kms::EncryptionContext {
            tenant: row.tenant.to_string(),
            recording: row.id.to_string(),
        };
        let dk = app
            .archive
            .kms
            .decrypt(
                &row.key_arn,
                WrapAlgorithm::SymmetricDefault,
                &row.wrapped_key,
                &ctx,
            )
            .await
            .unwrap();
        for blob in &persisted {
            assert!(
                !blob.windows(32).any(|w| w == dk.expose()),
                "a data key was persisted or logged"
            );
            assert!(
                !blob
                    .windows(64)
                    .any(|w| w == hex::encode(dk.expose()).as_bytes()),
                "a data key was logged in hex"
            );
        }
    }
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
    require!(Postgres);
    every_format_round_trips(spawn_app(CatalogKind::Postgres).await).await;
}

#[tokio::test]
async fn every_format_round_trips_on_s3_and_aws_kms_emulator() {
    require!(Postgres, Moto);
    let app = spawn_app_with(
        CatalogKind::Postgres,
        Remote::Moto,
        KeyCacheConfig::default(),
    )
    .await;
    // The stored key is the exact ARN KMS returned, never an alias.
    let key = callvault::catalog::keys::active(&mut *app.db().await, &app.tenant.id)
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
        .ingest_stream(h, callvault::client::pieces(audio.clone(), 10_000))
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
            ..Default::default()
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
    require!(Postgres);
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
                ..Default::default()
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
    // Without start times, a call counts as starting when it was created:
    // newest first by default (UUIDv7 ids grow with creation).
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "pages come newest first");
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

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let app = spawn_app(CatalogKind::Sqlite).await;
    let channel = tonic::transport::Channel::from_shared(app.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["callvault.v1.IngestService", "callvault.v1.PlaybackService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"callvault.v1.PlaybackService".to_owned()),
        "{names:?}"
    );

    // v1alpha too, as grpcurl, Postman and grpcio-reflection releases in
    // the field ask: the service list and a symbol's file.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut reflection = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let ask = |m| alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let mut stream = reflection
        .server_reflection_info(futures::stream::iter([
            ask(alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
            ask(
                alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "callvault.v1.IngestService".into(),
                ),
            ),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("no v1alpha service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"callvault.v1.IngestService".to_owned())
            && names.contains(&"grpc.reflection.v1alpha.ServerReflection".to_owned()),
        "{names:?}"
    );
    let Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("no v1alpha file descriptor")
    };
    assert!(!files.file_descriptor_proto.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn a_disabled_key_fails_playback_precisely_and_re_enabling_restores_it() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let audio = fixture("speech_mulaw.wav");
    let id = app
        .ingest("call-revoke", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let ring = app.ring.clone().unwrap();
    let arn = callvault::catalog::keys::active(&mut *app.db().await, &app.tenant.id)
        .await
        .unwrap()
        .key_arn;
    ring.set_enabled(&arn, false).unwrap();
    app.archive.keys.purge_all();
    let err = app.play(&id).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("disabled") && err.message().contains(arn.as_str()),
        "{}",
        err.message()
    );
    // New uploads under a disabled key fail the same way and leave nothing.
    let err = app
        .ingest("call-revoke-2", audio.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    ring.set_enabled(&arn, true).unwrap();
    assert!(app.play(&id).await.unwrap() == audio);
    ring.schedule_deletion(&arn, 7).unwrap();
    app.archive.keys.purge_all();
    let err = app.play(&id).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("pending deletion"),
        "{}",
        err.message()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn damaged_audio_is_kept_and_flagged() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    // A WAV cut short: the header promises 14.5 s, the stream holds about 7.
    let wav = fixture("speech_pcm.wav");
    let truncated = wav.slice(..wav.len() / 2);
    // An MP3 with a run of garbage in the middle of its frames.
    let mut mp3 = fixture("speech.mp3").to_vec();
    let mid = mp3.len() / 2;
    for b in &mut mp3[mid..mid + 4000] {
        *b = 0xFF;
    }
    for (name, audio) in [
        ("truncated-wav", truncated),
        ("garbled-mp3", bytes::Bytes::from(mp3)),
    ] {
        let rec = app
            .ingest(name, audio.clone())
            .await
            .unwrap()
            .recording
            .unwrap();
        let meta = rec.audio.unwrap();
        assert!(
            app.play(&rec.recording_id).await.unwrap() == audio,
            "{name}: kept byte for byte"
        );
        assert!(
            meta.warning.contains("incomplete audio"),
            "{name}: {meta:?}"
        );
        let expected_ms = if name == "truncated-wav" {
            7_000..7_500
        } else {
            10_000..14_500
        };
        assert!(expected_ms.contains(&meta.duration_ms), "{name}: {meta:?}");
    }
    app.shutdown().await;
}

/// A player that seeks cancels its play with the rest of the recording in
/// flight. Hundreds of seeks on one connection must not end it: h2 used to
/// forget all but 10 cancelled streams, count every late frame of the
/// others as the server's protocol error, and close the connection after
/// 1,024 of them (GOAWAY `too_many_internal_resets`, from the client's own
/// side), which took about 200 seeks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_that_seeks_hundreds_of_times_keeps_its_connection() {
    const SEEKS: u64 = 600;
    let app = spawn_app(CatalogKind::Sqlite).await;
    let audio = bytes::Bytes::from(callvault::synth::synth_wav(1_000, 8_000, 1));
    let mut h = header("call-seeks");
    h.chunk_size_bytes = 256 * 1024;
    let res = app
        .client(&app.ingest_token)
        .await
        .ingest_stream(h, callvault::client::pieces(audio.clone(), 1 << 20))
        .await
        .unwrap();
    let id = res.recording.unwrap().recording_id;
    let mut sup = app.client(&app.supervisor_token).await;
    let size = audio.len() as u64;
    for k in 0..SEEKS {
        let offset = (k * 7_919 * 1_024) % (size / 2);
        let mut stream = sup
            .playback
            .play(callvault::api::pb::PlayRequest {
                recording_id: id.clone(),
                offset_bytes: offset,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("seek {k}: {s}"))
            .into_inner();
        let first = stream
            .message()
            .await
            .unwrap_or_else(|s| panic!("seek {k}: {s}"))
            .unwrap();
        assert_eq!(first.offset_bytes, offset, "seek {k}");
        assert!(
            first.data[..] == audio[offset as usize..offset as usize + first.data.len()],
            "seek {k}"
        );
        // Dropped with the rest of the recording still coming.
    }
    let (all, _) = sup.play_all(&id, 0).await.unwrap();
    assert!(all == audio[..], "the whole play after {SEEKS} seeks");
}
