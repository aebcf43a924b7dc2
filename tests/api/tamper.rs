//! Every tamper case of SPEC §3 is detected: DATA_LOSS, and nothing of an
//! unauthenticated chunk is released (what arrives is an authentic prefix
//! that ends before the tampered chunk).

use bytes::Bytes;
use callvault::api::pb;
use callvault::domain::{RecordingId, TenantId};
use callvault::store::ChunkStore;

use crate::helpers::*;

const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
enum Tamper {
    BitFlip,
    SwapObjects,
    ReorderRows,
    DropLastObject,
    TruncateLastChunk,
    AppendChunk,
    BytesAfterFinal,
    DuplicateChunk,
    SpliceOtherRecording,
    SpliceOtherTenant,
    WrongWrappedKey,
    WrongCommitment,
    WrongSalt,
}

/// Where the first unauthentic data sits: `Some(i)` = chunk i; `None` = the
/// recording as a whole (nothing may be released).
fn first_bad(t: Tamper, chunks: usize) -> Option<usize> {
    match t {
        Tamper::BitFlip
        | Tamper::SwapObjects
        | Tamper::SpliceOtherRecording
        | Tamper::SpliceOtherTenant => Some(1),
        Tamper::ReorderRows | Tamper::DuplicateChunk => Some(1),
        Tamper::DropLastObject | Tamper::BytesAfterFinal => Some(chunks - 1),
        Tamper::TruncateLastChunk => Some(chunks - 2),
        Tamper::AppendChunk => Some(chunks - 1),
        Tamper::WrongWrappedKey | Tamper::WrongCommitment | Tamper::WrongSalt => None,
    }
}

async fn object(app: &TestApp, t: &TenantId, r: &RecordingId, i: u32) -> Bytes {
    app.archive
        .store
        .get(&ChunkStore::chunk_key(t, r, i))
        .await
        .unwrap()
}

async fn put(app: &TestApp, t: &TenantId, r: &RecordingId, i: u32, b: Bytes) {
    app.archive
        .store
        .put(&ChunkStore::chunk_key(t, r, i), b)
        .await
        .unwrap()
}

async fn sql(app: &TestApp, q: &str) {
    sqlx::query(sqlx::AssertSqlSafe(q.to_owned()))
        .execute(app.archive.catalog.pool())
        .await
        .unwrap();
}

