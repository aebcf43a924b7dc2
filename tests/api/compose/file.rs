//! Reading a Compose file's services as Compose does: each setting in
//! either of its forms (`environment` as a map or a list, short and long
//! volume and port syntax), and what the images used here do by convention.

use std::collections::BTreeMap;

use serde_json::Value;

pub fn services(doc: &Value) -> impl Iterator<Item = (&String, &Value)> {
    doc["services"].as_object().into_iter().flatten()
}

/// `environment` as a map, from either of its forms.
pub fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `depends_on` as (service, condition), from either of its forms.
pub fn dependencies(service: &Value) -> Vec<(String, String)> {
    match &service["depends_on"] {
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .map(|n| (n.to_owned(), "service_started".to_owned()))
            .collect(),
        Value::Object(m) => m
            .iter()
            .map(|(n, d)| {
                let condition = d["condition"].as_str().unwrap_or("service_started");
                (n.clone(), condition.to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A service mount: (`Some(source)` unless anonymous, target, is a bind mount).
pub struct Mount {
    pub source: Option<String>,
    pub target: String,
    pub bind: bool,
}

pub fn mounts(service: &Value) -> Vec<Mount> {
    let is_path = |s: &str| s.starts_with('.') || s.starts_with('/') || s.starts_with('~');
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Value::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                match parts.as_slice() {
                    [target] => Mount {
                        source: None,
                        target: (*target).to_owned(),
                        bind: false,
                    },
                    [source, target, ..] => Mount {
                        source: Some((*source).to_owned()),
                        target: (*target).to_owned(),
                        bind: is_path(source),
                    },
                    [] => unreachable!("split yields at least one part"),
                }
            }
            long => Mount {
                source: long["source"].as_str().map(str::to_owned),
                target: long["target"].as_str().unwrap_or_default().to_owned(),
                bind: long["type"].as_str() == Some("bind"),
            },
        })
        .collect()
}

/// Published host ports as `host_ip:port`.
pub fn published_ports(service: &Value) -> Vec<String> {
    service["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            Value::String(short) => {
                let parts: Vec<&str> = short.rsplitn(3, ':').collect();
                match parts.as_slice() {
                    [_target, published, host_ip] => Some(format!("{host_ip}:{published}")),
                    [_target, published] => Some(format!("0.0.0.0:{published}")),
                    _ => None,
                }
            }
            Value::Object(long) => long.get("published").map(|published| {
                let published = published
                    .as_str()
                    .map_or(published.to_string(), str::to_owned);
                let host_ip = long
                    .get("host_ip")
                    .and_then(Value::as_str)
                    .unwrap_or("0.0.0.0");
                format!("{host_ip}:{published}")
            }),
            _ => None,
        })
        .collect()
}

/// A service built from this repository that runs `callvault serve`.
pub fn is_node(service: &Value) -> bool {
    let command: Vec<&str> = match &service["command"] {
        Value::Array(words) => words.iter().filter_map(Value::as_str).collect(),
        Value::String(line) => line.split_whitespace().collect(),
        // The image's CMD.
        _ => vec!["callvault", "serve"],
    };
    !service["build"].is_null() && command == ["callvault", "serve"]
}

/// Where a backend keeps its state, by its image's own conventions.
pub fn state_dir(service: &Value) -> Option<String> {
    let image = service["image"].as_str().unwrap_or_default();
    let env = environment(service);
    let command: Vec<&str> = service["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if image.starts_with("postgres:") {
        let default = "/var/lib/postgresql/data".to_owned();
        return Some(env.get("PGDATA").cloned().unwrap_or(default));
    }
    if image.contains("minio/minio:") {
        // `minio server DIR`; the same image also runs `mc` jobs.
        return match command.as_slice() {
            ["server", dir, ..] => Some((*dir).to_owned()),
            _ => None,
        };
    }
    if image.starts_with("nsmithuk/local-kms:") {
        return Some(
            env.get("KMS_DATA_PATH")
                .cloned()
                .unwrap_or("/data".to_owned()),
        );
    }
    None
}
