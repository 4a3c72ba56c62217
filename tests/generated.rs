//! The checked-in shell completions (completions/) and man pages (man/) match the binary.
//!
//! They are rendered in memory from the command-line definition; a stale file fails with the
//! first line that differs. `TCP_REDIRS_UPDATE_GENERATED=1 cargo test --test generated`
//! rewrites them.
#![cfg(feature = "server")]

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every generated file: its path and its expected content.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "tcp-redirs.bash"),
        (Shell::Zsh, "_tcp-redirs"),
        (Shell::Fish, "tcp-redirs.fish"),
        (Shell::PowerShell, "_tcp-redirs.ps1"),
        (Shell::Elvish, "tcp-redirs.elv"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut tcp_redirs::cli::Cli::command(), "tcp-redirs", &mut out);
        files.push((root().join("completions").join(name), out));
    }
    let mut command = tcp_redirs::cli::Cli::command();
    command.build();
    man_pages(&command, &mut files);
    files
}

/// One page for the command and one for each subcommand, named like git's: `tcp-redirs-add.1`.
/// `build()` has given every subcommand its display name (`tcp-redirs-apps-create`) and its
/// bin name (`tcp-redirs apps create`, for the synopsis).
fn man_pages(command: &clap::Command, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    let name = command.get_display_name().unwrap_or(command.get_name()).to_owned();
    let version = env!("CARGO_PKG_VERSION");
    // The exit codes get the standard EXIT STATUS section (before VERSION) instead of
    // clap's EXTRA; any other text after the help stays in EXTRA.
    let after = command.get_after_long_help().map(|t| t.to_string());
    let mut page = command.clone();
    if after.is_some_and(|t| t.starts_with("Exit codes:")) {
        page = page.after_long_help(None::<&str>);
    }
    let man = clap_mangen::Man::new(page).source(format!("tcp-redirs {version}")).manual("tcp-redirs manual");
    let mut out = Vec::new();
    man.render(&mut out).expect("render a man page");
    let text = with_values_in_synopsis(command, &String::from_utf8(out).unwrap());
    let at = text.find(".SH VERSION").unwrap_or(text.len());
    let out = format!("{}{}{}", &text[..at], exit_status(&name), &text[at..]).into_bytes();
    files.push((root().join("man").join(format!("{name}.1")), out));
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        man_pages(sub, files);
    }
}

/// The page with each option of its SYNOPSIS followed by its value, as in `--help`
/// (`[--namespace NS]`, `[-F|--format FORMAT]`, `[--instance HOST:PORT[=WEIGHT]]...`):
/// clap_mangen writes the option alone.
fn with_values_in_synopsis(command: &clap::Command, page: &str) -> String {
    let roff = |text: &str| text.replace('\\', "\\e").replace('-', "\\-");
    let Some(start) = page.find(".SH SYNOPSIS\n") else { return page.to_owned() };
    let start = start + ".SH SYNOPSIS\n".len();
    let end = page[start..].find('\n').map_or(page.len(), |n| start + n);
    let mut synopsis = page[start..end].to_owned();
    for arg in command.get_arguments().filter(|a| !a.is_hide_set() && !a.is_positional()) {
        let (Some(long), true) = (arg.get_long(), arg.get_action().takes_values()) else { continue };
        let value = match arg.get_value_names() {
            Some(names) => names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" "),
            None => arg.get_id().as_str().to_uppercase(),
        };
        let flag = format!("\\fB\\-\\-{}\\fR", roff(long));
        let repeat = if matches!(arg.get_action(), clap::ArgAction::Append) { "..." } else { "" };
        // The option's own bracket or angle closes right after it; the repetition goes after it.
        for close in ["]", ">"] {
            let old = format!("{flag}{close}");
            if synopsis.contains(&old) {
                synopsis =
                    synopsis.replacen(&old, &format!("{flag} \\fI{}\\fR{close}{repeat}", roff(&value)), 1);
                break;
            }
        }
    }
    format!("{}{}{}", &page[..start], synopsis, &page[end..])
}

/// The EXIT STATUS section, from the same table as `--help` (`serve` never fails with 3 to 5).
fn exit_status(page: &str) -> String {
    let mut section = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in tcp_redirs::cli::EXIT_CODES {
        if page == "tcp-redirs-serve" && code > 2 {
            continue;
        }
        let meaning = meaning.replace('\\', "\\e").replace('-', "\\-");
        section.push_str(&format!(".TP\n\\fB{code}\\fR\n{meaning}\n"));
    }
    section
}

/// `None` when `path` holds `want`, else a short diff from the first line that differs.
fn first_difference(path: &Path, want: &[u8]) -> Option<String> {
    let have = std::fs::read(path).unwrap_or_default();
    if have == want {
        return None;
    }
    let (have, want) = (String::from_utf8_lossy(&have), String::from_utf8_lossy(want));
    let (have, want): (Vec<&str>, Vec<&str>) = (have.lines().collect(), want.lines().collect());
    let first = have.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(have.len().min(want.len()));
    let mut diff = format!("--- {} (checked in)\n+++ generated\n@@ line {} @@\n", path.display(), first + 1);
    for line in have.iter().skip(first).take(5) {
        diff.push_str(&format!("-{line}\n"));
    }
    for line in want.iter().skip(first).take(5) {
        diff.push_str(&format!("+{line}\n"));
    }
    Some(diff)
}

#[test]
fn completions_and_man_pages_are_up_to_date() {
    let files = generated();
    if std::env::var_os("TCP_REDIRS_UPDATE_GENERATED").is_some_and(|v| v == "1") {
        for (path, content) in &files {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        return;
    }
    let stale: Vec<String> = files.iter().filter_map(|(p, c)| first_difference(p, c)).collect();
    assert!(
        stale.is_empty(),
        "{}\n\nregenerate with: TCP_REDIRS_UPDATE_GENERATED=1 cargo test --test generated",
        stale.join("\n")
    );
    // A synopsis shows each option with its value (issue 33: `[--namespace] [--port]` did not).
    let add = std::fs::read_to_string(root().join("man/tcp-redirs-add.1")).unwrap();
    for shown in [
        r"[\fB\-\-namespace\fR \fINS\fR]",
        r"[\fB\-\-port\fR \fIPORT\fR]",
        r"[\fB\-\-allow\fR \fICIDR\fR]...",
        r"[\fB\-F\fR|\fB\-\-format\fR \fIFORMAT\fR]",
    ] {
        assert!(add.contains(shown), "the synopsis of tcp-redirs-add.1 lacks {shown}");
    }
    let remove = std::fs::read_to_string(root().join("man/tcp-redirs-remove.1")).unwrap();
    assert!(remove.contains(r"<\fB\-\-namespace\fR \fINS\fR>"), "a required option with its value");
    // Nothing checked in that the binary no longer has.
    for dir in ["completions", "man"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            assert!(
                files.iter().any(|(p, _)| *p == path),
                "{} is not generated any more: delete it",
                path.display()
            );
        }
    }
}
