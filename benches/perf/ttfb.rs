//! Section 2: time to the first Play message. Warm, for a small G.711
//! recording and for seeks into the middle of the big one, against the
//! child server; cold, behind an injected 50 ms KMS round trip, against an
//! in-process server whose key cache the bench purges before each play.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use callvault::api::pb;
use callvault::catalog::Catalog;
use callvault::client::{Client, pieces};
use callvault::kms::local::LocalKeyring;
use callvault::server::{LocalServer, Roles};

use crate::Ctx;
use crate::inputs::{AudioFile, mulaw_wav};
use crate::node::{Backend, CatalogKind, Server};
use crate::pg::PgDatabase;
use crate::stats::{Latencies, fmt_ms, mib};
use crate::{roundtrip, support};

/// Ingests `audio` through the library client in 256 KiB messages; the
/// recording id, after checking the server's SHA-256.
pub async fn ingest_bytes(
    client: &mut Client,
    call_id: &str,
    audio: Bytes,
) -> anyhow::Result<String> {
    let sha = crate::inputs::sha256(&audio);
    let header = pb::IngestHeader {
        external_call_id: call_id.to_owned(),
        ..Default::default()
    };
    let rec = client
        .ingest_stream(header, pieces(audio, 256 * 1024))
        .await
        .with_context(|| format!("ingest of {call_id} refused"))?
        .recording
        .context("no recording in the answer")?;
    ensure!(rec.sha256 == sha, "{call_id}: the server's SHA-256 differs");
    Ok(rec.recording_id)
}

/// Opens a Play stream at `offset` and waits for its first message only;
/// the stream is dropped (cancelled) after it.
pub async fn first_message(
    client: &mut Client,
    id: &str,
    offset: u64,
) -> anyhow::Result<(pb::PlayResponse, Duration)> {
    let t = Instant::now();
    let mut stream = client
        .playback
        .play(pb::PlayRequest {
            recording_id: id.to_owned(),
            offset_bytes: offset,
            ..Default::default()
        })
        .await?
        .into_inner();
    let first = stream.message().await?.context("an empty Play stream")?;
    Ok((first, t.elapsed()))
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let small = mulaw_wav(ctx.work.path(), "ttfb-small.wav", 10).await?;
    let big = ctx.big_wav().await?;
    let o = &ctx.opts;
    println!(
        "ttfb: library client (`Client::play_all` / the first message of `Play`), one connection, \
         plays one after the other; small recording: 10 s, {} bytes ({})",
        small.bytes, small.made_by
    );
    let audio = small.read().await?;
    for &kind in &ctx.catalogs {
        let Some(backend) = Backend::new(kind).await? else {
            println!("ttfb {}: skipped (not reachable)", kind.name());
            continue;
        };
        let tenant = backend.tenant("bench")?;
        let server = backend.serve(&o.roles, &[]).await?;
        let mut up = server.client(&tenant.ingest).await?;
        let mut play = server.client(&tenant.supervisor).await?;

        let id = ingest_bytes(&mut up, "ttfb-small", audio.clone()).await?;
        let mut ttfb = Vec::with_capacity(o.ttfb_plays);
        for i in 0..o.ttfb_plays + 10 {
            let (bytes, first) = play.play_all(&id, 0).await?;
            ensure!(
                bytes == audio,
                "a play of the small recording returned other bytes"
            );
            if i >= 10 {
                ttfb.push(first);
            }
        }
        println!(
            "ttfb {} small recording, warm, {} plays: {}",
            kind.name(),
            o.ttfb_plays,
            Latencies::from_durations(ttfb).p50_p99_max()
        );

        let (check, watch) = grpc_floor(&server.addr, o.ttfb_plays).await?;
        println!(
            "ttfb {} gRPC floor, same server and client stack, {} calls each, no catalog or audit: \
             grpc.health.v1 Check {}; first message of Watch {}",
            kind.name(),
            o.ttfb_plays,
            check.p50_p99_max(),
            watch.p50_p99_max()
        );

        let (big_id, _) = roundtrip::cli_ingest(&server, &tenant, big, "ttfb-big").await?;
        let seeks = seek(&server, &tenant.supervisor, &big_id, big, o.seek_plays).await?;
        println!(
            "ttfb {} seek into the middle half of a {:.0} MiB recording, warm, {} plays: {}",
            kind.name(),
            mib(big.bytes),
            o.seek_plays,
            seeks.p50_p99_max()
        );
        drop(server);
        cold(kind, &o.roles, audio.clone(), o.cold_plays).await?;
    }
    Ok(())
}

