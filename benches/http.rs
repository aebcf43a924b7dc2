//! The HTTP side door: how long a browser's seek waits. A 30-minute G.711
//! μ-law call (8 kB/s, 1 MiB chunks); `Range: bytes=N-` requests into its
//! middle through a signed URL, timed from the request to the first body
//! byte, on one keep-alive connection as a media element uses it:
//!
//! - warm: the data key cached, the listening session open (a seek);
//! - a new session: the first request of a new URL, which commits the
//!   session's `playback.start` audit event first;
//! - cold: the key cache purged before each request, behind an injected
//!   50 ms KMS round trip;
//!
//! and, as the peer in the same run, gRPC `Play` from the same offset.
//! Then seeks into the decoded WAV rendition (`?rendition=wav`) of a
//! 2-hour call, against seeks into its original bytes at the same
//! instants.
//!
//! `cargo bench --bench http` (PostgreSQL on 127.0.0.1:5432 or
//! CALLVAULT_BENCH_DATABASE_URL; SQLite when neither is there).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callvault::api::pb;
use callvault::catalog::Catalog;
use callvault::client::pieces;
use callvault::kms::local::LocalKeyring;
use callvault::server::{LocalServer, Roles};

/// A μ-law WAV of `seconds` at 8 kHz mono (WAVE_FORMAT_MULAW), filled with
/// pseudo-random bytes (noise: nothing compresses or repeats).
fn mulaw_wav(seconds: u32) -> Vec<u8> {
    let n = seconds * 8000;
    let mut w = Vec::with_capacity(n as usize + 58);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(50 + n).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&18u32.to_le_bytes());
    w.extend_from_slice(&7u16.to_le_bytes()); // μ-law
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8u16.to_le_bytes());
    w.extend_from_slice(&0u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&n.to_le_bytes());
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        w.push((x >> 24) as u8);
    }
    w
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Time to the first body byte of `Range: bytes=offset-` on `http`.
async fn seek(http: &reqwest::Client, url: &str, offset: u64) -> f64 {
    let t = Instant::now();
    let mut res = http
        .get(url)
        .header("Range", format!("bytes={offset}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    let first = res.chunk().await.unwrap().unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(!first.is_empty());
    // The player seeks again before reading on: the response is dropped.
    ms
}

async fn url(play: &mut callvault::client::Client, base: &str, id: &str) -> String {
    let path = play
        .playback
        .create_playback_url(pb::CreatePlaybackUrlRequest {
            recording_id: id.into(),
            ttl_seconds: 3600,
            purpose: pb::PlaybackPurpose::Stream.into(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .path;
    format!("{base}{path}")
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1],
        ms.len()
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (db, which) = support::catalog_url(dir.path()).await;
    let catalog = Catalog::connect(&db).await.unwrap();
    let ring = Arc::new(LocalKeyring::open(dir.path(), "bench").unwrap());
    let key = ring.create_key().unwrap();
    let kms = Arc::new(support::DelayedKms {
        inner: ring,
        delay: Duration::from_millis(50),
    });
    let archive = Arc::try_unwrap(support::archive(catalog, kms, dir.path())).unwrap();
    let boot = callvault::operator::bootstrap_tenant(&archive, "bench", &key, "bench")
        .await
        .unwrap();
    let server = LocalServer::start_with_http(archive, Roles::ALL)
        .await
        .unwrap();
    let archive = server.archive.clone();
    let base = server.http_addr.clone().unwrap();
    let mut up = support::client(&server, &boot.ingest_token).await;
    let mut play = support::client(&server, &boot.supervisor_token).await;

    let audio = Bytes::from(mulaw_wav(30 * 60));
    let size = audio.len() as u64;
    let id = up
        .ingest_stream(
            pb::IngestHeader {
                external_call_id: "bench-30min".into(),
                ..Default::default()
            },
            pieces(audio, 256 * 1024),
        )
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    println!(
        "catalog: {which}; a 30-minute G.711 μ-law call, {:.1} MB in 1 MiB chunks; injected KMS round trip 50 ms",
        size as f64 / 1e6
    );
    // Offsets spread over the middle half of the call.
    let offsets: Vec<u64> = (0..200u64)
        .map(|i| size / 4 + (size / 2) * i / 200 + i * 37)
        .collect();
    let http = reqwest::Client::new();
    let u = url(&mut play, &base, &id).await;
    seek(&http, &u, size / 2).await; // opens the session, warms the key
    let mut warm = Vec::new();
    for &o in &offsets {
        warm.push(seek(&http, &u, o).await);
    }
    report("HTTP seek, warm (key cached, session open)", warm);

    let mut fresh = Vec::new();
    for &o in offsets.iter().take(50) {
        let u = url(&mut play, &base, &id).await;
        fresh.push(seek(&http, &u, o).await);
    }
    report(
        "HTTP seek, first request of a new URL (commits playback.start)",
        fresh,
    );

    let mut cold = Vec::new();
    for &o in offsets.iter().take(20) {
        archive.keys.purge_all();
        cold.push(seek(&http, &u, o).await);
    }
    report("HTTP seek, cold key cache (50 ms KMS round trip)", cold);

    let mut grpc = Vec::new();
    for &o in offsets.iter().take(50) {
        let t = Instant::now();
        let mut s = play
            .playback
            .play(pb::PlayRequest {
                recording_id: id.clone(),
                offset_bytes: o,
                purpose: pb::PlaybackPurpose::Stream.into(),
            })
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap();
        grpc.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report("peer: gRPC Play from the same offsets, warm", grpc);

    // The decoded rendition of a 2-hour call: seeks decode from a seek to
    // the range's first frame, not from the start.
    let long = Bytes::from(mulaw_wav(2 * 3600));
    let long_id = up
        .ingest_stream(
            pb::IngestHeader {
                external_call_id: "bench-2h".into(),
                ..Default::default()
            },
            pieces(long, 256 * 1024),
        )
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let t = Instant::now();
    while callvault::playback::peaks::run_pending(&archive)
        .await
        .unwrap()
        > 0
    {}
    println!(
        "peaks job (full decode of both calls, records the rendition's layout): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let u = url(&mut play, &base, &long_id).await;
    let wav = format!("{u}&rendition=wav");
    // The node's own job may have taken it: wait until it is there.
    while http.head(&wav).send().await.unwrap().status() != 200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 2 h of 8 kHz mono as 16-bit PCM, after a 44-byte header.
    let wav_size = 44 + 2 * 3600 * 8000 * 2u64;
    let wav_offsets: Vec<u64> = (0..200u64)
        .map(|i| wav_size / 4 + (wav_size / 2) * i / 200 + i * 37)
        .collect();
    seek(&http, &wav, wav_size / 2).await;
    let mut rendition = Vec::new();
    for &o in &wav_offsets {
        rendition.push(seek(&http, &wav, o).await);
    }
    report(
        "HTTP seek into the decoded WAV rendition of a 2-hour call, warm",
        rendition,
    );
    let mut original = Vec::new();
    for &o in &wav_offsets {
        original.push(seek(&http, &u, (o - 44) / 2 + 58).await);
    }
    report(
        "peer: HTTP seek into the same call's original bytes, same instants, warm",
        original,
    );
    println!("KMS Decrypt calls: {}", archive.metrics.calls("Decrypt"));
    server.stop().await.unwrap();
}
