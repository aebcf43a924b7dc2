//! Export bundles (issue 10, items 6–8): round trips through the real binary
//! on both catalogs, the bag validated by the Library of Congress `bagit.py`,
//! the audio probed by `ffprobe`, the proofs checked by `audit verify-proof`,
//! age encryption decrypted by the reference `age` CLI, and the tamper table
//! of `export verify`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use callvault::export::bag;

use crate::export::{EXPORTED, by_ids, export_cli, export_rpc, ingest_fixtures, tar_files};
use crate::helpers::*;

/// A tool the interoperability tests drive: `env` names its path, else it
/// is looked up on PATH. Missing under CI is a failure, not a skip.
fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed (scripts/test.sh installs it; or set {env})"
        );
        eprintln!("skipped: {name} is not installed (scripts/test.sh installs it; or set {env})");
    }
    found
}

async fn run(program: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The deployment's verifier key, pinned in a file as an auditor keeps it.
fn pinned_key(app: &TestApp) -> PathBuf {
    let path = app.dir.path().join("verifier.key");
    std::fs::write(&path, app.archive.audit_key.verifier().to_string()).unwrap();
    path
}

async fn verify_cli(file: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["export", "verify", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    cli_against("http://127.0.0.1:1", "unused", &args).await
}

fn write_tar(root: &str, files: &[(String, Vec<u8>)], to: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(to).unwrap());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("{root}/{path}"), data.as_slice())
            .unwrap();
    }
    b.finish().unwrap();
}

