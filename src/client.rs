//! The typed gRPC client: one authenticated channel to a callvault server
//! with a client per service. The CLI, the integration tests and the benches
//! all talk to the server through it, so the path the tests drive is the path
//! operators use.
//!
//! `https://` always means TLS (never a silent fallback to cleartext, which
//! would send the bearer token readable); `http://` is for loopback unless
//! the caller allows otherwise.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Identity};

use crate::api::{self, pb};
use crate::{server, tls};

/// Why a client could not be set up. RPC failures are `tonic::Status`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid server URL")]
    InvalidUrl(#[source] http::uri::InvalidUri),
    #[error(
        "the server URL `{0}` must start with https:// (TLS) or http:// (cleartext, loopback only)"
    )]
    UnsupportedScheme(String),
    /// `http://` to a host that is not loopback, without `allow_insecure`.
    #[error(
        "refusing to connect to {server} in cleartext: it is not a loopback address and the token \
         would cross the network readable; use https://, or --allow-insecure"
    )]
    Insecure { server: String },
    /// A CA or client certificate was given for an `http://` server: the
    /// caller expects TLS, so cleartext would be a silent downgrade.
    #[error("TLS settings were given but {server} is http://; use https://")]
    TlsSettingsWithoutHttps { server: String },
    #[error("a client certificate needs its key and a client key its certificate")]
    IncompleteClientIdentity,
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("cannot set up TLS for {server}")]
    TlsConfig {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {server}")]
    Connect {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A token must fit in an HTTP header value.
    #[error("token is not valid ASCII")]
    InvalidToken(#[source] tonic::metadata::errors::InvalidMetadataValue),
}

/// A channel that sends the bearer token with every request.
pub type Authed = InterceptedService<Channel, BearerAuth>;

/// Adds `authorization: Bearer <token>` to every request. Its `Debug`
/// never shows the token, and the header is marked sensitive (HTTP/2
/// HPACK does not index it).
#[derive(Clone)]
pub struct BearerAuth(MetadataValue<Ascii>);

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth([redacted])")
    }
}

impl BearerAuth {
    pub fn new(token: &str) -> Result<Self, Error> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(Error::InvalidToken)?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// How to reach a server beyond its URL. `Default` suits loopback
/// `http://` and `https://` servers whose certificate the system trusts.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// PEM CA certificates trusted beside the system's roots (`https://`).
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate chain presented to a server that requires one (mTLS),
    /// with `client_key`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Allow `http://` to a host that is not loopback.
    pub allow_insecure: bool,
}

impl ConnectOptions {
    fn has_tls_settings(&self) -> bool {
        self.ca_cert.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }

    fn tls_config(&self) -> Result<ClientTlsConfig, Error> {
        let config = ClientTlsConfig::new()
            .trust_anchors(tls::client_trust_anchors(self.ca_cert.as_deref())?)
            .timeout(tls::HANDSHAKE_TIMEOUT);
        Ok(match (&self.client_cert, &self.client_key) {
            (None, None) => config,
            (Some(cert), Some(key)) => config.identity(Identity::from_pem(
                tls::read_certificate_pem(cert)?,
                tls::read_key_pem(key)?,
            )),
            _ => return Err(Error::IncompleteClientIdentity),
        })
    }
}

/// The endpoint for `server`: TLS for `https://`; cleartext for `http://`
/// only to loopback (or with `allow_insecure`) and only when no TLS
/// settings were given.
/// Cancelled streams whose late frames h2 still recognises. A play
/// dropped mid-flight (a seek, a closed player) still has DATA on the wire;
/// once h2 has forgotten the stream (by default it remembers 10), each such
/// frame counts as a protocol error of the peer, and after 1,024 of them
/// the client's own h2 closes the connection (GOAWAY
/// `too_many_internal_resets`, hyperium/h2#856): a player that seeks a few
/// hundred times lost its connection. Each is remembered for 30 s.
pub const REMEMBERED_RESETS: usize = 4096;

