//! What the commands print: one human and one JSON form per result, the
//! failed-RPC message, and the progress bars. Results go to stdout,
//! progress and counts to stderr, so `--json` output can be piped.

use std::io::IsTerminal;

use callvault::api::pb;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// `{what} failed: {code:?}: {message}` for an RPC the server refused;
/// the status stays in the error, for the exit code and `--json`.
pub fn failed(what: &str) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
    move |s| {
        anyhow::Error::new(RpcFailed {
            message: format!("{what} failed: {:?}: {}", s.code(), s.message()),
            code: s.code(),
        })
    }
}

/// An RPC the server refused, as the CLI reports it.
#[derive(Debug)]
pub struct RpcFailed {
    message: String,
    code: tonic::Code,
}

impl std::fmt::Display for RpcFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcFailed {}

/// The gRPC code an error of a command comes down to: a refused RPC's,
/// the one the API would answer for a library error (one classification
/// for both), UNAVAILABLE for a server that cannot be reached; `None` for
/// anything else (a file that cannot be read, say).
pub fn code_of(e: &anyhow::Error) -> Option<tonic::Code> {
    e.chain().find_map(|c| {
        if let Some(r) = c.downcast_ref::<RpcFailed>() {
            return Some(r.code);
        }
        if let Some(s) = c.downcast_ref::<tonic::Status>() {
            return Some(s.code());
        }
        if let Some(callvault::client::Error::Connect { .. }) =
            c.downcast_ref::<callvault::client::Error>()
        {
            return Some(tonic::Code::Unavailable);
        }
        c.downcast_ref::<callvault::error::Error>()
            .map(callvault::api::code_of)
    })
}

/// The exit code of a failed command (README, "Exit codes"): 3 not
/// found, 4 refused (unauthenticated, permission denied), 5 unavailable
/// (or timed out), 1 anything else; clap exits 2 on a usage error.
pub fn exit_code_of(code: Option<tonic::Code>) -> u8 {
    use tonic::Code;
    match code {
        Some(Code::NotFound) => 3,
        Some(Code::Unauthenticated | Code::PermissionDenied) => 4,
        Some(Code::Unavailable | Code::DeadlineExceeded) => 5,
        _ => 1,
    }
}

/// A failed command's error on stderr: `error: …`, or with `--json` an
/// object `{"error": {"code", "message"}}`.
pub fn print_error(e: &anyhow::Error, json: bool) {
    if json {
        let code = code_of(e).map_or("UNKNOWN", callvault::api::code_name);
        eprintln!(
            "{}",
            json!({"error": {"code": code, "message": format!("{e:#}")}})
        );
    } else {
        eprintln!("error: {e:#}");
    }
}

/// What a progress bar counts.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Bytes of a file being uploaded.
    Upload,
    /// Bytes of an export bundle arriving.
    Download,
    /// Recordings a rewrap job has moved.
    Rewrap,
}

