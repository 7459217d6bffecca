//! Registrations: the names this node provides, their signed records stored on the k + 1
//! replicas (paper §6.1 store), and the re-store schedule that keeps them alive ("owners
//! re-store before the responsible nodes drop the values").

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use themis_crypto::NodeId;

use super::api::{Event, QueryId, RequestFailure, Unregister};
use super::queries::Job;
use super::requests::Purpose;
use super::{Node, State, ms};
use crate::Error;
use crate::proto::owner::check_provider;
use crate::proto::record::{
    ProviderRecord, Refusal, ServiceSpec, check_metadata, check_name, object_id,
};
use crate::proto::wire::{Peer, Request, Response, WireRecord};

/// A name this node provides.
#[derive(Debug)]
pub(super) struct Registration {
    pub(super) spec: ServiceSpec,
    pub(super) k: u8,
    /// When its records are stored again.
    pub(super) next_refresh: Instant,
    /// A store of its replicas is in progress (it is then off the schedule).
    pub(super) running: bool,
    /// Expiry (Unix ms) of the last records signed for this name (0: none yet): a withdrawal's
    /// tombstones live until then (PROTOCOL.md §6.10).
    pub(super) expires: u64,
}

/// The registrations and their re-store schedule, at most `Config::max_registrations`.
#[derive(Debug, Default)]
pub(super) struct Registrations {
    pub(super) map: BTreeMap<String, Registration>,
    /// Re-store schedule: `(next_refresh, name)` of every registration that is not running
    /// (exactly one entry each; none for a running one), so the next due re-store is found in
    /// O(log n) rather than by scanning every registration on each poll. Kept in step by
    /// [`Registrations::update`].
    pub(super) due: BTreeSet<(Instant, String)>,
    /// Sequence number of the last records signed.
    last_seq: u64,
    /// A re-store of every registration is due then, after the neighbourhood changed
    /// ([`Node::neighbourhood_changed`]); with the time of the first change it folds in.
    change: Option<(Instant, Instant)>,
    /// When the last such re-store ran.
    last_change_restore: Option<Instant>,
}

impl Registrations {
    /// Adds or replaces the registration of `spec.name`, due at once.
    fn insert(&mut self, now: Instant, spec: ServiceSpec, k: u8) {
        let name = spec.name.clone();
        // records of an earlier spec of this name may still live: a withdrawal covers them
        let expires = self.map.get(&name).map_or(0, |r| r.expires);
        let old = self.map.insert(
            name.clone(),
            Registration {
                spec,
                k,
                next_refresh: now,
                running: false,
                expires,
            },
        );
        if let Some(old) = old
            && !old.running
        {
            self.due.remove(&(old.next_refresh, name.clone()));
        }
        self.due.insert((now, name));
    }

    /// Removes the registration `name` and returns it.
    fn remove(&mut self, name: &str) -> Option<Registration> {
        let r = self.map.remove(name)?;
        if !r.running {
            self.due.remove(&(r.next_refresh, name.to_owned()));
        }
        Some(r)
    }

    /// Changes the registration `name` (if any) with `f`, keeping the schedule in step with
    /// its `running` flag and `next_refresh` time.
    fn update(&mut self, name: &str, f: impl FnOnce(&mut Registration)) {
        let Some(r) = self.map.get_mut(name) else {
            return;
        };
        let before = (r.running, r.next_refresh);
        f(r);
        let after = (r.running, r.next_refresh);
        if before == after {
            return;
        }
        if !before.0 {
            self.due.remove(&(before.1, name.to_owned()));
        }
        if !after.0 {
            self.due.insert((after.1, name.to_owned()));
        }
    }

    /// The earliest re-store (it starts only when a query slot is free: see
    /// [`Node::restore_due`]).
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Forgets every registration (the node left).
    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.due.clear();
        self.change = None;
    }

    /// When the re-store after a neighbourhood change is due.
    pub(super) fn change_due(&self) -> Option<Instant> {
        self.change.map(|(at, _)| at)
    }
}

