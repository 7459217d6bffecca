//! `themis node --dns ADDR`: a DNS interface to discovery (like Consul's), served with
//! `hickory-server` on UDP and TCP, so that a client in any language finds a service with its
//! system resolver.
//!
//! | name | type | answer |
//! |---|---|---|
//! | `NAME.service.themis` | `A` / `AAAA` | the addresses of the providers of `NAME` |
//! | `NAME.service.themis` | `SRV` | one record per provider: priority = its rank, weight = its announced weight, its port, target `ID16.node.themis` (with its address in the additional section) |
//! | `ID16.node.themis` | `A` / `AAAA` | a provider met in an answer, or this node (ID16: the first 16 hex digits of the node id) |
//!
//! Answers come from a fresh discovery (the DHT, not the cache: `MeshNode::discover_detailed`).
//! Providers are listed in the order a [`Balancer`] picks them (the canary split by version
//! weight, then weighted choice), drawn anew for each query, so that clients that take the
//! first answer spread their load as the mesh would. The TTL is the shortest remaining lifetime
//! of the providers' records, at most [`MAX_TTL`] (a crashed provider leaves the answers
//! within that time once its record is gone). An unknown service is `NXDOMAIN`, a DHT that
//! cannot answer now `SERVFAIL`, a name outside `themis.` `REFUSED` (no recursion).
//! Service names are matched in lower case (DNS names are case-insensitive).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use themis_mesh::{Balancer, BalancerConfig, MeshNode, NodeId, Provider, ProviderRecord};

use crate::error::Error;

/// The longest TTL given.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(30);
/// Services a balancer is kept for (the order of their providers), and providers remembered
/// for `ID16.node.themis`.
const MAX_SERVICES: usize = 256;
const MAX_NODES: usize = 4096;
/// How long a TCP client may stay silent.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a query name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `NAME.service.themis`.
    Service(String),
    /// `ID16.node.themis`.
    Node(String),
    /// Another name under `themis.`: no such name.
    Unknown,
    /// A name outside `themis.`: refused.
    Outside,
}

/// Reads a query name (lower case, with or without the final dot).
pub(crate) fn target(name: &str) -> Target {
    let name = name.trim_end_matches('.');
    let Some(rest) = name
        .strip_suffix(".themis")
        .or((name == "themis").then_some(""))
    else {
        return Target::Outside;
    };
    if let Some(service) = rest.strip_suffix(".service")
        && !service.is_empty()
    {
        return Target::Service(service.to_owned());
    }
    if let Some(id) = rest.strip_suffix(".node")
        && id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Target::Node(id.to_owned());
    }
    Target::Unknown
}

/// The label of a node: the first 16 hex digits of its id.
pub(crate) fn node_label(id: &NodeId) -> String {
    id.to_string().chars().take(16).collect()
}

/// The TTL of an answer: the shortest remaining lifetime of `records` at `now`, in whole
/// seconds, at most [`MAX_TTL`], at least 1.
pub(crate) fn ttl(records: &[ProviderRecord], now: Instant) -> u32 {
    let shortest = records
        .iter()
        .map(|r| r.expires_at.saturating_duration_since(now))
        .min()
        .unwrap_or(MAX_TTL)
        .min(MAX_TTL);
    u32::try_from(shortest.as_secs()).unwrap_or(1).max(1)
}

/// The records answering `qtype` for the providers `ordered` (best first) of a service whose
/// DNS name is `qname`: the answers and the additional records.
pub(crate) fn service_records(
    qname: &Name,
    qtype: RecordType,
    ordered: &[Provider],
    ttl: u32,
) -> (Vec<Record>, Vec<Record>) {
    let address = |name: &Name, ip: IpAddr| match ip {
        IpAddr::V4(v4) => Record::from_rdata(name.clone(), ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6))),
    };
    let mut answers = Vec::new();
    let mut additional = Vec::new();
    let mut seen = Vec::new();
    for (rank, p) in ordered.iter().enumerate() {
        let ip = p.addr.ip();
        let wants_ip = match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            RecordType::ANY => true,
            _ => false,
        };
        if wants_ip && !seen.contains(&ip) {
            seen.push(ip);
            answers.push(address(qname, ip));
        }
        if matches!(qtype, RecordType::SRV | RecordType::ANY) {
            let Ok(target) = Name::from_ascii(format!("{}.node.themis.", node_label(&p.id))) else {
                continue;
            };
            let srv = SRV::new(
                u16::try_from(rank).unwrap_or(u16::MAX),
                u16::try_from(p.weight).unwrap_or(u16::MAX),
                p.addr.port(),
                target.clone(),
            );
            answers.push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
            additional.push(address(&target, ip));
        }
    }
    (answers, additional)
}

