//! `themis`: the command line of the THEMIS service mesh (paper §7).
//!
//! Keys (`keygen`, `id`), a mesh node with a local HTTP agent API (`node`), many nodes in one
//! process (`cluster`), a client of a local agent (`register`, `deregister`, `discover`,
//! `call`, `status`, `members`, `check`), a small upstream for smoke tests (`echo`), and the
//! AppAuth demo of paper §7 (`demo`). `themis --help` and `themis <command> --help` describe
//! every flag.
//!
//! Exit codes: 0 success, 1 an error (printed as `error: ...` on stderr), 2 bad usage (clap's,
//! and invalid values found after parsing: a network name, an address, the configuration
//! file).
#![forbid(unsafe_code)]

mod admission;
mod agent;
mod cli;
mod client;
mod cluster;
mod config;
mod datadir;
mod demo;
mod dns;
mod echo;
mod error;
mod keys;
mod log;
mod node;
mod owner;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

/// mimalloc instead of glibc's malloc, which took about 15 % of a node's CPU on the sidecar
/// path (allocation-heavy HTTP and channel frames); musl builds keep their own allocator.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fail(e: &error::Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // A node's settings come from its flags, the environment and its configuration file.
    let mut settings = None;
    let mut log_format = log::LogFormat::Text;
    if let cli::Command::Node(args) = &cli.command {
        let s = match config::load(args) {
            Ok(s) => s,
            Err(e) => return fail(&e),
        };
        if args.print_config {
            let file = match &args.config {
                Some(p) => config::read_file(p).unwrap_or_default(),
                None => config::NodeFlags::default(),
            };
            let node_matches = matches.subcommand_matches("node");
            print!(
                "{}",
                config::render(&s, &file, node_matches, args.config.as_deref())
            );
            return ExitCode::SUCCESS;
        }
        log_format = s.log_format;
        settings = Some(s);
    }
    if let Err(e) = log::init(cli.verbose, log_format) {
        return fail(&e);
    }
    // One thread asked for: a current-thread runtime, where the node's tasks (HTTP server,
    // channel endpoint, mesh) wake each other without crossing threads. A multi-thread runtime
    // with one worker still runs `block_on` on this thread and parks and unparks between the
    // two (futex calls on every call through the sidecar).
    let mut builder = match settings.as_ref().and_then(|s| s.threads) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(cli, settings));
    // Tasks still running (nodes of a demo or cluster) get a short grace period, not forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    log::repeat::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}