async fn apply(
    app: &TestApp,
    t: Tamper,
    victim: &RecordingId,
    other: &RecordingId,
    foreign: (&TenantId, &RecordingId),
    chunks: u32,
) {
    let tenant = &app.tenant.id;
    let last = chunks - 1;
    let rec = victim.to_string();
    match t {
        Tamper::BitFlip => {
            let mut b = object(app, tenant, victim, 1).await.to_vec();
            b[100] ^= 0x01;
            put(app, tenant, victim, 1, b.into()).await;
        }
        Tamper::SwapObjects => {
            let (a, b) = (
                object(app, tenant, victim, 1).await,
                object(app, tenant, victim, 2).await,
            );
            put(app, tenant, victim, 1, b).await;
            put(app, tenant, victim, 2, a).await;
        }
        Tamper::ReorderRows => {
            // Point catalog rows 1 and 2 at each other's objects.
            let (k1, k2) = (
                ChunkStore::chunk_key(tenant, victim, 1),
                ChunkStore::chunk_key(tenant, victim, 2),
            );
            sql(app, &format!("UPDATE chunks SET object_key = 'tmp' WHERE recording_id = '{rec}' AND chunk_index = 1")).await;
            sql(app, &format!("UPDATE chunks SET object_key = '{k1}' WHERE recording_id = '{rec}' AND chunk_index = 2")).await;
            sql(app, &format!("UPDATE chunks SET object_key = '{k2}' WHERE recording_id = '{rec}' AND chunk_index = 1")).await;
        }
        Tamper::DropLastObject => {
            app.archive
                .store
                .put(&ChunkStore::chunk_key(tenant, victim, last), Bytes::new())
                .await
                .unwrap();
            // An empty object is as good as a missing one to an attacker; also
            // test the truly missing case through the store's delete.
            let key = ChunkStore::chunk_key(tenant, victim, last);
            let path = app.dir.path().join("objects").join(&key);
            let _ = std::fs::remove_file(path);
        }
        Tamper::TruncateLastChunk => {
            // Remove the final chunk and rewrite the catalog to match: the
            // classic truncation attack. Chunk last-1 was sealed as non-final.
            let size: i64 = (CHUNK as i64) * i64::from(last);
            sql(
                app,
                &format!(
                    "DELETE FROM chunks WHERE recording_id = '{rec}' AND chunk_index = {last}"
                ),
            )
            .await;
            sql(app, &format!("UPDATE recordings SET chunk_count = {last}, size_bytes = {size} WHERE recording_id = '{rec}'")).await;
        }
        Tamper::AppendChunk => {
            // Append a copy of an authentic full chunk after the final one and
            // extend the catalog to include it.
            let extra = object(app, tenant, victim, 0).await;
            let key = ChunkStore::chunk_key(tenant, victim, chunks);
            app.archive.store.put(&key, extra.clone()).await.unwrap();
            // The old final chunk is short; make the catalog consistent in
            // sizes so only the cryptography can object.
            sql(app, &format!(
                "INSERT INTO chunks (tenant_id, recording_id, chunk_index, plaintext_size, sealed_size, sealed_checksum, object_key) \
                 SELECT tenant_id, recording_id, {chunks}, plaintext_size, sealed_size, sealed_checksum, '{key}' FROM chunks \
                 WHERE recording_id = '{rec}' AND chunk_index = 0"
            )).await;
            sql(app, &format!("UPDATE recordings SET chunk_count = chunk_count + 1, size_bytes = size_bytes + {CHUNK} WHERE recording_id = '{rec}'")).await;
            // The previous final chunk is now a non-final chunk whose size is
            // short; pad the catalog claim so the size check passes and the
            // tag check is what fails.
            sql(
                app,
                &format!(
                    "UPDATE recordings SET size_bytes = {} WHERE recording_id = '{rec}'",
                    CHUNK * (chunks as usize + 1)
                ),
            )
            .await;
            let mut b = object(app, tenant, victim, last).await.to_vec();
            b.resize(CHUNK + 16, 0);
            put(app, tenant, victim, last, b.into()).await;
            sql(app, &format!("UPDATE chunks SET plaintext_size = {CHUNK}, sealed_size = {} WHERE recording_id = '{rec}' AND chunk_index = {last}", CHUNK + 16)).await;
        }
        Tamper::BytesAfterFinal => {
            let mut b = object(app, tenant, victim, last).await.to_vec();
            b.extend_from_slice(b"trailing garbage");
            put(app, tenant, victim, last, b.into()).await;
        }
        Tamper::DuplicateChunk => {
            let b = object(app, tenant, victim, 0).await;
            put(app, tenant, victim, 1, b).await;
        }
        Tamper::SpliceOtherRecording => {
            let b = object(app, tenant, other, 1).await;
            put(app, tenant, victim, 1, b).await;
        }
        Tamper::SpliceOtherTenant => {
            let b = object(app, foreign.0, foreign.1, 1).await;
            put(app, tenant, victim, 1, b).await;
        }
        Tamper::WrongWrappedKey => {
            let o = other.to_string();
            sql(app, &format!(
                "UPDATE recordings SET wrapped_key = (SELECT wrapped_key FROM recordings WHERE recording_id = '{o}') WHERE recording_id = '{rec}'"
            )).await;
        }
        Tamper::WrongCommitment => flip_column_byte(app, &rec, "commitment", 0).await,
        Tamper::WrongSalt => flip_column_byte(app, &rec, "salt", 5).await,
    }
}

