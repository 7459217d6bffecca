//! `themis demo`: the paper's AppAuth (§7) on a local THEMIS service mesh.
//!
//! About 32 mesh nodes in this process over real loopback TCP join the network `twiitr`. Two of
//! them provide `check` (version 1.0 at weight 95 and a canary 1.1 at weight 5), which validates
//! a username/password pair against a table of salted hashes; a third provides `handler`, which
//! validates a login by calling `check` through the mesh (a provider that is also a caller). A
//! client node runs a batch of logins through `handler`, then the demo crashes the stable
//! `check` provider and the node responsible for replica 0 of `check`, runs a second batch
//! (failover), lets the ring repair and has the surviving provider re-store (recovery).
//!
//! Every claim the report makes is checked; a claim that does not hold ends the demo with a
//! non-zero exit and a message naming it.

mod appauth;
mod phases;
mod plan;
mod stats;

use std::time::Duration;

use themis_mesh::Error as MeshError;

use phases::Demo;

/// The paper's example network (§7).
const NETWORK: &str = "twiitr";
/// Replication factor: `check` is stored under `k + 1 = 3` object ids (paper §7, `k = 2`).
const K: u8 = 2;
/// Users in `check`'s table.
const USERS: usize = 64;
/// Logins in flight at once from the client.
const CONCURRENCY: usize = 16;
/// Record lifetime and re-store period of the demo: longer than the demo, so that the records
/// of the crashed provider are still listed and the re-store happens when the demo says so.
const RECORD_TTL: Duration = Duration::from_secs(300);
const RESTORE_PERIOD: Duration = Duration::from_secs(120);
/// Bound on the whole demo.
const TIME_LIMIT: Duration = Duration::from_secs(150);
/// Bound on the ring forming (or repairing) once every node has joined.
const RING_LIMIT: Duration = Duration::from_secs(30);
/// Most logins a batch may lose while the mesh repairs after the crash, in percent.
const MAX_FAILED_PERCENT: u64 = 5;

/// Options of `themis demo`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DemoArgs {
    /// Mesh nodes to start in this process (5..=256).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(5..=256))]
    nodes: u16,
    /// Logins per batch (one batch before the crash, one after).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    logins: u32,
    /// Seed of the node identities, the user table, the login mix and the balancers.
    #[arg(long, default_value_t = 2022)]
    seed: u64,
    /// Use plaintext channels instead of the paper's secure ones (to compare the latency).
    #[arg(long)]
    insecure: bool,
    /// Print the report only, without progress lines.
    #[arg(long)]
    quiet: bool,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DemoError {
    /// A mesh operation failed.
    #[error("{what}: {source}")]
    Mesh {
        /// What the demo was doing.
        what: String,
        /// The mesh's error (boxed: the mesh's error is large, and this enum travels in
        /// every `Result` of the CLI).
        #[source]
        source: Box<MeshError>,
    },
    /// The demo's network name is refused.
    #[error("the network name of the demo is refused: {0}")]
    Network(#[source] themis_crypto::Error),
    /// Something the report claims does not hold.
    #[error("demo claim failed: {claim}: {detail}")]
    Claim {
        /// The claim.
        claim: &'static str,
        /// What was observed instead.
        detail: String,
    },
    /// The demo ran over its time limit.
    #[error(
        "the demo did not finish within {secs} s; the machine may be overloaded: try fewer --nodes or --logins"
    )]
    Timeout {
        /// The limit.
        secs: u64,
    },
}

fn mesh_err(what: impl Into<String>) -> impl FnOnce(MeshError) -> DemoError {
    let what = what.into();
    move |source| DemoError::Mesh {
        what,
        source: Box::new(source),
    }
}

/// Runs the demo; `Ok` when every claim of the report held.
pub(crate) async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let mut demo = Demo::default();
    let res = match tokio::time::timeout(TIME_LIMIT, demo.run(&args)).await {
        Ok(r) => r,
        Err(_) => Err(DemoError::Timeout {
            secs: TIME_LIMIT.as_secs(),
        }),
    };
    demo.stop().await;
    res
}
