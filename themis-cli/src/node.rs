//! `themis node`: one mesh node and its agent API, until Ctrl-C / SIGTERM (then it leaves the
//! ring gracefully, handing its stored records to its successor, paper §6.1).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use themis_mesh::{Contact, IdentityKeypair, MeshConfig, MeshNode, Mode, NetworkId, NodeId};
use tokio::net::TcpListener;

use crate::agent::{AgentConfig, AppState};
use crate::cli::{DEFAULT_API, bind_addr};
use crate::error::Error;

/// How long a graceful shutdown (leave, hand-over) may take before the process exits anyway.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings shared by `node` and `cluster`.
#[derive(Debug, Clone, Args)]
pub(crate) struct MeshArgs {
    /// The network name (1-64 bytes of UTF-8); node ids are H(public key, network).
    #[arg(long)]
    pub(crate) net: String,
    /// Replication factor k: every provider record is stored on k + 1 replicas (default 2).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=8))]
    pub(crate) replicas: Option<u8>,
    /// Plaintext channels (measurement and trusted networks only; every node must agree).
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Short DHT periods (stabilization, re-store, record TTL): for tests and demos on one
    /// machine.
    #[arg(long)]
    pub(crate) fast: bool,
    /// Largest request body the agent accepts and largest upstream answer, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) max_body: usize,
    /// Seconds the sidecar waits for an upstream's answer.
    #[arg(long, default_value_t = 4)]
    pub(crate) upstream_timeout: u64,
}

impl MeshArgs {
    pub(crate) fn mode(&self) -> Mode {
        if self.insecure {
            Mode::Insecure
        } else {
            Mode::Secure
        }
    }

    pub(crate) fn config(&self, listen: SocketAddr, bootstrap: Vec<Contact>) -> MeshConfig {
        let mut c = if self.fast {
            MeshConfig::fast(listen)
        } else {
            MeshConfig::new(listen)
        };
        c.bootstrap = bootstrap;
        c.k = self.replicas;
        c.mode = self.mode();
        c
    }

    pub(crate) fn agent(&self) -> AgentConfig {
        AgentConfig {
            max_body: self.max_body,
            upstream_timeout: Duration::from_secs(self.upstream_timeout.max(1)),
        }
    }
}

/// `themis node`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    #[command(flatten)]
    pub(crate) mesh: MeshArgs,
    /// The identity key file (from `themis keygen`); without it, a fresh identity for this run.
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
    /// The address the mesh endpoint listens on (TCP), e.g. 0.0.0.0:7946 or 127.0.0.1:0.
    #[arg(long)]
    pub(crate) listen: String,
    /// A node to join through: HOST:PORT or NODE_ID_HEX@HOST:PORT (then its identity is
    /// checked). Repeatable; tried in order. None: start a new ring.
    #[arg(long)]
    pub(crate) bootstrap: Vec<String>,
    /// The address the agent's HTTP API listens on (keep it on the loopback: it is not
    /// authenticated).
    #[arg(long, default_value = DEFAULT_API)]
    pub(crate) api: String,
}

/// Parses a bootstrap address: `HOST:PORT` or `NODE_ID_HEX@HOST:PORT`; HOST may be a name.
pub(crate) async fn parse_bootstrap(s: &str) -> Result<Contact, Error> {
    let bad = |reason: String| Error::BadBootstrap {
        input: s.chars().take(200).collect(),
        reason,
    };
    let (id, hostport) = match s.trim().split_once('@') {
        Some((id, hp)) => {
            let id: NodeId = id.parse().map_err(|e| bad(format!("{e}")))?;
            (Some(id), hp)
        }
        None => (None, s.trim()),
    };
    let addr = match hostport.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(hostport)
            .await
            .map_err(|e| bad(format!("cannot resolve '{hostport}': {e}")))?
            .next()
            .ok_or_else(|| bad(format!("'{hostport}' resolves to no address")))?,
    };
    Ok(Contact { addr, id })
}

