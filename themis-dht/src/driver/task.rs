//! The driver task: owns the sans-I/O [`Node`] and feeds it commands, incoming requests,
//! responses and timeouts, each with `now` from tokio's clock; turns its outputs into endpoint
//! requests, handler answers and command results.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use themis_channel::{Endpoint, PeerAddr};
use themis_crypto::NodeId;
use tokio::sync::{mpsc, oneshot};

use super::handler::{Answer, DhtHandler, Incoming};
use super::{DriverConfig, LeaveReport, NodeMetrics, Registered, Status, Unregistered};
use crate::proto::record::Refusal;
use crate::proto::wire::Response;
use crate::{
    Contact, Error, Event, Found, Node, Output, Peer, Providers, QueryId, Reply, RequestFailure,
    ServiceSpec, Unregister,
};

/// The time the core sees: tokio's clock, so tests with a paused clock are deterministic.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A command from a [`super::DhtNode`] handle.
pub(crate) enum Command {
    Join(Vec<Contact>, oneshot::Sender<Result<Peer, Error>>),
    Find(NodeId, oneshot::Sender<Result<Found, Error>>),
    Register(
        ServiceSpec,
        Option<u8>,
        oneshot::Sender<Result<Registered, Error>>,
    ),
    Unregister(String, oneshot::Sender<Result<Unregistered, Error>>),
    Registrations(oneshot::Sender<Vec<String>>),
    Lookup(
        String,
        Option<u8>,
        oneshot::Sender<Result<Providers, Error>>,
    ),
    LookupReplica(String, u8, oneshot::Sender<Result<Providers, Error>>),
    Leave(oneshot::Sender<Result<LeaveReport, Error>>),
    Status(oneshot::Sender<Status>),
    Metrics(oneshot::Sender<NodeMetrics>),
    Shutdown(oneshot::Sender<()>),
}

/// Someone waiting for a query's event.
enum Waiter {
    Find(oneshot::Sender<Result<Found, Error>>),
    Register(oneshot::Sender<Result<Registered, Error>>),
    Lookup(oneshot::Sender<Result<Providers, Error>>),
    Withdraw(oneshot::Sender<Result<Unregistered, Error>>),
}

/// Counters of the driver itself (read through `Command::Metrics`).
#[derive(Default)]
struct DriverCounters {
    requests_sent: u64,
    requests_failed: u64,
    requests_dropped_stale: u64,
    incoming_requests: u64,
    incoming_refused_busy: u64,
}

/// A request the core asked for, waiting for room on the network.
struct Outbound {
    request_id: u64,
    to: std::net::SocketAddr,
    expect: Option<NodeId>,
    /// The request message; `None` for an identify (`Output::Identify`).
    bytes: Option<Vec<u8>>,
    queued_at: Instant,
}

/// What came back for an [`Outbound`]: a response, or the id of the node at an address.
enum Sent {
    Response(Result<(NodeId, Bytes), RequestFailure>),
    Identified(Result<NodeId, RequestFailure>),
}

type OutboundResult = (u64, Sent);

pub(crate) struct Driver {
    pub(crate) node: Node,
    pub(crate) endpoint: Endpoint,
    pub(crate) cfg: DriverConfig,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) inbox: mpsc::Receiver<Incoming>,
    counters: DriverCounters,
    /// Incoming requests the core has not answered yet, with the time after which the driver
    /// may give up on them (answering `busy`) to make room.
    unanswered: HashMap<u64, (Instant, Answer)>,
    next_token: u64,
    waiters: HashMap<QueryId, Waiter>,
    join_waiter: Option<(usize, oneshot::Sender<Result<Peer, Error>>)>,
    leave_waiter: Option<oneshot::Sender<Result<LeaveReport, Error>>>,
    /// Requests on the network, polled by the driver task itself: no task (and no wake-up of
    /// one) per request.
    outbound: FuturesUnordered<BoxFuture<'static, OutboundResult>>,
    backlog: VecDeque<Outbound>,
}

