//! `callvault retention`, `hold`, `erase` and `certificates`: compliance
//! staff's commands (compliance token) through `ComplianceService`, and
//! `certificates verify`, which needs no server.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use callvault::api::pb;
use callvault::compliance::certificate;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::ClientArgs;
use super::audit::{read_verifier, timestamp};
use crate::output::{failed, format_ts, time_json};

#[derive(Debug, Subcommand)]
pub enum RetentionCmd {
    /// The tenant's retention rules: the default period and rules by label.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the default period, or with --label the period of recordings
    /// carrying that label (the most specific rule wins; among label rules,
    /// the longest). New recordings follow it from now on.
    Set {
        /// Keep recordings this many days after ingest (1..=36525).
        #[arg(long, required_unless_present = "remove")]
        days: Option<u32>,
        /// Remove the rule instead.
        #[arg(long, conflicts_with = "days")]
        remove: bool,
        /// The rule applies to recordings with this label (KEY=VALUE).
        #[arg(long)]
        label: Option<String>,
        /// Also re-evaluate the existing recordings this rule decides, and
        /// report how many changed.
        #[arg(long)]
        apply_to_existing: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum HoldCmd {
    /// Place a legal hold: the recordings it covers cannot be erased (by
    /// retention or on request) and their keys cannot be retired.
    Place {
        /// The hold's name (letters, digits, - _ . :), e.g. a matter number.
        name: String,
        /// Why (a case, a regulator's request). Required.
        #[arg(long)]
        reason: String,
        /// Hold these recordings (repeatable).
        #[arg(long = "recording", conflicts_with_all = ["call_ids", "from", "to"])]
        recordings: Vec<String>,
        /// Hold the recordings of these calls (repeatable).
        #[arg(long = "call-id", conflicts_with_all = ["from", "to", "participant"])]
        call_ids: Vec<String>,
        /// Hold every recording with this participant (a phone number in
        /// E.164, an agent or customer id), in any role.
        #[arg(long, conflicts_with_all = ["recordings", "from", "to", "labels"])]
        participant: Option<String>,
        /// With --from/--to: only calls carrying this label, KEY=VALUE
        /// (repeatable; all must match).
        #[arg(long = "label", requires = "from")]
        labels: Vec<String>,
        /// Hold every call that started at or after this time (RFC 3339)…
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// …and before this time (RFC 3339).
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Release an active hold. Recordings no other hold covers become
    /// erasable; those past retention are erased by the next expiry pass.
    Release {
        /// The hold's name.
        name: String,
        /// Why. Required.
        #[arg(long)]
        reason: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The tenant's active holds (with --all, released ones too).
    List {
        /// Released holds too.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A hold and the recordings it covers.
    Show {
        /// The hold's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The recordings to erase (repeatable, at most 1000).
    #[arg(long = "recording", required_unless_present = "participant")]
    pub recordings: Vec<String>,
    /// Erase every recording with this participant (a data-subject
    /// erasure request; at most 1000 recordings).
    #[arg(long, conflicts_with = "recordings")]
    pub participant: Option<String>,
    /// The reason or legal basis (e.g. "GDPR Art. 17 request 2026-114").
    #[arg(long)]
    pub reason: String,
    /// Erase before the retention period ends (recorded as such).
    #[arg(long)]
    pub override_retention: bool,
    /// Write the signed certificate to this file.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum CertificatesCmd {
    /// The tenant's deletion certificates, newest first.
    List {
        /// At most this many (1..=1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One certificate: the signed file once complete.
    Get {
        /// The certificate's id (from `erase` or `certificates list`).
        id: String,
        /// Write the signed certificate to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print JSON: the certificate's status and, once complete, the
        /// signed file's text (`signed_certificate`). An incomplete
        /// certificate is then an answer, not an error.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check a certificate file offline (no server): its signature by the
    /// deployment's audit key and that nothing in it was edited.
    Verify {
        /// The certificate file (`certificates get -o FILE`).
        file: PathBuf,
        /// The verifier key to trust (a file holding the key text, from
        /// `callvault audit public-key`); by default the one inside the
        /// certificate.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn policy_json(p: &pb::RetentionPolicy) -> Value {
    json!({
        "default_days": (p.default_days > 0).then_some(p.default_days),
        "rules": p.rules.iter().map(|r| json!({
            "label": format!("{}={}", r.label_key, r.label_value),
            "days": r.days,
            "update_time": time_json(r.update_time.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

fn print_policy(p: &pb::RetentionPolicy) {
    match p.default_days {
        0 => println!("default: none (kept until erased on request)"),
        d => println!("default: {d} days"),
    }
    for r in &p.rules {
        println!("{}={}: {} days", r.label_key, r.label_value, r.days);
    }
}

fn hold_json(h: &pb::LegalHold) -> Value {
    json!({
        "hold_id": h.hold_id,
        "name": h.name,
        "reason": h.reason,
        "selection": serde_json::from_str::<Value>(&h.selection_json).unwrap_or(Value::Null),
        "recording_count": h.recording_count,
        "placed_by": h.placed_by,
        "place_time": time_json(h.place_time.as_ref()),
        "released_by": (!h.released_by.is_empty()).then_some(&h.released_by),
        "release_reason": (!h.release_reason.is_empty()).then_some(&h.release_reason),
        "release_time": time_json(h.release_time.as_ref()),
    })
}

fn print_hold(h: &pb::LegalHold) {
    let placed = h.place_time.as_ref().map(format_ts).unwrap_or_default();
    println!(
        "{}  {} recordings  placed {placed} by {}  reason: {}",
        h.name, h.recording_count, h.placed_by, h.reason
    );
    if let Some(t) = &h.release_time {
        println!(
            "  released {} by {}: {}",
            format_ts(t),
            h.released_by,
            h.release_reason
        );
    }
}

fn certificate_json(c: &pb::DeletionCertificate) -> Value {
    json!({
        "certificate_id": c.certificate_id,
        "complete": c.complete,
        "actor": c.actor,
        "trigger": c.trigger,
        "reason": c.reason,
        "override_retention": c.override_retention,
        "recording_count": c.recording_count,
        "audit_event_index": c.audit_event_index,
        "erase_time": time_json(c.erase_time.as_ref()),
        "complete_time": time_json(c.complete_time.as_ref()),
    })
}

pub async fn retention(cmd: RetentionCmd) -> Result<()> {
    match cmd {
        RetentionCmd::Show { json, client } => {
            let p = client
                .connect()
                .await?
                .compliance
                .get_retention_policy(pb::GetRetentionPolicyRequest {})
                .await
                .map_err(failed("retention show"))?
                .into_inner();
            if json {
                println!("{}", policy_json(&p));
            } else {
                print_policy(&p);
            }
            Ok(())
        }
        RetentionCmd::Set {
            days,
            remove,
            label,
            apply_to_existing,
            json,
            client,
        } => {
            let (label_key, label_value) = match &label {
                Some(l) => l
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .with_context(|| format!("label `{l}` is not KEY=VALUE"))?,
                None => Default::default(),
            };
            let days = days.unwrap_or(0);
            let res = client
                .connect()
                .await?
                .compliance
                .set_retention_rule(pb::SetRetentionRuleRequest {
                    label_key,
                    label_value,
                    days,
                    apply_to_existing,
                    remove,
                })
                .await
                .map_err(failed("retention set"))?
                .into_inner();
            let policy = res.policy.unwrap_or_default();
            if json {
                println!(
                    "{}",
                    json!({
                        "policy": policy_json(&policy),
                        "previous_days": (res.previous_days > 0).then_some(res.previous_days),
                        "applied_to_existing": res.applied_to_existing,
                        "recordings_changed": res.applied_to_existing.then_some(res.recordings_changed),
                    })
                );
            } else {
                print_policy(&policy);
                if res.applied_to_existing {
                    eprintln!(
                        "{} existing recordings re-evaluated",
                        res.recordings_changed
                    );
                } else {
                    eprintln!(
                        "applies to new recordings (--apply-to-existing re-evaluates existing ones)"
                    );
                }
            }
            Ok(())
        }
    }
}

pub async fn hold(cmd: HoldCmd) -> Result<()> {
    match cmd {
        HoldCmd::Place {
            name,
            reason,
            recordings,
            call_ids,
            participant,
            labels,
            from,
            to,
            json,
            client,
        } => {
            if recordings.is_empty()
                && call_ids.is_empty()
                && from.is_none()
                && participant.is_none()
            {
                bail!(
                    "name what to hold: --recording, --call-id, --participant, or --from and --to"
                );
            }
            let h = client
                .connect()
                .await?
                .compliance
                .place_legal_hold(pb::PlaceLegalHoldRequest {
                    name,
                    reason,
                    recording_ids: recordings,
                    external_call_ids: call_ids,
                    start_time: from.as_deref().map(timestamp).transpose()?,
                    end_time: to.as_deref().map(timestamp).transpose()?,
                    labels: super::parse_pairs(&labels)?,
                    participant: participant.unwrap_or_default(),
                })
                .await
                .map_err(failed("hold place"))?
                .into_inner();
            if json {
                println!("{}", hold_json(&h));
            } else {
                print_hold(&h);
            }
            Ok(())
        }
        HoldCmd::Release {
            name,
            reason,
            json,
            client,
        } => {
            let res = client
                .connect()
                .await?
                .compliance
                .release_legal_hold(pb::ReleaseLegalHoldRequest { name, reason })
                .await
                .map_err(failed("hold release"))?
                .into_inner();
            let h = res.hold.unwrap_or_default();
            if json {
                let mut v = hold_json(&h);
                v["recordings_freed"] = res.recordings_freed.into();
                println!("{v}");
            } else {
                print_hold(&h);
                eprintln!(
                    "{} recordings are no longer under any hold",
                    res.recordings_freed
                );
            }
            Ok(())
        }
        HoldCmd::List { all, json, client } => {
            let res = client
                .connect()
                .await?
                .compliance
                .list_legal_holds(pb::ListLegalHoldsRequest {
                    include_released: all,
                })
                .await
                .map_err(failed("hold list"))?
                .into_inner();
            if json {
                println!(
                    "{}",
                    Value::Array(res.holds.iter().map(hold_json).collect())
                );
            } else {
                for h in &res.holds {
                    print_hold(h);
                }
                eprintln!("{} holds", res.holds.len());
            }
            Ok(())
        }
        HoldCmd::Show { name, json, client } => {
            let mut c = client.connect().await?;
            let mut token = String::new();
            let mut members = Vec::new();
            let mut hold = None;
            loop {
                let res = c
                    .compliance
                    .get_legal_hold(pb::GetLegalHoldRequest {
                        name: name.clone(),
                        page_size: 1000,
                        page_token: token,
                    })
                    .await
                    .map_err(failed("hold show"))?
                    .into_inner();
                hold = hold.or(res.hold);
                members.extend(res.recording_ids);
                if res.next_page_token.is_empty() {
                    break;
                }
                token = res.next_page_token;
            }
            let h = hold.unwrap_or_default();
            if json {
                let mut v = hold_json(&h);
                v["recording_ids"] = members.into();
                println!("{v}");
            } else {
                print_hold(&h);
                for m in &members {
                    println!("  {m}");
                }
            }
            Ok(())
        }
    }
}

pub async fn erase(args: EraseArgs) -> Result<()> {
    let res = args
        .client
        .connect()
        .await?
        .compliance
        .erase_recordings(pb::EraseRecordingsRequest {
            recording_ids: args.recordings,
            reason: args.reason,
            override_retention: args.override_retention,
            participant: args.participant.clone().unwrap_or_default(),
        })
        .await
        .map_err(failed("erase"))?
        .into_inner();
    if let (Some(path), false) = (&args.output, res.certificate_json.is_empty()) {
        std::fs::write(path, &res.certificate_json)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!(
            "{}",
            json!({
                "certificate_id": res.certificate_id,
                "recording_ids": res.recording_ids,
                "erase_time": time_json(res.erase_time.as_ref()),
                "certificate_complete": !res.certificate_json.is_empty(),
            })
        );
    } else {
        println!(
            "erased {} recordings; certificate {}",
            res.recording_ids.len(),
            res.certificate_id
        );
        if res.certificate_json.is_empty() {
            eprintln!(
                "the objects are still being deleted; `callvault certificates get {}` returns the certificate once they are verified gone",
                res.certificate_id
            );
        } else if let Some(path) = &args.output {
            eprintln!("certificate written to {}", path.display());
        }
    }
    Ok(())
}

pub async fn certificates(cmd: CertificatesCmd) -> Result<()> {
    match cmd {
        CertificatesCmd::List {
            limit,
            json,
            client,
        } => {
            let res = client
                .connect()
                .await?
                .compliance
                .list_certificates(pb::ListCertificatesRequest { page_size: limit })
                .await
                .map_err(failed("certificates list"))?
                .into_inner();
            if json {
                println!(
                    "{}",
                    Value::Array(res.certificates.iter().map(certificate_json).collect())
                );
            } else {
                for c in &res.certificates {
                    println!(
                        "{}  {}  {} recordings  {}  {}  {}",
                        c.certificate_id,
                        c.erase_time.as_ref().map(format_ts).unwrap_or_default(),
                        c.recording_count,
                        c.trigger,
                        if c.complete {
                            "complete"
                        } else {
                            "objects pending"
                        },
                        c.reason
                    );
                }
                eprintln!("{} certificates", res.certificates.len());
            }
            Ok(())
        }
        CertificatesCmd::Get {
            id,
            output,
            json,
            client,
        } => {
            let c = client
                .connect()
                .await?
                .compliance
                .get_certificate(pb::GetCertificateRequest { certificate_id: id })
                .await
                .map_err(failed("certificates get"))?
                .into_inner();
            if let (Some(path), true) = (&output, c.complete) {
                std::fs::write(path, &c.certificate_json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                let mut v = certificate_json(&c);
                v["recording_ids"] = c.recording_ids.clone().into();
                v["signed_certificate"] = if c.complete {
                    c.certificate_json.clone().into()
                } else {
                    Value::Null
                };
                println!("{v}");
                return Ok(());
            }
            if !c.complete {
                bail!(
                    "certificate {} is not complete yet: the objects of its {} recordings are still being deleted",
                    c.certificate_id,
                    c.recording_count
                );
            }
            match output {
                Some(path) => eprintln!("certificate written to {}", path.display()),
                None => print!("{}", c.certificate_json),
            }
            Ok(())
        }
        CertificatesCmd::Verify {
            file,
            public_key,
            json,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let trusted = public_key.as_deref().map(read_verifier).transpose()?;
            let v = certificate::verify(&bytes, trusted.as_ref())
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let c = &v.certificate;
            if json {
                println!(
                    "{}",
                    json!({
                        "ok": true,
                        "certificate_id": c.certificate_id,
                        "tenant": c.tenant,
                        "recordings": c.recordings.len(),
                        "erased_at": c.erased_at,
                        "signed_by": v.key.to_string(),
                        "key_from_certificate": v.key_from_certificate,
                    })
                );
            } else {
                println!(
                    "OK: certificate {} of tenant {}: {} recordings erased at {} ({}), signed by {}",
                    c.certificate_id,
                    c.tenant,
                    c.recordings.len(),
                    c.erased_at,
                    c.method.technique,
                    v.key
                );
                if v.key_from_certificate {
                    // Anyone can sign a certificate with a key of their own:
                    // only a key obtained some other way makes this proof.
                    eprintln!(
                        "warning: verified with the key the certificate itself names ({}); compare it with `callvault audit public-key`, or pass that key with --public-key",
                        v.key
                    );
                }
            }
            Ok(())
        }
    }
}
