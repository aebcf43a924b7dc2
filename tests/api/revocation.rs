//! A KMS key that stops working ends the Play streams already sending
//! under it (hardening issue, item 9): without any signal within the key
//! cache's TTL plus one re-check, and at once on every node when one node
//! finds the key refused; and an export the same way.

use std::time::{Duration, Instant};

use callvault::api::pb;
use callvault::kms::cache::KeyCacheConfig;
use tonic::Code;

use crate::helpers::*;
use crate::keys::active_arn;
use crate::tokens::{big_recording, play_slowly};

/// An embedded app whose key cache forgets after 1 s (re-checks every 250 ms).
async fn short_ttl_app() -> TestApp {
    let cache = KeyCacheConfig {
        ttl: Duration::from_secs(1),
        ..Default::default()
    };
    spawn_app_with(CatalogKind::Sqlite, Remote::Local, cache).await
}

/// Control: re-checks every 250 ms do not disturb a healthy stream.
#[tokio::test]
async fn a_slow_play_under_a_working_key_completes() {
    let app = short_ttl_app().await;
    let (id, size) = big_recording(&app).await;
    let (got, end) = play_slowly(
        &app.addr,
        &app.supervisor_token,
        &id,
        async {},
        Duration::from_millis(60),
    )
    .await;
    end.unwrap();
    assert_eq!(got, size);
}

/// Nobody tells the node: the stream's own re-check (a quarter of the
/// 1 s TTL) finds the key disabled once its cached answer expires.
#[tokio::test]
async fn a_play_ends_within_the_cache_ttl_when_its_key_is_disabled() {
    let app = short_ttl_app().await;
    let (id, size) = big_recording(&app).await;
    let arn = active_arn(&app).await;
    let disabled_at = std::sync::Mutex::new(None);
    let (got, end) = play_slowly(
        &app.addr,
        &app.supervisor_token,
        &id,
        async {
            app.ring().set_enabled(&arn, false).unwrap();
            *disabled_at.lock().unwrap() = Some(Instant::now());
        },
        Duration::from_millis(100),
    )
    .await;
    let took = disabled_at.lock().unwrap().unwrap().elapsed();
    let err = end.expect_err("the play outlived its key");
    // The whole recording at this pace would take 3.4 s.
    assert_ended_by_disabled_key(&err, &arn, got, size, took);
}

/// A stream ended by its key's re-check after the key was disabled: the
/// status names the key, the stream was cut short, and it ended within the
/// TTL (1 s) + one re-check (250 ms) + the client's pauses.
fn assert_ended_by_disabled_key(
    err: &tonic::Status,
    arn: &str,
    got: usize,
    size: usize,
    took: Duration,
) {
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("became unusable while its recordings were being read")
            && err.message().contains(arn),
        "{}",
        err.message()
    );
    assert!(got < size, "{got} of {size}");
    assert!(
        took < Duration::from_secs(3),
        "ended {took:?} after the key was disabled"
    );
}

/// Another node's health check finds the key disabled and says so over
/// NOTIFY: this node's stream ends at once although its cache (TTL 5 min)
/// still holds the data key.
#[tokio::test]
async fn a_play_ends_on_every_node_when_one_node_finds_its_key_disabled() {
    let app = spawn_app(CatalogKind::Postgres).await;
    let (id, size) = big_recording(&app).await;
    let arn = active_arn(&app).await;
    let other = app
        .node(
            app.ring().clone(),
            callvault::server::Roles::ALL,
            &KeyCacheConfig::default(),
        )
        .await;
    let checked_at = std::sync::Mutex::new(None);
    let (got, end) = play_slowly(
        &other.addr,
        &app.supervisor_token,
        &id,
        async {
            app.ring().set_enabled(&arn, false).unwrap();
            callvault::keys::check_all(&app.archive).await.unwrap();
            *checked_at.lock().unwrap() = Some(Instant::now());
        },
        Duration::from_millis(100),
    )
    .await;
    let took = checked_at.lock().unwrap().unwrap().elapsed();
    let err = end.expect_err("the play outlived its key");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("disabled"), "{}", err.message());
    assert!(got < size / 2, "{got} of {size}");
    assert!(
        took < Duration::from_secs(2),
        "ended {took:?} after the announcement"
    );
}

/// An export reads under the same keys as a play, so a key that stops
/// working ends it the same way: here nobody tells the node, and the
/// export's own re-check finds the key disabled within the cache's TTL.
#[tokio::test]
async fn an_export_ends_within_the_cache_ttl_when_its_key_is_disabled() {
    let app = short_ttl_app().await;
    let (id, size) = big_recording(&app).await;
    let arn = active_arn(&app).await;
    let mut stream = app
        .client(&app.compliance_token)
        .await
        .export
        .export(crate::export::by_ids(&[&id]))
        .await
        .unwrap()
        .into_inner();
    let header = match stream.message().await.unwrap().and_then(|m| m.payload) {
        Some(pb::export_response::Payload::Header(h)) => h,
        other => panic!("the first message is not a header: {other:?}"),
    };
    assert!(header.tar_size_bytes as usize > size);
    app.ring().set_enabled(&arn, false).unwrap();
    let disabled_at = Instant::now();
    let mut got = 0usize;
    let err = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match stream.message().await {
            Ok(Some(m)) => match m.payload {
                Some(pb::export_response::Payload::Data(d)) => got += d.len(),
                other => panic!("a message after the header is not data: {other:?}"),
            },
            Ok(None) => panic!("the export outlived its key ({got} bytes)"),
            Err(e) => break e,
        }
    };
    assert_ended_by_disabled_key(&err, &arn, got, size, disabled_at.elapsed());
}
