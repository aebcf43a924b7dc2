//! The catalog: tenants, tokens, key history, recordings and chunks, rewrap
//! jobs, one file per aggregate.
//!
//! One implementation over `sqlx::Any` serves PostgreSQL (production) and
//! SQLite (embedded default): every statement is written once, in the SQL
//! both accept (`$N` placeholders, `ON CONFLICT`, partial indexes), and times
//! are Unix milliseconds. The schema lives in `migrations/<backend>/`; rows
//! become domain values in `rows` and nowhere else.
//!
//! **Transactions are the caller's.** The functions of the aggregate
//! modules take `&mut Conn`: a [`Tx`] from [`Catalog::begin`] when a use case
//! must commit several changes together (a recording and its audit event), or
//! a pooled connection from [`Catalog::conn`] for a read. No function here
//! begins or commits.
//!
//! Tenant isolation: every query that touches tenant data takes the
//! `TenantId` and filters on it; there is no query by recording id alone.

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::error::{Error, Result};

pub mod audit;
pub mod compliance;
pub mod keys;
pub mod recordings;
pub mod rewrap;
mod rows;
pub mod search;
pub mod snapshot;
pub mod subjects;
pub mod tenants;
pub mod tokens;

pub use keys::{KeyHealthRecord, KeyUsage, NewTenantKey, TenantKey};
pub use recordings::{
    AbortOutcome, AudioInfo, ChunkRow, CommitOutcome, Completion, NewRecording, RecordingRow,
};
pub use rewrap::{LeasedKey, RewrapJob, Rewrapped};
pub use tenants::{Tenant, TenantBootstrap};
pub use tokens::hash_token;

/// Creates a SQLite catalog's file, readable by the owner only (0600),
/// before SQLite does (it would use the umask; its `-wal` and `-shm` files
/// copy the database file's mode). An existing file is left as it is.
fn create_private_file(url: &str) {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    // Already there (left as it is), or no such directory (SQLite's own
    // open names the problem).
    let _ = opts.open(path);
}

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// A connection to run catalog functions on: a transaction derefs to it, and
/// so does a pooled connection.
pub type Conn = sqlx::AnyConnection;

/// A catalog transaction. Use cases begin one with [`Catalog::begin`], pass
/// it to the catalog functions that must commit together, and commit it
/// (dropping it rolls back).
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A pooled connection for reads outside a transaction.
pub type PooledConn = sqlx::pool::PoolConnection<sqlx::Any>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    /// Interactive requests: plays, reads, key administration.
    pool: AnyPool,
    /// Bulk work: the chunk rows and commits of uploads, background jobs.
    /// A pool of its own, so that a burst of uploads can never take every
    /// connection a play is waiting for (a bulkhead).
    bulk: AnyPool,
    backend: Backend,
    /// Kept for the LISTEN connection (PostgreSQL), which the pool cannot lend.
    url: String,
}

/// The PostgreSQL NOTIFY channel on which nodes announce a revoked KMS key
/// (payload: the key ARN), so every node drops its cached data keys at once.
pub const KEY_REVOCATION_CHANNEL: &str = "callvault_key_revoked";
/// The PostgreSQL NOTIFY channel on which a revoked token's id is announced
/// (sent in the revoking transaction, so delivered when it commits).
pub const TOKEN_REVOCATION_CHANNEL: &str = "callvault_token_revoked";
/// The PostgreSQL NOTIFY channel on which an erased recording is announced
/// (payload: `tenant/recording`), so every node drops its cached data key.
pub const RECORDING_ERASED_CHANNEL: &str = "callvault_recording_erased";

/// The VALUES list of a multi-row INSERT: `n` parenthesised rows, each the
/// `shared` placeholders (bound once for all rows, e.g. `$1`) then `width`
/// numbered ones of its own, the first row's from `$first` (numbered
/// placeholders only, so the statement stays constant text for
/// `sqlx::AssertSqlSafe`).
fn placeholder_rows(n: usize, shared: &str, first: usize, width: usize) -> String {
    (0..n)
        .map(|i| {
            let own = (0..width)
                .map(|j| format!("${}", first + i * width + j))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({shared}, {own})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pooled connection idle at least this long is pinged before it is
/// lent out.
const PING_IF_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Pool options per backend. SQLite connections zero what they delete
/// (`secure_delete`: an erased recording's wrapped data key must not
/// survive in a free page of the catalog file) and wait up to 5 s for the
/// writer (every connection: the setting is per connection).
///
/// sqlx pings every connection it lends by default: a round trip before
/// each use, two of them on the way to a play's first byte (the
/// recording's row, then its start event). Only a connection that sat idle
/// for [`PING_IF_IDLE`] is pinged here, which is when a restarted server
/// or a middlebox's idle timeout has most likely closed it; a connection
/// that broke while busy fails its next statement, and the pool drops it.
fn pool_options(backend: Backend) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        });
    match backend {
        Backend::Postgres => options,
        Backend::Sqlite => options.after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("PRAGMA secure_delete = ON")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("PRAGMA busy_timeout = 5000")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        }),
    }
}

