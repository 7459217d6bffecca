//! Workload 6: end-to-end serverless-style applications over the mesh, in the spirit of the
//! paper's Table 2 (§9.1), each measured three ways in one run: through the mesh secure,
//! through the mesh insecure, and as the same application calling its functions directly
//! (plain function calls in this process, no themis at all).
//!
//! The applications:
//! - **AppAuth** (paper §8): an ingress `appauth-handler` receives a username and a password,
//!   asks the back-end `appauth-check` for that user's credential record (a 16-byte salt and
//!   the salted hash of the password), validates the pair and answers `200` or `401`. Two
//!   mesh calls per request (client → handler → check). Light: the mesh dominates.
//! - **k-means** (Table 2's "K-Means Clustering"): the client sends 1,000 2-D points (8,000
//!   bytes); `kmeans` runs 10 Lloyd iterations with k = 8 and answers the centroids and the
//!   inertia. One mesh call per request. Compute-heavy: the application dominates.
//!
//! Four mesh nodes in this process over loopback TCP: the gateway (client), the handler, the
//! check, and the k-means provider.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use themis_crypto::{HASH_LEN, Transcript};
use themis_mesh::{Bytes, IdentityKeypair, MeshConfig, MeshNode, NetworkId, NodeId, ServiceSpec};

use crate::load::{self, ClosedLoop, OpOutcome, RunStats};
use crate::report::fmt_num;
use crate::workload::{Figure, Measurement, Metric, Params, PlotAxis, PointSel, Workload};
use crate::{Error, Histogram, Mode, Progress};

/// Name of this workload.
pub(crate) const NAME: &str = "apps";

/// Service names.
const HANDLER: &str = "appauth-handler";
const CHECK: &str = "appauth-check";
const KMEANS: &str = "kmeans";

/// Requests kept in flight by the throughput points.
const IN_FLIGHT: usize = 64;
/// Users in AppAuth's credential store.
const USERS: u64 = 1_000;
/// One AppAuth login in this many uses a wrong password (answered `401`).
const WRONG_EVERY: u64 = 10;
/// k-means: points per request, clusters, iterations.
const POINTS: usize = 1_000;
const K: usize = 8;
const ITERATIONS: usize = 10;
/// Largest k-means request the service accepts (points), checked before allocating.
const MAX_POINTS: usize = 100_000;
/// Distinct k-means data sets the client cycles through (made before measuring).
const DATASETS: u64 = 32;
/// Bound on one request through the mesh, and on starting or stopping the nodes: a hang is a
/// failure with a message, never a stuck run.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

use super::mix;

fn werr(mode: Mode, reason: impl ToString) -> Error {
    super::werr(NAME, mode, reason)
}

/// A uniform draw in `[0, 1)`.
fn unit(seed: u64, i: u64) -> f32 {
    (mix(seed, i) >> 40) as f32 / (1u64 << 24) as f32
}

// ---------------------------------------------------------------------------------------------
// AppAuth: the application's own code, shared by the mesh handlers and the direct baseline.

const SALT_LEN: usize = 16;
/// Length of `check`'s answer for a known user: the salt, then the salted hash.
const RECORD_LEN: usize = SALT_LEN + HASH_LEN;

fn salted_hash(salt: &[u8], password: &[u8]) -> [u8; HASH_LEN] {
    Transcript::digest("themis-bench appauth password", &[salt, password])
}

/// The credential store behind `appauth-check`: user name → salt and salted hash.
struct UserDb {
    users: HashMap<String, [u8; RECORD_LEN]>,
}

fn user_name(i: u64) -> String {
    format!("user{i:04}")
}

fn user_password(seed: u64, i: u64) -> String {
    format!("pw-{:016x}", mix(seed ^ 0xa, i))
}

impl UserDb {
    fn new(seed: u64) -> Self {
        let users = (0..USERS)
            .map(|i| {
                let salt = (u128::from(mix(seed ^ 0xb, i)) << 64 | u128::from(mix(seed ^ 0xc, i)))
                    .to_be_bytes();
                let hash = salted_hash(&salt, user_password(seed, i).as_bytes());
                let mut rec = [0u8; RECORD_LEN];
                for (r, b) in rec.iter_mut().zip(salt.iter().chain(hash.iter())) {
                    *r = *b;
                }
                (user_name(i), rec)
            })
            .collect();
        Self { users }
    }

