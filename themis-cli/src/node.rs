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
    /// The address other nodes reach this one at: HOST or HOST:PORT (no port: the listening
    /// port). It goes into this node's provider records and ring answers. Default: the
    /// listening address; when that is 0.0.0.0 or ::, the address of the interface that routes
    /// to the first bootstrap node (or to the default route), printed at start.
    #[arg(long)]
    pub(crate) advertise: Option<String>,
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

/// Parses `--advertise`: `HOST` or `HOST:PORT`, HOST an IP (IPv6 in brackets with a port) or
/// a name, resolved here. No port: port 0, which the node fills with its listening port.
pub(crate) async fn parse_advertise(s: &str) -> Result<SocketAddr, Error> {
    let bad = |reason: String| Error::Usage {
        what: "--advertise address",
        reason,
    };
    let t = s.trim();
    let addr = if let Ok(a) = t.parse::<SocketAddr>() {
        a
    } else if let Ok(ip) = t.trim_start_matches('[').trim_end_matches(']').parse() {
        SocketAddr::new(ip, 0)
    } else {
        let has_port = t
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        let found: Vec<SocketAddr> = if has_port {
            tokio::net::lookup_host(t).await.map(Iterator::collect)
        } else {
            tokio::net::lookup_host((t, 0)).await.map(Iterator::collect)
        }
        .map_err(|e| bad(format!("cannot resolve '{t}': {e}")))?;
        found
            .into_iter()
            .next()
            .ok_or_else(|| bad(format!("'{t}' resolves to no address")))?
    };
    if addr.ip().is_unspecified() {
        return Err(bad(format!(
            "'{t}' is {}, which other nodes cannot dial: give this host's reachable IP or name",
            addr.ip()
        )));
    }
    Ok(addr)
}

/// The address of the local interface whose route leads to `toward`. Connecting a UDP
/// socket only picks the route: no packet is sent.
fn route_source(toward: SocketAddr) -> Option<std::net::IpAddr> {
    let any: SocketAddr = if toward.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(toward).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// What the node advertises: `--advertise`, else nothing to add when it listens on a
/// specific address, else the interface address routing to the first bootstrap node (or to a
/// documentation address standing for the default route).
pub(crate) async fn advertise_for(
    listen: SocketAddr,
    advertise: Option<&str>,
    bootstrap: &[Contact],
) -> Result<Option<SocketAddr>, Error> {
    if let Some(a) = advertise {
        return parse_advertise(a).await.map(Some);
    }
    if !listen.ip().is_unspecified() {
        return Ok(None);
    }
    let toward = bootstrap.first().map(|c| c.addr).unwrap_or_else(|| {
        if listen.is_ipv4() {
            // TEST-NET-1 (RFC 5737): stands for "the default route"; nothing is sent there
            (std::net::Ipv4Addr::new(192, 0, 2, 1), 9).into()
        } else {
            // the IPv6 documentation prefix (RFC 3849)
            (std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into()
        }
    });
    let ip = route_source(toward).ok_or_else(|| Error::Usage {
        what: "--advertise address",
        reason: format!(
            "the node listens on {listen}, which other nodes cannot dial, and this host has no route to {toward} to pick an interface from: pass --advertise HOST[:PORT]"
        ),
    })?;
    tracing::info!(%ip, %toward, "advertising the address of the interface that routes to {toward}; set --advertise to choose another");
    Ok(Some(SocketAddr::new(ip, 0)))
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
            // Binding the endpoint's listener (the message names the address).
            themis_mesh::Error::Channel(e) => Error::Listen {
                detail: e.to_string(),
            },
            themis_mesh::Error::Join(e) => Error::Join {
                bootstrap,
                network: network.to_string(),
                reason: e.to_string(),
            },
            themis_mesh::Error::Dht(e) => match *e {
                themis_mesh::dht::Error::UnspecifiedAddress { bound } => Error::Usage {
                    what: "--advertise address",
                    reason: format!(
                        "this node listens on {bound}, which other nodes cannot dial: give the address they reach it at with `themis node --advertise HOST[:PORT]`"
                    ),
                },
                other => Error::Mesh(other.into()),
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
    let advertise = advertise_for(listen, a.advertise.as_deref(), &bootstrap).await?;
    let mut config = a.mesh.config(listen, bootstrap);
    config.driver.advertise = advertise;
    let node = start(&network, identity, config).await?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn advertise_takes_an_ip_a_name_with_or_without_a_port() {
        assert_eq!(parse_advertise("10.1.2.3").await.unwrap(), a("10.1.2.3:0"));
        assert_eq!(
            parse_advertise(" 10.1.2.3:7946 ").await.unwrap(),
            a("10.1.2.3:7946")
        );
        assert_eq!(parse_advertise("[::1]").await.unwrap(), a("[::1]:0"));
        assert_eq!(parse_advertise("::1").await.unwrap(), a("[::1]:0"));
        assert_eq!(parse_advertise("[::1]:80").await.unwrap(), a("[::1]:80"));
        let local = parse_advertise("localhost:7000").await.unwrap();
        assert!(local.ip().is_loopback() && local.port() == 7000, "{local}");
        let local = parse_advertise("localhost").await.unwrap();
        assert!(local.ip().is_loopback() && local.port() == 0, "{local}");
        for bad in [
            "0.0.0.0",
            "[::]:7000",
            "no-such-host.invalid",
            "1.2.3.4:99999",
        ] {
            let e = parse_advertise(bad).await.unwrap_err().to_string();
            assert!(e.contains("--advertise"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_node_on_every_interface_advertises_the_route_to_its_bootstrap() {
        let boot = Contact {
            addr: a("127.0.0.1:7000"),
            id: None,
        };
        // on a specific address: nothing to add (the node advertises what it binds)
        assert_eq!(
            advertise_for(a("127.0.0.1:0"), None, &[boot])
                .await
                .unwrap(),
            None
        );
        // on every interface: the interface that routes to the bootstrap node
        assert_eq!(
            advertise_for(a("0.0.0.0:0"), None, &[boot]).await.unwrap(),
            Some(a("127.0.0.1:0"))
        );
        // an explicit address wins
        assert_eq!(
            advertise_for(a("0.0.0.0:0"), Some("10.0.0.9:1"), &[boot])
                .await
                .unwrap(),
            Some(a("10.0.0.9:1"))
        );
    }
}
