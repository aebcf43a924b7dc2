//! Retention policy: per tenant, a default period and rules by label.
//!
//! A recording's `retain_until` is fixed at ingest: its ingest time plus the
//! period of the most specific rule that matches it. A label rule is more
//! specific than the default; when several label rules match, the longest
//! period wins (keeping a recording longer than one rule asks never breaks
//! another). Periods count from the ingest time, not the client-supplied
//! start time, so a wrong clock on a platform cannot make a fresh call due.

use std::collections::BTreeMap;

use crate::archive::Archive;
use crate::audit::event::{Action, log_of};
use crate::audit::trail;
use crate::catalog::compliance::{self as catalog, RetentionRule, rule_code};
use crate::domain::Principal;
use crate::error::{Error, Result};

/// Longest period a rule may set: 100 years.
pub const MAX_RETENTION_DAYS: u32 = 36_525;

/// A tenant's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub default_days: Option<u32>,
    pub rules: Vec<RetentionRule>,
}

impl RetentionPolicy {
    pub fn from_rules(all: Vec<RetentionRule>) -> Self {
        let default_days = all.iter().find(|r| r.label.is_none()).map(|r| r.days);
        Self {
            default_days,
            rules: all.into_iter().filter(|r| r.label.is_some()).collect(),
        }
    }

    /// The rule that decides a recording with `labels`: `(rule code, days)`,
    /// or `None` when no rule applies (kept until erased on request).
    pub fn evaluate(&self, labels: &BTreeMap<String, String>) -> Option<(String, u32)> {
        let by_label = self
            .rules
            .iter()
            .filter(|r| {
                r.label
                    .as_ref()
                    .is_some_and(|(k, v)| labels.get(k) == Some(v))
            })
            // The longest; between equal periods the smallest (key, value),
            // as the set-based re-evaluation orders them.
            .max_by(|a, b| a.days.cmp(&b.days).then_with(|| b.label.cmp(&a.label)));
        match by_label {
            Some(r) => Some((r.code(), r.days)),
            None => self.default_days.map(|d| (String::new(), d)),
        }
    }
}

/// What `set` changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionUpdate {
    pub policy: RetentionPolicy,
    /// The rule's period before (None: it did not exist).
    pub previous_days: Option<u32>,
    /// Existing recordings whose `retain_until` changed (with
    /// `apply_to_existing`).
    pub recordings_changed: Option<u64>,
}

/// The rules recordings of the principal's tenant are evaluated against at
/// ingest (no role check: ingest reads them for its own tenant).
pub async fn policy_for_ingest(
    archive: &Archive,
    principal: &Principal,
) -> Result<RetentionPolicy> {
    let rules =
        catalog::retention_rules(&mut *archive.catalog.conn_bulk().await?, &principal.tenant)
            .await?;
    Ok(RetentionPolicy::from_rules(rules))
}

pub async fn show(archive: &Archive, principal: &Principal) -> Result<RetentionPolicy> {
    super::require_compliance(archive, principal).await?;
    let rules =
        catalog::retention_rules(&mut *archive.catalog.conn().await?, &principal.tenant).await?;
    Ok(RetentionPolicy::from_rules(rules))
}

