//! Every malformed input gets a precise status, leaves nothing half-written,
//! and the server keeps serving.

use bytes::Bytes;
use callvault::api::pb;
use callvault::client::Client;
use futures::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

fn data(b: &[u8]) -> pb::IngestRequest {
    callvault::api::data_message(Bytes::copy_from_slice(b))
}

fn trailer(of: &[u8]) -> pb::IngestRequest {
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, of);
    callvault::api::trailer_message(sha256.as_ref())
}

fn head(h: pb::IngestHeader) -> pb::IngestRequest {
    pb::IngestRequest {
        payload: Some(pb::ingest_request::Payload::Header(h)),
    }
}

/// Sends raw messages with a given token (or none), bypassing the CLI client's
/// own limits so oversized messages reach the server.
async fn raw_ingest(
    app: &TestApp,
    token: Option<&str>,
    msgs: Vec<pb::IngestRequest>,
) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(app.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::ingest_service_client::IngestServiceClient::new(channel)
        .max_encoding_message_size(64 << 20);
    let mut req = tonic::Request::new(futures::stream::iter(msgs));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match client.ingest(req).await {
        Ok(r) => panic!("expected an error, got {:?}", r.into_inner()),
        Err(s) => s,
    }
}

/// (name, token, messages, expected code, text the message must contain)
type Case<'a> = (
    &'a str,
    Option<&'a str>,
    Vec<pb::IngestRequest>,
    Code,
    &'a str,
);

