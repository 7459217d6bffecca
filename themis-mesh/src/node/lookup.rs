//! Discovery over the replicas of a name (paper §7), and where a service's records live.
//!
//! A name is stored under `k + 1` object ids `h(name ‖ r)`. Discovery runs the pure plan
//! [`ReplicaSearch`]: it says which replica to ask next, this module asks the DHT for that
//! replica's records ([`themis_dht::DhtNode::lookup_replica`]) and reports each answer or
//! failure back; the plan falls back to siblings of dead replicas and merges the answers.
//!
//! [`MeshNode::locate`] adds, for operators (the node agent's discovery answer, the `themis
//! demo` report), the node the DHT names responsible for each replica.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use themis_crypto::NodeId;
use themis_dht::{QueryError, object_id};

use super::{MeshNode, now};
use crate::policy::{ReplicaSearch, SearchConfig};
use crate::{Error, Provider, ProviderRecord};

/// The plan discovery runs: every replica `0..=k` at once (at most `max_k + 1` = 9 lookups),
/// and the records of all that answer merged: per provider the highest sequence number wins,
/// and a provider whose newest record is a tombstone is dropped (issue 11). Beyond paper §7,
/// which walks the replicas until one answers: a single stale or poisoned replica answering
/// first could then hide the providers the others hold, or bring back a withdrawn one.
/// Cost: k + 1 provider lookups per cold discovery instead of one (a warm discovery is served
/// by the cache and sends nothing).
fn search_config(k: u8, max_records: usize) -> SearchConfig {
    let replicas = u32::from(k) + 1;
    SearchConfig {
        parallelism: replicas,
        enough_answers: replicas,
        max_records,
    }
}

/// What a replica search found.
#[derive(Debug)]
pub(crate) struct Searched {
    /// Verified, merged, unexpired records (empty: no replica has any).
    pub(crate) records: Vec<ProviderRecord>,
    /// The lowest replica index that answered with live records; without records, the
    /// highest replica index asked (`k`, as the former walk over `0..=k` ended).
    pub(crate) replica: u8,
    /// Hops of that replica's lookup (0 when it failed).
    pub(crate) hops: u32,
    /// Providers whose newest record is a tombstone: they withdrew the service.
    pub(crate) withdrawn: Vec<NodeId>,
}

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
    /// The replication factor `k` of this node's lookups: the configured one, or the DHT's
    /// default, clamped to its maximum (as the DHT clamps it).
    pub(crate) fn lookup_k(&self) -> u8 {
        let dht = &self.inner.config.driver.dht;
        self.inner.config.k.unwrap_or(dht.default_k).min(dht.max_k)
    }

    /// Searches the replicas of `service` afresh (paper §7: "initiate a find operation for a
    /// sibling object, until a node with a healthy state is found"), as [`ReplicaSearch`]
    /// plans it. Fails with the DHT's error when no replica's lookup succeeded at all (the
    /// ring partitioned or repairing), and after `config.driver.command_timeout` at the
    /// latest.
    pub(crate) async fn search_replicas(&self, service: &str) -> Result<Searched, Error> {
        let limit = self.inner.config.driver.command_timeout;
        match tokio::time::timeout(limit, self.run_search(service)).await {
            Ok(result) => result,
            Err(_) => Err(themis_dht::Error::TimedOut {
                what: "provider lookup",
                after: limit,
            }
            .into()),
        }
    }

    async fn run_search(&self, service: &str) -> Result<Searched, Error> {
        let k = self.lookup_k();
        let config = search_config(k, self.inner.config.cache.max_records);
        let mut search = ReplicaSearch::new(service, k, 0, config)?;
        let dht = &self.inner.dht;
        let mut asking = FuturesUnordered::new();
        let (mut found, mut last) = (None, (0, 0));
        let mut unanswered: Option<themis_dht::Error> = None;
        let mut answered = false;
        // Once one replica has answered, the others get `discovery_wait` more: a replica whose
        // responsible node just crashed costs that, not a lookup's request timeouts.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            while let Some(r) = search.next_query() {
                asking.push(async move { (r, dht.lookup_replica(service, r).await) });
            }
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, asking.next()).await {
                    Ok(next) => next,
                    // The stragglers' lookups go on in the DHT; their answers are dropped.
                    Err(_) => break,
                },
                None => asking.next().await,
            };
            let Some((r, result)) = next else {
                break;
            };
            match result {
                Ok(p) => {
                    answered = true;
                    deadline.get_or_insert_with(|| {
                        tokio::time::Instant::now() + self.inner.config.discovery_wait
                    });
                    last = last.max((r, p.hops));
                    let mut records =
                        policy_records(&p.records, now(), &self.inner.successions.network);
                    records.extend(
                        policy_records(&p.withdrawn, now(), &self.inner.successions.network)
                            .into_iter()
                            .map(|r| {
                                ProviderRecord::withdrawal(r.provider, r.sequence, r.expires_at)
                            }),
                    );
                    if records.iter().any(|r| !r.withdrawn) && found.is_none_or(|(f, _)| r < f) {
                        found = Some((r, p.hops));
                    }
                    search.on_answer(r, records);
                }
                // The responsible node of this replica is dead or unreachable: a sibling next.
                Err(
                    e @ themis_dht::Error::Query {
                        reason: QueryError::Exhausted,
                        ..
                    },
                ) => {
                    last = last.max((r, 0));
                    unanswered = Some(e);
                    search.on_failure(r);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let (false, Some(e)) = (answered, unanswered) {
            return Err(e.into());
        }
        let (records, withdrawn) = search.finish_split(now());
        let (replica, hops) = found.unwrap_or(last);
        Ok(Searched {
            records,
            replica,
            hops,
            withdrawn,
        })
    }

    /// Locates `service` afresh, bypassing the discovery cache: runs the replica search of
    /// discovery (replicas `0..=k` in turn, paper §7) and a `find` of each replica's object id
    /// (paper §6.1) to name the node responsible for it. Several `find`s: meant for operators
    /// and demos, not for every call (use [`MeshNode::discover`] there).
    ///
    /// A `find` that fails leaves that replica's `responsible` empty; only a failed search is
    /// an error.
    pub async fn locate(&self, service: &str) -> Result<ServiceLocation, Error> {
        let found = self.search_replicas(service).await?;
        let k = self.lookup_k();
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
        Ok(ServiceLocation {
            service: service.to_owned(),
            replicas,
            found_under: found.replica,
            lookup_hops: found.hops,
            providers: found.records.into_iter().map(|r| r.provider).collect(),
        })
    }
}

/// The verified records of one lookup as the policies see them: the provider, and the expiry
/// moved from the records' wall clock to the monotonic clock at `t`.
fn policy_records(
    found: &[themis_dht::ProviderRecord],
    t: Instant,
    network: &themis_crypto::NetworkId,
) -> Vec<ProviderRecord> {
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    found
        .iter()
        .map(|r| {
            let m = r.metadata();
            let left = Duration::from_millis(r.expires_unix_ms().saturating_sub(wall_ms));
            let p = Provider::new(
                r.provider(),
                r.addr(),
                m.version.clone(),
                u32::from(m.weight),
            )
            .with_tags(m.tags.clone());
            let mut record = ProviderRecord::new(p, r.seq(), t + left);
            // Key rotation (PROTOCOL.md §6.4 `succ`): the old id this provider succeeds, while
            // its statement is in force.
            record.succeeds = r
                .succession(network)
                .filter(|s| {
                    s.check_in_force(wall_ms, super::succession::MAX_CLOCK_SKEW_MS)
                        .is_ok()
                })
                .map(|s| s.old_id());
            record
        })
        .collect()
}
