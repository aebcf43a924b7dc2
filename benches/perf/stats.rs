//! Percentiles and units, one spelling for every section.

use std::time::Duration;

/// Decimal megabytes per second, as BENCHMARKS.md writes them.
pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
