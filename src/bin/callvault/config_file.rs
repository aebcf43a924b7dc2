//! `--config FILE` (SPEC §9): a TOML file of flag values, beneath the
//! environment and the command line: **file < environment < flags**.
//!
//! Keys are the long flag names (`metrics-listen = "127.0.0.1:9090"`), at
//! the top level; values are strings, integers, booleans, or arrays of
//! strings for flags that take a list. Each value becomes the flag's
//! default in every command that has the flag, so clap's own precedence
//! (flag, then environment, then default) does the layering. A key that no
//! command takes, a table, or a value of the wrong kind is refused with
//! the key's name and line.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Command;
use clap::parser::ValueSource;

/// Flags whose values are secrets: `config check` never prints them whole.
pub const SECRET_FLAGS: &[&str] = &["database-url", "token"];

/// Flags that make no sense in a file.
const NOT_IN_FILE: &[&str] = &["config", "help", "version"];

/// The `--config` path from the command line, else `CALLVAULT_CONFIG`.
/// Read before clap parses, because the file supplies clap's defaults.
pub fn path_from(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("CALLVAULT_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// One `key = value` of the file, as clap default values.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    values: Vec<String>,
    line: usize,
}

/// The file's entries, validated against the flags of `cmd`.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    entries: Vec<Entry>,
}

fn line_of(text: &str, at: Option<std::ops::Range<usize>>) -> usize {
    at.map_or(1, |r| {
        text[..r.start.min(text.len())].matches('\n').count() + 1
    })
}

/// Every long flag name of `cmd` and its subcommands.
fn flag_names(cmd: &Command, out: &mut BTreeSet<String>) {
    for a in cmd.get_arguments() {
        if let Some(long) = a.get_long() {
            out.insert(long.to_owned());
        }
    }
    for sub in cmd.get_subcommands() {
        flag_names(sub, out);
    }
}

impl ConfigFile {
    /// Reads and checks the file against `cmd`'s flags.
    pub fn load(path: &Path, cmd: &Command) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let doc = toml_edit::Document::parse(text.as_str()).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not valid TOML: {}",
                path.display(),
                line_of(&text, e.span()),
                e.message()
            )
        })?;
        let mut known = BTreeSet::new();
        flag_names(cmd, &mut known);
        let mut entries = Vec::new();
        for (key, item) in doc.as_table().iter() {
            let line = line_of(
                &text,
                doc.as_table()
                    .get_key_value(key)
                    .and_then(|(k, _)| k.span()),
            );
            let at = format!("{}:{line}", path.display());
            if item.is_table() || item.is_array_of_tables() {
                bail!("{at}: `{key}` is a table; flags are top-level keys");
            }
            if !known.contains(key) || NOT_IN_FILE.contains(&key) {
                bail!(
                    "{at}: unknown key `{key}` (keys are the long flag names of `callvault --help`)"
                );
            }
            let scalar = |v: &toml_edit::Value| -> Result<String> {
                Ok(match v {
                    toml_edit::Value::String(s) => s.value().clone(),
                    toml_edit::Value::Integer(i) => i.value().to_string(),
                    toml_edit::Value::Boolean(b) => b.value().to_string(),
                    _ => bail!("{at}: `{key}` must be a string, an integer or a boolean"),
                })
            };
            let values = match item.as_value() {
                Some(toml_edit::Value::Array(a)) => a.iter().map(scalar).collect::<Result<_>>()?,
                Some(v) => vec![scalar(v)?],
                None => bail!("{at}: `{key}` is not a value"),
            };
            entries.push(Entry {
                key: key.to_owned(),
                values,
                line,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            entries,
        })
    }

    /// `cmd` with the file's values as the defaults of the flags they name,
    /// in every subcommand that has them.
    pub fn apply(&self, mut cmd: Command) -> Command {
        let ids: Vec<(String, String)> = cmd
            .get_arguments()
            .filter_map(|a| Some((a.get_long()?.to_owned(), a.get_id().to_string())))
            .collect();
        for (long, id) in ids {
            if let Some(e) = self.entries.iter().find(|e| e.key == long) {
                let values: Vec<clap::builder::OsStr> =
                    e.values.iter().map(|v| v.clone().into()).collect();
                cmd = cmd.mut_arg(id, |a| a.default_values(values));
            }
        }
        let subs: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        for name in subs {
            cmd = cmd.mut_subcommand(name, |sub| self.apply(sub));
        }
        cmd
    }

    /// Where a key of the file was set (for `config check`).
    fn line(&self, key: &str) -> Option<usize> {
        self.entries.iter().find(|e| e.key == key).map(|e| e.line)
    }
}

/// A secret shown without its secret part: a URL keeps its scheme, host
/// and path, a token only its first characters.
pub fn redact(flag: &str, value: &str) -> String {
    if !SECRET_FLAGS.contains(&flag) {
        return value.to_owned();
    }
    match url::Url::parse(value) {
        Ok(mut u) if u.has_host() => {
            if u.password().is_some() {
                let _ = u.set_password(Some("REDACTED"));
            }
            u.set_query(u.query().map(|_| "REDACTED"));
            u.to_string()
        }
        _ => "REDACTED".to_owned(),
    }
}

/// The effective settings of `serve` as `name = value  # source` lines:
/// every flag, where its value came from, secrets redacted.
pub fn effective(matches: &clap::ArgMatches, cmd: &Command, file: Option<&ConfigFile>) -> String {
    let mut out = String::new();
    for arg in cmd.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => format!(
                "environment {}",
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            Some(ValueSource::DefaultValue) => {
                match file.and_then(|f| f.line(long).map(|l| (f, l))) {
                    Some((f, line)) => format!("{}:{line}", f.path.display()),
                    None => "default".to_owned(),
                }
            }
            _ => "unset".to_owned(),
        };
        let shown: Vec<String> = values
            .iter()
            .map(|v| format!("{:?}", redact(long, v)))
            .collect();
        let list = matches!(arg.get_action(), clap::ArgAction::Append);
        let value = match shown.len() {
            0 => "(unset)".to_owned(),
            1 if !list => shown[0].clone(),
            _ => format!("[{}]", shown.join(", ")),
        };
        out.push_str(&format!("{long} = {value}  # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact(
                "database-url",
                "postgres://cv:hunter2@db.internal:5432/callvault"
            ),
            "postgres://cv:REDACTED@db.internal:5432/callvault"
        );
        assert_eq!(redact("token", "cv_abcdef"), "REDACTED");
        assert_eq!(redact("listen", "0.0.0.0:50051"), "0.0.0.0:50051");
        assert!(!redact("database-url", "postgres://u:p@h/db?password=p").contains("p@"));
    }

    #[test]
    fn the_config_path_comes_from_the_flag_first() {
        let args: Vec<OsString> = ["callvault", "serve", "--config", "a.toml"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(path_from(&args), Some(PathBuf::from("a.toml")));
        let args: Vec<OsString> = ["callvault", "--config=b.toml", "serve"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(path_from(&args), Some(PathBuf::from("b.toml")));
    }
}