impl Driver {
    pub(crate) fn new(
        node: Node,
        endpoint: Endpoint,
        cfg: DriverConfig,
        commands: mpsc::Receiver<Command>,
        inbox: mpsc::Receiver<Incoming>,
    ) -> Self {
        Self {
            node,
            endpoint,
            cfg,
            commands,
            inbox,
            counters: DriverCounters::default(),
            unanswered: HashMap::new(),
            next_token: 1,
            waiters: HashMap::new(),
            join_waiter: None,
            leave_waiter: None,
            outbound: FuturesUnordered::new(),
            backlog: VecDeque::new(),
        }
    }

    /// Runs until [`Command::Shutdown`] or until every handle is dropped (a crash, as far as
    /// the peers can tell: nothing is handed over and nobody is told).
    pub(crate) async fn run(mut self) {
        let shutdown = loop {
            let deadline = self.node.poll_timeout().map(tokio::time::Instant::from_std);
            // One clock read per event, for the event and for the outputs it makes (they are
            // queued and sent microseconds later).
            let t = tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None => break None,
                    Some(Command::Shutdown(ack)) => break Some(ack),
                    Some(c) => {
                        let t = now();
                        self.command(t, c);
                        t
                    }
                },
                Some(inc) = self.inbox.recv() => {
                    let t = now();
                    self.incoming(t, inc);
                    t
                }
                Some((request_id, result)) = self.outbound.next(), if !self.outbound.is_empty() => {
                    let t = now();
                    self.response(t, request_id, result);
                    t
                }
                () = sleep_until(deadline) => {
                    let t = now();
                    self.node.handle_timeout(t);
                    t
                }
            };
            self.drain(t);
            self.dispatch(t);
        };
        // Whoever still waits learns the node stopped (their oneshot senders drop here).
        self.waiters.clear();
        self.join_waiter = None;
        self.leave_waiter = None;
        self.unanswered.clear();
        // Dropping a request abandons it (the endpoint discards a late response).
        self.outbound.clear();
        match shutdown {
            Some(ack) => {
                // Graceful: the endpoint lets requests in flight and handlers finish. Requests
                // already queued for the core are dropped, so their handlers answer at once
                // instead of holding the endpoint's shutdown until its timeout.
                self.inbox.close();
                while self.inbox.try_recv().is_ok() {}
                self.endpoint.shutdown().await;
                let _ = ack.send(());
            }
            None => {
                // Every handle dropped: stop at once. The endpoint stops when its last clone
                // (here, and in the dropped requests) is gone.
                tracing::debug!(id = %self.node.id().short(), "DHT node dropped");
            }
        }
    }

    fn command(&mut self, t: Instant, c: Command) {
        match c {
            Command::Join(bootstraps, tx) => {
                let tried = bootstraps.len();
                match self.node.join(t, bootstraps) {
                    Ok(()) => {
                        if let Some((_, old)) = self.join_waiter.replace((tried, tx)) {
                            // A second join replaced the first one's ring view.
                            let _ = old.send(Err(Error::JoinFailed { tried: 0 }));
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }
            Command::Find(target, tx) => match self.node.find(t, target) {
                Ok(q) => {
                    self.waiters.insert(q, Waiter::Find(tx));
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            },
            Command::Register(spec, k, tx) => match self.node.register(t, spec, k) {
                Ok(q) => {
                    self.waiters.insert(q, Waiter::Register(tx));
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            },
            Command::Unregister(name, tx) => {
                let done = |registered| Unregistered {
                    name: name.clone(),
                    registered,
                    tombstones_stored: 0,
                    tombstones_failed: 0,
                };
                match self.node.unregister(t, &name) {
                    Unregister::Withdrawing(q) => {
                        self.waiters.insert(q, Waiter::Withdraw(tx));
                    }
                    Unregister::NotRegistered => {
                        let _ = tx.send(Ok(done(false)));
                    }
                    _ => {
                        let _ = tx.send(Ok(done(true)));
                    }
                }
            }
            Command::Registrations(tx) => {
                let _ = tx.send(self.node.registered_names());
            }
            Command::Lookup(name, k, tx) => match self.node.lookup_providers(t, &name, k) {
                Ok(q) => {
                    self.waiters.insert(q, Waiter::Lookup(tx));
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            },
            Command::LookupReplica(name, r, tx) => match self.node.lookup_replica(t, &name, r) {
                Ok(q) => {
                    self.waiters.insert(q, Waiter::Lookup(tx));
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            },
            Command::Leave(tx) => match self.node.leave(t) {
                Ok(()) => self.leave_waiter = Some(tx),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            },
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Metrics(tx) => {
                let _ = tx.send(self.metrics());
            }
            // handled by `run`
            Command::Shutdown(_) => {}
        }
    }

    fn status(&self) -> Status {
        Status {
            id: self.node.id(),
            addr: self.node.peer().addr,
            state: self.node.state(),
            predecessor: self.node.predecessor(),
            successors: self.node.successors().to_vec(),
            fingers: self.node.fingers().len(),
            stored_records: self.node.stored_len(),
        }
    }

    fn metrics(&self) -> NodeMetrics {
        let c = &self.counters;
        NodeMetrics {
            dht: self.node.metrics(),
            endpoint: self.endpoint.metrics(),
            requests_sent: c.requests_sent,
            requests_failed: c.requests_failed,
            requests_dropped_stale: c.requests_dropped_stale,
            requests_in_flight: self.outbound.len() as u64,
            requests_queued: self.backlog.len() as u64,
            incoming_requests: c.incoming_requests,
            incoming_refused_busy: c.incoming_refused_busy,
            incoming_unanswered: self.unanswered.len() as u64,
        }
    }

    fn incoming(&mut self, t: Instant, inc: Incoming) {
        self.counters.incoming_requests += 1;
        if self.unanswered.len() >= self.cfg.max_unanswered {
            // Forget callers that gave up, and answer `busy` to those the core kept too long
            // (a dropped direct reply does), before refusing a live one.
            self.unanswered
                .retain(|_, (until, reply)| !reply.is_closed() && *until > t);
            if self.unanswered.len() >= self.cfg.max_unanswered {
                self.counters.incoming_refused_busy += 1;
                inc.reply.send(Bytes::from(
                    Response::Refused {
                        reason: Refusal::Busy,
                    }
                    .encode(),
                ));
                return;
            }
        }
        let token = self.next_token;
        self.next_token += 1;
        // As long as a handler task waits for the core (see `DhtHandler::channel`).
        let until = t + self.cfg.dht.request_timeout.saturating_mul(8);
        self.unanswered.insert(token, (until, inc.reply));
        // The sender is the one the endpoint authenticated (secure mode): records are accepted
        // only from the provider they name (paper §6.2: no ghost objects).
        let from = Peer {
            id: inc.from.id,
            addr: inc.from.addr,
        };
        self.node.handle_request(t, from, token, &inc.bytes);
    }

    fn response(&mut self, t: Instant, request_id: u64, sent: Sent) {
        let result = match sent {
            Sent::Response(r) => r,
            Sent::Identified(r) => {
                return self.node.handle_identified(t, request_id, r);
            }
        };
        if result.is_err() {
            self.counters.requests_failed += 1;
        }
        match &result {
            Ok((from, bytes)) => {
                self.node
                    .handle_response(t, request_id, Ok(Reply { from: *from, bytes }))
            }
            Err(f) => self.node.handle_response(t, request_id, Err(*f)),
        }
    }

    /// Acts on every output of the core (`t`: now).
    fn drain(&mut self, t: Instant) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send {
                    request_id,
                    to,
                    expect,
                    bytes,
                } => {
                    self.queue(t, request_id, to, expect, Some(bytes));
                }
                Output::Identify { request_id, to } => self.queue(t, request_id, to, None, None),
                Output::Respond { token, bytes } => {
                    if let Some((_, reply)) = self.unanswered.remove(&token) {
                        reply.send(Bytes::from(bytes));
                    }
                }
                Output::Event(e) => self.event(e),
            }
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Found { query, result } => {
                if let Some(Waiter::Find(tx)) = self.waiters.remove(&query) {
                    let _ = tx.send(result.map_err(|reason| Error::Query {
                        what: "find",
                        reason,
                    }));
                }
            }
            Event::Registered {
                query,
                name,
                stored,
                failed,
            } => {
                if let Some(Waiter::Register(tx)) = self.waiters.remove(&query) {
                    let _ = tx.send(Ok(Registered {
                        name,
                        stored,
                        failed,
                    }));
                }
            }
            Event::Withdrawn {
                query,
                name,
                stored,
                failed,
            } => {
                if let Some(Waiter::Withdraw(tx)) = self.waiters.remove(&query) {
                    let _ = tx.send(Ok(Unregistered {
                        name,
                        registered: true,
                        tombstones_stored: stored,
                        tombstones_failed: failed,
                    }));
                }
            }
            Event::Providers { query, result } => {
                if let Some(Waiter::Lookup(tx)) = self.waiters.remove(&query) {
                    let _ = tx.send(result.map_err(|reason| Error::Query {
                        what: "provider lookup",
                        reason,
                    }));
                }
            }
            Event::Joined { successor } => {
                tracing::debug!(id = %self.node.id().short(), succ = %successor.id.short(), "joined");
                if let Some((_, tx)) = self.join_waiter.take() {
                    let _ = tx.send(Ok(successor));
                }
            }
            Event::JoinFailed => {
                if let Some((tried, tx)) = self.join_waiter.take() {
                    let _ = tx.send(Err(Error::JoinFailed { tried }));
                }
            }
            Event::Left {
                records_handed_over,
                records_lost,
            } => {
                if let Some(tx) = self.leave_waiter.take() {
                    let _ = tx.send(Ok(LeaveReport {
                        records_handed_over,
                        records_lost,
                    }));
                }
            }
            Event::SuccessorChanged { successor } => {
                tracing::trace!(succ = ?successor.map(|p| p.id.short()), "successor changed");
            }
            Event::PredecessorChanged { predecessor } => {
                tracing::trace!(pred = ?predecessor.map(|p| p.id.short()), "predecessor changed");
            }
        }
    }

    /// Queues a request (`bytes`) or an identify (`None`) for [`Driver::dispatch`].
    fn queue(
        &mut self,
        t: Instant,
        request_id: u64,
        to: std::net::SocketAddr,
        expect: Option<NodeId>,
        bytes: Option<Vec<u8>>,
    ) {
        if self.backlog.len() >= self.cfg.dht.max_pending_requests {
            // The core bounds its pending requests: anything beyond is stale.
            self.backlog.pop_front();
            self.counters.requests_dropped_stale += 1;
        }
        self.backlog.push_back(Outbound {
            request_id,
            to,
            expect,
            bytes,
            queued_at: t,
        });
    }

    /// Starts queued requests while there is room; drops those the core gave up on.
    fn dispatch(&mut self, t: Instant) {
        let give_up = self.cfg.dht.request_timeout;
        while self.outbound.len() < self.cfg.max_outbound {
            let Some(o) = self.backlog.pop_front() else {
                break;
            };
            if t.saturating_duration_since(o.queued_at) >= give_up {
                // The core timed it out already (joins wait longer, but are never queued
                // behind a full network for that long in practice; their retry is the core's).
                self.counters.requests_dropped_stale += 1;
                continue;
            }
            self.counters.requests_sent += 1;
            let endpoint = self.endpoint.clone();
            self.outbound.push(Box::pin(async move {
                let sent = match o.bytes {
                    Some(bytes) => Sent::Response(send(&endpoint, o.to, o.expect, bytes).await),
                    None => Sent::Identified(
                        endpoint
                            .identify(o.to)
                            .await
                            .map(|(id, _)| id)
                            .map_err(failure),
                    ),
                };
                (o.request_id, sent)
            }));
        }
    }
}

/// The command payload of a DHT request: the DHT's protocol id, then the encoded request
/// (PROTOCOL.md §5.4). Shifts the encoding in place: no second buffer in the common case.
pub(super) fn command(mut request: Vec<u8>) -> Bytes {
    request.insert(0, DhtHandler::PROTOCOL_ID);
    Bytes::from(request)
}

/// One DHT request over the endpoint (paper Fig. 3: one cmd/rsp exchange). With no expected id
/// (a bootstrap given as a bare address) the id is asked for first; the handshake then proves
/// the node holds that key.
async fn send(
    endpoint: &Endpoint,
    to: std::net::SocketAddr,
    expect: Option<NodeId>,
    bytes: Vec<u8>,
) -> Result<(NodeId, Bytes), RequestFailure> {
    let id = match expect {
        Some(id) => id,
        None => endpoint.identify(to).await.map_err(failure)?.0,
    };
    let peer = PeerAddr { id, addr: to };
    match endpoint.request(&peer, command(bytes)).await {
        Ok(rsp) => Ok((id, rsp)),
        // The peer's endpoint had no handler slot and said so (TCP): to the core this is the
        // DHT's own `busy` refusal -- the peer is alive, the request did not run. The control
        // message is unauthenticated, but a busy answer only ever makes the core skip or
        // retry the peer, never believe something.
        Err(themis_channel::Error::PeerBusy { .. }) => Ok((
            id,
            Bytes::from(
                Response::Refused {
                    reason: Refusal::Busy,
                }
                .encode(),
            ),
        )),
        Err(e) => Err(failure(e)),
    }
}

/// How the core should read an endpoint error: a timeout, an unreachable peer, or a refusal
/// (the node at the address is someone else, or speaks another mode).
fn failure(e: themis_channel::Error) -> RequestFailure {
    use themis_channel::Error as E;
    match e {
        E::RequestTimeout { .. } | E::HandshakeTimeout { .. } => RequestFailure::Timeout,
        E::IdentityMismatch { .. }
        | E::NotAdmitted { .. }
        | E::ModeMismatch { .. }
        | E::Handshake { .. }
        | E::SelfRequest(_)
        | E::PayloadTooLarge { .. } => RequestFailure::Refused,
        _ => RequestFailure::Unreachable,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The known-answer vector of a DHT command with its protocol id (PROTOCOL.md §5.4).
    #[test]
    fn a_command_is_the_protocol_id_then_the_request() {
        let vectors = include_str!("../../tests/vectors/dht.txt");
        let want = vectors
            .lines()
            .find_map(|l| l.strip_prefix("find_command = "))
            .map(str::trim);
        let find = crate::proto::wire::bench_find(NodeId::from_bytes([7; 32]));
        let got: String = command(find).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(Some(got.as_str()), want);
        assert_eq!(got.get(..2), Some("01"));
    }

    #[test]
    fn endpoint_errors_map_to_what_the_core_should_conclude() {
        let id = NodeId::from_bytes([2; 32]);
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        let after = Duration::from_secs(1);
        use themis_channel::Error as E;
        let cases = [
            (
                E::RequestTimeout {
                    peer: id,
                    addr,
                    after,
                },
                RequestFailure::Timeout,
            ),
            (
                E::HandshakeTimeout {
                    peer: id,
                    addr,
                    after,
                },
                RequestFailure::Timeout,
            ),
            (
                E::IdentityMismatch {
                    addr,
                    expected: id,
                    found: id,
                },
                RequestFailure::Refused,
            ),
            (E::SelfRequest(id), RequestFailure::Refused),
            (E::SessionLost { peer: id }, RequestFailure::Unreachable),
            (E::ShuttingDown, RequestFailure::Unreachable),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            assert_eq!(failure(e), want, "{text}");
        }
    }
}