fn endpoint(server: &str, opts: &ConnectOptions) -> Result<Endpoint, Error> {
    let endpoint = Channel::from_shared(server.to_owned()).map_err(Error::InvalidUrl)?;
    match endpoint.uri().scheme_str() {
        Some("https") => {
            endpoint
                .tls_config(opts.tls_config()?)
                .map_err(|source| Error::TlsConfig {
                    server: server.to_owned(),
                    source,
                })
        }
        Some("http") => {
            if opts.has_tls_settings() {
                return Err(Error::TlsSettingsWithoutHttps {
                    server: server.to_owned(),
                });
            }
            if !opts.allow_insecure && !endpoint.uri().host().is_some_and(is_loopback) {
                return Err(Error::Insecure {
                    server: server.to_owned(),
                });
            }
            Ok(endpoint)
        }
        _ => Err(Error::UnsupportedScheme(server.to_owned())),
    }
}

/// `localhost` or a loopback IP literal (`[::1]` as a URL writes it). Other
/// names count as remote, whatever they resolve to.
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A connected, authenticated client for every service.
#[derive(Debug, Clone)]
pub struct Client {
    pub ingest: pb::ingest_service_client::IngestServiceClient<Authed>,
    pub playback: pb::playback_service_client::PlaybackServiceClient<Authed>,
    pub keys: pb::key_service_client::KeyServiceClient<Authed>,
    pub audit: pb::audit_service_client::AuditServiceClient<Authed>,
    pub export: pb::export_service_client::ExportServiceClient<Authed>,
    pub compliance: pb::compliance_service_client::ComplianceServiceClient<Authed>,
}

impl Client {
    /// Connects to `server` with default options: a loopback `http://`
    /// server, or an `https://` one the system's roots trust.
    pub async fn connect(server: &str, token: &str) -> Result<Self, Error> {
        Self::connect_with(server, token, &ConnectOptions::default()).await
    }

