//! `themis node`: one mesh node, its agent API and (with `--dns`) its DNS interface, until
//! Ctrl-C / SIGTERM (then it leaves the ring gracefully, handing its stored records to its
//! successor, paper §6.1).
//!
//! Start-up, in order: the settings (flags > THEMIS_* > file, [`crate::config`]), the data
//! directory and the key, the API's socket, the node (not joined yet), the DNS interface, the
//! agent; then the join ([`join`]: the bootstrap nodes are asked who they are first, so that a
//! network, identity or mode mismatch is named at once), the configured and saved services,
//! and the `ready` line. In the background: the ring is kept joined (a node alone rejoins the
//! peers it remembers; a split ring merges into the one with the lowest member), and the
//! known peers are saved in the data directory.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use themis_mesh::{Contact, IdentityKeypair, MeshConfig, MeshNode, Mode, NetworkId, NodeId};
use tokio::net::TcpListener;

use crate::agent::{AgentConfig, ApiToken, AppState, Readiness, ServerLimits};
use crate::cli::bind_addr;
use crate::config::NodeSettings;
use crate::datadir::DataDir;
use crate::error::Error;

pub(crate) mod join;

/// How long a graceful shutdown (leave, hand-over) may take before the process exits anyway.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The deepest cause of an error (the OS error under a transport's error), for messages that
/// name it once.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Starts a mesh node (without joining: the join is [`join`]'s), mapping failures to operator
/// messages.
pub(crate) async fn start(
    network: &NetworkId,
    identity: Arc<IdentityKeypair>,
    config: MeshConfig,
) -> Result<MeshNode, Error> {
    let listen = config.listen;
    let bootstrap = config
        .bootstrap
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    MeshNode::start(network.clone(), identity, config)
        .await
        .map_err(|e| match e {
            // Binding the endpoint's listener: the OS error once, and what to do.
            themis_mesh::Error::Channel(e) => Error::Listen {
                detail: format!(
                    "cannot listen on {listen} for the mesh endpoint: {} (is another `themis node` using it? pick another address with --listen)",
                    root_cause(&*e)
                ),
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
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed now, not at the first poll: a signal sent right after the ready line (which a
    // caller prints after this call) is caught instead of ending the process unannounced.
    let int = signal(SignalKind::interrupt()).ok();
    let term = signal(SignalKind::terminate()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(int) => {}
            () = wait(term) => {}
        }
    }
}

/// Serves the agent API on `state` until `stop` resolves, within the server's bounds (header
/// timeout, connection cap, requests per connection).
pub(crate) fn serve_agent(
    listener: TcpListener,
    state: Arc<AppState>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let app = crate::agent::router(state);
    tokio::spawn(crate::agent::serve(
        listener,
        app,
        ServerLimits::default(),
        async {
            let _ = stop.await;
        },
    ))
}

/// Refuses an agent API beyond the loopback without a token (before anything else starts).
pub(crate) fn check_api_exposure(addr: SocketAddr, token: Option<&ApiToken>) -> Result<(), Error> {
    match token {
        None if !addr.ip().is_loopback() => Err(Error::ApiWithoutToken { addr }),
        None => Ok(()),
        Some(t) => {
            tracing::info!(api = %addr, token_file = %t.path().display(), "the agent API requires its token");
            Ok(())
        }
    }
}

/// The address a local client dials to reach a socket bound to `bound`: the loopback of the
/// same family when it is bound to every interface.
pub(crate) fn dialable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            (std::net::Ipv4Addr::LOCALHOST, bound.port()).into()
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, bound.port()).into()
        }
        _ => bound,
    }
}

/// Prints the line tests and scripts parse: `ready id=... contact=... api=... network=...`;
/// the API address is one a local client can dial.
pub(crate) fn print_ready(node: &MeshNode, api: SocketAddr, network: &str, extra: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "ready id={} contact={} api=http://{} network={network}{extra}",
        node.id(),
        node.contact(),
        dialable(api),
    );
    let _ = out.flush();
}

/// The mesh settings of a node.
fn mesh_config(s: &NodeSettings, listen: SocketAddr) -> MeshConfig {
    let mut c = if s.fast {
        MeshConfig::fast(listen)
    } else {
        MeshConfig::new(listen)
    };
    c.k = s.replicas;
    if let Some(ttl) = s.record_ttl {
        // paper §6.1: owners re-store before the values are dropped; t/3 as by default
        c.record_ttl = ttl;
        c.driver.dht.restore_period = ttl / 3;
    }
    // PROTOCOL.md §6.14: how long lost peers are probed to merge the ring after a partition
    match s.lost_peer_hours {
        Some(0) => c.driver.dht.unify_table_len = 0,
        Some(h) => c.driver.dht.unify_retention = Duration::from_secs(h * 3600),
        None => {}
    }
    c.mode = if s.insecure {
        Mode::Insecure
    } else {
        Mode::Secure
    };
    c
}

