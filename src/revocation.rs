//! Revocation reaching what is already running.
//!
//! A revoked token or a KMS key that stopped working must not keep an open
//! stream going. Each node has one announcement bus ([`Revocations`]): the
//! node itself announces a key KMS refused, and two background tasks carry
//! what other nodes and operator commands did (PostgreSQL NOTIFY on the
//! key and token channels, and a poll of recently revoked tokens that
//! works on every catalog). An open stream wrapped by [`guard`] listens
//! and also re-checks its key and token periodically, so it ends:
//!
//! * at once when its token is revoked (NOTIFY; on SQLite within one poll,
//!   [`TOKEN_POLL_INTERVAL`]) or expires;
//! * at once when any node announces its key refused and a re-check agrees;
//! * otherwise within the key cache's TTL plus one re-check interval
//!   ([`recheck_interval`]) of KMS starting to refuse the key, because each
//!   re-check unwraps through the cache, whose answers are at most one TTL
//!   old.
//!
//! Audio already handed to the transport (HTTP/2 flow-control windows, a
//! few MiB) still reaches the client; nothing is produced after the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::archive::Archive;
use crate::catalog::{
    KEY_REVOCATION_CHANNEL, RECORDING_ERASED_CHANNEL, TOKEN_REVOCATION_CHANNEL, tokens,
};
use crate::domain::{Principal, TenantId, now_ms};
use crate::error::{Error, Result};
use crate::kms::cache::CachedKey;
use crate::kms::{EncryptionContext, KmsError, WrapAlgorithm, arn_key_id};

/// How often a node looks for tokens revoked on another node or by an
/// operator command (the only way on SQLite, a safety net on PostgreSQL).
pub const TOKEN_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How far back each poll looks: covers clocks a little apart and
/// revocations whose transaction committed after their timestamp.
const TOKEN_POLL_WINDOW_MS: i64 = 60_000;

/// Something that stopped being usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// KMS refused this key ARN (its multi-Region relatives match too).
    Key(String),
    /// This token id was revoked.
    Token(String),
    /// Announcements may have been missed (a listener reconnected): every
    /// open stream re-checks now.
    Unknown,
}

/// The node's announcement bus.
#[derive(Debug)]
pub struct Revocations {
    tx: broadcast::Sender<Revoked>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Revocations {
    /// Tells every open stream of this node (none listening is fine).
    pub fn announce(&self, revoked: Revoked) {
        let _ = self.tx.send(revoked);
    }

    /// Listen from now on; subscribe before checking, so nothing announced
    /// in between is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Revoked> {
        self.tx.subscribe()
    }
}

/// The data key an open stream reads with: enough to ask KMS again.
#[derive(Debug, Clone)]
pub struct KeyInUse {
    /// The ARN this node calls KMS with (a replica in another region).
    pub kms_arn: String,
    pub algorithm: WrapAlgorithm,
    pub wrapped: Vec<u8>,
    pub ctx: EncryptionContext,
}

impl KeyInUse {
    /// Unwraps through the node's cache (single flight, at most one TTL old).
    pub async fn unwrap(&self, archive: &Archive) -> std::result::Result<Arc<CachedKey>, KmsError> {
        archive
            .keys
            .unwrap(&self.kms_arn, self.algorithm, &self.wrapped, &self.ctx)
            .await
    }
}

/// KMS refused the key: disabled, pending deletion, access denied.
pub fn is_refusal(e: &KmsError) -> bool {
    matches!(
        e,
        KmsError::Disabled { .. }
            | KmsError::PendingDeletion { .. }
            | KmsError::AccessDenied { .. }
    )
}

