//! The command line: one [`Cli`] with a [`Command`] per subcommand, and [`run`] dispatching
//! them. To add a subcommand, add a variant here and an arm in [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;

/// The agent API address used when neither `--api` nor `THEMIS_API` is given.
pub(crate) const DEFAULT_API: &str = "127.0.0.1:7070";

/// THEMIS: a service mesh with self-certifying identities, a secure channel and a Chord DHT,
/// and no registry, CA or control plane (ARES 2022).
#[derive(Debug, Parser)]
#[command(name = "themis", version)]
pub(crate) struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
// One value, parsed once at start: the size of `themis node`'s many settings costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create an identity key file (mode 0600) and print its public key.
    Keygen(KeygenArgs),
    /// Print the node id of a key on a network (H(public key, network)).
    Id(IdArgs),
    /// Key management: `themis key rotate` (a new key that the old one names its successor).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Owned service names: `themis owner new` creates an owner key (mode 0600) and prints
    /// the names it owns, LABEL~FINGERPRINT. Only providers it delegates may provide them.
    #[command(subcommand)]
    Owner(OwnerCommand),
    /// Let one provider node provide an owned name (LABEL~FINGERPRINT) on one network for a
    /// while: the owner key signs a delegation, written to --out for `themis register
    /// --delegation`.
    Delegate(DelegateArgs),
    /// Closed networks: `themis admission keygen` (the network's admission key) and `themis
    /// admission issue` (a certificate admitting one node id). Nodes of a closed network run
    /// with --admission-key and --admission-cert; the default network is open.
    #[command(subcommand)]
    Admission(AdmissionCommand),
    /// Run a mesh node and its local HTTP agent API (the sidecar of local services). Every
    /// flag is also a THEMIS_* variable and a key of the --config file.
    Node(crate::config::NodeArgs),
    /// Run N mesh nodes in this process on consecutive ports (a local test ring).
    Cluster(crate::cluster::ClusterArgs),
    /// Provide a service: calls reaching the local agent's node are forwarded to UPSTREAM.
    Register(RegisterArgs),
    /// Stop providing a service on the local agent's node.
    Deregister(NameArgs),
    /// Find the providers of a service (and the replica object ids they were found under).
    Discover(DiscoverArgs),
    /// Call a service through the local agent and print its response on stdout.
    Call(CallArgs),
    /// Show the local agent's node: id, ring neighbours, sessions, stored records.
    Status(StatusArgs),
    /// List the members of the ring, walked from the local agent's node: id, address, state,
    /// services.
    Members(MembersArgs),
    /// Check the local agent's node (a doctor): agent reachable, ring consistent around the
    /// node, clock offset to its neighbours, descriptors left, key file mode. Exit code 1 if
    /// a check fails.
    Check(CheckArgs),
    /// A small HTTP upstream for smoke tests of a deployment: answers every POST with
    /// `NAME: BODY` (register it with `themis register NAME --upstream http://ADDR/`).
    Echo(crate::echo::EchoArgs),
    /// Run the paper's AppAuth example (§7) on a local mesh of about 32 nodes and check what
    /// it shows: discovery, load balancing, the canary split, failover and recovery.
    Demo(crate::demo::DemoArgs),
}

/// Where the local agent's API is.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiArgs {
    /// Address of the local agent's API (HOST:PORT or http://HOST:PORT).
    #[arg(long, env = "THEMIS_API", default_value = DEFAULT_API)]
    pub(crate) api: String,
    /// The file holding the agent's API token (the one `themis node --api-token-file` was
    /// given), sent as `Authorization: Bearer`.
    #[arg(long, env = "THEMIS_API_TOKEN_FILE", value_name = "FILE")]
    pub(crate) api_token_file: Option<PathBuf>,
}

/// `themis keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// The key file to create.
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `themis key ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Rotate a node's key without a CA: create a new key file (mode 0600) and, beside it
    /// (OUT.succession), a statement signed by the old key and the new one naming the new key
    /// its successor for a grace period. A node started with the new key presents it: peers,
    /// allow-lists and bootstrap lists that name the old id accept the new one until the
    /// grace period ends.
    Rotate(RotateArgs),
}

/// `themis owner ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum OwnerCommand {
    /// Create an owner key file (mode 0600) and print the owned form of a name: LABEL~ and
    /// the key's 32-character fingerprint. Nobody else can provide such a name without the
    /// key's delegation (`themis delegate`).
    New(OwnerNewArgs),
}

