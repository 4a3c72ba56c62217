use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tcp_redirs::cli::Cli::parse();
    match tcp_redirs::cli::run(cli) {
        Ok(code) => code,
        // `tcp-redirs | head`: the reader left; that is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
