//! `PlaybackService`: play, get and list recordings.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::convert::{ms_of, timestamp, to_pb};
use super::{authenticate, pb};
use crate::archive::Archive;
use crate::domain::{ExternalCallId, RecordingId};
use crate::error::Error;
use crate::playback::{
    self,
    search::{self, Search},
};

#[derive(Debug, Clone)]
pub struct PlaybackApi {
    archive: Arc<Archive>,
}

impl PlaybackApi {
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

type PlayStream = Pin<Box<dyn Stream<Item = Result<pb::PlayResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::playback_service_server::PlaybackService for PlaybackApi {
    type PlayStream = PlayStream;

    async fn play(
        &self,
        request: Request<pb::PlayRequest>,
    ) -> Result<Response<PlayStream>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let id = RecordingId::parse("recording_id", &req.recording_id).map_err(Error::from)?;
        let purpose = purpose_of(req.purpose());
        let playing = playback::play(
            self.archive.clone(),
            &principal,
            id,
            req.offset_bytes,
            purpose,
        )
        .await?;
        // The first message tells the client the whole size (progress,
        // preallocation); later ones leave it 0.
        let mut size = Some(playing.size_bytes);
        let out = playing.stream.map(move |item| {
            item.map(|c| pb::PlayResponse {
                offset_bytes: c.offset,
                data: c.data,
                size_bytes: size.take().unwrap_or(0),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn create_playback_url(
        &self,
        request: Request<pb::CreatePlaybackUrlRequest>,
    ) -> Result<Response<pb::CreatePlaybackUrlResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let id = RecordingId::parse("recording_id", &req.recording_id).map_err(Error::from)?;
        let purpose = purpose_of(req.purpose());
        let issued = playback::urls::issue(
            &self.archive,
            &principal,
            id,
            req.ttl_seconds,
            purpose,
            &req.reason,
        )
        .await?;
        Ok(Response::new(pb::CreatePlaybackUrlResponse {
            url: match &self.archive.playback_url_base {
                Some(base) => format!("{base}{}", issued.path),
                None => issued.path.clone(),
            },
            path: issued.path,
            expire_time: Some(timestamp(issued.expires_at_ms)),
            purpose: match purpose {
                playback::Purpose::Stream => pb::PlaybackPurpose::Stream,
                playback::Purpose::Download => pb::PlaybackPurpose::Download,
            }
            .into(),
        }))
    }

    async fn revoke_playback_urls(
        &self,
        request: Request<pb::RevokePlaybackUrlsRequest>,
    ) -> Result<Response<pb::RevokePlaybackUrlsResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let epoch = playback::urls::revoke_all(&self.archive, &principal).await?;
        Ok(Response::new(pb::RevokePlaybackUrlsResponse { epoch }))
    }

    async fn get_recording(
        &self,
        request: Request<pb::GetRecordingRequest>,
    ) -> Result<Response<pb::Recording>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let which = match (req.recording_id.is_empty(), req.external_call_id.is_empty()) {
            (false, true) => playback::Lookup::Id(
                RecordingId::parse("recording_id", &req.recording_id).map_err(Error::from)?,
            ),
            (true, false) => playback::Lookup::CallId(
                ExternalCallId::parse(&req.external_call_id)
                    .map_err(|e| Error::invalid("external_call_id", &e.reason))?,
            ),
            (true, true) => {
                return Err(Error::invalid(
                    "recording_id",
                    "name the recording by recording_id or by external_call_id",
                )
                .into());
            }
            (false, false) => {
                return Err(Error::invalid(
                    "external_call_id",
                    "give recording_id or external_call_id, not both",
                )
                .into());
            }
        };
        let view = playback::get(&self.archive, &principal, which, view_of(req.view())).await?;
        Ok(Response::new(to_pb(
            &view.row,
            view.labels,
            view.participants,
        )))
    }

    async fn list_recordings(
        &self,
        request: Request<pb::ListRecordingsRequest>,
    ) -> Result<Response<pb::ListRecordingsResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let view = view_of(req.view());
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let q = Search {
            call_id: nonempty(req.external_call_id),
            from_ms: req.start_time_from.as_ref().map(ms_of),
            to_ms: req.start_time_to.as_ref().map(ms_of),
            labels: req.labels.into_iter().collect(),
            participant: nonempty(req.participant),
            min_duration_ms: req.min_duration_ms,
            max_duration_ms: req.max_duration_ms,
            key_arn: nonempty(req.kms_key_arn),
            order_by: req.order_by,
            view,
            page_size: req.page_size,
            page_token: req.page_token,
        };
        let page = search::search(&self.archive, &principal, &q, search::GRPC_PAGES).await?;
        Ok(Response::new(pb::ListRecordingsResponse {
            recordings: page
                .recordings
                .into_iter()
                .map(|v| to_pb(&v.row, v.labels, v.participants))
                .collect(),
            unindexed_count: page.unindexed_count,
            next_page_token: page.next_page_token,
        }))
    }
}

fn view_of(v: pb::RecordingView) -> search::View {
    match v {
        pb::RecordingView::Basic => search::View::Basic,
        pb::RecordingView::Full | pb::RecordingView::Unspecified => search::View::Full,
    }
}

fn purpose_of(p: pb::PlaybackPurpose) -> playback::Purpose {
    match p {
        pb::PlaybackPurpose::Download => playback::Purpose::Download,
        pb::PlaybackPurpose::Stream | pb::PlaybackPurpose::Unspecified => playback::Purpose::Stream,
    }
}
