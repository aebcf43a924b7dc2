//! Backups of the embedded default through the real binary (issue 11, item
//! 6): `backup create` while a server serves and ingests, `verify`,
//! `restore` into a new data dir that a new server plays from, the damage
//! `verify` finds, and `prune` by the retention setting from the flag, the
//! environment and the config file.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use callvault::client::{Client, pieces};
use futures::StreamExt;
use sqlx::{ConnectOptions, Row};

use crate::crash::{Server, bootstrap};
use crate::helpers::header;

const BIN: &str = env!("CARGO_BIN_EXE_callvault");

/// Runs the binary without blocking the runtime the servers' clients need.
async fn callvault(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("CALLVAULT_BACKUP_RETENTION_DAYS")
        .env_remove("CALLVAULT_CONFIG")
        .env("CALLVAULT_LOG", "warn")
        .envs(envs.iter().copied())
        .output()
        .await
        .unwrap()
}

/// [`callvault`] that must succeed, its stdout as JSON.
async fn callvault_json(args: &[&str]) -> serde_json::Value {
    let out = callvault(args, &[]).await;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

/// A WAV of `n`'s own tone, made by sox at its default settings when it is
/// installed (as users make recordings), else by `synth_wav`. Each `n`
/// gives different audio, about 190 KB: three 64 KiB chunks.
fn audio(n: u32) -> Bytes {
    let sox = std::process::Command::new("sox")
        .args(["-n", "-r", "16000", "-b", "16", "-c", "1", "-t", "wav", "-"])
        .args(["synth", "6", "sine", &(300 + 20 * n).to_string()])
        .output();
    match sox {
        Ok(out) if out.status.success() => Bytes::from(out.stdout),
        _ => {
            let mut wav = callvault::synth::synth_wav(6, 16000, 1);
            let at = wav.len() - 2;
            wav[at..].copy_from_slice(&(n as u16).to_le_bytes());
            Bytes::from(wav)
        }
    }
}

async fn ingest(client: &mut Client, call_id: &str, audio: Bytes) -> (String, String) {
    let mut h = header(call_id);
    h.chunk_size_bytes = 64 * 1024;
    let sha = sha256_hex(&audio);
    let r = client
        .ingest_stream(h, pieces(audio, 16 * 1024))
        .await
        .unwrap()
        .recording
        .unwrap();
    assert_eq!(r.sha256, sha);
    (r.recording_id, sha)
}

/// (recording id, SHA-256) of every committed recording of a catalog file,
/// read with a connection that cannot change it.
async fn committed_recordings(catalog: &Path) -> BTreeMap<String, String> {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(catalog)
        .read_only(true)
        .immutable(true)
        .connect()
        .await
        .unwrap();
    sqlx::query("SELECT recording_id, sha256 FROM recordings WHERE status = 'complete'")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("recording_id"), r.get("sha256")))
        .collect()
}