impl Node {
    /// Registers this node as a provider of `spec.name` with `k` replicas (`None`: the network
    /// default), signs and stores k+1 records and keeps re-storing them every
    /// `Config::restore_period` until [`Node::unregister`]. The result comes as
    /// [`Event::Registered`].
    pub fn register(
        &mut self,
        now: Instant,
        spec: ServiceSpec,
        k: Option<u8>,
    ) -> Result<QueryId, Error> {
        self.check_member("register")?;
        self.check_delegation(now, &spec)?;
        self.register_unchecked(now, spec, k)
    }

    /// [`Node::register`] without the check that the delegation lets this node provide the
    /// name: what an impostor's modified node does. For adversary tests of owned names (the
    /// storing nodes must refuse its records); not part of the API.
    #[doc(hidden)]
    pub fn register_unchecked(
        &mut self,
        now: Instant,
        spec: ServiceSpec,
        k: Option<u8>,
    ) -> Result<QueryId, Error> {
        self.check_member("register")?;
        check_name(&spec.name).map_err(Error::InvalidRecord)?;
        check_metadata(&spec.metadata).map_err(Error::InvalidRecord)?;
        let k = k.unwrap_or(self.cfg.default_k);
        if k > self.cfg.max_k {
            return Err(Error::ReplicationTooHigh {
                k,
                max: self.cfg.max_k,
            });
        }
        if !self.regs.map.contains_key(&spec.name)
            && self.regs.map.len() >= self.cfg.max_registrations
        {
            return Err(Error::TooManyRegistrations {
                limit: self.cfg.max_registrations,
            });
        }
        let too_many = Error::TooManyQueries {
            limit: self.cfg.max_queries,
        };
        if self.queries.counted() >= self.cfg.max_queries {
            return Err(too_many);
        }
        let name = spec.name.clone();
        self.regs.insert(now, spec, k);
        self.start_register(now, &name, true).ok_or(too_many)
    }

    /// Stops re-storing `name` and withdraws it: signs k + 1 tombstones (PROTOCOL.md §6.4,
    /// sequence number above every record of the name, expiry that of its last records) and
    /// stores them on the replicas like a registration, so that readers drop this provider at
    /// once instead of at the records' expiry. A withdrawal is reported as
    /// [`Event::Withdrawn`].
    ///
    /// [`Unregister::Removed`] when nothing is stored: the node is not a member, its records
    /// have expired already, or `max_queries` queries are running (the records then expire
    /// after at most the TTL, as without tombstones).
    pub fn unregister(&mut self, now: Instant, name: &str) -> Unregister {
        let Some(reg) = self.regs.remove(name) else {
            return Unregister::NotRegistered;
        };
        match self.start_withdrawal(now, name, reg) {
            Some(q) => Unregister::Withdrawing(q),
            None => Unregister::Removed,
        }
    }

    /// An owned name needs a delegation to this node that verifies and has not expired; an
    /// unowned name takes none (PROTOCOL.md §6.4 "Owned names"): refused here, with the
    /// reason, rather than by every replica.
    fn check_delegation(&self, now: Instant, spec: &ServiceSpec) -> Result<(), Error> {
        let me = self.identity.node_id(&self.network);
        check_provider(
            &self.network,
            &spec.name,
            &me,
            spec.delegation.as_ref(),
            self.wall_ms(now),
        )
        .map_err(|problem| Error::Delegation {
            name: spec.name.clone(),
            problem,
        })
    }

    /// The names this node provides now, sorted.
    pub fn registered_names(&self) -> Vec<String> {
        self.regs.map.keys().cloned().collect()
    }

