//! Audited plays per second, one tenant against many: every play commits an
//! audit event (counter row, event row, signature) before its first byte and
//! another when it ends, and one tenant's events are numbered in one
//! sequence. Run: `cargo bench --bench audit` (PostgreSQL on 127.0.0.1:5432
//! if reachable, else SQLite; CALLVAULT_BENCH_DATABASE_URL to choose).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is a panic

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use callvault::api::pb;
use callvault::catalog::Catalog;
use callvault::client::{Client, pieces};
use callvault::kms::local::LocalKeyring;
use callvault::server::{LocalServer, Roles};
use callvault::synth::synth_wav;

const PLAYERS: usize = 16;
const RUN: Duration = Duration::from_secs(8);

async fn catalog_url(dir: &std::path::Path, sqlite: bool) -> Option<String> {
    if sqlite {
        return Some(format!("sqlite://{}", dir.join("catalog.db").display()));
    }
    support::fresh_pg_url().await
}

/// Plays per second by `PLAYERS` concurrent players spread over `tenants`.
async fn run(url: &str, dir: &std::path::Path, tenants: usize) -> f64 {
    let catalog = Catalog::connect(url).await.unwrap();
    let ring = Arc::new(LocalKeyring::open(dir, "bench").unwrap());
    let archive = support::archive(catalog, ring.clone(), dir);
    let server = LocalServer::start(archive.clone(), Roles::ALL)
        .await
        .unwrap();
    let audio = Bytes::from(synth_wav(2, 16_000, 1)); // 64 KB: the audit, not the audio
    let mut players = Vec::new();
    for t in 0..tenants {
        let key = ring.create_key().unwrap();
        let name = format!("bench-{}-{t}", uuid::Uuid::new_v4().simple());
        let boot = callvault::operator::bootstrap_tenant(&archive, &name, &key, "bench")
            .await
            .unwrap();
        let mut up = support::client(&server, &boot.ingest_token).await;
        let id = up
            .ingest_stream(
                pb::IngestHeader {
                    external_call_id: "bench".into(),
                    ..Default::default()
                },
                pieces(audio.clone(), 64 * 1024),
            )
            .await
            .unwrap()
            .recording
            .unwrap()
            .recording_id;
        players.push((boot.supervisor_token, id));
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PLAYERS {
        let (token, id) = players[p % tenants].clone();
        let addr = server.addr.clone();
        tasks.spawn(async move {
            let mut c = Client::connect(&addr, &token).await.unwrap();
            let mut n = 0u64;
            while started.elapsed() < RUN {
                c.play_all(&id, 0).await.unwrap();
                n += 1;
            }
            n
        });
    }
    let mut plays = 0;
    while let Some(n) = tasks.join_next().await {
        plays += n.unwrap();
    }
    let rate = plays as f64 / started.elapsed().as_secs_f64();
    server.stop().await.unwrap();
    archive.catalog.close().await;
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "audited plays of a 64 KB recording, {PLAYERS} concurrent players, {RUN:?} per figure"
    );
    for sqlite in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let Some(url) = catalog_url(dir.path(), sqlite).await else {
            println!("PostgreSQL not reachable: skipped");
            continue;
        };
        let which = if sqlite { "SQLite" } else { "PostgreSQL" };
        for tenants in [1, 8] {
            let dir = tempfile::tempdir().unwrap();
            let url = if sqlite {
                format!("sqlite://{}", dir.path().join("catalog.db").display())
            } else {
                catalog_url(dir.path(), false).await.unwrap_or(url.clone())
            };
            let rate = run(&url, dir.path(), tenants).await;
            println!(
                "{which}: {tenants} tenant(s): {rate:.0} audited plays/s (2 audit events each)"
            );
        }
    }
}
