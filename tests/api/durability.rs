//! Durability of the embedded default, read from the real binary's system
//! calls: what it acknowledges (an ingest, a keyring change) was fsynced,
//! file and directory, before the acknowledgement left the process; swept
//! objects are gone durably before their row; and keyring writers in
//! separate processes lose none of each other's keys.
//!
//! The acknowledgement is located in the trace itself: the first write of
//! the server (or CLI) that carries the new recording id (or key ARN) to its
//! socket (or stdout) is the response on its way out. Every fsync the test
//! requires must complete before that line. A file's data must be fsynced
//! before its rename (else the new name can reach the disk ahead of the
//! data), its directory after the rename, and each directory created after
//! its creation, with its parent.

mod strace;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callvault::client::Client;
use futures::StreamExt;

use crate::helpers::header;
use strace::{
    Call, TRACED, first_write_of, fsync_between, have_strace, mkdirs, parse_trace, renames,
};

const BIN: &str = env!("CARGO_BIN_EXE_callvault");

/// `callvault ARGS --data-dir DIR`, run under `strace` when `trace` is given.
fn callvault(data_dir: &Path, args: &[&str], trace: Option<&Path>) -> Command {
    let mut cmd = match trace {
        Some(out) => {
            let mut c = Command::new("strace");
            c.args([
                "-f",
                "--seccomp-bpf",
                "-y",
                "-s",
                "1024",
                "-e",
                TRACED,
                "-o",
            ])
            .arg(out)
            .arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    cmd.args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("CALLVAULT_LOG", "warn");
    cmd
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Each rename's file data fsynced before it, its directory after it, both
/// before the acknowledgement at `ack`.
fn assert_durable_renames(calls: &[Call], renamed: &[(usize, PathBuf, PathBuf)], ack: usize) {
    for (at, from, to) in renamed {
        assert!(
            fsync_between(calls, from, 0, *at).is_some(),
            "{} was renamed to {} before its data was fsynced",
            from.display(),
            to.display()
        );
        let dir = to.parent().unwrap();
        assert!(
            fsync_between(calls, dir, at + 1, ack).is_some(),
            "directory {} not fsynced between the rename to {} and the acknowledgement",
            dir.display(),
            to.display()
        );
    }
}

/// Each directory created and its parent fsynced after the creation and
/// before the acknowledgement at `ack`.
fn assert_durable_mkdirs(calls: &[Call], created: &[(usize, PathBuf)], ack: usize) {
    for (at, dir) in created {
        for d in [dir.as_path(), dir.parent().unwrap()] {
            assert!(
                fsync_between(calls, d, at + 1, ack).is_some(),
                "{} not fsynced between the creation of {} and the acknowledgement",
                d.display(),
                dir.display()
            );
        }
    }
}

/// `callvault serve`, possibly under strace. Stopping it with SIGTERM lets
/// the server and strace exit and the trace end cleanly.
struct Server {
    /// strace when traced, else the server itself.
    child: Child,
    traced: bool,
    addr: String,
}

impl Server {
    async fn start(data_dir: &Path, trace: Option<&Path>, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = callvault(
            data_dir,
            &[&["serve", "--listen", &listen], extra].concat(),
            trace,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let server = Self {
            child,
            traced: trace.is_some(),
            addr: format!("http://{listen}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// The server process (strace's only child when traced).
    fn pid(&self) -> Option<String> {
        let id = self.child.id();
        if !self.traced {
            return Some(id.to_string());
        }
        let pid = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).ok()?;
        Some(pid.trim().to_owned()).filter(|p| !p.is_empty())
    }

    async fn signal(mut self, signal: &str) {
        let pid = self.pid().unwrap();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "server did not stop on {signal}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Some(pid) = self.pid() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn bootstrap(data: &Path) -> String {
    run_ok(callvault(data, &["tenant", "create", "acme"], None));
    run_ok(callvault(
        data,
        &["token", "create", "--tenant", "acme", "--role", "ingest"],
        None,
    ))
    .trim()
    .to_owned()
}

#[tokio::test]
async fn an_acknowledged_ingest_is_fsynced_file_and_directory() {
    if !have_strace() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Canonical, as the local store names its files (it canonicalizes its root).
    let data = std::fs::canonicalize(tmp.path()).unwrap();
    let token = bootstrap(&data);

    let trace = data.join("serve.trace");
    let server = Server::start(&data, Some(&trace), &[]).await;
    // Seven 1 MiB chunks: the first creates the recording's directories.
    let wav = bytes::Bytes::from(callvault::synth::synth_wav(400, 8000, 1));
    let mut client = Client::connect(&server.addr, &token).await.unwrap();
    let rec = client
        .ingest_stream(
            header("durable-1"),
            callvault::client::pieces(wav, 64 << 10),
        )
        .await
        .unwrap()
        .recording
        .unwrap();
    assert_eq!(rec.chunk_count, 7);
    server.signal("-TERM").await;

    let calls = parse_trace(&std::fs::read_to_string(&trace).unwrap());
    // The response on its socket (the chunk files hold ciphertext only).
    let ack = first_write_of(&calls, |fd| fd.contains("<socket:["), &rec.recording_id);
    let objects = data.join("objects");
    let rec_dir = format!("/r/{}/", rec.recording_id);
    let chunks = renames(&calls, |to| {
        to.starts_with(&objects) && to.to_string_lossy().contains(&rec_dir)
    });
    assert_eq!(
        chunks.len(),
        rec.chunk_count as usize,
        "one rename per chunk object"
    );
    assert!(
        chunks.iter().all(|(at, _, _)| *at < ack),
        "every chunk is in place before the response"
    );
    assert_durable_renames(&calls, &chunks, ack);

    // t/, t/<tenant>/, t/<tenant>/r/ and the recording's directory.
    let created = mkdirs(&calls, &objects);
    assert_eq!(created.len(), 4, "{created:?}");
    assert_durable_mkdirs(&calls, &created, ack);
}

#[tokio::test]
async fn swept_objects_are_gone_durably_before_their_queue_entry() {
    if !have_strace() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(tmp.path()).unwrap();
    let token = bootstrap(&data);

    // An upload abandoned mid-stream: the server dies with chunks on disk.
    let server = Server::start(&data, None, &[]).await;
    let wav = bytes::Bytes::from(callvault::synth::synth_wav(1600, 8000, 1));
    let slow = callvault::client::pieces(wav, 1 << 20).then(|b| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        b
    });
    let (addr, t) = (server.addr.clone(), token.clone());
    let upload = tokio::spawn(async move {
        let mut c = Client::connect(&addr, &t).await.unwrap();
        c.ingest_stream(header("abandoned"), slow).await
    });
    let objects = data.join("objects");
    let deadline = Instant::now() + Duration::from_secs(30);
    let rec_dir = loop {
        let chunk = walk(&objects)
            .into_iter()
            .find(|p| p.ends_with("0000000002"));
        if let Some(chunk) = chunk {
            break chunk.parent().unwrap().to_path_buf();
        }
        assert!(Instant::now() < deadline, "the upload never wrote");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    server.signal("-KILL").await;
    assert!(upload.await.unwrap().is_err());

    // Its lease run out, for the sweeper, which runs as a server starts.
    let catalog = callvault::catalog::Catalog::connect(&format!(
        "sqlite://{}",
        data.join("catalog.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE recordings SET lease_until_ms = 0 WHERE status = 'uploading'")
        .execute(catalog.pool())
        .await
        .unwrap();
    let trace = data.join("sweep.trace");
    // Ingest only: no key-health writes to the catalog beside the sweeper's.
    let server = Server::start(&data, Some(&trace), &["--roles", "ingest"]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let swept = || async {
        let mut db = catalog.conn().await.unwrap();
        use callvault::catalog::recordings;
        recordings::expired_uploads(&mut db, i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
            && recordings::pending_object_deletions(&mut db, 10)
                .await
                .unwrap()
                .is_empty()
    };
    while !swept().await {
        assert!(Instant::now() < deadline, "the sweeper did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.signal("-TERM").await;
    catalog.close().await;

    let calls = parse_trace(&std::fs::read_to_string(&trace).unwrap());
    let removed: Vec<usize> = (0..calls.len())
        .filter(|&i| {
            let c = &calls[i];
            (c.name.starts_with("unlink") || c.name == "rmdir")
                && c.ok()
                && c.strings()
                    .first()
                    .is_some_and(|p| Path::new(p).starts_with(&objects))
        })
        .collect();
    assert!(
        removed.len() >= 3,
        "the sweeper removed the chunk objects: {:?} (of {} traced calls; removals anywhere: {:?})",
        removed.iter().map(|&i| &calls[i]).collect::<Vec<_>>(),
        calls.len(),
        calls
            .iter()
            .filter(|c| c.name.starts_with("unlink") || c.name == "rmdir")
            .collect::<Vec<_>>()
    );
    let last_removal = *removed.last().unwrap();
    // The catalog removed the row and queued the objects first; the queue
    // entry goes once the objects are gone: the first catalog write after
    // the deletes.
    let row_removal = (last_removal..calls.len())
        .find(|&i| {
            let in_catalog = |p: &Path| {
                p.parent() == Some(&*data)
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("catalog.db"))
            };
            calls[i].name.starts_with("pwrite") && calls[i].fd_path().is_some_and(in_catalog)
        })
        .expect("the sweeper cleared the queued deletion");
    // What is left of the recording's path: the directory whose entries the
    // deletes changed last.
    let survivor = rec_dir.ancestors().find(|d| d.is_dir()).unwrap();
    assert!(
        fsync_between(&calls, survivor, last_removal + 1, row_removal).is_some(),
        "{} not fsynced between the deletes and the queue entry's removal",
        survivor.display()
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() { walk(&p) } else { vec![p] }
        })
        .collect()
}

#[test]
fn a_keyring_change_is_fsynced_file_and_directory() {
    if !have_strace() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A data dir that does not exist yet: the CLI creates it and the keyring.
    let data = std::fs::canonicalize(tmp.path()).unwrap().join("data");
    let trace = tmp.path().join("keys.trace");
    let arn = run_ok(callvault(&data, &["keys", "local", "create"], Some(&trace)))
        .trim()
        .to_owned();
    assert!(arn.starts_with("arn:"), "{arn}");

    let calls = parse_trace(&std::fs::read_to_string(&trace).unwrap());
    // The CLI's acknowledgement is the ARN it prints (the keyring's temp
    // file holds the ARN too, so the stdout fd is named).
    let ack = first_write_of(&calls, |fd| fd.starts_with("1<"), &arn);
    let keyring = data.join("keyring.json");
    let saves = renames(&calls, |to| to == keyring);
    assert_eq!(
        saves.len(),
        2,
        "the empty keyring, then the one with the key"
    );
    assert_durable_renames(&calls, &saves, ack);
    assert_durable_mkdirs(&calls, &mkdirs(&calls, &data), ack);
    assert_eq!(mkdirs(&calls, &data).len(), 1, "the data dir itself");

    // Each temp file is created 0600, like the keyring: it holds the same keys.
    for (at, from, _) in &saves {
        let created = calls[..*at].iter().any(|c| {
            c.name == "openat"
                && c.ok()
                && c.strings().first() == Some(&from.to_str().unwrap())
                && c.args.contains("O_CREAT")
                && c.args.ends_with(", 0600")
        });
        assert!(created, "{} was not created with mode 0600", from.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keyring).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn concurrent_keyring_processes_lose_no_keys() {
    const N: usize = 8;
    const ROUNDS: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut arns = Vec::new();
    // The first round also races on creating the data dir and the keyring.
    for _ in 0..ROUNDS {
        let children: Vec<Child> = (0..N)
            .map(|_| {
                callvault(&data, &["keys", "local", "create"], None)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            arns.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
        }
    }

    let ring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("keyring.json")).unwrap()).unwrap();
    let held: Vec<&str> = ring["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["arn"].as_str().unwrap())
        .collect();
    let lost: Vec<&String> = arns
        .iter()
        .filter(|a| !held.contains(&a.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} keys lost: {lost:?}",
        lost.len(),
        N * ROUNDS
    );
    assert_eq!(held.len(), N * ROUNDS);
}
