//! `callvault ingest`, `play` and `recordings`: a tenant's recordings
//! through the server.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use callvault::api::pb;
use clap::{Args, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ClientArgs, parse_pairs};
use crate::output::{self, failed};

#[derive(Debug, Args)]
pub struct IngestArgs {
    pub file: PathBuf,
    /// The platform's call id (idempotency key); default: the file's SHA-256.
    #[arg(long)]
    pub call_id: Option<String>,
    /// Labels as key=value (repeatable). Stored encrypted.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// A participant as role=identifier (repeatable): caller=+442071838750,
    /// callee=…, agent=a-17, customer=…. Stored encrypted; found by
    /// `recordings list --participant`.
    #[arg(long = "participant")]
    pub participants: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub chunk_size: u32,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    pub id: String,
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum RecordingsCmd {
    List {
        /// Only recordings with this participant (in any role): a phone
        /// number in E.164 (`+442071838750`), an agent or customer id.
        #[arg(long)]
        participant: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    Get {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn ingest(args: IngestArgs) -> Result<()> {
    let mut file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().await?.len();
    // One pass to hash: the digest names the call when no id is given and
    // checks the server's SHA-256 afterwards.
    let local = hex::encode(sha256_file(&args.file).await?);
    let call_id = match args.call_id {
        Some(c) => c,
        None => format!("file-{}", &local[..32]),
    };
    let header = pb::IngestHeader {
        external_call_id: call_id,
        start_time: None,
        labels: parse_pairs(&args.labels)?,
        chunk_size_bytes: args.chunk_size,
        participants: parse_pairs(&args.participants)?,
    };
    let bar = output::progress_bar(output::Progress::Upload, size, args.json);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let progress = bar.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            progress.inc(n as u64);
            if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                return Ok(());
            }
        }
    });
    let mut client = args.client.connect().await?;
    let res = client
        .ingest_stream(header, tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader.await??;
    bar.finish_and_clear();
    let res = res.map_err(failed("ingest"))?;
    let rec = res.recording.context("server returned no recording")?;
    if rec.sha256 != local {
        bail!(
            "server SHA-256 {} differs from the file's {local}",
            rec.sha256
        );
    }
    output::print_recording(&rec, args.json, Some(res.deduplicated));
    Ok(())
}

async fn sha256_file(path: &Path) -> Result<Vec<u8>> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().to_vec())
}

pub async fn play(args: PlayArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let res = client
        .playback
        .play(pb::PlayRequest {
            recording_id: args.id.clone(),
            offset_bytes: args.offset,
            // A file on disk is a download in the audit trail.
            purpose: pb::PlaybackPurpose::Download.into(),
        })
        .await;
    let mut stream = res.map_err(failed("play"))?.into_inner();
    // Written beside the target and renamed only after the stream ended
    // normally: a failed or interrupted play never leaves a file that looks
    // like the whole recording.
    let partial = {
        let mut name = args.output.clone().into_os_string();
        name.push(".partial");
        std::path::PathBuf::from(name)
    };
    let mut out = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut written = 0u64;
    let result: Result<()> = async {
        while let Some(msg) = stream.message().await.map_err(failed("play"))? {
            out.write_all(&msg.data).await?;
            written += msg.data.len() as u64;
        }
        out.flush().await?;
        out.sync_all().await?;
        tokio::fs::rename(&partial, &args.output)
            .await
            .with_context(|| format!("cannot rename to {}", args.output.display()))?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    eprintln!("wrote {written} bytes to {}", args.output.display());
    Ok(())
}

pub async fn run(cmd: RecordingsCmd) -> Result<()> {
    match cmd {
        RecordingsCmd::List {
            participant,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let mut token = String::new();
            let mut all = Vec::new();
            let mut warned = false;
            loop {
                let page = c
                    .playback
                    .list_recordings(pb::ListRecordingsRequest {
                        page_size: 500,
                        page_token: token,
                        participant: participant.clone().unwrap_or_default(),
                    })
                    .await
                    .map_err(failed("list"))?
                    .into_inner();
                all.extend(page.recordings);
                if page.unindexed_count > 0 && participant.is_some() && !warned {
                    warned = true;
                    eprintln!(
                        "note: {} recordings are not in the search index yet (the indexer on admin nodes is catching up); this search may be incomplete",
                        page.unindexed_count
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            output::print_recordings(&all, json);
        }
        RecordingsCmd::Get { id, json, client } => {
            let mut c = client.connect().await?;
            let rec = c
                .playback
                .get_recording(pb::GetRecordingRequest { recording_id: id })
                .await
                .map_err(failed("get"))?
                .into_inner();
            output::print_recording(&rec, json, None);
        }
    }
    Ok(())
}
