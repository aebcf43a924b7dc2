//! The HTTP side door (SPEC §6): recordings' audio for browsers and `curl`
//! through signed URLs, with the range semantics media elements rely on.
//!
//! `GET|HEAD /v1/recordings/{id}/audio?sig=…[&rendition=wav]` checks the
//! URL (`playback::listening::authorize`), decides the range (`range`), and
//! streams only the chunks that overlap it, or the decoded WAV rendition
//! of them (`playback::rendition`), within the URL's audited listening
//! session (`playback::listening::serve_range`). The query
//! string is a credential: nothing here logs a URI, and every answer says
//! `Referrer-Policy: no-referrer`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::archive::Archive;
use crate::catalog::RecordingRow;
use crate::domain::RecordingId;
use crate::error::Error;
use crate::playback::listening::{self, UrlError, UrlRequest};
use crate::playback::rendition::View;

mod api;
mod page;
pub mod range;
pub mod serve;

use range::Ranged;

/// The peer's address, over plain TCP or TLS (set by `serve`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The router of the HTTP listener.
pub fn router(archive: Arc<Archive>) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/recordings/{id}/audio",
            axum::routing::get(audio).head(audio),
        )
        .route("/v1/recordings/{id}/peaks", axum::routing::get(peaks))
        .route("/api/v1/recordings", axum::routing::get(api::list))
        .route("/api/v1/recordings/{id}", axum::routing::get(api::get))
        .route(
            "/api/v1/recordings/{id}/playback-url",
            axum::routing::post(api::playback_url),
        )
        .route("/", axum::routing::get(page::index))
        .route("/assets/{name}", axum::routing::get(page::asset))
        .fallback(not_found)
        .with_state(archive)
}

async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found")
}

/// The `sig` (and `rendition`) parameters of the query string.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A signed-URL request for recording `id` checked (`listening::authorize`),
/// or the answer that refuses it.
async fn authorized(
    archive: &Archive,
    id: &str,
    uri: &Uri,
    peer: SocketAddr,
) -> Result<UrlRequest, Response> {
    let Ok(rec) = RecordingId::parse("recording", id) else {
        return Err(plain(StatusCode::NOT_FOUND, "no such recording"));
    };
    let sig = query_param(uri, "sig");
    listening::authorize(archive, rec, sig.as_deref(), Some(peer.to_string()))
        .await
        .map_err(failure)
}

async fn audio(
    State(archive): State<Arc<Archive>>,
    Path(id): Path<String>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let req = match authorized(&archive, &id, &uri, peer).await {
        Ok(req) => req,
        Err(res) => return res,
    };
    let view = match view_of(&archive, &req, &uri).await {
        Ok(view) => view,
        Err(res) => return res,
    };
    let size = view.size(&req.row);
    let etag = match view {
        View::Original => format!("\"{}\"", req.row.sha256),
        View::Wav(_) => format!("\"{}.wav\"", req.row.sha256),
    };
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let decided = range::decide(
        header_str(header::RANGE),
        header_str(header::IF_RANGE),
        size,
        &etag,
    );
    let (status, start, end) = match decided {
        Ranged::Full => (StatusCode::OK, 0, size),
        Ranged::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        Ranged::Unsatisfiable => {
            let mut res = plain(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the range is outside the recording",
            );
            set(&mut res, header::CONTENT_RANGE, &format!("bytes */{size}"));
            set(&mut res, header::ACCEPT_RANGES, "bytes");
            return res;
        }
    };
    let mut res = if method == Method::HEAD || start == end {
        // No audio leaves: the request still joins (or opens) the
        // listening session, so the metadata read is audited.
        match listening::touch(&archive, &req, &view).await {
            Ok(()) => Response::new(Body::empty()),
            Err(e) => return failure(e),
        }
    } else {
        match listening::serve_range(&archive, &req, &view, start, end).await {
            Ok(stream) => Response::new(Body::from_stream(stream)),
            Err(e) => return failure(e),
        }
    };
    *res.status_mut() = status;
    audio_headers(&mut res, &req, &view, &etag, start, end);
    res
}

/// The bytes a request asks for: the original, or (`rendition=wav`) the
/// decoded WAV rendition once the recording has one. 404 while it is being
/// prepared (with `Retry-After`) or when the format has none.
async fn view_of(archive: &Archive, req: &UrlRequest, uri: &Uri) -> Result<View, Response> {
    use crate::playback::rendition::{WavAnswer, wav_layout};
    match query_param(uri, "rendition").as_deref() {
        None | Some("original") => Ok(View::Original),
        Some("wav") => match wav_layout(archive, &req.row).await {
            Ok(WavAnswer::Ready(layout)) => Ok(View::Wav(layout)),
            Ok(WavAnswer::Pending) => {
                let mut res = plain(
                    StatusCode::NOT_FOUND,
                    "the decoded rendition is being prepared",
                );
                set(&mut res, header::RETRY_AFTER, "5");
                Err(res)
            }
            Ok(WavAnswer::Unavailable) => Err(plain(
                StatusCode::NOT_FOUND,
                "there is no decoded rendition for this format",
            )),
            Err(e) => Err(failure(e.into())),
        },
        Some(_) => Err(plain(
            StatusCode::BAD_REQUEST,
            "unknown rendition: the one there is, is `wav`",
        )),
    }
}

