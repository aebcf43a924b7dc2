//! Listening through a signed URL: the requests a browser makes (a range
//! here, a seek there, often dozens a minute) are audited as one listening
//! session, not one event pair per request.
//!
//! A session is a URL's session id on one recording on one node. Its first
//! request commits a `playback.start` event before any byte leaves (fail
//! closed, like every read); every request after that is covered by it.
//! Each range served is remembered; when the session has been idle for
//! [`Listening::idle`] (or has lasted [`Listening::max_age`], or the node
//! stops), one `playback.finish` event records the byte ranges actually
//! sent, as time too, with how many requests made them. A 30-minute listen
//! is two events per `max_age`, whatever the player does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::rendition::{View, open_wav_range};
use super::urls::{Claims, UrlRefused};
use super::{Purpose, open_range};
use crate::archive::Archive;
use crate::audit::event::{Action as AuditAction, Outcome};
use crate::audit::trail;
use crate::catalog::RecordingRow;
use crate::domain::{Principal, RecordingId, TenantId};
use crate::error::{Error, Result};

/// Ranges written out in one finish event at most (a session with more
/// says how many it left out).
const MAX_RANGES_IN_EVENT: usize = 64;

/// The open listening sessions of this node.
#[derive(Debug)]
pub struct Listening {
    sessions: Mutex<HashMap<SessionKey, Session>>,
    /// A session with no request for this long is closed.
    pub idle: Duration,
    /// A session is closed (and the next request opens a new one) once it
    /// is this old and no request is in flight.
    pub max_age: Duration,
}

impl Default for Listening {
    fn default() -> Self {
        Self::new(Duration::from_secs(30), Duration::from_secs(15 * 60))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    tenant: TenantId,
    session: String,
    recording: RecordingId,
    /// The decoded rendition the session reads, if not the original: its
    /// byte ranges are of different bytes.
    rendition: Option<&'static str>,
}

#[derive(Debug)]
struct Session {
    principal: Principal,
    purpose: Purpose,
    size: u64,
    duration_ms: u64,
    /// Set once the start event committed.
    started: Arc<tokio::sync::OnceCell<()>>,
    opened: Instant,
    last: Instant,
    active: usize,
    ranges: RangeSet,
    /// Where the requests that sent audio started, in order (the first
    /// `MAX_RANGES_IN_EVENT`): the seeks.
    starts: Vec<u64>,
    /// Every client address the session's requests came from (a link
    /// passed on is used from another address), the first 16.
    clients: Vec<String>,
    bytes: u64,
    requests: u64,
    error: Option<String>,
}

impl Listening {
    pub fn new(idle: Duration, max_age: Duration) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            idle,
            max_age,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins (or opens, committing its start event) the session of a
    /// request for `start..` of `row`.
    async fn join(
        self: &Arc<Self>,
        archive: &Archive,
        principal: &Principal,
        claims: &Claims,
        row: &RecordingRow,
        view: &View,
        start: u64,
    ) -> Result<Served> {
        let key = SessionKey {
            tenant: principal.tenant.clone(),
            session: claims.session.clone(),
            recording: row.id,
            rendition: view.rendition(),
        };
        let size = view.size(row);
        let purpose = claims.purpose();
        let started = {
            let now = Instant::now();
            let mut sessions = self.lock();
            let s = sessions.entry(key.clone()).or_insert_with(|| Session {
                principal: principal.clone(),
                purpose,
                size,
                duration_ms: view.duration_ms(row),
                started: Arc::default(),
                opened: now,
                last: now,
                active: 0,
                ranges: RangeSet::default(),
                starts: Vec::new(),
                clients: Vec::new(),
                bytes: 0,
                requests: 0,
                error: None,
            });
            s.active += 1;
            s.requests += 1;
            s.last = now;
            if let Some(c) = &principal.client
                && !s.clients.contains(c)
                && s.clients.len() < 16
            {
                s.clients.push(c.clone());
            }
            s.started.clone()
        };
        let served = Served {
            listening: self.clone(),
            key,
            from: start,
            sent: 0,
            error: None,
        };
        started
            .get_or_try_init(|| async {
                let mut event = trail::by(principal, AuditAction::PlaybackStarted)
                    .recording(row.id)
                    .detail("purpose", purpose.as_str())
                    .detail("via", "url")
                    .detail("session", claims.session.clone())
                    .detail("offset_bytes", start)
                    .detail("size_bytes", size)
                    .detail("url_expires_at_ms", claims.expires_at_ms);
                if let Some(r) = view.rendition() {
                    event = event.detail("rendition", r);
                }
                trail::record(archive, principal, event).await.map(|_| ())
            })
            .await?;
        Ok(served)
    }

