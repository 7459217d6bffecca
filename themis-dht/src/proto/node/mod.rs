//! The node: a sans-I/O state machine (quinn-proto style). Inputs are `handle_request`,
//! `handle_response` and `handle_timeout`, each with `now`; commands are `find`, `register`,
//! `lookup_providers`, `join` and `leave`; outputs come from `poll_output` and `poll_timeout`.
//!
//! This module holds the node itself and its three inputs, which hand each message to the
//! part of the node that owns it:
//! - [`routing`]: the view of the ring (predecessor, successors, fingers, routing table);
//! - [`maintenance`]: stabilize, notify/rectify, the predecessor check, the finger sweep;
//! - [`join`] and [`leave`]: membership, and the hand-off of records between neighbours;
//! - [`queries`]: finds, provider lookups and the other work that runs a lookup;
//! - [`lookups`]: the iterative lookups themselves, and the responder side of a find;
//! - [`registrations`]: the names provided here, their replica stores and re-store schedule;
//! - [`storage`]: which records the object table accepts, and which a reader believes;
//! - [`requests`]: correlation of the requests this node sends, and their deadlines;
//! - [`unify`]: the lost-peer table, its probes, and the merge of two rings after a partition.
//!
//! Per-peer rate limits are a [`KeyedLimiter`] (the same token bucket as the endpoint's).

mod api;
mod join;
mod leave;
mod lookups;
mod maintenance;
mod moves;
mod queries;
mod registrations;
mod requests;
mod routing;
mod storage;
#[cfg(test)]
mod tests;
mod unify;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use themis_channel::KeyedLimiter;
use themis_crypto::{IdentityKeypair, NetworkId, NodeId};

pub use self::api::{
    Contact, Event, Found, NodeState, Output, Providers, QueryError, QueryId, Reply,
    RequestFailure, Unregister,
};
use self::join::JoinState;
use self::leave::LeaveState;
use self::maintenance::Maintenance;
use self::queries::Queries;
use self::registrations::Registrations;
use self::requests::{Pending, Purpose, Requests};
use self::routing::RingView;
use self::unify::LostTable;
use super::config::Config;
use super::metrics::Metrics;
use super::owners::OwnerCache;
use super::peers::PeerCache;
use super::record::{ProviderRecord, Refusal};
use super::rtt::RttEstimator;
use super::store::{Kept, ObjectStore};
use super::verified::VerifiedCache;
use super::wire::{Peer, Request, Response};
use crate::Error;

/// The node's lifecycle, with the state of a join or leave in progress.
#[derive(Debug)]
enum State {
    Member,
    Joining(JoinState),
    Leaving(LeaveState),
    Left,
}

/// A DHT node: ring state, object table, registrations and queries, with no I/O.
///
/// See the crate documentation for the calling pattern.
pub struct Node {
    cfg: Config,
    identity: Arc<IdentityKeypair>,
    network: NetworkId,
    /// `now` when the node was created, and the wall-clock time then (Unix ms).
    anchor: Instant,
    wall_anchor_ms: u64,
    /// Timer jitter, from the caller's seed.
    rng: fastrand::Rng,
    state: State,
    ring: RingView,
    maint: Maintenance,
    store: ObjectStore,
    /// Copies of records handed to a new predecessor (PROTOCOL.md §6.9, "Handed records kept").
    kept: Kept,
    /// Record signatures known to verify (`Config::verified_cache_size`, LRU).
    verified: VerifiedCache,
    /// Owners learnt from the lookups that ended (`Config::owner_cache_size`).
    owners: OwnerCache,
    /// Peers that answered lookup queries lately (`Config::peer_cache_size`).
    peers: PeerCache,
    /// Round trips of the lookup queries: how long a new lookup waits before it hedges.
    rtt: RttEstimator,
    regs: Registrations,
    queries: Queries,
    requests: Requests,
    rates: KeyedLimiter<NodeId>,
    /// Bootstraps of the last join, remembered for a re-join.
    bootstraps: Vec<Contact>,
    /// Lost peers and bootstraps probed for another ring (PROTOCOL.md §6.14).
    lost: LostTable,
    outputs: VecDeque<Output>,
    metrics: Metrics,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.ring.me)
            .field("state", &self.state())
            .field("pred", &self.ring.pred)
            .field("succs", &self.ring.succs)
            .field("pending", &self.requests.len())
            .field("queries", &self.queries.map.len())
            .field("stabilize_in_flight", &self.maint.stabilize_in_flight)
            .field("next_stabilize", &self.maint.next_stabilize)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The earliest of some instants.
