//! `callvault export`: a compliance export through `ExportService`
//! (compliance token), written to a file only as the bundle arrives and only
//! under its final name once complete; and `export verify`, which checks a
//! bundle offline.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use callvault::api::pb;
use callvault::export::verify::{self, Options};
use clap::{Args, Subcommand};
use serde_json::json;

use super::audit::{read_verifier, timestamp};
use super::{ClientArgs, parse_pairs};
use crate::output::{Progress, failed, progress_bar};

/// Export recordings as a signed BagIt bundle, or verify one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub command: Option<ExportCmd>,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Debug, Subcommand)]
pub enum ExportCmd {
    /// Check a bundle offline (no server): decrypt it if it is age-encrypted,
    /// validate the bag (every manifest line, Payload-Oxum, no file missing or
    /// extra), each recording against its ingest SHA-256, the signature over
    /// the tag manifest, and each audit event's inclusion proof against the
    /// signed checkpoint. Prints OK with counts, or the first problem (and
    /// exits non-zero).
    Verify {
        /// The bundle (`.tar`, or `.tar.age` when encrypted).
        file: PathBuf,
        /// An age identity file (`age-keygen` output) for an encrypted bundle
        /// (repeatable).
        #[arg(long = "identity")]
        identities: Vec<PathBuf>,
        /// The audit verifier key to trust (`callvault audit public-key`);
        /// without it, the key inside the bundle, which proves integrity but
        /// not who signed.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
}

/// One selection mode: `--recording`, `--call-id`, or `--label`/`--from`/`--to`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A recording id (repeatable).
    #[arg(long = "recording")]
    recordings: Vec<String>,
    /// A call id as the platform sent it (repeatable).
    #[arg(long = "call-id")]
    call_ids: Vec<String>,
    /// Only recordings with this label, key=value (repeatable; all must match).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Calls started at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Calls started before this time (RFC 3339).
    #[arg(long)]
    to: Option<String>,
    /// Every recording with this participant (a phone number in E.164,
    /// `+442071838750`, or an agent or customer id), in any role.
    #[arg(long)]
    participant: Option<String>,
    /// Why the recordings are exported (recorded in the audit trail and the bag).
    #[arg(long)]
    reason: Option<String>,
    /// The bundle file to create; it must not exist.
    #[arg(short, long, required = true)]
    output: Option<PathBuf>,
    /// Encrypt the bundle to this age recipient, age1… (repeatable); the
    /// server encrypts, so plaintext never reaches this machine.
    #[arg(long = "age-recipient")]
    age_recipients: Vec<String>,
    /// Print JSON instead of text (errors too, on stderr).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: Option<ClientArgs>,
}

pub async fn run(args: ExportArgs) -> Result<()> {
    match args.command {
        Some(ExportCmd::Verify {
            file,
            identities,
            public_key,
            json,
        }) => verify_cmd(file, identities, public_key, json).await,
        None => create(args.create).await,
    }
}

fn request(a: &CreateArgs) -> Result<pb::ExportRequest> {
    let query = if a.labels.is_empty() && a.from.is_none() && a.to.is_none() {
        None
    } else {
        Some(pb::ExportQuery {
            labels: parse_pairs(&a.labels)?,
            start_time: a.from.as_deref().map(timestamp).transpose()?,
            end_time: a.to.as_deref().map(timestamp).transpose()?,
        })
    };
    Ok(pb::ExportRequest {
        recording_ids: a.recordings.clone(),
        external_call_ids: a.call_ids.clone(),
        query,
        participant: a.participant.clone().unwrap_or_default(),
        reason: a.reason.clone().unwrap_or_default(),
        age_recipients: a.age_recipients.clone(),
    })
}

/// `FILE.partial` beside the output: the bundle goes there as it arrives
/// and is renamed to `FILE` only once complete.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

