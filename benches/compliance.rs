//! Compliance figures: a legal hold placed over 100,000 recordings (one
//! set-based statement; peers cap holds at 1,000 recordings) and released,
//! and erasures per second, by the expiry job (batches of 100 per
//! certificate) and by one-recording requests. Run: `cargo bench --bench
//! compliance` (PostgreSQL on 127.0.0.1:5432 if reachable, and SQLite).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is a panic

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use callvault::api::pb;
use callvault::archive::Archive;
use callvault::catalog::{Backend, Catalog};
use callvault::client::pieces;
use callvault::kms::local::LocalKeyring;
use callvault::synth::synth_wav;

mod support;

const HELD: i64 = 100_000;
const ERASED: usize = 300;
const REQUESTS: usize = 100;

async fn catalog_url(dir: &std::path::Path, sqlite: bool) -> Option<String> {
    if sqlite {
        return Some(format!("sqlite://{}", dir.join("catalog.db").display()));
    }
    support::fresh_pg_url().await
}

/// `HELD` committed recording rows written straight into the catalog (the
/// hold reads rows, not audio), with start times one second apart.
async fn bulk_rows(archive: &Archive, tenant: &str, key_arn: &str) {
    let sql = match archive.catalog.backend() {
        Backend::Postgres => {
            "INSERT INTO recordings (tenant_id, recording_id, external_call_id, status, format_version, \
             key_arn, kms_region, wrapped_key, encryption_context, salt, nonce_prefix, commitment, chunk_size, \
             chunk_count, size_bytes, sha256, start_time_ms, created_at_ms, updated_at_ms) \
             SELECT $1, '00000000-0000-7000-8000-' || lpad(CAST(n AS TEXT), 12, '0'), 'bulk-' || n, 'complete', 1, \
             $2, 'bench', $3, '{}', $3, $3, $3, 65536, 1, 1000, 'x', 1700000000000 + n * 1000, 0, 0 \
             FROM generate_series(1, $4) AS n"
        }
        Backend::Sqlite => {
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $4) \
             INSERT INTO recordings (tenant_id, recording_id, external_call_id, status, format_version, \
             key_arn, kms_region, wrapped_key, encryption_context, salt, nonce_prefix, commitment, chunk_size, \
             chunk_count, size_bytes, sha256, start_time_ms, created_at_ms, updated_at_ms) \
             SELECT $1, '00000000-0000-7000-8000-' || substr('000000000000' || n, -12, 12), 'bulk-' || n, \
             'complete', 1, $2, 'bench', $3, '{}', $3, $3, $3, 65536, 1, 1000, 'x', 1700000000000 + n * 1000, 0, 0 \
             FROM s"
        }
    };
    sqlx::query(sql)
        .bind(tenant)
        .bind(key_arn)
        .bind(vec![0u8; 32])
        .bind(HELD)
        .execute(archive.catalog.pool())
        .await
        .unwrap();
}

async fn run(url: &str, dir: &std::path::Path) {
    let which = if url.starts_with("sqlite") {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    let catalog = Catalog::connect(url).await.unwrap();
    let ring = Arc::new(LocalKeyring::open(dir, "bench").unwrap());
    let key = ring.create_key().unwrap();
    let mut archive = Arc::try_unwrap(support::archive(catalog, ring.clone(), dir)).unwrap();
    archive.erasure.max_per_sec = 100_000;
    let archive = Arc::new(archive);
    let (server, boot) = support::serve(&archive, &key).await;
    let mut comp = support::client(&server, &boot.compliance_token).await;

    // 1. A hold over 100,000 recordings, and its release.
    bulk_rows(&archive, boot.tenant.id.as_str(), &key).await;
    let started = Instant::now();
    let hold = comp
        .compliance
        .place_legal_hold(pb::PlaceLegalHoldRequest {
            name: "bench".into(),
            reason: "bench".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: 1_600_000_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_900_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let placed = started.elapsed();
    assert_eq!(hold.recording_count, HELD as u64);
    let started = Instant::now();
    let freed = comp
        .compliance
        .release_legal_hold(pb::ReleaseLegalHoldRequest {
            name: "bench".into(),
            reason: "bench".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .recordings_freed;
    let released = started.elapsed();
    assert_eq!(freed, HELD as u64);
    println!(
        "{which}: hold over {HELD} recordings placed in {:.2} s, released in {:.2} s",
        placed.as_secs_f64(),
        released.as_secs_f64()
    );
    sqlx::query("DELETE FROM recordings WHERE external_call_id LIKE 'bulk-%'")
        .execute(archive.catalog.pool())
        .await
        .unwrap();

    // 2. Erasures per second: real recordings (64 KB, one chunk object each).
    let mut up = support::client(&server, &boot.ingest_token).await;
    let audio = Bytes::from(synth_wav(2, 16_000, 1));
    let mut ids = Vec::new();
    for i in 0..ERASED + REQUESTS {
        ids.push(
            up.ingest_stream(
                pb::IngestHeader {
                    external_call_id: format!("erase-{i}"),
                    ..Default::default()
                },
                pieces(audio.clone(), 64 * 1024),
            )
            .await
            .unwrap()
            .recording
            .unwrap()
            .recording_id,
        );
    }
    sqlx::query("UPDATE recordings SET retain_until_ms = 1 WHERE external_call_id LIKE 'erase-%'")
        .execute(archive.catalog.pool())
        .await
        .unwrap();
    // The last REQUESTS are erased by requests, the rest by the expiry job
    // (run here directly; the server's own pass ran before anything was due).
    let requested: Vec<String> = ids.split_off(ERASED);
    for id in &requested {
        sqlx::query("UPDATE recordings SET retain_until_ms = NULL WHERE recording_id = $1")
            .bind(id)
            .execute(archive.catalog.pool())
            .await
            .unwrap();
    }
    let started = Instant::now();
    let pass = callvault::compliance::run_expiry(&archive).await.unwrap();
    let took = started.elapsed();
    assert_eq!(pass.erased, ERASED as u64);
    println!(
        "{which}: expiry job: {ERASED} recordings erased and certified in {:.2} s: {:.0} erasures/s ({} certificates)",
        took.as_secs_f64(),
        ERASED as f64 / took.as_secs_f64(),
        pass.certificates_completed
    );
    let started = Instant::now();
    for id in &requested {
        let r = comp
            .compliance
            .erase_recordings(pb::EraseRecordingsRequest {
                recording_ids: vec![id.clone()],
                reason: "bench".into(),
                override_retention: false,
                participant: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.certificate_json.is_empty());
    }
    let took = started.elapsed();
    println!(
        "{which}: erase requests, one recording each, certificate in the answer: {:.0} erasures/s",
        REQUESTS as f64 / took.as_secs_f64()
    );
    server.stop().await.unwrap();
    archive.catalog.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for sqlite in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let Some(url) = catalog_url(dir.path(), sqlite).await else {
            println!("PostgreSQL not reachable: skipped");
            continue;
        };
        run(&url, dir.path()).await;
    }
}
