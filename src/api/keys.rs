//! `KeyService`: the tenant's key lifecycle (admin role).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{job_to_pb, key_health_pb, key_to_pb, timestamp};
use super::{authenticate, pb};
use crate::archive::Archive;
use crate::catalog::{KeyUsage, keys as catalog_keys};
use crate::error::Error;
use crate::keys;

/// Job ids are UUIDs; anything else is refused before it reaches the catalog.
fn job_id(s: &str) -> Result<&str, Error> {
    uuid::Uuid::try_parse(s)
        .map(|_| s)
        .map_err(|_| Error::invalid("job_id", "is not a rewrap job id"))
}

/// One page of a short list the service holds whole (a tenant's key
/// history and rewrap jobs: a handful to a few hundred), in its order:
/// `page_size` 1..=1000 (0: 100); the token is the last item's id, so a
/// page never repeats or skips an item that was there before it.
fn page_of<T>(
    items: Vec<T>,
    page_size: u32,
    token: &str,
    id: impl Fn(&T) -> String,
) -> Result<(Vec<T>, String), Error> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let size = match page_size {
        0 => 100,
        n if n > 1000 => return Err(Error::invalid("page_size", "must be at most 1000")),
        n => n as usize,
    };
    let start = if token.is_empty() {
        0
    } else {
        let bad = || Error::invalid("page_token", "is not a token from a previous response");
        let after = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(bad)?;
        items.iter().position(|i| id(i) == after).ok_or_else(bad)? + 1
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let next = if rest.len() > size {
        rest.truncate(size);
        rest.last()
            .map(|i| URL_SAFE_NO_PAD.encode(id(i)))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((rest, next))
}

#[derive(Debug, Clone)]
pub struct KeyApi {
    archive: Arc<Archive>,
}

impl KeyApi {
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

#[tonic::async_trait]
impl pb::key_service_server::KeyService for KeyApi {
    async fn register_key(
        &self,
        request: Request<pb::RegisterKeyRequest>,
    ) -> Result<Response<pb::TenantKey>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let reg =
            keys::Registration::parse(&req.key_arn, req.replica_key_arns.into_iter().collect())?;
        let key = keys::register(&self.archive, &principal, &reg).await?;
        let usage =
            catalog_keys::usage(&mut *self.archive.catalog.conn().await?, &principal.tenant)
                .await?;
        let usage = usage.get(&key.key_arn).copied().unwrap_or_default();
        Ok(Response::new(key_to_pb(&key, &usage)))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let keys = keys::list(&self.archive, &principal).await?;
        let (page, next) = page_of(keys, req.page_size, &req.page_token, |(k, _)| {
            k.key_arn.to_string()
        })?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: page.iter().map(|(k, u)| key_to_pb(k, u)).collect(),
            next_page_token: next,
        }))
    }

    async fn retire_key(
        &self,
        request: Request<pb::RetireKeyRequest>,
    ) -> Result<Response<pb::TenantKey>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let key = keys::retire(&self.archive, &principal, &request.get_ref().key_arn).await?;
        Ok(Response::new(key_to_pb(&key, &KeyUsage::default())))
    }

    async fn get_key_health(
        &self,
        request: Request<pb::GetKeyHealthRequest>,
    ) -> Result<Response<pb::KeyHealth>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let h = keys::health(&self.archive, &principal, request.get_ref().refresh).await?;
        Ok(Response::new(pb::KeyHealth {
            keys: h.keys.iter().map(|(k, u)| key_to_pb(k, u)).collect(),
            incidents: h
                .incidents
                .iter()
                .map(|i| pb::KeyIncident {
                    key_arn: i.key_arn.to_string(),
                    state: key_health_pb(i.state).into(),
                    recording_count: i.recordings,
                    legal_hold_count: i.legal_hold,
                    unreadable_time: i.unreadable_at_ms.map(timestamp),
                    message: i.message.clone(),
                })
                .collect(),
            rotation: Some(pb::RotationCompliance {
                active_key_age_days: h.rotation.active_key_age_days,
                policy_days: h.rotation.policy_days,
                compliant: h.rotation.compliant,
            }),
        }))
    }

    async fn set_rotation_policy(
        &self,
        request: Request<pb::SetRotationPolicyRequest>,
    ) -> Result<Response<pb::RotationCompliance>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        keys::set_rotation_policy(&self.archive, &principal, request.get_ref().policy_days).await?;
        let h = keys::health(&self.archive, &principal, false).await?;
        Ok(Response::new(pb::RotationCompliance {
            active_key_age_days: h.rotation.active_key_age_days,
            policy_days: h.rotation.policy_days,
            compliant: h.rotation.compliant,
        }))
    }

    async fn start_rewrap(
        &self,
        request: Request<pb::StartRewrapRequest>,
    ) -> Result<Response<pb::RewrapJob>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let job = keys::start_rewrap(
            &self.archive,
            &principal,
            &req.source_key_arn,
            &req.destination_key_arn,
            req.max_kms_requests_per_second,
        )
        .await?;
        Ok(Response::new(job_to_pb(&job)))
    }

    async fn get_rewrap_job(
        &self,
        request: Request<pb::GetRewrapJobRequest>,
    ) -> Result<Response<pb::RewrapJob>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let id = job_id(&request.get_ref().job_id)?;
        let job = keys::rewrap_job(&self.archive, &principal, id).await?;
        Ok(Response::new(job_to_pb(&job)))
    }

    async fn list_rewrap_jobs(
        &self,
        request: Request<pb::ListRewrapJobsRequest>,
    ) -> Result<Response<pb::ListRewrapJobsResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let jobs = keys::rewrap_jobs(&self.archive, &principal).await?;
        let (page, next) = page_of(jobs, req.page_size, &req.page_token, |j| j.id.clone())?;
        Ok(Response::new(pb::ListRewrapJobsResponse {
            jobs: page.iter().map(job_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn resume_rewrap(
        &self,
        request: Request<pb::ResumeRewrapRequest>,
    ) -> Result<Response<pb::RewrapJob>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let id = job_id(&request.get_ref().job_id)?;
        let job = keys::resume_rewrap(&self.archive, &principal, id).await?;
        Ok(Response::new(job_to_pb(&job)))
    }

    async fn cancel_rewrap(
        &self,
        request: Request<pb::CancelRewrapRequest>,
    ) -> Result<Response<pb::RewrapJob>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let id = job_id(&request.get_ref().job_id)?;
        let job = keys::cancel_rewrap(&self.archive, &principal, id).await?;
        Ok(Response::new(job_to_pb(&job)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_the_list_once_in_order() {
        let items: Vec<String> = (0..7).map(|i| format!("job-{i}")).collect();
        for size in 1..=8 {
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let (page, next) = page_of(items.clone(), size, &token, Clone::clone).unwrap();
                assert!(page.len() <= size as usize);
                seen.extend(page);
                if next.is_empty() {
                    break;
                }
                token = next;
            }
            assert_eq!(seen, items, "page size {size}");
        }
        assert!(page_of(items.clone(), 1001, "", Clone::clone).is_err());
        assert!(page_of(items.clone(), 1, "not-a-token!", Clone::clone).is_err());
        // A token naming an item that is gone is refused, not restarted.
        let gone =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, "job-99");
        assert!(page_of(items, 1, &gone, Clone::clone).is_err());
    }
}
