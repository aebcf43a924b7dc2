//! One contract suite for the catalog, run on SQLite and on a fresh
//! PostgreSQL database: each rule is its own test, so a failure names it.
//! Every case drives the catalog functions the way use cases do: a
//! transaction when changes commit together, a pooled connection for reads.

use callvault::catalog::{
    AbortOutcome, AudioInfo, Backend, Catalog, ChunkRow, CommitOutcome, Completion,
    KeyHealthRecord, NewRecording, NewTenantKey, PooledConn, Rewrapped, Tenant, keys, recordings,
    rewrap, tenants, tokens,
};
use callvault::domain::{
    ExternalCallId, JobStatus, KeyArn, KeyHealthState, KeyStatus, RecordingId, Role, TenantId,
    now_ms,
};
use callvault::error::Error;
use callvault::kms::WrapAlgorithm;
use secrecy::ExposeSecret;

use crate::helpers::*;

fn arn(id: &str) -> KeyArn {
    KeyArn::parse(
        "key_arn",
        &format!("arn:aws:kms:us-east-1:111122223333:key/{id}"),
    )
    .unwrap()
}

fn new_recording(tenant: &TenantId, call: &str) -> NewRecording {
    NewRecording {
        tenant: tenant.clone(),
        id: RecordingId::new(),
        external_call_id: ExternalCallId::parse(call).unwrap(),
        format_version: 1,
        key_arn: arn("k"),
        kms_region: "us-east-1".into(),
        wrap_algorithm: WrapAlgorithm::SymmetricDefault,
        wrapped_key: vec![1, 2, 3],
        encryption_context: "{}".into(),
        salt: vec![0; 32],
        nonce_prefix: vec![0; 7],
        commitment: vec![9; 32],
        chunk_size: 65536,
        labels_sealed: Some(vec![7; 40]),
        start_time_ms: Some(1_700_000_000_000),
        created_at_ms: now_ms(),
        lease_until_ms: now_ms() + 60_000,
        retain_until_ms: None,
        retention_rule: None,
        participants_sealed: None,
        index: None,
    }
}

fn chunk(i: u32) -> ChunkRow {
    ChunkRow {
        index: i,
        plaintext_size: 65536,
        sealed_size: 65552,
        sealed_checksum: callvault::checksum::SealedChecksum::of(format!("chunk {i}").as_bytes()),
        object_key: format!("k/{i}"),
    }
}

fn completion() -> Completion {
    Completion {
        chunk_count: 2,
        size_bytes: 131072,
        sha256: "cd".repeat(32),
        audio: AudioInfo {
            container: "wav".into(),
            codec: "pcm_s16le".into(),
            sample_rate_hz: 8000,
            channels: 1,
            duration_ms: 8192,
            warning: None,
        },
    }
}

/// A fresh catalog of the given kind, with tenants `acme` (key `a`) and
/// `globex` (key `b`).
struct Fixture {
    c: Catalog,
    a: Tenant,
    b: Tenant,
    _dir: tempfile::TempDir,
    pg: Option<String>,
}

impl Fixture {
    async fn new(kind: CatalogKind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match kind {
            CatalogKind::Sqlite => (
                format!("sqlite://{}", dir.path().join("c.db").display()),
                None,
            ),
            CatalogKind::Postgres => {
                let (url, name) = fresh_pg_database().await;
                (url, Some(name))
            }
        };
        let c = Catalog::connect(&url).await.unwrap();
        let mut tx = c.begin().await.unwrap();
        let a = tenants::create(&mut tx, "acme", &arn("a"), "us-east-1")
            .await
            .unwrap();
        let b = tenants::create(&mut tx, "globex", &arn("b"), "eu-west-1")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        Self {
            c,
            a,
            b,
            _dir: dir,
            pg,
        }
    }

    async fn db(&self) -> PooledConn {
        self.c.conn().await.unwrap()
    }