    /// `appauth-check`: the credential record of the user named by the request, or an empty
    /// answer for an unknown user.
    fn check(&self, request: &[u8]) -> Vec<u8> {
        std::str::from_utf8(request)
            .ok()
            .and_then(|name| self.users.get(name))
            .map(|r| r.to_vec())
            .unwrap_or_default()
    }
}

/// A login request: a length byte, the user name, the password.
fn login_request(user: &str, password: &str) -> Bytes {
    let mut v = Vec::with_capacity(1 + user.len() + password.len());
    v.push(u8::try_from(user.len()).unwrap_or(u8::MAX));
    v.extend_from_slice(user.as_bytes());
    v.extend_from_slice(password.as_bytes());
    Bytes::from(v)
}

fn parse_login(request: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (&len, rest) = request.split_first().ok_or("empty login request")?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err("truncated login request".into());
    }
    Ok(rest.split_at(len))
}

/// The handler's decision from `check`'s record: `200` if the salted hash matches.
fn validate(record: &[u8], password: &[u8]) -> &'static [u8] {
    let Some((salt, hash)) = (record.len() == RECORD_LEN).then(|| record.split_at(SALT_LEN)) else {
        return b"401";
    };
    let h = salted_hash(salt, password);
    // Constant time, as a real check would compare.
    let diff = h.iter().zip(hash).fold(0u8, |d, (a, b)| d | (a ^ b));
    if diff == 0 { b"200" } else { b"401" }
}

/// `appauth-handler` calling `check` as a plain function: the direct baseline.
fn handler_direct(db: &UserDb, request: &[u8]) -> Result<&'static [u8], String> {
    let (user, password) = parse_login(request)?;
    let record = db.check(user);
    Ok(validate(&record, password))
}

/// `appauth-handler` calling `appauth-check` through the mesh.
async fn handler_mesh(node: &MeshNode, request: &[u8]) -> Result<Bytes, String> {
    let (user, password) = parse_login(request)?;
    let record = node
        .call(CHECK, Bytes::copy_from_slice(user))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Bytes::from_static(validate(&record, password)))
}

/// The login of operation `i` and the status it must get.
fn login(seed: u64, i: u64) -> (Bytes, &'static [u8]) {
    let u = mix(seed ^ 0xd, i) % USERS;
    if i % WRONG_EVERY == WRONG_EVERY - 1 {
        (login_request(&user_name(u), "wrong password"), b"401")
    } else {
        (
            login_request(&user_name(u), &user_password(seed, u)),
            b"200",
        )
    }
}

// ---------------------------------------------------------------------------------------------
// k-means.

/// 1,000 points around 8 random centres, as little-endian f32 pairs (8,000 bytes).
fn kmeans_request(seed: u64, set: u64) -> Bytes {
    let s = mix(seed ^ 0xe, set);
    let mut v = Vec::with_capacity(POINTS * 8);
    for p in 0..POINTS as u64 {
        let c = p % K as u64;
        let (cx, cy) = (unit(s, 2 * c) * 100.0, unit(s, 2 * c + 1) * 100.0);
        let x = cx + (unit(s ^ 1, 2 * p) - 0.5) * 10.0;
        let y = cy + (unit(s ^ 1, 2 * p + 1) - 0.5) * 10.0;
        v.extend_from_slice(&x.to_le_bytes());
        v.extend_from_slice(&y.to_le_bytes());
    }
    Bytes::from(v)
}

