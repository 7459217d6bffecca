//! The host's side: `xtask node-host` binds its slice of the ring's nodes on a current-thread
//! runtime, prints their contacts, then runs the commands it reads on standard input, each as
//! its own task, and writes each reply on standard output as it completes.

use std::sync::Arc;

use themis_dht::{DhtNode, ServiceSpec};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{Semaphore, mpsc};

use super::wire::{self, Command, HostMetrics, Reply, Request};
use crate::workloads::dht::{Ring, store_outcome};
use crate::{Error, Mode, machine};

/// Commands a host runs at once; beyond, it stops reading its input until one completes (the
/// bench keeps 64 finds in flight in all).
const MAX_IN_FLIGHT: usize = 1024;

/// The arguments of `xtask node-host`, which the bench passes when it starts a host.
#[derive(Clone, Debug, clap::Args)]
pub struct NodeHostArgs {
    /// `secure` or `insecure`.
    #[arg(long, value_parser = parse_mode)]
    pub mode: Mode,
    /// The ring's seed (node identities derive from it and the node's index).
    #[arg(long)]
    pub seed: u64,
    /// Nodes in the whole ring (sets the transport and maintenance periods as in-process).
    #[arg(long)]
    pub total: usize,
    /// Index of this host's first node.
    #[arg(long)]
    pub first: usize,
    /// Nodes this host holds.
    #[arg(long)]
    pub count: usize,
    /// Provider records each node may hold.
    #[arg(long)]
    pub records: usize,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "secure" => Ok(Mode::Secure),
        "insecure" => Ok(Mode::Insecure),
        _ => Err(format!("{s:?}: expected secure or insecure")),
    }
}

/// Runs a node host until its input ends or it is told to shut down.
pub fn node_host(args: &NodeHostArgs) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(serve(args))
}

fn host_err(args: &NodeHostArgs, reason: impl ToString) -> Error {
    crate::workloads::werr("node-host", args.mode, reason)
}

async fn serve(args: &NodeHostArgs) -> Result<(), Error> {
    let mut ring = Ring::for_scaling(args.mode, args.seed, args.total, args.records)
        .map_err(|e| host_err(args, e))?;
    // The same identities as the in-process ring's nodes `first..first + count`.
    ring.made = args.first as u64;
    for _ in 0..args.count {
        let node = ring.make().await.map_err(|e| host_err(args, e))?;
        ring.nodes.push(node);
    }
    let nodes = Arc::new(ring.nodes.clone());
    let mut stdout = tokio::io::stdout();
    let contacts: Vec<_> = nodes.iter().map(DhtNode::contact).collect();
    let ready = wire::encode_ready(&contacts) + "\n";
    let io = |e: std::io::Error| host_err(args, format!("standard output: {e}"));
    stdout.write_all(ready.as_bytes()).await.map_err(io)?;
    stdout.flush().await.map_err(io)?;

    let (replies, mut to_write) = mpsc::channel::<Reply>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        // One write per reply, one flush per batch of replies ready together.
        while let Some(r) = to_write.recv().await {
            let mut batch = r.encode() + "\n";
            while let Ok(r) = to_write.try_recv() {
                batch.push_str(&r.encode());
                batch.push('\n');
            }
            if stdout.write_all(batch.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = args.first;
    while let Ok(Some(line)) = lines.next_line().await {
        let request = match Request::parse(&line) {
            Ok(r) => r,
            Err((Some(tag), why)) => {
                let _ = replies
                    .send(Reply {
                        tag,
                        result: Err(why),
                    })
                    .await;
                continue;
            }
            // Without a tag nobody waits for the answer: say so where the operator sees it.
            Err((None, why)) => {
                eprintln!("node-host: ignored input: {why}");
                continue;
            }
        };
        if request.command == Command::Shutdown {
            ring.shutdown().await;
            let _ = replies
                .send(Reply {
                    tag: request.tag,
                    result: Ok(Vec::new()),
                })
                .await;
            break;
        }
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let (nodes, replies) = (Arc::clone(&nodes), replies.clone());
        tokio::spawn(async move {
            let result = run(&nodes, first, request.command).await;
            let _ = replies
                .send(Reply {
                    tag: request.tag,
                    result,
                })
                .await;
            drop(permit);
        });
    }
    drop(replies);
    // The writer ends once every reply sent so far is written.
    let _ = writer.await;
    Ok(())
}

/// Runs one command on the host's nodes (`first` is the ring index of `nodes[0]`).
async fn run(nodes: &[DhtNode], first: usize, command: Command) -> Result<Vec<String>, String> {
    let node = |i: usize| {
        i.checked_sub(first)
            .and_then(|k| nodes.get(k))
            .ok_or_else(|| format!("node {i} is not on this host"))
    };
    match command {
        Command::Join { node: i, contact } => node(i)?
            .join([contact])
            .await
            .map(|_| Vec::new())
            .map_err(|e| format!("join failed: {e}")),
        Command::Find { node: i, target } => node(i)?
            .find(target)
            .await
            .map(|f| vec![f.hops.to_string()])
            .map_err(|e| format!("find failed: {e}")),
        Command::Store { node: i, name } => {
            store_outcome(node(i)?.register(ServiceSpec::new(name), None).await)
                .map(|()| Vec::new())
        }
        Command::Successors { node: i } => {
            let st = node(i)?.status().await.map_err(|e| e.to_string())?;
            Ok(std::iter::once(st.id)
                .chain(st.successors.iter().map(|p| p.id))
                .map(|id| id.to_string())
                .collect())
        }
        Command::Metrics => {
            let mut m = HostMetrics::default();
            for n in nodes {
                let nm = n.metrics().await.map_err(|e| e.to_string())?;
                m.handshakes += nm.endpoint.handshakes_initiated_ok;
                m.dials += nm.endpoint.transport.connections_dialed;
                m.requests += nm.requests_sent;
            }
            m.peak_rss_kib = machine::peak_rss_kib();
            m.open_fds = machine::open_fds();
            Ok(m.fields())
        }
        Command::ResetPeakRss => {
            if machine::reset_peak_rss() {
                Ok(Vec::new())
            } else {
                Err("the kernel does not let this process reset its peak RSS".into())
            }
        }
        // Handled by the input loop.
        Command::Shutdown => Ok(Vec::new()),
    }
}
