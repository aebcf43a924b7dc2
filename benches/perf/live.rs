//! Section 5: the load generator. Many live G.711 calls at once, each
//! streamed in real time (8,000 bytes a second in messages every 20 to
//! 100 ms, varied per call) over a few HTTP/2 connections and several
//! tenants, against the child server on loopback. Every call must commit
//! with the SHA-256 of what it sent. Bounded: fixed counts, a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use crate::Ctx;
use crate::inputs::{mulaw_wav, wav_data_offset};
use crate::livecall::{self, CallResult, CallSpec};
use crate::node::{Backend, Server};
use crate::procfs::{self, RssSampler};
use crate::stats::{Latencies, fmt_ms};

const BYTES_PER_SEC: usize = 8_000;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let o = &ctx.opts;
    let wav = mulaw_wav(ctx.work.path(), "live.wav", o.live_secs).await?;
    let bytes = wav.read().await?;
    let at = wav_data_offset(&bytes)?;
    let (header, data) = (bytes.slice(..at), bytes.slice(at..));
    // Calls start spread over a ramp, as calls arrive; all overlap after it.
    let ramp = Duration::from_secs(o.live_secs).min(Duration::from_secs(20)) / 4;
    println!(
        "live: {} calls of {} s each ({}, {} B/s), a message every 20–100 ms (fixed per call), \
         over {} connections and {} tenants, started over {:.0} s",
        o.live_calls,
        o.live_secs,
        wav.made_by,
        BYTES_PER_SEC,
        o.live_connections,
        o.live_tenants,
        ramp.as_secs_f64(),
    );
    for &kind in &ctx.catalogs {
        let Some(backend) = Backend::new(kind).await? else {
            println!("live {}: skipped (not reachable)", kind.name());
            continue;
        };
        let name = kind.name();
        let mut tenants = Vec::new();
        for t in 0..o.live_tenants {
            tenants.push(backend.tenant(&format!("live-{t}"))?);
        }
        // Each connection carries one tenant's calls: its token is per
        // client. The per-tenant limit must not refuse them.
        let per_tenant = o.live_calls.div_ceil(o.live_tenants);
        let limit = per_tenant.max(1000).to_string();
        let server = backend
            .serve(&o.roles, &["--max-uploads-per-tenant".into(), limit])
            .await?;
        let mut clients = Vec::new();
        for c in 0..o.live_connections {
            clients.push(server.client(&tenants[c % tenants.len()].ingest).await?);
        }
        let before = server.rss_kib()?;
        let cpu_before = (server.cpu_time()?, procfs::cpu_time(std::process::id())?);
        let sampler = RssSampler::start(server.pid, Duration::from_millis(250));
        let t0 = Instant::now() + Duration::from_millis(200);
        let committed = Arc::new(AtomicUsize::new(0));
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..o.live_calls {
            let spec = CallSpec {
                call_id: format!("live-{i}"),
                start: t0 + ramp.mul_f64(i as f64 / o.live_calls as f64),
                period: Duration::from_millis(20 + (i as u64 * 37) % 81),
                bytes_per_sec: BYTES_PER_SEC,
                header: header.clone(),
                data: data.clone(),
                rotate: (i * 7919) % data.len(),
            };
            let client = clients[i % clients.len()].clone();
            let committed = committed.clone();
            calls.spawn(async move {
                let res = livecall::run(client, spec).await;
                committed.fetch_add(usize::from(res.is_ok()), Ordering::Relaxed);
                res
            });
        }
        let progress = tokio::spawn(progress(server.pid, committed.clone(), o.live_calls));
        let deadline = Duration::from_secs(o.live_secs) + ramp + Duration::from_secs(120);
        let results = tokio::time::timeout(deadline, collect(&mut calls)).await;
        progress.abort();
        let wall = t0.elapsed();
        let results = match results {
            Ok(r) => r,
            Err(_) => bail!(
                "live {name}: only {} of {} calls committed within {deadline:?}",
                committed.load(Ordering::Relaxed),
                o.live_calls
            ),
        };
        let peak = sampler.finish().await;
        let cpu = (
            server.cpu_time()? - cpu_before.0,
            procfs::cpu_time(std::process::id())? - cpu_before.1,
        );
        let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        if !failed.is_empty() {
            let errors: Vec<String> = failed
                .into_iter()
                .filter_map(Result::err)
                .take(10)
                .map(|e| format!("{e:#}"))
                .collect();
            bail!(
                "live {name}: {} of {} calls failed, e.g.: {}",
                o.live_calls - ok.len(),
                o.live_calls,
                errors.join("; ")
            );
        }
        let ok: Vec<CallResult> = ok.into_iter().filter_map(Result::ok).collect();
        report(name, &ok, &server, before, peak, cpu, wall)?;
    }
    Ok(())
}

async fn collect(
    calls: &mut tokio::task::JoinSet<anyhow::Result<CallResult>>,
) -> Vec<anyhow::Result<CallResult>> {
    let mut out = Vec::new();
    while let Some(joined) = calls.join_next().await {
        out.push(joined.map_err(anyhow::Error::from).and_then(|r| r));
    }
    out
}

/// Every 30 s on stderr (stdout stays paste-able): calls committed, RSS.
async fn progress(pid: u32, committed: Arc<AtomicUsize>, calls: usize) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!(
            "  live: {:.0} s, {} of {calls} calls committed, server RSS {:.0} MiB",
            started.elapsed().as_secs_f64(),
            committed.load(Ordering::Relaxed),
            procfs::rss_kib(pid).unwrap_or(0) as f64 / 1024.0,
        );
    }
}

fn report(
    name: &str,
    calls: &[CallResult],
    server: &Server,
    before: u64,
    peak: u64,
    cpu: (Duration, Duration),
    wall: Duration,
) -> anyhow::Result<()> {
    let n = calls.len();
    ensure!(n > 0, "no call");
    let sends = Latencies::from_ms(
        calls
            .iter()
            .flat_map(|c| c.send_us.iter())
            .map(|&us| f64::from(us) / 1e3),
    );
    let late = Latencies::from_ms(
        calls
            .iter()
            .flat_map(|c| c.late_us.iter())
            .map(|&us| f64::from(us) / 1e3),
    );
    let commits = Latencies::from_durations(calls.iter().map(|c| c.commit));
    let hwm = server.hwm_kib()?;
    let pct = |d: Duration| d.as_secs_f64() / wall.as_secs_f64() * 100.0;
    println!("live {name}: {n} of {n} calls committed, each with the SHA-256 of what it sent");
    println!(
        "live {name}: per-message send wait (queued until the HTTP/2 stream took it), {} messages: {}",
        sends.len(),
        sends.p50_p99_max()
    );
    println!(
        "live {name}: commit after the last message: {}",
        commits.p50_p99_max()
    );
    println!(
        "live {name}: server RSS before {:.0} MiB, peak {:.0} MiB (VmHWM {:.0} MiB), \
         (peak − before) / {n} = {:.2} MiB per call",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        hwm as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0 / n as f64,
    );
    println!(
        "live {name}: server CPU {:.1} s over {:.1} s = {:.0} % of one core; load generator \
         (this process) {:.0} % of one core; generator lateness p99 {} (its own check)",
        cpu.0.as_secs_f64(),
        wall.as_secs_f64(),
        pct(cpu.0),
        pct(cpu.1),
        fmt_ms(late.pct(99.0)),
    );
    Ok(())
}
