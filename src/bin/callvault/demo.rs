//! `callvault demo`: an embedded node on a temporary data dir, a real and a
//! synthetic recording through ingest and playback, then the BYOK steps.
//! Every step is checked; the exit code is 0 only if all pass.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use callvault::api::pb;
use callvault::archive::Archive;
use callvault::client::{Client, pieces};
use callvault::crypto;
use callvault::kms::local::LocalKeyring;
use callvault::server::{LocalServer, Roles};
use callvault::synth::synth_wav;

use crate::commands::follow_job;
use crate::output::failed;

/// A real speech recording (espeak-ng, 8 kHz G.711 μ-law WAV), the kind a
/// contact center archives.
const DEMO_SPEECH: &[u8] = include_bytes!("../../../tests/fixtures/speech_mulaw.wav");

/// The BYOK part of the demo: rotate to a new key, rewrap the old one away,
/// revoke and restore.
async fn demo_keys(
    admin: &mut Client,
    player: &mut Client,
    ring: &LocalKeyring,
    key_a: &str,
    archived: &[(String, String)],
    failures: &mut Vec<String>,
) -> Result<()> {
    println!("\n  bring your own key");
    let key_b = ring.create_key()?;
    let registered = admin
        .keys
        .register_key(pb::RegisterKeyRequest {
            key_arn: key_b.clone(),
            replica_key_arns: Default::default(),
        })
        .await
        .map_err(failed("register"))?
        .into_inner();
    println!(
        "    registered {key_b}: round trip passed, now {}",
        registered.status
    );
    let job = admin
        .keys
        .start_rewrap(pb::StartRewrapRequest {
            source_key_arn: key_a.to_owned(),
            destination_key_arn: key_b.clone(),
            max_kms_requests_per_second: 50,
        })
        .await
        .map_err(failed("rewrap"))?
        .into_inner();
    // Followed as for JSON output: the demo prints no progress bar.
    let job = follow_job(admin, job, true).await?;
    println!(
        "    rewrap {} -> new key: {}, {}/{} recordings moved with KMS ReEncrypt",
        key_a,
        crate::output::job_state_word(job.state()),
        job.rewrapped_count,
        job.total_count
    );
    let keys = admin
        .keys
        .list_keys(pb::ListKeysRequest::default())
        .await
        .map_err(failed("list keys"))?
        .into_inner()
        .keys;
    let protected = |arn: &str| {
        keys.iter()
            .find(|k| k.key_arn == arn)
            .map(|k| k.recording_count)
    };
    let mut plays_ok = true;
    for (id, sha) in archived {
        let (audio, _) = player.play_all(id, 0).await?;
        plays_ok &= crypto::sha256_hex(&audio) == *sha;
    }
    ring.set_enabled(&key_b, false)?;
    let health = admin
        .keys
        .get_key_health(pb::GetKeyHealthRequest { refresh: true })
        .await
        .map_err(failed("key health"))?
        .into_inner();
    for i in &health.incidents {
        println!("    key disabled in KMS -> incident: {}", i.message);
    }
    let revoked = player.play_all(&archived[0].0, 0).await;
    if let Err(s) = &revoked {
        println!(
            "    playback under the disabled key: {:?}: {}",
            s.code(),
            s.message()
        );
    }
    ring.set_enabled(&key_b, true)?;
    let restored = player.play_all(&archived[0].0, 0).await;
    for (label, ok) in [
        (
            "new key registered and active",
            registered.status() == pb::KeyStatus::Active,
        ),
        ("rewrap succeeded", job.state() == pb::JobState::Succeeded),
        ("old key protects no recording", protected(key_a) == Some(0)),
        ("every recording plays after the rewrap", plays_ok),
        (
            "disabled key reported as an incident",
            health.incidents.len() == 1,
        ),
        (
            "playback under a disabled key is refused (failed precondition)",
            matches!(&revoked, Err(s) if s.code() == tonic::Code::FailedPrecondition),
        ),
        (
            "re-enabling the key restores playback",
            restored.is_ok_and(|(a, _)| crypto::sha256_hex(&a) == archived[0].1),
        ),
    ] {
        println!("    [{}] {label}", if ok { "ok" } else { "FAIL" });
        if !ok {
            failures.push(format!("keys: {label}"));
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// After the checks, keep serving (gRPC and the supervisor page) until
    /// Ctrl-C, and print the page's address and a supervisor token.
    #[arg(long)]
    pub keep_serving: bool,
}

/// A range of a recording through a signed URL, over plain HTTP/1.1 on
/// loopback: (status line, body).
async fn http_range(base: &str, path: &str, range: &str) -> Result<(String, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nRange: {range}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, raw[split + 4..].to_vec()))
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    println!(
        "callvault demo — embedded default in {}",
        dir.path().display()
    );
    let (mut archive, ring) = Archive::embedded(dir.path()).await?;
    // The demo counts KMS calls around each step: the waveform job runs
    // once, after them (below), not beside them.
    archive.schedule.peaks_on_commit = false;
    archive.schedule.peaks_poll = std::time::Duration::from_secs(24 * 3600);
    let key = ring.create_key()?;
    let boot = callvault::operator::bootstrap_tenant(&archive, "demo", &key, "local").await?;
    println!("  tenant `demo` with local KMS key {key}");

    let server = LocalServer::start_with_http(archive, Roles::ALL).await?;
    let archive: Arc<Archive> = server.archive.clone();
    let http = server.http_addr.clone().context("no HTTP listener")?;
    println!(
        "  server listening on {} (gRPC) and {http} (HTTP)",
        server.addr
    );

    let mut uploader = Client::connect(&server.addr, &boot.ingest_token).await?;
    let mut player = Client::connect(&server.addr, &boot.supervisor_token).await?;
    let mut failures = Vec::new();
    let mut archived: Vec<(String, String)> = Vec::new();

    let recordings: [(&str, Bytes); 2] = [
        ("speech (G.711 μ-law WAV)", Bytes::from_static(DEMO_SPEECH)),
        (
            "synthetic 48 kHz stereo PCM WAV, 120 s",
            Bytes::from(synth_wav(120, 48_000, 2)),
        ),
    ];
    for (i, (what, audio)) in recordings.into_iter().enumerate() {
        let expected = crypto::sha256_hex(&audio);
        let size = audio.len();
        let header = pb::IngestHeader {
            external_call_id: format!("demo-call-{i}"),
            start_time: None,
            labels: [("agent".to_owned(), "demo-agent".to_owned())].into(),
            chunk_size_bytes: if i == 0 { 64 * 1024 } else { 0 },
            participants: [("caller".to_owned(), "+442071838750".to_owned())].into(),
        };
        let kms_before = archive.metrics.total_calls();
        let t = Instant::now();
        let res = uploader
            .ingest_stream(header, pieces(audio, 256 * 1024))
            .await
            .map_err(failed("ingest"))?;
        let ingest_secs = t.elapsed().as_secs_f64();
        let rec = res.recording.context("no recording in response")?;
        let audio_meta = rec.audio.clone().unwrap_or_default();
        let ingest_kms = archive.metrics.total_calls() - kms_before;
        println!("\n  {what}");
        println!(
            "    ingested {} bytes in {} chunks at {:.0} MB/s, {} KMS call(s); probed {}/{} {} Hz {} ch {:.2} s",
            rec.size_bytes,
            rec.chunk_count,
            size as f64 / ingest_secs / 1e6,
            ingest_kms,
            audio_meta.container,
            audio_meta.codec,
            audio_meta.sample_rate_hz,
            audio_meta.channels,
            audio_meta.duration_ms as f64 / 1000.0
        );
        let kms_before = archive.metrics.total_calls();
        let (cold, cold_ttfb) = player.play_all(&rec.recording_id, 0).await?;
        let cold_kms = archive.metrics.total_calls() - kms_before;
        let t = Instant::now();
        let (warm, warm_ttfb) = player.play_all(&rec.recording_id, 0).await?;
        let play_secs = t.elapsed().as_secs_f64();
        println!(
            "    played back: cold TTFB {:.2} ms ({} KMS call), warm TTFB {:.2} ms, {:.0} MB/s",
            cold_ttfb.as_secs_f64() * 1e3,
            cold_kms,
            warm_ttfb.as_secs_f64() * 1e3,
            size as f64 / play_secs / 1e6
        );
        // A browser's view: a signed URL and one range of it.
        let link = player
            .playback
            .create_playback_url(pb::CreatePlaybackUrlRequest {
                recording_id: rec.recording_id.clone(),
                ttl_seconds: 60,
                purpose: pb::PlaybackPurpose::Stream.into(),
                reason: "demo".into(),
            })
            .await
            .map_err(failed("play-url"))?
            .into_inner();
        let (status, body) = http_range(&http, &link.path, "bytes=1000-1999").await?;
        println!("    signed URL, Range bytes=1000-1999: {status}");
        archived.push((rec.recording_id.clone(), expected.clone()));
        for (label, ok) in [
            (
                "a signed URL serves the range asked for (206)",
                status.starts_with("HTTP/1.1 206") && body[..] == cold[1000..2000],
            ),
            ("server SHA-256 matches input", rec.sha256 == expected),
            (
                "cold playback SHA-256 matches",
                crypto::sha256_hex(&cold) == expected,
            ),
            (
                "warm playback SHA-256 matches",
                crypto::sha256_hex(&warm) == expected,
            ),
            // The tenant's first labeled recording also creates its
            // search-index key (one GenerateDataKey, kept in the cache).
            (
                if i == 0 {
                    "two KMS calls on the first ingest (data key, search-index key)"
                } else {
                    "one KMS call on ingest"
                },
                ingest_kms == if i == 0 { 2 } else { 1 },
            ),
            ("at most one KMS call on cold playback", cold_kms <= 1),
        ] {
            println!("    [{}] {label}", if ok { "ok" } else { "FAIL" });
            if !ok {
                failures.push(format!("{what}: {label}"));
            }
        }
    }
    let mut admin = Client::connect(&server.addr, &boot.admin_token).await?;
    demo_keys(
        &mut admin,
        &mut player,
        &ring,
        &key,
        &archived,
        &mut failures,
    )
    .await?;
    if args.keep_serving && failures.is_empty() {
        // Waveforms and decoded renditions for the page.
        if let Err(e) = callvault::playback::peaks::run_pending(&archive).await {
            println!("  waveforms not computed: {e}");
        }
        println!("\n  supervisor page: {http}/");
        println!(
            "  supervisor token (sign in with it): {}",
            boot.supervisor_token
        );
        println!("  serving until Ctrl-C");
        callvault::server::shutdown_signal().await;
    }
    server.stop().await?;
    println!("\n  KMS calls in total: {}", archive.metrics.total_calls());
    if failures.is_empty() {
        println!("demo passed: every recording encrypted, stored, played back and verified");
        Ok(())
    } else {
        bail!("demo failed: {}", failures.join("; "))
    }
}
