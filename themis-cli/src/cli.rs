//! The command line: `themis <COMMAND>`.

use clap::{Parser, Subcommand};

use crate::demo::DemoArgs;

/// THEMIS: a service mesh with self-certifying identities, a secure channel and a Chord DHT,
/// with no registry, no CA and no control plane (ARES 2022).
#[derive(Parser, Debug)]
#[command(name = "themis", version, propagate_version = true)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the paper's AppAuth example (§7) on a local mesh of about 32 nodes and check what
    /// it shows: discovery, load balancing, the canary split, failover and recovery.
    Demo(DemoArgs),
}
