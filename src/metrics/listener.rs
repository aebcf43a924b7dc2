//! The metrics listener: `GET /metrics` beside gRPC, on its own address.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::archive::Archive;
use crate::server::{HttpTls, Roles};
use crate::tls::{self, ServerTls, TlsIncoming};

/// Serves the node's metrics on `GET /metrics` (anything else is 404):
/// OpenMetrics to a scraper whose `Accept` asks for it, the Prometheus text
/// format otherwise. Over TLS when `tls` is given (the node's certificate
/// and client verification, ALPN `http/1.1`), until the process ends.
/// `roles` are the node's: a node that checks keys answers its first scrape
/// after its first key-health pass.
pub async fn serve_metrics(
    listener: TcpListener,
    tls: Option<&ServerTls>,
    archive: Arc<Archive>,
    roles: Roles,
) {
    use axum::http::{HeaderMap, header};
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let archive = archive.clone();
            async move {
                let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let format = super::Format::negotiate(accept);
                (
                    [(header::CONTENT_TYPE, format.content_type())],
                    scrape(&archive, roles, format).await,
                )
            }
        }),
    );
    let served = match tls {
        None => axum::serve(listener, app).await,
        Some(tls) => match TlsIncoming::new(listener, tls.acceptor(&[tls::ALPN_HTTP1])) {
            Ok(incoming) => axum::serve(HttpTls(incoming), app).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics listener failed");
    }
}

/// How long a scrape waits, in all, for what it reads fresh (the first
/// key-health pass, the catalog's backlog) before it answers without it:
/// well inside Prometheus' default scrape timeout of 10 s.
const SCRAPE_WAIT: Duration = Duration::from_secs(5);

/// The node's metrics as a scrape sees them: after the node's first
/// key-health pass, with the compliance backlog read now (left out if the
/// catalog does not answer in time).
async fn scrape(archive: &Archive, roles: Roles, format: super::Format) -> String {
    let deadline = tokio::time::Instant::now() + SCRAPE_WAIT;
    if roles.checks_keys()
        && tokio::time::timeout_at(deadline, crate::keys::prime(archive))
            .await
            .is_err()
    {
        tracing::warn!("metrics scraped before the first key health check finished");
    }
    let backlog = match tokio::time::timeout_at(deadline, crate::compliance::backlog(archive)).await
    {
        Ok(Ok(b)) => Some(b),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "compliance backlog not read for the metrics");
            None
        }
        Err(_) => {
            tracing::warn!("compliance backlog not read for the metrics in time");
            None
        }
    };
    archive.metrics.set_backlog(backlog);
    archive.metrics.render(format)
}
