//! Recording audit events from the use cases.
//!
//! Write-ahead and fail-closed: a change's event is appended in the same
//! catalog transaction as the change ([`append`]); a read's event is
//! committed before the first byte of what was read leaves the server
//! ([`record`]), and if it cannot be, the read is refused with
//! [`Error::AuditUnavailable`].

use crate::archive::Archive;
use crate::audit::event::{Action, Actor, Event, NewEvent, Outcome, SYSTEM_LOG, log_of};
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

/// Appends `event` to `log` and commits it now (fail-closed).
pub async fn record_in(archive: &Archive, log: &str, event: NewEvent) -> Result<Event> {
    let res = async {
        let mut tx = archive.catalog.begin().await?;
        let e = append(archive, &mut tx, log, event).await?;
        tx.commit().await?;
        Ok::<_, Error>(e)
    }
    .await;
    res.map_err(|e| {
        tracing::error!(error = %e, "audit event could not be written");
        Error::AuditUnavailable(Box::new(e))
    })
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
