//! Finding recordings as a contact center looks for them (`ListRecordings`
//! filters, order and paging; `GetRecording` by call id; labels and
//! participants in answers), over real gRPC and through the real CLI, on
//! both catalogs.

use std::collections::HashMap;

use bytes::Bytes;
use callvault::api::pb;
use tonic::Code;

use crate::helpers::*;

/// One call of the test set: its call id, start (minutes after `BASE_MS`),
/// length in seconds, queue label and agent participant.
struct Call {
    id: &'static str,
    start_min: i64,
    seconds: u32,
    queue: &'static str,
    agent: &'static str,
}

/// 2026-11-02T09:00:00Z.
const BASE_MS: i64 = 1_793_610_000_000;

const CALLS: [Call; 6] = [
    Call {
        id: "c-1",
        start_min: 0,
        seconds: 4,
        queue: "billing",
        agent: "a-1",
    },
    Call {
        id: "c-2",
        start_min: 30,
        seconds: 12,
        queue: "sales",
        agent: "a-2",
    },
    Call {
        id: "c-3",
        start_min: 60,
        seconds: 25,
        queue: "billing",
        agent: "a-1",
    },
    Call {
        id: "c-4",
        start_min: 90,
        seconds: 7,
        queue: "support",
        agent: "a-3",
    },
    Call {
        id: "c-5",
        start_min: 120,
        seconds: 33,
        queue: "billing",
        agent: "a-2",
    },
    Call {
        id: "c-6",
        start_min: 150,
        seconds: 18,
        queue: "sales",
        agent: "a-1",
    },
];

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn start_ms(c: &Call) -> i64 {
    BASE_MS + c.start_min * 60_000
}

async fn ingest_calls(app: &TestApp) -> HashMap<&'static str, pb::Recording> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = HashMap::new();
    // Ingested out of start order, so start order and creation order differ.
    for i in [2usize, 0, 5, 1, 4, 3] {
        let c = &CALLS[i];
        let audio: Bytes = ffmpeg_noise(
            dir.path(),
            &format!("{}.wav", c.id),
            c.seconds,
            8000,
            1,
            &["-c:a", "pcm_mulaw"],
        )
        .await;
        let mut h = header(c.id);
        h.start_time = Some(ts(start_ms(c)));
        h.labels = HashMap::from([
            ("queue".to_owned(), c.queue.to_owned()),
            ("site".to_owned(), "lisbon".to_owned()),
        ]);
        h.participants = HashMap::from([("agent".to_owned(), c.agent.to_owned())]);
        let res = app
            .client(&app.ingest_token)
            .await
            .ingest_stream(h, callvault::client::pieces(audio, 64 * 1024))
            .await
            .unwrap();
        assert!(!res.deduplicated);
        let rec = res.recording.unwrap();
        // The ingest answer carries what this caller sent.
        assert_eq!(rec.labels["queue"], c.queue, "{}", c.id);
        assert_eq!(rec.participants["agent"], c.agent, "{}", c.id);
        assert_eq!(rec.start_time, Some(ts(start_ms(c))));
        assert!(rec.create_time.is_some());
        out.insert(c.id, rec);
    }
    out
}

fn ids(recs: &[pb::Recording]) -> Vec<String> {
    recs.iter().map(|r| r.external_call_id.clone()).collect()
}

