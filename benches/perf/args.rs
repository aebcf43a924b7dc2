//! The command line: which sections to run and how big. The defaults are
//! issue 14's sizes; `--quick` shrinks every one of them for a smoke run.

use std::time::Duration;

use anyhow::{Context, bail};

/// One part of issue 14, runnable alone by naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Roundtrip,
    Ttfb,
    Memory,
    Readers,
    Live,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Roundtrip,
        Section::Ttfb,
        Section::Memory,
        Section::Readers,
        Section::Live,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Roundtrip => "roundtrip",
            Section::Ttfb => "ttfb",
            Section::Memory => "memory",
            Section::Readers => "readers",
            Section::Live => "live",
        }
    }
}

/// Every size and count the sections use.
#[derive(Debug, Clone)]
pub struct Options {
    pub sections: Vec<Section>,
    pub quick: bool,
    /// `serve --roles` of the child server.
    pub roles: String,
    /// roundtrip: the PCM WAV's size and the rounds (best of).
    pub big_mib: u64,
    pub rounds: usize,
    /// ttfb: warm plays of the small recording, seeks into the big one,
    /// cold plays behind the injected KMS round trip.
    pub ttfb_plays: usize,
    pub seek_plays: usize,
    pub cold_plays: usize,
    /// memory: concurrent ingests, each this big, over this many
    /// connections; how long to wait before the "after" RSS.
    pub mem_streams: usize,
    pub mem_mib: usize,
    pub mem_connections: usize,
    pub mem_settle: Duration,
    /// readers: concurrent plays of this many recordings of this size.
    pub readers: usize,
    pub reader_mib: usize,
    /// live: calls, seconds of audio each, client connections, tenants.
    pub live_calls: usize,
    pub live_secs: u64,
    pub live_connections: usize,
    pub live_tenants: usize,
}

pub const USAGE: &str = "\
usage: cargo bench --bench perf -- [SECTION...] [--quick] [--roles R]
       [--size-mib N] [--rounds N] [--live-calls N] [--live-secs N] [--live-connections N]
sections: roundtrip ttfb memory readers live (default: all)";

impl Options {
    fn full() -> Self {
        Self {
            sections: Section::ALL.to_vec(),
            quick: false,
            roles: "ingest,playback".to_owned(),
            big_mib: 512,
            rounds: 3,
            ttfb_plays: 1000,
            seek_plays: 200,
            cold_plays: 20,
            mem_streams: 100,
            mem_mib: 64,
            mem_connections: 10,
            mem_settle: Duration::from_secs(10),
            readers: 200,
            reader_mib: 8,
            live_calls: 1000,
            live_secs: 180,
            live_connections: 12,
            live_tenants: 4,
        }
    }

    fn quick() -> Self {
        Self {
            quick: true,
            big_mib: 64,
            rounds: 1,
            ttfb_plays: 100,
            seek_plays: 20,
            cold_plays: 5,
            mem_streams: 20,
            mem_mib: 8,
            mem_connections: 4,
            mem_settle: Duration::from_secs(2),
            readers: 20,
            reader_mib: 2,
            live_calls: 50,
            live_secs: 10,
            live_connections: 4,
            ..Self::full()
        }
    }

    /// Parses what cargo passes (`--bench` first, then the words after
    /// `--`). Explicit sizes win over `--quick` wherever they stand.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let args: Vec<String> = args.into_iter().collect();
        let mut opts = if args.iter().any(|a| a == "--quick") {
            Self::quick()
        } else {
            Self::full()
        };
        let mut sections = Vec::new();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| -> anyhow::Result<String> {
                it.next()
                    .with_context(|| format!("{name} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--bench" | "--quick" => {}
                "--help" | "-h" => bail!("{USAGE}"),
                "--roles" => opts.roles = value("--roles")?,
                "--size-mib" => opts.big_mib = number(&value("--size-mib")?)?,
                "--rounds" => opts.rounds = number(&value("--rounds")?)?,
                "--live-calls" => opts.live_calls = number(&value("--live-calls")?)?,
                "--live-secs" => opts.live_secs = number(&value("--live-secs")?)?,
                "--live-connections" => {
                    opts.live_connections = number(&value("--live-connections")?)?;
                }
                name => match Section::ALL.iter().find(|s| s.name() == name) {
                    Some(s) => sections.push(*s),
                    None => bail!("unknown argument `{name}`\n{USAGE}"),
                },
            }
        }
        if !sections.is_empty() {
            opts.sections = sections;
        }
        if opts.rounds == 0 || opts.live_connections == 0 || opts.live_secs == 0 {
            bail!("--rounds, --live-connections and --live-secs must be at least 1");
        }
        Ok(opts)
    }
}

fn number<T: std::str::FromStr>(s: &str) -> anyhow::Result<T> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("`{s}` is not a number\n{USAGE}"))
}
