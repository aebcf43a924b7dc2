//! `callvault ingest`, `play` and `recordings`: a tenant's recordings
//! through the server.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use callvault::api::pb;
use clap::{Args, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ClientArgs, parse_pairs};
use crate::output::{self, failed};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The audio file to upload (WAV, MP3, FLAC, Ogg, WebM, MP4/M4A), or
    /// `-` for standard input.
    pub file: PathBuf,
    /// The platform's call id (idempotency key); default: the file's
    /// SHA-256. Required when reading standard input.
    #[arg(long, required_if_eq("file", "-"))]
    pub call_id: Option<String>,
    /// Labels as key=value (repeatable). Stored encrypted.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// A participant as role=identifier (repeatable): caller=+442071838750,
    /// callee=…, agent=a-17, customer=…. Stored encrypted; found by
    /// `recordings list --participant`.
    #[arg(long = "participant")]
    pub participants: Vec<String>,
    /// Plaintext chunk size in bytes, 65536..=16777216 (0: the server's
    /// default, 1 MiB).
    #[arg(long, default_value_t = 0)]
    pub chunk_size: u32,
    /// Print JSON instead of text (errors too, on stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    /// The recording id.
    pub id: String,
    /// Write the audio to this file, or `-` for standard output. A file is
    /// written as `FILE.partial` and renamed only once every byte arrived
    /// and was authenticated.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Start at this byte of the recording.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum RecordingsCmd {
    /// The tenant's recordings, newest call first, filtered and paged by the
    /// server.
    List(ListArgs),
    /// One recording, by id or by the platform's call id.
    Get {
        /// The recording id.
        #[arg(required_unless_present = "call_id")]
        id: Option<String>,
        /// The platform's call id instead of the recording id.
        #[arg(long, conflicts_with = "id")]
        call_id: Option<String>,
        /// Print JSON (the same fields as `recordings list --json`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only calls that started at or after this time: RFC 3339
    /// (`2026-11-26T09:30:00Z`, `2026-11-26T10:30:00+01:00`) or a date
    /// (`2026-11-26`, midnight UTC).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<i64>,
    /// Only calls that started before this time (same forms as --from).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<i64>,
    /// Only the recording of this platform call id.
    #[arg(long)]
    pub call_id: Option<String>,
    /// Only recordings with this label, as key=value (repeatable: all must
    /// match).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Only recordings with this participant (in any role): a phone
    /// number in E.164 (`+442071838750`), an agent or customer id.
    #[arg(long)]
    pub participant: Option<String>,
    /// Only recordings at least this long: seconds (`90`) or with a unit
    /// (`90s`, `5m`, `1h`).
    #[arg(long, value_parser = parse_seconds)]
    pub min_duration: Option<u64>,
    /// Only recordings at most this long (same forms as --min-duration).
    #[arg(long, value_parser = parse_seconds)]
    pub max_duration: Option<u64>,
    /// Only recordings whose data key this exact KMS key ARN wraps.
    #[arg(long)]
    pub key: Option<String>,
    /// `start_time desc` (default), `start_time asc`, `create_time desc` or
    /// `create_time asc`.
    #[arg(long, default_value = "")]
    pub order_by: String,
    /// Print at most this many recordings; when more match, the token for
    /// the rest is printed on stderr (`--page-token`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Go on from where an earlier `--limit` stopped (same filters).
    #[arg(long)]
    pub page_token: Option<String>,
    /// Leave out labels and participants (no data key is opened).
    #[arg(long)]
    pub basic: bool,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// An instant as RFC 3339 or a date (midnight UTC), in ms since the epoch.
fn parse_time(s: &str) -> std::result::Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    let t = match time::OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let date =
                time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
                    .map_err(|_| {
                        format!(
                            "`{s}` is not RFC 3339 (2026-11-26T09:30:00Z) or a date (2026-11-26)"
                        )
                    })?;
            date.midnight().assume_utc()
        }
    };
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("`{s}` is out of range"))
}

/// A duration as whole seconds or with a unit, in ms.
fn parse_seconds(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1000))
            .ok_or_else(|| format!("`{s}` is too large"));
    }
    let d = callvault::domain::parse_duration(s)?;
    u64::try_from(d.as_millis()).map_err(|_| format!("`{s}` is too large"))
}

