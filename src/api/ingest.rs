//! `IngestService`: the client-streaming upload.

use std::collections::BTreeMap;
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
        let start_time_ms = header.start_time.map(|t| {
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos / 1_000_000))
        });
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
            }) => Ok(d),
            Ok(pb::IngestRequest {
                payload: Some(pb::ingest_request::Payload::Header(_)),
            }) => Err(Error::invalid(
                "header",
                "only the first message may carry a header",
            )),
            Ok(pb::IngestRequest { payload: None }) => Err(Error::invalid(
                "payload",
                "message carries neither header nor data",
            )),
            Err(status) => Err(inbound(status)),
        });
        // Run the upload in its own task: if the client resets, hyper drops
        // this handler future, but the upload must still see its stream fail
        // and clean up what it wrote.
        let task = tokio::spawn(ingest::ingest(
            self.archive.clone(),
            principal,
            header,
            Box::pin(body),
        ));
        let outcome = task.await.map_err(|e| Error::task("ingest", e))??;
        // Labels were just written by this caller; they are not echoed back so
        // that a dedup response cannot be used to read another upload's labels.
        Ok(Response::new(pb::IngestResponse {
            recording: Some(to_pb(&outcome.recording, BTreeMap::new(), BTreeMap::new())),
            deduplicated: outcome.deduplicated,
        }))
    }
}
