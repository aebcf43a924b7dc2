//! Bounded load tests (loopback only, fixed counts, stop by themselves):
//! thousands of slow uploads on one node must all commit while another
//! tenant's plays keep answering. Figures are printed for BENCHMARKS.md;
//! the only bounds asserted are the liveness ones the hardening issue sets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use callvault::archive::Limits;
use futures::StreamExt;

use crate::helpers::*;

const UPLOADS: usize = 2000;
const TENANTS: usize = 4;
/// Each upload: a 256 KiB WAV sent in 16 KiB messages over about 16 s, the
/// pace of a slow link (a real-time G.711 call sends 8 kB/s).
const UPLOAD_BYTES: usize = 256 * 1024;
const PIECE: usize = 16 * 1024;
const PACE: Duration = Duration::from_secs(1);
/// Client connections: HTTP/2 allows `max_concurrent_streams` per connection.
const CONNECTIONS: usize = 8;

fn sha_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Hardening issue, items 3 and 4: 2,000 concurrent slow uploads on one node
/// (over the old 512-thread blocking pool that analyzers used to hold) all
/// commit with the right SHA-256, while another tenant's plays answer within
/// a second throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_2000_slow_uploads_commit_while_plays_answer() {
    require!(Postgres);
    let app = spawn_app_opts(AppOptions {
        kind: CatalogKind::Postgres,
        limits: Limits {
            max_uploads_per_tenant: UPLOADS / TENANTS,
            ..Limits::default()
        },
        ..AppOptions::default()
    })
    .await;
    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        let (_, ingest, _) = app.other_tenant(&format!("load-{t}")).await;
        tenants.push(ingest);
    }
    // The listener's recording, played again and again during the load.
    let listened = Bytes::from(callvault::synth::synth_wav(30, 16_000, 1));
    let played_id = app
        .ingest("call-listened", listened.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;

    let audio = Bytes::from(callvault::synth::synth_wav(
        (UPLOAD_BYTES / 16_000) as u32,
        8_000,
        1,
    ));
    let sha = sha_hex(&audio);
    let mut clients = Vec::new();
    for c in 0..CONNECTIONS {
        // One channel per (connection, tenant): the token is per client.
        let mut per_tenant = Vec::new();
        for token in &tenants {
            per_tenant.push(app.client(token).await);
        }
        clients.push(per_tenant);
        let _ = c;
    }
    let started = Instant::now();
    let rss_before = rss_kib();
    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..UPLOADS {
        let mut client = clients[i % CONNECTIONS][i % TENANTS].clone();
        let audio = audio.clone();
        uploads.spawn(async move {
            let mut h = header(&format!("call-load-{i}"));
            h.chunk_size_bytes = 64 * 1024;
            let n = audio.len().div_ceil(PIECE);
            let body = futures::stream::iter(0..n).then(move |k| {
                let audio = audio.clone();
                async move {
                    tokio::time::sleep(PACE).await;
                    audio.slice(k * PIECE..((k + 1) * PIECE).min(audio.len()))
                }
            });
            client.ingest_stream(h, body).await
        });
    }

    // Another tenant listens meanwhile: each play must start within a second.
    let listener = {
        let mut client = app.client(&app.supervisor_token).await;
        let id = played_id.clone();
        let listened = listened.clone();
        tokio::spawn(async move {
            let mut first_bytes = Vec::new();
            let begun = Instant::now();
            let until = begun + Duration::from_secs(20);
            while Instant::now() < until {
                let t = Instant::now();
                let (bytes, ttfb) =
                    tokio::time::timeout(Duration::from_secs(30), client.play_all(&id, 0))
                        .await
                        .expect("a play got no answer within 30 s")
                        .unwrap();
                assert!(bytes == listened, "played bytes differ");
                first_bytes.push((ttfb, t.duration_since(begun)));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            first_bytes
        })
    };

    let mut committed = 0;
    let mut peak_rss = rss_before;
    let deadline = Duration::from_secs(180);
    while let Some(res) = tokio::time::timeout(
        deadline.saturating_sub(started.elapsed()),
        uploads.join_next(),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("only {committed} of {UPLOADS} uploads committed within {deadline:?}")
    }) {
        let rec = res.unwrap().unwrap().recording.unwrap();
        assert_eq!(rec.sha256, sha);
        committed += 1;
        if committed % 200 == 0 {
            peak_rss = peak_rss.max(rss_kib());
        }
    }
    let all_done = started.elapsed();
    let plays = listener.await.unwrap();
    let mut ttfb: Vec<Duration> = plays.iter().map(|p| p.0).collect();
    ttfb.sort();
    let worst = *ttfb.last().unwrap();
    let mut slowest = plays.clone();
    slowest.sort_by_key(|p| std::cmp::Reverse(p.0));
    println!(
        "slowest plays (first byte, started at): {:?}",
        &slowest[..slowest.len().min(5)]
    );
    println!(
        "load: {UPLOADS} uploads of {} KiB over {TENANTS} tenants committed in {:.1} s; \
         {} plays meanwhile, first byte p50 {:?} max {:?}; test-process RSS {} MiB before, peak {} MiB",
        UPLOAD_BYTES / 1024,
        all_done.as_secs_f64(),
        plays.len(),
        ttfb[ttfb.len() / 2],
        worst,
        rss_before / 1024,
        peak_rss / 1024,
    );
    assert_eq!(committed, UPLOADS);
    assert!(
        worst < Duration::from_secs(1),
        "a play took {worst:?} to answer under load"
    );
    app.shutdown().await;
}