    /// Starts an upload and commits it with one more (final) chunk.
    async fn committed(&self, tenant: &TenantId, call: &str) -> RecordingId {
        let r = new_recording(tenant, call);
        recordings::begin_upload(&mut *self.db().await, &r)
            .await
            .unwrap();
        recordings::add_chunks(&mut *self.db().await, tenant, &r.id, &[chunk(0)])
            .await
            .unwrap();
        assert_eq!(
            self.commit(tenant, &r.id, &chunk(1)).await,
            CommitOutcome::Committed
        );
        r.id
    }

    /// Commits an upload in its own transaction (rolled back on a duplicate).
    async fn commit(&self, t: &TenantId, r: &RecordingId, last: &ChunkRow) -> CommitOutcome {
        let mut tx = self.c.begin().await.unwrap();
        let out =
            recordings::commit_upload(&mut tx, t, r, std::slice::from_ref(last), &completion())
                .await
                .unwrap();
        match out {
            CommitOutcome::Committed => tx.commit().await.unwrap(),
            CommitOutcome::DuplicateCallId => tx.rollback().await.unwrap(),
        }
        out
    }

    /// Removes an upload in its own transaction.
    async fn abort(
        &self,
        t: &TenantId,
        r: &RecordingId,
        expired_before: Option<i64>,
    ) -> AbortOutcome {
        let mut tx = self.c.begin().await.unwrap();
        let out = recordings::abort_upload(&mut tx, t, r, "test", expired_before)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        out
    }

    async fn done(self) {
        self.c.close().await;
        if let Some(name) = &self.pg {
            drop_pg_database(name).await;
        }
    }
}

/// Runs a contract case on both engines, as two named tests.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Fixture::new(crate::helpers::CatalogKind::Sqlite).await).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    require!(Postgres);
                    super::$case(super::Fixture::new(crate::helpers::CatalogKind::Postgres).await).await;
                }
            )*
        }
    };
}

contract!(
    tenant_names_are_unique_and_tokens_authenticate,
    an_upload_is_invisible_until_committed,
    chunk_rows_recorded_in_batches_read_back_whole,
    audit_events_are_found_by_every_recording_they_name,
    audit_appends_at_a_known_size_only_while_it_is_the_size,
    tenants_are_isolated,
    cleanup_never_touches_a_committed_recording,
    the_first_commit_of_a_call_id_wins,
    expired_leases_are_swept_and_their_writer_told,
    the_key_history_keeps_previous_keys,
    key_usage_counts_per_key_and_tenant,
    retiring_needs_an_inactive_key_that_protects_nothing,
    health_records_are_per_tenant_key,
    one_rewrap_job_runs_per_tenant,
    the_rewrap_budget_is_a_shared_window,
    rewrap_leases_skip_locked_rows_and_move_a_key_once,
    rewrap_jobs_end_once,
);

async fn tenant_names_are_unique_and_tokens_authenticate(f: Fixture) {
    let mut tx = f.c.begin().await.unwrap();
    assert!(
        tenants::create(&mut tx, "acme", &arn("x"), "r")
            .await
            .is_err(),
        "tenant names are unique"
    );
    drop(tx);
    let mut db = f.db().await;
    assert!(
        tenants::create(&mut db, "bad name!", &arn("x"), "r")
            .await
            .is_err()
    );
    assert_eq!(tenants::by_name(&mut db, "acme").await.unwrap().id, f.a.id);
    assert_eq!(
        keys::active(&mut db, &f.b.id).await.unwrap().key_arn,
        arn("b")
    );
    let issued = tokens::create(&mut db, &f.a.id, Role::Supervisor, None)
        .await
        .unwrap();
    let tok = issued.secret.expose_secret().to_owned();
    let p = tokens::authenticate(&mut db, &tok).await.unwrap();
    assert_eq!((p.tenant, p.role), (f.a.id.clone(), Role::Supervisor));
    assert!(tokens::authenticate(&mut db, "cv_unknown").await.is_err());
    drop(db);
    f.done().await;
}

