//! Percentiles and units, one spelling for every section.

use std::time::Duration;

/// Latencies, sorted once.
#[derive(Debug, Clone)]
pub struct Latencies {
    ms: Vec<f64>,
}

impl Latencies {
    pub fn from_durations(d: impl IntoIterator<Item = Duration>) -> Self {
        Self::from_ms(d.into_iter().map(ms))
    }

    pub fn from_ms(v: impl IntoIterator<Item = f64>) -> Self {
        let mut ms: Vec<f64> = v.into_iter().collect();
        ms.sort_by(f64::total_cmp);
        Self { ms }
    }

    pub fn len(&self) -> usize {
        self.ms.len()
    }

    /// Nearest rank: the smallest value at least `p` % of the samples do
    /// not exceed.
    pub fn pct(&self, p: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let rank = (p / 100.0 * self.ms.len() as f64).ceil() as usize;
        self.ms[rank.clamp(1, self.ms.len()) - 1]
    }

    pub fn max(&self) -> f64 {
        self.ms.last().copied().unwrap_or(f64::NAN)
    }

    /// `p50 1.10 ms, p99 2.31 ms, max 4.02 ms`
    pub fn p50_p99_max(&self) -> String {
        format!(
            "p50 {}, p99 {}, max {}",
            fmt_ms(self.pct(50.0)),
            fmt_ms(self.pct(99.0)),
            fmt_ms(self.max())
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Two decimals under 10 ms, one under 1 s, else seconds.
pub fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 1000.0 {
        format!("{v:.1} ms")
    } else {
        format!("{:.2} s", v / 1e3)
    }
}

/// Decimal megabytes per second, as BENCHMARKS.md writes them.
pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
