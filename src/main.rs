use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use tcp_redirs::client::Failure;

fn main() -> ExitCode {
    // `COMPLETE=bash tcp-redirs …`: the shell asks for completions; answer and exit.
    clap_complete::CompleteEnv::with_factory(tcp_redirs::cli::Cli::command).complete();
    let cli = tcp_redirs::cli::Cli::parse();
    match tcp_redirs::cli::run(cli) {
        Ok(code) => code,
        // `tcp-redirs | head`: the reader left; that is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(Failure::of(&err).map_or(1, Failure::exit_code))
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