#[tokio::test]
async fn bad_inputs_get_precise_statuses_and_leave_nothing_behind() {
    require!(Postgres);
    let app = spawn_app(CatalogKind::Postgres).await;
    let audio = fixture("speech_mulaw.wav");
    let good = app
        .ingest("good", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let mut random = vec![0u8; 300_000];
    callvault::crypto::fill_random(&mut random).unwrap();
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend(std::iter::repeat_n(b'x', 100_000));
    let tok = Some(app.ingest_token.as_str());
    let mut big_header = header("big-chunk");
    big_header.chunk_size_bytes = 17 << 20;
    let mut labels_header = header("labels");
    labels_header.labels = (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();

    let cases: Vec<Case> = vec![
        ("empty stream", tok, vec![], Code::InvalidArgument, "header"),
        (
            "no header",
            tok,
            vec![data(&audio[..1000])],
            Code::InvalidArgument,
            "first message must carry the header",
        ),
        (
            "header only",
            tok,
            vec![head(header("h-only"))],
            Code::InvalidArgument,
            "without any audio",
        ),
        (
            "non-audio (PDF)",
            tok,
            vec![head(header("pdf")), data(&pdf)],
            Code::InvalidArgument,
            "PDF document",
        ),
        (
            "random bytes",
            tok,
            vec![head(header("rnd")), data(&random)],
            Code::InvalidArgument,
            "unrecognised binary data",
        ),
        (
            "text",
            tok,
            vec![
                head(header("txt")),
                data(b"hello, this is not audio at all"),
            ],
            Code::InvalidArgument,
            "text",
        ),
        (
            "second header",
            tok,
            vec![
                head(header("two")),
                data(&audio[..70_000]),
                head(header("two")),
                data(&audio[70_000..]),
            ],
            Code::InvalidArgument,
            "only the first message",
        ),
        (
            "trailer of other bytes",
            tok,
            vec![
                head(header("trailer-wrong")),
                data(&audio),
                trailer(&audio[1..]),
            ],
            Code::InvalidArgument,
            "differs from the SHA-256 of the bytes that arrived",
        ),
        (
            "trailer too short",
            tok,
            vec![
                head(header("trailer-short")),
                data(&audio),
                callvault::api::trailer_message(&[7u8; 16]),
            ],
            Code::InvalidArgument,
            "32 bytes",
        ),
        (
            "data after the trailer",
            tok,
            vec![
                head(header("trailer-early")),
                data(&audio[..70_000]),
                trailer(&audio[..70_000]),
                data(&audio[70_000..]),
            ],
            Code::InvalidArgument,
            "must be the last message",
        ),
        (
            "empty call id",
            tok,
            vec![head(header("")), data(&audio)],
            Code::InvalidArgument,
            "external_call_id",
        ),
        (
            "chunk size too large",
            tok,
            vec![head(big_header), data(&audio)],
            Code::InvalidArgument,
            "chunk_size_bytes",
        ),
        (
            "too many labels",
            tok,
            vec![head(labels_header), data(&audio)],
            Code::InvalidArgument,
            "labels",
        ),
        (
            "oversized message",
            tok,
            vec![head(header("big")), data(&vec![0u8; 5 << 20])],
            Code::ResourceExhausted,
            "4194304",
        ),
        (
            "missing token",
            None,
            vec![head(header("x")), data(&audio)],
            Code::Unauthenticated,
            "bearer",
        ),
        (
            "wrong token",
            Some("cv_not-a-real-token"),
            vec![head(header("x")), data(&audio)],
            Code::Unauthenticated,
            "token",
        ),
        (
            "wrong role",
            Some(app.supervisor_token.as_str()),
            vec![head(header("x")), data(&audio)],
            Code::PermissionDenied,
            "may not ingest",
        ),
    ];
    for (name, token, msgs, code, needle) in cases {
        let status = raw_ingest(&app, token, msgs).await;
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{name}: message `{}` lacks `{needle}`",
            status.message()
        );
        // Every refusal carries a google.rpc.ErrorInfo a program can branch on.
        let details = status.get_error_details();
        let info = details
            .error_info()
            .unwrap_or_else(|| panic!("{name}: no ErrorInfo in {status:?}"));
        assert_eq!(info.domain, "callvault.v1", "{name}");
        assert!(!info.reason.is_empty(), "{name}");
        match code {
            Code::InvalidArgument if !info.reason.starts_with("NOT_AUDIO") => {
                // The violation names the field the message names.
                let v = &details.bad_request().expect(name).field_violations[0];
                assert!(!v.field.is_empty(), "{name}: {v:?}");
                assert_eq!(info.metadata["field"], v.field, "{name}");
                assert!(
                    status.message().starts_with(&format!("{}: ", v.field))
                        && status.message().contains(&v.description),
                    "{name}: {v:?} vs `{}`",
                    status.message()
                );
            }
            Code::ResourceExhausted => {
                assert_eq!(info.reason, "MESSAGE_TOO_LARGE");
                assert_eq!(info.metadata["limit_bytes"], "4194304");
            }
            _ => {}
        }
        if name == "trailer of other bytes" {
            assert_eq!(info.reason, "SHA256_MISMATCH");
            assert_eq!(
                info.metadata["computed_sha256"],
                callvault::crypto::sha256_hex(&audio)
            );
            assert_eq!(
                info.metadata["sent_sha256"],
                callvault::crypto::sha256_hex(&audio[1..])
            );
        }
    }

    // Reads with the wrong role, another tenant's id, malformed ids.
    let mut ingest_client = app.client(&app.ingest_token).await;
    let s = ingest_client.play_all(&good, 0).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    let (_, _, other_sup) = app.other_tenant("initech").await;
    let mut other = Client::connect(&app.addr, &other_sup).await.unwrap();
    assert_eq!(
        other.play_all(&good, 0).await.unwrap_err().code(),
        Code::NotFound
    );
    let s = other
        .playback
        .get_recording(pb::GetRecordingRequest {
            recording_id: good.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let info = s.get_error_details().error_info().unwrap().clone();
    assert_eq!(info.reason, "RECORDING_NOT_FOUND");
    assert_eq!(info.metadata["recording_id"], good);
    let mut sup = app.client(&app.supervisor_token).await;
    let s = sup.play_all("not-an-id", 0).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("recording_id"));
    let s = sup
        .playback
        .list_recordings(pb::ListRecordingsRequest {
            page_size: 10,
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = sup
        .playback
        .list_recordings(pb::ListRecordingsRequest {
            page_size: 5000,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let v = s
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations[0]
        .clone();
    assert_eq!(v.field, "page_size");
    assert_eq!(v.description, "must be at most 1000");

    // Nothing half-written: no upload rows, and exactly the good recording's
    // objects in the store.
    use sqlx::Row;
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM recordings WHERE status <> 'complete'")
        .fetch_one(app.archive.catalog.pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(n, 0, "no upload left behind");
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM recordings")
        .fetch_one(app.archive.catalog.pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(n, 1);
    let objects = walk_objects(&app);
    assert_eq!(
        objects,
        audio.len().div_ceil(64 * 1024),
        "only the good recording's objects exist"
    );

    // Still serving.
    let again = app
        .ingest("good-2", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap();
    assert!(app.play(&again.recording_id).await.unwrap() == audio);
    app.shutdown().await;
}

fn walk_objects(app: &TestApp) -> usize {
    fn count(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(&app.dir.path().join("objects"))
}

/// A loopback TCP proxy whose connections can be cut, to drop a client the
/// way a network does (no clean end of stream).
async fn cuttable_proxy(upstream: &str) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            conns.spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn client_disconnect_mid_upload_leaves_nothing() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let audio = fixture("speech_pcm.wav");
    let (proxy, cut) = cuttable_proxy(&app.addr).await;
    let channel = tonic::transport::Channel::from_shared(proxy)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::ingest_service_client::IngestServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut h = header("dropped");
    h.chunk_size_bytes = 64 * 1024;
    tx.send(head(h)).await.unwrap();
    for piece in audio[..200_000].chunks(50_000) {
        tx.send(data(piece)).await.unwrap();
    }
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx).boxed());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", app.ingest_token).parse().unwrap(),
    );
    let call = async {
        // Keep the sender alive: the stream never ends cleanly.
        let _keep = &tx;
        client.ingest(req).await
    };
    let cutter = async {
        // Wait until chunks are on disk, then cut the network.
        for _ in 0..100 {
            if walk_objects(&app) >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            walk_objects(&app) >= 2,
            "chunks were written before the cut"
        );
        cut.abort();
    };
    let (res, ()) = tokio::join!(call, cutter);
    assert!(res.is_err(), "the upload fails when its connection is cut");
    // The server notices the broken stream and removes what it wrote.
    let mut left = usize::MAX;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = walk_objects(&app);
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "objects of the dropped upload were removed");
    use sqlx::Row;
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM recordings")
        .fetch_one(app.archive.catalog.pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(n, 0, "no row of the dropped upload remains");
    app.shutdown().await;
}
