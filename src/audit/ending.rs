//! The closing event of a stream that reads data out of the archive (a
//! play, an export): what was actually sent and how the stream ended,
//! recorded when it ends however it ends (completed, failed, or dropped
//! because the client went away).

use std::sync::Arc;

use futures::stream::BoxStream;

use crate::archive::Archive;
use crate::audit::event::{NewEvent, Outcome, log_of};
use crate::audit::trail;
use crate::domain::Principal;
use crate::error::Result;

/// How a read-out stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Completed,
    Failed(String),
    /// The client went away before the end.
    Dropped,
}

impl End {
    /// `event` with the outcome, `completed`, and the error if there was one.
    pub fn describe(self, event: NewEvent) -> NewEvent {
        match self {
            End::Completed => event.detail("completed", true),
            End::Dropped => event.detail("completed", false),
            End::Failed(e) => event
                .outcome(Outcome::Failed)
                .detail("completed", false)
                .detail("error", e),
        }
    }
}

type MakeEvent = Box<dyn FnOnce(u64, End) -> NewEvent + Send>;

/// Records `event(bytes sent, how it ended)` in the principal's log when
/// dropped. Before the stream exists, [`Ending::fail`] records why it never
/// started.
pub struct Ending {
    archive: Arc<Archive>,
    principal: Principal,
    sent: u64,
    end: End,
    event: Option<MakeEvent>,
}

impl std::fmt::Debug for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ending")
            .field("sent", &self.sent)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Ending {
    pub fn new(
        archive: Arc<Archive>,
        principal: &Principal,
        event: impl FnOnce(u64, End) -> NewEvent + Send + 'static,
    ) -> Self {
        Self {
            archive,
            principal: principal.clone(),
            sent: 0,
            end: End::Dropped,
            event: Some(Box::new(event)),
        }
    }

    pub fn fail(&mut self, why: String) {
        self.end = End::Failed(why);
    }

    /// `inner`, counting what it hands out (`len` of each item) and how it
    /// ends; the event is recorded when the returned stream is dropped.
    pub fn watch<T: Send + 'static>(
        self,
        inner: BoxStream<'static, Result<T>>,
        len: fn(&T) -> u64,
    ) -> BoxStream<'static, Result<T>> {
        Box::pin(Watched {
            inner,
            ending: self,
            len,
        })
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        let Some(make) = self.event.take() else {
            return;
        };
        let event = make(self.sent, std::mem::replace(&mut self.end, End::Dropped));
        // Nobody waits for it: it commits with the log's next event (the
        // next play's start, say) or alone a moment later.
        trail::hold_in(&self.archive, log_of(&self.principal.tenant), event);
    }
}

struct Watched<T> {
    inner: BoxStream<'static, Result<T>>,
    ending: Ending,
    len: fn(&T) -> u64,
}

impl<T> futures::Stream for Watched<T> {
    type Item = Result<T>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(item) = &next {
            match item {
                Some(Ok(c)) => {
                    let n = (self.len)(c);
                    self.ending.sent += n;
                }
                Some(Err(e)) => self.ending.end = End::Failed(e.to_string()),
                None => {
                    if self.ending.end == End::Dropped {
                        self.ending.end = End::Completed;
                    }
                }
            }
        }
        next
    }
}