/// `GET /v1/recordings/{id}/peaks?sig=…`: the waveform peaks
/// (`audio::peaks`) under the same signed URL as the audio, within its
/// listening session. 404 while they are not computed (with
/// `Retry-After`) or when the format has none.
async fn peaks(
    State(archive): State<Arc<Archive>>,
    Path(id): Path<String>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    uri: Uri,
) -> Response {
    let req = match authorized(&archive, &id, &uri, peer).await {
        Ok(req) => req,
        Err(res) => return res,
    };
    if let Err(e) = listening::touch(&archive, &req, &View::Original).await {
        return failure(e);
    }
    use crate::playback::peaks::PeaksAnswer;
    match crate::playback::peaks::open(&archive, &req.row).await {
        Ok(PeaksAnswer::Stored(bytes)) => {
            let len = bytes.len();
            let mut res = Response::new(Body::from(bytes));
            set(&mut res, header::CONTENT_TYPE, "application/octet-stream");
            set(&mut res, header::CONTENT_LENGTH, &len.to_string());
            common_headers(&mut res);
            res
        }
        Ok(PeaksAnswer::Pending) => {
            let mut res = plain(StatusCode::NOT_FOUND, "the waveform is not computed yet");
            set(&mut res, header::RETRY_AFTER, "5");
            res
        }
        Ok(PeaksAnswer::Unavailable) => plain(
            StatusCode::NOT_FOUND,
            "there is no waveform for this format",
        ),
        Err(e) => failure(e.into()),
    }
}

/// The headers of an audio answer (200 or 206).
fn audio_headers(
    res: &mut Response,
    req: &UrlRequest,
    view: &View,
    etag: &str,
    start: u64,
    end: u64,
) {
    let row: &RecordingRow = &req.row;
    let (media_type, extension) = match view {
        View::Original => (
            crate::audio::media_type(&row.audio.container),
            crate::export::bag::extension(&row.audio.container),
        ),
        View::Wav(_) => ("audio/wav", "wav"),
    };
    set(res, header::CONTENT_TYPE, media_type);
    set(res, header::CONTENT_LENGTH, &(end - start).to_string());
    set(res, header::ACCEPT_RANGES, "bytes");
    set(res, header::ETAG, etag);
    if res.status() == StatusCode::PARTIAL_CONTENT {
        set(
            res,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{}", end - 1, view.size(row)),
        );
    }
    let disposition = match req.claims.purpose() {
        crate::playback::Purpose::Stream => "inline",
        crate::playback::Purpose::Download => "attachment",
    };
    set(
        res,
        header::CONTENT_DISPOSITION,
        &format!(
            "{disposition}; filename=\"recording-{}.{extension}\"",
            row.id,
        ),
    );
    common_headers(res);
}

/// What every answer carries: nothing cached, nothing sniffed, the URL
/// never sent on as a referrer.
pub(crate) fn common_headers(res: &mut Response) {
    set(res, header::CACHE_CONTROL, "private, no-store");
    set(res, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(res, header::REFERRER_POLICY, "no-referrer");
}

fn set(res: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        res.headers_mut().insert(name, v);
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut res = (status, format!("{text}\n")).into_response();
    set(&mut res, header::CONTENT_TYPE, "text/plain; charset=utf-8");
    common_headers(&mut res);
    res
}

/// A refused or failed audio request: 403 with the URL's reason, otherwise
/// the error's status and message as text.
fn failure(e: UrlError) -> Response {
    match e {
        UrlError::Refused(r) => plain(StatusCode::FORBIDDEN, &r.to_string()),
        UrlError::Failed(e) => {
            let (status, _, message) = status_of_error(e);
            plain(status, &message)
        }
    }
}

/// An error's HTTP status, its canonical code name and its message: by the
/// gRPC code the API gives it (one classification of errors, in `api`).
pub(crate) fn status_of_error(e: Error) -> (StatusCode, &'static str, String) {
    use tonic::Code;
    let status = tonic::Status::from(e);
    let http = match status.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition | Code::AlreadyExists => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let name = match http {
        // Anything else the API calls it is, over HTTP, an internal error.
        StatusCode::INTERNAL_SERVER_ERROR if status.code() != Code::DataLoss => "INTERNAL",
        _ => crate::api::code_name(status.code()),
    };
    (http, name, status.message().to_owned())
}
