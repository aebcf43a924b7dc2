//! `IngestService`: the client-streaming upload.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert::to_pb;
use super::{authenticate, inbound, pb};
use crate::archive::Archive;
use crate::error::Error;
use crate::ingest;

#[derive(Debug, Clone)]
pub struct IngestApi {
    archive: Arc<Archive>,
}

impl IngestApi {
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

#[tonic::async_trait]
impl pb::ingest_service_server::IngestService for IngestApi {
    async fn ingest(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await
            .map_err(inbound)?
            .ok_or_else(|| Error::invalid("header", "the stream ended before the header"))?;
        let header = match first.payload {
            Some(pb::ingest_request::Payload::Header(h)) => h,
            _ => {
                return Err(
                    Error::invalid("header", "the first message must carry the header").into(),
                );
            }
        };
        let start_time_ms = header.start_time.as_ref().map(super::convert::ms_of);
        let header = ingest::IngestHeader::parse(
            &header.external_call_id,
            start_time_ms,
            header.labels.into_iter().collect(),
            header.chunk_size_bytes,
            header.participants.into_iter().collect(),
        )?;
        let body = stream.map(|msg| match msg {
            Ok(pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Data(d)),
            }) => Ok(ingest::Part::Data(d)),
            Ok(pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Trailer(t)),
            }) => match <[u8; 32]>::try_from(t.sha256.as_ref()) {
                Ok(sha256) => Ok(ingest::Part::Trailer { sha256 }),
                Err(_) => Err(Error::invalid(
                    "trailer.sha256",
                    "must be the 32 bytes of a SHA-256",
                )),
            },
            Ok(pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Header(_)),
            }) => Err(Error::invalid(
                "header",
                "only the first message may carry a header",
            )),
            Ok(pb::IngestRequest { payload: None }) => Err(Error::invalid(
                "payload",
                "message carries neither header, data nor trailer",
            )),
            Err(status) => Err(inbound(status)),
        });
        // Run the upload in its own task: if the client resets, hyper drops
        // this handler future, but the upload must still see its stream fail
        // and clean up what it wrote.
        let (labels, participants) = (header.labels.clone(), header.participants.clone());
        let task = tokio::spawn(ingest::ingest(
            self.archive.clone(),
            principal,
            header,
            Box::pin(body),
        ));
        let outcome = task.await.map_err(|e| Error::task("ingest", e))??;
        // A new recording carries the labels and participants this caller
        // just sent and the catalog committed. A deduplicated one carries
        // none: an ingest token must not read what another upload stored.
        let (labels, participants) = if outcome.deduplicated {
            Default::default()
        } else {
            (labels, participants)
        };
        Ok(Response::new(pb::IngestResponse {
            recording: Some(to_pb(&outcome.recording, labels, participants)),
            deduplicated: outcome.deduplicated,
        }))
    }
}