impl Catalog {
    /// Connects and migrates. `postgres://…` or `sqlite://path`.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(Error::invalid(
                "database_url",
                "must start with postgres:// or sqlite:",
            ));
        };
        if backend == Backend::Sqlite {
            create_private_file(url);
        }
        let url = match backend {
            // Create the file on first use; WAL lets readers run beside the writer.
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let (interactive, bulk) = match backend {
            Backend::Sqlite => (2, 3),
            Backend::Postgres => (16, 32),
        };
        let pool = pool_options(backend)
            .max_connections(interactive)
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        match backend {
            Backend::Postgres => PG_MIGRATIONS.run(&pool).await?,
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
        }
        let bulk = pool_options(backend)
            .max_connections(bulk)
            .connect(&url)
            .await?;
        Ok(Self {
            pool,
            bulk,
            backend,
            url,
        })
    }

    /// Begins a transaction for a use case to commit. On SQLite it takes the
    /// write lock at once (`BEGIN IMMEDIATE`): a transaction that reads and
    /// then writes would otherwise fail when another writer committed in
    /// between, instead of waiting its turn.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self.backend {
            Backend::Postgres => self.pool.begin().await?,
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    /// A pooled connection for reads that need no transaction.
    pub async fn conn(&self) -> Result<PooledConn> {
        Ok(self.pool.acquire().await?)
    }

    /// [`Catalog::begin`] on the bulk pool (uploads, background jobs).
    pub async fn begin_bulk(&self) -> Result<Tx> {
        Ok(match self.backend {
            Backend::Postgres => self.bulk.begin().await?,
            Backend::Sqlite => self.bulk.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    /// [`Catalog::conn`] on the bulk pool (uploads, background jobs).
    pub async fn conn_bulk(&self) -> Result<PooledConn> {
        Ok(self.bulk.acquire().await?)
    }

    /// Tells every node that `key_arn` was found revoked. A no-op on SQLite,
    /// whose catalog serves a single node.
    pub async fn notify_key_revoked(&self, key_arn: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(KEY_REVOCATION_CHANNEL)
                .bind(key_arn)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// A LISTEN connection on the key and token revocation channels
    /// (PostgreSQL only).
    pub async fn revocation_listener(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener
            .listen_all([
                KEY_REVOCATION_CHANNEL,
                TOKEN_REVOCATION_CHANNEL,
                RECORDING_ERASED_CHANNEL,
            ])
            .await?;
        Ok(Some(listener))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.bulk.close().await;
    }

    /// Raw access for tests and tools that must inspect or alter rows (tamper
    /// tests, plaintext scans). Not used by the service paths.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholder_rows_number_each_row_after_the_shared_ones() {
        assert_eq!(
            super::placeholder_rows(2, "$1", 2, 2),
            "($1, $2, $3), ($1, $4, $5)"
        );
        assert_eq!(
            super::placeholder_rows(2, "$1, $2", 3, 5),
            "($1, $2, $3, $4, $5, $6, $7), ($1, $2, $8, $9, $10, $11, $12)"
        );
        assert_eq!(super::placeholder_rows(0, "$1", 2, 8), "");
    }

    /// The SQLite migrations are the PostgreSQL ones with two type names
    /// changed; this keeps the two dialects from drifting.
    #[test]
    fn sqlite_migrations_track_postgres() {
        for (pg, lite) in [
            (
                include_str!("../../migrations/postgres/0001_core.sql"),
                include_str!("../../migrations/sqlite/0001_core.sql"),
            ),
            (
                include_str!("../../migrations/postgres/0002_key_lifecycle.sql"),
                include_str!("../../migrations/sqlite/0002_key_lifecycle.sql"),
            ),
            (
                include_str!("../../migrations/postgres/0003_upload_lease.sql"),
                include_str!("../../migrations/sqlite/0003_upload_lease.sql"),
            ),
            (
                include_str!("../../migrations/postgres/0004_audit.sql"),
                include_str!("../../migrations/sqlite/0004_audit.sql"),
            ),
            (
                include_str!("../../migrations/postgres/0005_token_lifecycle.sql"),
                include_str!("../../migrations/sqlite/0005_token_lifecycle.sql"),
            ),
            (
                include_str!("../../migrations/postgres/0006_compliance.sql"),
                include_str!("../../migrations/sqlite/0006_compliance.sql"),
            ),
            (
                include_str!("../../migrations/postgres/0007_subject_index.sql"),
                include_str!("../../migrations/sqlite/0007_subject_index.sql"),
            ),
            (
                include_str!("../../migrations/postgres/0008_playback_urls.sql"),
                include_str!("../../migrations/sqlite/0008_playback_urls.sql"),
            ),
            (
                include_str!("../../migrations/postgres/0009_peaks.sql"),
                include_str!("../../migrations/sqlite/0009_peaks.sql"),
            ),
            (
                include_str!("../../migrations/postgres/0010_pcm_layout.sql"),
                include_str!("../../migrations/sqlite/0010_pcm_layout.sql"),
            ),
        ] {
            assert_eq!(
                pg.replace("BIGINT", "INTEGER").replace("BYTEA", "BLOB"),
                lite
            );
        }
    }
}
