//! Workloads 1–4 of paper §9: the DHT (`themis_dht::DhtNode`) in-process over loopback TCP,
//! secure and insecure through the same code (only the endpoint's `Mode` differs).
//!
//! Every node is a real [`DhtNode`] on its own `127.0.0.1` socket in this process: requests
//! cross the kernel's loopback and, in secure mode, the full handshake (paper Fig. 2) and the
//! sealed channel (Fig. 3).

use std::sync::Arc;
use std::time::Duration;

use themis_channel::{TcpConfig, UdpConfig};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, Transcript};
use themis_dht::{DhtNode, DriverConfig};

use crate::machine;
use crate::workload::{Measurement, Params};
use crate::{Error, Mode};

/// Operations kept in flight by the closed-loop points.
const IN_FLIGHT: usize = 64;
/// Bound on operations in flight in the open-loop points of workload 1. With 4,096 the
/// driver's queues grew so deep that 50K operations took minutes instead of seconds (as of
/// this writing); beyond this bound the pacer waits, and the wait counts in the latency.
const OPEN_IN_FLIGHT: usize = 512;
/// Bootstrap nodes of the join workload (paper §9.1: "10 bootstrap nodes").
const BOOTSTRAPS: usize = 10;
/// Open file descriptors the in-process rings may use in all (`ulimit -n` on the bench host is
/// 20,000): the per-node TCP connection cap is derived from it.
const FD_BUDGET: usize = 16_000;
/// Ring size from which workload 2 runs its nodes over UDP (one socket per node, sessions
/// without connections): below it over TCP. At 500 and 1,000 nodes the per-node TCP cap
/// (`FD_BUDGET / N` = 32 and 16 connections) is below each node's working set (successors,
/// fingers, lookup peers), so connections churn and the ring is not built in time.
const UDP_FROM_NODES: usize = 500;
/// Ring size up to which workload 2 keeps the base maintenance periods (stabilize 200 ms,
/// fingers 2 s); beyond it both periods grow in proportion to N so that the whole ring's
/// background load (N / period requests per second) stays what it is at this size.
const MAINTENANCE_BASE_NODES: usize = 100;
/// Stabilize period of the benchmark nodes (scaled for big rings, see above).
const BASE_STABILIZE_PERIOD: Duration = Duration::from_millis(200);
/// Finger refresh period of the benchmark nodes (scaled for big rings).
const BASE_FINGER_PERIOD: Duration = Duration::from_secs(2);

use super::{rng, werr};

/// A provider store's outcome as the workloads count it: an error unless every replica was
/// stored. `Registered::failed` counts refusals, failed lookups, sends refused for a full
/// request table and timed-out stores alike, so the message does not say which.
pub(crate) fn store_outcome(
    r: Result<themis_dht::Registered, themis_dht::Error>,
) -> Result<(), String> {
    match r {
        Ok(r) if r.failed == 0 && r.stored > 0 => Ok(()),
        Ok(r) => Err(format!(
            "{} of {} replicas not stored (refused, or their lookup, send or store failed)",
            r.failed,
            u16::from(r.failed) + u16::from(r.stored)
        )),
        Err(e) => Err(format!("store failed: {e}")),
    }
}

mod churn;
pub(crate) mod host;
mod local;
mod members;
mod scaling;

pub(crate) use churn::{Join, LeaveBlink};
pub(crate) use local::LocalFindStore;
pub(crate) use scaling::FindScaling;

/// Random id `i` of a run seeded with `seed`.
fn random_id(seed: u64, i: u64) -> NodeId {
    let mut b = [0u8; 32];
    rng(seed, i).fill(&mut b);
    NodeId::from_bytes(b)
}

/// Random index `i` into `0..len` of a run seeded with `seed` (0 when `len` is 0).
fn pick(len: usize, seed: u64, i: u64) -> usize {
    rng(seed, i).usize(..len.max(1))
}

