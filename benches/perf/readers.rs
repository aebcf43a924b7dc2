//! Section 4: many readers at once against the child server. Concurrent
//! plays of as many different recordings (twice: right after the ingests,
//! then again), then, after a restart empties the key cache, as many
//! concurrent plays of one recording, which must cost one KMS Decrypt (read
//! from the node's `/metrics`).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use callvault::api::pb;
use callvault::client::Client;
use futures::StreamExt;

use crate::Ctx;
use crate::inputs::pcm_wav;
use crate::node::Backend;
use crate::stats::{Latencies, mb_per_s, mib};
use crate::ttfb::ingest_bytes;

/// Concurrent plays share a connection per this many streams.
const PLAYS_PER_CONNECTION: usize = 25;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let o = &ctx.opts;
    let wav = pcm_wav(ctx.work.path(), "readers.wav", (o.reader_mib as u64) << 20).await?;
    let audio = wav.read().await?;
    let connections = o.readers.div_ceil(PLAYS_PER_CONNECTION);
    println!(
        "readers: {n} recordings of {:.0} MiB ({}); {n} concurrent plays over {connections} \
         connections, each read to the end and checked byte for byte; KMS calls from the \
         node's /metrics",
        mib(audio.len() as u64),
        wav.made_by,
        n = o.readers,
    );
    for &kind in &ctx.catalogs {
        let Some(backend) = Backend::new(kind).await? else {
            println!("readers {}: skipped (not reachable)", kind.name());
            continue;
        };
        let name = kind.name();
        let tenant = backend.tenant("bench")?;
        let server = backend.serve(&o.roles, &[]).await?;
        let up = server.client(&tenant.ingest).await?;
        let ids: Vec<String> = futures::stream::iter(0..o.readers)
            .map(|i| {
                let mut up = up.clone();
                let audio = audio.clone();
                async move { ingest_bytes(&mut up, &format!("reader-{i}"), audio).await }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;

        for round in ["first", "second"] {
            let clients = connect(&server, &tenant.supervisor, connections).await?;
            let decrypts = server.kms_calls("Decrypt").await?;
            let (lat, bytes, wall) = plays(&clients, &ids, &audio).await?;
            let decrypts = server.kms_calls("Decrypt").await? - decrypts;
            println!(
                "readers {name}: {} concurrent plays of different recordings, {round} round: {:.0} MB/s \
                 together ({:.1} s); first message {}; KMS Decrypt calls {decrypts}",
                o.readers,
                mb_per_s(bytes, wall),
                wall.as_secs_f64(),
                lat.p50_p99_max(),
            );
        }

        // A restart empties the key cache; the recording is the same for all.
        server.stop().await?;
        let server = backend.serve(&o.roles, &[]).await?;
        let clients = connect(&server, &tenant.supervisor, connections).await?;
        let before = server.kms_calls("Decrypt").await?;
        let same = vec![ids[0].clone(); o.readers];
        let (lat, bytes, wall) = plays(&clients, &same, &audio).await?;
        let decrypts = server.kms_calls("Decrypt").await? - before;
        println!(
            "readers {name}: {} concurrent cold plays of one recording (server restarted): {:.0} MB/s \
             together ({:.1} s); first message {}; KMS Decrypt calls {decrypts}",
            o.readers,
            mb_per_s(bytes, wall),
            wall.as_secs_f64(),
            lat.p50_p99_max(),
        );
        ensure!(
            decrypts == 1,
            "{} concurrent cold plays of one recording cost {decrypts} KMS Decrypt calls, not 1",
            o.readers
        );
    }
    Ok(())
}

async fn connect(
    server: &crate::node::Server,
    token: &str,
    n: usize,
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(server.client(token).await?);
    }
    Ok(clients)
}

/// Plays every id at once, to the end; (first-message latencies, bytes,
/// wall time of the whole set).
async fn plays(
    clients: &[Client],
    ids: &[String],
    audio: &Bytes,
) -> anyhow::Result<(Latencies, u64, Duration)> {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let mut client = clients[i / PLAYS_PER_CONNECTION].clone();
        let (id, audio) = (id.clone(), audio.clone());
        set.spawn(async move { play_checked(&mut client, &id, &audio).await });
    }
    let mut ttfb = Vec::with_capacity(ids.len());
    let mut bytes = 0;
    while let Some(res) = set.join_next().await {
        let (first, n) = res??;
        ttfb.push(first);
        bytes += n;
    }
    Ok((Latencies::from_durations(ttfb), bytes, started.elapsed()))
}

/// One whole play, each message compared with the bytes at its offset.
async fn play_checked(
    client: &mut Client,
    id: &str,
    audio: &Bytes,
) -> anyhow::Result<(Duration, u64)> {
    let t = Instant::now();
    let mut stream = client
        .playback
        .play(pb::PlayRequest {
            recording_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("play of {id} refused"))?
        .into_inner();
    let mut first = None;
    let mut at = 0usize;
    while let Some(msg) = stream.message().await? {
        first.get_or_insert_with(|| t.elapsed());
        let end = at + msg.data.len();
        ensure!(
            msg.offset_bytes as usize == at && end <= audio.len() && msg.data[..] == audio[at..end],
            "play of {id}: the bytes at {at} differ"
        );
        at = end;
    }
    ensure!(
        at == audio.len(),
        "play of {id} ended at {at} of {}",
        audio.len()
    );
    Ok((first.unwrap_or_else(|| t.elapsed()), at as u64))
}