    /// Signs the tombstones of `reg` and starts storing them (`None`: nothing to withdraw, or
    /// no room for the query).
    fn start_withdrawal(&mut self, now: Instant, name: &str, reg: Registration) -> Option<QueryId> {
        let wall = self.wall_ms(now);
        if !matches!(self.state, State::Member) || reg.expires <= wall || !self.query_room() {
            return None;
        }
        // above every record signed for this name (they all have seq <= last_seq)
        let seq = (self.regs.last_seq + 1).max(wall);
        // an owned name's tombstone, like its records, ends with the delegation it carries
        let expires = reg
            .spec
            .delegation
            .map_or(reg.expires, |d| reg.expires.min(d.not_after_unix_ms()));
        if expires <= wall {
            return None;
        }
        let records: Vec<ProviderRecord> = (0..=reg.k)
            .map(|r| {
                ProviderRecord::sign_withdrawal(
                    &self.identity,
                    &self.network,
                    &reg.spec,
                    self.ring.me.addr,
                    r,
                    expires,
                    seq,
                )
            })
            .collect();
        self.metrics.records_signed += records.len() as u64;
        for rec in &records {
            rec.remember_signed(&self.network, &mut self.verified);
        }
        let q = self.new_query(Job::Register {
            name: name.to_owned(),
            records,
            open: reg.k.saturating_add(1),
            stored: 0,
            failed: 0,
            user: true,
            withdraw: true,
        })?;
        self.regs.last_seq = seq;
        self.metrics.withdrawals += 1;
        self.store_replicas(now, q, name, reg.k);
        Some(q)
    }

    /// The node's neighbourhood changed enough that the owners of its records may be gone (a
    /// successor or the predecessor failed: a partition or a crash; or two rings merged here):
    /// every registration is re-stored `Config::change_restore_delay` from now instead of at
    /// its next period (issue 11 item 5). Debounced: changes within the delay are folded into
    /// one re-store (at most 4 delays after the first), and such re-stores are at least 10
    /// delays apart.
    pub(super) fn neighbourhood_changed(&mut self, now: Instant) {
        if self.regs.map.is_empty() {
            return;
        }
        let d = self.cfg.change_restore_delay;
        let earliest = self.regs.last_change_restore.map(|t| t + d * 10);
        let want = earliest.map_or(now + d, |e| e.max(now + d));
        self.regs.change = Some(match self.regs.change {
            None => (want, now),
            Some((at, first)) => (at.max(want).min((first + d * 4).max(at)), first),
        });
    }

    /// Runs the re-store after a neighbourhood change when it is due: every registration not
    /// already being stored is due at once, and one being stored is stored again when it ends.
    pub(super) fn restore_after_change(&mut self, now: Instant) {
        if !matches!(self.state, State::Member) {
            return;
        }
        let Some((at, _)) = self.regs.change else {
            return;
        };
        if at > now {
            return;
        }
        self.regs.change = None;
        self.regs.last_change_restore = Some(now);
        self.metrics.change_restores += 1;
        let names: Vec<String> = self.regs.map.keys().cloned().collect();
        for name in names {
            self.regs
                .update(&name, |r| r.next_refresh = r.next_refresh.min(now));
        }
    }

    /// Starts the re-stores due at `now`, as many as the node has query slots for (only while a
    /// member; the rest wait for a query to end; a start that fails otherwise is retried after
    /// `Config::retry_delay`).
    pub(super) fn restore_due(&mut self, now: Instant) {
        if !matches!(self.state, State::Member) {
            return;
        }
        // The due entries of the schedule, earliest first, as long as the node has room for a
        // query: each start takes its entry off the schedule. The rest stay due, unsigned, and
        // [`Node::poll_timeout`] asks for no timer for them until a query ends. (Each try used
        // to sign the records of every due registration and drop those that found no query
        // slot, and reschedule them: with more registrations due than `max_queries` the node
        // spent its CPU signing records it never stored.)
        let retry = now + self.cfg.retry_delay;
        while self.query_room() {
            let Some((at, name)) = self.regs.due.first().map(|(t, n)| (*t, n.clone())) else {
                break;
            };
            if at > now {
                break;
            }
            // paper §6.1: owners re-store before the responsible nodes drop the values
            if self.start_register(now, &name, false).is_none() {
                self.regs.update(&name, |r| r.next_refresh = retry);
                // a schedule entry without its registration cannot start: drop it
                if self.regs.due.first() == Some(&(at, name.clone())) {
                    self.regs.due.pop_first();
                }
            }
        }
    }