    /// Closes the sessions that are due (every one when `all`, at shutdown,
    /// with what its open responses sent so far) and records their finish
    /// events. A session whose event cannot be written goes back to be
    /// closed on the next pass. Returns how many closed.
    pub async fn close_due(&self, archive: &Archive, all: bool) -> Result<usize> {
        let now = Instant::now();
        let due: Vec<(SessionKey, Session)> = {
            let mut sessions = self.lock();
            let keys: Vec<SessionKey> = sessions
                .iter()
                .filter(|(_, s)| {
                    all || (s.active == 0
                        && (now.duration_since(s.last) >= self.idle
                            || now.duration_since(s.opened) >= self.max_age))
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| sessions.remove(&k).map(|s| (k, s)))
                .collect()
        };
        let mut closed = 0;
        let mut first_error = None;
        for (key, s) in due {
            // A session whose start never committed served nothing.
            if s.started.get().is_none() {
                continue;
            }
            match trail::record(archive, &s.principal, finished(&key, &s)).await {
                Ok(_) => closed += 1,
                Err(e) => {
                    // Not lost: back in the map for the next pass (a
                    // request meanwhile joins it again).
                    self.lock().entry(key).or_insert(s);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(closed),
        }
    }
}

/// The finish event of a closed session.
fn finished(key: &SessionKey, s: &Session) -> crate::audit::event::NewEvent {
    let at = |b: u64| {
        u64::try_from(u128::from(b) * u128::from(s.duration_ms) / u128::from(s.size.max(1)))
            .unwrap_or(u64::MAX)
    };
    let ranges = s.ranges.spans();
    let listed: Vec<String> = ranges
        .iter()
        .take(MAX_RANGES_IN_EVENT)
        .map(|(a, b)| format!("{a}-{}", b - 1))
        .collect();
    let times: Vec<String> = ranges
        .iter()
        .take(MAX_RANGES_IN_EVENT)
        .map(|(a, b)| format!("{}-{}", at(*a), at(*b)))
        .collect();
    let mut event = trail::by(&s.principal, AuditAction::PlaybackFinished)
        .recording(key.recording)
        .detail("purpose", s.purpose.as_str())
        .detail("via", "url")
        .detail("session", key.session.clone())
        .detail("requests", s.requests)
        .detail("clients", s.clients.join(","))
        .detail("bytes_sent", s.bytes)
        .detail("byte_ranges", listed.join(","))
        .detail("ms_ranges", times.join(","))
        .detail(
            "request_starts",
            s.starts
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .detail("completed", ranges == [(0, s.size)]);
    if ranges.len() > MAX_RANGES_IN_EVENT {
        event = event.detail("ranges_not_listed", ranges.len() - MAX_RANGES_IN_EVENT);
    }
    if let Some(r) = key.rendition {
        event = event.detail("rendition", r);
    }
    if let Some(e) = &s.error {
        event = event.outcome(Outcome::Failed).detail("error", e.clone());
    }
    event
}

/// One request's share of its session: the range it sent, recorded when
/// it is dropped (the response finished, failed or was abandoned).
#[derive(Debug)]
struct Served {
    listening: Arc<Listening>,
    key: SessionKey,
    from: u64,
    sent: u64,
    error: Option<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let mut sessions = self.listening.lock();
        if let Some(s) = sessions.get_mut(&self.key) {
            s.active = s.active.saturating_sub(1);
            s.last = Instant::now();
            if self.sent > 0 {
                s.ranges.add(self.from, self.from + self.sent);
                s.bytes += self.sent;
                if s.starts.len() < MAX_RANGES_IN_EVENT {
                    s.starts.push(self.from);
                }
            }
            if let Some(e) = self.error.take() {
                s.error = Some(e);
            }
        }
    }
}

/// Disjoint, sorted, merged half-open byte ranges.
#[derive(Debug, Default)]
struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        self.0.retain(|&(a, b)| {
            // Overlapping or touching: merge into the new one.
            if a <= end && start <= b {
                start = start.min(a);
                end = end.max(b);
                false
            } else {
                true
            }
        });
        let at = self.0.partition_point(|&(a, _)| a < start);
        self.0.insert(at, (start, end));
    }

    fn spans(&self) -> Vec<(u64, u64)> {
        self.0.clone()
    }
}

/// A request through a signed URL, verified: who it acts as, what it may
/// read.
#[derive(Debug)]
pub struct UrlRequest {
    pub principal: Principal,
    pub claims: Claims,
    pub row: RecordingRow,
}

/// Why a URL request is not served.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// 403 with this reason.
    #[error(transparent)]
    Refused(#[from] UrlRefused),
    /// Anything else, mapped like any other error (not found, unavailable).
    #[error(transparent)]
    Failed(#[from] Error),
}

/// Checks a request for `rec` with the `sig` parameter: the signature and
/// expiry, the issuing token still live, the tenant's epoch current, the
/// token's role still allowed to read, the recording there. `client` is the
/// peer address for the audit trail.
pub async fn authorize(
    archive: &Archive,
    rec: RecordingId,
    sig: Option<&str>,
    client: Option<String>,
) -> std::result::Result<UrlRequest, UrlError> {
    let sig = sig.filter(|s| !s.is_empty()).ok_or(UrlRefused::Missing)?;
    let claims = archive
        .url_keys
        .verify(&rec, sig, crate::domain::now_ms())?;
    let mut principal = match super::urls::check_issuer(archive, &claims).await {
        Ok(p) => p,
        Err(super::urls::CheckError::Refused(r)) => return Err(r.into()),
        Err(super::urls::CheckError::Other(e)) => return Err(e.into()),
    };
    principal.client = client;
    super::require_reader(archive, &principal).await?;
    let row = super::find(archive, &principal, rec, AuditAction::PlaybackStarted).await?;
    Ok(UrlRequest {
        principal,
        claims,
        row,
    })
}

/// Bytes `start..end` of `view` (the original's plaintext, or the decoded
/// rendition) for a verified URL request, within its listening session
/// (whose start event commits first). The stream
/// ends with an error when the issuing token or the key is revoked; what
/// it actually sent is recorded in the session when it is dropped.
pub async fn serve_range(
    archive: &Arc<Archive>,
    req: &UrlRequest,
    view: &View,
    start: u64,
    end: u64,
) -> std::result::Result<BoxStream<'static, Result<Bytes>>, UrlError> {
    let revocations = archive.revocations.subscribe();
    let mut served = archive
        .listening
        .join(archive, &req.principal, &req.claims, &req.row, view, start)
        .await?;
    let opened = match view {
        View::Original => open_range(archive, &req.row, start, end).await,
        View::Wav(layout) => open_wav_range(archive, &req.row, *layout, start, end).await,
    };
    let (key, stream) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            served.error = Some(e.to_string());
            return Err(refusal_of(e));
        }
    };
    let stream = crate::revocation::guard(
        archive.clone(),
        &req.principal,
        vec![key],
        revocations,
        stream,
    );
    let mut check =
        tokio::time::interval_at(tokio::time::Instant::now() + URL_RECHECK, URL_RECHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Streaming {
        stream,
        served,
        check,
        archive: archive.clone(),
        claims: req.claims.clone(),
    };
    Ok(futures::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        let item = loop {
            tokio::select! {
                biased;
                _ = st.check.tick() => {
                    // A revoked epoch (or token) ends a response in flight
                    // too: a player streaming `bytes=0-` holds one for as
                    // long as it plays.
                    // So does the URL's expiry.
                    if crate::domain::now_ms() >= st.claims.expires_at_ms {
                        break Err(UrlRefused::Expired {
                            at_ms: st.claims.expires_at_ms,
                        });
                    }
                    if let Err(super::urls::CheckError::Refused(r)) =
                        super::urls::check_issuer(&st.archive, &st.claims).await
                    {
                        break Err(r);
                    }
                }
                item = st.stream.next() => break Ok(item),
            }
        };
        match item {
            Ok(Some(Ok(c))) => {
                st.served.sent += c.data.len() as u64;
                Some((Ok(c.data), Some(st)))
            }
            Ok(Some(Err(e))) => {
                st.served.error = Some(e.to_string());
                Some((Err(e), None))
            }
            Ok(None) => None,
            Err(refused) => {
                st.served.error = Some(refused.to_string());
                Some((
                    Err(Error::Unauthenticated(
                        "the playback link expired or was revoked",
                    )),
                    None,
                ))
            }
        }
    })
    .boxed())
}