/// `kmeans`: decodes the points, runs [`ITERATIONS`] Lloyd iterations with [`K`] centroids
/// (initialised from evenly spaced points) and answers the centroids then the inertia, as
/// little-endian f32 (68 bytes).
fn kmeans_service(request: &[u8]) -> Result<Vec<u8>, String> {
    if !request.len().is_multiple_of(8) || request.len() / 8 > MAX_POINTS {
        return Err(format!(
            "k-means wants up to {MAX_POINTS} points of two little-endian f32 each"
        ));
    }
    let pts: Vec<[f32; 2]> = request
        .chunks_exact(8)
        .map(|c| {
            let mut x = [0u8; 4];
            let mut y = [0u8; 4];
            x.copy_from_slice(c.get(..4).unwrap_or(&[0; 4]));
            y.copy_from_slice(c.get(4..).unwrap_or(&[0; 4]));
            [f32::from_le_bytes(x), f32::from_le_bytes(y)]
        })
        .collect();
    if pts.len() < K {
        return Err(format!("k-means wants at least {K} points"));
    }
    let mut cent: Vec<[f32; 2]> = (0..K)
        .filter_map(|c| pts.get(c * pts.len() / K).copied())
        .collect();
    let mut inertia = 0.0f32;
    for _ in 0..ITERATIONS {
        let mut sum = [[0.0f32; 2]; K];
        let mut count = [0u32; K];
        inertia = 0.0;
        for p in &pts {
            let (mut best, mut best_d) = (0, f32::INFINITY);
            for (c, q) in cent.iter().enumerate() {
                let d = (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2);
                if d < best_d {
                    (best, best_d) = (c, d);
                }
            }
            inertia += best_d;
            if let (Some(s), Some(n)) = (sum.get_mut(best), count.get_mut(best)) {
                s[0] += p[0];
                s[1] += p[1];
                *n += 1;
            }
        }
        for ((c, s), &n) in cent.iter_mut().zip(&sum).zip(&count) {
            if n > 0 {
                *c = [s[0] / n as f32, s[1] / n as f32];
            }
        }
    }
    let mut out = Vec::with_capacity(K * 8 + 4);
    for c in &cent {
        out.extend_from_slice(&c[0].to_le_bytes());
        out.extend_from_slice(&c[1].to_le_bytes());
    }
    out.extend_from_slice(&inertia.to_le_bytes());
    Ok(out)
}

