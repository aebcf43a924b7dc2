//! Recording audit events from the use cases.
//!
//! Write-ahead and fail-closed: a change's event is appended in the same
//! catalog transaction as the change ([`append`]); a read's event is
//! committed before the first byte of what was read leaves the server
//! ([`record`]), and if it cannot be, the read is refused with
//! [`Error::AuditUnavailable`].

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::archive::Archive;
use crate::audit::event::{Action, Actor, Event, NewEvent, Outcome, SYSTEM_LOG, log_of};
use crate::audit::note::SignerKey;
use crate::catalog::{Conn, audit};
use crate::domain::{Principal, now_ms};
use crate::error::{Error, Result};

/// The name of the audit key the embedded default creates: it names the
/// deployment in note signatures and checkpoint origins.
pub const DEFAULT_KEY_NAME: &str = "callvault";

/// The origin line of `log`'s checkpoints: the deployment (the audit key's
/// name) and the log.
pub fn origin(archive: &Archive, log: &str) -> String {
    format!("{}/audit/{log}", archive.audit_key.name())
}

/// An event by `principal` (its token and client address).
pub fn by(principal: &Principal, action: Action) -> NewEvent {
    NewEvent::new(Actor::token(&principal.token_id, principal.role), action)
        .client(principal.client.as_deref())
}

/// The OS user and host running this process, for operator commands.
pub fn operator() -> Actor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    Actor::operator(&format!("{user}@{}", host_name()))
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Appends `event` to `log` in the caller's transaction: it commits (or
/// not) together with the change it records.
pub async fn append(
    archive: &Archive,
    conn: &mut Conn,
    log: &str,
    event: NewEvent,
) -> Result<Event> {
    audit::append(
        conn,
        log,
        now_ms(),
        &archive.node,
        &archive.audit_key,
        event,
    )
    .await
}

/// Appends `event` to the principal's tenant log and commits it now. Any
/// failure is [`Error::AuditUnavailable`]: the caller must not go on.
pub async fn record(archive: &Archive, principal: &Principal, event: NewEvent) -> Result<Event> {
    record_in(archive, log_of(&principal.tenant), event).await
}

/// Appends `event` to `log` and commits it now (fail-closed), in a group
/// commit with the log's other events waiting at the same moment.
pub async fn record_in(archive: &Archive, log: &str, event: NewEvent) -> Result<Event> {
    let writer = || Writer {
        catalog: archive.catalog.clone(),
        node: archive.node.clone(),
        signer: archive.audit_key.clone(),
    };
    archive
        .audit_commits
        .record(writer, log, now_ms(), event)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit event could not be written");
            Error::AuditUnavailable(Box::new(e))
        })
}

/// Most events one group commit appends.
const MAX_GROUP: usize = 64;

/// Group commit of the events recorded outside a change's transaction
/// (reads' write-ahead events, refusals).
///
/// A log's events are numbered gaplessly under its counter row, so each
/// commit on one log waits for the one before: 200 plays starting together
/// queued 200 commits, one after another, on the way to their first bytes.
/// Here the first event of a log starts a task that commits whatever is
/// waiting for that log, up to [`MAX_GROUP`] events in one transaction
/// (one counter update, one insert), and again until nothing waits; an
/// event alone commits as it did. Each waiter is answered only after its
/// event's commit. The task is spawned, so a caller that goes away (a
/// client hanging up) cannot strand the others' events; its own event may
/// still commit, as it could have before.
#[derive(Debug, Default)]
pub struct GroupCommit {
    logs: std::sync::Mutex<HashMap<String, Vec<Waiting>>>,
    /// Transactions committed, for tests and the curious.
    commits: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Waiting {
    time_ms: i64,
    event: NewEvent,
    answer: oneshot::Sender<Result<Event>>,
}

/// What a group commit writes with.
struct Writer {
    catalog: crate::catalog::Catalog,
    node: String,
    signer: Arc<SignerKey>,
}

impl GroupCommit {
    /// Group commits that succeeded so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Waiting>>> {
        self.logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn record(
        self: &Arc<Self>,
        writer: impl FnOnce() -> Writer,
        log: &str,
        time_ms: i64,
        event: NewEvent,
    ) -> Result<Event> {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            time_ms,
            event,
            answer,
        };
        let start = {
            let mut logs = self.lock();
            match logs.get_mut(log) {
                // A task is committing this log: it takes this event next.
                Some(queue) => {
                    queue.push(waiting);
                    false
                }
                None => {
                    logs.insert(log.to_owned(), vec![waiting]);
                    true
                }
            }
        };
        if start {
            let (commits, writer) = (self.clone(), writer());
            let log = log.to_owned();
            drop(tokio::spawn(
                async move { commits.drain(&writer, &log).await },
            ));
        }
        answered
            .await
            .map_err(|_| Error::task("audit group commit", "ended without an answer"))?
    }

