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

    /// Every `callvault` command line in the README's shell blocks, as a
    /// user would paste it: continuation lines joined, comments, `>`
    /// redirections and the `VAR=value` prefix dropped, `$(…)` opened, and
    /// the README's placeholders (`<id>`, `<old ARN>`, `…`, `[--json]`,
    /// `[--resume | --cancel]`) given a value of their kind.
    fn readme_command_lines() -> Vec<(usize, Vec<String>)> {
        let readme = include_str!("../../../README.md");
        let mut out = Vec::new();
        let mut in_sh = false;
        let mut joined = String::new();
        let mut start = 0;
        for (n, line) in readme.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("```") {
                in_sh = !in_sh && t.trim_start_matches('`').starts_with("sh");
                continue;
            }
            // The prose mentions `$B keys local create [--spec RSA_2048]` too.
            let prose = line.contains("`$B ");
            if !in_sh && !prose {
                continue;
            }
            if joined.is_empty() {
                start = n + 1;
            }
            let line = if prose {
                line.split('`')
                    .filter(|s| s.starts_with("$B "))
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                line.to_owned()
            };
            match line.strip_suffix('\\') {
                Some(head) => {
                    joined.push_str(head);
                    joined.push(' ');
                    continue;
                }
                None => joined.push_str(&line),
            }
            let whole = std::mem::take(&mut joined);
            let code = match whole.find(" #") {
                Some(i) => &whole[..i],
                None => &whole,
            };
            // `"$(… $B …)"` is a command of its own.
            let code = code.replace("$(", "; ").replace(")\"", "; ");
            // A placeholder is one word however many words it names
            // (`<supervisor token>`).
            let mut code = code;
            while let Some(open) = code.find("<").filter(|&i| code[i..].contains('>')) {
                let close = open + code[open..].find('>').unwrap_or(0);
                let inner = code[open + 1..close].replace(' ', "_");
                code = format!("{}{{{inner}}}{}", &code[..open], &code[close + 1..]);
            }
            for part in code.split(';') {
                let words = shell_words(part);
                let Some(at) = words
                    .iter()
                    .position(|w| w == "$B" || w == "callvault" || w == "--")
                else {
                    continue;
                };
                if words[..at]
                    .iter()
                    .any(|w| !w.contains('=') && w != "cargo" && w != "run" && w != "--release")
                {
                    continue; // `curl … callvault …` and the like
                }
                let mut args = vec!["callvault".to_owned()];
                let mut rest = words[at + 1..].iter().peekable();
                while let Some(w) = rest.next() {
                    if w == ">" {
                        rest.next();
                        continue;
                    }
                    args.push(w.clone());
                }
                out.push((start, args));
            }
        }
        out
    }

    /// Shell words, with the README's placeholders filled in.
    fn shell_words(s: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut quote = None;
        let mut any = false;
        for c in s.chars() {
            match (quote, c) {
                (None, '"' | '\'') => {
                    quote = Some(c);
                    any = true;
                }
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => {
                    if any {
                        words.push(std::mem::take(&mut cur));
                        any = false;
                    }
                }
                (_, c) => {
                    cur.push(c);
                    any = true;
                }
            }
        }
        if any {
            words.push(cur);
        }
        let mut out = Vec::new();
        let mut alternatives = false;
        for w in words {
            // `[--resume | --cancel]`: the first of the alternatives.
            if w == "|" {
                alternatives = true;
                continue;
            }
            if alternatives {
                alternatives = !w.ends_with(']');
                continue;
            }
            let w = w.trim_start_matches('[').trim_end_matches(']').to_owned();
            out.push(fill(&w));
        }
        out
    }

    /// A word with the README's placeholders (`{id}`, as the line reader
    /// rewrote `<id>`) filled in with a value of their kind.
    fn fill(w: &str) -> String {
        let id = "0194f3a2-7c1e-7b3a-9c4d-5e6f7a8b9c0d";
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
        let mut w = w.replace('…', "x");
        while let Some(open) = w.find('{') {
            let Some(len) = w[open..].find('}') else {
                break;
            };
            let inner = w[open + 1..open + len].to_owned();
            let value = if inner.contains("ARN") {
                arn
            } else if inner.contains("token") && !inner.contains("id") {
                "cv_x"
            } else if inner.contains("id") {
                id
            } else if inner.contains("index") {
                "7"
            } else {
                "x"
            };
            w = format!("{}{value}{}", &w[..open], &w[open + len + 1..]);
        }
        if w == "0194x" {
            return id.to_owned();
        }
        w
    }

    /// The README's command lines parse with the binary's own definitions:
    /// the README cannot drift from the binary (a renamed flag, a command
    /// that moved, a value the parser refuses). What they do is tested by
    /// the integration tests that run the same commands.
    #[test]
    fn the_log_variable_and_the_exit_codes_are_in_the_help_and_the_man_page() {
        let help = tree().render_long_help().to_string();
        let mut page = Vec::new();
        clap_mangen::Man::new(tree()).render(&mut page).unwrap();
        // roff writes `-` as `\-`.
        let page = String::from_utf8(page).unwrap().replace("\\-", "-");
        for text in [&help, &page] {
            for word in [
                "CALLVAULT_LOG",
                "CALLVAULT_DATA_DIR",
                "Exit codes",
                "--log-json",
            ] {
                assert!(text.contains(word), "`{word}` missing from:\n{text}");
            }
        }
        // `CALLVAULT_LOG` is read by main, not clap: it must not be
        // mistaken for a flag's variable.
        assert!(
            tree()
                .get_arguments()
                .all(|a| a.get_env().is_none_or(|e| e != "CALLVAULT_LOG"))
        );
    }

    #[test]
    fn every_command_line_in_the_readme_parses() {
        let lines = readme_command_lines();
        assert!(lines.len() > 60, "found only {} command lines", lines.len());
        let cmd = tree();
        let mut failures = Vec::new();
        for (line, args) in &lines {
            let os: Vec<OsString> = args.iter().map(OsString::from).collect();
            let hoisted = hoist_leading_flags(os, &cmd);
            // `--token` comes from the environment in most lines; give the
            // parser one so that only what the README wrote is judged.
            let mut with_token = hoisted.clone();
            with_token.push("--token".into());
            with_token.push("cv_x".into());
            let plain = cmd.clone().try_get_matches_from(&hoisted);
            let tokened = cmd.clone().try_get_matches_from(&with_token);
            if let (Err(e), Err(_)) = (plain, tokened) {
                failures.push(format!(
                    "README.md:{line}: {}: {}",
                    args.join(" "),
                    e.kind()
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
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
