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
    man_pages(&command, "tcp-redirs", &mut files);
    files
}

/// One page for the command and one for each subcommand, named like git's: `tcp-redirs-add.1`.
fn man_pages(command: &clap::Command, name: &str, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    // clap names are `&'static str` without its `string` feature; a test can afford a leak.
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let bin: &'static str = Box::leak(name.replace('-', " ").into_boxed_str());
    let page = command.clone().name(leaked).bin_name(bin);
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out).expect("render a man page");
    files.push((root().join("man").join(format!("{name}.1")), out));
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), files);
    }
}

fn first_difference(path: &Path, want: &[u8]) -> Option<String> {
    let have = std::fs::read(path).unwrap_or_default();
    if have == want {
        return None;
    }
    let (have, want) = (String::from_utf8_lossy(&have), String::from_utf8_lossy(want));
    let line = have
        .lines()
        .zip(want.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(have.lines().count().min(want.lines().count()));
    Some(format!(
        "{} is stale at line {}:\n  checked in: {:?}\n  generated:  {:?}",
        path.display(),
        line + 1,
        have.lines().nth(line).unwrap_or("<end of file>"),
        want.lines().nth(line).unwrap_or("<end of file>")
    ))
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
