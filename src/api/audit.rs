//! `AuditService`: the tenant's audit trail for compliance staff.

use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::convert::{event_to_pb, ms_of, timestamp};
use super::{authenticate, pb};
use crate::archive::Archive;
use crate::audit::event::Action as AuditAction;
use crate::audit::log;
use crate::catalog::audit::{EventFilter, StoredCheckpoint};
use crate::domain::RecordingId;
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct AuditApi {
    archive: Arc<Archive>,
}

impl AuditApi {
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

fn checkpoint_to_pb(cp: &StoredCheckpoint) -> pb::Checkpoint {
    pb::Checkpoint {
        tree_size: cp.size,
        root_hash: bytes::Bytes::copy_from_slice(&cp.root_hash),
        note: cp.note.clone(),
        create_time: Some(timestamp(cp.created_at_ms)),
    }
}

fn cursor(token: &str) -> Result<Option<u64>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("page_token", "is not a token from a previous response");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    s.parse().map(Some).map_err(|_| bad())
}

type LeafStream = Pin<Box<dyn Stream<Item = Result<pb::Leaf, Status>> + Send>>;

/// Leaves sent per catalog read while streaming.
const LEAF_PAGE: u32 = 1000;

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    type StreamLeavesStream = LeafStream;

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let filter = EventFilter {
            recording: if req.recording_id.is_empty() {
                None
            } else {
                Some(RecordingId::parse("recording_id", &req.recording_id).map_err(Error::from)?)
            },
            actor: (!req.actor_id.is_empty()).then_some(req.actor_id),
            action: if req.action.is_empty() {
                None
            } else {
                Some(AuditAction::parse(&req.action).ok_or_else(|| {
                    Error::invalid("action", "is not an audit action (see docs/AUDIT.md)")
                })?)
            },
            since_ms: req.start_time.as_ref().map(ms_of),
            until_ms: req.end_time.as_ref().map(ms_of),
        };
        let after = cursor(&req.page_token)?;
        let (events, next) =
            log::list_events(&self.archive, &principal, &filter, req.page_size, after).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events.iter().map(event_to_pb).collect(),
            next_page_token: next
                .map(|n| URL_SAFE_NO_PAD.encode(n.to_string()))
                .unwrap_or_default(),
        }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let cp = log::checkpoint(&self.archive, &principal, request.get_ref().tree_size).await?;
        Ok(Response::new(checkpoint_to_pb(&cp)))
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let cps = log::checkpoints(&self.archive, &principal).await?;
        Ok(Response::new(pb::ListCheckpointsResponse {
            checkpoints: cps.iter().map(checkpoint_to_pb).collect(),
        }))
    }

    async fn create_checkpoint(
        &self,
        request: Request<pb::CreateCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let cp = log::checkpoint(&self.archive, &principal, 0).await?;
        Ok(Response::new(checkpoint_to_pb(&cp)))
    }

    async fn stream_leaves(
        &self,
        request: Request<pb::StreamLeavesRequest>,
    ) -> Result<Response<LeafStream>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let (start, end) = log::leaves(&self.archive, &principal, req.start, req.end).await?;
        let archive = self.archive.clone();
        let stream = futures::stream::try_unfold(start, move |at| {
            let (archive, principal) = (archive.clone(), principal.clone());
            async move {
                if at >= end {
                    return Ok(None);
                }
                let limit =
                    u32::try_from((end - at).min(u64::from(LEAF_PAGE))).unwrap_or(LEAF_PAGE);
                let page = log::leaf_page(&archive, &principal, at, limit).await?;
                let next = at + page.len() as u64;
                if page.is_empty() {
                    return Err(Error::CatalogCorrupt(format!(
                        "audit log ends before index {at}"
                    )));
                }
                let leaves: Vec<Result<pb::Leaf, Status>> = page
                    .into_iter()
                    .map(|e| {
                        Ok(pb::Leaf {
                            index: e.index,
                            canonical: e.canonical,
                            leaf_hash: bytes::Bytes::copy_from_slice(&e.leaf_hash),
                            signature: e.signature.into(),
                        })
                    })
                    .collect();
                Ok(Some((futures::stream::iter(leaves), next)))
            }
        });
        use futures::{StreamExt, TryStreamExt};
        let flat = stream
            .map_err(Status::from)
            .map(|r| match r {
                Ok(s) => s.left_stream(),
                Err(e) => futures::stream::iter(vec![Err(e)]).right_stream(),
            })
            .flatten();
        Ok(Response::new(Box::pin(flat)))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let (size, hashes, event) =
            log::inclusion(&self.archive, &principal, req.index, req.tree_size).await?;
        Ok(Response::new(pb::InclusionProof {
            index: req.index,
            tree_size: size,
            hashes: hashes
                .iter()
                .map(|h| bytes::Bytes::copy_from_slice(h.as_bytes()))
                .collect(),
            canonical: event.canonical,
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let (second, hashes) =
            log::consistency(&self.archive, &principal, req.first_size, req.second_size).await?;
        Ok(Response::new(pb::ConsistencyProof {
            first_size: req.first_size,
            second_size: second,
            hashes: hashes
                .iter()
                .map(|h| bytes::Bytes::copy_from_slice(h.as_bytes()))
                .collect(),
        }))
    }

    async fn get_verifier_key(
        &self,
        request: Request<pb::GetVerifierKeyRequest>,
    ) -> Result<Response<pb::VerifierKey>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let (key, origin) = log::verifier(&self.archive, &principal).await?;
        Ok(Response::new(pb::VerifierKey {
            verifier_key: key.to_string(),
            origin,
        }))
    }
}