/// How long the reachability check of the bootstrap addresses waits for a TCP connection.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// Fails fast when no bootstrap address accepts a TCP connection at all (a join through dead
/// addresses would otherwise wait for every handshake retry to time out). The connection is
/// closed at once; the node's transport drops such a connection as a failed hello.
async fn check_reachable(bootstrap: &[Contact], network: &NetworkId) -> Result<(), Error> {
    if bootstrap.is_empty() {
        return Ok(());
    }
    let mut reasons = Vec::new();
    for c in bootstrap {
        match tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect(c.addr)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => reasons.push(format!("{}: {e}", c.addr)),
            Err(_) => reasons.push(format!("{}: no answer within {REACH_TIMEOUT:?}", c.addr)),
        }
    }
    Err(Error::Join {
        bootstrap: bootstrap
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        network: network.to_string(),
        reason: format!("unreachable ({})", reasons.join("; ")),
    })
}

/// Starts a mesh node, mapping failures to operator messages.
pub(crate) async fn start(
    network: &NetworkId,
    identity: Arc<IdentityKeypair>,
    config: MeshConfig,
) -> Result<MeshNode, Error> {
    let bootstrap = config
        .bootstrap
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    MeshNode::start(network.clone(), identity, config)
        .await
        .map_err(|e| match e {
            themis_mesh::Error::Network(detail) => Error::Listen { detail },
            themis_mesh::Error::Dht(m) if m.starts_with("join failed") => Error::Join {
                bootstrap,
                network: network.to_string(),
                reason: m,
            },
            other => Error::Mesh(other),
        })
}

/// Binds the agent API's listener.
pub(crate) async fn bind_api(api: &str) -> Result<TcpListener, Error> {
    let addr = bind_addr("agent API address", api).await?;
    TcpListener::bind(addr).await.map_err(|e| Error::Listen {
        detail: format!(
            "cannot listen on {addr} for the agent API: {e} (is another `themis node` using it? pick another address with --api)"
        ),
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Serves the agent API for `node` until `stop` resolves.
pub(crate) fn serve_agent(
    listener: TcpListener,
    state: AppState,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let app = crate::agent::router(Arc::new(state));
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "the agent API stopped");
        }
    })
}

/// Prints the line tests and scripts parse: `ready id=... contact=... api=... network=...`.
pub(crate) fn print_ready(node: &MeshNode, api: SocketAddr, network: &str, extra: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "ready id={} contact={} api=http://{api} network={network}{extra}",
        node.id(),
        node.contact(),
    );
    let _ = out.flush();
}

/// `themis node`.
pub(crate) async fn run(a: NodeArgs) -> Result<(), Error> {
    let network = crate::keys::network(&a.mesh.net)?;
    let identity = crate::keys::load_or_generate(a.key.as_deref())?;
    let listen = bind_addr("listen address", &a.listen).await?;
    let mut bootstrap = Vec::with_capacity(a.bootstrap.len());
    for b in &a.bootstrap {
        bootstrap.push(parse_bootstrap(b).await?);
    }
    check_reachable(&bootstrap, &network).await?;
    // The API first: a taken API port fails before this node joins anything.
    let api = bind_api(&a.api).await?;
    let api_addr = api.local_addr().map_err(|e| Error::Listen {
        detail: format!("the agent API socket has no address: {e}"),
    })?;
    if !api_addr.ip().is_loopback() {
        tracing::warn!(
            api = %api_addr,
            "the agent API is not authenticated: anyone who reaches it can register and call services as this node; keep it on the loopback"
        );
    }
    let node = start(&network, identity, a.mesh.config(listen, bootstrap)).await?;
    let state = AppState::new(node.clone(), &a.mesh.net, a.mesh.mode(), a.mesh.agent());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let server = serve_agent(api, state, stop_rx);
    print_ready(&node, api_addr, &a.mesh.net, "");
    tracing::info!(id = %node.id(), api = %api_addr, "node running; Ctrl-C to leave");
    shutdown_signal().await;
    eprintln!("leaving the ring...");
    let _ = stop_tx.send(());
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, node.shutdown())
        .await
        .is_err()
    {
        eprintln!("leaving took longer than {SHUTDOWN_TIMEOUT:?}; stopping anyway");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}
