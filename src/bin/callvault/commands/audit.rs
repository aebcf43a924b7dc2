//! `callvault audit`: the tenant's audit trail through `AuditService`
//! (compliance token): events, checkpoints, verification and proofs; and
//! `audit keygen` for the deployment's signing key.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use callvault::api::pb;
use callvault::audit::checkpoint::Checkpoint;
use callvault::audit::merkle::Hash;
use callvault::audit::note::{SignerKey, VerifierKey};
use callvault::audit::proof;
use callvault::audit::verify::{self, InclusionBundle, Leaf};
use clap::Subcommand;
use futures::StreamExt;
use secrecy::ExposeSecret;

use super::ClientArgs;
use crate::output::failed;

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit events, oldest first.
    Log {
        /// Only events about this recording.
        #[arg(long)]
        recording: Option<String>,
        /// Only events by this actor (a token id, user@host, a node's job).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (e.g. playback.start, access.refused).
        #[arg(long)]
        action: Option<String>,
        /// Only events at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only events before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// At most this many events (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The newest signed checkpoint (signing one if the log grew).
    Checkpoint {
        /// Write the signed note to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Recompute the tree from every stored event, check every stored
    /// checkpoint and every checkpoint given, and prove the newest
    /// consistent with each one given. Prints OK and the tree size, or the
    /// first index where the log diverges (and exits non-zero).
    Verify {
        /// A signed checkpoint kept from earlier (repeatable).
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// The verifier key to trust (a file holding the key text); by
        /// default the server's, which only a key obtained some other way
        /// makes independent of the server.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write an inclusion proof of one event that verifies offline.
    Prove {
        /// The event's index.
        #[arg(long)]
        event: u64,
        /// Prove against this signed checkpoint (default: the newest).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Write the proof (JSON) to this file.
        #[arg(short, long)]
        output: PathBuf,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check an inclusion proof offline (no server).
    VerifyProof {
        /// The proof file (`audit prove -o FILE`).
        file: PathBuf,
        /// The verifier key to trust (a file holding the key text); by
        /// default the one inside the proof.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Print the deployment's note verifier key (to pin for `verify`).
    PublicKey {
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Generate a deployment audit signing key (for `--audit-signing-key`)
    /// and print its verifier key.
    Keygen {
        /// The key's name: names the deployment in signatures and origins.
        #[arg(long, default_value = "callvault")]
        name: String,
        /// The file to create (mode 0600); it must not exist.
        #[arg(short, long)]
        output: PathBuf,
    },
}

pub async fn run(cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Log {
            recording,
            actor,
            action,
            since,
            until,
            limit,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let mut page_token = String::new();
            let mut shown = 0usize;
            loop {
                let res = c
                    .audit
                    .list_audit_events(pb::ListAuditEventsRequest {
                        recording_id: recording.clone().unwrap_or_default(),
                        actor_id: actor.clone().unwrap_or_default(),
                        action: action.clone().unwrap_or_default(),
                        start_time: since.as_deref().map(timestamp).transpose()?,
                        end_time: until.as_deref().map(timestamp).transpose()?,
                        page_size: 1000,
                        page_token: page_token.clone(),
                    })
                    .await
                    .map_err(failed("audit log"))?
                    .into_inner();
                for e in &res.events {
                    if limit != 0 && shown == limit {
                        return Ok(());
                    }
                    print_event(e, json);
                    shown += 1;
                }
                if res.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = res.next_page_token;
            }
        }
        AuditCmd::Checkpoint {
            output,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let cp = c
                .audit
                .create_checkpoint(pb::CreateCheckpointRequest {})
                .await
                .map_err(failed("audit checkpoint"))?
                .into_inner();
            if let Some(path) = &output {
                std::fs::write(path, &cp.note)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            match (json, &output) {
                (true, _) => println!(
                    "{}",
                    serde_json::json!({
                        "tree_size": cp.tree_size,
                        "root_hash": hex::encode(&cp.root_hash),
                        "create_time": crate::output::time_json(cp.create_time.as_ref()),
                        "note": cp.note,
                        "file": output.as_ref().map(|p| p.display().to_string()),
                    })
                ),
                (false, Some(path)) => eprintln!(
                    "checkpoint of {} events written to {}",
                    cp.tree_size,
                    path.display()
                ),
                (false, None) => print!("{}", cp.note),
            }
            Ok(())
        }
        AuditCmd::Verify {
            checkpoints,
            public_key,
            json,
            client,
        } => verify_cmd(client, checkpoints, public_key, json).await,
        AuditCmd::Prove {
            event,
            checkpoint,
            output,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let vk = c
                .audit
                .get_verifier_key(pb::GetVerifierKeyRequest {})
                .await
                .map_err(failed("audit prove"))?
                .into_inner();
            let note = match &checkpoint {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
                None => {
                    c.audit
                        .create_checkpoint(pb::CreateCheckpointRequest {})
                        .await
                        .map_err(failed("audit prove"))?
                        .into_inner()
                        .note
                }
            };
            let cp = Checkpoint::parse(
                note.split("\n\n")
                    .next()
                    .map(|b| format!("{b}\n"))
                    .as_deref()
                    .unwrap_or(""),
            )
            .context("the checkpoint is not a signed checkpoint note")?;
            let proof = c
                .audit
                .get_inclusion_proof(pb::GetInclusionProofRequest {
                    index: event,
                    tree_size: cp.size(),
                })
                .await
                .map_err(failed("audit prove"))?
                .into_inner();
            let bundle = InclusionBundle {
                origin: vk.origin,
                index: event,
                event: proof.canonical,
                proof: proof.hashes.iter().map(hex::encode).collect(),
                checkpoint: note,
                verifier_key: vk.verifier_key,
            };
            let key = VerifierKey::parse(&bundle.verifier_key)?;
            verify::verify_inclusion(&bundle, &key)?;
            std::fs::write(&output, serde_json::to_vec_pretty(&bundle)?)
                .with_context(|| format!("writing {}", output.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "event": event,
                        "tree_size": cp.size(),
                        "file": output.display().to_string(),
                    })
                );
                return Ok(());
            }
            eprintln!(
                "event {event} is in the tree of {} events; proof written to {}",
                cp.size(),
                output.display()
            );
            Ok(())
        }
        AuditCmd::VerifyProof {
            file,
            public_key,
            json,
        } => {
            let bundle: InclusionBundle = serde_json::from_slice(
                &std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
            )
            .context("not an inclusion proof file")?;
            let key = match public_key {
                Some(path) => read_verifier(&path)?,
                None => VerifierKey::parse(&bundle.verifier_key)?,
            };
            let event = verify::verify_inclusion(&bundle, &key)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true,
                        "event": event.index,
                        "action": event.action.as_str(),
                        "time": callvault::domain::format_ms(event.time_ms),
                    })
                );
                return Ok(());
            }
            println!(
                "OK: event {} ({}, {}) is in the signed tree",
                event.index,
                event.action.as_str(),
                callvault::domain::format_ms(event.time_ms)
            );
            Ok(())
        }
        AuditCmd::PublicKey { json, client } => {
            let mut c = client.connect().await?;
            let vk = c
                .audit
                .get_verifier_key(pb::GetVerifierKeyRequest {})
                .await
                .map_err(failed("audit public-key"))?
                .into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "verifier_key": vk.verifier_key, "origin": vk.origin })
                );
            } else {
                println!("{}", vk.verifier_key);
            }
            Ok(())
        }
        AuditCmd::Keygen { name, output } => {
            let key = SignerKey::generate(&name)?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            use std::io::Write;
            writeln!(f, "{}", key.to_secret_text().expose_secret())?;
            f.sync_all()?;
            println!("{}", key.verifier());
            Ok(())
        }
    }
}

