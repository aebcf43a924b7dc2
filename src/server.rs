//! The gRPC server. Takes an already-bound listener and a shutdown future, so
//! tests bind port 0 and the binary binds the configured address.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::{self, AuditApi, ComplianceApi, ExportApi, IngestApi, KeyApi, PlaybackApi, pb};
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::tls::{self, ServerTls, TlsIncoming};

// The metrics listener lives with the metrics; its callers name it here.
pub use crate::metrics::serve_metrics;

/// Which services this node serves (least privilege: an ingest-only node
/// needs no `kms:Decrypt`, a playback-only node no `kms:GenerateDataKey`).
/// The admin role serves `KeyService` and runs the rewrap worker (it needs
/// kms:DescribeKey, GenerateDataKey/Decrypt for the registration round trip,
/// GetPublicKey and ReEncrypt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub ingest: bool,
    pub playback: bool,
    pub admin: bool,
}

/// The roles as `serve --roles` takes them: `ingest,playback,admin`.
impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (self.ingest, "ingest"),
            (self.playback, "playback"),
            (self.admin, "admin"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&on.join(","))
    }
}

impl Roles {
    pub const ALL: Roles = Roles {
        ingest: true,
        playback: true,
        admin: true,
    };
    pub const NONE: Roles = Roles {
        ingest: false,
        playback: false,
        admin: false,
    };

    pub fn parse(s: &str) -> Result<Self> {
        let mut roles = Roles::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "ingest" => roles.ingest = true,
                "playback" => roles.playback = true,
                "admin" => roles.admin = true,
                other => return Err(Error::invalid("roles", &format!("unknown role `{other}`"))),
            }
        }
        if roles == Roles::NONE {
            return Err(Error::invalid(
                "roles",
                "name at least one of ingest, playback, admin",
            ));
        }
        Ok(roles)
    }

    /// Nodes that unwrap data keys check every tenant key's health. An
    /// ingest-only node does not: in write-only mode it holds no KMS
    /// permission, and its failed checks would read as revocations.
    pub fn checks_keys(self) -> bool {
        self.playback || self.admin
    }
}

/// Serves cleartext gRPC until `shutdown` resolves, then drains in-flight
/// calls. (`config::serve` allows that only on loopback unless told
/// otherwise.)
pub async fn run(
    listener: TcpListener,
    archive: Arc<Archive>,
    roles: Roles,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    // Small writes (a Play's first message, a unary answer) leave at once:
    // Nagle's algorithm would hold them for the peer's delayed ACK, about
    // 40 ms. (tonic sets this only on listeners it binds itself.)
    let incoming = futures::StreamExt::map(TcpListenerStream::new(listener), |accepted| {
        accepted.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    });
    serve_grpc(incoming, archive, roles, shutdown).await
}

/// Serves gRPC over TLS (ALPN `h2`, the certificate `tls` holds at each
/// handshake) until `shutdown` resolves, then drains in-flight calls.
pub async fn run_tls(
    listener: TcpListener,
    tls: &ServerTls,
    archive: Arc<Archive>,
    roles: Roles,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let incoming =
        TlsIncoming::new(listener, tls.acceptor(&[tls::ALPN_H2])).map_err(|source| Error::Io {
            what: "TLS listener has no local address",
            source,
        })?;
    serve_grpc(incoming, archive, roles, shutdown).await
}

