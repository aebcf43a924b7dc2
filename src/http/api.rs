//! The supervisor page's JSON API (same origin as the page, bearer token in
//! the `Authorization` header, never in a URL): search recordings, read
//! one, and get a signed playback URL. Each is the same use case the gRPC
//! API runs, audited the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Peer, common_headers, status_of_error};
use crate::archive::Archive;
use crate::domain::{Principal, RecordingId};
use crate::error::Error;
use crate::playback::{self, Purpose, RecordingView, search};

/// The caller of an API request, from its bearer token.
async fn principal(archive: &Archive, headers: &HeaderMap, peer: Peer) -> Result<Principal, Error> {
    let value = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    crate::access::authenticate(archive, value, Some(peer.0.to_string())).await
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    super::set(&mut res, header::CONTENT_TYPE, "application/json");
    common_headers(&mut res);
    res
}

fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}

/// `{"error": {"code": "...", "message": "..."}}` with the HTTP status of
/// the error.
pub(super) fn error(e: Error) -> Response {
    let (status, code, message) = status_of_error(e);
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn time(ms: i64) -> Value {
    json!(crate::domain::format_ms(ms))
}

fn recording_json(v: &RecordingView) -> Value {
    let r = &v.row;
    json!({
        "recording_id": r.id.to_string(),
        "external_call_id": r.external_call_id,
        "start_time": r.start_time_ms.map(time),
        "create_time": time(r.created_at_ms),
        "size_bytes": r.size_bytes,
        "duration_ms": r.audio.duration_ms,
        "container": r.audio.container,
        "codec": r.audio.codec,
        "media_type": crate::audio::media_type(&r.audio.container),
        "sample_rate_hz": r.audio.sample_rate_hz,
        "channels": r.audio.channels,
        "sha256": r.sha256,
        "labels": v.labels,
        "participants": v.participants,
        "legal_hold": r.legal_hold,
    })
}

/// `GET /api/v1/recordings?call_id=&from=&to=&label=k=v&participant=&min_duration_ms=&max_duration_ms=&kms_key_arn=&order_by=&view=&limit=&page_token=`
/// (`from`/`to`: ms since the epoch; `label` repeatable): the filters of
/// gRPC `ListRecordings`, newest call first unless `order_by` says otherwise.
pub(super) async fn list(
    State(archive): State<Arc<Archive>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let principal = match principal(&archive, &headers, peer).await {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let q = match parse_search(&uri) {
        Ok(q) => q,
        Err(e) => return error(e),
    };
    match search::search(&archive, &principal, &q, search::PAGE_API_PAGES).await {
        Ok(page) => ok(json!({
            "recordings": page.recordings.iter().map(recording_json).collect::<Vec<_>>(),
            "next_page_token": page.next_page_token,
            "unindexed_count": page.unindexed_count,
        })),
        Err(e) => error(e),
    }
}

fn parse_search(uri: &Uri) -> Result<search::Search, Error> {
    let mut q = search::Search::default();
    let mut labels = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let ms = |field: &str| {
            v.parse::<i64>()
                .map_err(|_| Error::invalid(field, "must be milliseconds since the Unix epoch"))
        };
        let number = |field: &str| {
            v.parse::<u64>()
                .map_err(|_| Error::invalid(field, "must be a whole number"))
        };
        match &*k {
            "call_id" => q.call_id = Some(v.to_owned()),
            "from" => q.from_ms = Some(ms("from")?),
            "to" => q.to_ms = Some(ms("to")?),
            "participant" => q.participant = Some(v.to_owned()),
            "min_duration_ms" => q.min_duration_ms = Some(number("min_duration_ms")?),
            "max_duration_ms" => q.max_duration_ms = Some(number("max_duration_ms")?),
            "kms_key_arn" => q.key_arn = Some(v.to_owned()),
            "order_by" => q.order_by = v.to_owned(),
            "view" => {
                q.view = match v {
                    "full" => search::View::Full,
                    "basic" => search::View::Basic,
                    _ => return Err(Error::invalid("view", "must be `full` or `basic`")),
                }
            }
            "limit" => {
                q.page_size = u32::try_from(number("limit")?)
                    .map_err(|_| Error::invalid("limit", "is too large"))?
            }
            "page_token" => q.page_token = v.to_owned(),
            "label" => {
                let (key, value) = v
                    .split_once('=')
                    .ok_or_else(|| Error::invalid("label", "must be key=value"))?;
                labels.insert(key.trim().to_owned(), value.trim().to_owned());
            }
            other => {
                return Err(Error::invalid(
                    "query",
                    &format!("unknown parameter `{other}`"),
                ));
            }
        }
    }
    q.labels = labels;
    Ok(q)
}

/// `GET /api/v1/recordings/{id}`.
pub(super) async fn get(
    State(archive): State<Arc<Archive>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let principal = match principal(&archive, &headers, peer).await {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let rec = match RecordingId::parse("recording_id", &id) {
        Ok(r) => r,
        Err(e) => return error(e.into()),
    };
    match playback::get(
        &archive,
        &principal,
        playback::Lookup::Id(rec),
        search::View::Full,
    )
    .await
    {
        Ok(view) => ok(recording_json(&view)),
        Err(e) => error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UrlRequest {
    #[serde(default)]
    purpose: Option<String>,
    #[serde(default)]
    ttl_seconds: u64,
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/recordings/{id}/playback-url` with
/// `{"purpose": "stream"|"download", "ttl_seconds": N, "reason": "…"}`: a
/// download needs a reason.
pub(super) async fn playback_url(
    State(archive): State<Arc<Archive>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let principal = match principal(&archive, &headers, peer).await {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let req: UrlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(Error::invalid("body", &e.to_string())),
    };
    let rec = match RecordingId::parse("recording_id", &id) {
        Ok(r) => r,
        Err(e) => return error(e.into()),
    };
    let purpose = match req.purpose.as_deref() {
        None | Some("stream") => Purpose::Stream,
        Some("download") => Purpose::Download,
        Some(_) => {
            return error(Error::invalid("purpose", "must be stream or download"));
        }
    };
    match playback::urls::issue(
        &archive,
        &principal,
        rec,
        req.ttl_seconds,
        purpose,
        req.reason.trim(),
    )
    .await
    {
        Ok(issued) => {
            let mut res = ok(json!({
                "path": issued.path,
                "url": archive.playback_url_base.as_deref().map(|b| format!("{b}{}", issued.path)),
                "expire_time": time(issued.expires_at_ms),
                "expire_time_ms": issued.expires_at_ms,
                "purpose": issued.purpose.as_str(),
            }));
            *res.status_mut() = StatusCode::CREATED;
            res
        }
        Err(e) => error(e),
    }
}
