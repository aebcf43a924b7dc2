//! The HTTP side door: signed playback URLs over loopback with a real HTTP
//! client (reqwest) and `curl`: every range form, 416, HEAD, If-Range, the
//! headers browsers rely on, every failure of the signature, revocation by
//! epoch, token and KMS key state, ranged reads that touch only their
//! chunks, a dropped connection, and the listening session's coalesced
//! audit events.

use std::time::Duration;

use bytes::Bytes;
use callvault::api::pb;
use callvault::audit::event::Action;
use callvault::playback::listening::Listening;
use callvault::playback::urls::Claims;
use reqwest::StatusCode;

use crate::audit::{events, of};
use crate::helpers::*;

/// 64 KiB chunks: a 1 MiB WAV spans 17 of them.
const CHUNK: u64 = 64 * 1024;

pub(crate) async fn http_app(kind: CatalogKind) -> TestApp {
    spawn_app_opts(AppOptions {
        kind,
        http: true,
        // Sessions close after 300 ms without a request, so a test sees
        // their finish events quickly.
        tune: Some(Box::new(|a| {
            a.listening = std::sync::Arc::new(Listening::new(
                Duration::from_millis(300),
                Duration::from_secs(600),
            ))
        })),
        ..AppOptions::default()
    })
    .await
}

pub(crate) async fn recording(app: &TestApp, call: &str, seconds: u32) -> (String, Bytes) {
    let audio = Bytes::from(callvault::synth::synth_wav(seconds, 8000, 1));
    let res = app.ingest(call, audio.clone()).await.unwrap();
    (res.recording.unwrap().recording_id, audio)
}

pub(crate) async fn url_for(
    app: &TestApp,
    token: &str,
    id: &str,
    purpose: pb::PlaybackPurpose,
    ttl: u64,
) -> String {
    let res = app
        .client(token)
        .await
        .playback
        .create_playback_url(pb::CreatePlaybackUrlRequest {
            recording_id: id.into(),
            ttl_seconds: ttl,
            purpose: purpose.into(),
            reason: "quality review".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        res.url.starts_with(app.http_addr.as_deref().unwrap()),
        "{}",
        res.url
    );
    assert_eq!(
        res.url,
        format!("{}{}", app.http_addr.as_deref().unwrap(), res.path)
    );
    res.url
}

/// A supervisor's stream URL for recording `id`, as long-lived as the
/// server allows by default.
pub(crate) async fn stream_url(app: &TestApp, id: &str) -> String {
    url_for(
        app,
        &app.supervisor_token,
        id,
        pb::PlaybackPurpose::Stream,
        0,
    )
    .await
}

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

pub(crate) async fn get(url: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = http().get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    req.send().await.unwrap()
}

pub(crate) fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

async fn ranges_and_headers(kind: CatalogKind) {
    let app = http_app(kind).await;
    let (id, audio) = recording(&app, "call-ranges", 64).await;
    let size = audio.len() as u64;
    assert!(size > 10 * CHUNK, "{size}");
    let sha = callvault::crypto::sha256_hex(&audio);
    let url = stream_url(&app, &id).await;

    // The whole recording, with what browsers and curl rely on.
    let res = http()
        .get(&url)
        .header("Accept-Encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "accept-ranges"), "bytes");
    assert_eq!(header(&res, "etag"), format!("\"{sha}\""));
    assert_eq!(header(&res, "content-type"), "audio/wav");
    assert_eq!(header(&res, "content-length"), size.to_string());
    assert_eq!(header(&res, "cache-control"), "private, no-store");
    assert_eq!(header(&res, "referrer-policy"), "no-referrer");
    assert_eq!(header(&res, "content-encoding"), "", "no compression");
    assert_eq!(
        header(&res, "content-disposition"),
        format!("inline; filename=\"recording-{id}.wav\"")
    );
    assert_eq!(res.bytes().await.unwrap(), audio);

    // Every single-range form, inside chunks and across their boundaries.
    let mid = size / 2;
    for (range, start, end) in [
        ("bytes=0-0".to_owned(), 0, 1),
        ("bytes=100-199".to_owned(), 100, 200),
        (
            format!("bytes={}-{}", CHUNK - 10, CHUNK + 9),
            CHUNK - 10,
            CHUNK + 10,
        ),
        (
            format!("bytes={}-{}", 3 * CHUNK, 5 * CHUNK - 1),
            3 * CHUNK,
            5 * CHUNK,
        ),
        (format!("bytes={mid}-"), mid, size),
        ("bytes=-500".to_owned(), size - 500, size),
        (format!("bytes=-{}", size + 10), 0, size),
        (
            format!("bytes={}-{}", size - 1, size + 1000),
            size - 1,
            size,
        ),
        ("bytes=0-".to_owned(), 0, size),
    ] {
        let res = get(&url, Some(&range)).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&res, "content-range"),
            format!("bytes {start}-{}/{size}", end - 1),
            "{range}"
        );
        assert_eq!(header(&res, "content-length"), (end - start).to_string());
        let body = res.bytes().await.unwrap();
        assert_eq!(&body[..], &audio[start as usize..end as usize], "{range}");
    }

    // Past the end: 416 with the size.
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 5, size + 9),
    ] {
        let res = get(&url, Some(&range)).await;
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&res, "content-range"), format!("bytes */{size}"));
    }
    // Not a byte range we serve: the whole recording.
    assert_eq!(get(&url, Some("items=0-1")).await.status(), StatusCode::OK);

    // HEAD: the headers of a GET, no body.
    let res = http().head(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-length"), size.to_string());
    assert_eq!(header(&res, "accept-ranges"), "bytes");
    assert!(res.bytes().await.unwrap().is_empty());

    // If-Range: the range for our tag, everything for another.
    let res = http()
        .get(&url)
        .header("Range", "bytes=10-19")
        .header("If-Range", format!("\"{sha}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    let res = http()
        .get(&url)
        .header("Range", "bytes=10-19")
        .header("If-Range", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().len() as u64, size);

    // A download URL is an attachment.
    let dl = url_for(
        &app,
        &app.compliance_token,
        &id,
        pb::PlaybackPurpose::Download,
        60,
    )
    .await;
    let res = get(&dl, Some("bytes=0-9")).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&res, "content-disposition"),
        format!("attachment; filename=\"recording-{id}.wav\"")
    );
    app.shutdown().await;
}