/// The services, their limits and the node's background work, over
/// connections from `incoming` (plain TCP or TLS-established).
async fn serve_grpc<IO, IE>(
    incoming: impl futures::Stream<Item = std::result::Result<IO, IE>>,
    archive: Arc<Archive>,
    roles: Roles,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()>
where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Reflection in both versions: grpcurl, Postman and grpcio-reflection
    // releases in the field still ask for v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| Error::Server(crate::error::DriverError::new(e)))?;
    let reflection = reflection()
        .build_v1()
        .map_err(|e| Error::Server(crate::error::DriverError::new(e)))?;

    let limits = &archive.limits;
    let router =
        tonic::transport::Server::builder()
            // A peer that stops answering pings is gone: its streams end and
            // its uploads are cleaned up instead of waiting for the lease.
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .tcp_keepalive(Some(HTTP2_KEEPALIVE_INTERVAL))
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            // HTTP/2's default 64 KiB window stalls a bulk upload on every window
            // update; a few MiB per stream keeps loopback and LAN links full while
            // still bounding what one client can make the server buffer.
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
            .initial_connection_window_size(Some(HTTP2_SERVER_CONNECTION_WINDOW))
            // Outermost, so that it sees the timeout's DEADLINE_EXCEEDED too.
            .layer(api::MeteringLayer(archive.metrics.clone()))
            .layer(UnaryTimeoutLayer(limits.request_timeout))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_optional_service(roles.ingest.then(|| {
                pb::ingest_service_server::IngestServiceServer::new(IngestApi::new(archive.clone()))
                    .max_decoding_message_size(api::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(api::MAX_MESSAGE_BYTES)
            }))
            .add_optional_service(roles.playback.then(|| {
                pb::playback_service_server::PlaybackServiceServer::new(PlaybackApi::new(
                    archive.clone(),
                ))
                .max_decoding_message_size(api::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(api::MAX_MESSAGE_BYTES)
            }))
            .add_optional_service(roles.admin.then(|| {
                pb::key_service_server::KeyServiceServer::new(KeyApi::new(archive.clone()))
            }))
            // Exports decrypt recordings: wherever recordings are played.
            .add_optional_service(roles.playback.then(|| {
                pb::export_service_server::ExportServiceServer::new(ExportApi::new(archive.clone()))
                    .max_encoding_message_size(api::MAX_MESSAGE_BYTES)
            }))
            // Compliance staff read the trail wherever recordings are read.
            .add_optional_service((roles.playback || roles.admin).then(|| {
                pb::audit_service_server::AuditServiceServer::new(AuditApi::new(archive.clone()))
                    .max_encoding_message_size(api::MAX_MESSAGE_BYTES)
            }))
            // …and govern them there: retention, holds, erasure, certificates.
            .add_optional_service((roles.playback || roles.admin).then(|| {
                pb::compliance_service_server::ComplianceServiceServer::new(ComplianceApi::new(
                    archive.clone(),
                ))
                .max_encoding_message_size(api::MAX_MESSAGE_BYTES)
            }));
    if roles.admin {
        health_reporter
            .set_serving::<pb::key_service_server::KeyServiceServer<KeyApi>>()
            .await;
    }
    if roles.playback || roles.admin {
        health_reporter
            .set_serving::<pb::audit_service_server::AuditServiceServer<AuditApi>>()
            .await;
        health_reporter
            .set_serving::<pb::compliance_service_server::ComplianceServiceServer<ComplianceApi>>()
            .await;
    }
    if roles.ingest {
        health_reporter
            .set_serving::<pb::ingest_service_server::IngestServiceServer<IngestApi>>()
            .await;
    }
    if roles.playback {
        health_reporter
            .set_serving::<pb::playback_service_server::PlaybackServiceServer<PlaybackApi>>()
            .await;
        health_reporter
            .set_serving::<pb::export_service_server::ExportServiceServer<ExportApi>>()
            .await;
    }
    let mut background = tokio::task::JoinSet::new();
    // Remove uploads whose lease ran out (their node crashed) and the
    // objects of removed uploads, now and periodically.
    let a = archive.clone();
    background.spawn(every(
        archive.limits.sweep_interval(),
        "sweep of abandoned uploads",
        move || {
            let a = a.clone();
            async move { a.sweep_expired_uploads().await }
        },
    ));
    if roles.checks_keys() {
        let a = archive.clone();
        background.spawn(every(
            archive.schedule.key_health,
            "key health check",
            move || {
                let a = a.clone();
                async move { crate::keys::check_pass(&a).await }
            },
        ));
    }
    // Every node hears of revoked keys and tokens (NOTIFY on PostgreSQL, a
    // poll of the token table everywhere) and ends the open streams they
    // served.
    background.spawn(crate::revocation::listen(archive.clone()));
    background.spawn(crate::revocation::poll_tokens(archive.clone()));
    if roles.admin {
        // Signs a checkpoint of every audit log that grew by enough events,
        // or grew at all and was signed long enough ago.
        let a = archive.clone();
        background.spawn(every(
            Duration::from_secs(1),
            "audit checkpoint pass",
            move || {
                let a = a.clone();
                async move {
                    crate::audit::log::checkpoint_due(
                        &a,
                        a.schedule.checkpoint_every,
                        a.schedule.checkpoint_max_age,
                    )
                    .await
                }
            },
        ));
        // The expiry job: erases recordings whose retention ended (nodes
        // share the work, SKIP LOCKED) and completes pending certificates.
        let a = archive.clone();
        background.spawn(every(
            archive.schedule.retention_check,
            "retention expiry pass",
            move || {
                let a = a.clone();
                async move { crate::compliance::run_expiry(&a).await }
            },
        ));
        // The indexer: recordings a write-only node could not index (and
        // those from before the index existed) join the search index.
        let a = archive.clone();
        background.spawn(every(
            archive
                .schedule
                .retention_check
                .min(Duration::from_secs(30)),
            "search index pass",
            move || {
                let a = a.clone();
                async move { crate::compliance::subjects::index_pending(&a).await }
            },
        ));
        // Waveform peaks of new recordings (at once when the ingest was on
        // this node), and of older ones (the backfill).
        let a = archive.clone();
        background.spawn(async move {
            loop {
                if let Err(e) = crate::playback::peaks::run_pending(&a).await {
                    tracing::warn!(error = %e, "waveform peaks pass failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(a.schedule.peaks_poll) => {}
                    () = a.peaks_wake.notified() => {}
                }
            }
        });
        let a = archive.clone();
        background.spawn(every(
            archive.schedule.rewrap_poll,
            "rewrap worker pass",
            move || {
                let a = a.clone();
                async move { crate::keys::run_rewrap_jobs(&a).await }
            },
        ));
    }
    let res = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Server(crate::error::DriverError::new(e)));
    background.abort_all();
    // The ended streams' closing events, held for the next event, commit now.
    archive.audit_commits.flush(&archive).await;
    res
}

/// Runs `work` now and then every `period` (a slow pass delays the next
/// one rather than bunching them); a failure is logged and retried next time.
async fn every<F, Fut, T>(period: Duration, what: &'static str, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = work().await {
            tracing::warn!(error = %e, "{what} failed");
        }
    }
}