/// The key of a node: `--key`, else the data directory's, else a fresh one; with the file it
/// came from.
fn identity(
    s: &NodeSettings,
    data: Option<&DataDir>,
) -> Result<(Arc<IdentityKeypair>, Option<PathBuf>), Error> {
    match (&s.key, data) {
        (Some(k), _) => Ok((crate::keys::load(k)?, Some(k.clone()))),
        (None, Some(d)) => Ok((d.load_or_create_key()?, Some(d.key_path()))),
        (None, None) => Ok((crate::keys::load_or_generate(None)?, None)),
    }
}

/// A started node with its agent and DNS interface, before it joins.
struct Running {
    node: MeshNode,
    state: Arc<AppState>,
    api_addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    stop_api: tokio::sync::oneshot::Sender<()>,
    dns: Option<crate::dns::DnsServer>,
}

/// Binds the API, starts the node (not joined) and the DNS interface, serves the agent.
async fn start_all(
    s: &NodeSettings,
    network: &NetworkId,
    data: Option<&DataDir>,
) -> Result<Running, Error> {
    let (identity, key_file) = identity(s, data)?;
    let succession = crate::keys::load_succession(
        s.succession.as_deref(),
        key_file.as_deref(),
        &identity,
        network,
    )?;
    // Closed network (PROTOCOL.md §2.10): no start without a valid certificate for our id.
    let admission = crate::admission::load(network, s.admission_cert.as_ref(), &identity)?;
    if admission.is_some() && s.insecure {
        return Err(Error::Usage {
            what: "--admission-key",
            reason: "a closed network admits peers in the handshake, which insecure mode does not run: drop --insecure".into(),
        });
    }
    if s.insecure {
        tracing::warn!(
            "insecure mode: channels are plaintext, peers are not authenticated and anyone on the path can read and forge calls; for measurements and trusted networks only"
        );
    }
    let listen = bind_addr("listen address", &s.listen).await?;
    let token = s
        .api_token_file
        .as_deref()
        .map(ApiToken::read_or_create)
        .transpose()?
        .map(Arc::new);
    // The API first: a taken API port, or an exposed API without a token, fails before this
    // node starts anything.
    let api = bind_api(&s.api).await?;
    let api_addr = api.local_addr().map_err(|e| Error::Listen {
        detail: format!("the agent API socket has no address: {e}"),
    })?;
    check_api_exposure(api_addr, token.as_deref())?;
    let mut toward = Vec::new();
    if let Some(Ok(c)) = first_bootstrap(&s.bootstrap).await {
        toward.push(c);
    }
    let mut config = mesh_config(s, listen);
    config.succession = succession;
    config.driver.endpoint.handshake.admission = admission;
    config.driver.advertise = advertise_for(listen, s.advertise.as_deref(), &toward).await?;
    let node = start(network, identity, config).await?;
    let dns = match &s.dns {
        Some(addr) => Some(crate::dns::DnsServer::start(addr, node.clone()).await?),
        None => None,
    };
    let agent = AgentConfig {
        max_body: s.max_body,
        upstream_timeout: s.upstream_timeout,
        upstream_concurrency: s.upstream_concurrency,
        key_file,
        dns: dns.as_ref().map(crate::dns::DnsServer::local_addr),
        data_dir: data.cloned(),
        token,
        ..AgentConfig::default()
    };
    let mode = mesh_config(s, listen).mode;
    let state = Arc::new(AppState::new(node.clone(), &s.net, mode, agent));
    let (stop_api, stop_rx) = tokio::sync::oneshot::channel();
    let server = serve_agent(api, state.clone(), stop_rx);
    Ok(Running {
        node,
        state,
        api_addr,
        server,
        stop_api,
        dns,
    })
}

/// The first bootstrap address, resolved if it resolves now (to pick the interface to
/// advertise).
async fn first_bootstrap(bootstrap: &[String]) -> Option<Result<Contact, Error>> {
    let first = bootstrap.first()?;
    Some(parse_bootstrap(first).await)
}

