//! The export's memory bound, on the real binary, run alone after the rest
//! of the suite (scripts/test.sh): 200 recordings, 1000 MiB of audio, in
//! one bundle, with the server's RSS sampled as the bundle streams. Figures
//! are printed; the bounds asserted are flatness and a ceiling far below
//! the bundle's size, never a time.

use callvault::api::pb;
use callvault::client::Client;
use futures::StreamExt;

use crate::crash::{Server, bootstrap, cli, wav_stream};
use crate::helpers::header;

const RECORDINGS: usize = 200;
const RECORDING_BYTES: usize = 5 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_200_recordings_of_1_gib_at_flat_server_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest_token, _) = bootstrap(dir.path());
    let compliance = cli(
        dir.path(),
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--role",
            "compliance",
        ],
    )
    .trim()
    .to_owned();
    let server = Server::start(dir.path()).await;
    let ingest = Client::connect(&server.addr, &ingest_token).await.unwrap();
    let ids: Vec<String> = futures::stream::iter(0..RECORDINGS)
        .map(|i| {
            let mut c = ingest.clone();
            async move {
                let (body, _) = wav_stream(RECORDING_BYTES, 256 << 10);
                c.ingest_stream(header(&format!("call-{i}")), body)
                    .await
                    .unwrap()
                    .recording
                    .unwrap()
                    .recording_id
            }
        })
        .buffered(4)
        .collect()
        .await;
    let after_ingest = server.peak_rss_kib();

    let mut c = Client::connect(&server.addr, &compliance).await.unwrap();
    let mut stream = c
        .export
        .export(pb::ExportRequest {
            recording_ids: ids,
            reason: "memory bound".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::export_response::Payload::Header(h)) =
        stream.message().await.unwrap().unwrap().payload
    else {
        panic!("no header");
    };
    assert_eq!(h.recording_ids.len(), RECORDINGS);
    assert!(h.tar_size_bytes > (RECORDINGS * RECORDING_BYTES) as u64);
    let mut received = 0u64;
    let mut samples = Vec::new();
    let mut next_sample = 0u64;
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(pb::export_response::Payload::Data(d)) = m.payload {
            received += d.len() as u64;
        }
        if received >= next_sample {
            samples.push((received, server.rss_kib()));
            next_sample += h.tar_size_bytes / 20;
        }
    }
    assert_eq!(received, h.tar_size_bytes);
    let peak = server.peak_rss_kib();
    eprintln!(
        "server RSS while exporting {} MiB: peak after ingest {after_ingest} KiB, peak after export {peak} KiB, samples (bytes sent, KiB): {samples:?}",
        received >> 20
    );
    // Flat: over the second half of the bundle (500 MiB more audio through
    // the server) RSS rises by less than a few chunks' worth. Over the first
    // half it rises by some MiB while bounded caches warm up (each pooled
    // SQLite connection's page cache, the allocator's per-thread arenas of
    // the blocking pool that opens chunks), which the ceiling below covers.
    // A fall is the allocator giving memory back (jemalloc does, within
    // seconds); only a rise over an earlier sample of the half is growth.
    let settled: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| *at >= h.tar_size_bytes / 2)
        .map(|(_, kib)| *kib)
        .collect();
    let (mut lo, mut rise) = (u64::MAX, (0, 0));
    for &kib in &settled {
        lo = lo.min(kib);
        if kib - lo > rise.1 - rise.0 {
            rise = (lo, kib);
        }
    }
    let (lo, hi) = rise;
    assert!(
        hi - lo < 16 * 1024,
        "server RSS grew from {lo} KiB to {hi} KiB over the second half of the export"
    );
    assert!(
        peak < 160 * 1024,
        "server peak RSS {peak} KiB is not bounded"
    );
    server.kill();
}
