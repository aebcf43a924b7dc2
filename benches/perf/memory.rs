//! Section 3: a burst of concurrent 1 MiB-chunk ingests against the child
//! server: all must commit; aggregate throughput, the server's RSS before,
//! during (sampled every 50 ms) and after the burst, and the connection
//! waits the catalog pool logged.

use std::time::{Duration, Instant};

use anyhow::bail;
use callvault::api::pb;
use callvault::client::pieces;

use crate::Ctx;
use crate::inputs::{pcm_wav, sha256};
use crate::node::{Backend, Server};
use crate::procfs::RssSampler;
use crate::stats::{Latencies, mb_per_s};

pub const CHUNK: u32 = 1 << 20;
pub const MESSAGE: usize = 256 * 1024;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let o = &ctx.opts;
    let wav = pcm_wav(ctx.work.path(), "memory.wav", (o.mem_mib as u64) << 20).await?;
    let audio = wav.read().await?;
    let sha = sha256(&audio);
    println!(
        "memory: {} concurrent ingests of {} bytes each ({}), 1 MiB chunks, {} KiB messages, \
         over {} client connections, one tenant; server RSS sampled every 50 ms",
        o.mem_streams,
        audio.len(),
        wav.made_by,
        MESSAGE / 1024,
        o.mem_connections,
    );
    for &kind in &ctx.catalogs {
        let Some(backend) = Backend::new(kind).await? else {
            println!("memory {}: skipped (not reachable)", kind.name());
            continue;
        };
        let name = kind.name();
        let tenant = backend.tenant("bench")?;
        let server = backend.serve(&o.roles, &[]).await?;
        let mut clients = Vec::new();
        for _ in 0..o.mem_connections {
            clients.push(server.client(&tenant.ingest).await?);
        }
        // One small upload first, so the baseline is a node that has served.
        let warm = bytes::Bytes::from(callvault::synth::synth_wav(2, 8_000, 1));
        crate::ttfb::ingest_bytes(&mut clients[0], "memory-warm-up", warm).await?;
        let baseline = server.rss_kib()?;

        let sampler = RssSampler::start(server.pid, Duration::from_millis(50));
        let started = Instant::now();
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..o.mem_streams {
            let mut client = clients[i % clients.len()].clone();
            let audio = audio.clone();
            burst.spawn(async move {
                let header = pb::IngestHeader {
                    external_call_id: format!("memory-{i}"),
                    chunk_size_bytes: CHUNK,
                    ..Default::default()
                };
                let t = Instant::now();
                let res = client.ingest_stream(header, pieces(audio, MESSAGE)).await;
                (i, t.elapsed(), res)
            });
        }
        let mut took = Vec::new();
        let mut failed = Vec::new();
        while let Some(joined) = burst.join_next().await {
            let (i, elapsed, res) = joined?;
            match res.map(|r| r.recording) {
                Ok(Some(rec)) if rec.sha256 == sha => took.push(elapsed),
                Ok(Some(rec)) => failed.push(format!("memory-{i}: SHA-256 {} differs", rec.sha256)),
                Ok(None) => failed.push(format!("memory-{i}: no recording in the answer")),
                Err(status) => failed.push(format!("memory-{i}: {status}")),
            }
        }
        let wall = started.elapsed();
        let peak = sampler.finish().await;
        let hwm = server.hwm_kib()?;
        if !failed.is_empty() {
            print_log(&server, name);
            bail!(
                "memory {name}: {} of {} ingests failed: {}",
                failed.len(),
                o.mem_streams,
                failed.join("; ")
            );
        }
        tokio::time::sleep(o.mem_settle).await;
        let after = server.rss_kib()?;
        let total = (audio.len() * o.mem_streams) as u64;
        let lat = Latencies::from_durations(took);
        println!(
            "memory {name}: {n} of {n} ingests committed, SHA-256 ok; {:.0} MB in {:.1} s = {:.0} MB/s \
             together; single ingest p50 {:.1} s, max {:.1} s",
            total as f64 / 1e6,
            wall.as_secs_f64(),
            mb_per_s(total, wall),
            lat.pct(50.0) / 1e3,
            lat.max() / 1e3,
            n = o.mem_streams,
        );
        let per_stream = (peak.saturating_sub(baseline)) as f64 / 1024.0 / o.mem_streams as f64;
        println!(
            "memory {name}: server RSS before {:.0} MiB, peak during {:.0} MiB (VmHWM {:.0} MiB), \
             {} s after {:.0} MiB; (peak − before) / {} = {per_stream:.1} MiB per stream",
            baseline as f64 / 1024.0,
            peak as f64 / 1024.0,
            hwm as f64 / 1024.0,
            o.mem_settle.as_secs(),
            after as f64 / 1024.0,
            o.mem_streams,
        );
        print_log(&server, name);
    }
    Ok(())
}

/// The pool's slow-acquire warnings (sqlx: "acquired connection, but time
/// to acquire exceeded slow threshold"), and the count of other warnings.
fn print_log(server: &Server, name: &str) {
    let acquires = server.log_lines("acquire");
    println!(
        "memory {name}: server log lines about slow connection acquires: {}",
        acquires.len()
    );
    for line in acquires.iter().take(10) {
        println!("  {}", line.chars().take(240).collect::<String>());
    }
    let others: Vec<String> = server
        .log_lines("warn")
        .into_iter()
        .chain(server.log_lines("error"))
        .filter(|l| !l.to_lowercase().contains("acquire"))
        .collect();
    if !others.is_empty() {
        println!(
            "memory {name}: other WARN/ERROR lines in the server log: {}",
            others.len()
        );
        for line in others.iter().take(5) {
            println!("  {}", line.chars().take(240).collect::<String>());
        }
    }
}