/// Flips one bit of a blob column of the victim's catalog row.
async fn flip_column_byte(app: &TestApp, rec: &str, column: &str, at: usize) {
    use sqlx::Row;
    let pool = app.archive.catalog.pool();
    let select = format!("SELECT {column} AS v FROM recordings WHERE recording_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(select))
        .bind(rec)
        .fetch_one(pool)
        .await
        .unwrap();
    let mut v: Vec<u8> = row.get("v");
    v[at] ^= 0x80;
    let update = format!("UPDATE recordings SET {column} = $1 WHERE recording_id = $2");
    sqlx::query(sqlx::AssertSqlSafe(update))
        .bind(v)
        .bind(rec)
        .execute(pool)
        .await
        .unwrap();
}

/// Ingests `audio` with `token` in chunks of [`CHUNK`]; the recording id.
async fn in_chunks(app: &TestApp, token: &str, call_id: &str, audio: &Bytes) -> String {
    let mut h = header(call_id);
    h.chunk_size_bytes = CHUNK as u32;
    Client::connect(&app.addr, token)
        .await
        .unwrap()
        .ingest_stream(h, callvault::client::pieces(audio.clone(), CHUNK))
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id
}

/// Plays, keeping whatever arrived before an error.
async fn play_partial(app: &TestApp, id: &str) -> (Vec<u8>, Option<tonic::Status>) {
    let mut c = app.client(&app.supervisor_token).await;
    let mut out = Vec::new();
    let mut stream = match c
        .playback
        .play(pb::PlayRequest {
            recording_id: id.into(),
            offset_bytes: 0,
            ..Default::default()
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return (out, Some(s)),
    };
    loop {
        match stream.message().await {
            Ok(Some(m)) => out.extend_from_slice(&m.data),
            Ok(None) => return (out, None),
            Err(s) => return (out, Some(s)),
        }
    }
}

#[tokio::test]
async fn every_tamper_case_is_detected_and_releases_nothing_unauthenticated() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let audio = fixture("speech_pcm.wav"); // 231606 bytes: 4 chunks of 64 KiB
    let chunks = audio.len().div_ceil(CHUNK) as u32;
    assert!(chunks >= 4);
    let other = app
        .ingest("other", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let other = RecordingId::parse("id", &other).unwrap();
    let (foreign_tenant, foreign_ingest, _) = app.other_tenant("globex").await;
    let foreign = in_chunks(&app, &foreign_ingest, "foreign", &audio).await;
    let foreign = RecordingId::parse("id", &foreign).unwrap();

    let cases = [
        Tamper::BitFlip,
        Tamper::SwapObjects,
        Tamper::ReorderRows,
        Tamper::DropLastObject,
        Tamper::TruncateLastChunk,
        Tamper::AppendChunk,
        Tamper::BytesAfterFinal,
        Tamper::DuplicateChunk,
        Tamper::SpliceOtherRecording,
        Tamper::SpliceOtherTenant,
        Tamper::WrongWrappedKey,
        Tamper::WrongCommitment,
        Tamper::WrongSalt,
    ];
    for case in cases {
        let id = app
            .ingest(&format!("victim-{case:?}"), audio.clone())
            .await
            .unwrap()
            .recording
            .unwrap()
            .recording_id;
        let victim = RecordingId::parse("id", &id).unwrap();
        assert!(
            app.play(&id).await.unwrap() == audio,
            "{case:?}: intact before tampering"
        );
        apply(
            &app,
            case,
            &victim,
            &other,
            (&foreign_tenant.id, &foreign),
            chunks,
        )
        .await;
        app.archive.keys.purge_all();
        let (got, status) = play_partial(&app, &id).await;
        let status = status.unwrap_or_else(|| panic!("{case:?}: tampering went undetected"));
        assert_eq!(status.code(), tonic::Code::DataLoss, "{case:?}: {status:?}");
        assert!(!status.message().is_empty());
        let limit = first_bad(case, chunks as usize).map_or(0, |i| i * CHUNK);
        assert!(
            got.len() <= limit,
            "{case:?}: {} bytes released, authentic prefix ends at {limit}",
            got.len()
        );
        assert!(
            got[..] == audio[..got.len()],
            "{case:?}: released bytes are not authentic"
        );
    }
    // The server is still serving.
    let ok = app
        .ingest("after-tamper", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    assert!(app.play(&ok).await.unwrap() == audio);
    app.shutdown().await;
}

use callvault::client::Client;

/// A play lists its chunk rows a page at a time as it reaches them: a seek
/// into a long recording and a play to its end cross page boundaries byte
/// for byte, and a chunk row missing beyond the first page ends the stream
/// with DATA_LOSS after an authentic prefix of whole chunks before it.
#[tokio::test]
async fn chunk_rows_beyond_the_first_page_are_listed_as_the_play_reaches_them() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    // 52 s of 48 kHz stereo PCM from ffmpeg: about 150 chunks of 64 KiB.
    let audio = ffmpeg_noise(
        app.dir.path(),
        "long.wav",
        52,
        48_000,
        2,
        &["-c:a", "pcm_s16le"],
    )
    .await;
    let chunks = audio.len().div_ceil(CHUNK);
    assert!(chunks > 140, "{chunks} chunks");
    let id = in_chunks(&app, &app.ingest_token, "long", &audio).await;
    let mut player = app.client(&app.supervisor_token).await;
    for offset in [
        0,
        10 * CHUNK + 1234,
        63 * CHUNK,
        64 * CHUNK - 1,
        (chunks - 1) * CHUNK,
    ] {
        let (played, _) = player.play_all(&id, offset as u64).await.unwrap();
        assert!(
            played == audio[offset..],
            "a play from {offset} returned other bytes ({} of {})",
            played.len(),
            audio.len() - offset
        );
    }
    sql(
        &app,
        &format!("DELETE FROM chunks WHERE recording_id = '{id}' AND chunk_index = 100"),
    )
    .await;
    let (prefix, err) = play_partial(&app, &id).await;
    assert_eq!(
        err.map(|s| s.code()),
        Some(tonic::Code::DataLoss),
        "a missing chunk row is an integrity error"
    );
    assert!(
        prefix.len() % CHUNK == 0 && prefix.len() <= 100 * CHUNK && audio.starts_with(&prefix),
        "what arrived ({} bytes) is an authentic prefix of whole chunks before chunk 100",
        prefix.len()
    );
    // The rows were not all listed before the first byte: the play started.
    assert!(
        prefix.len() >= CHUNK,
        "the play failed before its first chunk"
    );
    app.shutdown().await;
}