/// Standard input or standard output when a path is `-`.
fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

pub async fn ingest(args: IngestArgs) -> Result<()> {
    let (input, size): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) =
        if is_stdio(&args.file) {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let file = tokio::fs::File::open(&args.file)
                .await
                .with_context(|| format!("cannot open {}", args.file.display()))?;
            let size = file.metadata().await?.len();
            (Box::new(file), Some(size))
        };
    // Without a call id the file's digest names the call, which takes a
    // pass over the file first; with one, the upload starts at once and the
    // digest is computed as the bytes go.
    let call_id = match args.call_id {
        Some(c) => c,
        None => format!(
            "file-{}",
            &hex::encode(sha256_file(&args.file).await?)[..32]
        ),
    };
    let header = pb::IngestHeader {
        external_call_id: call_id,
        start_time: None,
        labels: parse_pairs(&args.labels)?,
        chunk_size_bytes: args.chunk_size,
        participants: parse_pairs(&args.participants)?,
    };
    let bar = match size {
        Some(size) => output::progress_bar(output::Progress::Upload, size, args.json),
        None => indicatif::ProgressBar::hidden(),
    };
    // The reader fills 1 MiB messages from a file (no copy on the way to
    // the channel; stdin, perhaps a live call, goes as it arrives) and
    // hashes them on its own task, beside the one encoding them for the
    // wire; the digest goes last, in the trailer, for the server to compare
    // before it commits.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::IngestRequest>(4);
    let progress = bar.clone();
    let fill = size.is_some();
    let reader = tokio::spawn(async move {
        const MESSAGE: usize = 1 << 20;
        let mut input = input;
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        loop {
            let mut buf = bytes::BytesMut::with_capacity(MESSAGE);
            while buf.len() < MESSAGE {
                if input.read_buf(&mut buf).await? == 0 || !fill {
                    break;
                }
            }
            let message = if buf.is_empty() {
                let sha256 = digest.clone().finish();
                callvault::api::trailer_message(sha256.as_ref())
            } else {
                digest.update(&buf);
                progress.inc(buf.len() as u64);
                callvault::api::data_message(buf.freeze())
            };
            let last = matches!(
                message.payload,
                Some(pb::ingest_request::Payload::Trailer(_))
            );
            if tx.send(message).await.is_err() {
                // The upload ended early (refused): its error is the answer.
                return Ok(None);
            }
            if last {
                return Ok::<_, std::io::Error>(Some(hex::encode(digest.finish())));
            }
        }
    });
    let mut client = args.client.connect().await?;
    let res = client
        .ingest_messages(header, tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let local = reader.await??;
    bar.finish_and_clear();
    let res = res.map_err(failed("ingest"))?;
    let rec = res.recording.context("server returned no recording")?;
    // A deduplicated answer is the recording archived earlier under this
    // call id: its digest is of that upload.
    if let Some(local) = local
        && !res.deduplicated
        && rec.sha256 != local
    {
        bail!(
            "server SHA-256 {} differs from the input's {local}",
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
    if is_stdio(&args.output) {
        // Bytes reach stdout as they are authenticated; a failure ends the
        // command non-zero, so a pipeline sees it.
        let mut out = tokio::io::stdout();
        let mut bar = None;
        while let Some(msg) = stream.message().await.map_err(failed("play"))? {
            let bar = bar.get_or_insert_with(|| play_bar(&msg, args.offset));
            out.write_all(&msg.data).await?;
            bar.inc(msg.data.len() as u64);
        }
        out.flush().await?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        return Ok(());
    }
    // Written beside the target and renamed only after the stream ended
    // normally: a failed or interrupted play never leaves a file that looks
    // like the whole recording.
    let partial = {
        let mut name = args.output.clone().into_os_string();
        name.push(".partial");
        std::path::PathBuf::from(name)
    };
    let out = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    // The file is written on a thread of its own while the next messages
    // arrive: the messages' buffers go to it as they are (no copy), a few
    // at a time. Another thread flushes what is written every
    // `SYNC_EVERY` bytes meanwhile, so the fsync before the rename (the
    // file is whole on disk before it has its name) has little left to do.
    const SYNC_EVERY: u64 = 64 << 20;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let syncing = out.try_clone()?;
    let (synced_tx, synced_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let syncer = std::thread::spawn(move || {
        while synced_rx.recv().is_ok() {
            // A failure shows again in the final fsync, which is checked.
            let _ = syncing.sync_data();
        }
    });
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut out = out;
        let mut unsynced = 0u64;
        while let Some(data) = rx.blocking_recv() {
            out.write_all(&data)?;
            unsynced += data.len() as u64;
            if unsynced >= SYNC_EVERY {
                // Skipped while the last one is still running.
                if synced_tx.try_send(()).is_ok() {
                    unsynced = 0;
                }
            }
        }
        drop(synced_tx);
        let _ = syncer.join();
        out.sync_all()
    });
    let mut written = 0u64;
    let mut bar = None;
    let result: Result<()> = async {
        while let Some(msg) = stream.message().await.map_err(failed("play"))? {
            let bar = bar.get_or_insert_with(|| play_bar(&msg, args.offset));
            let n = msg.data.len() as u64;
            if tx.send(msg.data).await.is_err() {
                break;
            }
            written += n;
            bar.inc(n);
        }
        drop(tx);
        writer
            .await
            .context("the file writer stopped")?
            .with_context(|| format!("cannot write {}", partial.display()))?;
        tokio::fs::rename(&partial, &args.output)
            .await
            .with_context(|| format!("cannot rename to {}", args.output.display()))?;
        Ok(())
    }
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    eprintln!("wrote {written} bytes to {}", args.output.display());
    Ok(())
}

/// The progress of a play, sized by its first message (on stderr, only
/// for a person at a terminal).
fn play_bar(first: &pb::PlayResponse, offset: u64) -> indicatif::ProgressBar {
    output::progress_bar(
        output::Progress::Download,
        first.size_bytes.saturating_sub(offset),
        false,
    )
}

pub async fn run(cmd: RecordingsCmd) -> Result<()> {
    match cmd {
        RecordingsCmd::List(args) => list(args).await?,
        RecordingsCmd::Get {
            id,
            call_id,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let rec = c
                .playback
                .get_recording(pb::GetRecordingRequest {
                    recording_id: id.unwrap_or_default(),
                    external_call_id: call_id.unwrap_or_default(),
                    view: pb::RecordingView::Full.into(),
                })
                .await
                .map_err(failed("get"))?
                .into_inner();
            output::print_recording(&rec, json, None);
        }
    }
    Ok(())
}

async fn list(args: ListArgs) -> Result<()> {
    let mut c = args.client.connect().await?;
    let timestamp = |ms: i64| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    };
    let mut request = pb::ListRecordingsRequest {
        page_size: 0,
        page_token: args.page_token.clone().unwrap_or_default(),
        participant: args.participant.clone().unwrap_or_default(),
        start_time_from: args.from.map(timestamp),
        start_time_to: args.to.map(timestamp),
        external_call_id: args.call_id.clone().unwrap_or_default(),
        labels: parse_pairs(&args.labels)?,
        min_duration_ms: args.min_duration,
        max_duration_ms: args.max_duration,
        kms_key_arn: args.key.clone().unwrap_or_default(),
        order_by: args.order_by.clone(),
        view: if args.basic {
            pb::RecordingView::Basic
        } else {
            pb::RecordingView::Full
        }
        .into(),
    };
    let mut all = Vec::new();
    let mut warned = false;
    let mut rest = String::new();
    loop {
        let want = args
            .limit
            .map_or(500, |l| (l as usize - all.len()).min(1000) as u32);
        request.page_size = want;
        let page = c
            .playback
            .list_recordings(request.clone())
            .await
            .map_err(failed("list"))?
            .into_inner();
        all.extend(page.recordings);
        let searched_index = args.participant.is_some() || !args.labels.is_empty();
        if page.unindexed_count > 0 && searched_index && !warned {
            warned = true;
            eprintln!(
                "note: {} recordings are not in the search index yet (the indexer on admin nodes is catching up); this search may be incomplete",
                page.unindexed_count
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        if args.limit.is_some_and(|l| all.len() >= l as usize) {
            rest = page.next_page_token;
            break;
        }
        request.page_token = page.next_page_token;
    }
    output::print_recordings(&all, args.json);
    if !rest.is_empty() {
        eprintln!("more recordings match: --page-token {rest}");
    }
    Ok(())
}
