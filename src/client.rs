//! The typed gRPC client: one authenticated channel to a callvault server
//! with a client per service. The CLI, the integration tests and the benches
//! all talk to the server through it, so the path the tests drive is the path
//! operators use.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::api::{self, pb};
use crate::server;

/// Why a client could not be set up. RPC failures are `tonic::Status`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid server URL")]
    InvalidUrl(#[source] http::uri::InvalidUri),
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

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Debug, Clone)]
pub struct BearerAuth(MetadataValue<Ascii>);

impl BearerAuth {
    pub fn new(token: &str) -> Result<Self, Error> {
        format!("Bearer {token}")
            .parse()
            .map(Self)
            .map_err(Error::InvalidToken)
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A connected, authenticated client for every service.
#[derive(Debug, Clone)]
pub struct Client {
    pub ingest: pb::ingest_service_client::IngestServiceClient<Authed>,
    pub playback: pb::playback_service_client::PlaybackServiceClient<Authed>,
    pub keys: pb::key_service_client::KeyServiceClient<Authed>,
    pub audit: pb::audit_service_client::AuditServiceClient<Authed>,
}

impl Client {
    /// Connects to `server` (`http://host:port`) with the same HTTP/2 windows
    /// the server uses, then authenticates every call with `token`.
    pub async fn connect(server: &str, token: &str) -> Result<Self, Error> {
        let channel = Channel::from_shared(server.to_owned())
            .map_err(Error::InvalidUrl)?
            .initial_stream_window_size(server::HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(server::HTTP2_CONNECTION_WINDOW)
            .connect()
            .await
            .map_err(|source| Error::Connect {
                server: server.to_owned(),
                source,
            })?;
        let auth = BearerAuth::new(token)?;
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
            audit: pb::audit_service_client::AuditServiceClient::with_interceptor(channel, auth),
        })
    }

    /// Sends a header and then `body` in pieces as they come.
    pub async fn ingest_stream(
        &mut self,
        header: pb::IngestHeader,
        body: impl futures::Stream<Item = Bytes> + Send + 'static,
    ) -> Result<pb::IngestResponse, tonic::Status> {
        let first = futures::stream::once(async move {
            pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Header(header)),
            }
        });
        let rest = body.map(api::data_message);
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

/// Splits a buffer into ingest-sized pieces.
pub fn pieces(data: Bytes, piece: usize) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    let n = data.len().div_ceil(piece);
    futures::stream::iter(
        (0..n).map(move |i| data.slice(i * piece..((i + 1) * piece).min(data.len()))),
    )
}