async fn create(a: CreateArgs) -> Result<()> {
    let output = a.output.clone().context("--output is required")?;
    let client = a.client.as_ref().context("--token is required")?;
    if output.exists() {
        bail!(
            "{} exists; an export never overwrites a file",
            output.display()
        );
    }
    let req = request(&a)?;
    let mut c = client.connect().await?;
    let mut stream = c
        .export
        .export(req)
        .await
        .map_err(failed("export"))?
        .into_inner();
    // Nothing is written before the server has accepted the whole
    // selection: its first message comes only after that.
    let header = match stream.message().await.map_err(failed("export"))? {
        Some(pb::ExportResponse {
            payload: Some(pb::export_response::Payload::Header(h)),
        }) => h,
        _ => bail!("export failed: the server did not start with a header"),
    };
    let partial = partial_path(&output);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let bar = progress_bar(Progress::Download, header.tar_size_bytes, a.json);
    let received = async {
        let mut bytes = 0u64;
        while let Some(msg) = stream.message().await.map_err(failed("export"))? {
            if let Some(pb::export_response::Payload::Data(d)) = msg.payload {
                file.write_all(&d)
                    .with_context(|| format!("writing {}", partial.display()))?;
                bytes += d.len() as u64;
                bar.inc(d.len() as u64);
            }
        }
        file.sync_all()
            .with_context(|| format!("writing {}", partial.display()))?;
        Ok::<_, anyhow::Error>(bytes)
    }
    .await;
    bar.finish_and_clear();
    let bytes = match received {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context("the export did not complete; nothing was kept"));
        }
    };
    std::fs::rename(&partial, &output)
        .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
    if a.json {
        println!(
            "{}",
            json!({
                "export_id": header.export_id,
                "file": output.display().to_string(),
                "recording_ids": header.recording_ids,
                "size_bytes": bytes,
                "age_encrypted": header.age_encrypted,
                "audit_event_index": header.audit_event_index,
            })
        );
    } else {
        println!(
            "exported {} recordings to {} ({bytes} bytes{})\nexport id {}, audit event {}",
            header.recording_ids.len(),
            output.display(),
            if header.age_encrypted {
                ", age-encrypted"
            } else {
                ""
            },
            header.export_id,
            header.audit_event_index
        );
    }
    Ok(())
}

async fn verify_cmd(
    file: PathBuf,
    identities: Vec<PathBuf>,
    public_key: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let mut opts = Options {
        trusted_key: public_key.as_deref().map(read_verifier).transpose()?,
        ..Options::default()
    };
    for path in &identities {
        let ids = age::IdentityFile::from_file(path.display().to_string())
            .with_context(|| format!("reading identity file {}", path.display()))?
            .into_identities()
            .with_context(|| format!("{} holds no usable age identity", path.display()))?;
        opts.identities.extend(ids);
    }
    let input =
        std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let report = tokio::task::spawn_blocking(move || verify::verify(input, &opts))
        .await?
        .map_err(|p| anyhow::anyhow!("{}: {p}", file.display()))?;
    if json {
        println!(
            "{}",
            json!({
                "ok": true,
                "export_id": report.export_id,
                "age_encrypted": report.age_encrypted,
                "recordings": report.recordings,
                "payload_files": report.payload_files,
                "payload_bytes": report.payload_bytes,
                "audit_events": report.audit_events,
                "checkpoint_size": report.checkpoint_size,
                "signer": report.signer,
                "key_from_bundle": report.key_from_bundle,
            })
        );
    } else {
        println!(
            "OK: export {}: {} recordings match their ingest SHA-256, {} payload files ({} bytes) match the manifest, \
             the tag manifest's signature verifies, {} audit events are in the signed checkpoint of size {}",
            report.export_id,
            report.recordings,
            report.payload_files,
            report.payload_bytes,
            report.audit_events,
            report.checkpoint_size
        );
        if report.key_from_bundle {
            eprintln!(
                "note: verified with the key inside the bundle ({}); pass --public-key with the key you pinned to prove who signed",
                report.signer
            );
        }
    }
    Ok(())
}