    /// Signs the k + 1 records of `name` and starts storing them; `user`: the caller waits for
    /// [`Event::Registered`] (a re-store is silent). `None` when too many queries run.
    fn start_register(&mut self, now: Instant, name: &str, user: bool) -> Option<QueryId> {
        // no signature for records that would find no query to store them
        if !self.query_room() {
            return None;
        }
        let wall = self.wall_ms(now);
        let seq = (self.regs.last_seq + 1).max(wall);
        let reg = self.regs.map.get(name)?;
        let (spec, k) = (reg.spec.clone(), reg.k);
        // An owned name's records end no later than their delegation (PROTOCOL.md §6.4): a
        // storing node refuses one that would outlive it, and sweeps the others at their
        // expiry, so an expired delegation never holds a quota slot.
        let expiry = wall.saturating_add(ms(self.cfg.record_ttl));
        let expiry = spec
            .delegation
            .map_or(expiry, |d| expiry.min(d.not_after_unix_ms()));
        let records: Vec<ProviderRecord> = (0..=k)
            .map(|r| {
                ProviderRecord::sign(
                    &self.identity,
                    &self.network,
                    &spec,
                    self.ring.me.addr,
                    r,
                    expiry,
                    seq,
                )
                .with_succession(self.cfg.succession.clone())
            })
            .collect();
        self.metrics.records_signed += records.len() as u64;
        for rec in &records {
            // signed just now by this node: its own stores need not verify them again
            rec.remember_signed(&self.network, &mut self.verified);
        }
        let q = self.new_query(Job::Register {
            name: name.to_owned(),
            records,
            open: k.saturating_add(1),
            stored: 0,
            failed: 0,
            user,
            withdraw: false,
        })?;
        self.regs.last_seq = seq;
        let restore = self.cfg.restore_period;
        self.regs.update(name, |reg| {
            reg.running = true;
            reg.next_refresh = now + restore;
            reg.expires = reg.expires.max(expiry);
        });
        self.store_replicas(now, q, name, k);
        Some(q)
    }

    /// A query slot is free (`Config::max_queries`): checked before records are signed.
    pub(super) fn query_room(&self) -> bool {
        self.queries.counted() < self.cfg.max_queries
    }

    /// Starts the k + 1 replica lookups of registration (or withdrawal) `q`; each stores its
    /// record when it ends ([`Node::replica_found`]).
    fn store_replicas(&mut self, now: Instant, q: QueryId, name: &str, k: u8) {
        // Beyond the paper (which stores the k + 1 replicas without saying how): the replicas'
        // lookups start at once, and each store goes out as soon as its own lookup ends, so a
        // registration takes one lookup plus one store of time rather than k + 1 of each.
        // Every replica query exists before any lookup starts: one resolved locally ends at
        // once, and the registration must not end before its last replica.
        //
        // Each lookup ends at the first claim of its object id's successor: a peer's
        // `successor` answer, or at once when the id falls within this node's successor list
        // (PROTOCOL.md §6.8). It does not ask that successor a `find` of its own before the
        // store: the store is that question, since the owner checks that it is responsible
        // (§6.7) and refuses `not_responsible` otherwise, and then the replica is looked up
        // again up to the owner's own `owner` answer ([`Node::store_answer`]).
        let replicas: Vec<(QueryId, u8)> = (0..=k)
            .map(|r| (self.new_replica_query(q, r, false), r))
            .collect();
        for (rq, r) in replicas {
            self.start_lookup(now, rq, object_id(name, r), false);
        }
    }

    /// Looks up the owner of replica `r` of registration `q` again, up to the owner's own
    /// `owner` answer, after the owner a first lookup named refused the store as not
    /// responsible. False when the registration has ended.
    fn relookup_replica(&mut self, now: Instant, q: QueryId, r: u8) -> bool {
        let name = match self.queries.job(q) {
            Some(Job::Register { name, open, .. }) if *open > 0 => name.clone(),
            _ => return false,
        };
        self.metrics.replica_relookups += 1;
        let rq = self.new_replica_query(q, r, true);
        self.start_lookup(now, rq, object_id(&name, r), true);
        true
    }