/// The state of the DNS interface.
struct Handler {
    node: MeshNode,
    balancers: Mutex<HashMap<String, Balancer>>,
    nodes: Mutex<HashMap<String, IpAddr>>,
    seed: u64,
}

impl Handler {
    /// The providers of `service` in the order a balancer picks them now.
    fn order(&self, service: &str, providers: Vec<Provider>) -> Vec<Provider> {
        let now = Instant::now();
        let Ok(mut all) = self.balancers.lock() else {
            return providers;
        };
        if !all.contains_key(service) {
            if all.len() >= MAX_SERVICES
                && let Some(k) = all.keys().next().cloned()
            {
                all.remove(&k);
            }
            let mut cfg = BalancerConfig::default();
            // Every provider is ranked: as many picks as providers, none refused for budget.
            cfg.max_attempts = u32::MAX;
            cfg.retry_budget.retry_percent = 100;
            cfg.retry_budget.min_retries_per_sec = 1_000_000;
            match Balancer::new(service, cfg, self.seed ^ fxhash(service), now) {
                Ok(b) => {
                    all.insert(service.to_owned(), b);
                }
                Err(_) => return providers,
            }
        }
        let Some(b) = all.get_mut(service) else {
            return providers;
        };
        b.set_providers(providers.iter().cloned(), now);
        let mut call = b.begin_call(now);
        let mut ordered = Vec::with_capacity(providers.len());
        while ordered.len() < providers.len() {
            let Ok(pick) = b.pick(&mut call, now) else {
                break;
            };
            b.on_cancel(&pick.id);
            match providers.iter().find(|p| p.id == pick.id) {
                Some(p) if !ordered.iter().any(|o: &Provider| o.id == p.id) => {
                    ordered.push(p.clone());
                }
                _ => break,
            }
        }
        // Providers the balancer would not pick now (ejected) go last.
        for p in providers {
            if !ordered.iter().any(|o| o.id == p.id) {
                ordered.push(p);
            }
        }
        ordered
    }

    fn remember(&self, providers: &[Provider]) {
        if let Ok(mut n) = self.nodes.lock() {
            for p in providers {
                if n.len() >= MAX_NODES && !n.contains_key(&node_label(&p.id)) {
                    n.clear();
                }
                n.insert(node_label(&p.id), p.addr.ip());
            }
        }
    }

    /// Answers one question: (code, answers, additional).
    async fn answer(
        &self,
        qname: &Name,
        qtype: RecordType,
    ) -> (ResponseCode, Vec<Record>, Vec<Record>) {
        let lower = LowerName::from(qname.clone()).to_string();
        match target(&lower) {
            Target::Outside => (ResponseCode::Refused, vec![], vec![]),
            Target::Unknown => (ResponseCode::NXDomain, vec![], vec![]),
            Target::Node(label) => {
                let ip = if label == node_label(&self.node.id()) {
                    Some(self.node.contact().addr.ip())
                } else {
                    self.nodes.lock().ok().and_then(|n| n.get(&label).copied())
                };
                let Some(ip) = ip else {
                    return (ResponseCode::NXDomain, vec![], vec![]);
                };
                let fake = Provider::new(self.node.id(), SocketAddr::new(ip, 0), "", 1);
                let (a, _) = service_records(qname, qtype, &[fake], MAX_TTL.as_secs() as u32);
                (ResponseCode::NoError, a, vec![])
            }
            Target::Service(name) => match self.node.discover_detailed(&name).await {
                Ok(d) => {
                    let ttl = ttl(&d.providers, Instant::now());
                    let providers: Vec<Provider> =
                        d.providers.into_iter().map(|r| r.provider).collect();
                    self.remember(&providers);
                    let ordered = self.order(&name, providers);
                    let (a, add) = service_records(qname, qtype, &ordered, ttl);
                    (ResponseCode::NoError, a, add)
                }
                Err(themis_mesh::Error::NotFound { .. }) => {
                    (ResponseCode::NXDomain, vec![], vec![])
                }
                Err(e) => {
                    tracing::info!(service = %name, error = %e, "DNS: discovery failed");
                    (ResponseCode::ServFail, vec![], vec![])
                }
            },
        }
    }
}