/// A progress bar on stderr, shown only when stderr is a terminal and the
/// output is for people (`json` false); otherwise hidden, so the same code
/// path runs either way.
pub fn progress_bar(kind: Progress, total: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = match kind {
        Progress::Upload | Progress::Download => {
            "{spinner} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        }
        Progress::Rewrap => {
            "{spinner} rewrap [{bar:40}] {pos}/{len} recordings {per_sec} eta {eta}"
        }
    };
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn time_of(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| callvault::domain::format_ms(t.seconds * 1000 + i64::from(t.nanos / 1_000_000)))
        .unwrap_or_else(|| "-".into())
}

/// `tenant list`: a table, or a JSON array.
pub fn print_tenants(tenants: &[callvault::catalog::tenants::TenantSummary], json: bool) {
    if json {
        let all: Vec<Value> = tenants
            .iter()
            .map(|t| {
                json!({
                    "tenant_id": t.tenant.id.as_str(),
                    "name": t.tenant.name,
                    "create_time": callvault::domain::format_ms(t.created_at_ms),
                    "key_arn": t.key_arn,
                    "recording_count": t.recordings,
                })
            })
            .collect();
        println!("{}", Value::Array(all));
        return;
    }
    if tenants.is_empty() {
        println!("no tenants");
        return;
    }
    println!(
        "{:<24} {:<36} {:<24} {:>10}  KMS KEY",
        "NAME", "ID", "CREATED", "RECORDINGS"
    );
    for t in tenants {
        println!(
            "{:<24} {:<36} {:<24} {:>10}  {}",
            t.tenant.name,
            t.tenant.id.as_str(),
            callvault::domain::format_ms(t.created_at_ms),
            t.recordings,
            t.key_arn.as_deref().unwrap_or("-")
        );
    }
}

/// A proto enum value as the CLI prints it: `KEY_STATE_PENDING_DELETION`
/// is `pending_deletion` (empty for the UNSPECIFIED value).
pub fn enum_word(name: &str, prefix: &str) -> String {
    match name.strip_prefix(prefix) {
        Some("UNSPECIFIED") | None => String::new(),
        Some(word) => word.to_ascii_lowercase(),
    }
}

pub fn key_state_word(s: pb::KeyState) -> String {
    enum_word(s.as_str_name(), "KEY_STATE_")
}

pub fn job_state_word(s: pb::JobState) -> String {
    enum_word(s.as_str_name(), "JOB_STATE_")
}

fn key_status_word(s: pb::KeyStatus) -> String {
    enum_word(s.as_str_name(), "KEY_STATUS_")
}

pub fn key_json(k: &pb::TenantKey) -> Value {
    let health = k.health.clone().unwrap_or_default();
    let state = key_state_word(health.state());
    json!({
        "key_arn": k.key_arn,
        "region": k.region,
        "status": key_status_word(k.status()),
        "key_spec": k.key_spec,
        "wrap_algorithm": k.wrap_algorithm,
        "replica_key_arns": k.replica_key_arns,
        "registered": time_of(&k.register_time),
        "activated": time_of(&k.activate_time),
        "deactivated": k.deactivate_time.as_ref().map(|_| time_of(&k.deactivate_time)),
        "retired": k.retire_time.as_ref().map(|_| time_of(&k.retire_time)),
        "recordings": k.recording_count,
        "bytes": k.size_bytes,
        "legal_hold": k.legal_hold_count,
        "health": if state.is_empty() { Value::Null } else { json!({
            "state": state,
            "detail": health.detail,
            "deletion": health.deletion_time.as_ref().map(|_| time_of(&health.deletion_time)),
            "checked": time_of(&health.check_time),
        })},
    })
}

pub fn print_key(k: &pb::TenantKey) {
    let health = k.health.clone().unwrap_or_default();
    let state = key_state_word(health.state());
    println!(
        "{:<8} {}  {} {}  activated {}  {} recordings, {} bytes{}  health: {}{}",
        key_status_word(k.status()),
        k.key_arn,
        k.key_spec,
        k.region,
        time_of(&k.activate_time),
        k.recording_count,
        k.size_bytes,
        if k.legal_hold_count > 0 {
            format!(" ({} on legal hold)", k.legal_hold_count)
        } else {
            String::new()
        },
        if state.is_empty() {
            "not checked yet"
        } else {
            &state
        },
        if health.deletion_time.is_some() {
            format!(" (deletion {})", time_of(&health.deletion_time))
        } else {
            String::new()
        }
    );
}

pub fn print_keys(keys: &[pb::TenantKey], json: bool) {
    if json {
        println!("{}", Value::Array(keys.iter().map(key_json).collect()));
    } else {
        keys.iter().for_each(print_key);
    }
}

pub fn print_key_health(h: &pb::KeyHealth, json: bool) {
    let rotation = h.rotation.unwrap_or_default();
    if json {
        println!(
            "{}",
            json!({
                "keys": h.keys.iter().map(key_json).collect::<Vec<_>>(),
                "incidents": h.incidents.iter().map(|i| json!({
                    "key_arn": i.key_arn,
                    "state": key_state_word(i.state()),
                    "recordings": i.recording_count,
                    "legal_hold": i.legal_hold_count,
                    "unreadable": time_of(&i.unreadable_time),
                    "message": i.message,
                })).collect::<Vec<_>>(),
                "rotation": {
                    "active_key_age_days": rotation.active_key_age_days,
                    "policy_days": rotation.policy_days,
                    "compliant": rotation.compliant,
                },
            })
        );
        return;
    }
    h.keys.iter().for_each(print_key);
    for i in &h.incidents {
        println!("INCIDENT: {}", i.message);
    }
    println!(
        "rotation: active key is {} days old, policy {} days: {}",
        rotation.active_key_age_days,
        rotation.policy_days,
        if rotation.compliant {
            "compliant"
        } else {
            "OVERDUE"
        }
    );
}

pub fn print_rotation_policy(r: &pb::RotationCompliance, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "policy_days": r.policy_days,
                "active_key_age_days": r.active_key_age_days,
                "compliant": r.compliant,
            })
        );
        return;
    }
    println!(
        "rotation policy {} days; active key {} days old ({})",
        r.policy_days,
        r.active_key_age_days,
        if r.compliant { "compliant" } else { "overdue" }
    );
}

