//! End to end through the real gRPC server on loopback: ingest throughput into
//! the local object store with the PostgreSQL catalog, and playback time to
//! first byte with a warm cache and with a cold cache behind an injected
//! 50 ms KMS round trip.
//!
//! `cargo bench --bench e2e` (needs PostgreSQL on 127.0.0.1:5432, or set
//! CALLVAULT_BENCH_DATABASE_URL; falls back to SQLite when unset and down).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callvault::api::pb;
use callvault::catalog::Catalog;
use callvault::client::pieces;
use callvault::kms::local::LocalKeyring;
use callvault::synth::synth_wav;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (url, which) = support::catalog_url(dir.path()).await;
    let catalog = Catalog::connect(&url).await.unwrap();
    let ring = Arc::new(LocalKeyring::open(dir.path(), "bench").unwrap());
    let key = ring.create_key().unwrap();
    let kms = Arc::new(support::DelayedKms {
        inner: ring,
        delay: Duration::from_millis(50),
    });
    let archive = support::archive(catalog, kms, dir.path());
    let (server, boot) = support::serve(&archive, &key).await;
    let mut up = support::client(&server, &boot.ingest_token).await;
    let mut play = support::client(&server, &boot.supervisor_token).await;
    println!(
        "catalog: {which}; injected KMS round trip: 50 ms; chunk size 1 MiB; 256 KiB messages"
    );

    let audio = Bytes::from(synth_wav(600, 48_000, 2)); // 115 MB
    let mut ids = Vec::new();
    for round in 0..3 {
        let header = pb::IngestHeader {
            external_call_id: format!("bench-{round}"),
            ..Default::default()
        };
        let t = Instant::now();
        let res = up
            .ingest_stream(header, pieces(audio.clone(), 256 * 1024))
            .await
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "ingest {:.0} MB: {:.0} MB/s ({:.2} s, includes one 50 ms GenerateDataKey)",
            audio.len() as f64 / 1e6,
            audio.len() as f64 / secs / 1e6,
            secs
        );
        ids.push(res.recording.unwrap().recording_id);
    }
    for id in &ids {
        archive.keys.purge_all();
        let (_, cold) = play.play_all(id, 0).await.unwrap();
        let t = Instant::now();
        let (bytes, warm) = play.play_all(id, 0).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(bytes.len() == audio.len());
        println!(
            "playback: cold TTFB {:.1} ms (50 ms KMS), warm TTFB {:.2} ms, warm throughput {:.0} MB/s",
            cold.as_secs_f64() * 1e3,
            warm.as_secs_f64() * 1e3,
            audio.len() as f64 / secs / 1e6
        );
    }
    let mut warm = Vec::new();
    for _ in 0..50 {
        let (_, w) = play.play_all(&ids[0], 40 * 1024 * 1024).await.unwrap();
        warm.push(w.as_secs_f64() * 1e3);
    }
    warm.sort_by(f64::total_cmp);
    println!(
        "warm TTFB at a 40 MiB offset over 50 plays: p50 {:.2} ms, p95 {:.2} ms",
        warm[25], warm[47]
    );
    println!(
        "KMS calls: GenerateDataKey {}, Decrypt {}",
        archive.metrics.calls("GenerateDataKey"),
        archive.metrics.calls("Decrypt")
    );
}