/// Every page of `req` (page size `page`), in order.
async fn all_pages(
    sup: &mut callvault::client::Client,
    req: pb::ListRecordingsRequest,
    page: u32,
) -> Vec<pb::Recording> {
    let mut req = pb::ListRecordingsRequest {
        page_size: page,
        ..req
    };
    let mut out = Vec::new();
    loop {
        let res = sup
            .playback
            .list_recordings(req.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(res.recordings.len() <= page as usize);
        out.extend(res.recordings);
        if res.next_page_token.is_empty() {
            return out;
        }
        req.page_token = res.next_page_token;
    }
}

async fn list(sup: &mut callvault::client::Client, req: pb::ListRecordingsRequest) -> Vec<String> {
    ids(&all_pages(sup, req, 1000).await)
}

fn expect(pred: impl Fn(&Call) -> bool, newest_first: bool) -> Vec<String> {
    let mut v: Vec<&Call> = CALLS.iter().filter(|c| pred(c)).collect();
    v.sort_by_key(|c| c.start_min);
    if newest_first {
        v.reverse();
    }
    v.iter().map(|c| c.id.to_owned()).collect()
}

async fn searches_filter_order_and_page(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let ingested = ingest_calls(&app).await;
    let mut sup = app.client(&app.supervisor_token).await;
    let q = pb::ListRecordingsRequest::default;

    // Newest call first by default, with times, labels and participants.
    let all = all_pages(&mut sup, q(), 1000).await;
    assert_eq!(ids(&all), expect(|_| true, true));
    for r in &all {
        let c = CALLS.iter().find(|c| c.id == r.external_call_id).unwrap();
        assert_eq!(r.start_time, Some(ts(start_ms(c))));
        assert!(r.create_time.is_some());
        assert_eq!(r.labels["queue"], c.queue);
        assert_eq!(r.labels["site"], "lisbon");
        assert_eq!(r.participants["agent"], c.agent);
        assert_eq!(r.size_bytes, ingested[c.id].size_bytes);
        assert_eq!(r.sha256, ingested[c.id].sha256);
        let ms = r.audio.as_ref().unwrap().duration_ms;
        assert!(
            ms.abs_diff(u64::from(c.seconds) * 1000) < 100,
            "{} {ms}",
            c.id
        );
    }
    // The basic view opens nothing.
    let basic = all_pages(
        &mut sup,
        pb::ListRecordingsRequest {
            view: pb::RecordingView::Basic.into(),
            ..q()
        },
        1000,
    )
    .await;
    assert_eq!(ids(&basic), ids(&all));
    assert!(
        basic
            .iter()
            .all(|r| r.labels.is_empty() && r.participants.is_empty())
    );

    // Orders.
    let order = |o: &str| pb::ListRecordingsRequest {
        order_by: o.into(),
        ..q()
    };
    assert_eq!(
        list(&mut sup, order("start_time asc")).await,
        expect(|_| true, false)
    );
    assert_eq!(
        list(&mut sup, order("start_time")).await,
        expect(|_| true, false)
    );
    // Creation order is the ingest order above: c-3, c-1, c-6, c-2, c-5, c-4.
    assert_eq!(
        list(&mut sup, order("create_time desc")).await,
        ["c-4", "c-5", "c-2", "c-6", "c-1", "c-3"]
    );
    let bad = sup
        .playback
        .list_recordings(order("size_bytes desc"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("order_by"), "{}", bad.message());

    // Start-time range: [from, to).
    let from = BASE_MS + 30 * 60_000;
    let to = BASE_MS + 120 * 60_000;
    let range = pb::ListRecordingsRequest {
        start_time_from: Some(ts(from)),
        start_time_to: Some(ts(to)),
        ..q()
    };
    assert_eq!(
        list(&mut sup, range.clone()).await,
        expect(|c| (30..120).contains(&c.start_min), true)
    );
    let empty = pb::ListRecordingsRequest {
        start_time_from: Some(ts(to)),
        start_time_to: Some(ts(from)),
        ..q()
    };
    let err = sup.playback.list_recordings(empty).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("start_time_to"), "{}", err.message());

    // Call id.
    let by_call = pb::ListRecordingsRequest {
        external_call_id: "c-4".into(),
        ..q()
    };
    assert_eq!(list(&mut sup, by_call).await, ["c-4"]);

    // Labels: one, two (AND), and one that nobody has.
    let labels = |pairs: &[(&str, &str)]| pb::ListRecordingsRequest {
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..q()
    };
    assert_eq!(
        list(&mut sup, labels(&[("queue", "billing")])).await,
        expect(|c| c.queue == "billing", true)
    );
    assert_eq!(
        list(
            &mut sup,
            labels(&[("queue", "billing"), ("site", "lisbon")])
        )
        .await,
        expect(|c| c.queue == "billing", true)
    );
    assert!(
        list(&mut sup, labels(&[("queue", "billing"), ("site", "porto")]))
            .await
            .is_empty()
    );
    assert!(
        list(&mut sup, labels(&[("queue", "Billing")]))
            .await
            .is_empty()
    );

    // Participant, combined with a label and a time range.
    let combined = pb::ListRecordingsRequest {
        participant: "a-1".into(),
        labels: HashMap::from([("queue".to_owned(), "billing".to_owned())]),
        ..range.clone()
    };
    assert_eq!(
        list(&mut sup, combined).await,
        expect(
            |c| c.agent == "a-1" && c.queue == "billing" && (30..120).contains(&c.start_min),
            true
        )
    );

    // Duration range, inclusive at both ends.
    let durations = pb::ListRecordingsRequest {
        min_duration_ms: Some(10_000),
        max_duration_ms: Some(25_500),
        ..q()
    };
    assert_eq!(
        list(&mut sup, durations).await,
        expect(|c| (10..=25).contains(&c.seconds), true)
    );
    let short = pb::ListRecordingsRequest {
        max_duration_ms: Some(8_000),
        ..q()
    };
    assert_eq!(
        list(&mut sup, short).await,
        expect(|c| c.seconds <= 8, true)
    );

    // Key ARN: the tenant's key wraps them all; another wraps none.
    let arn = all[0].kms_key_arn.clone();
    let by_key = |arn: &str| pb::ListRecordingsRequest {
        kms_key_arn: arn.into(),
        ..q()
    };
    assert_eq!(list(&mut sup, by_key(&arn)).await.len(), CALLS.len());
    let other = arn.replace(
        arn.rsplit('/').next().unwrap(),
        "00000000-0000-4000-8000-000000000000",
    );
    assert!(list(&mut sup, by_key(&other)).await.is_empty());
    let err = sup
        .playback
        .list_recordings(by_key("not-an-arn"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Paging: page sizes 1..=4 give exactly the unpaged answer, for the
    // default order and a filtered ascending one.
    let filtered = pb::ListRecordingsRequest {
        order_by: "start_time asc".into(),
        labels: HashMap::from([("site".to_owned(), "lisbon".to_owned())]),
        ..q()
    };
    for size in 1..=4 {
        assert_eq!(
            ids(&all_pages(&mut sup, q(), size).await),
            ids(&all),
            "page size {size}"
        );
        assert_eq!(
            ids(&all_pages(&mut sup, filtered.clone(), size).await),
            expect(|_| true, false),
            "page size {size}"
        );
    }
    // A token belongs to its own search.
    let first = sup
        .playback
        .list_recordings(pb::ListRecordingsRequest {
            page_size: 2,
            ..filtered.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    assert_eq!(first.unindexed_count, 0);
    let err = sup
        .playback
        .list_recordings(pb::ListRecordingsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..q()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{}", err.message());
    // The page size and the view may change between pages.
    let second = sup
        .playback
        .list_recordings(pb::ListRecordingsRequest {
            page_size: 3,
            page_token: first.next_page_token,
            view: pb::RecordingView::Basic.into(),
            ..filtered.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&second.recordings), expect(|_| true, false)[2..5]);

    // GetRecording by call id is the same recording as by id.
    let c5 = &ingested["c-5"];
    let by_id = sup
        .playback
        .get_recording(pb::GetRecordingRequest {
            recording_id: c5.recording_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let by_call = sup
        .playback
        .get_recording(pb::GetRecordingRequest {
            external_call_id: "c-5".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id, by_call);
    assert_eq!(by_call.recording_id, c5.recording_id);
    assert_eq!(by_call.labels["queue"], "billing");
    assert_eq!(by_call.participants["agent"], "a-2");
    let missing = sup
        .playback
        .get_recording(pb::GetRecordingRequest {
            external_call_id: "c-404".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    for req in [
        pb::GetRecordingRequest::default(),
        pb::GetRecordingRequest {
            recording_id: c5.recording_id.clone(),
            external_call_id: "c-5".into(),
            ..Default::default()
        },
    ] {
        let err = sup.playback.get_recording(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    }

    // A retried ingest of a committed call answers without labels: an ingest
    // token never reads what another upload stored.
    let mut again = header("c-5");
    again.labels = HashMap::from([("queue".to_owned(), "other".to_owned())]);
    let dedup = app
        .client(&app.ingest_token)
        .await
        .ingest_stream(
            again,
            callvault::client::pieces(Bytes::from_static(b"x"), 1),
        )
        .await
        .unwrap();
    assert!(dedup.deduplicated);
    let rec = dedup.recording.unwrap();
    assert_eq!(rec.recording_id, c5.recording_id);
    assert!(rec.labels.is_empty() && rec.participants.is_empty());

    cli_searches(&app, &ingested).await;
    app.shutdown().await;
}

/// The same searches through the real binary: flags, JSON field names and
/// `--limit` / `--page-token`.
async fn cli_searches(app: &TestApp, ingested: &HashMap<&'static str, pb::Recording>) {
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli_against(&app.addr, &app.supervisor_token, &args).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let call_ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["external_call_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let out = run(args(&[
        "recordings",
        "list",
        "--from",
        "2026-11-02T09:30:00Z",
        "--to",
        "2026-11-02T11:30:00+01:00",
        "--label",
        "queue=billing",
        "--min-duration",
        "20",
        "--max-duration",
        "1m",
        "--json",
    ]))
    .await;
    // 09:30 <= start < 10:30 UTC, billing, 20 s..=1 min: c-3 (10:00, 25 s).
    assert_eq!(call_ids(&json(&out)), ["c-3"]);
    let out = run(args(&[
        "recordings",
        "list",
        "--from",
        "2026-11-02",
        "--label",
        "queue=billing",
        "--min-duration",
        "20",
        "--json",
    ]))
    .await;
    let v = json(&out);
    assert_eq!(call_ids(&v), ["c-5", "c-3"]);
    let r = &v[0];
    let c5 = &ingested["c-5"];
    assert_eq!(r["recording_id"], c5.recording_id.as_str());
    assert_eq!(r["size_bytes"], c5.size_bytes);
    assert_eq!(r["chunk_count"], c5.chunk_count);
    assert_eq!(r["start_time"], "2026-11-02T11:00:00Z");
    assert!(r["create_time"].as_str().unwrap().starts_with("20"));
    assert_eq!(r["labels"]["queue"], "billing");
    assert_eq!(r["participants"]["agent"], "a-2");
    assert!(r.get("bytes").is_none() && r.get("chunks").is_none());

    // --limit stops early and says how to go on; --page-token goes on.
    let out = run(args(&[
        "recordings",
        "list",
        "--order-by",
        "start_time asc",
        "--limit",
        "4",
        "--json",
    ]))
    .await;
    assert_eq!(call_ids(&json(&out)), ["c-1", "c-2", "c-3", "c-4"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let token = stderr
        .split("--page-token ")
        .nth(1)
        .unwrap_or_else(|| panic!("no page token in {stderr}"))
        .trim()
        .to_owned();
    let out = run(vec![
        "recordings".into(),
        "list".into(),
        "--order-by".into(),
        "start_time asc".into(),
        "--page-token".into(),
        token,
        "--json".into(),
    ])
    .await;
    assert_eq!(call_ids(&json(&out)), ["c-5", "c-6"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("--page-token"));

    // Participants, key ARN.
    let out = run(args(&[
        "recordings",
        "list",
        "--participant",
        "a-3",
        "--json",
    ]))
    .await;
    assert_eq!(call_ids(&json(&out)), ["c-4"]);
    let out = run(args(&[
        "recordings",
        "list",
        "--key",
        &c5.kms_key_arn,
        "--json",
    ]))
    .await;
    assert_eq!(call_ids(&json(&out)).len(), CALLS.len());

    // get --call-id, JSON and table.
    let out = run(args(&["recordings", "get", "--call-id", "c-5", "--json"])).await;
    let v = json(&out);
    assert_eq!(v["recording_id"], c5.recording_id.as_str());
    assert_eq!(v["size_bytes"], c5.size_bytes);
    let out = run(args(&["recordings", "get", "--call-id", "c-5"])).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&c5.recording_id), "{table}");
    assert!(table.contains("started 2026-11-02T11:00:00Z"), "{table}");
    assert!(table.contains("agent: a-2"), "{table}");
    // A usage error and a missing call are told apart by exit code.
    let out = cli_against(&app.addr, &app.supervisor_token, &["recordings", "get"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = cli_against(
        &app.addr,
        &app.supervisor_token,
        &["recordings", "get", "--call-id", "nope"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    let out = cli_against(
        &app.addr,
        &app.supervisor_token,
        &["recordings", "list", "--from", "yesterday"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn recordings_are_found_by_every_filter_on_sqlite() {
    searches_filter_order_and_page(CatalogKind::Sqlite).await;
}

#[tokio::test]
async fn recordings_are_found_by_every_filter_on_postgres() {
    require!(Postgres);
    searches_filter_order_and_page(CatalogKind::Postgres).await;
}
