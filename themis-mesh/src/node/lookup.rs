//! Where a service's records live (paper §7): its `k + 1` replica object ids, the node the DHT
//! names responsible for each, and the replica a fresh lookup found the providers under. For
//! operators, the node agent's discovery answer and the `themis demo` report.

use std::net::SocketAddr;

use themis_crypto::NodeId;
use themis_dht::object_id;

use super::MeshNode;
use crate::{Error, Provider};

/// One replica of a service name: `object_id = h(name ‖ r)` (paper §6.1 store, §7) and the node
/// responsible for it (its ring successor) as the DHT's `find` sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaPlacement {
    /// The replica index `r` (0..=k).
    pub replica: u8,
    /// The object id the records of replica `r` are stored under.
    pub object_id: NodeId,
    /// The responsible node's id and address, or `None` when the `find` failed (the ring
    /// repairing after a crash, for example).
    pub responsible: Option<(NodeId, SocketAddr)>,
    /// Hops the `find` took (0: answered from this node's own table).
    pub hops: u32,
}

/// The answer of [`MeshNode::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceLocation {
    /// The service name.
    pub service: String,
    /// Every replica `0..=k`, in order, with its responsible node.
    pub replicas: Vec<ReplicaPlacement>,
    /// The replica a fresh provider lookup found records under: the first of `0..=k` whose
    /// responsible node answered with any (paper §7: siblings are tried when one fails).
    pub found_under: u8,
    /// Hops of that lookup (its last replica).
    pub lookup_hops: u32,
    /// The verified providers found there (empty when no replica has any).
    pub providers: Vec<Provider>,
}

impl MeshNode {
    /// Locates `service` afresh, bypassing the discovery cache: runs the DHT's provider lookup
    /// (replicas `0..=k` in turn, paper §7) and a `find` of each replica's object id (paper
    /// §6.1) to name the node responsible for it. Several `find`s: meant for operators and
    /// demos, not for every call (use [`MeshNode::discover`] there).
    ///
    /// A `find` that fails leaves that replica's `responsible` empty; only a failed provider
    /// lookup is an error.
    pub async fn locate(&self, service: &str) -> Result<ServiceLocation, Error> {
        let k = self.inner.config.k;
        let found = self.inner.dht.lookup_providers(service, k).await?;
        // The same k the lookup used (the DHT's default, clamped to its maximum).
        let dht = &self.inner.config.driver.dht;
        let k = k.unwrap_or(dht.default_k).min(dht.max_k);
        let mut replicas = Vec::with_capacity(usize::from(k) + 1);
        for r in 0..=k {
            let oid = object_id(service, r);
            let (responsible, hops) = match self.inner.dht.find(oid).await {
                Ok(f) => (Some((f.successor.id, f.successor.addr)), f.hops),
                Err(_) => (None, 0),
            };
            replicas.push(ReplicaPlacement {
                replica: r,
                object_id: oid,
                responsible,
                hops,
            });
        }
        let providers = found
            .records
            .iter()
            .map(|rec| {
                let m = rec.metadata();
                Provider::new(
                    rec.provider(),
                    rec.addr(),
                    m.version.clone(),
                    u32::from(m.weight),
                )
                .with_tags(m.tags.clone())
            })
            .collect();
        Ok(ServiceLocation {
            service: service.to_owned(),
            replicas,
            found_under: found.replica,
            lookup_hops: found.hops,
            providers,
        })
    }
}