    /// Commits `log`'s waiting events, group by group, until none wait.
    async fn drain(&self, writer: &Writer, log: &str) {
        // A task that ends otherwise than by finding its queue empty (a
        // panic, the runtime shutting down) removes the queue, so that the
        // next event starts another task; the waiters it held are answered
        // with an error as their senders drop.
        struct Abandoned<'a>(&'a GroupCommit, &'a str, bool);
        impl Drop for Abandoned<'_> {
            fn drop(&mut self) {
                if self.2 {
                    self.0.lock().remove(self.1);
                }
            }
        }
        let mut abandoned = Abandoned(self, log, true);
        loop {
            let group: Vec<Waiting> = {
                let mut logs = self.lock();
                match logs.get_mut(log) {
                    Some(queue) if !queue.is_empty() => {
                        let n = queue.len().min(MAX_GROUP);
                        queue.drain(..n).collect()
                    }
                    _ => {
                        // Removed under the lock: the next event starts a task.
                        logs.remove(log);
                        abandoned.2 = false;
                        return;
                    }
                }
            };
            let events = group.iter().map(|w| (w.time_ms, w.event.clone())).collect();
            match commit(writer, log, events).await {
                Ok(events) => {
                    self.commits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for (w, event) in group.into_iter().zip(events) {
                        let _ = w.answer.send(Ok(event));
                    }
                }
                Err(e) if group.len() == 1 => {
                    if let Some(w) = group.into_iter().next() {
                        let _ = w.answer.send(Err(e));
                    }
                }
                // One event that cannot be written must not take the
                // others down with it: each is tried alone.
                Err(_) => {
                    for w in group {
                        let alone = commit(writer, log, vec![(w.time_ms, w.event)]).await;
                        let _ = w.answer.send(alone.and_then(|mut events| {
                            events.pop().ok_or_else(|| {
                                Error::task("audit group commit", "no event appended")
                            })
                        }));
                    }
                }
            }
        }
    }
}

/// Appends `events` to `log` in one transaction and commits it.
async fn commit(writer: &Writer, log: &str, events: Vec<(i64, NewEvent)>) -> Result<Vec<Event>> {
    let mut tx = writer.catalog.begin().await?;
    let events = audit::append_all(&mut tx, log, &writer.node, &writer.signer, events).await?;
    tx.commit().await?;
    Ok(events)
}

/// Records a refused request in the caller's tenant log. Best effort: the
/// request is refused whatever happens here.
pub async fn refused(archive: &Archive, principal: &Principal, action: Action, why: &str) {
    let event = by(principal, Action::AccessRefused)
        .outcome(Outcome::Refused)
        .detail("attempted", action.as_str())
        .detail("reason", why);
    if let Err(e) = record(archive, principal, event).await {
        tracing::warn!(error = %e, "refusal not recorded in the audit trail");
    }
}

/// Records a request whose token matched nobody, in the system log. Best
/// effort, like [`refused`].
pub async fn unknown_token(archive: &Archive, client: Option<&str>, why: &str) {
    let event = NewEvent::new(Actor::system("unauthenticated"), Action::AccessRefused)
        .outcome(Outcome::Refused)
        .detail("reason", why)
        .client(client);
    if let Err(e) = record_in(archive, SYSTEM_LOG, event).await {
        tracing::warn!(error = %e, "refusal not recorded in the audit trail");
    }
}