async fn an_upload_is_invisible_until_committed(f: Fixture) {
    let a = &f.a.id;
    let r = new_recording(a, "call-1");
    recordings::begin_upload(&mut *f.db().await, &r)
        .await
        .unwrap();
    recordings::add_chunks(&mut *f.db().await, a, &r.id, &[chunk(0)])
        .await
        .unwrap();
    assert!(
        recordings::get(&mut *f.db().await, a, &r.id).await.is_err(),
        "uploading is not visible"
    );
    assert!(
        recordings::list(&mut *f.db().await, a, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.commit(a, &r.id, &chunk(1)).await,
        CommitOutcome::Committed
    );
    let mut db = f.db().await;
    let got = recordings::get(&mut db, a, &r.id).await.unwrap();
    assert_eq!(
        (got.chunk_count, got.size_bytes, got.audio.clone()),
        (2, 131072, completion().audio)
    );
    assert_eq!(got.labels_sealed, Some(vec![7; 40]));
    assert_eq!(
        recordings::chunks(&mut db, a, &r.id).await.unwrap(),
        vec![chunk(0), chunk(1)]
    );
    drop(db);
    f.done().await;
}

/// An upload records its chunks many rows per statement (more than one
/// statement's worth here, and again with the commit): every row reads
/// back, in order, with every field.
async fn chunk_rows_recorded_in_batches_read_back_whole(f: Fixture) {
    let a = &f.a.id;
    let r = new_recording(a, "call-batched");
    recordings::begin_upload(&mut *f.db().await, &r)
        .await
        .unwrap();
    let all: Vec<ChunkRow> = (0..230).map(chunk).collect();
    // Out of order, as chunk writes finish.
    let mut first: Vec<ChunkRow> = all[..150].to_vec();
    first.reverse();
    recordings::add_chunks(&mut *f.db().await, a, &r.id, &first)
        .await
        .unwrap();
    recordings::add_chunks(&mut *f.db().await, a, &r.id, &[])
        .await
        .unwrap();
    let mut tx = f.c.begin().await.unwrap();
    let done = Completion {
        chunk_count: 230,
        size_bytes: 230 * 65536,
        ..completion()
    };
    assert_eq!(
        recordings::commit_upload(&mut tx, a, &r.id, &all[150..], &done)
            .await
            .unwrap(),
        CommitOutcome::Committed
    );
    tx.commit().await.unwrap();
    let mut db = f.db().await;
    assert_eq!(recordings::chunks(&mut db, a, &r.id).await.unwrap(), all);
    assert_eq!(
        recordings::chunk_range(&mut db, a, &r.id, 140..160)
            .await
            .unwrap(),
        all[140..160].to_vec()
    );
    drop(db);
    f.done().await;
}

/// An audit event indexes every recording it names, however many (on
/// PostgreSQL up to 64 index rows in the statement that inserts the
/// events, more in statements of their own), events appended together are
/// numbered in order with their own times, and a filter by recording finds
/// exactly its events.
async fn audit_events_are_found_by_every_recording_they_name(f: Fixture) {
    use callvault::audit::event::{Action, Actor, NewEvent};
    use callvault::catalog::audit::{self as audit_rows, EventFilter};
    let log = f.a.id.as_str().to_owned();
    let key = crate::helpers::test_audit_key();
    let ids: Vec<RecordingId> = (0..70).map(|_| RecordingId::new()).collect();
    let named: [&[RecordingId]; 4] = [&[], &ids[..1], &ids[1..4], &ids[..]];
    let mut tx = f.c.begin().await.unwrap();
    for recs in named {
        let event = NewEvent::new(Actor::system("contract"), Action::RecordingsListed)
            .recordings(recs.iter().copied());
        audit_rows::append(&mut tx, &log, now_ms(), "node-a", &key, event)
            .await
            .unwrap();
    }
    // Appended together (a group commit): 3 events naming one recording
    // each (one statement with their index rows on PostgreSQL), then 70
    // naming two each (more events and index rows than one statement takes).
    let group = |n: usize, recs: &[RecordingId]| -> Vec<(i64, NewEvent)> {
        (0..n)
            .map(|i| {
                let event = NewEvent::new(Actor::system("contract"), Action::RecordingsListed)
                    .recordings(recs.iter().copied());
                (1_000 + i as i64, event)
            })
            .collect()
    };
    let three = audit_rows::append_all(&mut tx, &log, "node-a", &key, group(3, &ids[5..6]))
        .await
        .unwrap();
    let seventy = audit_rows::append_all(&mut tx, &log, "node-a", &key, group(70, &ids[6..8]))
        .await
        .unwrap();
    let numbered: Vec<(u64, i64)> = three
        .iter()
        .chain(&seventy)
        .map(|e| (e.index, e.time_ms))
        .collect();
    let expected: Vec<(u64, i64)> = (4..7).zip(1_000..).chain((7..77).zip(1_000..)).collect();
    assert_eq!(numbered, expected);
    tx.commit().await.unwrap();
    let mut db = f.db().await;
    let seqs = |events: Vec<callvault::audit::event::Event>| -> Vec<u64> {
        events.iter().map(|e| e.index).collect()
    };
    let of = |rec: RecordingId| EventFilter {
        recording: Some(rec),
        ..Default::default()
    };
    let all = audit_rows::list(&mut db, &log, &EventFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(seqs(all), (0..77).collect::<Vec<_>>());
    for (rec, expected) in [
        (ids[0], vec![1, 3]),
        (ids[2], vec![2, 3]),
        (ids[69], vec![3]),
        (ids[5], vec![3, 4, 5, 6]),
        (ids[6], [3].into_iter().chain(7..77).collect()),
        (ids[7], [3].into_iter().chain(7..77).collect()),
        (RecordingId::new(), vec![]),
    ] {
        let found = audit_rows::list(&mut db, &log, &of(rec), None, 100)
            .await
            .unwrap();
        assert_eq!(seqs(found), expected, "events naming {rec}");
    }
    drop(db);
    f.done().await;
}

/// `append_at` (a group commit's one-statement append, PostgreSQL only)
/// writes only when the log's counter is still the size it was given, and
/// otherwise nothing at all: what `append_all` then numbers is gapless.
async fn audit_appends_at_a_known_size_only_while_it_is_the_size(f: Fixture) {
    use callvault::audit::event::{Action, Actor, NewEvent};
    use callvault::catalog::audit::{self as audit_rows, EventFilter};
    let log = f.a.id.as_str().to_owned();
    let key = crate::helpers::test_audit_key();
    let rec = RecordingId::new();
    let events = |n: usize| -> Vec<(i64, NewEvent)> {
        (0..n)
            .map(|i| {
                let event = NewEvent::new(Actor::system("contract"), Action::PlaybackStarted)
                    .recordings([rec]);
                (2_000 + i as i64, event)
            })
            .collect()
    };
    let postgres = f.c.backend() == callvault::catalog::Backend::Postgres;
    let mut db = f.db().await;
    // No counter row yet: nothing to number from.
    let at = audit_rows::append_at(&mut db, &log, 0, "node-a", &key, &events(1))
        .await
        .unwrap();
    assert!(at.is_none());
    let first = audit_rows::append_all(&mut db, &log, "node-a", &key, events(2))
        .await
        .unwrap();
    assert_eq!(first.iter().map(|e| e.index).collect::<Vec<_>>(), [0, 1]);
    // The size it is: appended, numbered from it, committed.
    let at = audit_rows::append_at(&mut db, &log, 2, "node-a", &key, &events(3))
        .await
        .unwrap();
    if postgres {
        let at = at.expect("appended at the log's size");
        assert_eq!(at.iter().map(|e| e.index).collect::<Vec<_>>(), [2, 3, 4]);
    } else {
        assert!(at.is_none(), "SQLite appends in a transaction only");
    }
    let size = if postgres { 5 } else { 2 };
    // A size another writer has moved past: nothing written.
    for stale in [0, size - 1, size + 1] {
        let at = audit_rows::append_at(&mut db, &log, stale, "node-a", &key, &events(1))
            .await
            .unwrap();
        assert!(at.is_none(), "appended at {stale} with the log at {size}");
    }
    let next = audit_rows::append_all(&mut db, &log, "node-a", &key, events(1))
        .await
        .unwrap();
    assert_eq!(next[0].index, size);
    let all = audit_rows::list(&mut db, &log, &EventFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.index).collect::<Vec<_>>(),
        (0..=size).collect::<Vec<_>>()
    );
    let named = EventFilter {
        recording: Some(rec),
        ..Default::default()
    };
    let found = audit_rows::list(&mut db, &log, &named, None, 100)
        .await
        .unwrap();
    assert_eq!(
        found.len() as u64,
        size + 1,
        "every event indexed by its recording"
    );
    assert_eq!(audit_rows::size(&mut db, &log).await.unwrap(), size + 1);
    // What was stored is what was hashed and signed.
    let stored = audit_rows::stored(&mut db, &log, 0, 100).await.unwrap();
    assert_eq!(stored.len(), all.len());
    for (s, e) in stored.iter().zip(&all) {
        assert_eq!(s.index, e.index);
        assert_eq!(s.canonical.as_bytes(), e.canonical().as_slice());
        let leaf = callvault::audit::merkle::leaf_hash(s.canonical.as_bytes());
        assert_eq!(&s.leaf_hash, leaf.as_bytes());
        assert_eq!(
            s.signature.as_slice(),
            audit_rows::event_signature(&key, &leaf).as_slice()
        );
    }
    drop(db);
    f.done().await;
}

async fn tenants_are_isolated(f: Fixture) {
    let r = f.committed(&f.a.id, "call-1").await;
    let b = &f.b.id;
    let mut db = f.db().await;
    assert!(recordings::get(&mut db, b, &r).await.is_err());
    assert!(recordings::chunks(&mut db, b, &r).await.unwrap().is_empty());
    assert!(
        recordings::list(&mut db, b, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let call = ExternalCallId::parse("call-1").unwrap();
    assert!(
        recordings::find_by_call_id(&mut db, b, &call)
            .await
            .unwrap()
            .is_none()
    );
    drop(db);
    f.done().await;
}

async fn cleanup_never_touches_a_committed_recording(f: Fixture) {
    let a = &f.a.id;
    let r = f.committed(a, "call-1").await;
    assert_eq!(f.abort(a, &r, None).await, AbortOutcome::Committed);
    let mut db = f.db().await;
    assert_eq!(recordings::chunks(&mut db, a, &r).await.unwrap().len(), 2);
    assert!(recordings::get(&mut db, a, &r).await.is_ok());
    assert!(
        recordings::pending_object_deletions(&mut db, 10)
            .await
            .unwrap()
            .is_empty(),
        "no object deletion is queued for a committed recording"
    );
    drop(db);
    f.done().await;
}

async fn the_first_commit_of_a_call_id_wins(f: Fixture) {
    let a = &f.a.id;
    let r = f.committed(a, "call-1").await;
    let call = ExternalCallId::parse("call-1").unwrap();
    // A concurrent attempt with the same call id loses at commit.
    let r2 = new_recording(a, "call-1");
    recordings::begin_upload(&mut *f.db().await, &r2)
        .await
        .unwrap();
    assert_eq!(
        f.commit(a, &r2.id, &chunk(0)).await,
        CommitOutcome::DuplicateCallId
    );
    let winner = recordings::find_by_call_id(&mut *f.db().await, a, &call)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(winner.id, r);
    // The loser is removed and its objects queued.
    assert_eq!(f.abort(a, &r2.id, None).await, AbortOutcome::Removed);
    let mut db = f.db().await;
    assert_eq!(
        recordings::pending_object_deletions(&mut db, 10)
            .await
            .unwrap(),
        vec![(a.clone(), r2.id)]
    );
    recordings::object_deletion_done(&mut db, a, &r2.id)
        .await
        .unwrap();
    drop(db);
    // The same call id in another tenant is a different call.
    f.committed(&f.b.id, "call-1").await;
    f.done().await;
}

async fn expired_leases_are_swept_and_their_writer_told(f: Fixture) {
    let a = &f.a.id;
    let r4 = new_recording(a, "call-4");
    recordings::begin_upload(&mut *f.db().await, &r4)
        .await
        .unwrap();
    recordings::add_chunks(&mut *f.db().await, a, &r4.id, &[chunk(0)])
        .await
        .unwrap();
    assert!(
        recordings::expired_uploads(&mut *f.db().await, now_ms(), 10)
            .await
            .unwrap()
            .is_empty(),
        "uploads within their lease are live"
    );
    let later = now_ms() + 120_000;
    assert_eq!(
        recordings::expired_uploads(&mut *f.db().await, later, 10)
            .await
            .unwrap(),
        vec![(a.clone(), r4.id)]
    );
    // A renewal moves the lease past the sweep's cut-off: left alone.
    recordings::renew_lease(&mut *f.db().await, a, &r4.id, later + 60_000)
        .await
        .unwrap();
    assert_eq!(f.abort(a, &r4.id, Some(later)).await, AbortOutcome::Live);
    assert_eq!(
        f.abort(a, &r4.id, Some(later + 120_000)).await,
        AbortOutcome::Removed
    );
    let mut db = f.db().await;
    assert!(
        recordings::expired_uploads(&mut db, i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        recordings::chunks(&mut db, a, &r4.id)
            .await
            .unwrap()
            .is_empty()
    );
    // The swept upload's writer learns it precisely, at its next chunk or
    // renewal, and at its commit.
    let gone = |e: Error| matches!(e, Error::UploadSwept(_));
    assert!(gone(
        recordings::add_chunks(&mut db, a, &r4.id, &[chunk(1)])
            .await
            .unwrap_err()
    ));
    assert!(gone(
        recordings::renew_lease(&mut db, a, &r4.id, later)
            .await
            .unwrap_err()
    ));
    drop(db);
    let mut tx = f.c.begin().await.unwrap();
    assert!(gone(
        recordings::commit_upload(&mut tx, a, &r4.id, &[chunk(1)], &completion())
            .await
            .unwrap_err()
    ));
    drop(tx);
    // Its own cleanup then finds no row and queues its objects.
    assert_eq!(f.abort(a, &r4.id, None).await, AbortOutcome::Absent);
    f.done().await;
}

/// Activates `key` for `tenant` in a transaction, as registration does.
async fn activate(f: &Fixture, tenant: &TenantId, key: &KeyArn) -> callvault::catalog::TenantKey {
    let mut tx = f.c.begin().await.unwrap();
    let k = keys::activate(&mut tx, tenant, &NewTenantKey::symmetric(key, "us-east-1"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    k
}

async fn the_key_history_keeps_previous_keys(f: Fixture) {
    let (a, b) = (&f.a.id, &f.b.id);
    // Activating a key keeps the old one in the history as `previous`.
    let k2 = activate(&f, a, &arn("k2")).await;
    assert_eq!(
        (k2.status, k2.algorithm),
        (KeyStatus::Active, WrapAlgorithm::SymmetricDefault)
    );
    let mut db = f.db().await;
    assert_eq!(keys::active(&mut db, a).await.unwrap().key_arn, arn("k2"));
    let history = keys::history(&mut db, a).await.unwrap();
    let statuses: Vec<_> = history
        .iter()
        .map(|(k, _)| (k.key_arn.clone(), k.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (arn("a"), KeyStatus::Previous),
            (arn("k2"), KeyStatus::Active)
        ]
    );
    assert!(history[0].0.deactivated_at_ms.is_some());
    assert_eq!(
        keys::active(&mut db, b).await.unwrap().key_arn,
        arn("b"),
        "other tenants are untouched"
    );
    drop(db);
    // Re-activating an older key works; the active one steps back.
    activate(&f, a, &arn("a")).await;
    assert_eq!(
        keys::active(&mut *f.db().await, a).await.unwrap().key_arn,
        arn("a")
    );
    f.done().await;
}

async fn key_usage_counts_per_key_and_tenant(f: Fixture) {
    f.committed(&f.a.id, "call-1").await;
    let usage = keys::usage(&mut *f.db().await, &f.a.id).await.unwrap();
    let u = usage.get(&arn("k")).copied().unwrap_or_default();
    assert_eq!((u.recordings, u.bytes, u.legal_hold), (1, 131072, 0));
    assert!(
        keys::usage(&mut *f.db().await, &f.b.id)
            .await
            .unwrap()
            .is_empty()
    );
    f.done().await;
}

async fn retiring_needs_an_inactive_key_that_protects_nothing(f: Fixture) {
    let a = &f.a.id;
    f.committed(a, "call-1").await; // wrapped under `k`
    activate(&f, a, &arn("k2")).await;
    activate(&f, a, &arn("k")).await;
    activate(&f, a, &arn("a")).await;
    let retire = |key: KeyArn| {
        let c = f.c.clone();
        let a = a.clone();
        async move {
            let mut tx = c.begin().await.unwrap();
            let res = keys::retire(&mut tx, &a, &key).await;
            tx.commit().await.unwrap();
            res
        }
    };
    assert!(
        retire(arn("a")).await.is_err(),
        "the active key cannot retire"
    );
    assert!(
        retire(arn("k")).await.is_err(),
        "a key that protects a recording cannot retire"
    );
    assert_eq!(retire(arn("k2")).await.unwrap().status, KeyStatus::Retired);
    assert!(retire(arn("none")).await.is_err());
    assert!(
        keys::to_check(&mut *f.db().await)
            .await
            .unwrap()
            .iter()
            .all(|(_, k)| k.key_arn != arn("k2")),
        "retired keys are not checked"
    );
    f.done().await;
}

async fn health_records_are_per_tenant_key(f: Fixture) {
    let (a, b) = (&f.a.id, &f.b.id);
    let health = KeyHealthRecord {
        state: KeyHealthState::PendingDeletion,
        detail: None,
        deletion_date_ms: Some(1_900_000_000_000),
        checked_at_ms: 1_800_000_000_000,
    };
    let mut db = f.db().await;
    // The first record of a state changes it; the same state found again
    // does not (and still records when it was checked); another does.
    assert!(
        keys::record_health(&mut db, a, &arn("a"), &health)
            .await
            .unwrap()
    );
    let again = KeyHealthRecord {
        checked_at_ms: health.checked_at_ms + 60_000,
        ..health.clone()
    };
    assert!(
        !keys::record_health(&mut db, a, &arn("a"), &again)
            .await
            .unwrap()
    );
    assert_eq!(
        keys::get(&mut db, a, &arn("a"))
            .await
            .unwrap()
            .unwrap()
            .health,
        Some(again)
    );
    let enabled = KeyHealthRecord {
        state: KeyHealthState::Enabled,
        deletion_date_ms: None,
        ..health.clone()
    };
    assert!(
        keys::record_health(&mut db, a, &arn("a"), &enabled)
            .await
            .unwrap()
    );
    assert!(
        keys::record_health(&mut db, a, &arn("a"), &health)
            .await
            .unwrap()
    );
    assert_eq!(
        keys::get(&mut db, a, &arn("a"))
            .await
            .unwrap()
            .unwrap()
            .health,
        Some(health)
    );
    assert!(
        keys::get(&mut db, b, &arn("a")).await.unwrap().is_none(),
        "keys are per tenant"
    );
    drop(db);
    f.done().await;
}

async fn start_job(
    f: &Fixture,
    tenant: &TenantId,
    to: &str,
) -> callvault::error::Result<callvault::catalog::RewrapJob> {
    let mut tx = f.c.begin().await.unwrap();
    let job = rewrap::start(&mut tx, tenant, &arn("k"), &arn(to), 100).await;
    if job.is_ok() {
        tx.commit().await.unwrap();
    }
    job
}

async fn one_rewrap_job_runs_per_tenant(f: Fixture) {
    let a = &f.a.id;
    f.committed(a, "call-1").await;
    let job = start_job(&f, a, "k3").await.unwrap();
    assert_eq!(
        (job.status, job.total, job.rewrapped),
        (JobStatus::Running, 1, 0)
    );
    assert!(
        start_job(&f, a, "k4").await.is_err(),
        "one running job per tenant"
    );
    assert!(
        rewrap::get(&mut *f.db().await, &f.b.id, &job.id)
            .await
            .is_err(),
        "jobs are per tenant"
    );
    assert!(start_job(&f, &f.b.id, "k4").await.is_ok());
    f.done().await;
}

async fn the_rewrap_budget_is_a_shared_window(f: Fixture) {
    let job = start_job(&f, &f.a.id, "k3").await.unwrap();
    let mut db = f.db().await;
    assert!(rewrap::reserve_budget(&mut db, &job, 60).await.unwrap());
    assert!(
        !rewrap::reserve_budget(&mut db, &job, 60).await.unwrap(),
        "the window's budget is spent"
    );
    assert!(rewrap::reserve_budget(&mut db, &job, 40).await.unwrap());
    drop(db);
    f.done().await;
}

async fn rewrap_leases_skip_locked_rows_and_move_a_key_once(f: Fixture) {
    let (a, b) = (&f.a.id, &f.b.id);
    let rec = f.committed(a, "call-1").await;
    f.committed(b, "call-1").await;
    let job = start_job(&f, a, "k3").await.unwrap();
    // A stale view of the work, as a worker that lost its lease would hold.
    let stale = rewrap::lease_batch(&mut *f.db().await, &job, 10)
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);
    // The lease is a transaction.
    let mut lease = f.c.begin().await.unwrap();
    let first = rewrap::lease_batch(&mut lease, &job, 10).await.unwrap();
    assert_eq!(
        (
            first.len(),
            first[0].recording,
            first[0].wrapped_key.clone()
        ),
        (1, rec, vec![1, 2, 3])
    );
    if f.c.backend() == Backend::Postgres {
        // Another node's lease skips the locked row. (SQLite serves one
        // node and serializes its transactions: there is no second lease
        // while this one is open.)
        let mut other = f.c.begin().await.unwrap();
        assert!(
            rewrap::lease_batch(&mut other, &job, 10)
                .await
                .unwrap()
                .is_empty(),
            "PostgreSQL skips rows another lease holds"
        );
        drop(other);
    }
    let moved = Rewrapped {
        recording: rec,
        old_wrapped_key: vec![1, 2, 3],
        key_arn: arn("k3"),
        region: "us-east-1".into(),
        algorithm: WrapAlgorithm::RsaesOaepSha256,
        wrapped_key: vec![4, 5, 6],
    };
    assert_eq!(
        rewrap::commit_batch(&mut lease, &job, std::slice::from_ref(&moved))
            .await
            .unwrap(),
        1
    );
    lease.commit().await.unwrap();
    let mut late = f.c.begin().await.unwrap();
    assert_eq!(
        rewrap::commit_batch(&mut late, &job, &[moved])
            .await
            .unwrap(),
        0,
        "a key moves at most once"
    );
    late.commit().await.unwrap();
    let mut db = f.db().await;
    assert_eq!(rewrap::get(&mut db, a, &job.id).await.unwrap().rewrapped, 1);
    let row = recordings::get(&mut db, a, &rec).await.unwrap();
    assert_eq!(
        (row.key_arn, row.wrapped_key.clone(), row.wrap_algorithm),
        (arn("k3"), vec![4, 5, 6], WrapAlgorithm::RsaesOaepSha256)
    );
    assert_eq!(keys::count_under(&mut db, a, &arn("k")).await.unwrap(), 0);
    assert_eq!(
        keys::count_under(&mut db, b, &arn("k")).await.unwrap(),
        1,
        "tenant b's recording stays"
    );
    drop(db);
    f.done().await;
}

async fn rewrap_jobs_end_once(f: Fixture) {
    let a = &f.a.id;
    let job = start_job(&f, a, "k3").await.unwrap();
    let mut db = f.db().await;
    assert!(
        rewrap::finish(&mut db, a, &job.id, JobStatus::Succeeded, None)
            .await
            .unwrap()
    );
    assert!(
        !rewrap::finish(&mut db, a, &job.id, JobStatus::Failed, Some("late"))
            .await
            .unwrap()
    );
    assert!(
        rewrap::resume(&mut db, a, &job.id).await.is_err(),
        "only failed jobs resume"
    );
    assert_eq!(
        rewrap::get(&mut db, a, &job.id).await.unwrap().status,
        JobStatus::Succeeded
    );
    drop(db);
    f.done().await;
}