/// Export round trip through the binary: the bundle verifies offline with
/// the pinned key, holds the original bytes, validates with bagit.py, and
/// its audio probes with ffprobe as the codec that was ingested.
async fn round_trip(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let recs = ingest_fixtures(&app).await;
    let out_path = app.dir.path().join("bundle.tar");
    let mut args = vec!["--reason", "case 2026-117: regulator request", "--json"];
    for (id, _) in &recs {
        args.extend(["--recording", id.as_str()]);
    }
    args.extend(["-o", out_path.to_str().unwrap()]);
    let out = ok(&export_cli(&app, &args).await, "export");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let export_id = summary["export_id"].as_str().unwrap().to_owned();
    assert_eq!(summary["recording_ids"].as_array().unwrap().len(), 3);

    // Offline verification with the key the auditor pinned.
    let key = pinned_key(&app);
    let verified = ok(
        &verify_cli(&out_path, &["--public-key", key.to_str().unwrap()]).await,
        "export verify",
    );
    assert!(
        verified.starts_with(&format!("OK: export {export_id}: 3 recordings")),
        "{verified}"
    );

    // The original bytes, as ingested, and their metadata.
    let bundle = std::fs::read(&out_path).unwrap();
    let (root, files) = tar_files(&bundle);
    assert_eq!(root, bag::root_dir(&export_id));
    let files: HashMap<String, Vec<u8>> = files.into_iter().collect();
    for ((id, audio), (file, call, _, agent)) in recs.iter().zip(EXPORTED) {
        let meta: bag::RecordingMetadata =
            serde_json::from_slice(&files[&bag::metadata_path(id)]).unwrap();
        assert_eq!(&files[&meta.file][..], &audio[..], "{file}");
        assert_eq!(meta.external_call_id, *call);
        assert_eq!(meta.labels["agent"], *agent);
        assert_eq!(meta.sha256, callvault::crypto::sha256_hex(audio));
        assert_eq!(meta.size_bytes, audio.len() as u64);
        assert!(meta.kms_key_arn.starts_with("arn:"), "{}", meta.kms_key_arn);
        assert_eq!(meta.kms_region, "local");
        assert_eq!(meta.chunk_count, audio.len().div_ceil(64 * 1024) as u32);
        assert!(meta.start_time.is_some());
    }
    let info = String::from_utf8(files[bag::BAG_INFO_PATH].clone()).unwrap();
    for want in [
        "Source-Organization: acme\n".to_owned(),
        format!("External-Identifier: {export_id}\n"),
        "External-Description: case 2026-117: regulator request\n".to_owned(),
        "Bagging-Date: ".to_owned(),
        "Payload-Oxum: ".to_owned(),
    ] {
        assert!(info.contains(&want), "bag-info.txt lacks {want:?}:\n{info}");
    }
    // Every audit event of the three recordings is in the bag, with the
    // export's own, and each proof verifies with the existing verifier.
    let events: Vec<&String> = files
        .keys()
        .filter(|p| p.starts_with(bag::EVENTS_DIR))
        .collect();
    assert!(events.len() >= 4, "{events:?}");
    let dir = app.dir.path().join("extracted");
    std::fs::create_dir_all(&dir).unwrap();
    ok(
        &run(
            Path::new("tar"),
            &[
                "-xf",
                out_path.to_str().unwrap(),
                "-C",
                dir.to_str().unwrap(),
            ],
        )
        .await,
        "tar -x",
    );
    let bag_dir = dir.join(&root);
    for p in &events {
        let proof = bag_dir.join(p);
        let out = cli_against(
            "http://127.0.0.1:1",
            "unused",
            &[
                "audit",
                "verify-proof",
                proof.to_str().unwrap(),
                "--public-key",
                key.to_str().unwrap(),
            ],
        )
        .await;
        assert!(ok(&out, "audit verify-proof").starts_with("OK: event "));
    }

    // Tools we did not write.
    if let Some(bagit) = tool("bagit.py", "CALLVAULT_TEST_BAGIT") {
        let out = run(&bagit, &["--validate", bag_dir.to_str().unwrap()]).await;
        assert!(
            out.status.success(),
            "bagit.py --validate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(ffprobe) = tool("ffprobe", "CALLVAULT_TEST_FFPROBE") {
        for ((id, _), (file, _, codec, _)) in recs.iter().zip(EXPORTED) {
            let meta: bag::RecordingMetadata =
                serde_json::from_slice(&files[&bag::metadata_path(id)]).unwrap();
            let audio = bag_dir.join(&meta.file);
            let out = run(
                &ffprobe,
                &[
                    "-v",
                    "error",
                    "-select_streams",
                    "a:0",
                    "-show_entries",
                    "stream=codec_name",
                    "-of",
                    "csv=p=0",
                    audio.to_str().unwrap(),
                ],
            )
            .await;
            assert_eq!(ok(&out, "ffprobe").trim(), *codec, "{file}");
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn export_round_trip_sqlite() {
    round_trip(CatalogKind::Sqlite).await;
}

#[tokio::test]
async fn export_round_trip_postgres() {
    require!(Postgres);
    round_trip(CatalogKind::Postgres).await;
}

/// An age-encrypted bundle: the server encrypts, the file holds no
/// plaintext, the reference `age` CLI decrypts it to a bundle that
/// verifies, `export verify --identity` decrypts and verifies it directly,
/// and another identity is refused by name.
#[tokio::test]
async fn an_age_encrypted_bundle_decrypts_with_the_age_cli() {
    let Some(age) = tool("age", "CALLVAULT_TEST_AGE") else {
        return;
    };
    let keygen = tool("age-keygen", "CALLVAULT_TEST_AGE_KEYGEN").unwrap();
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    let dir = app.dir.path();
    let identity = dir.join("recipient.key");
    let other = dir.join("other.key");
    for k in [&identity, &other] {
        ok(
            &run(&keygen, &["-o", k.to_str().unwrap()]).await,
            "age-keygen",
        );
    }
    let recipient = ok(
        &run(&keygen, &["-y", identity.to_str().unwrap()]).await,
        "age-keygen -y",
    );
    let sealed = dir.join("bundle.tar.age");
    let mut args = vec![
        "--reason",
        "regulator",
        "--age-recipient",
        recipient.trim(),
        "-o",
        sealed.to_str().unwrap(),
    ];
    for (id, _) in &recs {
        args.extend(["--recording", id.as_str()]);
    }
    ok(&export_cli(&app, &args).await, "export --age-recipient");
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    for (_, audio) in &recs {
        assert!(
            !contains_window(&bytes, audio),
            "plaintext audio in the age file"
        );
    }
    assert!(!bytes.windows(9).any(|w| w == b"bagit.txt"));

    let key = pinned_key(&app);
    let plain = dir.join("decrypted.tar");
    ok(
        &run(
            &age,
            &[
                "-d",
                "-i",
                identity.to_str().unwrap(),
                "-o",
                plain.to_str().unwrap(),
                sealed.to_str().unwrap(),
            ],
        )
        .await,
        "age -d",
    );
    let out = verify_cli(&plain, &["--public-key", key.to_str().unwrap()]).await;
    assert!(ok(&out, "verify decrypted").starts_with("OK: "));
    let out = verify_cli(
        &sealed,
        &[
            "--identity",
            identity.to_str().unwrap(),
            "--public-key",
            key.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(ok(&out, "verify sealed").trim()).unwrap();
    assert_eq!(report["age_encrypted"], true);
    assert_eq!(report["recordings"], 3);
    let out = verify_cli(&sealed, &["--identity", other.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot decrypt the bundle with this identity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify_cli(&sealed, &[]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("--identity"));
    app.shutdown().await;
}

/// `export verify` names the first problem of a tampered bundle and exits
/// non-zero; the untampered bundle verifies.
#[tokio::test]
async fn export_verify_names_each_tampering() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let recs = ingest_fixtures(&app).await;
    let (header, bytes) = export_rpc(
        &app,
        &app.compliance_token,
        by_ids(&[&recs[0].0, &recs[1].0]),
    )
    .await
    .unwrap();
    let (root, files) = tar_files(&bytes);
    let key = pinned_key(&app);
    let other_key = app.dir.path().join("other.key");
    let stranger = callvault::audit::note::SignerKey::generate("callvault-test").unwrap();
    std::fs::write(&other_key, stranger.verifier().to_string()).unwrap();
    let audio = bag::audio_path(&recs[0].0, "wav");
    let meta = bag::metadata_path(&recs[1].0);

    type Edit = Box<dyn Fn(&mut Vec<(String, Vec<u8>)>)>;
    let edit = |path: String, f: fn(&mut Vec<u8>)| -> Edit {
        Box::new(move |files: &mut Vec<(String, Vec<u8>)>| {
            let (_, data) = files.iter_mut().find(|(p, _)| *p == path).unwrap();
            f(data);
        })
    };
    let cases: Vec<(&str, Edit, &Path, String)> = vec![
        (
            "edited audio byte",
            edit(audio.clone(), |d| {
                let mid = d.len() / 2;
                d[mid] ^= 1;
            }),
            &key,
            format!("`{audio}` does not match manifest-sha256.txt"),
        ),
        (
            "edited manifest",
            edit(bag::MANIFEST_PATH.into(), |d| {
                d[0] = if d[0] == b'0' { b'1' } else { b'0' };
            }),
            &key,
            "`manifest-sha256.txt` does not match tagmanifest-sha256.txt".into(),
        ),
        (
            "edited manifest and tag manifest",
            Box::new(|files: &mut Vec<(String, Vec<u8>)>| {
                let sha = |d: &[u8]| callvault::crypto::sha256_hex(d);
                let (_, m) = files
                    .iter_mut()
                    .find(|(p, _)| p == bag::MANIFEST_PATH)
                    .unwrap();
                m.push(b'\n');
                let new_sha = sha(m);
                let (_, t) = files
                    .iter_mut()
                    .find(|(p, _)| p == bag::TAG_MANIFEST_PATH)
                    .unwrap();
                let text = String::from_utf8(t.clone()).unwrap();
                let fixed: String = text
                    .lines()
                    .map(|l| {
                        if l.ends_with(bag::MANIFEST_PATH) {
                            format!("{new_sha}  {}\n", bag::MANIFEST_PATH)
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect();
                *t = fixed.into_bytes();
            }),
            &key,
            "the signature is for another tag manifest".into(),
        ),
        (
            "removed file",
            Box::new({
                let meta = meta.clone();
                move |files: &mut Vec<(String, Vec<u8>)>| files.retain(|(p, _)| *p != meta)
            }),
            &key,
            format!("`{meta}` is listed in manifest-sha256.txt but missing"),
        ),
        (
            "extra file",
            Box::new(|files: &mut Vec<(String, Vec<u8>)>| {
                files.push(("data/recordings/extra.txt".into(), b"hello".to_vec()))
            }),
            &key,
            "`data/recordings/extra.txt` is in the payload but not in manifest-sha256.txt".into(),
        ),
        (
            "bad signature",
            edit(bag::SIGNATURE_PATH.into(), |d| {
                // A character of the base64 signature, not of the text.
                let at = d.len() - 10;
                d[at] = if d[at] == b'A' { b'B' } else { b'A' };
            }),
            &key,
            "the signature over tagmanifest-sha256.txt does not verify".into(),
        ),
        (
            "another deployment's key",
            Box::new(|_: &mut Vec<(String, Vec<u8>)>| {}),
            &other_key,
            "the signature over tagmanifest-sha256.txt does not verify".into(),
        ),
    ];
    let untouched = app.dir.path().join("untouched.tar");
    write_tar(&root, &files, &untouched);
    let out = verify_cli(&untouched, &["--public-key", key.to_str().unwrap()]).await;
    assert!(ok(&out, "untouched").contains(&header.export_id));
    for (name, change, key, want) in cases {
        let mut changed = files.clone();
        change(&mut changed);
        let path = app.dir.path().join("tampered.tar");
        write_tar(&root, &changed, &path);
        let out = verify_cli(&path, &["--public-key", key.to_str().unwrap()]).await;
        assert!(!out.status.success(), "{name}: verified");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&want),
            "{name}: {stderr} does not say {want:?}"
        );
    }
    app.shutdown().await;
}