/// Uploads in flight that already have chunk rows, in the live catalog.
/// Uploads in flight (catalog rows still `uploading`) with at least one
/// chunk written to the store under `objects`. (Their chunk rows come in
/// batches or with the commit, so the objects say it, not the rows.)
async fn uploads_with_chunks(catalog: &Path, objects: &Path) -> usize {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(catalog)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let uploading: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant_id, recording_id FROM recordings WHERE status = 'uploading'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    uploading
        .iter()
        .filter(|(tenant, rec)| {
            std::fs::read_dir(objects.join(format!("t/{tenant}/r/{rec}")))
                .is_ok_and(|mut d| d.next().is_some())
        })
        .count()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` is 0600 and every directory 0700.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            assert_private(&p);
        } else {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

/// The whole path: a backup taken while recordings are being ingested (one
/// upload held open in flight across it), verified, restored into a new
/// data dir, and a server there plays every recording the backup's catalog
/// holds with the SHA-256 it was ingested with.
#[tokio::test]
async fn a_backup_taken_while_ingesting_restores_every_recording_it_holds() {
    let root = tempfile::tempdir().unwrap();
    let (data, backup, restored) = (
        root.path().join("data"),
        root.path().join("backups/first"),
        root.path().join("restored"),
    );
    let (ingest_token, sup_token) = bootstrap(&data);
    let server = Server::start(&data).await;
    let mut client = Client::connect(&server.addr, &ingest_token).await.unwrap();

    // What was ingested, by recording id: its SHA-256.
    let mut ingested = BTreeMap::new();
    for n in 0..4 {
        let (id, sha) = ingest(&mut client, &format!("before-{n}"), audio(n)).await;
        ingested.insert(id, sha);
    }

    // An upload that sends two chunks, then waits until the backup is done.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let held_audio = audio(99);
    let held_sha = sha256_hex(&held_audio);
    let (head, tail) = (
        held_audio.slice(..128 * 1024),
        held_audio.slice(128 * 1024..),
    );
    let body = pieces(head, 16 * 1024)
        .chain(futures::stream::once(async move {
            let _ = released.await;
            Bytes::new()
        }))
        .chain(pieces(tail, 16 * 1024));
    let mut held_client = client.clone();
    let held = tokio::spawn(async move {
        let mut h = header("held-open");
        h.chunk_size_bytes = 64 * 1024;
        held_client
            .ingest_stream(h, body)
            .await
            .unwrap()
            .recording
            .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while uploads_with_chunks(&data.join("catalog.db"), &data.join("objects")).await == 0 {
        assert!(Instant::now() < deadline, "the held upload wrote no chunk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Ingests running back to back for as long as the backup takes.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicUsize::new(0));
    let background = {
        let (stop, committed, mut client) = (stop.clone(), committed.clone(), client.clone());
        tokio::spawn(async move {
            let mut done = BTreeMap::new();
            let mut n = 100;
            while !stop.load(Ordering::Relaxed) {
                // sox on the blocking pool: this runtime has one thread.
                let wav = tokio::task::spawn_blocking(move || audio(n)).await.unwrap();
                let (id, sha) = ingest(&mut client, &format!("during-{n}"), wav).await;
                done.insert(id, sha);
                committed.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            done
        })
    };
    while committed.load(Ordering::Relaxed) < 2 {
        assert!(
            Instant::now() < deadline,
            "the background ingests do not commit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let created = callvault_json(&[
        "backup",
        "create",
        "-o",
        s(&backup),
        "--data-dir",
        s(&data),
        "--json",
    ])
    .await;
    stop.store(true, Ordering::Relaxed);
    let during = background.await.unwrap();
    let _ = release.send(());
    let held = held.await.unwrap();
    assert_eq!(held.sha256, held_sha);
    assert!(!during.is_empty());
    ingested.extend(during.clone());

    assert_eq!(created["backup"], s(&backup));
    assert_eq!(created["keyring"], true);
    assert_eq!(created["counts"]["tenants"], 1);
    assert!(created["counts"]["uploads_in_flight"].as_u64().unwrap() >= 1);
    assert!(!root.path().join("backups/first.partial").exists());
    assert_private(&backup);

    let backed_up = committed_recordings(&backup.join("catalog.db")).await;
    assert_eq!(
        created["counts"]["recordings"].as_u64().unwrap(),
        backed_up.len() as u64
    );
    // Everything committed before the backup started is in it; the upload
    // held open across it is not (it committed afterwards).
    assert!(backed_up.len() >= 4, "{backed_up:?}");
    for (id, sha) in ingested.iter().take(4) {
        assert_eq!(backed_up.get(id), Some(sha), "{id}");
    }
    assert!(!backed_up.contains_key(&held.recording_id));
    // The ingests running beside it that committed before the backup began
    // are in it.
    assert!(
        during
            .keys()
            .filter(|id| backed_up.contains_key(*id))
            .count()
            >= 2,
        "{during:?}"
    );
    assert_eq!(created["counts"]["in_flight_objects_skipped"], 0);
    // Every recording in the backup is one that was ingested, with its hash.
    for (id, sha) in &backed_up {
        assert_eq!(ingested.get(id), Some(sha), "{id}");
    }

    let verified = callvault_json(&["backup", "verify", s(&backup), "--json"]).await;
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["counts"], created["counts"]);
    let human = callvault(&["backup", "verify", s(&backup)], &[]).await;
    assert!(
        String::from_utf8_lossy(&human.stdout).starts_with("OK: backup "),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );

    let out = callvault_json(&[
        "backup",
        "restore",
        s(&backup),
        "--data-dir",
        s(&restored),
        "--json",
    ])
    .await;
    assert_eq!(out["data_dir"], s(&restored));
    // A restore never goes into a data dir that holds anything.
    let again = callvault(
        &["backup", "restore", s(&backup), "--data-dir", s(&data)],
        &[],
    )
    .await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    server.kill();

    let server = Server::start(&restored).await;
    let mut sup = Client::connect(&server.addr, &sup_token).await.unwrap();
    for (id, sha) in &backed_up {
        let (played, _) = sup.play_all(id, 0).await.unwrap();
        assert_eq!(&sha256_hex(&played), sha, "{id}");
    }
    let listed = sup
        .playback
        .list_recordings(callvault::api::pb::ListRecordingsRequest {
            page_size: 1000,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .recordings;
    assert_eq!(listed.len(), backed_up.len());
    let missing = sup.play_all(&held.recording_id, 0).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.kill();
}

/// A small backup of a served data dir with two recordings; returns the
/// backup's path.
async fn small_backup(root: &Path) -> PathBuf {
    let data = root.join("data");
    let (ingest_token, _) = bootstrap(&data);
    let server = Server::start(&data).await;
    let mut client = Client::connect(&server.addr, &ingest_token).await.unwrap();
    for n in 0..2 {
        ingest(&mut client, &format!("call-{n}"), audio(n)).await;
    }
    let backup = root.join("backup");
    callvault_json(&[
        "backup",
        "create",
        "-o",
        s(&backup),
        "--data-dir",
        s(&data),
        "--json",
    ])
    .await;
    server.kill();
    backup
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .args(["-a", s(from), s(to)])
        .status()
        .unwrap();
    assert!(status.success());
}

fn first_object(backup: &Path) -> PathBuf {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    let path = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .find(|p| p.starts_with("objects/"))
        .unwrap();
    backup.join(path)
}

fn flip_byte(p: &Path, at: usize) {
    let mut b = std::fs::read(p).unwrap();
    b[at] ^= 0x01;
    std::fs::write(p, b).unwrap();
}

/// Each kind of damage makes `verify` exit non-zero naming it, and
/// `restore` refuse before it writes anything.
#[tokio::test]
async fn verify_names_the_first_problem_of_a_damaged_backup() {
    let root = tempfile::tempdir().unwrap();
    let backup = small_backup(root.path()).await;
    let object = first_object(&backup)
        .strip_prefix(&backup)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    type Damage = Box<dyn Fn(&Path)>;
    let object_ = object.clone();
    let cases: Vec<(&str, Damage, String)> = vec![
        (
            "a flipped byte in an object",
            Box::new(|b| flip_byte(&first_object(b), 100)),
            format!("{object} does not match its SHA-256 in the manifest"),
        ),
        (
            "the catalog copy deleted",
            Box::new(|b| std::fs::remove_file(b.join("catalog.db")).unwrap()),
            "catalog.db is listed in the manifest but missing".into(),
        ),
        (
            "an object deleted",
            Box::new(|b| std::fs::remove_file(first_object(b)).unwrap()),
            format!("{object} is listed in the manifest but missing"),
        ),
        (
            "a truncated object",
            Box::new(|b| {
                let p = first_object(b);
                let len = std::fs::metadata(&p).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_len(len - 1)
                    .unwrap();
            }),
            format!("{object} has"),
        ),
        (
            "a file the manifest does not list",
            Box::new(|b| std::fs::write(b.join("catalog.db-wal"), b"x").unwrap()),
            "catalog.db-wal is not in the manifest".into(),
        ),
        (
            "no manifest",
            Box::new(|b| std::fs::remove_file(b.join("manifest.json")).unwrap()),
            "it has no manifest.json".into(),
        ),
        (
            // The manifest rewritten to match a changed object: the
            // catalog's own checksum of the chunk still finds it.
            "an object and its manifest entry both changed",
            Box::new(move |b| {
                let p = b.join(&object_);
                flip_byte(&p, 100);
                let sha = sha256_hex(&std::fs::read(&p).unwrap());
                let mp = b.join("manifest.json");
                let mut m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
                for f in m["files"].as_array_mut().unwrap() {
                    if f["path"] == object_.as_str() {
                        f["sha256"] = sha.clone().into();
                    }
                }
                std::fs::write(&mp, serde_json::to_vec(&m).unwrap()).unwrap();
            }),
            "is not the one its catalog row recorded at ingest".into(),
        ),
    ];
    for (i, (what, damage, expected)) in cases.iter().enumerate() {
        let copy = root.path().join(format!("damaged-{i}"));
        copy_tree(&backup, &copy);
        damage(&copy);
        let out = callvault(&["backup", "verify", s(&copy)], &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: verify passed");
        assert!(
            stderr.contains("is damaged") && stderr.contains(expected.as_str()),
            "{what}: {stderr}"
        );
        let dest = root.path().join(format!("restored-{i}"));
        let out = callvault(
            &["backup", "restore", s(&copy), "--data-dir", s(&dest)],
            &[],
        )
        .await;
        assert!(!out.status.success(), "{what}: restore passed");
        assert!(!dest.exists(), "{what}: restore wrote something");
    }
    // The undamaged original still verifies.
    let ok = callvault(&["backup", "verify", s(&backup)], &[]).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A second backup under the same name is refused.
    let again = callvault(
        &[
            "backup",
            "create",
            "-o",
            s(&backup),
            "--data-dir",
            s(&root.path().join("data")),
        ],
        &[],
    )
    .await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// Rewrites a backup's creation time to `days` ago. `created_at` is not
/// covered by any checksum (manifest.rs says why), so it still verifies.
fn age_backup(backup: &Path, days: i64) {
    let p = backup.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let then = time::OffsetDateTime::now_utc() - time::Duration::days(days);
    m["created_at"] = then
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .into();
    std::fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            Path::new(b["backup"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// `prune` removes the backups older than `backup-retention-days`, from the
/// flag, `CALLVAULT_BACKUP_RETENTION_DAYS` or the config file (default 35),
/// and nothing else under the root.
#[tokio::test]
async fn prune_removes_backups_older_than_the_backup_retention() {
    let root = tempfile::tempdir().unwrap();
    let (data, backups) = (root.path().join("data"), root.path().join("backups"));
    bootstrap(&data);
    for name in ["old", "older", "recent"] {
        callvault_json(&[
            "backup",
            "create",
            "-o",
            s(&backups.join(name)),
            "--data-dir",
            s(&data),
            "--json",
        ])
        .await;
    }
    age_backup(&backups.join("old"), 40);
    age_backup(&backups.join("older"), 60);
    age_backup(&backups.join("recent"), 2);
    let ok = callvault(&["backup", "verify", s(&backups.join("old"))], &[]).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::create_dir(backups.join("not-a-backup")).unwrap();
    std::fs::create_dir(backups.join("tonight.partial")).unwrap();

    let prune = ["backup", "prune", "--backups-dir", s(&backups), "--json"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        prune.iter().copied().chain(extra.iter().copied()).collect()
    };
    // The default, 35 days, in a dry run: nothing goes.
    let dry = callvault_json(&with(&["--dry-run"])).await;
    assert_eq!(dry["backup_retention_days"], 35);
    assert_eq!(names(&dry["removed"]), ["older", "old"]);
    assert_eq!(names(&dry["kept"]), ["recent"]);
    assert!(backups.join("old").exists() && backups.join("older").exists());

    // From the config file: 50 days keep `old`; the environment beats the
    // file, the flag beats both.
    let config = root.path().join("callvault.toml");
    std::fs::write(&config, "backup-retention-days = 50\n").unwrap();
    let out = callvault(&with(&["--dry-run"]), &[("CALLVAULT_CONFIG", s(&config))]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backup_retention_days"], 50);
    assert_eq!(names(&v["removed"]), ["older"]);
    let mut cmd = with(&["--dry-run", "--config"]);
    cmd.push(s(&config));
    let out = callvault(&cmd, &[("CALLVAULT_BACKUP_RETENTION_DAYS", "1")]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backup_retention_days"], 1);
    assert_eq!(names(&v["removed"]), ["older", "old", "recent"]);
    cmd.extend(["--backup-retention-days", "45"]);
    let out = callvault(&cmd, &[("CALLVAULT_BACKUP_RETENTION_DAYS", "1")]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backup_retention_days"], 45);
    assert_eq!(names(&v["removed"]), ["older"]);

    // For real, with the default.
    let out = callvault(&prune[..4], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains(&format!("removed {}", backups.join("older").display()))
            && text.contains("2 backups removed, 1 kept (retention 35 days)"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tonight.partial"));
    let mut left: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["not-a-backup", "recent", "tonight.partial"]);

    let zero = callvault(&with(&["--backup-retention-days", "0"]), &[]).await;
    assert!(!zero.status.success());
}

/// `create` refuses to back up a store that lost or damaged an object of a
/// committed recording (after trying fresh snapshots for a lost one), names
/// the object, and leaves neither the backup nor its `.partial` behind.
#[tokio::test]
async fn backup_create_refuses_a_store_that_lost_or_damaged_an_object() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let (ingest_token, _) = bootstrap(&data);
    let server = Server::start(&data).await;
    let mut client = Client::connect(&server.addr, &ingest_token).await.unwrap();
    let (id, _) = ingest(&mut client, "call-0", audio(0)).await;
    server.kill();
    let objects: Vec<PathBuf> = std::fs::read_dir(data.join("objects/t"))
        .unwrap()
        .map(|t| t.unwrap().path().join("r").join(&id))
        .flat_map(|r| std::fs::read_dir(r).unwrap())
        .map(|o| o.unwrap().path())
        // The chunks: not the waveform peaks the node may have computed
        // since the commit (a sidecar the catalog does not checksum).
        .filter(|p| p.file_name().is_some_and(|n| n != "peaks"))
        .collect();
    assert!(objects.len() >= 3, "{objects:?}");
    let key = |p: &Path| {
        p.strip_prefix(data.join("objects"))
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };

    flip_byte(&objects[1], 10);
    let out = callvault(
        &[
            "backup",
            "create",
            "-o",
            s(&root.path().join("b1")),
            "--data-dir",
            s(&data),
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "object {} of recording {id} does not match the size and checksum recorded at ingest",
            key(&objects[1])
        )),
        "{stderr}"
    );
    flip_byte(&objects[1], 10);

    // A chunk written before CRC-64/NVME carries its SHA-256, and is
    // checked as such: its own digest passes create and verify, another
    // does not.
    let legacy = |checksum: String| {
        let catalog = data.join("catalog.db");
        let object_key = key(&objects[0]);
        async move {
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&catalog)
                .connect()
                .await
                .unwrap();
            let changed =
                sqlx::query("UPDATE chunks SET sealed_checksum = $1 WHERE object_key = $2")
                    .bind(checksum)
                    .bind(object_key)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected();
            assert_eq!(changed, 1);
        }
    };
    legacy(sha256_hex(&std::fs::read(&objects[0]).unwrap())).await;
    let b0 = root.path().join("b0");
    callvault_json(&[
        "backup",
        "create",
        "-o",
        s(&b0),
        "--data-dir",
        s(&data),
        "--json",
    ])
    .await;
    callvault_json(&["backup", "verify", s(&b0), "--json"]).await;
    legacy(sha256_hex(b"another object")).await;
    let out = callvault(
        &[
            "backup",
            "create",
            "-o",
            s(&root.path().join("b0-bad")),
            "--data-dir",
            s(&data),
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&format!(
                "object {} of recording {id} does not match the size and checksum",
                key(&objects[0])
            )),
        "{stderr}"
    );
    legacy(sha256_hex(&std::fs::read(&objects[0]).unwrap())).await;

    std::fs::remove_file(&objects[2]).unwrap();
    let out = callvault(
        &[
            "backup",
            "create",
            "-o",
            s(&root.path().join("b2")),
            "--data-dir",
            s(&data),
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "object {} of recording {id} is missing from the store",
            key(&objects[2])
        )) && stderr.contains("3 snapshots tried"),
        "{stderr}"
    );
    for name in ["b1", "b1.partial", "b2", "b2.partial"] {
        assert!(!root.path().join(name).exists(), "{name}");
    }
}