/// What a call costs the same client stack on the same server when the
/// server does nothing for it: `calls` health Checks (unary) and first
/// messages of health Watch (server streaming, like Play) on one
/// connection, after 10 untimed calls of each.
async fn grpc_floor(addr: &str, calls: usize) -> anyhow::Result<(Latencies, Latencies)> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);
    let (mut check, mut watch) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for i in 0..calls + 10 {
        let t = Instant::now();
        health.check(HealthCheckRequest::default()).await?;
        let checked = t.elapsed();
        let t = Instant::now();
        let mut stream = health
            .watch(HealthCheckRequest::default())
            .await?
            .into_inner();
        stream.message().await?.context("an empty Watch stream")?;
        let watched = t.elapsed();
        drop(stream);
        if i >= 10 {
            check.push(checked);
            watch.push(watched);
        }
    }
    Ok((
        Latencies::from_durations(check),
        Latencies::from_durations(watch),
    ))
}

/// Seeks spread evenly over the middle half of the recording (after one
/// untimed warm-up seek), all on one connection as a player would make
/// them; each first message checked against the file. Each seek cancels
/// its stream with the rest of the recording in flight (the client keeps
/// those cancels from ending its connection: `client::REMEMBERED_RESETS`).
async fn seek(
    server: &Server,
    token: &str,
    id: &str,
    big: &AudioFile,
    plays: usize,
) -> anyhow::Result<Latencies> {
    let file = std::fs::File::open(&big.path)?;
    let mut ttfb = Vec::with_capacity(plays);
    let mut play = server.client(token).await?;
    first_message(&mut play, id, big.bytes / 2).await?;
    for k in 0..plays as u64 {
        let offset = big.bytes / 4 + k * (big.bytes / 2) / plays as u64 + k;
        let (msg, first) = first_message(&mut play, id, offset).await?;
        let mut expected = vec![0u8; msg.data.len()];
        file.read_exact_at(&mut expected, offset)?;
        ensure!(
            msg.offset_bytes == offset && msg.data[..] == expected[..],
            "a seek to {offset} answered other bytes (at {})",
            msg.offset_bytes
        );
        ttfb.push(first);
    }
    Ok(Latencies::from_durations(ttfb))
}

/// Cold plays: an in-process server over the same kind of catalog, every
/// KMS call behind 50 ms, the key cache purged before each play.
async fn cold(kind: CatalogKind, roles: &str, audio: Bytes, plays: usize) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("callvault-perf-cold-")
        .tempdir()?;
    let pg = match kind {
        CatalogKind::Postgres => Some(PgDatabase::create().await.context("PostgreSQL went away")?),
        CatalogKind::Sqlite => None,
    };
    let url = match &pg {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", dir.path().join("catalog.db").display()),
    };
    let catalog = Catalog::connect(&url).await?;
    let ring = Arc::new(LocalKeyring::open(dir.path(), "bench")?);
    let key = ring.create_key()?;
    let delay = Duration::from_millis(50);
    let kms = Arc::new(support::DelayedKms { inner: ring, delay });
    let archive = support::archive(catalog, kms, dir.path());
    let boot = callvault::operator::bootstrap_tenant(&archive, "bench", &key, "bench").await?;
    let server = LocalServer::start(archive.clone(), Roles::parse(roles)?).await?;
    let mut up = Client::connect(&server.addr, &boot.ingest_token).await?;
    let mut play = Client::connect(&server.addr, &boot.supervisor_token).await?;
    let id = ingest_bytes(&mut up, "ttfb-cold", audio.clone()).await?;
    play.play_all(&id, 0).await?;

    let before = archive.metrics.calls("Decrypt");
    let mut ttfb = Vec::with_capacity(plays);
    for _ in 0..plays {
        archive.keys.purge_all();
        let (bytes, first) = play.play_all(&id, 0).await?;
        ensure!(bytes == audio, "a cold play returned other bytes");
        ttfb.push(first);
    }
    let decrypts = archive.metrics.calls("Decrypt") - before;
    let lat = Latencies::from_durations(ttfb);
    println!(
        "ttfb {} cold key cache, injected {} KMS round trip (in-process server), {plays} plays: \
         p50 {}, max {}; KMS Decrypt calls {decrypts}",
        kind.name(),
        fmt_ms(delay.as_secs_f64() * 1e3),
        fmt_ms(lat.pct(50.0)),
        fmt_ms(lat.max()),
    );
    server.stop().await?;
    drop(pg);
    Ok(())
}
