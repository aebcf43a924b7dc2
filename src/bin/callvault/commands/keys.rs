//! `callvault keys`: a tenant's KMS keys through `KeyService` (admin token):
//! register, history, health, retirement, rotation policy and rewrap jobs.

use std::time::Duration;

use anyhow::{Result, bail};
use callvault::api::pb;
use callvault::client::Client;
use clap::Subcommand;

use super::local_keys::LocalKeyCmd;
use super::{ClientArgs, parse_pairs};
use crate::output::{self, failed};

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Prove a KMS key works for the tenant, then make it the active key.
    Register {
        /// The AWS KMS key ARN (symmetric, or RSA for write-only ingest).
        key_arn: String,
        /// Multi-Region replica as region=ARN (repeatable).
        #[arg(long = "replica")]
        replicas: Vec<String>,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The key history: state, activation and what each key protects.
    List {
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Key health, incidents and rotation compliance.
    Health {
        /// Check every key with KMS now.
        #[arg(long)]
        refresh: bool,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Retire a key that protects no recording.
    Retire {
        /// The key's ARN, from `keys list`.
        key_arn: String,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the tenant's key-rotation policy.
    Policy {
        /// The active key must be rotated at least this often, in days
        /// (`keys health` reports keys older than that).
        #[arg(long)]
        days: u32,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move every wrapped data key from one key to another (KMS ReEncrypt).
    Rewrap {
        /// The KMS key ARN whose wrapped data keys move.
        #[arg(long)]
        from: String,
        /// The KMS key ARN they move to (registered, not retired).
        #[arg(long)]
        to: String,
        /// KMS requests per second for the whole job (0: server default).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Return once the job is started instead of following it.
        #[arg(long)]
        no_wait: bool,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow (or show) a rewrap job; with --resume or --cancel, change it.
    Job {
        /// The job's id, as `keys rewrap` printed it.
        job_id: String,
        /// Resume a failed or interrupted job where it stopped.
        #[arg(long, conflicts_with = "cancel")]
        resume: bool,
        /// Cancel a running job (keys already moved stay moved).
        #[arg(long)]
        cancel: bool,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Operate the built-in local keyring (works directly on the data dir),
    /// the embedded default's stand-in for the AWS KMS console.
    #[command(subcommand)]
    Local(LocalKeyCmd),
}

/// Polls a rewrap job until it stops, with a progress bar on a terminal
/// unless the output is JSON.
pub async fn follow_job(
    c: &mut Client,
    mut job: pb::RewrapJob,
    json: bool,
) -> Result<pb::RewrapJob> {
    let bar = output::progress_bar(output::Progress::Rewrap, job.total_count, json);
    while job.state() == pb::JobState::Running {
        bar.set_length(job.total_count.max(job.rewrapped_count));
        bar.set_position(job.rewrapped_count);
        tokio::time::sleep(Duration::from_millis(500)).await;
        job = c
            .keys
            .get_rewrap_job(pb::GetRewrapJobRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .map_err(failed("rewrap status"))?
            .into_inner();
    }
    bar.finish_and_clear();
    Ok(job)
}

pub async fn run(cmd: KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::Register {
            key_arn,
            replicas,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let key = c
                .keys
                .register_key(pb::RegisterKeyRequest {
                    key_arn,
                    replica_key_arns: parse_pairs(&replicas)?,
                })
                .await
                .map_err(failed("register"))?
                .into_inner();
            if json {
                println!("{}", output::key_json(&key));
            } else {
                println!("key passed its round trip and is now active:");
                output::print_key(&key);
            }
        }
        KeysCmd::List { json, client } => {
            let mut c = client.connect().await?;
            let mut keys = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = c
                    .keys
                    .list_keys(pb::ListKeysRequest {
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .map_err(failed("list"))?
                    .into_inner();
                keys.extend(page.keys);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            output::print_keys(&keys, json);
        }
        KeysCmd::Health {
            refresh,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let h = c
                .keys
                .get_key_health(pb::GetKeyHealthRequest { refresh })
                .await
                .map_err(failed("health"))?
                .into_inner();
            output::print_key_health(&h, json);
        }
        KeysCmd::Retire {
            key_arn,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let key = c
                .keys
                .retire_key(pb::RetireKeyRequest { key_arn })
                .await
                .map_err(failed("retire"))?
                .into_inner();
            if json {
                println!("{}", output::key_json(&key));
            } else {
                output::print_key(&key);
            }
        }
        KeysCmd::Policy { days, json, client } => {
            let mut c = client.connect().await?;
            let r = c
                .keys
                .set_rotation_policy(pb::SetRotationPolicyRequest { policy_days: days })
                .await
                .map_err(failed("policy"))?
                .into_inner();
            output::print_rotation_policy(&r, json);
        }
        KeysCmd::Rewrap {
            from,
            to,
            rate,
            no_wait,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let job = c
                .keys
                .start_rewrap(pb::StartRewrapRequest {
                    source_key_arn: from,
                    destination_key_arn: to,
                    max_kms_requests_per_second: rate,
                })
                .await
                .map_err(failed("rewrap"))?
                .into_inner();
            let job = if no_wait {
                job
            } else {
                follow_job(&mut c, job, json).await?
            };
            output::print_job(&job, json);
            if job.state() == pb::JobState::Failed {
                bail!("rewrap job {} failed: {}", job.job_id, job.error);
            }
        }
        KeysCmd::Job {
            job_id,
            resume,
            cancel,
            json,
            client,
        } => {
            let mut c = client.connect().await?;
            let job = if resume {
                c.keys
                    .resume_rewrap(pb::ResumeRewrapRequest { job_id })
                    .await
            } else if cancel {
                c.keys
                    .cancel_rewrap(pb::CancelRewrapRequest { job_id })
                    .await
            } else {
                c.keys
                    .get_rewrap_job(pb::GetRewrapJobRequest { job_id })
                    .await
            }
            .map_err(failed("rewrap job"))?
            .into_inner();
            let job = if cancel {
                job
            } else {
                follow_job(&mut c, job, json).await?
            };
            output::print_job(&job, json);
        }
        KeysCmd::Local(cmd) => super::local_keys::run(cmd)?,
    }
    Ok(())
}