/// HTTP/2 flow-control windows: each stream's, the same on the server and
/// the CLI client, and the client's per connection (many plays on one
/// connection each keep their stream's window).
pub const HTTP2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub const HTTP2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// What one client connection may have in flight to the server: one
/// stream's window, however many streams share the connection. A client
/// sending faster than the server seals and writes parks at most this much
/// in the server per connection (not 4 MiB per stream): with ten uploads per
/// connection, 0.4 MiB each (BENCHMARKS.md, "the fifth round"). One upload
/// alone keeps its whole window.
pub const HTTP2_SERVER_CONNECTION_WINDOW: u32 = HTTP2_STREAM_WINDOW;

/// HTTP/2 PING every interval; a peer that does not answer within the
/// timeout is dropped with all its streams.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// RPCs whose request or response is a stream: they run as long as their
/// stream does (bounded by their own idle timeouts), not by the unary
/// request timeout.
const STREAMING_METHODS: &[&str] = &[
    "/callvault.v1.IngestService/Ingest",
    "/callvault.v1.PlaybackService/Play",
    "/callvault.v1.ExportService/Export",
    "/callvault.v1.AuditService/StreamLeaves",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Answers a unary RPC that runs longer than the limit with
/// DEADLINE_EXCEEDED (tonic's own server timeout would also cut off a
/// client-streaming upload, which lasts as long as the call it records).
#[derive(Debug, Clone, Copy)]
struct UnaryTimeoutLayer(Duration);

impl<S> tower::Layer<S> for UnaryTimeoutLayer {
    type Service = UnaryTimeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        UnaryTimeout {
            inner,
            limit: self.0,
        }
    }
}

#[derive(Debug, Clone)]
struct UnaryTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, B> tower::Service<http::Request<B>> for UnaryTimeout<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, std::result::Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let streaming = STREAMING_METHODS.contains(&req.uri().path());
        let limit = self.limit;
        let fut = self.inner.call(req);
        Box::pin(async move {
            if streaming {
                return fut.await;
            }
            match tokio::time::timeout(limit, fut).await {
                Ok(res) => res,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the request ran longer than the server's limit of {} s",
                    limit.as_secs_f64()
                ))
                .into_http()),
            }
        })
    }
}

/// A server on an ephemeral loopback port: the demo, the tests and the
/// benches all start one the same way.
#[derive(Debug)]
pub struct LocalServer {
    pub addr: String,
    /// The components it serves.
    pub archive: Arc<Archive>,
    /// The HTTP side door's base URL (`http://127.0.0.1:<port>`), when
    /// started with one.
    pub http_addr: Option<String>,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<Result<()>>,
    http: Option<tokio::task::JoinHandle<Result<()>>>,
}

async fn bind_loopback() -> Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| Error::Io {
            what: "cannot bind loopback",
            source,
        })
}

fn local_addr(listener: &TcpListener) -> Result<std::net::SocketAddr> {
    listener.local_addr().map_err(|source| Error::Io {
        what: "no local address",
        source,
    })
}

impl LocalServer {
    /// Cleartext on loopback: `addr` is `http://127.0.0.1:<port>`.
    pub async fn start(archive: Arc<Archive>, roles: Roles) -> Result<Self> {
        Self::start_with(archive, roles, None, None).await
    }

    /// Cleartext gRPC and the HTTP side door on two loopback ports; issued
    /// playback URLs are absolute under `http_addr` unless the archive
    /// already names a base.
    pub async fn start_with_http(mut archive: Archive, roles: Roles) -> Result<Self> {
        let http = bind_http("127.0.0.1:0").await.map_err(|source| Error::Io {
            what: "cannot bind loopback",
            source,
        })?;
        let http_addr = format!("http://{}", local_addr(&http)?);
        archive.playback_url_base.get_or_insert(http_addr);
        Self::start_with(Arc::new(archive), roles, None, Some(http)).await
    }