fn job_json(j: &pb::RewrapJob) -> Value {
    json!({
        "job_id": j.job_id,
        "source_key_arn": j.source_key_arn,
        "destination_key_arn": j.destination_key_arn,
        "state": job_state_word(j.state()),
        "total": j.total_count,
        "rewrapped": j.rewrapped_count,
        "max_kms_requests_per_second": j.max_kms_requests_per_second,
        "error": if j.error.is_empty() { Value::Null } else { j.error.clone().into() },
        "created": time_of(&j.create_time),
        "finished": j.finish_time.as_ref().map(|_| time_of(&j.finish_time)),
    })
}

pub fn print_job(j: &pb::RewrapJob, json: bool) {
    if json {
        println!("{}", job_json(j));
        return;
    }
    println!(
        "rewrap job {}: {}  {}/{} recordings  {} -> {}{}",
        j.job_id,
        job_state_word(j.state()),
        j.rewrapped_count,
        j.total_count,
        j.source_key_arn,
        j.destination_key_arn,
        if j.error.is_empty() {
            String::new()
        } else {
            format!("\n  error: {}", j.error)
        }
    );
}

fn recording_json(rec: &pb::Recording, deduplicated: Option<bool>) -> Value {
    let audio = rec.audio.clone().unwrap_or_default();
    let mut v = json!({
        "recording_id": rec.recording_id,
        "external_call_id": rec.external_call_id,
        "start_time": time_json(rec.start_time.as_ref()),
        "create_time": time_json(rec.create_time.as_ref()),
        "size_bytes": rec.size_bytes,
        "chunk_count": rec.chunk_count,
        "chunk_size_bytes": rec.chunk_size_bytes,
        "sha256": rec.sha256,
        "container": audio.container,
        "codec": audio.codec,
        "sample_rate_hz": audio.sample_rate_hz,
        "channels": audio.channels,
        "duration_ms": audio.duration_ms,
        "warning": if audio.warning.is_empty() { Value::Null } else { audio.warning.into() },
        "kms_key_arn": rec.kms_key_arn,
        "kms_region": rec.kms_region,
        "labels": sorted(&rec.labels),
        "participants": sorted(&rec.participants),
        "retain_until": time_json(rec.retain_until.as_ref()),
        "legal_hold": rec.legal_hold,
    });
    if let Some(d) = deduplicated {
        v["deduplicated"] = d.into();
    }
    v
}

