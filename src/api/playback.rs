//! `PlaybackService`: play, get and list recordings.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::convert::{timestamp, to_pb};
use super::{authenticate, pb};
use crate::archive::Archive;
use crate::domain::RecordingId;
use crate::error::Error;
use crate::playback;

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
        let stream = playback::play(
            self.archive.clone(),
            &principal,
            id,
            req.offset_bytes,
            purpose,
        )
        .await?;
        let out = stream.map(|item| {
            item.map(|c| pb::PlayResponse {
                offset_bytes: c.offset,
                data: c.data,
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
        let id = RecordingId::parse("recording_id", &request.get_ref().recording_id)
            .map_err(Error::from)?;
        let view = playback::get(&self.archive, &principal, id).await?;
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
        let after = if req.page_token.is_empty() {
            None
        } else {
            let bad = || Error::invalid("page_token", "is not a token from a previous response");
            let raw = URL_SAFE_NO_PAD.decode(&req.page_token).map_err(|_| bad())?;
            let s = String::from_utf8(raw).map_err(|_| bad())?;
            Some(RecordingId::parse("page_token", &s).map_err(|_| bad())?)
        };
        let participant = (!req.participant.is_empty()).then_some(req.participant.as_str());
        let (rows, next, unindexed) =
            playback::list(&self.archive, &principal, req.page_size, after, participant).await?;
        Ok(Response::new(pb::ListRecordingsResponse {
            recordings: rows
                .iter()
                .map(|r| to_pb(r, BTreeMap::new(), BTreeMap::new()))
                .collect(),
            unindexed_count: unindexed,
            next_page_token: next
                .map(|n| URL_SAFE_NO_PAD.encode(n.to_string()))
                .unwrap_or_default(),
        }))
    }
}

fn purpose_of(p: pb::PlaybackPurpose) -> playback::Purpose {
    match p {
        pb::PlaybackPurpose::Download => playback::Purpose::Download,
        pb::PlaybackPurpose::Stream | pb::PlaybackPurpose::Unspecified => playback::Purpose::Stream,
    }
}