    /// The answer of `to` to a replica's store (or its failure). A store sent to the owner
    /// that a lookup's claim or the owner cache named (`relookup`: its replica) and refused
    /// `not_responsible` does not fail the replica: its owner is looked up again
    /// ([`Node::relookup_replica`]). An owner that refused so, or did not answer, leaves the
    /// owner cache.
    pub(super) fn store_answer(
        &mut self,
        now: Instant,
        (q, relookup): (QueryId, Option<u8>),
        to: Option<NodeId>,
        r: Result<Response, RequestFailure>,
    ) {
        let not_responsible = matches!(
            r,
            Ok(Response::Refused {
                reason: Refusal::NotResponsible
            })
        );
        if let Some(to) = to
            && (not_responsible || r.is_err())
        {
            self.owners.forget(&to);
        }
        if let Some(replica) = relookup.filter(|_| not_responsible)
            && self.relookup_replica(now, q, replica)
        {
            return;
        }
        self.store_result(now, q, matches!(r, Ok(Response::Stored)));
    }

    /// The lookup of replica `r` of registration `parent` found its owner `peer`: store the
    /// record there (paper §6.1 store: the successor of h(name ‖ r) keeps the record).
    /// `claimed`: `peer` is the successor a claim named, not yet confirmed by its own answer
    /// (a `not_responsible` refusal then looks the owner up again).
    pub(super) fn replica_found(
        &mut self,
        now: Instant,
        parent: QueryId,
        r: u8,
        peer: Peer,
        claimed: bool,
    ) {
        let rec = match self.queries.job(parent) {
            Some(Job::Register { records, .. }) => records.get(usize::from(r)).cloned(),
            _ => None,
        };
        match rec {
            Some(rec) if peer.id == self.ring.me.id => {
                let me: NodeId = self.ring.me.id;
                let res = self.accept_store(now, &me, rec);
                if claimed
                    && res == Err(Refusal::NotResponsible)
                    && self.relookup_replica(now, parent, r)
                {
                    return;
                }
                self.store_result(now, parent, res.is_ok());
            }
            Some(rec) => {
                let req = Request::Store {
                    record: WireRecord::from(&rec),
                };
                let purpose = Purpose::Store {
                    query: parent,
                    relookup: claimed.then_some(r),
                };
                if !self.send(now, peer.into(), &req, purpose) {
                    self.store_result(now, parent, false);
                }
            }
            // the registration ended (the node left): nothing to store
            None => {}
        }
    }

    /// One replica of registration `q` ended: stored (`ok`) or failed (lookup, send or store).
    pub(super) fn store_result(&mut self, now: Instant, q: QueryId, ok: bool) {
        let Some(Job::Register {
            open,
            stored,
            failed,
            ..
        }) = self.queries.job_mut(q)
        else {
            return;
        };
        if *open == 0 {
            return;
        }
        if ok {
            *stored += 1;
        } else {
            *failed += 1;
        }
        *open -= 1;
        if *open > 0 {
            return;
        }
        let Some(Job::Register {
            name,
            stored,
            failed,
            user,
            withdraw,
            ..
        }) = self.queries.take(q)
        else {
            return;
        };
        if withdraw {
            self.event(Event::Withdrawn {
                query: q,
                name,
                stored,
                failed,
            });
            return;
        }
        let retry = now + self.cfg.retry_delay;
        self.regs.update(&name, |reg| {
            reg.running = false;
            if failed > 0 {
                reg.next_refresh = reg.next_refresh.min(retry);
            }
        });
        if user {
            self.event(Event::Registered {
                query: q,
                name,
                stored,
                failed,
            });
        }
    }

    /// Registration `q` ended before its replicas did (the node left): it is off the
    /// schedule's running set, and a waiting caller learns how many replicas were stored.
    pub(super) fn registration_failed(
        &mut self,
        q: QueryId,
        name: String,
        (stored, failed, total): (u8, u8, usize),
        (user, withdraw): (bool, bool),
    ) {
        let total = u8::try_from(total).unwrap_or(u8::MAX);
        let failed = failed.max(total - stored.min(total));
        if withdraw {
            self.event(Event::Withdrawn {
                query: q,
                name,
                stored,
                failed,
            });
            return;
        }
        self.regs.update(&name, |r| r.running = false);
        if user {
            self.event(Event::Registered {
                query: q,
                name,
                stored,
                failed,
            });
        }
    }
}