/// How often a response in flight re-checks its URL's epoch and issuing
/// token (one catalog read).
pub const URL_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

struct Streaming {
    stream: BoxStream<'static, Result<crate::playback::PlayChunk>>,
    served: Served,
    check: tokio::time::Interval,
    archive: Arc<Archive>,
    claims: Claims,
}

/// Joins the session of a verified request that sends no audio (HEAD, an
/// empty range): the metadata read is covered by the session's start event.
/// Like every other answer, it needs the recording's key to be usable.
pub async fn touch(
    archive: &Arc<Archive>,
    req: &UrlRequest,
    view: &View,
) -> std::result::Result<(), UrlError> {
    super::cipher_for(archive, &req.row)
        .await
        .map_err(refusal_of)?;
    archive
        .listening
        .join(archive, &req.principal, &req.claims, &req.row, view, 0)
        .await?;
    Ok(())
}

/// A key KMS will not unwrap (disabled, pending deletion, access denied)
/// is the URL's refusal; any other error is itself.
fn refusal_of(e: Error) -> UrlError {
    match e {
        Error::Kms(k) if crate::revocation::is_refusal(&k) => UrlRefused::KeyUnusable.into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSet;

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        let mut r = RangeSet::default();
        r.add(100, 200);
        r.add(300, 400);
        r.add(0, 10);
        assert_eq!(r.spans(), [(0, 10), (100, 200), (300, 400)]);
        r.add(200, 300);
        assert_eq!(r.spans(), [(0, 10), (100, 400)]);
        r.add(5, 150);
        assert_eq!(r.spans(), [(0, 400)]);
        r.add(50, 60);
        r.add(7, 7);
        assert_eq!(r.spans(), [(0, 400)]);
    }
}