/// Random 16-hex-digit name `i` of a run seeded with `seed`.
fn random_name(seed: u64, i: u64) -> String {
    format!("{:016x}", rng(seed, i).u64(..))
}

/// The driver settings of every benchmark node: the fast periods, the per-peer rate limits and
/// quotas lifted (a benchmark floods its peers on purpose), the channel mode, a fixed seed.
fn driver_config(mode: Mode, seed: u64, records: usize) -> DriverConfig {
    let mut c = DriverConfig::fast();
    c.dht.stabilize_period = BASE_STABILIZE_PERIOD;
    c.dht.finger_period = BASE_FINGER_PERIOD;
    c.dht.peer_rate_per_sec = 1_000_000;
    c.dht.peer_rate_burst = 1_000_000;
    c.dht.max_registrations = records;
    c.dht.max_records_per_provider = records;
    c.dht.max_queries = 4096;
    // The default profile's re-store period and TTL (200 s, 600 s), not the fast profile's
    // 20 s and 60 s: every registration is re-stored on its own each period, so with 20 s
    // the re-stores of the names a workload registered would load the nodes as much as the
    // stores being measured.
    let base = themis_dht::Config::default();
    c.dht.restore_period = base.restore_period;
    c.dht.record_ttl = base.record_ttl;
    c.endpoint.mode = match mode {
        Mode::Secure => themis_channel::Mode::Secure,
        Mode::Insecure | Mode::Direct | Mode::Relay => themis_channel::Mode::Insecure,
    };
    c.rng_seed = Some(seed);
    c
}

/// Request and handshake timeout of the nodes of workloads 1 and 6, which load them beyond
/// their capacity on purpose: overload must show as latency, not as failures (with the fast
/// profile's 1 s, hundreds of requests queued on two busy cores time out). The other
/// workloads keep 1 s: there a request to a node that has just left waits for the timeout,
/// which a blink then measures.
pub(crate) const OVERLOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn with_overload_timeouts(mut c: DriverConfig) -> DriverConfig {
    c.dht.request_timeout = OVERLOAD_REQUEST_TIMEOUT;
    c.endpoint.request_timeout = OVERLOAD_REQUEST_TIMEOUT;
    c.endpoint.handshake_timeout = OVERLOAD_REQUEST_TIMEOUT;
    c
}

/// The multiplier of the stabilize and finger periods of workload 2's ring of `n` nodes
/// (1 up to [`MAINTENANCE_BASE_NODES`], then in proportion to `n`).
fn maintenance_scale(n: usize) -> u32 {
    u32::try_from(n.div_ceil(MAINTENANCE_BASE_NODES).max(1)).unwrap_or(u32::MAX)
}

/// Nodes of one run, all in this process.
struct Ring {
    net: NetworkId,
    mode: Mode,
    seed: u64,
    tcp: TcpConfig,
    records: usize,
    nodes: Vec<DhtNode>,
    made: u64,
    /// Whether the nodes use [`OVERLOAD_REQUEST_TIMEOUT`].
    overload: bool,
    /// Where the nodes after the first are bound, if not on the caller's runtime
    /// (local-find-store: the server node on a thread of its own).
    host: Option<tokio::runtime::Handle>,
    /// Whether the nodes bind UDP rather than TCP.
    udp: bool,
    /// Multiplier of the stabilize and finger periods (1: 200 ms and 2 s).
    maintenance_scale: u32,
}

impl Ring {
    /// An empty ring whose nodes will each keep at most `FD_BUDGET / planned` connections.
    fn new(mode: Mode, seed: u64, planned: usize, records: usize) -> Result<Self, String> {
        let net = NetworkId::new("themis-bench").map_err(|e| e.to_string())?;
        let tcp = TcpConfig {
            max_connections: (FD_BUDGET / planned.max(1)).clamp(8, 1024),
            ..TcpConfig::default()
        };
        Ok(Self {
            net,
            mode,
            seed,
            tcp,
            records,
            nodes: Vec::new(),
            made: 0,
            overload: false,
            host: None,
            udp: false,
            maintenance_scale: 1,
        })
    }

