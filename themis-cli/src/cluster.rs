//! `themis cluster`: N mesh nodes in this process on consecutive ports (the paper's test
//! harness, §9), joined one after the other through node 0 with a progress bar; the agent API
//! is served for node 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use themis_mesh::{Contact, IdentityKeypair, MeshConfig, MeshNode, Mode};

use crate::agent::{AgentConfig, ApiToken, AppState};
use crate::cli::{DEFAULT_API, bind_addr};
use crate::error::Error;
use crate::node::{bind_api, check_api_exposure, print_ready, serve_agent, shutdown_signal, start};

/// Most nodes one `themis cluster` runs.
const MAX_NODES: usize = 2000;

/// The mesh settings of the cluster's nodes.
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
    /// Secure or insecure.
    pub(crate) fn mode(&self) -> Mode {
        if self.insecure {
            Mode::Insecure
        } else {
            Mode::Secure
        }
    }

    /// The mesh settings of one node listening on `listen`, joining through `bootstrap`.
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

    /// The agent's settings.
    pub(crate) fn agent(&self) -> AgentConfig {
        AgentConfig {
            max_body: self.max_body,
            upstream_timeout: Duration::from_secs(self.upstream_timeout.max(1)),
            ..AgentConfig::default()
        }
    }
}

/// `themis cluster`.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// How many nodes (1 to 2000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_NODES as u64))]
    pub(crate) nodes: u64,
    #[command(flatten)]
    pub(crate) mesh: MeshArgs,
    /// The first node's address; node i listens on PORT + i.
    #[arg(long)]
    pub(crate) listen_base: String,
    /// The address of the agent API, served for node 0.
    #[arg(long, default_value = DEFAULT_API)]
    pub(crate) api: String,
    /// A file holding the token the agent API requires (`Authorization: Bearer`); required
    /// when --api is not on the loopback.
    #[arg(long, env = "THEMIS_API_TOKEN_FILE", value_name = "FILE")]
    pub(crate) api_token_file: Option<std::path::PathBuf>,
    /// Seconds to wait for the ring to be consistent before serving (default: 30 s plus
    /// 0.15 s per node); if it is not consistent by then, the command fails.
    #[arg(long, value_name = "SECS")]
    pub(crate) settle_timeout: Option<u64>,
}

impl ClusterArgs {
    /// How long to wait for a consistent ring: given, or 30 s + 150 ms per node (stabilization
    /// runs in rounds, and the nodes of one process share its cores).
    fn settle_timeout(&self) -> Duration {
        self.settle_timeout.map_or_else(
            || {
                Duration::from_secs(30)
                    + Duration::from_millis(150) * u32::try_from(self.nodes).unwrap_or(u32::MAX)
            },
            Duration::from_secs,
        )
    }
}