/// A protobuf map in key order, so output is the same from run to run.
fn sorted(m: &std::collections::HashMap<String, String>) -> std::collections::BTreeMap<&str, &str> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// One recording; `deduplicated` is known only for an ingest's answer.
pub fn print_recording(rec: &pb::Recording, json: bool, deduplicated: Option<bool>) {
    if json {
        println!("{}", recording_json(rec, deduplicated));
        return;
    }
    let audio = rec.audio.clone().unwrap_or_default();
    println!(
        "{}{}  {} bytes in {} chunks  {}/{} {} Hz {} ch {:.1} s  sha256 {}",
        rec.recording_id,
        if deduplicated == Some(true) {
            " (already archived)"
        } else {
            ""
        },
        rec.size_bytes,
        rec.chunk_count,
        audio.container,
        audio.codec,
        audio.sample_rate_hz,
        audio.channels,
        audio.duration_ms as f64 / 1000.0,
        rec.sha256
    );
    if !audio.warning.is_empty() {
        println!("  warning: {}", audio.warning);
    }
    println!(
        "  call {}  started {}  archived {}",
        rec.external_call_id,
        rec.start_time.as_ref().map_or("-".to_owned(), format_ts),
        rec.create_time.as_ref().map_or("-".to_owned(), format_ts),
    );
    if let Some(t) = &rec.retain_until {
        println!("  retain until {}", format_ts(t));
    }
    if rec.legal_hold {
        println!("  under legal hold");
    }
    for (k, v) in sorted(&rec.labels) {
        println!("  {k} = {v}");
    }
    for (role, who) in sorted(&rec.participants) {
        println!("  {role}: {who}");
    }
}

pub fn print_recordings(all: &[pb::Recording], json: bool) {
    if json {
        let v: Vec<_> = all.iter().map(|r| recording_json(r, None)).collect();
        println!("{}", Value::Array(v));
    } else {
        for r in all {
            print_recording(r, false, None);
        }
        eprintln!("{} recordings", all.len());
    }
}

/// A protobuf time as RFC 3339.
pub fn format_ts(t: &prost_types::Timestamp) -> String {
    callvault::domain::format_ms(
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos / 1_000_000)),
    )
}

/// A protobuf time as JSON: RFC 3339, or null when unset.
pub fn time_json(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| format_ts(t).into())
}

fn opt_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |t| callvault::domain::format_ms(t).into())
}

/// `token list`: never a secret, never a hash.
pub fn print_tokens(tokens: &[callvault::catalog::tokens::TokenInfo], json: bool) {
    if json {
        let v: Vec<_> = tokens
            .iter()
            .map(|t| {
                json!({
                    "token_id": t.id,
                    "role": t.role.as_str(),
                    "created_at": callvault::domain::format_ms(t.created_at_ms),
                    "last_used_at": opt_time(t.last_used_at_ms),
                    "expires_at": opt_time(t.expires_at_ms),
                    "revoked_at": opt_time(t.revoked_at_ms),
                })
            })
            .collect();
        println!("{}", Value::Array(v));
        return;
    }
    let show =
        |ms: Option<i64>, none: &str| ms.map_or(none.to_owned(), callvault::domain::format_ms);
    println!(
        "{:<36}  {:<10}  {:<24}  {:<24}  {:<24}  REVOKED",
        "TOKEN ID", "ROLE", "CREATED", "LAST USED", "EXPIRES"
    );
    for t in tokens {
        println!(
            "{:<36}  {:<10}  {:<24}  {:<24}  {:<24}  {}",
            t.id,
            t.role.as_str(),
            callvault::domain::format_ms(t.created_at_ms),
            show(t.last_used_at_ms, "never"),
            show(t.expires_at_ms, "never"),
            show(t.revoked_at_ms, "-"),
        );
    }
    eprintln!("{} tokens", tokens.len());
}