    /// The ring of workload 2 for `n` nodes: UDP from [`UDP_FROM_NODES`] on, maintenance
    /// periods scaled beyond [`MAINTENANCE_BASE_NODES`].
    fn for_scaling(mode: Mode, seed: u64, n: usize, records: usize) -> Result<Self, String> {
        let mut r = Self::new(mode, seed, n, records)?;
        r.udp = n >= UDP_FROM_NODES;
        r.maintenance_scale = maintenance_scale(n);
        Ok(r)
    }

    /// Binds a new node (not joined, not in `nodes`).
    async fn make(&mut self) -> Result<DhtNode, String> {
        let s = self.seed.wrapping_mul(1_000_003).wrapping_add(self.made);
        self.made += 1;
        let id = Arc::new(IdentityKeypair::from_seed(&Transcript::digest(
            "themis-bench node",
            &[&s.to_be_bytes()],
        )));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = driver_config(self.mode, s, self.records);
        if self.overload {
            config = with_overload_timeouts(config);
        }
        config.dht.stabilize_period *= self.maintenance_scale;
        config.dht.finger_period *= self.maintenance_scale;
        let (udp, tcp, net) = (self.udp, self.tcp.clone(), self.net.clone());
        let bind = async move {
            if udp {
                DhtNode::bind_udp(addr, UdpConfig::default(), id, net, config).await
            } else {
                DhtNode::bind_tcp(addr, tcp, id, net, config).await
            }
            .map_err(|e| e.to_string())
        };
        match &self.host {
            // the node's tasks are spawned where it is bound
            Some(host) if !self.nodes.is_empty() => host
                .spawn(bind)
                .await
                .map_err(|e| format!("binding a node on its thread: {e}"))?,
            _ => bind.await,
        }
    }

    /// Grows the ring to `n` nodes, each joining through a random earlier one, then waits for
    /// the successor lists to be right (bounded) and a few finger refreshes.
    async fn grow(&mut self, n: usize, settle: Duration) -> Result<(), String> {
        while self.nodes.len() < n {
            let node = self.make().await?;
            if !self.nodes.is_empty() {
                let b = pick(self.nodes.len(), self.seed ^ 0x10, self.made);
                let contact = self.nodes.get(b).map(DhtNode::contact);
                node.join(contact).await.map_err(|e| e.to_string())?;
            }
            self.nodes.push(node);
        }
        self.settle(settle).await;
        Ok(())
    }

    /// Waits until every node's successor list is the true one, or `bound` passes; then a
    /// few seconds (at least one finger period when the periods are scaled up).
    async fn settle(&self, bound: Duration) {
        let ids: Vec<NodeId> = self.nodes.iter().map(DhtNode::id).collect();
        let nodes = &self.nodes;
        settle(ids, bound, self.maintenance_scale, |i| async move {
            let st = nodes.get(i)?.status().await.ok()?;
            Some((st.id, st.successors.iter().map(|p| p.id).collect()))
        })
        .await;
    }

    /// Shuts every node down, all at once.
    async fn shutdown(&self) {
        let mut set = tokio::task::JoinSet::new();
        for node in self.nodes.clone() {
            set.spawn(async move { node.shutdown().await });
        }
        while set.join_next().await.is_some() {}
    }
}

