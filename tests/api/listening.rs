//! Listening through a signed URL as the audit trail sees it: a session of
//! many range requests as a few events, a client hanging up, and a
//! revocation ending a response in flight.

use std::time::Duration;

use bytes::Bytes;
use callvault::api::pb;
use callvault::audit::event::Action;
use reqwest::StatusCode;

use crate::audit::{events, of};
use crate::helpers::*;
use crate::http_playback::{get, http, http_app, recording, stream_url, wait_for_finish};

/// A 40-request listen through one URL is one start and one finish event
/// naming the ranges sent; a client that hangs up early is recorded with
/// what it actually got.
#[tokio::test]
async fn a_listening_session_is_audited_as_a_few_events() {
    let app = http_app(CatalogKind::Sqlite).await;
    let (id, audio) = recording(&app, "call-listen", 64).await;
    let size = audio.len() as u64;
    let url = stream_url(&app, &id).await;
    let before = of(&events(&app).await, Action::PlaybackStarted).len();
    let step = size / 40;
    for i in 0..40 {
        let res = get(
            &url,
            Some(&format!("bytes={}-{}", i * step, i * step + 999)),
        )
        .await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        res.bytes().await.unwrap();
    }
    assert!(
        http()
            .head(&url)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let finished = wait_for_finish(&app, 1).await;
    let all = events(&app).await;
    assert_eq!(of(&all, Action::PlaybackStarted).len() - before, 1);
    let start = of(&all, Action::PlaybackStarted).last().copied().unwrap();
    assert_eq!(start.details["via"], "url");
    assert_eq!(start.details["purpose"], "stream");
    let f = &finished[0];
    assert_eq!(f.details["session"], start.details["session"]);
    assert_eq!(f.details["requests"], 41);
    assert_eq!(f.details["bytes_sent"], 40 * 1000);
    let ranges = f.details["byte_ranges"].as_str().unwrap();
    assert_eq!(ranges.split(',').count(), 40, "{ranges}");
    assert!(ranges.starts_with("0-999,"), "{ranges}");
    assert_eq!(f.details["completed"], false);
    assert_eq!(f.recordings, vec![id.clone()]);

    // A client that hangs up after the first piece of a whole-file GET
    // of a recording far larger than the sockets' buffers.
    let big = Bytes::from(callvault::synth::synth_wav(180, 48_000, 2));
    let size = big.len() as u64;
    let big_id = app
        .ingest("call-big", big)
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let url2 = stream_url(&app, &big_id).await;
    let mut res = get(&url2, None).await;
    let first = res.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(res);
    let finished = wait_for_finish(&app, 2).await;
    let sent = finished[1].details["bytes_sent"].as_u64().unwrap();
    assert!(
        sent < size,
        "the server went on reading after the client left: {sent} of {size}"
    );
    app.shutdown().await;
}

/// A player streaming `bytes=0-` holds one response for as long as it
/// plays: bumping the epoch ends that response too, within the re-check.
#[tokio::test]
async fn an_epoch_bump_ends_a_response_in_flight() {
    let app = http_app(CatalogKind::Sqlite).await;
    let big = Bytes::from(callvault::synth::synth_wav(180, 48_000, 2));
    let size = big.len() as u64;
    let id = app
        .ingest("call-inflight", big)
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let url = stream_url(&app, &id).await;
    let mut res = get(&url, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut got = res.chunk().await.unwrap().unwrap().len() as u64;
    let mut c = app.client(&app.compliance_token).await;
    c.playback
        .revoke_playback_urls(pb::RevokePlaybackUrlsRequest {})
        .await
        .unwrap();
    tokio::time::sleep(callvault::playback::listening::URL_RECHECK + Duration::from_millis(500))
        .await;
    let ended = loop {
        match res.chunk().await {
            Ok(Some(b)) => got += b.len() as u64,
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        ended,
        "the response went on to its end after the revocation"
    );
    assert!(got < size, "{got} of {size}");
    let f = wait_for_finish(&app, 1).await;
    assert!(
        f[0].details["error"].as_str().unwrap().contains("revoked"),
        "{:?}",
        f[0].details
    );
    app.shutdown().await;
}
