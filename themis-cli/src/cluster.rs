//! `themis cluster`: N mesh nodes in this process on consecutive ports (the paper's test
//! harness, §9), joined one after the other through node 0 with a progress bar; the agent API
//! is served for node 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use themis_mesh::{IdentityKeypair, MeshNode};

use crate::agent::AppState;
use crate::cli::{DEFAULT_API, bind_addr};
use crate::error::Error;
use crate::node::{MeshArgs, bind_api, print_ready, serve_agent, shutdown_signal, start};

/// Most nodes one `themis cluster` runs.
const MAX_NODES: usize = 2000;

/// `themis cluster`.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// How many nodes (1 to 2000).
    #[arg(long)]
    pub(crate) nodes: usize,
    #[command(flatten)]
    pub(crate) mesh: MeshArgs,
    /// The first node's address; node i listens on PORT + i.
    #[arg(long)]
    pub(crate) listen_base: String,
    /// The address of the agent API, served for node 0.
    #[arg(long, default_value = DEFAULT_API)]
    pub(crate) api: String,
}

/// `themis cluster`.
pub(crate) async fn run(a: ClusterArgs) -> Result<(), Error> {
    if a.nodes == 0 || a.nodes > MAX_NODES {
        return Err(Error::Usage {
            what: "--nodes",
            reason: format!("must be 1 to {MAX_NODES}, got {}", a.nodes),
        });
    }
    let network = crate::keys::network(&a.mesh.net)?;
    let base = bind_addr("--listen-base", &a.listen_base).await?;
    let last = usize::from(base.port())
        .checked_add(a.nodes - 1)
        .filter(|p| *p <= usize::from(u16::MAX) && base.port() != 0);
    if last.is_none() {
        return Err(Error::Usage {
            what: "--listen-base",
            reason: format!(
                "the ports {}..{} of {} nodes must be fixed (not 0) and at most 65535",
                base.port(),
                usize::from(base.port()) + a.nodes - 1,
                a.nodes
            ),
        });
    }
    let api = bind_api(&a.api).await?;
    let api_addr = api.local_addr().map_err(|e| Error::Listen {
        detail: format!("the agent API socket has no address: {e}"),
    })?;

    let bar = ProgressBar::new(a.nodes as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} nodes joined ({elapsed}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut nodes: Vec<MeshNode> = Vec::with_capacity(a.nodes);
    let joined = async {
        for i in 0..a.nodes {
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
    let settle = async {
        let t = Instant::now();
        if tokio::time::timeout(SETTLE_TIMEOUT, wait_consistent(&nodes))
            .await
            .is_err()
        {
            eprintln!(
                "the ring is not consistent yet after {SETTLE_TIMEOUT:?} (it keeps stabilizing in the background)"
            );
        } else {
            tracing::info!(took = ?t.elapsed(), "ring consistent");
        }
    };
    tokio::select! {
        () = settle => {}
        () = shutdown_signal() => {
            stop_all(&nodes).await;
            return Ok(());
        }
    }
    eprintln!(
        "{} nodes joined network '{}' in {:.1?} on {}..{}; the agent API at http://{api_addr} is node 0's ({}). Ctrl-C to stop.",
        nodes.len(),
        a.mesh.net,
        started.elapsed(),
        base,
        base.port() as usize + a.nodes - 1,
        first.id(),
    );
    let state = AppState::new(first.clone(), &a.mesh.net, a.mesh.mode(), a.mesh.agent());
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

/// How long the cluster waits for its ring to be consistent before serving.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until every node's first successor is the next node id on the ring and its
/// predecessor the previous one (paper §6: the ring the stabilization protocol converges to).
async fn wait_consistent(nodes: &[MeshNode]) {
    let mut ids: Vec<_> = nodes.iter().map(MeshNode::id).collect();
    ids.sort();
    loop {
        let mut ok = true;
        for n in nodes {
            let Ok(st) = n.status().await else {
                ok = false;
                break;
            };
            let i = ids.binary_search(&n.id()).unwrap_or(0);
            let next = ids.get((i + 1) % ids.len()).copied();
            let prev = ids.get((i + ids.len() - 1) % ids.len()).copied();
            let succ = st.ring.successors.first().map(|p| p.id);
            let pred = st.ring.predecessor.map(|p| p.id);
            if ids.len() > 1 && (succ != next || pred != prev) {
                ok = false;
                break;
            }
        }
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
