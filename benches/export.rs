//! Export throughput through the real gRPC server on loopback, against plain
//! playback of the same recordings on the same server: a plain bundle and
//! an age-encrypted one, each received whole by the client (counted, not
//! kept; playback collects each recording in memory, as `play_all` does). SQLite catalog, local store and keyring (the embedded
//! default).
//!
//! `cargo bench --bench export`

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use callvault::api::pb;
use callvault::catalog::Catalog;
use callvault::client::{Client, pieces};
use callvault::kms::local::LocalKeyring;
use callvault::synth::synth_wav;

const RECORDINGS: usize = 16;

/// Receives an export whole: (bundle size, seconds).
async fn export(c: &mut Client, ids: &[String], recipients: Vec<String>) -> (u64, f64) {
    let t = Instant::now();
    let mut s = c
        .export
        .export(pb::ExportRequest {
            recording_ids: ids.to_vec(),
            reason: "benchmark".into(),
            age_recipients: recipients,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0u64;
    while let Some(m) = s.message().await.unwrap() {
        if let Some(pb::export_response::Payload::Data(d)) = m.payload {
            n += d.len() as u64;
        }
    }
    (n, t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!(
        "sqlite://{}",
        dir.path().join("catalog.db").display()
    ))
    .await
    .unwrap();
    let ring = Arc::new(LocalKeyring::open(dir.path(), "bench").unwrap());
    let key = ring.create_key().unwrap();
    let archive = support::archive(catalog, ring, dir.path());
    let (server, boot) = support::serve(&archive, &key).await;
    let mut up = support::client(&server, &boot.ingest_token).await;
    let mut play = support::client(&server, &boot.supervisor_token).await;
    let mut comp = support::client(&server, &boot.compliance_token).await;

    let audio = Bytes::from(synth_wav(1000, 16_000, 1)); // 32 MB
    let mut ids = Vec::new();
    for i in 0..RECORDINGS {
        let header = pb::IngestHeader {
            external_call_id: format!("bench-{i}"),
            ..Default::default()
        };
        let res = up
            .ingest_stream(header, pieces(audio.clone(), 256 * 1024))
            .await
            .unwrap();
        ids.push(res.recording.unwrap().recording_id);
    }
    let total = (audio.len() * RECORDINGS) as f64;
    println!(
        "{RECORDINGS} recordings of {:.0} MB ({:.0} MB of audio); chunk size 1 MiB; SQLite catalog, local store",
        audio.len() as f64 / 1e6,
        total / 1e6
    );
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    for round in 0..3 {
        let t = Instant::now();
        for id in &ids {
            play.play_all(id, 0).await.unwrap();
        }
        let play_secs = t.elapsed().as_secs_f64();
        let (plain, plain_secs) = export(&mut comp, &ids, Vec::new()).await;
        let (sealed, sealed_secs) = export(&mut comp, &ids, vec![recipient.clone()]).await;
        println!(
            "round {round}: playback {:.0} MB/s; export {:.0} MB/s ({:.0} MB bundle); \
             export age-encrypted {:.0} MB/s ({:.0} MB)",
            total / play_secs / 1e6,
            plain as f64 / plain_secs / 1e6,
            plain as f64 / 1e6,
            sealed as f64 / sealed_secs / 1e6,
            sealed as f64 / 1e6
        );
    }
}
