//! The nodes of one benchmark ring, wherever they run: as tasks of the bench process, or
//! spread over node host processes ([`super::host`]). Both are built the same way (the same
//! identities, joins in the same order through the same members) and offer the same
//! operations, so that a workload measures either through one code path.

use std::time::Duration;

use themis_crypto::NodeId;
use themis_dht::{DhtNode, ServiceSpec};

use super::host::Hosts;
use super::{Ring, pick, settle, store_outcome};
use crate::{Mode, machine};

/// A built and settled ring.
pub(crate) enum Members {
    /// Every node in this process.
    Local(Ring),
    /// Nodes in node host processes.
    Hosted(Hosts),
}

/// What the harness records of the processes holding the nodes at a point.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    /// Peak resident set size since the last reset (summed over the host processes), KiB.
    pub(crate) peak_rss_kib: Option<u64>,
    /// Open file descriptors (summed over the host processes).
    pub(crate) open_fds: Option<u64>,
}

impl Members {
    /// Builds the ring of workload 2 for `n` nodes, in this process (`hosts == 0`) or over
    /// `hosts` node host processes, then waits up to `settle_bound` for it to stabilize.
    pub(crate) async fn build(
        mode: Mode,
        seed: u64,
        n: usize,
        records: usize,
        hosts: usize,
        settle_bound: Duration,
    ) -> Result<Self, String> {
        let mut ring = Ring::for_scaling(mode, seed, n, records)?;
        if hosts == 0 {
            ring.grow(n, settle_bound).await?;
            return Ok(Self::Local(ring));
        }
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this executable to start node hosts: {e}"))?;
        let hosted = Hosts::start(&exe, mode, seed, n, hosts, records).await?;
        // The joins of `Ring::grow`: node i through a random earlier node, one at a time.
        for i in 1..n {
            let b = pick(i, seed ^ 0x10, i as u64 + 1);
            let contact = hosted.contact(b).ok_or("no contact")?;
            hosted.join(i, contact).await?;
        }
        let h = &hosted;
        settle(hosted.ids(), settle_bound, ring.maintenance_scale, |i| {
            h.successors(i)
        })
        .await;
        Ok(Self::Hosted(hosted))
    }

    /// Nodes in the ring.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Local(r) => r.nodes.len(),
            Self::Hosted(h) => h.len(),
        }
    }

    fn local(r: &Ring, i: usize) -> Result<&DhtNode, String> {
        r.nodes.get(i).ok_or_else(|| format!("no node {i}"))
    }

    /// Node `i` finds the successor of `target`; returns the hops.
    pub(crate) async fn find(&self, i: usize, target: NodeId) -> Result<u32, String> {
        match self {
            Self::Local(r) => Self::local(r, i)?
                .find(target)
                .await
                .map(|f| f.hops)
                .map_err(|e| format!("find failed: {e}")),
            Self::Hosted(h) => h.find(i, target).await,
        }
    }

    /// Node `i` registers `name` on k + 1 replicas.
    pub(crate) async fn store(&self, i: usize, name: String) -> Result<(), String> {
        match self {
            Self::Local(r) => store_outcome(
                Self::local(r, i)?
                    .register(ServiceSpec::new(name), None)
                    .await,
            ),
            Self::Hosted(h) => h.store(i, name).await,
        }
    }

    /// Key agreements completed (counted on the initiator's side, so once each) and TCP
    /// connections dialed, summed over the nodes.
    pub(crate) async fn setup_counts(&self) -> (u64, u64) {
        match self {
            Self::Local(r) => {
                let mut out = (0, 0);
                for node in &r.nodes {
                    if let Ok(m) = node.metrics().await {
                        out.0 += m.endpoint.handshakes_initiated_ok;
                        out.1 += m.endpoint.transport.connections_dialed;
                    }
                }
                out
            }
            Self::Hosted(h) => h
                .metrics()
                .await
                .map_or((0, 0), |m| (m.handshakes, m.dials)),
        }
    }

    /// DHT requests the nodes have handed to their endpoints, summed (0 where unknown).
    pub(crate) async fn dht_requests(&self) -> u64 {
        match self {
            Self::Local(r) => {
                let mut out = 0;
                for node in &r.nodes {
                    if let Ok(m) = node.metrics().await {
                        out += m.requests_sent;
                    }
                }
                out
            }
            Self::Hosted(h) => h.metrics().await.map_or(0, |m| m.requests),
        }
    }

    /// Resets the peak RSS of the processes holding the nodes; `false` where it cannot.
    pub(crate) async fn reset_peak_rss(&self) -> bool {
        match self {
            Self::Local(_) => machine::reset_peak_rss(),
            Self::Hosted(h) => h.reset_peak_rss().await,
        }
    }

    /// The peak RSS (if `rss_reset`: since the reset) and open fds of the processes holding
    /// the nodes.
    pub(crate) async fn usage(&self, rss_reset: bool) -> Usage {
        match self {
            Self::Local(_) => Usage {
                peak_rss_kib: machine::peak_rss_kib().filter(|_| rss_reset),
                open_fds: machine::open_fds(),
            },
            Self::Hosted(h) => h.metrics().await.map_or_else(
                |_| Usage::default(),
                |m| Usage {
                    peak_rss_kib: m.peak_rss_kib.filter(|_| rss_reset),
                    open_fds: m.open_fds,
                },
            ),
        }
    }

    /// Shuts every node down (and the host processes).
    pub(crate) async fn shutdown(self) {
        match self {
            Self::Local(r) => r.shutdown().await,
            Self::Hosted(h) => h.shutdown().await,
        }
    }
}