/// Registers the services of the configuration file and of the data directory (the file's
/// definition wins for a name both have). A definition the agent refuses as invalid stops the
/// start (a mistake in the file); other failures are logged and the node runs on.
async fn register_configured(
    state: &Arc<AppState>,
    s: &NodeSettings,
    data: Option<&DataDir>,
) -> Result<(), Error> {
    let mut defs = s.services.clone();
    if let Some(d) = data {
        for saved in d.load_services()? {
            if !defs.iter().any(|c| c.name == saved.name) {
                defs.push(saved);
            }
        }
    }
    let count = defs.len();
    for (name, e) in crate::agent::register_all(state, defs).await {
        if e.parts().0 == axum::http::StatusCode::BAD_REQUEST {
            return Err(Error::Usage {
                what: "service definition",
                reason: format!("'{name}': {e}"),
            });
        }
        tracing::warn!(service = %name, error = %e, "a configured service could not be registered now");
    }
    if count > 0 {
        tracing::info!(services = count, "configured services registered");
    }
    Ok(())
}

/// `themis node`.
pub(crate) async fn run(s: NodeSettings) -> Result<(), Error> {
    let network = crate::admission::network(&s.net, s.admission_key.as_deref())?;
    let data = s.data_dir.as_deref().map(DataDir::open).transpose()?;
    let r = start_all(&s, &network, data.as_ref()).await?;
    let readiness = r.state.readiness();
    let remembered = match &data {
        Some(d) => d.load_peers(&s.net)?,
        None => Vec::new(),
    };
    let joined = match join::initial(&r.node, &network, &s.bootstrap, s.join_timeout).await {
        Ok(j) => j,
        Err(e) => {
            r.node.crash().await;
            return Err(e);
        }
    };
    if !s.bootstrap.is_empty()
        && let Some(addr) = join::live_duplicate(&r.node, &mut None).await
    {
        r.node.crash().await;
        return Err(Error::DuplicateId {
            id: r.node.id().to_string(),
            addr: addr.to_string(),
        });
    }
    register_configured(&r.state, &s, data.as_ref()).await?;
    Readiness::set(&readiness.services_registered);
    let candidates = join::Candidates::new(joined, &remembered, s.bootstrap.clone());
    // Ready means joined from the ready line on: a node that joined at start is joined now,
    // not when the maintenance task first runs (a probe right after the ready line saw 503).
    if !join::looks_for_a_ring(&r.node, &candidates).await {
        Readiness::set(&readiness.joined);
    }
    let mut maintain = tokio::spawn(join::maintain(
        r.node.clone(),
        candidates,
        readiness.clone(),
        data.clone(),
        s.net.clone(),
    ));
    let flush = tokio::spawn(async {
        loop {
            tokio::time::sleep(crate::log::repeat::FLUSH_EVERY).await;
            crate::log::repeat::flush();
        }
    });
    let extra = r
        .dns
        .as_ref()
        .map(|d| format!(" dns={}", dialable(d.local_addr())))
        .unwrap_or_default();
    let stop = shutdown_signal();
    print_ready(&r.node, r.api_addr, &s.net, &extra);
    tracing::info!(id = %r.node.id(), api = %r.api_addr, "node running; Ctrl-C to leave");
    let duplicate = tokio::select! {
        () = stop => None,
        found = &mut maintain => found.ok(),
    };
    if let Some(addr) = duplicate {
        flush.abort();
        let _ = r.stop_api.send(());
        // no leave: it would hand this node's records to the other instance's neighbours
        r.node.crash().await;
        return Err(Error::DuplicateId {
            id: r.node.id().to_string(),
            addr: addr.to_string(),
        });
    }
    eprintln!("leaving the ring...");
    Readiness::set(&readiness.leaving);
    maintain.abort();
    flush.abort();
    if let Some(d) = &data {
        join::remember(&r.node, d, &s.net).await;
    }
    let _ = r.stop_api.send(());
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, r.node.shutdown())
        .await
        .is_err()
    {
        eprintln!("leaving took longer than {SHUTDOWN_TIMEOUT:?}; stopping anyway");
    }
    if let Some(d) = r.dns {
        d.stop();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), r.server).await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_socket_on_every_interface_is_dialed_on_the_loopback() {
        assert_eq!(dialable(a("0.0.0.0:7070")), a("127.0.0.1:7070"));
        assert_eq!(dialable(a("[::]:7070")), a("[::1]:7070"));
        assert_eq!(dialable(a("10.0.0.1:7070")), a("10.0.0.1:7070"));
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