/// A small stable hash of a name (each service's balancer seed).
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Implements hickory's handler on a shared [`Handler`].
struct Shared(Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        meta.recursion_available = false;
        let Ok(info) = request.request_info() else {
            meta.response_code = ResponseCode::FormErr;
            let r = builder.build_no_records(meta);
            return send(&mut response, r, request).await;
        };
        let qname: Name = info.query.original().name().clone();
        let (code, answers, additional) = self.0.answer(&qname, info.query.query_type()).await;
        meta.response_code = code;
        let r = builder.build(meta, answers.iter(), [], [], additional.iter());
        send(&mut response, r, request).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    r: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match response.send_response(r).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "DNS: the answer could not be sent");
            let mut meta = Metadata::response_from_request(&request.metadata);
            meta.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_server::proto::op::Header {
                metadata: meta,
                counts: Default::default(),
            })
        }
    }
}

/// A running DNS interface.
pub(crate) struct DnsServer {
    addr: SocketAddr,
    server: Server<Shared>,
}

impl DnsServer {
    /// Serves DNS for `node` on `addr` (UDP and TCP, the same port).
    pub(crate) async fn start(addr: &str, node: MeshNode) -> Result<Self, Error> {
        let want = crate::cli::bind_addr("DNS address", addr).await?;
        let listen_err = |e: std::io::Error, proto: &str| Error::Listen {
            detail: format!(
                "cannot listen on {want} ({proto}) for DNS: {e} (pick another address with --dns; ports below 1024 need privileges)"
            ),
        };
        let udp = tokio::net::UdpSocket::bind(want)
            .await
            .map_err(|e| listen_err(e, "UDP"))?;
        let addr = udp.local_addr().map_err(|e| listen_err(e, "UDP"))?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| listen_err(e, "TCP"))?;
        let mut seed = [0u8; 8];
        themis_mesh::crypto::fill_random(&mut seed);
        let handler = Handler {
            node,
            balancers: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
            seed: u64::from_le_bytes(seed),
        };
        let mut server = Server::new(Shared(Arc::new(handler)));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, 64 * 1024);
        tracing::info!(%addr, "DNS interface: NAME.service.themis");
        Ok(Self { addr, server })
    }

    /// The address it serves on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub(crate) fn stop(self) {
        self.server.shutdown_token().cancel();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_services_and_nodes() {
        assert_eq!(
            target("hello.service.themis."),
            Target::Service("hello".into())
        );
        assert_eq!(target("a.b.service.themis"), Target::Service("a.b".into()));
        assert_eq!(
            target("0123456789abcdef.node.themis."),
            Target::Node("0123456789abcdef".into())
        );
        assert_eq!(target("xyz.node.themis."), Target::Unknown);
        assert_eq!(target(".service.themis."), Target::Unknown);
        assert_eq!(target("themis."), Target::Unknown);
        assert_eq!(target("example.com."), Target::Outside);
        assert_eq!(target("service.themis.example.com."), Target::Outside);
    }

    #[test]
    fn records_follow_the_order_and_the_type() {
        let p = |b: u8, addr: &str, w: u32| {
            Provider::new(NodeId::from_bytes([b; 32]), addr.parse().unwrap(), "1.0", w)
        };
        let ordered = [
            p(2, "10.0.0.2:7002", 5),
            p(1, "10.0.0.1:7001", 95),
            p(3, "[::1]:7003", 1),
        ];
        let q = Name::from_ascii("check.service.themis.").unwrap();
        let (a, add) = service_records(&q, RecordType::A, &ordered, 7);
        assert_eq!(a.len(), 2);
        assert!(add.is_empty());
        assert_eq!(&a[0].data, &RData::A(A("10.0.0.2".parse().unwrap())));
        assert_eq!(a[0].ttl, 7);
        let (aaaa, _) = service_records(&q, RecordType::AAAA, &ordered, 7);
        assert_eq!(aaaa.len(), 1);
        let (srv, add) = service_records(&q, RecordType::SRV, &ordered, 7);
        assert_eq!(srv.len(), 3);
        assert_eq!(add.len(), 3);
        let RData::SRV(first) = &srv[0].data else {
            panic!()
        };
        assert_eq!((first.priority, first.weight, first.port), (0, 5, 7002));
        assert!(
            first
                .target
                .to_ascii()
                .starts_with("0202020202020202.node.themis")
        );
    }

    #[test]
    fn the_ttl_is_the_shortest_remaining_lifetime_capped() {
        let now = Instant::now();
        let rec = |secs| {
            ProviderRecord::new(
                Provider::new(
                    NodeId::from_bytes([1; 32]),
                    "10.0.0.1:1".parse().unwrap(),
                    "",
                    1,
                ),
                1,
                now + Duration::from_secs(secs),
            )
        };
        assert_eq!(ttl(&[rec(600), rec(12)], now), 12);
        assert_eq!(ttl(&[rec(600)], now), MAX_TTL.as_secs() as u32);
        assert_eq!(ttl(&[rec(0)], now), 1);
    }
}