/// Parses `k=v` of a label rule.
pub fn parse_label(field: &str, s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::invalid(field, "expected KEY=VALUE"))?;
    if k.is_empty() || k.len() > 128 || v.len() > 1024 {
        return Err(Error::invalid(
            field,
            "label keys are 1..=128 bytes, values at most 1024",
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Sets (or with `days = None` removes) the default rule or a label rule.
/// New recordings follow it. With `apply_to_existing`, the whole policy is
/// applied again to the tenant's existing recordings in the same
/// transaction (set-based: by the labels' blind-index digests), and the
/// count of recordings whose `retain_until` changed is audited.
///
/// A recording not in the search index yet (written by a write-only node a
/// moment ago) is re-evaluated by the rule that decided it at ingest.
pub async fn set(
    archive: &Archive,
    principal: &Principal,
    label: Option<(String, String)>,
    days: Option<u32>,
    apply_to_existing: bool,
) -> Result<RetentionUpdate> {
    super::require_compliance(archive, principal).await?;
    if let Some(d) = days
        && (d == 0 || d > MAX_RETENTION_DAYS)
    {
        return Err(Error::invalid(
            "days",
            &format!("1..={MAX_RETENTION_DAYS} days"),
        ));
    }
    let label_ref = label.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
    let code = rule_code(label_ref);
    let tenant = &principal.tenant;
    // The label's digest before the transaction: the index key may have to
    // be created, which must not wait on this transaction's write lock.
    if apply_to_existing {
        // Re-evaluation reads labels through the index: nothing may be
        // missing from it, or a longer rule would not reach a recording.
        super::subjects::require_complete_index(archive, tenant).await?;
    }
    let digest = match &label {
        Some((k, v)) => Some(
            super::subjects::tenant_index(archive, tenant)
                .await?
                .label(k, v),
        ),
        None => None,
    };
    let mut tx = archive.catalog.begin().await?;
    let previous =
        catalog::put_retention_rule(&mut tx, tenant, label_ref, digest.as_ref(), days).await?;
    let policy = RetentionPolicy::from_rules(catalog::retention_rules(&mut tx, tenant).await?);
    let changed = if apply_to_existing {
        let indexed = catalog::reevaluate_indexed(&mut tx, tenant, policy.default_days).await?;
        let unindexed = match (&label, days) {
            // The default: its recordings and the ones no rule covered.
            (None, days) => {
                catalog::reapply_retention(&mut tx, tenant, "", true, days.map(|_| ""), days)
                    .await?
            }
            (Some(_), Some(d)) => {
                catalog::reapply_retention(&mut tx, tenant, &code, false, Some(&code), Some(d))
                    .await?
            }
            // A removed label rule hands its recordings to the default.
            (Some(_), None) => {
                let to = policy.default_days.map(|_| "");
                catalog::reapply_retention(&mut tx, tenant, &code, false, to, policy.default_days)
                    .await?
            }
        };
        Some(indexed + unindexed)
    } else {
        None
    };
    let mut event = trail::by(principal, Action::RetentionPolicySet)
        .detail("rule", if code.is_empty() { "default" } else { &code })
        .detail("apply_to_existing", apply_to_existing);
    event = match days {
        Some(d) => event.detail("days", d),
        None => event.detail("removed", true),
    };
    if let Some(p) = previous {
        event = event.detail("previous_days", p);
    }
    if let Some(n) = changed {
        event = event.detail("recordings_changed", n);
    }
    trail::append(archive, &mut tx, log_of(tenant), event).await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant, rule = %code, days, changed, event = "retention_policy_set", "retention policy changed");
    Ok(RetentionUpdate {
        policy,
        previous_days: previous,
        recordings_changed: changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(label: Option<(&str, &str)>, days: u32) -> RetentionRule {
        RetentionRule {
            label: label.map(|(k, v)| (k.to_owned(), v.to_owned())),
            days,
            updated_at_ms: 0,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_most_specific_rule_wins_and_ties_keep_longer() {
        let p = RetentionPolicy::from_rules(vec![
            rule(None, 365),
            rule(Some(("queue", "collections")), 3650),
            rule(Some(("queue", "sales")), 30),
            rule(Some(("region", "eu")), 730),
        ]);
        assert_eq!(p.evaluate(&labels(&[])), Some((String::new(), 365)));
        // A label rule wins over the default even when shorter.
        assert_eq!(
            p.evaluate(&labels(&[("queue", "sales")])),
            Some(("queue=sales".into(), 30))
        );
        assert_eq!(
            p.evaluate(&labels(&[("queue", "collections"), ("region", "eu")])),
            Some(("queue=collections".into(), 3650))
        );
        assert_eq!(
            p.evaluate(&labels(&[("queue", "other")])),
            Some((String::new(), 365))
        );
        let none = RetentionPolicy::from_rules(vec![rule(Some(("queue", "sales")), 30)]);
        assert_eq!(none.evaluate(&labels(&[("queue", "x")])), None);
    }

    #[test]
    fn labels_parse_as_key_equals_value() {
        assert_eq!(
            parse_label("label", "queue=a=b").unwrap(),
            ("queue".into(), "a=b".into())
        );
        assert!(parse_label("label", "queue").is_err());
        assert!(parse_label("label", "=x").is_err());
    }
}