fn earliest(ts: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    ts.into_iter().flatten().min()
}

impl Node {
    /// Creates a node that forms a ring of its own (the first node of a network); call
    /// [`Node::join`] to join an existing ring instead.
    ///
    /// `wall_clock` is the wall-clock time at `now`: record expiries are absolute Unix times
    /// (so readers can check them) and the core derives them from `now` without reading a clock.
    /// `rng_seed` seeds timer jitter.
    pub fn new(
        config: Config,
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        local_addr: SocketAddr,
        now: Instant,
        wall_clock: SystemTime,
        rng_seed: u64,
    ) -> Self {
        let cfg = config.sanitized();
        let me = Peer {
            id: identity.node_id(&network),
            addr: local_addr,
        };
        let wall_anchor_ms = wall_clock.duration_since(UNIX_EPOCH).map(ms).unwrap_or(0);
        let mut n = Self {
            identity,
            network,
            anchor: now,
            wall_anchor_ms,
            rng: fastrand::Rng::with_seed(rng_seed),
            state: State::Member,
            ring: RingView::new(me, cfg.successor_list_len),
            maint: Maintenance::new(now),
            store: ObjectStore::default(),
            kept: Kept::default(),
            verified: VerifiedCache::new(cfg.verified_cache_size),
            owners: OwnerCache::new(cfg.owner_cache_size, cfg.owner_cache_ttl),
            peers: PeerCache::new(cfg.peer_cache_size, cfg.peer_cache_ttl),
            rtt: RttEstimator::default(),
            regs: Registrations::default(),
            queries: Queries::default(),
            requests: Requests::new(cfg.max_pending_requests),
            rates: KeyedLimiter::new(
                cfg.peer_rate_per_sec,
                cfg.peer_rate_burst,
                cfg.max_rate_tracked_peers,
            ),
            bootstraps: Vec::new(),
            lost: LostTable::new(now),
            outputs: VecDeque::new(),
            metrics: Metrics::default(),
            cfg,
        };
        n.maint.next_stabilize = now + n.jitter(n.cfg.stabilize_period);
        n.maint.next_fingers = now + n.jitter(n.cfg.finger_period);
        n.maint.next_check_pred = now + n.jitter(n.cfg.check_predecessor_period);
        n.maint.next_sweep = now + n.cfg.expiry_sweep_period;
        // the first probe round (jittered from then on); drawing no jitter here keeps the
        // timer schedule of a node that never loses a peer as it was
        n.lost.next_probe = now + n.cfg.unify_probe_period;
        n
    }

    // ----- getters -----

