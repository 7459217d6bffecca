//! `themis`: the command line of the THEMIS service mesh (paper §7).
//!
//! Keys (`keygen`, `id`), a mesh node with a local HTTP agent API (`node`), many nodes in one
//! process (`cluster`), a client of a local agent (`register`, `deregister`, `discover`,
//! `call`, `status`), and the AppAuth demo of paper §7 (`demo`). `themis --help` and `themis <command> --help` describe every flag.
//!
//! Exit codes: 0 success, 1 an error (printed as `error: ...` on stderr), 2 bad usage (clap).
#![forbid(unsafe_code)]

mod agent;
mod cli;
mod client;
mod cluster;
mod demo;
mod error;
mod keys;
mod node;

use clap::Parser;

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info,themis_cli=info",
        2 => "debug",
        _ => "trace",
    };
    // RUST_LOG, when set, wins over -v.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(cli));
    // Tasks still running (nodes of a demo or cluster) get a short grace period, not forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
