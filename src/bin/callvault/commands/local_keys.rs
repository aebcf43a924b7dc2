//! `callvault keys local`: operate the built-in local keyring directly on
//! the data dir, the embedded default's stand-in for the AWS KMS console.

use anyhow::Result;
use callvault::kms::local::LocalKeyring;
use clap::{Args, Subcommand};

use super::BackendArgs;

#[derive(Debug, Subcommand)]
pub enum LocalKeyCmd {
    /// Create a key; prints its ARN.
    Create {
        /// RSA_2048 or RSA_3072 for write-only ingest; default symmetric.
        #[arg(long)]
        spec: Option<String>,
        #[command(flatten)]
        out: LocalArgs,
    },
    /// Disable a key: KMS refuses to use it (playback of what it protects
    /// stops) until it is enabled again.
    Disable {
        /// The local key's ARN (`arn:aws:kms:local:…`).
        key_arn: String,
        #[command(flatten)]
        out: LocalArgs,
    },
    /// Enable a disabled key again.
    Enable {
        /// The local key's ARN (`arn:aws:kms:local:…`).
        key_arn: String,
        #[command(flatten)]
        out: LocalArgs,
    },
    /// Schedule a key's deletion: it is unusable at once and deleted after
    /// the waiting period unless cancelled.
    ScheduleDeletion {
        /// The local key's ARN (`arn:aws:kms:local:…`).
        key_arn: String,
        /// Days until the key is deleted (7..=30, as AWS KMS allows).
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[command(flatten)]
        out: LocalArgs,
    },
    /// Cancel a scheduled deletion; the key stays disabled, as in AWS KMS.
    CancelDeletion {
        /// The local key's ARN (`arn:aws:kms:local:…`).
        key_arn: String,
        #[command(flatten)]
        out: LocalArgs,
    },
}

/// Where the keyring is, and how to report.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Print JSON (`key_arn`, `state`) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backend: BackendArgs,
}

impl LocalArgs {
    fn ring(&self) -> Result<LocalKeyring> {
        Ok(LocalKeyring::open(
            &self.backend.data_dir,
            &self.backend.region,
        )?)
    }

    /// `key_arn` is now in `state` (AWS KMS's spelling); `text` is what a
    /// person reads.
    fn report(&self, key_arn: &str, state: &str, text: &str) {
        if self.json {
            println!(
                "{}",
                serde_json::json!({ "key_arn": key_arn, "state": state })
            );
        } else {
            println!("{text}");
        }
    }
}

pub fn run(cmd: LocalKeyCmd) -> Result<()> {
    match cmd {
        LocalKeyCmd::Create { spec, out } => {
            let ring = out.ring()?;
            let arn = match spec.as_deref() {
                None | Some("SYMMETRIC_DEFAULT") => ring.create_key()?,
                Some(s) => ring.create_rsa_key(s)?,
            };
            out.report(arn.as_str(), "Enabled", arn.as_str());
        }
        LocalKeyCmd::Disable { key_arn, out } => {
            out.ring()?.set_enabled(&key_arn, false)?;
            out.report(&key_arn, "Disabled", &format!("{key_arn} disabled"));
        }
        LocalKeyCmd::Enable { key_arn, out } => {
            out.ring()?.set_enabled(&key_arn, true)?;
            out.report(&key_arn, "Enabled", &format!("{key_arn} enabled"));
        }
        LocalKeyCmd::ScheduleDeletion { key_arn, days, out } => {
            out.ring()?.schedule_deletion(&key_arn, days)?;
            out.report(
                &key_arn,
                "PendingDeletion",
                &format!("{key_arn} is pending deletion in {days} days"),
            );
        }
        LocalKeyCmd::CancelDeletion { key_arn, out } => {
            out.ring()?.cancel_deletion(&key_arn)?;
            out.report(
                &key_arn,
                "Disabled",
                &format!("{key_arn}: deletion cancelled; the key stays disabled"),
            );
        }
    }
    Ok(())
}
