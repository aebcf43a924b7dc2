//! The SQLite catalog as a file, for backups (`crate::backup`): a
//! consistent copy of a live catalog, and the reads a backup makes of such
//! a copy. SQLite only: a PostgreSQL catalog is backed up with PostgreSQL's
//! own tools (README, "Backups").
//!
//! These open connections of their own rather than [`super::Catalog::connect`],
//! which migrates and sets the journal mode: a backup must not write to the
//! catalog it copies, whatever version of callvault serves it, and verifying
//! a copy must not change it. The live catalog is opened read-only (WAL lets
//! that reader run beside the server's writers); a copy is opened
//! `immutable`, so SQLite creates no `-wal` or `-shm` file beside it.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Row as _};

use crate::checksum::SealedChecksum;
use crate::error::Result;

/// The tables without which a copy is not a catalog a server could start
/// on. A copy of `catalog.db` taken without its WAL typically has none.
pub const REQUIRED_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "tenants",
    "tenant_keys",
    "recordings",
    "chunks",
    "api_tokens",
    "object_deletions",
    "audit_events",
];

/// One chunk row of a catalog copy: the object it names and what the
/// object must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkObject {
    pub tenant_id: String,
    pub recording_id: String,
    /// The store key (`t/<tenant>/r/<recording>/<index>`), as the row holds it.
    pub object_key: String,
    pub sealed_size: u64,
    /// The sealed chunk's checksum, written at ingest.
    pub sealed_checksum: SealedChecksum,
    /// The recording is committed (`complete`). The objects of an upload
    /// still in flight are not: a restored server's sweeper removes the
    /// upload once its lease has run out.
    pub committed: bool,
}

/// What a catalog copy holds, for the manifest and to cross-check it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tenants: u64,
    /// Committed recordings.
    pub recordings: u64,
    /// Recordings still `uploading` when the copy was taken.
    pub uploads_in_flight: u64,
    pub chunks: u64,
}

/// The newest catalog schema version this build knows (its last migration).
pub fn known_schema_version() -> i64 {
    super::SQLITE_MIGRATIONS
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// A read-only connection to the live catalog at `path`. Fails if there is
/// no file there (it never creates one).
pub async fn open_live(path: &Path) -> Result<SqliteConnection> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    Ok(opts.connect().await?)
}

/// A connection to a catalog copy that cannot change it (`immutable`: no
/// locks, no `-wal`/`-shm` files; the file must not change while open).
pub async fn open_copy(path: &Path) -> Result<SqliteConnection> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true)
        .create_if_missing(false);
    Ok(opts.connect().await?)
}

/// Writes a consistent copy of the catalog `conn` is open on to `dest`
/// (`VACUUM INTO`: one read transaction, so the copy is the catalog as of
/// one commit, WAL included, while the server keeps writing). `dest` must
/// not exist or be an empty file; an empty file keeps its mode.
pub async fn vacuum_into(conn: &mut SqliteConnection, dest: &Path) -> Result<()> {
    let dest = dest.to_string_lossy();
    sqlx::query("VACUUM INTO $1")
        .bind(dest.as_ref())
        .execute(conn)
        .await?;
    Ok(())
}

/// The tables of [`REQUIRED_TABLES`] the copy lacks.
pub async fn missing_tables(conn: &mut SqliteConnection) -> Result<Vec<&'static str>> {
    let have: Vec<String> = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("name"))
        .collect::<Result<_, _>>()?;
    Ok(REQUIRED_TABLES
        .iter()
        .copied()
        .filter(|t| !have.iter().any(|h| h == t))
        .collect())
}

/// The version of the newest migration applied to the catalog.
pub async fn schema_version(conn: &mut SqliteConnection) -> Result<i64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(conn)
            .await?;
    Ok(v.unwrap_or(0))
}

/// Every chunk row with its recording's state, in object-key order.
pub async fn chunk_objects(conn: &mut SqliteConnection) -> Result<Vec<ChunkObject>> {
    let rows = sqlx::query(
        "SELECT c.tenant_id, c.recording_id, c.object_key, c.sealed_size, c.sealed_checksum, \
                r.status = 'complete' AS committed \
         FROM chunks c JOIN recordings r \
           ON r.tenant_id = c.tenant_id AND r.recording_id = c.recording_id \
         ORDER BY c.object_key",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ChunkObject {
                tenant_id: r.try_get("tenant_id")?,
                recording_id: r.try_get("recording_id")?,
                object_key: r.try_get("object_key")?,
                sealed_size: super::rows::to_u64(r.try_get("sealed_size")?, "chunk size")?,
                sealed_checksum: super::rows::checksum_of(r.try_get("sealed_checksum")?)?,
                committed: r.try_get::<i64, _>("committed")? != 0,
            })
        })
        .collect()
}

/// Every KMS key ARN the catalog's key history names (the keys its wrapped
/// data keys need), with multi-Region replicas.
pub async fn key_arns(conn: &mut SqliteConnection) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT key_arn, replicas FROM tenant_keys ORDER BY key_arn")
        .fetch_all(conn)
        .await?;
    let mut arns = Vec::new();
    for r in &rows {
        arns.push(r.try_get::<String, _>("key_arn")?);
        let replicas: String = r.try_get("replicas")?;
        let replicas: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&replicas).map_err(|_| super::rows::corrupt("key replicas"))?;
        arns.extend(replicas.into_values());
    }
    Ok(arns)
}

/// How many tenants, recordings, uploads in flight and chunks the catalog holds.
pub async fn counts(conn: &mut SqliteConnection) -> Result<Counts> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM tenants) AS tenants, \
                (SELECT COUNT(*) FROM recordings WHERE status = 'complete') AS recordings, \
                (SELECT COUNT(*) FROM recordings WHERE status = 'uploading') AS uploads, \
                (SELECT COUNT(*) FROM chunks) AS chunks",
    )
    .fetch_one(conn)
    .await?;
    let n = |col: &str| -> Result<u64> { super::rows::to_u64(row.try_get(col)?, col) };
    Ok(Counts {
        tenants: n("tenants")?,
        recordings: n("recordings")?,
        uploads_in_flight: n("uploads")?,
        chunks: n("chunks")?,
    })
}
