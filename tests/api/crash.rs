//! The real binary as a separate process: operator bootstrap through the CLI,
//! a server killed mid-ingest, and the memory bound of a 256 MB upload.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use callvault::api::pb;
use callvault::client::Client;
use futures::StreamExt;

use crate::helpers::{client_cli, header};

const BIN: &str = env!("CARGO_BIN_EXE_callvault");

pub(crate) fn cli(data_dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("CALLVAULT_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) async fn start(data_dir: &std::path::Path) -> Self {
        Self::start_with(data_dir, &[]).await
    }

    pub(crate) async fn start_with(data_dir: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_logged(data_dir, extra, &[], None).await
    }

    /// With extra environment, and stderr kept in `log` (else dropped).
    pub(crate) async fn start_logged(
        data_dir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("CALLVAULT_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let addr = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, addr }
    }

    pub(crate) fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Files under `p`, with the staging files of puts still being written
/// (`<name>#<n>`, which the store does not list) or without them.
fn count_files(p: &std::path::Path, staging: bool) -> usize {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        count_files(&e.path(), staging)
                    } else {
                        usize::from(staging || !e.file_name().to_string_lossy().contains('#'))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

pub(crate) fn bootstrap(dir: &std::path::Path) -> (String, String) {
    let out = cli(dir, &["tenant", "create", "acme"]);
    assert!(out.contains("tenant acme"), "{out}");
    let ingest = cli(
        dir,
        &["token", "create", "--tenant", "acme", "--role", "ingest"],
    )
    .trim()
    .to_owned();
    let sup = cli(
        dir,
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--role",
            "supervisor",
        ],
    )
    .trim()
    .to_owned();
    assert!(ingest.starts_with("cv_") && sup.starts_with("cv_"));
    (ingest, sup)
}

/// A PCM WAV of `total` bytes, generated piece by piece (never held whole).
pub(crate) fn wav_stream(
    total: usize,
    piece: usize,
) -> (impl futures::Stream<Item = Bytes> + Send + 'static, String) {
    let mut header = callvault::synth::synth_wav(0, 8000, 1);
    let data_len = (total - header.len()) as u32;
    header[4..8].copy_from_slice(&(data_len + 36).to_le_bytes());
    header[40..44].copy_from_slice(&data_len.to_le_bytes());
    let tone: Vec<u8> = (0..piece).map(|i| ((i * 7) % 251) as u8).collect();
    let mut sha = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    sha.update(&header);
    let mut remaining = total - header.len();
    let mut pieces = vec![Bytes::from(header)];
    let tone = Bytes::from(tone);
    while remaining > 0 {
        let n = remaining.min(piece);
        pieces.push(tone.slice(..n));
        sha.update(&tone[..n]);
        remaining -= n;
    }
    (futures::stream::iter(pieces), hex::encode(sha.finish()))
}

#[tokio::test]
async fn killed_mid_ingest_leaves_nothing_visible_and_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest_token, sup_token) = bootstrap(dir.path());
    // A short upload lease, so the restarted node sweeps the killed upload
    // within seconds.
    const LEASE: &[&str] = &["--upload-lease-secs", "2"];
    let server = Server::start_with(dir.path(), LEASE).await;
    let addr = server.addr.clone();

    // A slow upload: 24 MB at ~1 MB per 30 ms.
    let (stream, _) = wav_stream(24 << 20, 1 << 20);
    let slow = stream.then(|b| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        b
    });
    let token = ingest_token.clone();
    let upload = tokio::spawn(async move {
        let mut c = Client::connect(&addr, &token).await.unwrap();
        c.ingest_stream(header("call-crash"), slow).await
    });
    // Kill the server once chunks of the upload are stored (renamed into
    // place, not only being written), mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_files(&dir.path().join("objects"), false) < 3 {
        assert!(
            Instant::now() < deadline,
            "the upload never started writing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    assert!(
        upload.await.unwrap().is_err(),
        "the upload must fail when the server dies"
    );

    // Nothing is visible; the abandoned upload is recorded as such.
    let (archive, _) = callvault::archive::Archive::embedded(dir.path())
        .await
        .unwrap();
    let tenant =
        callvault::catalog::tenants::by_name(&mut archive.catalog.conn().await.unwrap(), "acme")
            .await
            .unwrap();
    assert!(
        callvault::catalog::recordings::list(
            &mut archive.catalog.conn().await.unwrap(),
            &tenant.id,
            None,
            100
        )
        .await
        .unwrap()
        .is_empty()
    );
    let stale = callvault::catalog::recordings::expired_uploads(
        &mut archive.catalog.conn().await.unwrap(),
        i64::MAX,
        10,
    )
    .await
    .unwrap();
    assert_eq!(stale.len(), 1, "the killed upload is an abandoned row");
    let orphan_objects = archive
        .store
        .list_recording(&stale[0].0, &stale[0].1)
        .await
        .unwrap();
    assert!(
        !orphan_objects.is_empty(),
        "the kill happened after some chunks were stored"
    );

    // Restart; a retry with the same call id succeeds and plays back.
    let server = Server::start_with(dir.path(), LEASE).await;
    let (stream, sha) = wav_stream(24 << 20, 1 << 20);
    let mut c = Client::connect(&server.addr, &ingest_token).await.unwrap();
    let res = c.ingest_stream(header("call-crash"), stream).await.unwrap();
    assert!(!res.deduplicated);
    let rec = res.recording.unwrap();
    assert_eq!(rec.sha256, sha);
    let mut p = Client::connect(&server.addr, &sup_token).await.unwrap();
    let (bytes, _) = p.play_all(&rec.recording_id, 0).await.unwrap();
    assert_eq!(
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &bytes
        )),
        sha
    );

    // The restarted node's sweeper removes the abandoned upload's row and
    // objects once its lease ran out (nobody renews it any more), and the
    // staging file of a chunk the killed server was writing, if any.
    let rec_dir = dir
        .path()
        .join(format!("objects/t/{}/r/{}", stale[0].0, stale[0].1));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = callvault::catalog::recordings::expired_uploads(
            &mut archive.catalog.conn().await.unwrap(),
            i64::MAX,
            10,
        )
        .await
        .unwrap();
        let objects = archive
            .store
            .list_recording(&stale[0].0, &stale[0].1)
            .await
            .unwrap();
        let files = count_files(&rec_dir, true);
        if rows.is_empty() && objects.is_empty() && files == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned upload was not swept: {} rows, {} objects, {files} files",
            rows.len(),
            objects.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        callvault::catalog::recordings::list(
            &mut archive.catalog.conn().await.unwrap(),
            &tenant.id,
            None,
            100
        )
        .await
        .unwrap()
        .len(),
        1
    );
    server.kill();
}

