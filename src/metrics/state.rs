//! Gauges of state that passes publish rather than events count: tenant key
//! health (the key-health loop) and the compliance backlog (read at each
//! scrape). Each is rendered from its latest value by a collector, so a
//! key whose state changes has one `state` series, not one per state seen.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::domain::KEY_HEALTH_STATES;

/// One tenant key's health as exported in metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHealthGauge {
    pub state: crate::domain::KeyHealthState,
    pub recordings: u64,
    pub incident: bool,
}

/// (tenant, key ARN) -> last observed key health.
#[derive(Debug, Default)]
pub(super) struct KeyHealth(Mutex<BTreeMap<(String, String), KeyHealthGauge>>);

impl KeyHealth {
    pub(super) fn set(&self, tenant: &str, key_arn: &str, gauge: KeyHealthGauge) {
        // A std mutex is right here: no await inside.
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.insert((tenant.to_owned(), key_arn.to_owned()), gauge);
    }
}

impl Collector for KeyHealth {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        static STATE_HELP: LazyLock<String> = LazyLock::new(|| {
            let states: Vec<&str> = KEY_HEALTH_STATES.iter().map(|s| s.code()).collect();
            format!(
                "1 for each tenant key's state at this node's last health check (state: {}).",
                states.join(", ")
            )
        });
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut family = encoder.encode_descriptor(
                "tenant_key_state",
                &STATE_HELP,
                None,
                MetricType::Gauge,
            )?;
            for ((tenant, arn), g) in m.iter() {
                let labels = [
                    ("tenant", tenant.as_str()),
                    ("key_arn", arn.as_str()),
                    ("state", g.state.code()),
                ];
                ConstGauge::new(1_i64).encode(family.encode_family(&labels)?)?;
            }
        }
        type Value = fn(&KeyHealthGauge) -> u64;
        let families: [(&str, &str, Value); 2] = [
            (
                "tenant_key_protected_recordings",
                "Recordings wrapped under each tenant key, at this node's last health check.",
                |g| g.recordings,
            ),
            (
                "tenant_key_incident",
                "1 when a tenant key can no longer (or soon will not) unwrap recordings it \
                 protects, or was replaced, at this node's last health check.",
                |g| u64::from(g.incident),
            ),
        ];
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for ((tenant, arn), g) in m.iter() {
                let labels = [("tenant", tenant.as_str()), ("key_arn", arn.as_str())];
                ConstGauge::new(value(g)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The compliance backlog: the same for every node over one catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Recordings whose retention ended and that no hold covers.
    pub retention_due: u64,
    /// Deletion certificates waiting for their objects.
    pub certificates_pending: u64,
}

#[derive(Debug, Default)]
pub(super) struct BacklogGauges(Mutex<Option<Backlog>>);

impl BacklogGauges {
    pub(super) fn set(&self, backlog: Option<Backlog>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = backlog;
    }
}

impl Collector for BacklogGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(b) = *self.0.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Ok(());
        };
        for (name, help, n) in [
            (
                "retention_due_recordings",
                "Recordings whose retention ended and that no legal hold covers, awaiting the \
                 expiry job.",
                b.retention_due,
            ),
            (
                "deletion_certificates_pending",
                "Deletion certificates waiting for their recordings' objects to be deleted.",
                b.certificates_pending,
            ),
        ] {
            let gauge = ConstGauge::new(n);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
