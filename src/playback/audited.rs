//! The audit trail's view of a play: what was actually sent, recorded when
//! the stream ends however it ends.

use std::sync::Arc;

use futures::stream::BoxStream;

use super::{PlayChunk, Purpose};
use crate::archive::Archive;
use crate::audit::event::{Action as AuditAction, Outcome};
use crate::audit::trail;
use crate::domain::{Principal, RecordingId};
use crate::error::Result;

/// What a play actually sent, recorded when its stream ends however it
/// ends (completed, failed, or dropped because the client went away).
pub(super) struct PlayFinish {
    pub(super) archive: Arc<Archive>,
    pub(super) principal: Principal,
    pub(super) rec: RecordingId,
    pub(super) purpose: Purpose,
    pub(super) from: u64,
    pub(super) sent: u64,
    pub(super) size: u64,
    pub(super) duration_ms: u64,
    /// `Ok(())` completed, `Err(why)` failed, `None` dropped.
    pub(super) end: Option<std::result::Result<(), String>>,
}

impl Drop for PlayFinish {
    fn drop(&mut self) {
        let to = self.from + self.sent;
        // Byte offsets to times, proportionally (exact for constant bit
        // rates, an estimate for the others).
        let at = |b: u64| {
            u64::try_from(
                u128::from(b) * u128::from(self.duration_ms) / u128::from(self.size.max(1)),
            )
            .unwrap_or(u64::MAX)
        };
        let (outcome, completed, error) = match &self.end {
            Some(Ok(())) => (Outcome::Ok, true, None),
            Some(Err(e)) => (Outcome::Failed, false, Some(e.clone())),
            None => (Outcome::Ok, false, None),
        };
        let mut event = trail::by(&self.principal, AuditAction::PlaybackFinished)
            .outcome(outcome)
            .recording(self.rec)
            .detail("purpose", self.purpose.as_str())
            .detail("from_byte", self.from)
            .detail("to_byte", to)
            .detail("bytes_sent", self.sent)
            .detail("from_ms", at(self.from))
            .detail("to_ms", at(to))
            .detail("completed", completed);
        if let Some(e) = error {
            event = event.detail("error", e);
        }
        let (archive, principal) = (self.archive.clone(), self.principal.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = trail::record(&archive, &principal, event).await {
                    tracing::error!(error = %e, "playback end not recorded in the audit trail");
                }
            });
        }
    }
}

/// A play's stream that counts what it hands out for its finish event.
pub(super) struct Audited {
    pub(super) inner: BoxStream<'static, Result<PlayChunk>>,
    pub(super) finish: PlayFinish,
}

impl futures::Stream for Audited {
    type Item = Result<PlayChunk>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(item) = &next {
            match item {
                Some(Ok(c)) => self.finish.sent += c.data.len() as u64,
                Some(Err(e)) => self.finish.end = Some(Err(e.to_string())),
                None => {
                    if self.finish.end.is_none() {
                        self.finish.end = Some(Ok(()));
                    }
                }
            }
        }
        next
    }
}