/// Waits until every node's successor list is the true one (`successors(i)`: node `i`'s id
/// and successor list, `None` when it cannot be read), or `bound` passes; then a few seconds
/// (at least one finger period when the periods are scaled up by `maintenance_scale`).
async fn settle<F, Fut>(
    mut ids: Vec<NodeId>,
    bound: Duration,
    maintenance_scale: u32,
    successors: F,
) where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Option<(NodeId, Vec<NodeId>)>>,
{
    let n = ids.len();
    ids.sort();
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let mut ok = true;
        for i in 0..n {
            let Some((id, got)) = successors(i).await else {
                ok = false;
                continue;
            };
            let Some(at) = ids.iter().position(|x| *x == id) else {
                continue;
            };
            let want: Vec<NodeId> = (1..n)
                .take(got.len().max(1))
                .filter_map(|d| ids.get((at + d) % n).copied())
                .collect();
            ok &= n == 1 || (got == want && !got.is_empty());
        }
        if ok || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rest = bound.min(Duration::from_secs(4));
    if maintenance_scale > 1 {
        rest = rest.max(BASE_FINGER_PERIOD * maintenance_scale);
    }
    tokio::time::sleep(rest).await;
}

/// How long a ring may take to stabilize: `bound`, or half a second in the smoke run.
fn settle_for(p: &Params, bound: Duration) -> Duration {
    if p.profile == crate::Profile::Tiny {
        Duration::from_millis(500)
    } else {
        bound
    }
}

/// Sets the point's own peak RSS and open fds (the harness would give the workload's).
fn with_machine(mut m: Measurement, rss_reset: bool) -> Measurement {
    if rss_reset {
        m.peak_rss_kib = machine::peak_rss_kib();
    }
    m.open_fds = machine::open_fds();
    m
}

/// Keeps the points where more than 1 % of the operations failed, each with a note saying so
/// (workload 2: one ring size's failures, at 1,000 nodes on a loaded machine, must not take the
/// other sizes' figures with them; workload 3: 500 joins at once may time out on 2 loaded
/// cores, which must not take the sequential figure with them); fails only where no
/// operation succeeded.
fn check_keeping(name: &str, mode: Mode, out: &mut [Measurement]) -> Result<(), Error> {
    for m in out.iter_mut() {
        if m.ops > 0 && m.errors * 100 > m.ops + m.errors {
            let share = m.errors as f64 * 100.0 / (m.ops + m.errors) as f64;
            let first = m.note.take().unwrap_or_default();
            m.note = Some(format!(
                "{share:.1} % of the operations failed: the figures are those of the rest. {first}"
            ));
        }
    }
    fail_on(name, mode, out, |m| m.ops == 0)
}

/// Fails the run if a point has no successful operation or more than 1 % of them failed.
fn check(name: &str, mode: Mode, out: &[Measurement]) -> Result<(), Error> {
    fail_on(name, mode, out, |m| {
        m.ops == 0 || m.errors * 100 > m.ops + m.errors
    })
}

/// Fails the run with the first point that is `bad`, and its note.
fn fail_on(
    name: &str,
    mode: Mode,
    out: &[Measurement],
    bad: impl Fn(&Measurement) -> bool,
) -> Result<(), Error> {
    match out.iter().find(|m| bad(m)) {
        Some(m) => Err(werr(
            name,
            mode,
            m.note
                .clone()
                .unwrap_or_else(|| format!("{}: most operations failed", m.point)),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_with_failures_is_kept_with_a_note() {
        let mut stats = crate::RunStats::default();
        stats.ok = 900;
        stats.errors = 100;
        stats.elapsed = Duration::from_secs(1);
        let m = Measurement::from_stats("find-scaling", Mode::Secure, "cold N=1000", 1000, &stats);
        assert!(check("find-scaling", Mode::Secure, std::slice::from_ref(&m)).is_err());
        let mut out = vec![m];
        check_keeping("find-scaling", Mode::Secure, &mut out).unwrap();
        assert!(
            out[0]
                .note
                .as_deref()
                .unwrap()
                .starts_with("10.0 % of the operations failed")
        );
        out[0].ops = 0;
        assert!(check_keeping("find-scaling", Mode::Secure, &mut out).is_err());
    }

    #[test]
    fn draws_are_deterministic_and_spread() {
        assert_eq!(random_id(3, 9), random_id(3, 9));
        assert_ne!(random_id(3, 9), random_id(3, 10));
        let mut seen = [0u32; 10];
        for i in 0..1000 {
            seen[pick(10, 5, i)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