/// `themis owner new`.
#[derive(Debug, Args)]
pub(crate) struct OwnerNewArgs {
    /// The owner key file to create.
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// Print the owned form of this label (e.g. `pay` gives `pay~<fingerprint>`).
    #[arg(long)]
    pub(crate) label: Option<String>,
    /// Replace an existing file.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `themis delegate`.
#[derive(Debug, Args)]
pub(crate) struct DelegateArgs {
    /// The owner key file (`themis owner new`).
    #[arg(long, value_name = "FILE")]
    pub(crate) owner_key: PathBuf,
    /// The network the provider runs on (the delegation is for this network only).
    #[arg(long, env = "THEMIS_NET")]
    pub(crate) net: String,
    /// The owned name (LABEL~FINGERPRINT of the owner key).
    #[arg(long)]
    pub(crate) name: String,
    /// The provider's node id (hex; `themis id --key KEY --net NET` or `themis status`).
    #[arg(long, value_name = "NODE_ID")]
    pub(crate) provider: String,
    /// How long the provider may provide the name: a number and a unit s, m, h or d, at most
    /// 366d. A delegation cannot be revoked before it ends: keep it short and renew it.
    #[arg(long, value_name = "DURATION", value_parser = crate::owner::parse_lifetime)]
    pub(crate) expires: std::time::Duration,
    /// The delegation file to write.
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `themis key rotate`.
#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The key file being retired (read only; remove it once the node runs with the new key).
    #[arg(long, short, env = "THEMIS_KEY")]
    pub(crate) key: PathBuf,
    /// The new key file to create (the statement goes beside it, as OUT.succession).
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// The network the node runs on (the statement is for this network only).
    #[arg(long, env = "THEMIS_NET")]
    pub(crate) net: String,
    /// How long the old id's peers accept the new one: a number and a unit s, m, h or d, at
    /// most 90d.
    #[arg(long, env = "THEMIS_KEY_GRACE", default_value = crate::keys::DEFAULT_GRACE,
          value_parser = crate::keys::parse_grace)]
    pub(crate) grace: std::time::Duration,
    /// Replace existing files at OUT and OUT.succession.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `themis id`.
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The key file.
    #[arg(long, short)]
    pub(crate) key: PathBuf,
    /// The network name (1-64 bytes of UTF-8).
    #[arg(long)]
    pub(crate) net: String,
    /// The admission public key of a closed network (hex): node ids there bind it.
    #[arg(long, value_name = "HEX")]
    pub(crate) admission_key: Option<String>,
}

/// `themis admission ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AdmissionCommand {
    /// Create the admission key of a closed network (a key file, mode 0600) and print its
    /// public key, which every node of the network is configured with (--admission-key).
    Keygen(KeygenArgs),
    /// Issue a certificate (PROTOCOL.md §2.10) admitting one node id to the closed network,
    /// signed with the admission key, valid for --valid.
    Issue(IssueArgs),
}

/// `themis admission issue`.
#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The admission key file (from `themis admission keygen`).
    #[arg(long, short)]
    pub(crate) key: PathBuf,
    /// The network name.
    #[arg(long, env = "THEMIS_NET")]
    pub(crate) net: String,
    /// The node id to admit: its id on the closed network (`themis id --key NODE.key --net
    /// NAME --admission-key HEX`).
    #[arg(long, value_name = "HEX")]
    pub(crate) node_id: String,
    /// How long the certificate is valid: a number and a unit s, m, h or d, at most 3650d.
    #[arg(long, default_value = crate::admission::DEFAULT_VALIDITY,
          value_parser = crate::admission::parse_validity)]
    pub(crate) valid: std::time::Duration,
    /// The certificate file to write (mode 0644: a certificate is not secret).
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `themis register`.
#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// The service name (1-128 bytes).
    pub(crate) name: String,
    /// The local HTTP service calls are POSTed to (http://HOST:PORT/PATH).
    #[arg(long)]
    pub(crate) upstream: String,
    /// The version announced (canary releases: callers split traffic by version weight).
    #[arg(long)]
    pub(crate) version: Option<String>,
    /// The relative weight announced, 0 to 65535 (default 100; 0 = standby).
    #[arg(long)]
    pub(crate) weight: Option<u16>,
    /// A free tag (repeatable; at most 8 tags of at most 32 bytes, the provider record's
    /// limits).
    #[arg(long = "tag")]
    pub(crate) tags: Vec<String>,
    /// Only the node with this id (hex, from `themis id` or `themis status`) may call the
    /// service; repeatable. The caller's id is the one the secure channel authenticated. None:
    /// every node of the network may call it. The successor of an allowed id (`themis key
    /// rotate`) may call it during its grace period.
    #[arg(long = "allow", value_name = "NODE_ID")]
    pub(crate) allow: Vec<String>,
    /// The owner's delegation to this node (the file `themis delegate` writes): needed to
    /// provide an owned name (LABEL~FINGERPRINT), refused for any other.
    #[arg(long, value_name = "FILE")]
    pub(crate) delegation: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) check: HealthCheckArgs,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

