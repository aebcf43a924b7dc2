//! Fresh PostgreSQL databases on 127.0.0.1:5432, one per server, dropped
//! when the server is done with them.

use sqlx::Connection;

const BASE: &str = "postgres://postgres@127.0.0.1:5432";

/// A database this run created (dropped on drop), or the one
/// `CALLVAULT_BENCH_DATABASE_URL` names (left alone).
#[derive(Debug)]
pub struct PgDatabase {
    pub url: String,
    created: Option<String>,
}

impl PgDatabase {
    /// None when no PostgreSQL answers (the caller says so and skips).
    pub async fn create() -> Option<Self> {
        if let Ok(url) = std::env::var("CALLVAULT_BENCH_DATABASE_URL") {
            return Some(Self { url, created: None });
        }
        let mut c = sqlx::PgConnection::connect(&format!("{BASE}/postgres"))
            .await
            .ok()?;
        let name = format!("cv_perf_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .ok()?;
        Some(Self {
            url: format!("{BASE}/{name}"),
            created: Some(name),
        })
    }

    pub async fn reachable() -> bool {
        std::env::var("CALLVAULT_BENCH_DATABASE_URL").is_ok()
            || sqlx::PgConnection::connect(&format!("{BASE}/postgres"))
                .await
                .is_ok()
    }
}

impl Drop for PgDatabase {
    /// Through `psql`, because drop cannot wait for sqlx; the server using
    /// the database was killed before (its fields drop first). A database
    /// left behind (no psql) costs disk, not correctness.
    fn drop(&mut self) {
        let Some(name) = &self.created else { return };
        let dropped = std::process::Command::new("psql")
            .args([
                &format!("{BASE}/postgres"),
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !dropped {
            eprintln!("note: could not drop PostgreSQL database {name}; drop it by hand");
        }
    }
}
