//! The peers of the round trip, on the same file in the same run: Google
//! Tink's streaming AEAD (through `benches/peers/tink_roundtrip.py`) and the
//! reference `age` CLI, each encrypting the file to a file and decrypting it
//! back. A peer that is not installed is skipped with a note; one that
//! decrypts something else than the input fails the bench.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::inputs::{AudioFile, on_path, sha256_file};
use crate::stats::mb_per_s;

const TINK_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/peers/tink_roundtrip.py"
);

/// One round of a peer: the encryption and the decryption pass.
#[derive(Debug, Clone, Copy)]
pub struct PeerRound {
    pub encrypt: Duration,
    pub decrypt: Duration,
}

impl PeerRound {
    pub fn round_trip(&self) -> Duration {
        self.encrypt + self.decrypt
    }
}

/// A peer's best round (by round trip), after printing every round.
#[derive(Debug, Clone)]
pub struct PeerResult {
    pub name: &'static str,
    pub best: PeerRound,
}

fn report(name: &'static str, what: &str, input: &AudioFile, rounds: &[PeerRound]) -> PeerResult {
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "peer {name} round {}: encrypt {:.2} s ({:.0} MB/s), decrypt {:.2} s ({:.0} MB/s), round trip {:.2} s",
            i + 1,
            r.encrypt.as_secs_f64(),
            mb_per_s(input.bytes, r.encrypt),
            r.decrypt.as_secs_f64(),
            mb_per_s(input.bytes, r.decrypt),
            r.round_trip().as_secs_f64(),
        );
    }
    let best = *rounds
        .iter()
        .min_by_key(|r| r.round_trip())
        .expect("at least one round");
    println!(
        "peer {name} ({what}) best of {}: encrypt {:.0} MB/s, decrypt {:.0} MB/s, round trip {:.2} s",
        rounds.len(),
        mb_per_s(input.bytes, best.encrypt),
        mb_per_s(input.bytes, best.decrypt),
        best.round_trip().as_secs_f64(),
    );
    PeerResult { name, best }
}

/// Tink's streaming AEAD, AES256_GCM_HKDF_1MB, file to file, in Python
/// (`CALLVAULT_BENCH_TINK_PYTHON`, default `python3`).
pub async fn tink(
    input: &AudioFile,
    work: &Path,
    rounds: usize,
) -> anyhow::Result<Option<PeerResult>> {
    let python = std::env::var("CALLVAULT_BENCH_TINK_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = match tokio::process::Command::new(&python)
        .arg(TINK_SCRIPT)
        .arg(&input.path)
        .arg(work)
        .arg(rounds.to_string())
        .stdin(Stdio::null())
        .output()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            println!(
                "peer Tink: skipped ({python}: {e}; set CALLVAULT_BENCH_TINK_PYTHON to a Python with `tink`)"
            );
            return Ok(None);
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(2) {
        println!(
            "peer Tink: skipped ({}; set CALLVAULT_BENCH_TINK_PYTHON to a Python with `tink`)",
            stderr.trim()
        );
        return Ok(None);
    }
    ensure!(
        out.status.success(),
        "the Tink peer failed ({}): {stderr}",
        out.status
    );
    let mut versions = String::new();
    let mut results = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("Tink peer printed `{line}`"))?;
        if let Some(tink) = v["tink"].as_str() {
            versions = format!(
                "tink-py {tink}, Python {}",
                v["python"].as_str().unwrap_or("?")
            );
            continue;
        }
        let secs = |k: &str| v[k].as_f64().with_context(|| format!("no {k} in `{line}`"));
        ensure!(
            v["bytes"].as_u64() == Some(input.bytes),
            "the Tink peer read {} bytes, not {}",
            v["bytes"],
            input.bytes
        );
        results.push(PeerRound {
            encrypt: Duration::from_secs_f64(secs("encrypt_s")?),
            decrypt: Duration::from_secs_f64(secs("decrypt_s")?),
        });
    }
    ensure!(
        results.len() == rounds,
        "the Tink peer ran {} rounds, not {rounds}",
        results.len()
    );
    let what = format!("streaming AEAD AES256_GCM_HKDF_1MB, {versions}, file to file");
    Ok(Some(report("Tink", &what, input, &results)))
}

/// The reference `age` CLI: X25519 recipient, file to file.
pub async fn age(
    input: &AudioFile,
    work: &Path,
    rounds: usize,
) -> anyhow::Result<Option<PeerResult>> {
    if !on_path("age") || !on_path("age-keygen") {
        println!(
            "peer age: skipped (`age` and `age-keygen` are not on PATH; Debian package `age`)"
        );
        return Ok(None);
    }
    let key = work.join("age.key");
    run("age-keygen", &["-o".as_ref(), key.as_os_str()]).await?;
    let recipient = std::fs::read_to_string(&key)?
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .map(str::to_owned)
        .context("age-keygen wrote no public key line")?;
    let version = tokio::process::Command::new("age")
        .arg("--version")
        .output()
        .await?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let sealed = work.join("age.sealed");
    let opened = work.join("age.opened");
    let mut results = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        run(
            "age",
            &[
                "-r".as_ref(),
                recipient.as_ref(),
                "-o".as_ref(),
                sealed.as_os_str(),
                input.path.as_os_str(),
            ],
        )
        .await?;
        let encrypt = t.elapsed();
        let t = Instant::now();
        run(
            "age",
            &[
                "-d".as_ref(),
                "-i".as_ref(),
                key.as_os_str(),
                "-o".as_ref(),
                opened.as_os_str(),
                sealed.as_os_str(),
            ],
        )
        .await?;
        let decrypt = t.elapsed();
        if sha256_file(&opened).await? != input.sha256 {
            bail!("age decrypted something else than the input");
        }
        std::fs::remove_file(&sealed)?;
        std::fs::remove_file(&opened)?;
        results.push(PeerRound { encrypt, decrypt });
    }
    let what = format!("age {version}, X25519 recipient, CLI, file to file");
    Ok(Some(report("age", &what, input, &results)))
}

async fn run(program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
