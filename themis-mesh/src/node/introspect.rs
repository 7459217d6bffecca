//! What an operator (or the `themis` node agent) can ask a running [`MeshNode`]: its ring
//! view and sessions, the services it provides, counters, and discovery with its details (which
//! replica object ids a name lives under and which one answered).
//!
//! Kept apart from `mod.rs` so that the data path (register / discover / call) stays short.

use std::net::SocketAddr;

use themis_crypto::NodeId;
use themis_dht::{NodeMetrics, Status};

use super::MeshNode;
use crate::{Error, ProviderRecord};

/// A snapshot of a node for operators: ring view, sessions and provided services.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshStatus {
    /// This node's id.
    pub id: NodeId,
    /// The address the endpoint listens on.
    pub listen: SocketAddr,
    /// The DHT's view of the ring: state, predecessor, successor list, fingers, stored records.
    pub ring: Status,
    /// Peers with a live secure session (or insecure channel).
    pub sessions: usize,
    /// Services this node provides, sorted.
    pub services: Vec<String>,
    /// The replication factor `k` used for this node's records (`k + 1` replicas).
    pub k: u8,
}

/// Discovery with its details: the providers of a name and where they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Discovery {
    /// The service name.
    pub service: String,
    /// Verified, merged provider records (never empty: no provider is [`Error::NotFound`]).
    pub providers: Vec<ProviderRecord>,
    /// The object ids of the name's `k + 1` replicas, index `r` = replica `r`
    /// (`object_id(name, r)`, paper §7).
    pub object_ids: Vec<NodeId>,
    /// The replica the records came from (the first one that answered with records; a later
    /// one when the responsible node of an earlier one is dead, paper §7).
    pub replica: u8,
    /// Hops of the lookup that found that replica's responsible node.
    pub hops: u32,
}

impl MeshNode {
    /// The replication factor `k` this node uses (records on `k + 1` replicas).
    pub fn replication(&self) -> u8 {
        self.lookup_k()
    }

    /// The services this node provides now, sorted.
    pub fn provided_services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .services
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A snapshot of the node for operators (ring view from the DHT driver, sessions from the
    /// endpoint, provided services).
    pub async fn status(&self) -> Result<MeshStatus, Error> {
        let ring = self.inner.dht.status().await?;
        Ok(MeshStatus {
            id: self.id(),
            listen: self.inner.dht.endpoint().local_addr(),
            ring,
            sessions: self.inner.dht.endpoint().sessions(),
            services: self.provided_services(),
            k: self.replication(),
        })
    }

    /// The counters of the DHT core, its driver, the endpoint and the transport.
    pub async fn metrics(&self) -> Result<NodeMetrics, Error> {
        Ok(self.inner.dht.metrics().await?)
    }

    /// Discovers `service` afresh from the DHT (bypassing the discovery cache, whose entry it
    /// refreshes) and tells where the records were found. No live provider record on any of the
    /// `k + 1` replicas is [`Error::NotFound`].
    pub async fn discover_detailed(&self, service: &str) -> Result<Discovery, Error> {
        let k = self.lookup_k();
        let found = self.search_replicas(service).await?;
        self.absorb(service, &found)?;
        if found.records.is_empty() {
            return Err(Error::NotFound {
                service: service.to_owned(),
                replicas: u32::from(k) + 1,
            });
        }
        Ok(Discovery {
            service: service.to_owned(),
            providers: found.records,
            object_ids: (0..=k).map(|r| themis_dht::object_id(service, r)).collect(),
            replica: found.replica,
            hops: found.hops,
        })
    }
}