#[tokio::test]
async fn a_256_mb_recording_ingests_with_bounded_server_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest_token, sup_token) = bootstrap(dir.path());
    let server = Server::start(dir.path()).await;
    let baseline = server.peak_rss_kib();
    let total = 256 << 20;
    let (stream, sha) = wav_stream(total, 256 << 10);
    let mut c = Client::connect(&server.addr, &ingest_token).await.unwrap();
    let rec = c
        .ingest_stream(header("call-big"), stream)
        .await
        .unwrap()
        .recording
        .unwrap();
    assert_eq!(rec.size_bytes, total as u64);
    assert_eq!(rec.sha256, sha);
    assert_eq!(rec.chunk_count, 256);
    let peak = server.peak_rss_kib();
    eprintln!("server peak RSS: baseline {baseline} KiB, after a 256 MiB ingest {peak} KiB");
    // Bounded by a small multiple of the 1 MiB chunk size, not the file size:
    // 6 chunks in flight plus gRPC buffers stay far under 128 MiB.
    assert!(peak < 128 * 1024, "peak RSS {peak} KiB is not bounded");

    // Streamed playback hashes to the same digest.
    let mut p = Client::connect(&server.addr, &sup_token).await.unwrap();
    let mut s = p
        .playback
        .play(pb::PlayRequest {
            recording_id: rec.recording_id.clone(),
            offset_bytes: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut n = 0usize;
    while let Some(m) = s.message().await.unwrap() {
        n += m.data.len();
        h.update(&m.data);
    }
    assert_eq!(n, total);
    assert_eq!(hex::encode(h.finish()), sha);
    let peak = server.peak_rss_kib();
    eprintln!("server peak RSS after streaming it back: {peak} KiB");
    assert!(
        peak < 128 * 1024,
        "peak RSS {peak} KiB after playback is not bounded"
    );
    server.kill();
}

#[tokio::test]
async fn demo_command_verifies_the_whole_path() {
    // As a user runs it: no CALLVAULT_LOG, so the server's log does not
    // interleave with the demo's own report.
    let out = Command::new(BIN)
        .arg("demo")
        .env_remove("CALLVAULT_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("demo passed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(
        !["INFO", "WARN", "ERROR"].iter().any(|l| stderr.contains(l)),
        "log lines beside the demo's report:\n{stderr}"
    );
}

#[tokio::test]
async fn metrics_endpoint_and_graceful_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest_token, _) = bootstrap(dir.path());
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start_with(
        dir.path(),
        &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")],
    )
    .await;
    let mut c = Client::connect(&server.addr, &ingest_token).await.unwrap();
    let audio = crate::helpers::fixture("speech_mulaw.wav");
    c.ingest_stream(
        header("call-metrics"),
        callvault::client::pieces(audio, 65536),
    )
    .await
    .unwrap();

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
        .await
        .unwrap();
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    sock.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(
            "callvault_kms_requests_total{operation=\"GenerateDataKey\",region=\"local\"} 1"
        ),
        "{body}"
    );
    assert!(
        body.contains("callvault_kms_tenant_requests_total{tenant="),
        "{body}"
    );

    // SIGTERM drains and exits cleanly.
    let mut child = server.child;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "server exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn client_commands_round_trip_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest_token, sup_token) = bootstrap(dir.path());
    let server = Server::start(dir.path()).await;
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech.flac");

    let out = client_cli(
        &server.addr,
        &ingest_token,
        &[
            "ingest",
            input,
            "--call-id",
            "cli-1",
            "--label",
            "agent=alex",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected_sha = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &std::fs::read(input).unwrap(),
    ));
    assert_eq!(v["sha256"], expected_sha.as_str());
    assert_eq!(v["size_bytes"], std::fs::metadata(input).unwrap().len());
    assert_eq!(
        (v["container"].as_str(), v["codec"].as_str()),
        (Some("flac"), Some("flac"))
    );
    assert!(v["chunk_count"].as_u64().unwrap() >= 1 && v["duration_ms"].as_u64().unwrap() > 14_000);
    let id = v["recording_id"].as_str().unwrap().to_owned();

    // Same call id again: the existing recording, flagged as such.
    let again = client_cli(
        &server.addr,
        &ingest_token,
        &["ingest", input, "--call-id", "cli-1", "--json"],
    );
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["recording_id"], id.as_str());
    assert_eq!(again["deduplicated"], true);

    let out_file = dir.path().join("played.flac");
    let out = client_cli(
        &server.addr,
        &sup_token,
        &["play", &id, "-o", out_file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&out_file).unwrap() == std::fs::read(input).unwrap());
    let out = client_cli(
        &server.addr,
        &sup_token,
        &[
            "play",
            &id,
            "-o",
            out_file.to_str().unwrap(),
            "--offset",
            "1000",
        ],
    );
    assert!(out.status.success());
    assert!(std::fs::read(&out_file).unwrap()[..] == std::fs::read(input).unwrap()[1000..]);

    let out = client_cli(&server.addr, &sup_token, &["recordings", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["recording_id"], id.as_str());
    let out = client_cli(
        &server.addr,
        &sup_token,
        &["recordings", "get", &id, "--json"],
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["labels"]["agent"], "alex");
    let human = client_cli(&server.addr, &sup_token, &["recordings", "get", &id]);
    assert!(String::from_utf8_lossy(&human.stdout).contains(&id));

    // Errors: a clear message and a non-zero exit, never a partial output file.
    let out = client_cli(
        &server.addr,
        &ingest_token,
        &["play", &id, "-o", out_file.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionDenied")
            || String::from_utf8_lossy(&out.stderr).contains("may not read")
    );
    let not_audio = dir.path().join("notes.txt");
    std::fs::write(&not_audio, "meeting notes, not a recording").unwrap();
    let out = client_cli(
        &server.addr,
        &ingest_token,
        &["ingest", not_audio.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not audio: text"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.kill();
}

#[tokio::test]
async fn key_commands_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest_token, sup_token) = bootstrap(dir.path());
    let admin = cli(
        dir.path(),
        &["token", "create", "--tenant", "acme", "--role", "admin"],
    )
    .trim()
    .to_owned();
    let server = Server::start(dir.path()).await;
    let input = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/speech_mulaw.wav"
    );
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let rec = json(client_cli(
        &server.addr,
        &ingest_token,
        &["ingest", input, "--call-id", "keys-cli-1", "--json"],
    ));
    let id = rec["recording_id"].as_str().unwrap().to_owned();
    let key_a = rec["kms_key_arn"].as_str().unwrap().to_owned();

    // The operator creates a key in the local keyring; the admin registers it.
    let key_b = cli(dir.path(), &["keys", "local", "create"])
        .trim()
        .to_owned();
    let reg = json(client_cli(
        &server.addr,
        &admin,
        &["keys", "register", &key_b, "--json"],
    ));
    assert_eq!(reg["status"], "active");
    let keys = json(client_cli(
        &server.addr,
        &admin,
        &["keys", "list", "--json"],
    ));
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert_eq!(keys[0]["key_arn"], key_a.as_str());
    assert_eq!(
        (keys[0]["status"].as_str(), keys[0]["recordings"].as_u64()),
        (Some("previous"), Some(1))
    );

    // Rewrap A -> B, followed to the end by the CLI.
    let job = json(client_cli(
        &server.addr,
        &admin,
        &[
            "keys", "rewrap", "--from", &key_a, "--to", &key_b, "--rate", "5", "--json",
        ],
    ));
    assert_eq!(
        (job["state"].as_str(), job["rewrapped"].as_u64()),
        (Some("succeeded"), Some(1))
    );
    let out = client_cli(&server.addr, &admin, &["keys", "retire", &key_a]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The key is disabled in the keyring: health reports the incident and
    // playback is refused with the state named.
    cli(dir.path(), &["keys", "local", "disable", &key_b]);
    let health = json(client_cli(
        &server.addr,
        &admin,
        &["keys", "health", "--refresh", "--json"],
    ));
    assert_eq!(health["incidents"].as_array().unwrap().len(), 1, "{health}");
    assert_eq!(health["incidents"][0]["state"], "disabled");
    assert_eq!(health["incidents"][0]["recordings"], 1);
    assert_eq!(health["rotation"]["compliant"], true);
    let out_file = dir.path().join("played.wav");
    let out = client_cli(
        &server.addr,
        &sup_token,
        &["play", &id, "-o", out_file.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FailedPrecondition") && err.contains("disabled"),
        "{err}"
    );
    assert!(!out_file.exists(), "no partial output");

    cli(dir.path(), &["keys", "local", "enable", &key_b]);
    let out = client_cli(
        &server.addr,
        &sup_token,
        &["play", &id, "-o", out_file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&out_file).unwrap() == std::fs::read(input).unwrap());

    // Refusals are clear and exit non-zero.
    let out = client_cli(&server.addr, &sup_token, &["keys", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"));
    let out = client_cli(&server.addr, &admin, &["keys", "register", "alias/mine"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidArgument"));
    server.kill();
}

#[tokio::test]
async fn a_server_killed_mid_rewrap_resumes_without_skipping_or_double_wrapping() {
    require!(Postgres);
    let dir = tempfile::tempdir().unwrap();
    let (url, db) = crate::helpers::fresh_pg_database().await;
    let on_pg = |args: &[&str]| cli(dir.path(), &[args, &["--database-url", &url]].concat());
    assert!(on_pg(&["tenant", "create", "acme"]).contains("tenant acme"));
    let token = |role: &str| {
        on_pg(&["token", "create", "--tenant", "acme", "--role", role])
            .trim()
            .to_owned()
    };
    let (ingest, sup, admin) = (token("ingest"), token("supervisor"), token("admin"));
    let server = Server::start_with(dir.path(), &["--database-url", &url]).await;

    const N: usize = 8;
    let mut uploader = Client::connect(&server.addr, &ingest).await.unwrap();
    let mut recs = Vec::new();
    for i in 0..N {
        let mut wav = callvault::synth::synth_wav(1, 8000, 1);
        let n = wav.len();
        wav[n - 8..].copy_from_slice(&(i as u64).to_le_bytes());
        let sha = callvault::crypto::sha256_hex(&wav);
        let rec = uploader
            .ingest_stream(
                header(&format!("kill-rewrap-{i}")),
                callvault::client::pieces(Bytes::from(wav), 65536),
            )
            .await
            .unwrap()
            .recording
            .unwrap();
        recs.push((rec.recording_id, sha));
    }
    let catalog = callvault::catalog::Catalog::connect(&url).await.unwrap();
    let tenant = callvault::catalog::tenants::by_name(&mut catalog.conn().await.unwrap(), "acme")
        .await
        .unwrap()
        .id;
    let key_a = callvault::catalog::keys::active(&mut catalog.conn().await.unwrap(), &tenant)
        .await
        .unwrap()
        .key_arn
        .to_string();
    let key_b = cli(dir.path(), &["keys", "local", "create"])
        .trim()
        .to_owned();
    let mut keys = Client::connect(&server.addr, &admin).await.unwrap();
    keys.keys
        .register_key(pb::RegisterKeyRequest {
            key_arn: key_b.clone(),
            replica_key_arns: Default::default(),
        })
        .await
        .unwrap();
    // Two KMS requests a second: one recording per lease, slow enough to
    // kill the server in the middle.
    let job = keys
        .keys
        .start_rewrap(pb::StartRewrapRequest {
            source_key_arn: key_a.clone(),
            destination_key_arn: key_b.clone(),
            max_kms_requests_per_second: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = callvault::catalog::rewrap::get(
            &mut catalog.conn().await.unwrap(),
            &tenant,
            &job.job_id,
        )
        .await
        .unwrap();
        if j.rewrapped >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rewrap did not progress: {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill(); // SIGKILL: no drain, leases die with the connections

    let j =
        callvault::catalog::rewrap::get(&mut catalog.conn().await.unwrap(), &tenant, &job.job_id)
            .await
            .unwrap();
    assert_eq!(j.status, callvault::domain::JobStatus::Running);
    assert!(j.rewrapped < N as u64, "killed before the end: {j:?}");
    assert_eq!(
        callvault::catalog::keys::count_under(
            &mut catalog.conn().await.unwrap(),
            &tenant,
            &callvault::domain::KeyArn::parse("k", &key_a).unwrap()
        )
        .await
        .unwrap(),
        N as u64 - j.rewrapped,
        "progress counts exactly the recordings moved"
    );

    let server = Server::start_with(dir.path(), &["--database-url", &url]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let j = callvault::catalog::rewrap::get(
            &mut catalog.conn().await.unwrap(),
            &tenant,
            &job.job_id,
        )
        .await
        .unwrap();
        if j.status != callvault::domain::JobStatus::Running {
            break j;
        }
        assert!(Instant::now() < deadline, "the job did not resume: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        done.status,
        callvault::domain::JobStatus::Succeeded,
        "{done:?}"
    );
    assert_eq!((done.rewrapped, done.total), (N as u64, N as u64));
    assert_eq!(
        callvault::catalog::keys::count_under(
            &mut catalog.conn().await.unwrap(),
            &tenant,
            &callvault::domain::KeyArn::parse("k", &key_a).unwrap()
        )
        .await
        .unwrap(),
        0
    );
    let mut player = Client::connect(&server.addr, &sup).await.unwrap();
    for (id, sha) in &recs {
        let (audio, _) = player.play_all(id, 0).await.unwrap();
        assert_eq!(&callvault::crypto::sha256_hex(&audio), sha);
    }
    server.kill();
    catalog.close().await;
    crate::helpers::drop_pg_database(&db).await;
}
