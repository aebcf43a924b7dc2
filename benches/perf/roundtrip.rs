//! Section 1: one big PCM WAV ingested and played back through the real CLI
//! against the real server, on each catalog, best of N rounds; then the
//! peers on the same file, and the ratios.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use crate::Ctx;
use crate::inputs::{AudioFile, sha256_file};
use crate::node::{Backend, Server, Tenant};
use crate::peers;
use crate::stats::{mb_per_s, mib};

/// Fails with the command's status and stderr unless it exited 0.
fn succeeded(what: &str, out: &std::process::Output) -> anyhow::Result<()> {
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `callvault ingest FILE --call-id CALL --json`, timed from spawn to exit;
/// the recording id, after checking the server's SHA-256 and size.
pub async fn cli_ingest(
    server: &Server,
    tenant: &Tenant,
    input: &AudioFile,
    call_id: &str,
) -> anyhow::Result<(String, Duration)> {
    let t = Instant::now();
    let out = server
        .cli(&tenant.ingest)
        .arg("ingest")
        .arg(&input.path)
        .args(["--call-id", call_id, "--json"])
        .output()
        .await?;
    let took = t.elapsed();
    succeeded("callvault ingest", &out)?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("callvault ingest --json printed no JSON")?;
    ensure!(
        v["sha256"].as_str() == Some(&input.sha256)
            && v["size_bytes"].as_u64() == Some(input.bytes),
        "the server stored {} bytes with SHA-256 {}, the file is {} bytes with {}",
        v["size_bytes"],
        v["sha256"],
        input.bytes,
        input.sha256
    );
    ensure!(
        v["deduplicated"] != true,
        "call id {call_id} was deduplicated"
    );
    let id = v["recording_id"]
        .as_str()
        .context("no recording_id")?
        .to_owned();
    Ok((id, took))
}

/// `callvault play ID -o OUT`, timed from spawn to exit; fails unless OUT
/// hashes to `sha256`.
pub async fn cli_play(
    server: &Server,
    tenant: &Tenant,
    id: &str,
    out_file: &Path,
    sha256: &str,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = server
        .cli(&tenant.supervisor)
        .args(["play", id, "-o"])
        .arg(out_file)
        .output()
        .await?;
    let took = t.elapsed();
    succeeded("callvault play", &out)?;
    let played = sha256_file(out_file).await?;
    ensure!(
        played == sha256,
        "the played file's SHA-256 is {played}, the input's {sha256}"
    );
    std::fs::remove_file(out_file)?;
    Ok(took)
}

/// `callvault play ID -o -` into a pipe the bench drains, timed from spawn
/// to exit: the play without the file and its fsync, as the peers' output
/// has none (they write to the page cache). The bench only copies what it
/// reads into memory while timing; it checks the SHA-256 afterwards.
pub async fn cli_play_to_pipe(
    server: &Server,
    tenant: &Tenant,
    id: &str,
    size: u64,
    sha256: &str,
) -> anyhow::Result<Duration> {
    use tokio::io::AsyncReadExt as _;
    let t = Instant::now();
    let mut child = server
        .cli(&tenant.supervisor)
        .args(["play", id, "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut played = Vec::with_capacity(usize::try_from(size)?);
    stdout.read_to_end(&mut played).await?;
    let out = child.wait_with_output().await?;
    let took = t.elapsed();
    succeeded("callvault play -o -", &out)?;
    let got = crate::inputs::sha256(&played);
    ensure!(
        got == sha256,
        "the played stream's SHA-256 is {got}, the input's {sha256}"
    );
    Ok(took)
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let input = ctx.big_wav().await?;
    let rounds = ctx.opts.rounds;
    println!(
        "roundtrip: {:.0} MiB ({} bytes, {}); `callvault ingest FILE --call-id X` then \
         `callvault play ID -o OUT` against `callvault serve --roles {}` on loopback, \
         each timed from spawn to exit; best of {rounds}",
        mib(input.bytes),
        input.bytes,
        input.made_by,
        ctx.opts.roles,
    );
    let mut ours = Vec::new();
    for &kind in &ctx.catalogs {
        let Some(backend) = Backend::new(kind).await? else {
            println!("roundtrip {}: skipped (not reachable)", kind.name());
            continue;
        };
        let tenant = backend.tenant("bench")?;
        let server = backend.serve(&ctx.opts.roles, &[]).await?;
        let mut best: Option<(Duration, Duration)> = None;
        let (mut best_ingest, mut best_pipe) = (Duration::MAX, Duration::MAX);
        for r in 1..=rounds {
            let (id, ingest) =
                cli_ingest(&server, &tenant, input, &format!("roundtrip-{r}")).await?;
            let out = backend.path().join("played.wav");
            let play = cli_play(&server, &tenant, &id, &out, &input.sha256).await?;
            let piped = cli_play_to_pipe(&server, &tenant, &id, input.bytes, &input.sha256).await?;
            println!(
                "roundtrip {} round {r}: ingest {:.2} s ({:.0} MB/s), play {:.2} s ({:.0} MB/s), \
                 round trip {:.2} s, SHA-256 of the played file matches; play to a pipe {:.2} s \
                 ({:.0} MB/s), SHA-256 matches",
                kind.name(),
                ingest.as_secs_f64(),
                mb_per_s(input.bytes, ingest),
                play.as_secs_f64(),
                mb_per_s(input.bytes, play),
                (ingest + play).as_secs_f64(),
                piped.as_secs_f64(),
                mb_per_s(input.bytes, piped),
            );
            let fastest = best.map_or(Duration::MAX, |(i, p)| i + p);
            if ingest + play < fastest {
                best = Some((ingest, play));
            }
            best_ingest = best_ingest.min(ingest);
            best_pipe = best_pipe.min(piped);
        }
        let (ingest, play) = best.context("no round")?;
        println!(
            "roundtrip {} best of {rounds}: ingest {:.0} MB/s, play {:.0} MB/s, round trip {:.2} s \
             (server peak RSS {:.0} MiB); to a pipe: best ingest {:.0} MB/s + best play {:.0} MB/s \
             = {:.2} s",
            kind.name(),
            mb_per_s(input.bytes, ingest),
            mb_per_s(input.bytes, play),
            (ingest + play).as_secs_f64(),
            server.hwm_kib()? as f64 / 1024.0,
            mb_per_s(input.bytes, best_ingest),
            mb_per_s(input.bytes, best_pipe),
            (best_ingest + best_pipe).as_secs_f64(),
        );
        ours.push((kind, ingest + play, best_ingest + best_pipe));
        drop(server);
    }

    let work = ctx.work.path();
    let mut peers = Vec::new();
    peers.extend(peers::tink(input, work, rounds).await?);
    peers.extend(peers::age(input, work, rounds).await?);
    for (kind, to_file, to_pipe) in &ours {
        let ratios = |ours: &Duration| -> String {
            peers
                .iter()
                .map(|p| {
                    format!(
                        "{:.2}× {}",
                        ours.as_secs_f64() / p.best.round_trip().as_secs_f64(),
                        p.name
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !peers.is_empty() {
            println!(
                "roundtrip ratio {}: callvault round trip {:.2} s = {}; with the play to a pipe \
                 {:.2} s = {}",
                kind.name(),
                to_file.as_secs_f64(),
                ratios(to_file),
                to_pipe.as_secs_f64(),
                ratios(to_pipe),
            );
        }
    }
    Ok(())
}