/// The health check of `themis register` (as in Consul): the service starts critical and is
/// announced once its check passes; while it is critical its record is withdrawn. Durations
/// take their unit: 500ms, 10s, 5m, 1h.
#[derive(Debug, Args, Default)]
pub(crate) struct HealthCheckArgs {
    /// An HTTP check: GET this URL (http://) every --check-interval; a 2xx answer within
    /// --check-timeout passes, anything else (or no answer) fails.
    #[arg(long, value_name = "URL", conflicts_with_all = ["check_tcp", "check_ttl"])]
    pub(crate) check_http: Option<String>,
    /// A TCP check: connect to HOST:PORT every --check-interval; a completed connect within
    /// --check-timeout passes.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "check_ttl")]
    pub(crate) check_tcp: Option<String>,
    /// A TTL check: the service reports heartbeats (PUT /v1/services/NAME/pass, or /fail,
    /// with an optional note as the body); no heartbeat within this time fails.
    #[arg(long, value_name = "DURATION")]
    pub(crate) check_ttl: Option<String>,
    /// Time between two HTTP or TCP checks (default 10s; 100ms to 24h).
    #[arg(long, value_name = "DURATION")]
    pub(crate) check_interval: Option<String>,
    /// How long one HTTP or TCP check may take, below the interval (default half the
    /// interval, at most 5s).
    #[arg(long, value_name = "DURATION")]
    pub(crate) check_timeout: Option<String>,
    /// Passes in a row before a critical check turns passing (default 1; 1 to 100).
    #[arg(long, value_name = "N")]
    pub(crate) check_success_before_passing: Option<u32>,
    /// Failures in a row before a passing check turns critical (default 1; 1 to 100).
    #[arg(long, value_name = "N")]
    pub(crate) check_failures_before_critical: Option<u32>,
}

/// A service name and the agent.
#[derive(Debug, Args)]
pub(crate) struct NameArgs {
    /// The service name.
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

/// `themis discover`.
#[derive(Debug, Args)]
pub(crate) struct DiscoverArgs {
    /// The service name.
    pub(crate) name: String,
    /// Print the agent's JSON answer as it is.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

/// `themis call`.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The service name.
    pub(crate) name: String,
    /// The request body; without it (and without --data-file) stdin is read when it is not a
    /// terminal.
    #[arg(conflicts_with = "data_file")]
    pub(crate) data: Option<String>,
    /// Read the request body from this file ("-" for stdin).
    #[arg(long)]
    pub(crate) data_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

/// `themis members`.
#[derive(Debug, Args)]
pub(crate) struct MembersArgs {
    /// Print the agent's JSON answer as it is.
    #[arg(long)]
    pub(crate) json: bool,
    /// Most members to walk (besides the local node).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub(crate) max: u64,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

/// `themis check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Print the agent's JSON answer as it is.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

/// `themis status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print the agent's JSON answer as it is.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

/// Parses `HOST:PORT` for a socket to bind (names resolved, first address taken).
pub(crate) async fn bind_addr(what: &'static str, s: &str) -> Result<SocketAddr, Error> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let mut addrs = tokio::net::lookup_host(s).await.map_err(|e| Error::Usage {
        what,
        reason: format!("'{s}' is not HOST:PORT ({e})"),
    })?;
    addrs.next().ok_or_else(|| Error::Usage {
        what,
        reason: format!("'{s}' resolves to no address"),
    })
}

/// Runs the parsed command (a node with its resolved settings).
pub(crate) async fn run(
    cli: Cli,
    settings: Option<crate::config::NodeSettings>,
) -> Result<(), Error> {
    match cli.command {
        Command::Keygen(a) => crate::keys::keygen(&a.out, a.force),
        Command::Id(a) => crate::keys::id(&a.key, &a.net, a.admission_key.as_deref()),
        Command::Admission(AdmissionCommand::Keygen(a)) => {
            crate::admission::keygen(&a.out, a.force)
        }
        Command::Admission(AdmissionCommand::Issue(a)) => {
            crate::admission::issue(&a.key, &a.net, &a.node_id, a.valid, &a.out, a.force)
        }
        Command::Key(KeyCommand::Rotate(a)) => {
            crate::keys::rotate(&a.key, &a.out, &a.net, a.grace, a.force)
        }
        Command::Owner(OwnerCommand::New(a)) => {
            crate::owner::new_owner(&a.out, a.force, a.label.as_deref())
        }
        Command::Delegate(a) => crate::owner::delegate(
            &a.owner_key,
            &a.net,
            &a.name,
            &a.provider,
            a.expires,
            &a.out,
            a.force,
        ),
        Command::Node(_) => match settings {
            Some(s) => crate::node::run(s).await,
            None => Ok(()),
        },
        Command::Cluster(a) => crate::cluster::run(a).await,
        Command::Register(a) => crate::client::register(a).await,
        Command::Deregister(a) => crate::client::deregister(a).await,
        Command::Discover(a) => crate::client::discover(a).await,
        Command::Call(a) => crate::client::call(a, cli.verbose).await,
        Command::Status(a) => crate::client::status(a).await,
        Command::Members(a) => crate::client::members(a).await,
        Command::Check(a) => crate::client::check(a).await,
        Command::Echo(a) => crate::echo::run(a).await,
        Command::Demo(a) => Ok(crate::demo::run(a).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn the_help_of_register_states_the_record_limits() {
        use themis_mesh::dht::{MAX_TAG_LEN, MAX_TAGS};
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let help = cmd
            .find_subcommand_mut("register")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(
            help.contains(&format!(
                "at most {MAX_TAGS} tags of at most {MAX_TAG_LEN} bytes"
            )),
            "{help}"
        );
        assert!(help.contains("0 to 65535"), "{help}");
    }
}
