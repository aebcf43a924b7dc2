//! The node's metrics (KMS requests, latency and cost per tenant, the key
//! cache, tenant key health) and their Prometheus text rendering. Each
//! component records into the shared [`KmsMetrics`]; the metrics listener
//! (`server::serve_metrics`) renders it on `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default, Clone, Copy)]
struct LatencyStats {
    count: u64,
    errors: u64,
    total_us: u64,
    max_us: u64,
}

/// KMS and key-cache metrics, rendered in Prometheus text format.
#[derive(Debug, Default)]
pub struct KmsMetrics {
    /// (operation, region) -> latency
    latency: Mutex<BTreeMap<(&'static str, String), LatencyStats>>,
    /// (tenant, operation, region) -> calls, for per-tenant KMS cost.
    per_tenant: Mutex<BTreeMap<(String, &'static str, String), u64>>,
    /// (tenant, key ARN) -> last observed key health, as gauges.
    key_health: Mutex<BTreeMap<(String, String), KeyHealthGauge>>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// (tenant, trigger) -> recordings erased by this node.
    erasures: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Recordings due for erasure at the last expiry pass (held excluded).
    pub retention_due: AtomicU64,
    /// Deletion certificates waiting for their objects, at the last pass.
    pub certificates_pending: AtomicU64,
}

impl KmsMetrics {
    pub(crate) fn record(
        &self,
        op: &'static str,
        region: &str,
        tenant: Option<&str>,
        took: Duration,
        ok: bool,
    ) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // A std mutex is right here: the critical section is a map update with
        // no await inside.
        if let Ok(mut m) = self.latency.lock() {
            let s = m.entry((op, region.to_owned())).or_default();
            s.count += 1;
            s.errors += u64::from(!ok);
            s.total_us += us;
            s.max_us = s.max_us.max(us);
        }
        if let (Some(t), Ok(mut m)) = (tenant, self.per_tenant.lock()) {
            *m.entry((t.to_owned(), op, region.to_owned())).or_default() += 1;
        }
    }

    /// Counts recordings erased (`trigger`: `request` or `retention_expiry`).
    pub fn erased(&self, tenant: &str, trigger: &'static str, n: u64) {
        if let Ok(mut m) = self.erasures.lock() {
            *m.entry((tenant.to_owned(), trigger)).or_default() += n;
        }
    }

    /// Publishes the latest health check of one tenant key.
    pub fn set_key_health(&self, tenant: &str, key_arn: &str, gauge: KeyHealthGauge) {
        if let Ok(mut m) = self.key_health.lock() {
            m.insert((tenant.to_owned(), key_arn.to_owned()), gauge);
        }
    }

    /// Total KMS calls of one operation, all regions.
    pub fn calls(&self, op: &str) -> u64 {
        self.latency
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((o, _), _)| *o == op)
                    .map(|(_, s)| s.count)
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn total_calls(&self) -> u64 {
        self.latency
            .lock()
            .map(|m| m.values().map(|s| s.count).sum())
            .unwrap_or(0)
    }

    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE callvault_kms_requests_total counter");
        let _ = writeln!(out, "# TYPE callvault_kms_errors_total counter");
        let _ = writeln!(out, "# TYPE callvault_kms_latency_seconds_sum counter");
        let _ = writeln!(out, "# TYPE callvault_kms_latency_seconds_max gauge");
        if let Ok(m) = self.latency.lock() {
            for ((op, region), s) in m.iter() {
                let l = format!(
                    "operation=\"{}\",region=\"{}\"",
                    label_value(op),
                    label_value(region)
                );
                let _ = writeln!(out, "callvault_kms_requests_total{{{l}}} {}", s.count);
                let _ = writeln!(out, "callvault_kms_errors_total{{{l}}} {}", s.errors);
                let _ = writeln!(
                    out,
                    "callvault_kms_latency_seconds_sum{{{l}}} {}",
                    s.total_us as f64 / 1e6
                );
                let _ = writeln!(
                    out,
                    "callvault_kms_latency_seconds_max{{{l}}} {}",
                    s.max_us as f64 / 1e6
                );
            }
        }
        let _ = writeln!(out, "# TYPE callvault_kms_tenant_requests_total counter");
        if let Ok(m) = self.per_tenant.lock() {
            for ((tenant, op, region), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "callvault_kms_tenant_requests_total{{tenant=\"{}\",operation=\"{}\",region=\"{}\"}} {n}",
                    label_value(tenant),
                    label_value(op),
                    label_value(region)
                );
            }
        }
        let _ = writeln!(out, "# TYPE callvault_tenant_key_state gauge");
        let _ = writeln!(
            out,
            "# TYPE callvault_tenant_key_protected_recordings gauge"
        );
        let _ = writeln!(out, "# TYPE callvault_tenant_key_incident gauge");
        if let Ok(m) = self.key_health.lock() {
            for ((tenant, arn), g) in m.iter() {
                let l = format!(
                    "tenant=\"{}\",key_arn=\"{}\"",
                    label_value(tenant),
                    label_value(arn)
                );
                let _ = writeln!(
                    out,
                    "callvault_tenant_key_state{{{l},state=\"{}\"}} 1",
                    state_label(g.state)
                );
                let _ = writeln!(
                    out,
                    "callvault_tenant_key_protected_recordings{{{l}}} {}",
                    g.recordings
                );
                let _ = writeln!(
                    out,
                    "callvault_tenant_key_incident{{{l}}} {}",
                    u8::from(g.incident)
                );
            }
        }
        let _ = writeln!(out, "# TYPE callvault_recordings_erased_total counter");
        if let Ok(m) = self.erasures.lock() {
            for ((tenant, trigger), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "callvault_recordings_erased_total{{tenant=\"{}\",trigger=\"{trigger}\"}} {n}",
                    label_value(tenant)
                );
            }
        }
        let _ = writeln!(out, "# TYPE callvault_retention_due_recordings gauge");
        let _ = writeln!(
            out,
            "callvault_retention_due_recordings {}",
            self.retention_due.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE callvault_deletion_certificates_pending gauge");
        let _ = writeln!(
            out,
            "callvault_deletion_certificates_pending {}",
            self.certificates_pending.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE callvault_key_cache_hits_total counter");
        let _ = writeln!(
            out,
            "callvault_key_cache_hits_total {}",
            self.cache_hits.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE callvault_key_cache_misses_total counter");
        let _ = writeln!(
            out,
            "callvault_key_cache_misses_total {}",
            self.cache_misses.load(Ordering::Relaxed)
        );
        out
    }
}

/// A label value as the Prometheus text format requires: backslash, double
/// quote and line feed escaped, so a value can never end its label or its
/// line (a tenant id or key ARN is validated elsewhere; this holds anyway).
fn label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The metrics label spelling of a key health state.
fn state_label(s: crate::domain::KeyHealthState) -> &'static str {
    s.code()
}

/// One tenant key's health as exported in metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHealthGauge {
    pub state: crate::domain::KeyHealthState,
    pub recordings: u64,
    pub incident: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_out_of_their_label() {
        assert_eq!(label_value("acme"), "acme");
        assert_eq!(label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label_value("a\nb"), "a\\nb");
        let m = KmsMetrics::default();
        m.set_key_health(
            "evil\"} 1\ncallvault_fake 1",
            "arn",
            KeyHealthGauge {
                state: crate::domain::KeyHealthState::Enabled,
                recordings: 1,
                incident: false,
            },
        );
        let text = m.render_prometheus();
        assert!(
            !text.lines().any(|l| l.starts_with("callvault_fake")),
            "{text}"
        );
        assert!(
            text.contains(r#"tenant="evil\"} 1\ncallvault_fake 1""#),
            "{text}"
        );
    }
}
