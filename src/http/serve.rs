//! The HTTP listener's connections: HTTP/1.1 (what browsers speak to a
//! media origin, and what the TLS listener offers by ALPN), served by hyper
//! with two bounds axum's `serve` does not set:
//! - a request head must arrive within `limits.http_header_timeout` of
//!   the connection opening (or of the previous response, on a kept-alive
//!   one): a client that connects and sends nothing, or trickles a head a
//!   byte at a time, is disconnected instead of holding a socket forever;
//! - at most `limits.http_connections` connections are open at once; one
//!   more is closed as it is accepted (and logged), so a flood of sockets
//!   cannot exhaust the node's file descriptors, which gRPC needs too.
//!
//! On stop, the listener closes, open connections are asked to finish
//! (`graceful`), and those still streaming after `drain` are dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use super::Peer;
use crate::archive::Limits;

/// Serves `router` on the connections `listener` accepts until `stop`
/// resolves; then gives open responses `drain` to end.
pub async fn serve<L>(
    mut listener: L,
    router: axum::Router,
    limits: &Limits,
    stop: impl Future<Output = ()>,
    drain: Duration,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.http_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.http_header_timeout);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                client = %peer,
                limit = limits.http_connections,
                "HTTP connection closed: the node has as many open as it allows"
            );
            drop(io);
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(Peer(peer)));
            let mut router = router.clone();
            tower::Service::call(&mut router, req.map(Body::new))
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            // A reset or timed-out connection is the client's business.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {}
    }
}