    /// TLS on loopback with `tls`'s certificate: `addr` is
    /// `https://127.0.0.1:<port>`, so the certificate must name 127.0.0.1.
    pub async fn start_tls(
        archive: Arc<Archive>,
        roles: Roles,
        tls: Arc<ServerTls>,
    ) -> Result<Self> {
        Self::start_with(archive, roles, Some(tls), None).await
    }

    async fn start_with(
        archive: Arc<Archive>,
        roles: Roles,
        tls: Option<Arc<ServerTls>>,
        http: Option<TcpListener>,
    ) -> Result<Self> {
        let listener = bind_loopback().await?;
        let addr = local_addr(&listener)?;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let http_addr = match &http {
            Some(l) => Some(format!("http://{}", local_addr(l)?)),
            None => None,
        };
        let http = http.map(|l| {
            let (archive, shutdown) = (archive.clone(), stopped(rx.clone()));
            tokio::spawn(async move { serve_http(l, None, archive, shutdown).await })
        });
        let shutdown = stopped(rx);
        let served = archive.clone();
        let (scheme, handle) = match tls {
            Some(tls) => (
                "https",
                tokio::spawn(
                    async move { run_tls(listener, &tls, archive, roles, shutdown).await },
                ),
            ),
            None => (
                "http",
                tokio::spawn(run(listener, archive, roles, shutdown)),
            ),
        };
        Ok(Self {
            addr: format!("{scheme}://{addr}"),
            archive: served,
            http_addr,
            stop,
            handle,
            http,
        })
    }

    /// Stops accepting, drains in-flight calls (and closes the HTTP side
    /// door's listening sessions) and returns the server's result.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        if let Some(http) = self.http {
            http.await.map_err(|e| Error::task("HTTP server", e))??;
        }
        self.handle.await.map_err(|e| Error::task("server", e))?
    }
}

/// The most a connection of the HTTP side door has in its kernel send
/// buffer. Audio is read and decrypted only as fast as the player takes it:
/// a paused or slow player holds a bounded amount in flight (the default
/// autotuned buffer on loopback is megabytes), and the audit trail's
/// "bytes sent" stays close to what the player received.
pub const HTTP_SEND_BUFFER: u32 = 256 * 1024;

/// How long open responses of the HTTP side door get to end once the node
/// is stopping.
pub const HTTP_DRAIN: Duration = Duration::from_secs(2);

/// Binds the HTTP side door's listener; accepted connections inherit its
/// send buffer of [`HTTP_SEND_BUFFER`].
pub async fn bind_http(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_send_buffer_size(HTTP_SEND_BUFFER)?;
        match socket.bind(addr) {
            Ok(()) => return socket.listen(1024),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Serves the HTTP side door (`http::router`: signed-URL audio) until
/// `shutdown` resolves, over TLS when `tls` is given (ALPN `http/1.1`);
/// closes idle listening sessions every second and all of them when it
/// stops, so their finish events are written.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<&ServerTls>,
    archive: Arc<Archive>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = crate::http::router(archive.clone());
    let a = archive.clone();
    let closer = tokio::spawn(every(
        Duration::from_secs(1),
        "listening session close",
        move || {
            let a = a.clone();
            async move { a.listening.close_due(&a, false).await }
        },
    ));
    // Graceful shutdown waits for open responses, and a player holds one
    // for as long as it plays: after the signal, responses get
    // `HTTP_DRAIN` to end, then every session is closed with its finish
    // event.
    let limits = &archive.limits;
    match tls {
        None => {
            use axum::serve::ListenerExt as _;
            // No Nagle delay on a response's last small write.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            crate::http::serve::serve(listener, app, limits, shutdown, HTTP_DRAIN).await
        }
        Some(tls) => {
            let incoming =
                TlsIncoming::new(listener, tls.acceptor(&[tls::ALPN_HTTP1])).map_err(|source| {
                    Error::Io {
                        what: "TLS listener has no local address",
                        source,
                    }
                })?;
            crate::http::serve::serve(HttpTls(incoming), app, limits, shutdown, HTTP_DRAIN).await
        }
    }
    closer.abort();
    if let Err(e) = archive.listening.close_due(&archive, true).await {
        tracing::warn!(error = %e, "listening sessions not closed at shutdown");
    }
    Ok(())
}

/// `TlsIncoming` as a listener of `http::serve` (tls knows no HTTP).
#[derive(Debug)]
pub(crate) struct HttpTls(pub(crate) TlsIncoming);

impl axum::serve::Listener for HttpTls {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.0.accept().await {
            Some(conn) => conn,
            // The accept loop ends only when `TlsIncoming` is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.0.local_addr())
    }
}

/// Resolves on Ctrl-C or SIGTERM (what container runtimes send).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