/// How often an open stream re-checks its key and token: a quarter of the
/// key cache's TTL, between 100 ms and 60 s.
pub fn recheck_interval(archive: &Archive) -> Duration {
    (archive.keys.ttl() / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

struct Watch {
    archive: Arc<Archive>,
    tenant: TenantId,
    token_id: String,
    /// The keys the stream reads with: one for a play, one per KMS key
    /// (any of its recordings' data keys) for an export.
    keys: Vec<KeyInUse>,
    rx: broadcast::Receiver<Revoked>,
    listening: bool,
    tick: Interval,
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Watch {
    fn ended(key: &KeyInUse, reason: String) -> Error {
        Error::KeyRevokedMidStream {
            arn: key.kms_arn.clone(),
            reason,
        }
    }

    /// Asks again: is the token live, does KMS still unwrap the key? After
    /// an announcement a failed re-check ends the stream; on the periodic
    /// tick an unavailable catalog or KMS does not (the stream already has
    /// its key, and an outage is not a revocation).
    async fn recheck(&mut self, announced: bool) -> Result<()> {
        let live = match self.archive.catalog.conn().await {
            Ok(mut conn) => tokens::check_live(&mut conn, &self.tenant, &self.token_id).await,
            Err(e) => Err(e),
        };
        match live {
            Err(e @ Error::Unauthenticated(_)) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "open stream could not re-check its token"),
            Ok(()) => {}
        }
        for key in &self.keys {
            match key.unwrap(&self.archive).await {
                Ok(_) => {}
                Err(e) if is_refusal(&e) => {
                    self.archive.key_revoked(&key.kms_arn).await;
                    return Err(Self::ended(key, e.to_string()));
                }
                Err(e) if announced => {
                    return Err(Self::ended(
                        key,
                        format!("another node found it refused, and KMS cannot confirm now: {e}"),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "open stream could not re-check its key");
                }
            }
        }
        Ok(())
    }

    /// The inner stream's next item, unless a revocation ends it first.
    async fn next<T>(
        &mut self,
        inner: &mut BoxStream<'static, Result<T>>,
    ) -> Result<Option<Result<T>>> {
        loop {
            tokio::select! {
                biased;
                _ = &mut self.expiry => return Err(Error::Unauthenticated("token expired")),
                msg = self.rx.recv(), if self.listening => match msg {
                    Ok(Revoked::Token(id)) if id == self.token_id => {
                        return Err(Error::Unauthenticated("token revoked"));
                    }
                    Ok(Revoked::Key(arn))
                        if self.keys.iter().any(|k| arn_key_id(&arn) == arn_key_id(&k.kms_arn)) =>
                    {
                        self.recheck(true).await?;
                    }
                    Ok(Revoked::Unknown) | Err(RecvError::Lagged(_)) => self.recheck(false).await?,
                    Ok(_) => {}
                    Err(RecvError::Closed) => self.listening = false,
                },
                _ = self.tick.tick() => self.recheck(false).await?,
                item = inner.next() => return Ok(item),
            }
        }
    }
}

/// Wraps an open stream of `principal` reading with `keys` so that it ends
/// with an error once the token or one of the keys is revoked (see the
/// module documentation for the bounds). `rx` is a subscription taken
/// before the keys were first unwrapped. A stream over many recordings (an
/// export) passes one data key per KMS key it reads under: each re-check
/// asks KMS (through the cache) about every one of them.
pub fn guard<T: Send + 'static>(
    archive: Arc<Archive>,
    principal: &Principal,
    keys: Vec<KeyInUse>,
    rx: broadcast::Receiver<Revoked>,
    inner: BoxStream<'static, Result<T>>,
) -> BoxStream<'static, Result<T>> {
    let period = recheck_interval(&archive);
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let expires_in = match principal.expires_at_ms {
        Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
        None => Duration::from_secs(365 * 86_400),
    };
    let watch = Watch {
        archive,
        tenant: principal.tenant.clone(),
        token_id: principal.token_id.clone(),
        keys,
        rx,
        listening: true,
        tick,
        expiry: Box::pin(tokio::time::sleep(expires_in)),
    };
    stream::unfold((inner, Some(watch)), |(mut inner, watch)| async move {
        let mut watch = watch?;
        match watch.next(&mut inner).await {
            Ok(Some(item)) => Some((item, (inner, Some(watch)))),
            Ok(None) => None,
            Err(e) => Some((Err(e), (inner, None))),
        }
    })
    .boxed()
}

/// Carries revocations announced by other nodes (PostgreSQL LISTEN) to this
/// node: drops cached data keys or tokens and tells open streams. When the
/// connection drops, notifications may have been missed, so both caches are
/// purged and every stream re-checks before listening again.
pub async fn listen(archive: Arc<Archive>) {
    let missed = |archive: &Archive| {
        archive.keys.purge_all();
        archive.tokens.purge_all();
        archive.revocations.announce(Revoked::Unknown);
    };
    loop {
        match archive.catalog.revocation_listener().await {
            Ok(None) => return,
            Ok(Some(mut listener)) => loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.channel() == KEY_REVOCATION_CHANNEL => {
                        tracing::info!(key_arn = %n.payload(), event = "key_revoked_remote", "purging cached data keys of a key revoked on another node");
                        archive.keys.purge_key(n.payload());
                        archive
                            .revocations
                            .announce(Revoked::Key(n.payload().to_owned()));
                    }
                    Ok(Some(n)) if n.channel() == TOKEN_REVOCATION_CHANNEL => {
                        tracing::info!(token_id = %n.payload(), event = "token_revoked_remote", "a token was revoked");
                        archive.tokens.purge_all();
                        archive
                            .revocations
                            .announce(Revoked::Token(n.payload().to_owned()));
                    }
                    Ok(Some(n)) if n.channel() == RECORDING_ERASED_CHANNEL => {
                        if let Some((tenant, recording)) = n.payload().split_once('/') {
                            archive.keys.purge_recording(tenant, recording);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        tracing::warn!(
                            "revocation channel reconnecting; purging the key and token caches"
                        );
                        missed(&archive);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "revocation listener failed; purging the key and token caches");
                        missed(&archive);
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot listen for revocations"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Polls the catalog for recently revoked tokens, every
/// [`TOKEN_POLL_INTERVAL`]: each one newly seen purges the token cache and
/// ends that token's open streams. Works on every catalog (an operator's
/// `token revoke` on SQLite runs in another process).
pub async fn poll_tokens(archive: Arc<Archive>) {
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut tick = tokio::time::interval(TOKEN_POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let since = now_ms() - TOKEN_POLL_WINDOW_MS;
        let revoked = match archive.catalog.conn().await {
            Ok(mut conn) => tokens::revoked_since(&mut conn, since).await,
            Err(e) => Err(e),
        };
        match revoked {
            Ok(rows) => {
                let fresh: Vec<_> = rows
                    .into_iter()
                    .filter(|(id, _)| !seen.contains_key(id))
                    .collect();
                if !fresh.is_empty() {
                    archive.tokens.purge_all();
                }
                for (id, at) in fresh {
                    archive.revocations.announce(Revoked::Token(id.clone()));
                    seen.insert(id, at);
                }
                seen.retain(|_, at| *at >= since);
            }
            Err(e) => tracing::warn!(error = %e, "cannot poll for revoked tokens"),
        }
    }
}