    /// This node as a peer (id and listening address).
    pub fn peer(&self) -> Peer {
        self.ring.me
    }
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.ring.me.id
    }
    /// The predecessor, if known.
    pub fn predecessor(&self) -> Option<Peer> {
        self.ring.pred
    }
    /// The successor list (empty when alone on the ring).
    pub fn successors(&self) -> &[Peer] {
        &self.ring.succs
    }
    /// The distinct finger-table entries.
    pub fn fingers(&self) -> Vec<Peer> {
        self.ring.distinct_fingers()
    }
    /// Where the node stands: member, joining, leaving or left.
    pub fn state(&self) -> NodeState {
        match self.state {
            State::Member => NodeState::Member,
            State::Joining(_) => NodeState::Joining,
            State::Leaving(_) => NodeState::Leaving,
            State::Left => NodeState::Left,
        }
    }
    /// True while the node takes part in the ring (member or leaving).
    pub fn is_member(&self) -> bool {
        matches!(self.state, State::Member | State::Leaving(_))
    }
    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        m.stored_records = self.store.len() as u64;
        m
    }
    /// Records stored here under `oid` (for tests and diagnostics).
    pub fn stored(&self, oid: &NodeId) -> &[ProviderRecord] {
        self.store.get(oid)
    }
    /// Number of records in the object table.
    pub fn stored_len(&self) -> usize {
        self.store.len()
    }
    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The wall-clock time at `now`, in milliseconds since the Unix epoch.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.wall_anchor_ms
            .saturating_add(ms(now.saturating_duration_since(self.anchor)))
    }

    // ----- outputs -----

    /// The next output; call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next; ask again after every input (an
    /// input can bring the time forward, e.g. a query that ends lets due re-stores start).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = match &self.state {
            State::Joining(j) => j.retry_at,
            State::Left => None,
            // Re-stores run only while a member (`handle_timeout`): a leaving node must not ask
            // for a timer it will not clear, or its driver would wake up in a loop.
            State::Member => earliest([
                Some(self.maint.next_due()),
                // due re-stores wait for a free query slot; the timer is asked for again after
                // the input that ends a query
                self.regs.next_due().filter(|_| self.query_room()),
                self.regs.change_due(),
                (!self.lost.is_empty()).then_some(self.lost.next_probe),
            ]),
            State::Leaving(ls) => earliest([Some(self.maint.next_due()), ls.retry_at]),
        };
        earliest([
            self.requests.next_deadline(),
            self.queries.next_stall(),
            own,
        ])
    }

    // ----- inputs -----

    /// Runs everything due at `now`: request timeouts, lookup stalls, join and leave retries,
    /// stabilize, finger refresh, predecessor check, expiry sweep, re-store.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(p) = self.requests.pop_expired(now) {
            self.metrics.request_failures += 1;
            self.on_result(now, p, None, Err(RequestFailure::Timeout));
        }
        self.lookup_timers(now);
        self.join_timer(now);
        if !self.is_member() {
            return;
        }
        self.leave_timer(now);
        self.maintain(now);
        if matches!(self.state, State::Member)
            && !self.lost.is_empty()
            && now >= self.lost.next_probe
        {
            self.probe_round(now);
        }
        self.restore_after_change(now);
        self.restore_due(now);
    }

    /// Handles a request from `from` (authenticated id and listening address, as the secure
    /// endpoint reports them). The answer comes out as [`Output::Respond`] with `token`, now or
    /// later (a join needs a lookup first).
    pub fn handle_request(&mut self, now: Instant, from: Peer, token: u64, bytes: &[u8]) {
        let resp = match self.admit(now, &from.id, bytes) {
            Ok(req) => {
                self.learn_address(now, from);
                match self.answer(now, from, token, req) {
                    Some(resp) => resp,
                    // answered later
                    None => return,
                }
            }
            Err(reason) => Response::Refused { reason },
        };
        self.respond(token, &resp);
    }

    /// Whether a request is taken at all: the node is still there, the peer within its rate,
    /// the output queue not full, and the message well formed.
    fn admit(&mut self, now: Instant, from: &NodeId, bytes: &[u8]) -> Result<Request, Refusal> {
        if matches!(self.state, State::Left) {
            return Err(Refusal::NotMember);
        }
        if !self.rates.allow(now, from) {
            return Err(Refusal::RateLimited);
        }
        if self.outputs.len() >= self.cfg.max_outputs {
            return Err(Refusal::Busy);
        }
        Request::decode(bytes, self.cfg.max_message_size).map_err(|_| {
            self.metrics.malformed_messages += 1;
            Refusal::Malformed
        })
    }

    /// The answer to an admitted request, from the part of the node that owns it (paper
    /// §6.1; PROTOCOL.md §6.7 responder rules). `None`: the answer comes later.
    fn answer(&mut self, now: Instant, from: Peer, token: u64, req: Request) -> Option<Response> {
        if let Some(resp) = self.answer_as_lone_ring(now, from, &req) {
            return Some(resp);
        }
        if !self.is_member() {
            return Some(Response::Refused {
                reason: Refusal::NotMember,
            });
        }
        let leaving = matches!(self.state, State::Leaving(_));
        Some(match req {
            Request::Find { target, records } => self.answer_find(&target, records),
            // a leaving node takes no new records or members
            Request::Store { .. }
            | Request::Join
            | Request::Handoff { .. }
            | Request::Leave { .. }
            | Request::Unify { .. }
                if leaving =>
            {
                Response::Refused {
                    reason: Refusal::Leaving,
                }
            }
            Request::Store { record } => self.serve_store(now, &from.id, record),
            Request::Join => return self.serve_join(now, &from.id, token),
            Request::GetNeighbors => self.neighbors(),
            Request::Notify => {
                if !leaving {
                    self.rectify(now, from);
                }
                Response::Ack
            }
            Request::Ping => Response::Pong,
            Request::Handoff { records } => self.accept_handoff(now, records),
            Request::Leave {
                predecessor,
                records,
                last,
            } => self.on_leave(now, from, predecessor.map(Peer::from), records, last),
            Request::SetSuccessors { successors } => self.on_set_successors(from, successors),
            Request::Unify { peer, hops } => self.serve_unify(now, peer.into(), hops),
        })
    }

    /// Handles the answer to request `request_id` (or its failure). Unknown ids are ignored.
    pub fn handle_response(
        &mut self,
        now: Instant,
        request_id: u64,
        result: Result<Reply<'_>, RequestFailure>,
    ) {
        let Some(p) = self.requests.take(request_id) else {
            return;
        };
        match result {
            Ok(reply) => {
                if p.expect.is_some_and(|e| e != reply.from) {
                    self.metrics.request_failures += 1;
                    return self.on_result(now, p, None, Err(RequestFailure::Refused));
                }
                match Response::decode(reply.bytes, self.cfg.max_message_size) {
                    Ok(r) => {
                        if matches!(p.purpose, Purpose::Lookup { .. }) {
                            self.rtt.observe(now.saturating_duration_since(p.sent));
                        }
                        self.on_result(now, p, Some(reply.from), Ok(r))
                    }
                    Err(_) => {
                        self.metrics.malformed_messages += 1;
                        self.on_result(now, p, Some(reply.from), Err(RequestFailure::Refused));
                    }
                }
            }
            Err(f) => {
                self.metrics.request_failures += 1;
                self.on_result(now, p, None, Err(f));
            }
        }
    }

    /// Hands the answer of a request (or its failure) to the part of the node that sent it.
    fn on_result(
        &mut self,
        now: Instant,
        p: Pending,
        from: Option<NodeId>,
        r: Result<Response, RequestFailure>,
    ) {
        let joining = matches!(self.state, State::Joining(_));
        let to = p.expect;
        match p.purpose {
            Purpose::Lookup {
                query,
                peer,
                target,
            } => self.on_lookup_answer(now, (query, peer, target), r),
            Purpose::Store { query, relookup } => self.store_answer(now, (query, relookup), to, r),
            // a join answered after the node stopped joining (an orphan merged back through a
            // notify meanwhile) is out of date
            Purpose::Join | Purpose::JoinVerify { .. } if !joining => {}
            Purpose::Join => self.on_join_answer(now, from, r),
            Purpose::JoinVerify { succ } => self.on_join_verified(now, succ, r),
            Purpose::Stabilize { succ } => self.on_stabilize(now, succ, r),
            Purpose::StabilizeCandidate {
                cand,
                fallback,
                depth,
            } => self.on_stabilize_candidate(now, (cand, fallback, depth), r),
            Purpose::Notify => self.on_notify_answered(now),
            Purpose::CheckPred { pred } => self.on_check_pred(now, pred, r),
            Purpose::Handoff { records } => self.on_handoff_answer(now, records, r),
            Purpose::Leave { last } => self.on_leave_answer(now, last, r),
            Purpose::SetSuccessors => self.on_set_successors_answer(),
            Purpose::Probe { contact } => self.on_probe(now, contact, from, r),
            Purpose::UnifyForward => {}
            Purpose::AddressCheck { old, new } => {
                let who = r.and_then(|_| from.ok_or(RequestFailure::Refused));
                self.on_address_check(now, old, new, who);
            }
            Purpose::UnifyCandidate { cand, depth } => {
                self.on_unify_candidate(now, (cand, depth), r);
            }
        }
    }

    // ----- helpers -----

    fn jitter(&mut self, period: Duration) -> Duration {
        // uniform in [0.75, 1.25] × period, so that nodes do not act in lockstep
        let p = ms(period).max(1);
        Duration::from_millis(p * 3 / 4 + self.rng.u64(0..=p / 2))
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn respond(&mut self, token: u64, r: &Response) {
        if let Response::Refused { reason } = r {
            self.metrics.reject(*reason);
        }
        let bytes = r.encode();
        self.metrics.response_bytes_sent += bytes.len() as u64;
        self.outputs.push_back(Output::Respond { token, bytes });
    }

    /// `Ok` while a full member (not joining, leaving or gone): the commands need it.
    fn check_member(&self, what: &'static str) -> Result<(), Error> {
        if matches!(self.state, State::Member) {
            Ok(())
        } else {
            Err(Error::InvalidState {
                state: self.state(),
                what,
            })
        }
    }
}
