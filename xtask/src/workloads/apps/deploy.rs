//! The applications deployed: AppAuth's users and table, and, through the mesh, four nodes in
//! this process over loopback TCP (the client, AppAuth's `handler` and `check`, and `kmeans`),
//! with one operation of each application, checked.

use std::sync::Arc;
use std::time::Duration;

use themis_cli::appauth::{self, CHECK, Check, HANDLER, Handler, Login, UserTable};
use themis_crypto::Transcript;
use themis_mesh::{Bytes, IdentityKeypair, MeshConfig, MeshNode, NetworkId, NodeId, ServiceSpec};

use super::kmeans;
use crate::Mode;
use crate::load::OpOutcome;
use crate::workloads::rng;

/// Service name of k-means.
pub(super) const KMEANS: &str = "kmeans";
/// Users in AppAuth's credential store.
pub(super) const USERS: usize = 1_000;
/// Bound on one request through the mesh, and on stopping a node: a hang is a failure with a
/// message, never a stuck run.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client needs, whichever way the applications run.
pub(super) struct Deployment {
    /// AppAuth's users (the client plays them) and `check`'s table of their credentials.
    users: Vec<Login>,
    table: Arc<UserTable>,
    /// The four mesh nodes, the client first; none when the applications run as plain
    /// function calls (`direct`).
    nodes: Vec<MeshNode>,
}

impl Deployment {
    /// Stops the nodes at once (not measured). A graceful leave of all four together waits
    /// for peers that are leaving too, up to the request timeout; the handlers are removed
    /// first so that none keeps its node alive.
    pub(super) async fn stop(self) {
        for n in &self.nodes {
            for service in [HANDLER, CHECK, KMEANS] {
                let _ = tokio::time::timeout(STOP_TIMEOUT, n.deregister(service)).await;
            }
        }
        for n in &self.nodes {
            let _ = tokio::time::timeout(STOP_TIMEOUT, n.crash()).await;
        }
    }

    /// Calls `service` from the client node, bounded by [`OP_TIMEOUT`].
    async fn call(&self, client: &MeshNode, service: &str, req: Bytes) -> Result<Bytes, String> {
        tokio::time::timeout(OP_TIMEOUT, client.call(service, req))
            .await
            .map_err(|_| format!("'{service}' request timed out"))?
            .map_err(|e| e.to_string())
    }

    /// AppAuth login `i` of a run seeded with `seed`, checked against what the table says.
    pub(super) async fn login(&self, seed: u64, i: u64) -> Result<OpOutcome, String> {
        let a = appauth::attempt(&mut rng(seed, i), &self.users, i).ok_or("no users")?;
        let req = Bytes::from(a.login.encode());
        let got = match self.nodes.first() {
            None => appauth::handle_direct(&self.table, &req)?,
            Some(client) => self.call(client, HANDLER, req).await?,
        };
        if appauth::verdict(&got, a.login.user()) == Some(a.valid) {
            Ok(OpOutcome::default())
        } else {
            Err(format!(
                "AppAuth answered {:?} to a {} login",
                String::from_utf8_lossy(&got),
                if a.valid { "valid" } else { "invalid" }
            ))
        }
    }

    /// One k-means request, its answer checked.
    pub(super) async fn kmeans(&self, req: Bytes) -> Result<OpOutcome, String> {
        let got = match self.nodes.first() {
            None => Bytes::from(kmeans::service(&req)?),
            Some(client) => self.call(client, KMEANS, req).await?,
        };
        if kmeans::answer_ok(&got) {
            Ok(OpOutcome::default())
        } else {
            Err("k-means answered wrongly".into())
        }
    }
}

fn mesh_config(mode: Mode, seed: u64) -> MeshConfig {
    let mut c = MeshConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    c.driver = themis_mesh::DriverConfig::fast();
    c.driver.dht.stabilize_period = Duration::from_millis(200);
    c.driver.dht.peer_rate_per_sec = 1_000_000;
    c.driver.dht.peer_rate_burst = 1_000_000;
    c.driver.dht.request_timeout = crate::workloads::dht::OVERLOAD_REQUEST_TIMEOUT;
    c.driver.endpoint.request_timeout = crate::workloads::dht::OVERLOAD_REQUEST_TIMEOUT;
    c.driver.endpoint.handshake_timeout = crate::workloads::dht::OVERLOAD_REQUEST_TIMEOUT;
    c.driver.rng_seed = Some(seed);
    c.record_ttl = c.driver.dht.record_ttl;
    c.mode = match mode {
        Mode::Secure => themis_mesh::Mode::Secure,
        Mode::Insecure | Mode::Direct | Mode::Relay => themis_mesh::Mode::Insecure,
    };
    c.seed = Some(seed);
    // Startup polls discovery until the services are found: a "no provider" answer cached for
    // the default second would be measured as startup time.
    c.cache.negative_ttl = Duration::from_millis(50);
    c
}