/// The client's check of a k-means answer: the right size and a finite, positive inertia.
fn kmeans_answer_ok(answer: &[u8]) -> bool {
    answer.len() == K * 8 + 4
        && answer
            .get(K * 8..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(f32::from_le_bytes)
            .is_some_and(|i| i.is_finite() && i > 0.0)
}

// ---------------------------------------------------------------------------------------------
// The deployment.

/// What the client needs, whichever way the applications run.
enum Deployment {
    /// Plain function calls.
    Direct { db: Arc<UserDb> },
    /// Four mesh nodes; the first is the client.
    Mesh { nodes: Vec<MeshNode> },
}

impl Deployment {
    /// Stops the nodes at once (not measured). A graceful leave of all four together waits
    /// for peers that are leaving too, up to the request timeout; the handlers are removed
    /// first so that none keeps its node alive.
    async fn stop(self) {
        if let Deployment::Mesh { nodes } = self {
            for n in &nodes {
                for service in [HANDLER, CHECK, KMEANS] {
                    let _ = tokio::time::timeout(STOP_TIMEOUT, n.deregister(service)).await;
                }
            }
            for n in &nodes {
                let _ = tokio::time::timeout(STOP_TIMEOUT, n.crash()).await;
            }
        }
    }
}

fn mesh_config(mode: Mode, seed: u64) -> MeshConfig {
    let mut c = MeshConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    c.driver = themis_mesh::DriverConfig::fast();
    c.driver.dht.stabilize_period = Duration::from_millis(200);
    c.driver.dht.peer_rate_per_sec = 1_000_000;
    c.driver.dht.peer_rate_burst = 1_000_000;
    c.driver.dht.request_timeout = super::dht::OVERLOAD_REQUEST_TIMEOUT;
    c.driver.endpoint.request_timeout = super::dht::OVERLOAD_REQUEST_TIMEOUT;
    c.driver.endpoint.handshake_timeout = super::dht::OVERLOAD_REQUEST_TIMEOUT;
    c.driver.rng_seed = Some(seed);
    c.record_ttl = c.driver.dht.record_ttl;
    c.mode = match mode {
        Mode::Secure => themis_mesh::Mode::Secure,
        Mode::Insecure | Mode::Direct => themis_mesh::Mode::Insecure,
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

/// Starts the applications: the credential store and, through the mesh, four nodes, the three
/// services registered, discovered by their callers, and called once each (so every channel
/// the load needs exists: the paper's "stable state").
async fn start(mode: Mode, seed: u64) -> Result<Deployment, String> {
    let db = Arc::new(UserDb::new(seed));
    if mode == Mode::Direct {
        return Ok(Deployment::Direct { db });
    }
    let net = NetworkId::new("themis-bench-apps").map_err(|e| e.to_string())?;
    let mut nodes: Vec<MeshNode> = Vec::new();
    for i in 0..4u64 {
        let s = mix(seed ^ 0xf, i);
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
    let [client, handler, check, kmeans] = nodes.as_slice() else {
        return Err("four nodes not started".into());
    };
    let spec = || ServiceSpec::new("1.0", 100);
    let db2 = Arc::clone(&db);
    check
        .register(CHECK, spec(), move |_: NodeId, req: Bytes| {
            let db = Arc::clone(&db2);
            async move { Ok(Bytes::from(db.check(&req))) }
        })
        .await
        .map_err(|e| e.to_string())?;
    let h = handler.clone();
    handler
        .register(HANDLER, spec(), move |_: NodeId, req: Bytes| {
            let h = h.clone();
            async move { handler_mesh(&h, &req).await }
        })
        .await
        .map_err(|e| e.to_string())?;
    kmeans
        .register(KMEANS, spec(), |_: NodeId, req: Bytes| async move {
            kmeans_service(&req).map(Bytes::from)
        })
        .await
        .map_err(|e| e.to_string())?;
    discoverable(handler, CHECK).await;
    discoverable(client, HANDLER).await;
    discoverable(client, KMEANS).await;
    let (req, want) = login(seed, 0);
    let got = client.call(HANDLER, req).await.map_err(|e| e.to_string())?;
    if &got[..] != want {
        return Err("AppAuth answered wrongly at startup".into());
    }
    let got = client
        .call(KMEANS, kmeans_request(seed, 0))
        .await
        .map_err(|e| e.to_string())?;
    if !kmeans_answer_ok(&got) {
        return Err("k-means answered wrongly at startup".into());
    }
    Ok(Deployment::Mesh { nodes })
}

/// One AppAuth request, checked against the status it must get.
async fn appauth_op(dep: Arc<Deployment>, seed: u64, i: u64) -> Result<OpOutcome, String> {
    let (req, want) = login(seed, i);
    let got: Bytes = match &*dep {
        Deployment::Direct { db } => Bytes::from_static(handler_direct(db, &req)?),
        Deployment::Mesh { nodes } => {
            let client = nodes.first().ok_or("no client node")?;
            tokio::time::timeout(OP_TIMEOUT, client.call(HANDLER, req))
                .await
                .map_err(|_| "AppAuth request timed out".to_string())?
                .map_err(|e| e.to_string())?
        }
    };
    if &got[..] == want {
        Ok(OpOutcome::default())
    } else {
        Err(format!("AppAuth answered {got:?}, expected {want:?}"))
    }
}

/// One k-means request.
async fn kmeans_op(dep: Arc<Deployment>, req: Bytes) -> Result<OpOutcome, String> {
    let got = match &*dep {
        Deployment::Direct { .. } => kmeans_service(&req)?,
        Deployment::Mesh { nodes } => {
            let client = nodes.first().ok_or("no client node")?;
            tokio::time::timeout(OP_TIMEOUT, client.call(KMEANS, req))
                .await
                .map_err(|_| "k-means request timed out".to_string())?
                .map_err(|e| e.to_string())?
                .to_vec()
        }
    };
    if kmeans_answer_ok(&got) {
        Ok(OpOutcome::default())
    } else {
        Err("k-means answered wrongly".into())
    }
}

// ---------------------------------------------------------------------------------------------
// The workload.

/// Workload 6.
#[derive(Debug, Default)]
pub(crate) struct Apps;

/// Sizes of one mode's run.
struct Sizes {
    startups: u64,
    auth_c1: u64,
    auth_max: u64,
    kmeans_c1: u64,
    kmeans_max: u64,
}

impl Apps {
    fn sizes(p: &Params) -> Sizes {
        let pick = |full, quick, tiny| p.profile.pick(full, quick, tiny);
        Sizes {
            startups: pick(10, 3, 1),
            auth_c1: pick(20_000, 2_000, 50),
            auth_max: pick(200_000, 10_000, 200),
            kmeans_c1: pick(5_000, 500, 10),
            kmeans_max: pick(20_000, 2_000, 40),
        }
    }
}

/// The points, in report order, and what each is compared on against the direct baseline.
const POINT_METRICS: [(&str, &[Metric]); 5] = [
    ("startup", &[Metric::MeanMs]),
    ("appauth c=1", &[Metric::P50Ms, Metric::P99Ms]),
    ("appauth c=64", &[Metric::OpsPerSec, Metric::P50Ms]),
    ("kmeans c=1", &[Metric::P50Ms, Metric::P99Ms]),
    ("kmeans c=64", &[Metric::OpsPerSec, Metric::P50Ms]),
];

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::OpsPerSec => "throughput",
        Metric::MsPerOp => "time per op",
        Metric::MeanMs => "mean",
        Metric::P50Ms => "p50",
        Metric::P99Ms => "p99",
        Metric::HandshakesPer1K => "handshakes per 1K ops",
        Metric::DialsPer1K => "dials per 1K ops",
        Metric::OfferedPerSec => "offered rate",
    }
}

impl Workload for Apps {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "6. end-to-end apps (Table 2)"
    }

    fn method(&self) -> String {
        format!(
            "Two serverless-style applications on four mesh nodes in this process over loopback \
             TCP (a client, AppAuth's `{HANDLER}` and `{CHECK}`, and `{KMEANS}`), measured \
             three ways in one run: through the mesh secure, through the mesh insecure, and \
             `direct`: the same application code calling its functions as plain function calls \
             (no themis, no sockets). **AppAuth** (paper §8): the handler gets a user name and \
             password, fetches the user's record (16-byte salt, salted hash) from `{CHECK}` \
             through the mesh and answers 200 or 401 (1 login in {WRONG_EVERY} carries a wrong \
             password; every answer is checked): two calls per request. **k-means** (Table 2's \
             K-Means Clustering): the client sends {POINTS} 2-D points (8,000 bytes), the \
             service runs {ITERATIONS} Lloyd iterations with k = {K} and answers centroids and \
             inertia: one call per request. `startup`: from nothing to the paper's stable state \
             (credential store built, nodes up and joined, services registered, discovered by \
             their callers, and called once each so every channel exists), repeated (quick: 3, \
             full: 10). Then closed loop at 1 request in flight (`c=1`: latency) and at \
             {IN_FLIGHT} (`c=64`: throughput). Quick: 2K/10K AppAuth and 500/2K k-means \
             requests per point; full: 10× that. The paper's Table 2 has no AppAuth row; its \
             T / V (%Δ) compare THEMIS with its insecure vanilla version, like our secure and \
             insecure columns; `direct` is a baseline the paper does not have."
        )
    }

    fn figures(&self) -> Vec<Figure> {
        use Metric::*;
        use PointSel::Label;
        let fig = |what, point, metric, paper| Figure {
            what,
            point: Label(point),
            metric,
            paper,
            goal: None,
        };
        vec![
            fig(
                "startup to stable state",
                "startup",
                MeanMs,
                "K-Means 310 / 210 ms (+45.9 %); all apps +0–357 %",
            ),
            fig(
                "AppAuth, p50 latency",
                "appauth c=1",
                P50Ms,
                "— (not in Table 2)",
            ),
            fig("AppAuth, p99 latency", "appauth c=1", P99Ms, ""),
            fig(
                "AppAuth, throughput",
                "appauth c=64",
                OpsPerSec,
                "— (Table 2 throughput overhead: 1.24 % on average)",
            ),
            fig(
                "k-means, mean latency",
                "kmeans c=1",
                MeanMs,
                "92.19 / 91.98 s (+0.23 %)",
            ),
            fig("k-means, p99 latency", "kmeans c=1", P99Ms, ""),
            fig(
                "k-means, throughput",
                "kmeans c=64",
                OpsPerSec,
                "0.49 / 0.49 req/s (0.00 %)",
            ),
        ]
    }

    fn plot_axis(&self) -> Option<PlotAxis> {
        None
    }

    fn modes(&self) -> &'static [Mode] {
        &[Mode::Secure, Mode::Insecure, Mode::Direct]
    }

    fn expected_duration(&self, p: &Params) -> Duration {
        // Per mode, averaged over the three: about 0.4 s per mesh startup, 4K AppAuth and 2K
        // k-means requests per second through the mesh on 2 cores, 0.3 ms per AppAuth request
        // and 0.5 ms per k-means request at c=1; the direct run takes well under a second.
        let s = Self::sizes(p);
        let mesh = s.startups as f64 * 0.4
            + (s.auth_c1 as f64) * 0.3e-3
            + s.auth_max as f64 / 4_000.0
            + s.kmeans_c1 as f64 * 0.5e-3
            + s.kmeans_max as f64 / 2_000.0;
        Duration::from_secs_f64((2.0 * mesh + 1.0) / 3.0)
    }

    fn run(&self, mode: Mode, p: &Params, progress: &Progress) -> Result<Vec<Measurement>, Error> {
        let rt = load::runtime()?;
        let s = Self::sizes(p);
        let seed = p.seed ^ 0x6000;
        let nodes = if mode == Mode::Direct { 0 } else { 4 };
        let out = rt.block_on(async {
            let mut out = Vec::new();
            // Startup, repeated; the last deployment serves the load.
            progress.add_len(s.startups);
            progress.message("startup");
            let mut startup = RunStats::default();
            let mut latency = Histogram::new();
            let mut dep = None;
            for r in 0..s.startups {
                if let Some(d) = dep.take() {
                    Deployment::stop(d).await;
                }
                let t0 = Instant::now();
                let d = tokio::time::timeout(START_TIMEOUT, start(mode, mix(seed, r)))
                    .await
                    .map_err(|_| werr(mode, "startup timed out"))?
                    .map_err(|e| werr(mode, format!("startup: {e}")))?;
                let took = t0.elapsed();
                latency.record(took);
                startup.elapsed += took;
                startup.ok += 1;
                progress.inc(1);
                dep = Some(d);
            }
            startup.latency = latency;
            out.push(Measurement::from_stats(
                NAME, mode, "startup", nodes, &startup,
            ));
            let dep = Arc::new(dep.ok_or_else(|| werr(mode, "no startup"))?);
            let run_seed = mix(seed, s.startups.saturating_sub(1));

            // AppAuth.
            let auth = {
                let dep = Arc::clone(&dep);
                move |i: u64| appauth_op(Arc::clone(&dep), run_seed, i)
            };
            // Warm-up, not recorded.
            progress.add_len(IN_FLIGHT as u64 * 4);
            let warm = ClosedLoop::new(IN_FLIGHT, IN_FLIGHT as u64 * 4);
            load::closed_loop(warm, progress, auth.clone()).await?;
            for (point, c, ops) in [
                ("appauth c=1", 1, s.auth_c1),
                ("appauth c=64", IN_FLIGHT, s.auth_max),
            ] {
                progress.add_len(ops);
                progress.message(point);
                let cfg = ClosedLoop::new(c, ops);
                let stats = load::closed_loop(cfg, progress, auth.clone()).await?;
                out.push(
                    Measurement::from_stats(NAME, mode, point, nodes, &stats).with_concurrency(c),
                );
            }

            // k-means.
            let sets: Arc<Vec<Bytes>> =
                Arc::new((0..DATASETS).map(|d| kmeans_request(run_seed, d)).collect());
            let km = {
                let dep = Arc::clone(&dep);
                move |i: u64| {
                    let req = sets
                        .get((i % DATASETS) as usize)
                        .cloned()
                        .unwrap_or_default();
                    kmeans_op(Arc::clone(&dep), req)
                }
            };
            progress.add_len(IN_FLIGHT as u64);
            let warm = ClosedLoop::new(IN_FLIGHT, IN_FLIGHT as u64);
            load::closed_loop(warm, progress, km.clone()).await?;
            for (point, c, ops) in [
                ("kmeans c=1", 1, s.kmeans_c1),
                ("kmeans c=64", IN_FLIGHT, s.kmeans_max),
            ] {
                progress.add_len(ops);
                progress.message(point);
                let cfg = ClosedLoop::new(c, ops);
                let stats = load::closed_loop(cfg, progress, km.clone()).await?;
                out.push(
                    Measurement::from_stats(NAME, mode, point, nodes, &stats).with_concurrency(c),
                );
            }
            drop((auth, km));
            if let Ok(d) = Arc::try_unwrap(dep) {
                d.stop().await;
            }
            Ok::<_, Error>(out)
        })?;
        if let Some(m) = out.iter().find(|m| m.errors > 0 || m.ops == 0) {
            return Err(werr(
                mode,
                m.note
                    .clone()
                    .unwrap_or_else(|| format!("{}: no operation succeeded", m.point)),
            ));
        }
        Ok(out)
    }

    fn extra_markdown(&self, results: &[Measurement]) -> Option<String> {
        let get = |mode: Mode, point: &str| {
            results
                .iter()
                .find(|m| m.workload == NAME && m.mode == mode && m.point == point)
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Against the same application calling its functions directly (no themis, no \
             sockets): overhead is throughput lost or latency added relative to `direct`.\n"
        );
        let _ = writeln!(
            s,
            "| point | figure | direct | mesh insecure | mesh secure | insecure vs direct | secure vs direct | secure vs insecure |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let mut any = false;
        for (point, metrics) in POINT_METRICS {
            for &metric in metrics {
                let v = |mode| get(mode, point).map(|m| m.value(metric));
                let (d, i, sec) = (v(Mode::Direct), v(Mode::Insecure), v(Mode::Secure));
                any |= d.is_some() || i.is_some() || sec.is_some();
                let val = |x: Option<f64>| {
                    x.map_or_else(
                        || "not measured".into(),
                        |x| format!("{} {}", fmt_num(x), metric.unit()),
                    )
                };
                let ovh = |a: Option<f64>, b: Option<f64>| {
                    a.zip(b)
                        .and_then(|(a, b)| metric.overhead_pct(a, b))
                        .map_or_else(|| "—".into(), |o| format!("{} %", fmt_num(o)))
                };
                let _ = writeln!(
                    s,
                    "| {point} | {} | {} | {} | {} | {} | {} | {} |",
                    metric_name(metric),
                    val(d),
                    val(i),
                    val(sec),
                    ovh(i, d),
                    ovh(sec, d),
                    ovh(sec, i),
                );
            }
        }
        any.then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appauth_accepts_right_passwords_only() {
        let db = UserDb::new(5);
        for i in 0..40 {
            let (req, want) = login(5, i);
            assert_eq!(handler_direct(&db, &req).unwrap(), want, "login {i}");
        }
        let unknown = login_request("nobody", "x");
        assert_eq!(handler_direct(&db, &unknown).unwrap(), b"401");
        assert!(handler_direct(&db, &[9, b'a']).is_err());
        assert!(handler_direct(&db, &[]).is_err());
    }

    #[test]
    fn kmeans_finds_the_clusters() {
        let req = kmeans_request(3, 1);
        assert_eq!(req.len(), POINTS * 8);
        let out = kmeans_service(&req).unwrap();
        assert!(kmeans_answer_ok(&out));
        let inertia = f32::from_le_bytes(out[K * 8..].try_into().unwrap());
        // Points lie within ±5 of their centre: a good clustering keeps the mean squared
        // distance near the uniform noise's (2 · 10² / 12 ≈ 16.7), far below the spread of
        // the centres themselves (≈ 1,700 over a 100 × 100 square).
        assert!(inertia / (POINTS as f32) < 200.0, "inertia {inertia}");
        assert!(kmeans_service(&req[..7]).is_err());
        assert!(kmeans_service(&[0; 16]).is_err());
        assert!(!kmeans_answer_ok(&out[..10]));
    }

    #[test]
    fn direct_mode_runs_and_reports_against_the_baseline() {
        let p = Params {
            profile: crate::Profile::Tiny,
            seed: 1,
            cores: 2,
        };
        let out = Apps.run(Mode::Direct, &p, &Progress::hidden()).unwrap();
        let points: Vec<&str> = out.iter().map(|m| m.point.as_str()).collect();
        assert_eq!(
            points,
            POINT_METRICS.iter().map(|(p, _)| *p).collect::<Vec<_>>()
        );
        assert!(out.iter().all(|m| m.errors == 0 && m.ops > 0));
        let md = Apps.extra_markdown(&out).unwrap();
        assert!(md.contains("| appauth c=64 | throughput |"), "{md}");
        assert!(md.contains("not measured"), "{md}");
    }
}
