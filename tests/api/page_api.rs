//! The supervisor page's side of the HTTP listener: its JSON API (bearer
//! token in the header; search, get, playback URLs with their refusals and
//! audit), the page and its assets under their CSP, and `demo
//! --keep-serving`, the README's way to open it.

use std::time::Duration;

use bytes::Bytes;
use callvault::audit::event::Action;
use reqwest::StatusCode;

use crate::audit::{events, of};
use crate::helpers::*;
use crate::http_playback::{get, header, http, http_app};

/// The page's JSON API: bearer token in the header, the same roles and
/// audit as gRPC, searches by call id, label and time, and a download URL
/// only with a reason.
#[tokio::test]
async fn the_page_api_searches_and_issues_urls() {
    let app = http_app(CatalogKind::Postgres).await;
    let base = app.http_addr.clone().unwrap();
    let mut h = crate::helpers::header("queue-a-1");
    h.labels = [("queue".to_owned(), "billing".to_owned())].into();
    let audio = Bytes::from(callvault::synth::synth_wav(4, 8000, 1));
    let client = app.client(&app.ingest_token).await;
    client
        .clone()
        .ingest_stream(h, callvault::client::pieces(audio.clone(), 64 * 1024))
        .await
        .unwrap();
    let mut h = crate::helpers::header("queue-b-1");
    h.labels = [("queue".to_owned(), "sales".to_owned())].into();
    let other = client
        .clone()
        .ingest_stream(h, callvault::client::pieces(audio.clone(), 64 * 1024))
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let api = |path: &str, token: Option<&str>| {
        let mut req = http().get(format!("{base}{path}"));
        if let Some(t) = token {
            // RFC 6750: the scheme is case-insensitive.
            req = req.header("Authorization", format!("bearer {t}"));
        }
        req.send()
    };
    let json = |res: reqwest::Response| async move {
        let status = res.status();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&res.bytes().await.unwrap()).unwrap(),
        )
    };
    let sup = Some(app.supervisor_token.as_str());

    let (status, body) = json(api("/api/v1/recordings", sup).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recordings"].as_array().unwrap().len(), 2);
    let (_, body) = json(
        api("/api/v1/recordings?call_id=queue-b-1", sup)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["recordings"][0]["recording_id"], other);
    assert_eq!(body["recordings"][0]["labels"]["queue"], "sales");
    assert_eq!(body["recordings"][0]["media_type"], "audio/wav");
    let (_, body) = json(
        api("/api/v1/recordings?label=queue%3Dbilling", sup)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["recordings"].as_array().unwrap().len(), 1);
    assert_eq!(body["recordings"][0]["external_call_id"], "queue-a-1");
    let future = callvault::domain::now_ms() + 3_600_000;
    let (_, body) = json(
        api(&format!("/api/v1/recordings?from={future}"), sup)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["recordings"].as_array().unwrap().len(), 0);
    // Paging: one at a time, the token carries on.
    let (_, p1) = json(api("/api/v1/recordings?limit=1", sup).await.unwrap()).await;
    let token = p1["next_page_token"].as_str().unwrap().to_owned();
    let (_, p2) = json(
        api(
            &format!("/api/v1/recordings?limit=1&page_token={token}"),
            sup,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_ne!(
        p1["recordings"][0]["recording_id"],
        p2["recordings"][0]["recording_id"]
    );

    // Refusals: no token, a bad one, the wrong role, bad parameters.
    let (status, body) = json(api("/api/v1/recordings", None).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    let (status, _) = json(api("/api/v1/recordings", Some("cv_nope")).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = json(
        api("/api/v1/recordings", Some(&app.ingest_token))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = json(api("/api/v1/recordings?from=yesterday", sup).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("from"),
        "{body}"
    );
    let (status, _) = json(api("/api/v1/recordings?bogus=1", sup).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = json(
        api(&format!("/api/v1/recordings/{}", uuid_v7()), sup)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // URLs: a stream URL works; a download needs a reason, which the
    // audit trail keeps.
    let post = |body: serde_json::Value| {
        http()
            .post(format!("{base}/api/v1/recordings/{other}/playback-url"))
            .header("Authorization", format!("Bearer {}", app.supervisor_token))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
    };
    let (status, link) = json(
        post(serde_json::json!({"purpose": "stream"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let res = get(
        &format!("{base}{}", link["path"].as_str().unwrap()),
        Some("bytes=0-99"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    let (status, body) = json(
        post(serde_json::json!({"purpose": "download"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    let (status, _) = json(
        post(serde_json::json!({"purpose": "download", "reason": "legal request 42"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = json(
        post(serde_json::json!({"purpose": "stream", "extra": 1}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = json(
        post(serde_json::json!({"ttl_seconds": 999_999}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let issued = of(&events(&app).await, Action::PlaybackUrlIssued)
        .into_iter()
        .map(|e| e.details["reason"].clone())
        .collect::<Vec<_>>();
    assert!(
        issued.contains(&serde_json::json!("legal request 42")),
        "{issued:?}"
    );

    // The page itself: under its CSP, no inline script.
    let res = http().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = header(&res, "content-security-policy").to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(header(&res, "x-frame-options"), "DENY");
    let html = res.text().await.unwrap();
    assert!(html.contains("<script src=\"/assets/app.js\""));
    assert!(!html.contains("<script>"), "inline script in the page");
    for (asset, ty) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let res = http()
            .get(format!("{base}/assets/{asset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(header(&res, "content-type").starts_with(ty));
    }
    assert_eq!(
        http()
            .get(format!("{base}/assets/../Cargo.toml"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    app.shutdown().await;
}

fn uuid_v7() -> String {
    callvault::domain::RecordingId::new().to_string()
}

/// `callvault demo --keep-serving` prints the page's address and a token
/// that signs in, and stops on SIGTERM: the README's way to see the page.
#[tokio::test]
async fn demo_keep_serving_prints_a_page_that_works() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args(["demo", "--keep-serving"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut page, mut token) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.trim().strip_prefix("supervisor page: ") {
                page = Some(url.to_owned());
            }
            if let Some(t) = line
                .trim()
                .strip_prefix("supervisor token (sign in with it): ")
            {
                token = Some(t.to_owned());
            }
            if line.contains("serving until Ctrl-C") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("demo did not start serving");
    let (page, token) = (page.expect("page line"), token.expect("token line"));
    let res = http().get(&page).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = http()
        .get(format!("{page}api/v1/recordings"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(body["recordings"].as_array().unwrap().len(), 2);
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