    /// Connects to `server` (`https://host:port`, or `http://` on loopback)
    /// with the same HTTP/2 windows the server uses, then authenticates
    /// every call with `token`.
    pub async fn connect_with(
        server: &str,
        token: &str,
        opts: &ConnectOptions,
    ) -> Result<Self, Error> {
        let auth = BearerAuth::new(token)?;
        let channel = endpoint(server, opts)?
            .initial_stream_window_size(server::HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(server::HTTP2_CONNECTION_WINDOW)
            .http2_max_concurrent_reset_streams(REMEMBERED_RESETS)
            .connect()
            .await
            .map_err(|source| Error::Connect {
                server: server.to_owned(),
                source,
            })?;
        Ok(Self {
            ingest: pb::ingest_service_client::IngestServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_encoding_message_size(api::MAX_MESSAGE_BYTES),
            playback: pb::playback_service_client::PlaybackServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_decoding_message_size(64 * 1024 * 1024),
            keys: pb::key_service_client::KeyServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            audit: pb::audit_service_client::AuditServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            compliance: pb::compliance_service_client::ComplianceServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_decoding_message_size(api::MAX_MESSAGE_BYTES),
            export: pb::export_service_client::ExportServiceClient::with_interceptor(channel, auth)
                .max_decoding_message_size(api::MAX_MESSAGE_BYTES),
        })
    }

    /// Sends a header and then `body` in pieces as they come, hashing them
    /// on the way, and the SHA-256 in the trailer: the server commits only
    /// what it received intact.
    pub async fn ingest_stream(
        &mut self,
        header: pb::IngestHeader,
        body: impl futures::Stream<Item = Bytes> + Send + 'static,
    ) -> Result<pb::IngestResponse, tonic::Status> {
        let sha = Arc::new(std::sync::Mutex::new(aws_lc_rs::digest::Context::new(
            &aws_lc_rs::digest::SHA256,
        )));
        let hashing = sha.clone();
        let data = body.map(move |b| {
            lock(&hashing).update(&b);
            api::data_message(b)
        });
        let trailer = futures::stream::once(async move {
            let digest = lock(&sha).clone().finish();
            api::trailer_message(digest.as_ref())
        });
        self.ingest_messages(header, data.chain(trailer)).await
    }

    /// Sends a header and then `rest` as they come: data messages and
    /// optionally a trailer ([`api::trailer_message`]).
    pub async fn ingest_messages(
        &mut self,
        header: pb::IngestHeader,
        rest: impl futures::Stream<Item = pb::IngestRequest> + Send + 'static,
    ) -> Result<pb::IngestResponse, tonic::Status> {
        let first = futures::stream::once(async move {
            pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Header(header)),
            }
        });
        Ok(self.ingest.ingest(first.chain(rest)).await?.into_inner())
    }

    /// Plays a whole recording into memory; returns (bytes, time to first byte).
    pub async fn play_all(
        &mut self,
        id: &str,
        offset: u64,
    ) -> Result<(Vec<u8>, Duration), tonic::Status> {
        let started = Instant::now();
        let mut stream = self
            .playback
            .play(pb::PlayRequest {
                recording_id: id.to_owned(),
                offset_bytes: offset,
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        let mut ttfb = None;
        while let Some(msg) = stream.message().await? {
            ttfb.get_or_insert_with(|| started.elapsed());
            out.extend_from_slice(&msg.data);
        }
        Ok((out, ttfb.unwrap_or_else(|| started.elapsed())))
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Splits a buffer into ingest-sized pieces.
pub fn pieces(data: Bytes, piece: usize) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    let n = data.len().div_ceil(piece);
    futures::stream::iter(
        (0..n).map(move |i| data.slice(i * piece..((i + 1) * piece).min(data.len()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_never_shows_in_debug() {
        let auth = BearerAuth::new("cv_secret-token-value").unwrap();
        let shown = format!("{auth:?}");
        assert!(!shown.contains("secret-token-value"), "{shown}");
        assert!(auth.0.is_sensitive());
    }

    /// Which URLs connect how, before any network I/O.
    #[test]
    fn cleartext_is_for_loopback_and_never_with_tls_settings() {
        let plain = ConnectOptions::default();
        let insecure = ConnectOptions {
            allow_insecure: true,
            ..Default::default()
        };
        let with_ca = ConnectOptions {
            ca_cert: Some("ca.pem".into()),
            ..Default::default()
        };
        let cases: &[(&str, &ConnectOptions, Result<(), &str>)] = &[
            ("http://127.0.0.1:50051", &plain, Ok(())),
            ("http://127.8.9.10:50051", &plain, Ok(())),
            ("http://localhost:50051", &plain, Ok(())),
            ("http://[::1]:50051", &plain, Ok(())),
            (
                "http://10.0.0.5:50051",
                &plain,
                Err("not a loopback address"),
            ),
            (
                "http://0.0.0.0:50051",
                &plain,
                Err("not a loopback address"),
            ),
            (
                "http://archive.example:50051",
                &plain,
                Err("not a loopback address"),
            ),
            (
                "http://localhost.example:50051",
                &plain,
                Err("not a loopback address"),
            ),
            ("http://archive.example:50051", &insecure, Ok(())),
            (
                "http://127.0.0.1:50051",
                &with_ca,
                Err("is http://; use https://"),
            ),
            ("127.0.0.1:50051", &plain, Err("must start with https://")),
            (
                "ftp://127.0.0.1:50051",
                &plain,
                Err("must start with https://"),
            ),
            ("https://archive.example:50051", &plain, Ok(())),
            ("https://archive.example:50051", &insecure, Ok(())),
        ];
        for (url, opts, want) in cases {
            let got = endpoint(url, opts).map(|_| ()).map_err(|e| e.to_string());
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(part), Err(msg)) if msg.contains(part) => {}
                _ => panic!("{url} with {opts:?}: want {want:?}, got {got:?}"),
            }
        }
    }
}
