//! `callvault keys local`: operate the built-in local keyring directly on
//! the data dir, the embedded default's stand-in for the AWS KMS console.

use anyhow::Result;
use callvault::kms::local::LocalKeyring;
use clap::Subcommand;

use super::BackendArgs;

#[derive(Debug, Subcommand)]
pub enum LocalKeyCmd {
    /// Create a key; prints its ARN.
    Create {
        /// RSA_2048 or RSA_3072 for write-only ingest; default symmetric.
        #[arg(long)]
        spec: Option<String>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    Disable {
        key_arn: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    Enable {
        key_arn: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    ScheduleDeletion {
        key_arn: String,
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[command(flatten)]
        backend: BackendArgs,
    },
    CancelDeletion {
        key_arn: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

fn ring(b: &BackendArgs) -> Result<LocalKeyring> {
    Ok(LocalKeyring::open(&b.data_dir, &b.region)?)
}

pub fn run(cmd: LocalKeyCmd) -> Result<()> {
    match cmd {
        LocalKeyCmd::Create { spec, backend } => {
            let ring = ring(&backend)?;
            let arn = match spec.as_deref() {
                None | Some("SYMMETRIC_DEFAULT") => ring.create_key()?,
                Some(s) => ring.create_rsa_key(s)?,
            };
            println!("{arn}");
        }
        LocalKeyCmd::Disable { key_arn, backend } => {
            ring(&backend)?.set_enabled(&key_arn, false)?
        }
        LocalKeyCmd::Enable { key_arn, backend } => ring(&backend)?.set_enabled(&key_arn, true)?,
        LocalKeyCmd::ScheduleDeletion {
            key_arn,
            days,
            backend,
        } => ring(&backend)?.schedule_deletion(&key_arn, days)?,
        LocalKeyCmd::CancelDeletion { key_arn, backend } => {
            ring(&backend)?.cancel_deletion(&key_arn)?
        }
    }
    Ok(())
}