pub(super) fn timestamp(text: &str) -> Result<prost_types::Timestamp> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("`{text}` is not an RFC 3339 time (2026-11-25T10:00:00Z)"))?;
    Ok(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    })
}

pub(super) fn read_verifier(path: &std::path::Path) -> Result<VerifierKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(VerifierKey::parse(text.trim())?)
}

fn print_event(e: &pb::AuditEvent, json: bool) {
    if json {
        println!("{}", e.canonical);
        return;
    }
    let when = e
        .time
        .as_ref()
        .map(|t| callvault::domain::format_ms(t.seconds * 1000 + i64::from(t.nanos / 1_000_000)))
        .unwrap_or_default();
    let who = if e.actor_role.is_empty() {
        format!("{} {}", e.actor_kind, e.actor_id)
    } else {
        format!("{} {} ({})", e.actor_kind, e.actor_id, e.actor_role)
    };
    println!(
        "{:>6}  {when}  {:<28} {:<7} {who}  {}  {}",
        e.index,
        e.action,
        e.outcome,
        e.recording_ids.join(","),
        e.details_json
    );
}

async fn verify_cmd(
    client: ClientArgs,
    kept: Vec<PathBuf>,
    public_key: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let mut c = client.connect().await?;
    let vk = c
        .audit
        .get_verifier_key(pb::GetVerifierKeyRequest {})
        .await
        .map_err(failed("audit verify"))?
        .into_inner();
    let key = match &public_key {
        Some(path) => read_verifier(path)?,
        None => {
            eprintln!(
                "trusting the server's verifier key {} (pin one with --public-key)",
                vk.verifier_key
            );
            VerifierKey::parse(&vk.verifier_key)?
        }
    };
    let log = vk
        .origin
        .rsplit_once("/audit/")
        .map(|(_, l)| l.to_owned())
        .context("the server's origin line names no log")?;
    let stored = c
        .audit
        .list_checkpoints(pb::ListCheckpointsRequest {})
        .await
        .map_err(failed("audit verify"))?
        .into_inner()
        .checkpoints;
    let mut notes: Vec<String> = stored.iter().map(|cp| cp.note.clone()).collect();
    let mut kept_notes = Vec::new();
    for path in &kept {
        let note =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        kept_notes.push(note.clone());
        notes.push(note);
    }
    let outcome = async {
        // A checkpoint the trusted key did not sign is reported after the
        // events: the first event that differs says more.
        let (checkpoints, unsigned) = verify::open_checkpoints(&notes, &vk.origin, &key);
        let mut stream = c
            .audit
            .stream_leaves(pb::StreamLeavesRequest { start: 0, end: 0 })
            .await
            .map_err(failed("audit verify"))?
            .into_inner();
        let mut leaves = Vec::new();
        while let Some(leaf) = stream.next().await {
            let leaf = leaf.map_err(failed("audit verify"))?;
            leaves.push(Leaf {
                index: leaf.index,
                canonical: leaf.canonical,
                leaf_hash: leaf.leaf_hash.as_ref().try_into().unwrap_or([0; 32]),
                signature: leaf.signature.to_vec(),
            });
        }
        let report = verify::verify_log(&log, &key, leaves, &checkpoints)?;
        if let Some(why) = unsigned.first() {
            bail!(
                "{} of {} checkpoints do not verify with the trusted key (the first: {why})",
                unsigned.len(),
                notes.len()
            );
        }
        // Each checkpoint an auditor kept must also be provably a prefix of
        // the newest one (RFC 9162 consistency), as the server proves it.
        let (kept_cps, _) = verify::open_checkpoints(&kept_notes, &vk.origin, &key);
        let newest = checkpoints.iter().max_by_key(|c| c.size());
        for old in &kept_cps {
            let Some(new) = newest.filter(|n| n.size() > old.size() && old.size() > 0) else {
                continue;
            };
            let p = c
                .audit
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    first_size: old.size(),
                    second_size: new.size(),
                })
                .await
                .map_err(failed("audit verify"))?
                .into_inner();
            let hashes = p
                .hashes
                .iter()
                .map(|h| Hash::from_slice(h))
                .collect::<Result<Vec<_>, _>>()?;
            proof::verify_consistency(old.size(), new.size(), &hashes, old.root(), new.root())
                .with_context(|| {
                    format!(
                        "the checkpoint of {} events is not a prefix of the one of {}",
                        old.size(),
                        new.size()
                    )
                })?;
        }
        anyhow::Ok(report)
    }
    .await;
    match outcome {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::json!({
                    "ok": true,
                    "tree_size": report.size,
                    "root_hash": report.root.to_string(),
                    "checkpoints_verified": report.checkpoints.len(),
                })
            );
            Ok(())
        }
        Ok(report) => {
            println!(
                "OK: {} events, root {}, {} signed checkpoints verified",
                report.size,
                report.root,
                report.checkpoints.len()
            );
            Ok(())
        }
        Err(e) => bail!("audit log verification failed: {e:#}"),
    }
}
