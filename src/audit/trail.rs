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
    archive
        .audit_commits
        .record(|| Writer::of(archive), log, now_ms(), event)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit event could not be written");
            Error::AuditUnavailable(Box::new(e))
        })
}

/// Most events one group commit appends.
const MAX_GROUP: usize = 64;

/// How long a held event ([`hold_in`]) waits for its log's next event before
/// it commits alone.
pub const HOLD: std::time::Duration = std::time::Duration::from_millis(5);

/// The most [`GroupCommit::flush`] takes: committing the held events and
/// waiting for the commits in progress.
const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Records `event` in `log` without waiting for it: it waits up to
/// [`HOLD`] for the log's next event and commits in one group with it,
/// ahead of it (or alone). For events nobody waits on, such as a read-out
/// stream's closing event; a failure to write it is logged.
pub fn hold_in(archive: &Archive, log: &str, event: NewEvent) {
    archive
        .audit_commits
        .hold(|| Writer::of(archive), log, now_ms(), event);
}

/// Group commit of the events recorded outside a change's transaction
/// (reads' write-ahead events, refusals, read-out streams' closing events).
///
/// A log's events are numbered gaplessly under its counter row, so each
/// commit on one log waits for the one before: 200 plays starting together
/// queued 200 commits, one after another, on the way to their first bytes.
/// Here an event that finds its log idle commits at once, in its caller's
/// task, as it always did; events that arrive meanwhile wait, and when it
/// is done a task commits them together, up to [`MAX_GROUP`] per
/// transaction (one counter update, one insert), until none wait. Each
/// waiter is answered only after its event's commit. The waiters' commits
/// run in a spawned task, so a caller that goes away (a client hanging up)
/// cannot strand the others' events: the first caller hands them over
/// however its own commit ends.
///
/// An event nobody waits on ([`hold_in`]: a play's finish event, written
/// after its stream ended) does not take an idle log: it is held for up to
/// [`HOLD`], and the log's next event commits it in one group, ahead of
/// itself. A play that starts as the previous one ends then commits its
/// start event with that play's finish event, instead of queueing behind
/// the finish event's own commit and its flush. Held events that no event
/// came for commit alone when their time is up, and all of them when the
/// node stops ([`GroupCommit::flush`]).
#[derive(Debug, Default)]
pub struct GroupCommit {
    logs: std::sync::Mutex<Logs>,
    /// Per log, its size after this node's last commit to it: the next
    /// commit numbers from it in one statement (`audit::append_at`), and
    /// falls back to a transaction when another node appended since.
    sizes: std::sync::Mutex<HashMap<String, u64>>,
    /// Transactions committed, for tests and the curious.
    commits: std::sync::atomic::AtomicU64,
    /// Of those, the ones committed in one statement at the known size.
    at_known_size: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Logs {
    /// Per log being committed, the events waiting for the next group.
    busy: HashMap<String, Vec<Waiting>>,
    /// Per idle log, the held events waiting for its next event.
    held: HashMap<String, Held>,
    /// Held lists begun so far: each one's timer releases that list only.
    rounds: u64,
}

/// A log's held events, since the first of them was held.
#[derive(Debug)]
struct Held {
    round: u64,
    events: Vec<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    time_ms: i64,
    event: NewEvent,
    /// The caller waiting for the event's commit; `None` for a held event,
    /// whose failure is logged instead.
    answer: Option<oneshot::Sender<Result<Event>>>,
}

impl Waiting {
    fn answer(self, result: Result<Event>) {
        match (self.answer, result) {
            (Some(answer), result) => {
                let _ = answer.send(result);
            }
            (None, Err(e)) => tracing::error!(
                error = %e,
                action = self.event.action.as_str(),
                "audit event not written"
            ),
            (None, Ok(_)) => {}
        }
    }
}

/// What an event does on arriving at its log.
enum Turn {
    /// Waits for the group being formed behind a commit in progress.
    Wait(oneshot::Receiver<Result<Event>>),
    /// Commits the log's held events and itself as one group: driven by
    /// this caller until it is answered, finished in a task otherwise.
    Hand(oneshot::Receiver<Result<Event>>),
    /// Commits itself at once: the log was idle and held nothing.
    Commit(NewEvent),
}

/// Work its caller drives while it waits, which goes on in a task of its
/// own if the caller stops polling it (is dropped) before it ends.
struct Detachable(Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Future for Detachable {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if let Some(work) = self.0.as_mut() {
            std::task::ready!(work.as_mut().poll(cx));
            self.0 = None;
        }
        std::task::Poll::Ready(())
    }
}

impl Drop for Detachable {
    fn drop(&mut self) {
        if let Some(work) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            drop(runtime.spawn(work));
        }
    }
}

/// What a group commit writes with.
#[derive(Clone)]
struct Writer {
    catalog: crate::catalog::Catalog,
    node: String,
    signer: Arc<SignerKey>,
}

