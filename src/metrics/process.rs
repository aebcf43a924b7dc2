//! Process metrics read from `/proc/self` at each scrape, under the names
//! every Prometheus client library uses: CPU time, resident and virtual
//! memory, open and maximum file descriptors, threads, start time. Where a
//! file cannot be read (not Linux) its families are left out.

use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let aux = aux();
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat(&text, aux));
        if let Some(s) = stat {
            let cpu = ConstCounter::new(s.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent.",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_resident_memory",
                "Resident memory size.",
                Some(Unit::Bytes),
                s.resident_bytes,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory",
                "Virtual memory size.",
                Some(Unit::Bytes),
                s.virtual_bytes,
            )?;
            gauge(
                &mut encoder,
                "process_threads",
                "Threads of the process.",
                None,
                s.threads,
            )?;
            if let Some(boot) = boot_time() {
                let start = boot as f64 + s.start_ticks as f64 / aux.ticks_per_second as f64;
                gauge(
                    &mut encoder,
                    "process_start_time",
                    "Start time of the process since the Unix epoch.",
                    Some(Unit::Seconds),
                    start,
                )?;
            }
        }
        // The directory's own descriptor, open while it is read, is counted
        // too (as the other client libraries count it).
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors.",
                None,
                fds.count() as u64,
            )?;
        }
        let max = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| parse_max_fds(&text));
        if let Some(max) = max {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum open file descriptors (the soft limit).",
                None,
                max,
            )?;
        }
        Ok(())
    }
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)
}

/// What `sysconf` would answer for the clock tick and the page size, read
/// from the auxiliary vector the kernel gave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Aux {
    ticks_per_second: u64,
    page_size: u64,
}

fn aux() -> Aux {
    static AUX: OnceLock<Aux> = OnceLock::new();
    *AUX.get_or_init(|| parse_auxv(&std::fs::read("/proc/self/auxv").unwrap_or_default()))
}

/// `AT_CLKTCK` and `AT_PAGESZ` from `/proc/self/auxv` (native-endian
/// pairs of words), else Linux's usual 100 Hz and 4 KiB.
fn parse_auxv(auxv: &[u8]) -> Aux {
    const AT_PAGESZ: usize = 6;
    const AT_CLKTCK: usize = 17;
    const W: usize = std::mem::size_of::<usize>();
    let mut aux = Aux {
        ticks_per_second: 100,
        page_size: 4096,
    };
    for pair in auxv.chunks_exact(2 * W) {
        let (key, value) = pair.split_at(W);
        let word = |b: &[u8]| {
            <[u8; W]>::try_from(b)
                .map(usize::from_ne_bytes)
                .unwrap_or(0)
        };
        let value = word(value) as u64;
        match word(key) {
            AT_CLKTCK if value > 0 => aux.ticks_per_second = value,
            AT_PAGESZ if value > 0 => aux.page_size = value,
            _ => {}
        }
    }
    aux
}

/// Seconds since the epoch at which the machine booted (`btime` in
/// `/proc/stat`), read once.
fn boot_time() -> Option<u64> {
    static BOOT: OnceLock<Option<u64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    threads: u64,
    /// Clock ticks after boot at which the process started.
    start_ticks: u64,
    virtual_bytes: u64,
    resident_bytes: u64,
}

/// The fields of `/proc/self/stat` (proc(5)) the families need.
fn parse_stat(text: &str, aux: Aux) -> Option<Stat> {
    // Field 2, the command name, is in parentheses and may itself hold
    // spaces and parentheses: fields are counted after its last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    let ticks = (field(14)? + field(15)?) as f64;
    Some(Stat {
        cpu_seconds: ticks / aux.ticks_per_second as f64,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(aux.page_size),
    })
}

/// The soft limit on open files from `/proc/self/limits` (`None` when
/// unlimited).
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUX: Aux = Aux {
        ticks_per_second: 100,
        page_size: 4096,
    };

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let text = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    250 50 0 0 20 0 7 0 123456 104857600 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(text, AUX),
            Some(Stat {
                cpu_seconds: 3.0,
                threads: 7,
                start_ticks: 123_456,
                virtual_bytes: 104_857_600,
                resident_bytes: 2560 * 4096,
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2", AUX), None);
        assert_eq!(parse_stat("", AUX), None);
    }

    #[test]
    fn the_soft_limit_on_open_files() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             127431               127431               processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(text), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
    }

    #[test]
    fn clock_tick_and_page_size_from_the_auxiliary_vector() {
        let mut auxv = Vec::new();
        for (k, v) in [(6_usize, 16384_usize), (17, 250), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(
            parse_auxv(&auxv),
            Aux {
                ticks_per_second: 250,
                page_size: 16384,
            }
        );
        assert_eq!(parse_auxv(&[]), AUX);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_measured() {
        let text = crate::metrics::Metrics::default().render(crate::metrics::Format::OpenMetrics);
        for family in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_threads",
        ] {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{family} ")))
                .and_then(|v| v.parse::<f64>().ok());
            assert!(value.is_some_and(|v| v > 0.0), "{family}:\n{text}");
        }
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_start_time_seconds "), "{text}");
    }
}