/// `themis cluster`.
pub(crate) async fn run(a: ClusterArgs) -> Result<(), Error> {
    let n = usize::try_from(a.nodes).unwrap_or(MAX_NODES).min(MAX_NODES);
    let network = crate::keys::network(&a.mesh.net)?;
    let base = bind_addr("--listen-base", &a.listen_base).await?;
    let last = usize::from(base.port())
        .checked_add(n - 1)
        .filter(|p| *p <= usize::from(u16::MAX) && base.port() != 0);
    if last.is_none() {
        return Err(Error::Usage {
            what: "--listen-base",
            reason: format!(
                "the ports {}..{} of {} nodes must be fixed (not 0) and at most 65535",
                base.port(),
                usize::from(base.port()) + n - 1,
                a.nodes
            ),
        });
    }
    let token = a
        .api_token_file
        .as_deref()
        .map(ApiToken::read_or_create)
        .transpose()?
        .map(Arc::new);
    let api = bind_api(&a.api).await?;
    let api_addr = api.local_addr().map_err(|e| Error::Listen {
        detail: format!("the agent API socket has no address: {e}"),
    })?;
    check_api_exposure(api_addr, token.as_deref())?;

    let bar = ProgressBar::new(a.nodes);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} nodes joined ({elapsed}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut nodes: Vec<MeshNode> = Vec::with_capacity(n);
    let joined = async {
        for i in 0..n {
            let port = u16::try_from(usize::from(base.port()) + i).unwrap_or(u16::MAX);
            let listen = SocketAddr::new(base.ip(), port);
            // Node 0 starts the ring; the others join through node 0 (then the previous node).
            let mut bootstrap = Vec::new();
            if let Some(first) = nodes.first() {
                bootstrap.push(first.contact());
            }
            if let Some(prev) = nodes.last().filter(|_| nodes.len() > 1) {
                bootstrap.push(prev.contact());
            }
            let identity = Arc::new(IdentityKeypair::generate());
            let node = start(&network, identity, a.mesh.config(listen, bootstrap)).await?;
            bar.set_message(format!("node {i} at {listen}"));
            nodes.push(node);
            bar.inc(1);
        }
        Ok::<(), Error>(())
    };
    let outcome = tokio::select! {
        r = joined => Some(r),
        () = shutdown_signal() => None,
    };
    bar.finish_and_clear();
    match outcome {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            stop_all(&nodes).await;
            return Err(e);
        }
        None => {
            eprintln!("interrupted while joining; stopping {} nodes", nodes.len());
            stop_all(&nodes).await;
            return Ok(());
        }
    }
    let Some(first) = nodes.first().cloned() else {
        return Ok(());
    };
    let settled = tokio::select! {
        r = settle(&nodes, a.settle_timeout()) => r,
        () = shutdown_signal() => {
            stop_all(&nodes).await;
            return Ok(());
        }
    };
    if let Err(e) = settled {
        stop_all(&nodes).await;
        return Err(e);
    }
    eprintln!(
        "{} nodes joined network '{}' in {:.1?} on {}..{}; the agent API at http://{api_addr} is node 0's ({}). Ctrl-C to stop.",
        nodes.len(),
        a.mesh.net,
        started.elapsed(),
        base,
        base.port() as usize + n - 1,
        first.id(),
    );
    let state = std::sync::Arc::new(AppState::new(
        first.clone(),
        &a.mesh.net,
        a.mesh.mode(),
        AgentConfig {
            token,
            ..a.mesh.agent()
        },
    ));
    AppState::mark_ready(&state);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let server = serve_agent(api, state, stop_rx);
    print_ready(
        &first,
        api_addr,
        &a.mesh.net,
        &format!(" nodes={}", nodes.len()),
    );
    shutdown_signal().await;
    eprintln!("stopping {} nodes...", nodes.len());
    let _ = stop_tx.send(());
    stop_all(&nodes).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}

/// Waits until the ring of `nodes` is consistent, at most `limit`: an error naming how many
/// nodes are still misplaced when it is not.
async fn settle(nodes: &[MeshNode], limit: Duration) -> Result<(), Error> {
    let t = Instant::now();
    match tokio::time::timeout(limit, wait_consistent(nodes)).await {
        Ok(()) => {
            tracing::info!(took = ?t.elapsed(), "ring consistent");
            Ok(())
        }
        Err(_) => Err(Error::NotReady(format!(
            "the ring of {} nodes is not consistent after {limit:?}: {} nodes still have a wrong successor or predecessor; not serving a ring that is still forming (wait longer with --settle-timeout SECS)",
            nodes.len(),
            misplaced(nodes).await
        ))),
    }
}

/// How many nodes do not have the next node id on the ring as first successor and the
/// previous one as predecessor (paper §6: the ring the stabilization protocol converges to).
async fn misplaced(nodes: &[MeshNode]) -> usize {
    let mut ids: Vec<_> = nodes.iter().map(MeshNode::id).collect();
    ids.sort();
    if ids.len() < 2 {
        return 0;
    }
    let mut wrong = 0;
    for n in nodes {
        let Ok(st) = n.status().await else {
            wrong += 1;
            continue;
        };
        let i = ids.binary_search(&n.id()).unwrap_or(0);
        let next = ids.get((i + 1) % ids.len()).copied();
        let prev = ids.get((i + ids.len() - 1) % ids.len()).copied();
        let succ = st.ring.successors.first().map(|p| p.id);
        let pred = st.ring.predecessor.map(|p| p.id);
        if succ != next || pred != prev {
            wrong += 1;
        }
    }
    wrong
}

/// Waits until no node is [`misplaced`].
async fn wait_consistent(nodes: &[MeshNode]) {
    while misplaced(nodes).await > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops every node: one after the other, so that each leave finds a live successor to hand
/// its records to (leaving all at once makes every hand-over wait for a leaving neighbour);
/// nodes still running after 15 s are stopped at once.
async fn stop_all(nodes: &[MeshNode]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for (i, n) in nodes.iter().enumerate() {
        if tokio::time::timeout_at(deadline, n.shutdown())
            .await
            .is_err()
        {
            eprintln!(
                "leaving took longer than 15 s; stopping the other {} nodes at once",
                nodes.len() - i
            );
            for rest in nodes.get(i..).unwrap_or_default() {
                rest.crash().await;
            }
            return;
        }
    }
}