on_both_catalogs!(
    ranges_and_headers_on_sqlite,
    ranges_and_headers_on_postgres,
    ranges_and_headers
);

/// `curl`, as an operator or a script uses it.
#[tokio::test]
async fn curl_reads_ranges_and_heads() {
    let app = http_app(CatalogKind::Sqlite).await;
    let (id, audio) = recording(&app, "call-curl", 16).await;
    let size = audio.len();
    let url = stream_url(&app, &id).await;
    // The server runs on this test's runtime: curl must not block it.
    async fn curl(args: &[&str]) -> Vec<u8> {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args)
            .output()
            .await
            .expect("curl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
    assert_eq!(curl(&["-r", "1000-1999", &url]).await, &audio[1000..2000]);
    assert_eq!(curl(&["-r", "-300", &url]).await, &audio[size - 300..]);
    assert_eq!(curl(&["--compressed", &url]).await, &audio[..]);
    let head = String::from_utf8(curl(&["-I", &url]).await)
        .unwrap()
        .to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {size}")), "{head}");
    let past = String::from_utf8(curl(&["-i", "-r", &format!("{size}-"), &url]).await)
        .unwrap()
        .to_lowercase();
    assert!(past.starts_with("http/1.1 416"), "{past}");
    assert!(
        past.contains(&format!("content-range: bytes */{size}")),
        "{past}"
    );
    // A resumed download (-C -) picks up where a partial file ends.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("part.wav");
    std::fs::write(&file, &audio[..5000]).unwrap();
    curl(&["-C", "-", "-o", file.to_str().unwrap(), &url]).await;
    assert_eq!(std::fs::read(&file).unwrap(), &audio[..]);
    app.shutdown().await;
}

/// Every way a signature fails is 403 with a reason, and none of them
/// says anything about another tenant; no signature reaches the logs.
#[tokio::test]
async fn every_signature_failure_is_refused() {
    let app = http_app(CatalogKind::Sqlite).await;
    let (id, _) = recording(&app, "call-sig", 8).await;
    let (other_id, _) = recording(&app, "call-sig-2", 8).await;
    let url = stream_url(&app, &id).await;
    let (base, sig) = url.split_once("?sig=").unwrap();
    let refused = |res: reqwest::Response| async move {
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(header(&res, "cache-control"), "private, no-store");
        res.text().await.unwrap()
    };
    assert_eq!(
        get(&url, Some("bytes=0-9")).await.status(),
        StatusCode::PARTIAL_CONTENT
    );

    assert!(
        refused(get(base, None).await)
            .await
            .contains("no signature")
    );
    // One character changed anywhere in the signature.
    for at in [0, sig.len() / 3, sig.len() / 2, sig.len() - 1] {
        let mut edited = sig.as_bytes().to_vec();
        edited[at] = if edited[at] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        let text = refused(get(&format!("{base}?sig={edited}"), None).await).await;
        assert!(
            text.contains("not valid") || text.contains("no longer accepts"),
            "edit at {at}: {text}"
        );
    }
    // The signature of one recording on another's path.
    let moved = url.replace(&id, &other_id);
    assert!(refused(get(&moved, None).await).await.contains("not valid"));
    // Expired: a URL signed with the deployment's key whose time is up.
    let rec = callvault::domain::RecordingId::parse("id", &id).unwrap();
    let mut claims = Claims {
        tenant: app.tenant.id.to_string(),
        token_id: supervisor_token_id(&app).await,
        purpose: "stream".into(),
        expires_at_ms: callvault::domain::now_ms() - 1,
        epoch: 0,
        session: "expired".into(),
    };
    let expired = format!("{base}?sig={}", app.archive.url_keys.sign(&rec, &claims));
    let text = refused(get(&expired, None).await).await;
    assert!(text.contains("expired at 20"), "{text}");
    // The same claims, still valid, work: only the time was wrong.
    claims.expires_at_ms = callvault::domain::now_ms() + 60_000;
    let fine = format!("{base}?sig={}", app.archive.url_keys.sign(&rec, &claims));
    assert_eq!(
        get(&fine, Some("bytes=0-0")).await.status(),
        StatusCode::PARTIAL_CONTENT
    );
    // Another tenant's claims under our key cannot be made without the key;
    // with a key the server does not have, the URL is refused.
    let foreign = callvault::playback::urls::UrlKeys::parse(
        "d00000000 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )
    .unwrap();
    let text =
        refused(get(&format!("{base}?sig={}", foreign.sign(&rec, &claims)), None).await).await;
    assert!(text.contains("no longer accepts"), "{text}");
    // A recording id that is not one: 404, nothing else said.
    let res = get(
        &format!(
            "{}/v1/recordings/nope/audio?sig={sig}",
            app.http_addr.as_deref().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // The signature never reaches the logs.
    let logs = String::from_utf8_lossy(&captured_logs()).into_owned();
    let mac = sig.rsplit('.').next().unwrap();
    assert!(!logs.contains(mac), "a signature reached the logs");
    app.shutdown().await;
}

async fn supervisor_token_id(app: &TestApp) -> String {
    callvault::operator::list_tokens(&app.archive, "acme")
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.role == callvault::domain::Role::Supervisor)
        .unwrap()
        .id
}

/// Bumping the tenant's epoch, revoking the issuing token, and the
/// recording's KMS key becoming unusable each stop URLs at once.
#[tokio::test]
async fn urls_stop_on_epoch_token_and_key_revocation() {
    let app = http_app(CatalogKind::Postgres).await;
    let (id, _) = recording(&app, "call-revoke", 8).await;
    let url = stream_url(&app, &id).await;
    assert_eq!(
        get(&url, Some("bytes=0-9")).await.status(),
        StatusCode::PARTIAL_CONTENT
    );

    // The epoch, through the CLI (an admin token).
    let out = cli_against(&app.addr, &app.admin_token, &["urls", "revoke", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let epoch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(epoch["epoch"], 1);
    let res = get(&url, Some("bytes=0-9")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("revoked"));
    // A supervisor may not revoke the tenant's URLs.
    let out = cli_against(&app.addr, &app.supervisor_token, &["urls", "revoke"]).await;
    assert!(!out.status.success());
    // URLs issued after the bump work, through the CLI too.
    let out = cli_against(
        &app.addr,
        &app.supervisor_token,
        &["play-url", &id, "--ttl", "5m", "--json"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fresh = format!(
        "{}{}",
        app.http_addr.as_deref().unwrap(),
        issued["path"].as_str().unwrap()
    );
    assert_eq!(issued["purpose"], "stream");
    assert_eq!(
        get(&fresh, Some("bytes=0-9")).await.status(),
        StatusCode::PARTIAL_CONTENT
    );

    // The issuing token.
    let token_id = supervisor_token_id(&app).await;
    callvault::operator::revoke_token(&app.archive, "acme", &token_id, "test")
        .await
        .unwrap();
    let res = get(&fresh, Some("bytes=0-9")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("token that issued the link")
    );

    // The recording's KMS key: disabled, found by the health check.
    let url = url_for(
        &app,
        &app.compliance_token,
        &id,
        pb::PlaybackPurpose::Stream,
        0,
    )
    .await;
    assert_eq!(
        get(&url, Some("bytes=0-9")).await.status(),
        StatusCode::PARTIAL_CONTENT
    );
    let arn = callvault::catalog::keys::active(&mut *app.db().await, &app.tenant.id)
        .await
        .unwrap()
        .key_arn
        .to_string();
    app.ring().set_enabled(&arn, false).unwrap();
    callvault::keys::check_all(&app.archive).await.unwrap();
    let res = get(&url, Some("bytes=0-9")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("key is not usable"));
    // HEAD and the waveform too: nothing about the recording while its key
    // is unusable.
    let res = http().head(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = get(&url.replace("/audio?", "/peaks?"), None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    app.ring().set_enabled(&arn, true).unwrap();
    assert_eq!(
        get(&url, Some("bytes=0-9")).await.status(),
        StatusCode::PARTIAL_CONTENT
    );
    app.shutdown().await;
}

/// A range reads only the chunks that overlap it: with every other chunk
/// object gone, ranges inside the rest still play, and one that touches a
/// missing chunk fails.
#[tokio::test]
async fn a_range_reads_only_its_chunks() {
    let app = http_app(CatalogKind::Sqlite).await;
    let (id, audio) = recording(&app, "call-chunks", 64).await;
    let url = stream_url(&app, &id).await;
    let chunks = chunks_of(&app, &id).await;
    assert!(chunks.len() >= 12, "{}", chunks.len());
    // Remove every chunk's object but 5 and 6.
    let removed = remove_chunk_objects(&app, &chunks, |i| i != 5 && i != 6);
    assert_eq!(removed, chunks.len() - 2);
    let (a, b) = (5 * CHUNK + 17, 7 * CHUNK - 3);
    let res = get(&url, Some(&format!("bytes={a}-{}", b - 1))).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap(), &audio[a as usize..b as usize]);
    // The last byte of chunk 6 and the first of chunk 7.
    let range = format!("bytes={}-{}", 7 * CHUNK - 1, 7 * CHUNK);
    assert!(
        !range_plays(&url, &range).await,
        "a range over a missing chunk played"
    );
    app.shutdown().await;
}

/// The catalog's chunk rows of recording `id`.
pub(crate) async fn chunks_of(
    app: &TestApp,
    id: &str,
) -> Vec<callvault::catalog::recordings::ChunkRow> {
    callvault::catalog::recordings::chunks(
        &mut *app.db().await,
        &app.tenant.id,
        &callvault::domain::RecordingId::parse("id", id).unwrap(),
    )
    .await
    .unwrap()
}

/// Deletes the stored object of every chunk whose index `gone` picks;
/// returns how many.
pub(crate) fn remove_chunk_objects(
    app: &TestApp,
    chunks: &[callvault::catalog::recordings::ChunkRow],
    gone: impl Fn(u32) -> bool,
) -> usize {
    let files = walk(&app.dir.path().join("objects"));
    let mut removed = 0;
    for c in chunks.iter().filter(|c| gone(c.index)) {
        let path = files
            .iter()
            .find(|p| p.to_string_lossy().ends_with(&c.object_key))
            .unwrap_or_else(|| panic!("object {} not found", c.object_key));
        std::fs::remove_file(path).unwrap();
        removed += 1;
    }
    removed
}

/// Whether `range` of `url` is answered 206 with its whole body. (A
/// failure can come before or after the headers: the read of a chunk
/// races them.)
pub(crate) async fn range_plays(url: &str, range: &str) -> bool {
    match http().get(url).header("Range", range).send().await {
        Ok(res) => res.status() == StatusCode::PARTIAL_CONTENT && res.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// Waits (up to 10 s) for `n` finish events of URL sessions.
pub(crate) async fn wait_for_finish(
    app: &TestApp,
    n: usize,
) -> Vec<callvault::audit::event::Event> {
    for _ in 0..100 {
        let all = events(app).await;
        let f: Vec<_> = of(&all, Action::PlaybackFinished)
            .into_iter()
            .filter(|e| e.details.get("via").is_some_and(|v| v == "url"))
            .cloned()
            .collect();
        if f.len() >= n {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} listening sessions closed");
}