impl Writer {
    fn of(archive: &Archive) -> Self {
        Self {
            catalog: archive.catalog.clone(),
            node: archive.node.clone(),
            signer: archive.audit_key.clone(),
        }
    }
}

/// A log this node is committing in its caller's task: while it is held,
/// the log's events wait; when it is dropped, they go to a task (or the
/// log is idle again).
struct Claim<'a> {
    commits: &'a Arc<GroupCommit>,
    log: &'a str,
    writer: Writer,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut logs = self.commits.lock();
        let waiting = logs
            .busy
            .get(self.log)
            .is_some_and(|queue| !queue.is_empty());
        // Outside a runtime (shutting down), the waiters are answered with
        // an error as their senders drop with the queue.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if waiting => {
                let (commits, writer) = (self.commits.clone(), self.writer.clone());
                let log = self.log.to_owned();
                drop(runtime.spawn(async move { commits.drain(&writer, &log).await }));
            }
            _ => {
                logs.busy.remove(self.log);
            }
        }
    }
}

impl GroupCommit {
    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits so far that appended in one statement at the size this node
    /// knew (PostgreSQL), without a transaction.
    pub fn commits_at_known_size(&self) -> u64 {
        self.at_known_size
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events waiting behind the commit in progress on `log`; `None` when
    /// no commit of it is in progress on this node.
    pub fn waiting(&self, log: &str) -> Option<usize> {
        self.lock().busy.get(log).map(Vec::len)
    }

    /// Held events of `log` waiting for its next event.
    pub fn held(&self, log: &str) -> usize {
        self.lock().held.get(log).map_or(0, |h| h.events.len())
    }

    /// Commits every held event now and waits for the commits in
    /// progress, for up to 5 s in all: for a node that is stopping, after
    /// its streams ended.
    pub async fn flush(self: &Arc<Self>, archive: &Archive) {
        let writer = Writer::of(archive);
        let flushed = tokio::time::timeout(FLUSH_LIMIT, async {
            let held: Vec<String> = self.lock().held.keys().cloned().collect();
            for log in held {
                self.release(&writer, &log, None).await;
            }
            while !self.lock().busy.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        if flushed.await.is_err() {
            tracing::warn!("audit events still committing as the node stops");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Logs> {
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
        let turn = {
            let mut logs = self.lock();
            let logs = &mut *logs;
            let wait = |queue: &mut Vec<Waiting>, event| {
                let (answer, answered) = oneshot::channel();
                queue.push(Waiting {
                    time_ms,
                    event,
                    answer: Some(answer),
                });
                answered
            };
            match (
                logs.busy.get_mut(log),
                logs.held.remove(log).map(|h| h.events),
            ) {
                // The log is being committed: this event waits for the next
                // group. (A log being committed holds nothing: the event
                // that took it took its held events too.)
                (Some(queue), held) => {
                    queue.extend(held.into_iter().flatten());
                    Turn::Wait(wait(queue, event))
                }
                // Held events came before it: they and it, after them, are
                // the log's next group.
                (None, Some(mut held)) => {
                    let answered = wait(&mut held, event);
                    logs.busy.insert(log.to_owned(), held);
                    Turn::Hand(answered)
                }
                (None, None) => {
                    logs.busy.insert(log.to_owned(), Vec::new());
                    Turn::Commit(event)
                }
            }
        };
        let answer = match turn {
            Turn::Wait(answered) => answered.await,
            // This caller commits the group (and any that queue behind it)
            // until its own event is answered; what is left, or all of it
            // if the caller goes away, goes on in a task, so that no held
            // event is stranded.
            Turn::Hand(mut answered) => {
                let (commits, writer, log) = (self.clone(), writer(), log.to_owned());
                let mut drain = Detachable(Some(Box::pin(async move {
                    commits.drain(&writer, &log).await;
                })));
                let answer = tokio::select! {
                    biased;
                    answer = &mut answered => Some(answer),
                    () = &mut drain => None,
                };
                drop(drain);
                match answer {
                    Some(answer) => answer,
                    // The group is committed: its waiters were answered.
                    None => answered.await,
                }
            }
            // The log was idle: this event commits now, and whatever
            // arrives meanwhile waits for the claim to be dropped.
            Turn::Commit(event) => {
                let claim = Claim {
                    commits: self,
                    log,
                    writer: writer(),
                };
                let one = self
                    .commit(&claim.writer, log, vec![(time_ms, event)])
                    .await;
                drop(claim);
                return one.and_then(only);
            }
        };
        answer.map_err(|_| Error::task("audit group commit", "ended without an answer"))?
    }

    /// Holds `event` until `log`'s next event, or for [`HOLD`].
    fn hold(
        self: &Arc<Self>,
        writer: impl FnOnce() -> Writer,
        log: &str,
        time_ms: i64,
        event: NewEvent,
    ) {
        let held = Waiting {
            time_ms,
            event,
            answer: None,
        };
        let mut logs = self.lock();
        if let Some(queue) = logs.busy.get_mut(log) {
            queue.push(held);
            return;
        }
        if let Some(queue) = logs.held.get_mut(log) {
            queue.events.push(held);
            return;
        }
        logs.rounds += 1;
        let round = logs.rounds;
        logs.held.insert(
            log.to_owned(),
            Held {
                round,
                events: vec![held],
            },
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (commits, writer, log) = (self.clone(), writer(), log.to_owned());
                drop(runtime.spawn(async move {
                    tokio::time::sleep(HOLD).await;
                    commits.release(&writer, &log, Some(round)).await;
                }));
            }
            Err(_) => {
                if let Some(lost) = logs.held.remove(log) {
                    for w in lost.events {
                        w.answer(Err(Error::task(
                            "audit group commit",
                            "no runtime to commit in",
                        )));
                    }
                }
            }
        }
    }

    /// Commits `log`'s held events: those of `round` only (a timer's: an
    /// event may have taken them, and a later round have its own timer),
    /// or whatever it holds.
    async fn release(&self, writer: &Writer, log: &str, round: Option<u64>) {
        {
            let mut logs = self.lock();
            let logs = &mut *logs;
            let Some(held) = logs.held.remove(log) else {
                return;
            };
            if round.is_some_and(|r| r != held.round) {
                logs.held.insert(log.to_owned(), held);
                return;
            }
            match logs.busy.get_mut(log) {
                // Not reached while events take the held ones as the log
                // turns busy; kept safe all the same.
                Some(queue) => {
                    queue.extend(held.events);
                    return;
                }
                None => {
                    logs.busy.insert(log.to_owned(), held.events);
                }
            }
        }
        self.drain(writer, log).await;
    }

    /// Commits `log`'s waiting events, group by group, until none wait.
    async fn drain(&self, writer: &Writer, log: &str) {
        // A task that ends otherwise than by finding its queue empty (a
        // panic, the runtime shutting down) removes the queue, so that the
        // next event commits again; the waiters it held are answered with
        // an error as their senders drop.
        struct Abandoned<'a>(&'a GroupCommit, &'a str, bool);
        impl Drop for Abandoned<'_> {
            fn drop(&mut self) {
                if self.2 {
                    self.0.lock().busy.remove(self.1);
                }
            }
        }
        let mut abandoned = Abandoned(self, log, true);
        loop {
            let group: Vec<Waiting> = {
                let mut logs = self.lock();
                match logs.busy.get_mut(log) {
                    Some(queue) if !queue.is_empty() => {
                        let n = queue.len().min(MAX_GROUP);
                        queue.drain(..n).collect()
                    }
                    _ => {
                        // Removed under the lock: the next event commits at once.
                        logs.busy.remove(log);
                        abandoned.2 = false;
                        return;
                    }
                }
            };
            let events = group.iter().map(|w| (w.time_ms, w.event.clone())).collect();
            match self.commit(writer, log, events).await {
                Ok(events) => {
                    for (w, event) in group.into_iter().zip(events) {
                        w.answer(Ok(event));
                    }
                }
                Err(e) if group.len() == 1 => {
                    if let Some(w) = group.into_iter().next() {
                        w.answer(Err(e));
                    }
                }
                // One event that cannot be written must not take the
                // others down with it: each is tried alone.
                Err(_) => {
                    for w in group {
                        let alone = self
                            .commit(writer, log, vec![(w.time_ms, w.event.clone())])
                            .await;
                        w.answer(alone.and_then(only));
                    }
                }
            }
        }
    }

    /// Appends `events` to `log` and commits them: in one statement when
    /// the log's size is the one this node last left it at, otherwise in a
    /// transaction that numbers them from the log's counter.
    async fn commit(
        &self,
        writer: &Writer,
        log: &str,
        events: Vec<(i64, NewEvent)>,
    ) -> Result<Vec<Event>> {
        let known = self.size_lock().remove(log);
        let mut appended = None;
        if let Some(size) = known
            && writer.catalog.backend() == crate::catalog::Backend::Postgres
        {
            let mut conn = writer.catalog.conn().await?;
            appended =
                audit::append_at(&mut conn, log, size, &writer.node, &writer.signer, &events)
                    .await?;
        }
        let events = match appended {
            Some(events) => {
                self.at_known_size
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                events
            }
            None => {
                let mut tx = writer.catalog.begin().await?;
                let events =
                    audit::append_all(&mut tx, log, &writer.node, &writer.signer, events).await?;
                tx.commit().await?;
                events
            }
        };
        if let Some(last) = events.last() {
            self.size_lock().insert(log.to_owned(), last.index + 1);
        }
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(events)
    }

    fn size_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The one event a one-event commit appended.
fn only(mut events: Vec<Event>) -> Result<Event> {
    events
        .pop()
        .ok_or_else(|| Error::task("audit group commit", "no event appended"))
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
