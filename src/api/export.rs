//! `ExportService`: compliance exports as a stream of bundle bytes.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::convert::ms_of;
use super::{authenticate, pb};
use crate::archive::Archive;
use crate::export::{self, ExportRequest, Query};

#[derive(Debug, Clone)]
pub struct ExportApi {
    archive: Arc<Archive>,
}

impl ExportApi {
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportResponse, Status>> + Send>>;

fn data(b: bytes::Bytes) -> pb::ExportResponse {
    pb::ExportResponse {
        payload: Some(pb::export_response::Payload::Data(b)),
    }
}

#[tonic::async_trait]
impl pb::export_service_server::ExportService for ExportApi {
    type ExportStream = ExportStream;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let query = req.query.map(|q| Query {
            labels: q.labels.into_iter().collect(),
            from_ms: q.start_time.as_ref().map(ms_of),
            to_ms: q.end_time.as_ref().map(ms_of),
        });
        let started = export::start(
            self.archive.clone(),
            &principal,
            ExportRequest {
                recording_ids: req.recording_ids,
                external_call_ids: req.external_call_ids,
                query,
                participant: (!req.participant.is_empty()).then_some(req.participant),
                reason: req.reason,
                age_recipients: req.age_recipients,
            },
        )
        .await?;
        let header = pb::ExportResponse {
            payload: Some(pb::export_response::Payload::Header(pb::ExportHeader {
                export_id: started.id,
                recording_ids: started.recordings.iter().map(ToString::to_string).collect(),
                tar_size_bytes: started.tar_size_bytes,
                age_encrypted: started.age_encrypted,
                audit_event_index: started.audit_index,
            })),
        };
        let body = started
            .stream
            .map(|piece| piece.map(data).map_err(Status::from));
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(header) }).chain(body),
        )))
    }
}