/// Waits until every node's successor and predecessor are the true ones (bounded by the
/// caller's timeout): a provider record stored before that may land on a node that is not
/// responsible for it, and is only stored again after the DHT's retry delay (2 s).
async fn ring_settled(nodes: &[MeshNode]) {
    let mut ids: Vec<NodeId> = nodes.iter().map(MeshNode::id).collect();
    ids.sort();
    let n = ids.len();
    loop {
        let mut ok = true;
        for node in nodes {
            let Ok(st) = node.dht().status().await else {
                ok = false;
                continue;
            };
            let i = ids.iter().position(|x| *x == st.id).unwrap_or(0);
            let succ = ids.get((i + 1) % n).copied();
            let pred = ids.get((i + n - 1) % n).copied();
            ok &=
                st.successors.first().map(|p| p.id) == succ && st.predecessor.map(|p| p.id) == pred;
        }
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `node` discovers `service` (bounded by the caller's timeout).
async fn discoverable(node: &MeshNode, service: &str) {
    while !node.discover(service).await.is_ok_and(|r| !r.is_empty()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Four mesh nodes joined into one settled ring, the first the bootstrap of the others.
async fn start_nodes(mode: Mode, seed: u64) -> Result<Vec<MeshNode>, String> {
    let net = NetworkId::new("themis-bench-apps").map_err(|e| e.to_string())?;
    let mut nodes: Vec<MeshNode> = Vec::new();
    for i in 0..4u64 {
        let s = rng(seed ^ 0xf, i).u64(..);
        let id = Arc::new(IdentityKeypair::from_seed(&Transcript::digest(
            "themis-bench apps node",
            &[&s.to_be_bytes()],
        )));
        let mut cfg = mesh_config(mode, s);
        if let Some(first) = nodes.first() {
            cfg.bootstrap = vec![first.contact()];
        }
        nodes.push(
            MeshNode::start(net.clone(), id, cfg)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    ring_settled(&nodes).await;
    Ok(nodes)
}

/// Starts the applications: the credential store and, through the mesh, four nodes, the three
/// services registered, discovered by their callers, and called once each (so every channel
/// the load needs exists: the paper's "stable state").
pub(super) async fn start(mode: Mode, seed: u64) -> Result<Deployment, String> {
    let mut r = fastrand::Rng::with_seed(seed ^ 0xa);
    let users = appauth::users(&mut r, USERS);
    let table = Arc::new(UserTable::new(&users, &mut r));
    let mut dep = Deployment {
        users,
        table,
        nodes: Vec::new(),
    };
    if mode == Mode::Direct {
        return Ok(dep);
    }
    let nodes = start_nodes(mode, seed).await?;
    let [client, handler, check, km] = nodes.as_slice() else {
        return Err("four nodes not started".into());
    };
    let spec = || ServiceSpec::new("1.0", 100);
    let check_service = Check::new(Arc::clone(&dep.table)).service();
    check
        .register(CHECK, spec(), check_service)
        .await
        .map_err(|e| e.to_string())?;
    handler
        .register(HANDLER, spec(), Handler::new().service(handler.clone()))
        .await
        .map_err(|e| e.to_string())?;
    km.register(KMEANS, spec(), |_: NodeId, req: Bytes| async move {
        kmeans::service(&req).map(Bytes::from)
    })
    .await
    .map_err(|e| e.to_string())?;
    discoverable(handler, CHECK).await;
    discoverable(client, HANDLER).await;
    discoverable(client, KMEANS).await;
    dep.nodes = nodes;
    dep.login(seed, 0)
        .await
        .map_err(|e| format!("at startup: {e}"))?;
    dep.kmeans(kmeans::request(seed, 0))
        .await
        .map_err(|e| format!("at startup: {e}"))?;
    Ok(dep)
}
