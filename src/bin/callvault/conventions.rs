//! What holds for every command of the tree, applied once to the whole clap
//! definition rather than flag by flag: each flag can come from a
//! `CALLVAULT_<FLAG>` environment variable; a yes/no flag from the
//! environment takes `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`; and a
//! subcommand's flags may also be written before the subcommand
//! (`callvault --data-dir X tenant create acme`). Shell completions and
//! man pages are generated from the same definition.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result};
use clap::{ArgAction, Command};

/// The environment variable of a long flag: `--data-dir` reads
/// `CALLVAULT_DATA_DIR`.
pub fn env_name(long: &str) -> String {
    format!("CALLVAULT_{}", long.to_ascii_uppercase().replace('-', "_"))
}

fn is_builtin(a: &clap::Arg) -> bool {
    matches!(
        a.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

/// Every flag of `cmd` and its subcommands gets its environment variable
/// (unless it names one already) and yes/no flags parse as people write
/// them in an environment.
pub fn apply(cmd: Command) -> Command {
    let cmd = cmd.mut_args(|a| {
        if is_builtin(&a) {
            return a;
        }
        let Some(long) = a.get_long().map(str::to_owned) else {
            return a;
        };
        let a = if a.get_env().is_none() {
            a.env(env_name(&long))
        } else {
            a
        };
        if matches!(a.get_action(), ArgAction::SetTrue) {
            a.value_parser(clap::builder::BoolishValueParser::new())
        } else {
            a
        }
    });
    cmd.mut_subcommands(apply)
}

/// Whether `--long` takes a value wherever the tree defines it.
fn takes_value(cmd: &Command, long: &str) -> Option<bool> {
    if let Some(a) = cmd.get_arguments().find(|a| a.get_long() == Some(long)) {
        return Some(a.get_action().takes_values());
    }
    cmd.get_subcommands().find_map(|s| takes_value(s, long))
}

/// Moves a subcommand's flags written before the subcommand to after it,
/// so `callvault --data-dir X tenant create acme` means
/// `callvault tenant create --data-dir X acme`. The top level's own flags
/// (`--config`, `--log-json`) stay where they are; anything unknown is
/// left for clap to refuse.
pub fn hoist_leading_flags(args: Vec<OsString>, cmd: &Command) -> Vec<OsString> {
    let mut kept = Vec::new();
    let mut moved = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let s = args[i].to_string_lossy().into_owned();
        let Some(flag) = s.strip_prefix("--").filter(|f| !f.is_empty()) else {
            break;
        };
        let (name, inline_value) = match flag.split_once('=') {
            Some((n, _)) => (n, true),
            None => (flag, false),
        };
        let own = cmd.get_arguments().any(|a| a.get_long() == Some(name));
        let Some(with_value) = takes_value(cmd, name) else {
            break;
        };
        let n = if with_value && !inline_value { 2 } else { 1 };
        let end = (i + n).min(args.len());
        if own {
            kept.extend_from_slice(&args[i..end]);
        } else {
            moved.extend_from_slice(&args[i..end]);
        }
        i = end;
    }
    if moved.is_empty() {
        return args;
    }
    // The subcommand path, then the moved flags, then the rest.
    let mut out = vec![args[0].clone()];
    out.extend(kept);
    let mut at = cmd;
    while i < args.len() {
        let name = args[i].to_string_lossy();
        match at.find_subcommand(name.as_ref()) {
            Some(sub) => {
                out.push(args[i].clone());
                at = sub;
                i += 1;
            }
            None => break,
        }
    }
    out.extend(moved);
    out.extend_from_slice(&args[i..]);
    out
}

/// `callvault completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell, cmd: &mut Command) {
    clap_complete::generate(shell, cmd, "callvault", &mut std::io::stdout());
}

/// `callvault man`: the top-level page on stdout, or with `dir` one page
/// per command (`callvault.1`, `callvault-tenant-create.1`, …).
pub fn man(cmd: Command, dir: Option<&Path>) -> Result<()> {
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0;
    write_pages(cmd, "callvault", dir, &mut written)?;
    eprintln!("wrote {written} man pages to {}", dir.display());
    Ok(())
}

fn write_pages(cmd: Command, name: &str, dir: &Path, written: &mut usize) -> Result<()> {
    let cmd = cmd.name(name.to_owned());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(
            sub.clone(),
            &format!("{name}-{}", sub.get_name()),
            dir,
            written,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::commands::Cli;

    fn tree() -> Command {
        let mut cmd = apply(Cli::command());
        cmd.build();
        cmd
    }

    /// Leaf commands whose output is not a report, with why.
    const NO_JSON: &[(&str, &str)] = &[
        ("callvault serve", "runs the server"),
        (
            "callvault demo",
            "a report for people; its exit code is the verdict",
        ),
        ("callvault play", "writes the audio itself"),
        ("callvault completions", "prints a shell script"),
        ("callvault man", "prints roff"),
        (
            "callvault config check",
            "prints the effective configuration file",
        ),
        ("callvault export", "writes the bundle itself"),
        ("callvault audit keygen", "writes a key file"),
    ];

    fn walk(cmd: &Command, path: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let path = format!("{path} {}", sub.get_name());
            if sub
                .get_about()
                .is_none_or(|a| a.to_string().trim().is_empty())
            {
                out.push(format!("{path}: no help text"));
            }
            for a in sub.get_arguments() {
                if is_builtin(a) {
                    continue;
                }
                let name = a
                    .get_long()
                    .map_or(a.get_id().to_string(), |l| format!("--{l}"));
                if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    out.push(format!("{path} {name}: no help text"));
                }
                if a.get_long().is_some() && a.get_env().is_none() {
                    out.push(format!("{path} {name}: no environment variable"));
                }
            }
            let leaf = sub.get_subcommands().all(|s| s.get_name() == "help");
            let json = sub.get_arguments().any(|a| a.get_long() == Some("json"));
            if leaf && !json && !NO_JSON.iter().any(|(p, _)| *p == path) {
                out.push(format!("{path}: no --json"));
            }
            walk(sub, &path, out);
        }
    }

    #[test]
    fn every_command_and_flag_is_documented_has_its_variable_and_json() {
        let mut problems = Vec::new();
        walk(&tree(), "callvault", &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn subcommand_flags_may_come_first() {
        let cmd = tree();
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            hoist_leading_flags(
                os(&[
                    "cv",
                    "--data-dir",
                    "X",
                    "--json",
                    "tenant",
                    "create",
                    "acme"
                ]),
                &cmd
            ),
            os(&[
                "cv",
                "tenant",
                "create",
                "--data-dir",
                "X",
                "--json",
                "acme"
            ])
        );
        assert_eq!(
            hoist_leading_flags(
                os(&[
                    "cv",
                    "--log-json",
                    "--server=http://h:1",
                    "recordings",
                    "get",
                    "id"
                ]),
                &cmd
            ),
            os(&[
                "cv",
                "--log-json",
                "recordings",
                "get",
                "--server=http://h:1",
                "id"
            ])
        );
        // Nothing to move, or something clap should refuse: unchanged.
        for v in [
            &["cv", "tenant", "list", "--json"][..],
            &["cv", "--no-such-flag", "tenant", "list"][..],
            &["cv", "--config", "f.toml", "serve"][..],
        ] {
            assert_eq!(hoist_leading_flags(os(v), &cmd), os(v));
        }
    }
}
