//! The supervisor page (`/`): plain HTML, CSS and hand-written JavaScript
//! embedded in the binary (no CDN, no build step), served under a strict
//! Content-Security-Policy: scripts, styles, media and API calls from this
//! origin only, no inline code, no framing.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{common_headers, plain, set};

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

/// What the page may load and do.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; media-src 'self'; connect-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn page_response(body: &'static str, content_type: &str) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    set(&mut res, header::CONTENT_TYPE, content_type);
    set(
        &mut res,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(&mut res, header::X_FRAME_OPTIONS, "DENY");
    common_headers(&mut res);
    res
}

pub(super) async fn index() -> Response {
    page_response(INDEX_HTML, "text/html; charset=utf-8")
}

pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => page_response(APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => page_response(APP_CSS, "text/css; charset=utf-8"),
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}
