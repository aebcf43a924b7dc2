//! The real `callvault serve` as a child process on a data dir and a
//! catalog, bootstrapped through the operator CLI, as an operator runs it.
//! Killed (and its database dropped) on drop, whatever happened.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use callvault::client::Client;

use crate::pg::PgDatabase;
use crate::procfs;

pub const BIN: &str = env!("CARGO_BIN_EXE_callvault");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogKind {
    Sqlite,
    Postgres,
}

impl CatalogKind {
    pub fn name(self) -> &'static str {
        match self {
            CatalogKind::Sqlite => "SQLite",
            CatalogKind::Postgres => "PostgreSQL",
        }
    }
}

/// A tenant and the two tokens the benches use.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub ingest: String,
    pub supervisor: String,
}

/// A data dir (keyring, objects, SQLite catalog, server logs) and the
/// catalog the server and the operator commands share.
#[derive(Debug)]
pub struct Backend {
    dir: tempfile::TempDir,
    pg: Option<PgDatabase>,
}

impl Backend {
    /// None for PostgreSQL when none is reachable.
    pub async fn new(kind: CatalogKind) -> anyhow::Result<Option<Self>> {
        let pg = match kind {
            CatalogKind::Sqlite => None,
            CatalogKind::Postgres => match PgDatabase::create().await {
                Some(db) => Some(db),
                None => return Ok(None),
            },
        };
        let dir = tempfile::Builder::new()
            .prefix("callvault-perf-node-")
            .tempdir()?;
        Ok(Some(Self { dir, pg }))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary with this backend's settings in its environment.
    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        scrub(&mut c);
        // The server's log level: warnings unless CALLVAULT_BENCH_SERVER_LOG
        // says otherwise (`warn,h2=debug` to see the HTTP/2 layer).
        let log = std::env::var("CALLVAULT_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into());
        c.env("CALLVAULT_DATA_DIR", self.dir.path().join("data"))
            .env("CALLVAULT_LOG", log);
        if let Some(pg) = &self.pg {
            c.env("CALLVAULT_DATABASE_URL", &pg.url);
        }
        c
    }

    /// An operator command on the catalog; its stdout.
    pub fn operator(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command()
            .args(args)
            .output()
            .with_context(|| format!("running callvault {args:?}"))?;
        ensure!(
            out.status.success(),
            "callvault {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `tenant create` (the local keyring makes its key) and an ingest and
    /// a supervisor token.
    pub fn tenant(&self, name: &str) -> anyhow::Result<Tenant> {
        self.operator(&["tenant", "create", name])?;
        let token = |role| -> anyhow::Result<String> {
            let t = self.operator(&["token", "create", "--tenant", name, "--role", role])?;
            Ok(t.trim().to_owned())
        };
        Ok(Tenant {
            ingest: token("ingest")?,
            supervisor: token("supervisor")?,
        })
    }

    /// Starts `callvault serve --roles ROLES EXTRA…` on free loopback ports
    /// (gRPC and metrics) and waits until it accepts connections. Its
    /// stderr (warnings and errors) is appended to `serve.log`.
    pub async fn serve(&self, roles: &str, extra: &[String]) -> anyhow::Result<Server> {
        let port = free_port()?;
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let log = self.dir.path().join("serve.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = self
            .command()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &metrics, "--roles", roles])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("spawning callvault serve")?;
        let mut server = Server {
            pid: child.id(),
            child,
            addr: format!("http://127.0.0.1:{port}"),
            metrics,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = server.child.try_wait()? {
                bail!("callvault serve exited ({status}): {}", server.log_tail());
            }
            ensure!(
                Instant::now() < deadline,
                "callvault serve did not listen within 30 s: {}",
                server.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }
}

/// Every `CALLVAULT_*` variable of the bench's environment removed, so
/// that no setting of the caller's (a database URL, a config file) changes
/// what a section runs on.
fn scrub(c: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CALLVAULT_") {
            c.env_remove(name);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running `callvault serve`.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:<port>`
    pub addr: String,
    /// `127.0.0.1:<port>` of `GET /metrics`.
    pub metrics: String,
    log: PathBuf,
}

impl Server {
    pub async fn client(&self, token: &str) -> anyhow::Result<Client> {
        Client::connect(&self.addr, token)
            .await
            .with_context(|| format!("connecting to {}", self.addr))
    }

    /// The client CLI against this server with `token`.
    pub fn cli(&self, token: &str) -> tokio::process::Command {
        let mut c = Command::new(BIN);
        scrub(&mut c);
        let mut c = tokio::process::Command::from(c);
        c.env("CALLVAULT_SERVER", &self.addr)
            .env("CALLVAULT_TOKEN", token)
            .env("CALLVAULT_LOG", "warn")
            .stdin(Stdio::null());
        c
    }

    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        procfs::rss_kib(self.pid)
    }

    pub fn hwm_kib(&self) -> anyhow::Result<u64> {
        procfs::hwm_kib(self.pid)
    }

    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        procfs::cpu_time(self.pid)
    }

    /// Lines of the server's log (every start on this backend) holding
    /// `needle`, case-insensitively.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let needle = needle.to_lowercase();
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.to_lowercase().contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `GET /metrics` (Prometheus text), over a plain HTTP/1.1 request.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        let addr = self.metrics.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            ensure!(
                text.starts_with("HTTP/1.1 200"),
                "metrics answered: {text:.200}"
            );
            Ok(text)
        })
        .await?
    }

    /// The node's KMS calls of `operation` so far, over every region.
    pub async fn kms_calls(&self, operation: &str) -> anyhow::Result<u64> {
        let text = self.scrape().await?;
        let label = format!("operation=\"{operation}\"");
        let calls: f64 = text
            .lines()
            .filter(|l| l.starts_with("callvault_kms_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        Ok(calls as u64)
    }

    /// SIGTERM (a graceful drain, through `kill(1)`: the crate has no
    /// `unsafe` for libc), then SIGKILL after 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!("note: callvault serve did not stop within 30 s of SIGTERM; killed");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
